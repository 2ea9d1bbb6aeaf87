
# test/t/110_feed_poll_ack.pl -- the consumer loop of 1.5: each poll carries
# the previous poll's ack (poll's ack argument), committed without waiting
# for the WAL flush in autocommit.
#
# Covers:
#   - out-of-order commits (a transaction holding an early position open
#     while later appends commit, a rolled-back append) under a consumer
#     whose every poll acks the previous one: every committed event is
#     delivered once, in its place, per-stream order kept; the held-back
#     event comes after its commit, and the checkpoint ends at the last
#     event once the final ack (carried by an empty poll) is in;
#   - a poll that carries an ack does not sleep: with a one-hour wait and
#     nothing to hand out it returns at once, and its ack is committed (a
#     second session sees the partition free);
#   - a consumer killed between its write and its next poll (the ack never
#     sent): once the lease expires, exactly the unacknowledged events come
#     again, in the same order;
#   - an immediate stop (a crash) right after a poll that carried an ack (the ack was
#     committed without a flush): after the restart the checkpoint is the
#     acked position or the one before (the ack survived, or was lost),
#     never past it, and the next poll continues from it without a gap:
#     a lost ack means redelivery, nothing is skipped;
#   - the README's consumer in 20 lines, run as written (its Python block,
#     with a write() that records what it gets): it delivers every event
#     once, in order, and its acks, carried by its polls, bring the
#     checkpoint to the last event.

use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db, naptime_hour => 1);
$node->safe_psql($db, q{SELECT projection.create_feed('f')});

# one poll of the loop: returns (token, [[position, stream, version], ...])
sub poll_acking
{
	my ($feed, $token, $max, $wait) = @_;
	my $ack = defined $token ? "'$token'" : 'NULL';
	$wait //= '0 s';
	my $out = $node->safe_psql($db,
		"SELECT token, global_position, stream_id, stream_version "
		  . "FROM projection.poll('$feed', $max, wait => '$wait', lease => '1 h', ack => $ack)");
	my @rows = map { [ split /\|/ ] } grep { $_ ne '' } split /\n/, $out;
	return (@rows ? $rows[0][0] : undef, [ map { [ @$_[ 1 .. 3 ] ] } @rows ]);
}

# ---------------------------------------------------------------------
# out-of-order commits under the acking loop
# ---------------------------------------------------------------------
my @s = map { $node->background_psql($db) } 1 .. 2;
my %delivered;
my @order;
my $token;
my $rows;

$node->safe_psql($db,
	"SELECT projection.append('a-' || (i % 3), 'E', '{}') FROM generate_series(1, 6) i");
($token, $rows) = poll_acking('f', undef, 4);
push @order, @$rows;
$s[0]->query_safe('BEGIN');
my $early = $s[0]->query_safe("SELECT projection.append('early', 'E', '{}')");
$s[1]->query_safe('BEGIN');
$s[1]->query_safe("SELECT projection.append('gone', 'E', '{}')");
$s[1]->query_safe('ROLLBACK');
$node->safe_psql($db,
	"SELECT projection.append('a-' || (i % 3), 'E', '{}') FROM generate_series(1, 5) i");
# the loop drains up to the held-back position and no further
for (1 .. 10)
{
	($token, $rows) = poll_acking('f', $token, 3);
	push @order, @$rows;
}
ok(!grep({ $_->[0] >= $early } @order), 'nothing past the open transaction\'s position was handed out');
is(scalar(@order), 6, 'the events below it were');
$s[0]->query_safe('COMMIT');
for (1 .. 10)
{
	($token, $rows) = poll_acking('f', $token, 3);
	push @order, @$rows;
}
is($token, undef, 'the last poll found nothing and carried the last ack');
my $committed = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM projection.events");
is(join(',', sort { $a <=> $b } map { $_->[0] } @order), $committed,
	'every committed event delivered once, the held-back one included');
my %last;
my $in_order = 1;
for my $r (@order)
{
	$in_order = 0 if exists $last{ $r->[1] } && $r->[2] <= $last{ $r->[1] };
	$last{ $r->[1] } = $r->[2];
}
ok($in_order, 'each stream in version order');
is($node->safe_psql($db, "SELECT position = (SELECT max(global_position) FROM projection.events) AND NOT leased "
		  . "FROM projection.feed_status WHERE feed = 'f'"),
	't', 'the checkpoint is at the last event and the partition is free');
$_->quit for @s;

# ---------------------------------------------------------------------
# a poll carrying an ack does not sleep
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.append('b', 'E', '{}')");
($token, $rows) = poll_acking('f', undef, 10);
is(scalar(@$rows), 1, 'one new event leased');
my ($none_token, $none) = poll_acking('f', $token, 10, '1 h');
is(scalar(@$none), 0, 'a poll carrying an ack with a one-hour wait returned at once with nothing');
is($node->safe_psql($db, "SELECT NOT leased FROM projection.feed_status WHERE feed = 'f'"),
	't', 'and its ack is committed: another session sees the partition free');

# ---------------------------------------------------------------------
# a consumer killed before its next poll: redelivery of the unacked events
# ---------------------------------------------------------------------
$node->safe_psql($db,
	"SELECT projection.append('c-' || (i % 2), 'E', '{}') FROM generate_series(1, 4) i");
my $first = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',' ORDER BY global_position) "
	  . "FROM projection.poll('f', 10, lease => '200 ms')");
ok($node->poll_query_until($db, "SELECT NOT leased FROM projection.feed_status WHERE feed = 'f'", 't'),
	'the lease of the consumer that never came back expired');
($token, $rows) = poll_acking('f', undef, 10);
is(join(',', map { $_->[0] } @$rows), $first, 'the same events came again, in the same order');

# ---------------------------------------------------------------------
# a crash right after a poll that carried an ack
# ---------------------------------------------------------------------
$node->safe_psql($db,
	"SELECT projection.append('d-' || (i % 2), 'E', '{}') FROM generate_series(1, 6) i");
my $before = $node->safe_psql($db, "SELECT position FROM projection.feed_status WHERE feed = 'f'");
my $acked = $rows->[-1][0];
my ($t2, $rows2) = poll_acking('f', $token, 3);
is(scalar(@$rows2), 3, 'the poll that carried the ack leased the next events');
$node->stop('immediate');
$node->start;
my ($position, $leased) = split /\|/, $node->safe_psql($db,
	"SELECT position, leased FROM projection.feed_status WHERE feed = 'f'");
ok($position == $acked || $position == $before,
	"after the crash the checkpoint is the acked position or the one before ($position)");
my ($t3, $after_rows);
if ($leased eq 't')
{
	# the lease of the last poll survived too: it lasts an hour, so give it up
	$node->safe_psql($db, "SELECT projection.seek('f', $position)");
}
($t3, $after_rows) = poll_acking('f', undef, 100);
my $next = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',' ORDER BY global_position) "
	  . "FROM projection.events WHERE global_position > $position");
is(join(',', map { $_->[0] } @$after_rows), $next,
	'the next poll continues from the checkpoint with nothing skipped');

# ---------------------------------------------------------------------
# the README's consumer in 20 lines
# ---------------------------------------------------------------------
SKIP:
{
	skip 'python3-psycopg is not installed', 3
	  if system('/usr/bin/python3', '-c', 'import psycopg') != 0;
	open(my $fh, '<', "$FindBin::RealBin/../../README.md") or die "README.md: $!";
	my $readme = do { local $/; <$fh> };
	close $fh;
	my ($section) = $readme =~ /### A consumer in 20 lines\n(.*?)\n### /s;
	my ($loop) = $section =~ /```python\n(.*?)```/s;
	ok(defined $loop && $loop =~ /ack => %s/, 'the README\'s consumer carries its acks in its polls');
	my $connstr = $node->connstr($db);
	$loop =~ s/"dbname=shop"/"$connstr"/;
	my $dir = PostgreSQL::Test::Utils::tempdir;
	my $got_file = "$dir/got";
	open(my $py, '>', "$dir/consumer.py") or die;
	print $py "import sys\nout = open(sys.argv[1], 'a', buffering=1)\n"
	  . "def write(stream_id, event_type, data, version):\n"
	  . "    out.write('%d %s\\n' % (version, stream_id))\n" . $loop;
	close $py;
	$node->safe_psql($db, "SELECT projection.create_feed('product_search', start_from => 'end')");
	my $from = $node->safe_psql($db, "SELECT max(global_position) FROM projection.events");
	my $consumer = IPC::Run::start([ '/usr/bin/python3', "$dir/consumer.py", $got_file ],
		'>', \my $pyout, '2>', \my $pyerr);
	for my $i (1 .. 5)
	{
		$node->safe_psql($db,
			"SELECT projection.append('r-' || (i % 3), 'E', '{}') FROM generate_series(1, 7) i");
	}
	ok($node->poll_query_until($db,
			"SELECT position = (SELECT max(global_position) FROM projection.events) "
			  . "FROM projection.feed_status WHERE feed = 'product_search'", 't'),
		'the consumer\'s acks brought the checkpoint to the last event');
	$consumer->kill_kill;
	open(my $gf, '<', $got_file) or die "$got_file: $!";
	my @got = map { (split / /)[0] } grep { /\S/ } <$gf>;
	close $gf;
	my $want = $node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position) "
		  . "FROM projection.events WHERE global_position > $from");
	is(join(',', @got), $want, 'it delivered every event once, in order');
}

$node->stop;
done_testing();
