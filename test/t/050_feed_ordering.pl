
# test/t/050_feed_ordering.pl -- a feed hands out every committed event,
# once, in order per stream, never past the safe horizon, whatever order the
# writers commit in; its long-poll is woken by commits and holds no
# snapshot while it sleeps.
#
# projection.naptime is one hour, so a long-poll that returns before its
# wait passes was woken by a commit (or an abort), not by the safety net.
# Covers:
#   - scripted out-of-order commits: a transaction holding an early position
#     open while later ones commit (poll returns nothing past it), a
#     rolled-back append (a gap poll must pass), then the early commit: a
#     long-poll sleeping meanwhile (no xmin advertised) returns it, in order;
#   - an abort of the transaction holding the horizon back wakes the
#     long-poll too;
#   - pgbench writers with long transactions (sleeps between appends, 20%
#     rolled back) while one consumer drains a feed of 4 partitions with
#     poll/ack as they go: the events delivered are exactly the committed
#     ones, each once, and every stream's versions arrive in order.

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
my $node = start_node('main', db => $db, conf => 'projection.naptime = 3600000');
$node->safe_psql($db,
	q{SELECT projection.create_feed('one'), projection.create_feed('four', partitions => 4)});

# a long-poll in its own psql, not waited for
sub start_long_poll
{
	my ($feed, $out) = @_;
	return $node->start_long_poll($db,
		"SELECT global_position, stream_id FROM projection.poll('$feed', 100, wait => '1 h')", $out);
}
sub wait_for_sleeping_poll { return $node->wait_for_sleeping_poll($db, undef, 1); }

sub poll_rows
{
	my ($feed) = @_;
	return $node->safe_psql($db,
		"SELECT global_position, stream_id FROM projection.poll('$feed', 100)");
}

# ---------------------------------------------------------------------
# scripted out-of-order commits
# ---------------------------------------------------------------------
my @s = map { $node->background_psql($db) } 1 .. 3;
$s[0]->query_safe('BEGIN');
my $early = $s[0]->query_safe("SELECT projection.append('early', 'E', '{}')");
my $late = $s[1]->query_safe("SELECT projection.append('late', 'E', '{}')");
$s[2]->query_safe('BEGIN');
my $gone = $s[2]->query_safe("SELECT projection.append('gone', 'E', '{}')");
$s[2]->query_safe('ROLLBACK');
my $later = $s[1]->query_safe("SELECT projection.append('late', 'E', '{}')");
ok($early < $late && $late < $gone && $gone < $later, 'positions drawn in script order');

is(poll_rows('one'), '', 'nothing is handed out while an earlier position is in flight');
is($node->safe_psql($db, "SELECT lease_expires FROM projection.feed_status WHERE feed = 'one'"),
	'', 'and an empty poll takes no lease');

my $out = '';
my $h = start_long_poll('one', \$out);
ok(wait_for_sleeping_poll(), 'the long-poll sleeps, advertising no xmin');
$s[0]->query_safe('COMMIT');
$h->finish;
chomp $out;
is($out, "$early|early\n$late|late\n$later|late",
	'the early commit wakes it: every committed event, in position order, the rolled-back gap passed');
# the long-poll's psql has gone without acking: a seek ends its lease
$node->safe_psql($db, "SELECT projection.seek('one', $later)");

# an abort of the transaction that holds the horizon back wakes the poll
$s[0]->query_safe('BEGIN');
my $aborted = $s[0]->query_safe("SELECT projection.append('early', 'E', '{}')");
my $after = $s[1]->query_safe("SELECT projection.append('late', 'E', '{}')");
is(poll_rows('one'), '', 'nothing past the open transaction');
$out = '';
$h = start_long_poll('one', \$out);
ok(wait_for_sleeping_poll(), 'the long-poll sleeps');
$s[0]->query_safe('ROLLBACK');
$h->finish;
chomp $out;
is($out, "$after|late", 'the abort wakes it, and the dead position is passed');
$node->safe_psql($db, "SELECT projection.seek('one', $after)");
$_->quit for @s;

# ---------------------------------------------------------------------
# pgbench writers with long transactions, a consumer draining as they go
# ---------------------------------------------------------------------
my $start = $node->safe_psql($db, 'SELECT COALESCE(max(global_position), 0) FROM projection.events');
$node->safe_psql($db, "SELECT projection.seek('four', $start)");

my $script = "$PostgreSQL::Test::Utils::tmp_check/050_writers.sql";
PostgreSQL::Test::Utils::append_to_file(
	$script, q{
\set r random(1, 100)
\set s random(1, 30)
BEGIN;
SELECT projection.append('s-' || :s, 'Step', '{}');
SELECT pg_sleep(random() * 0.02);
SELECT projection.append('s-' || :s, 'Step', '{}');
\if :r <= 10
SELECT pg_sleep(0.2);
\endif
\if :r > 80
ROLLBACK;
\else
COMMIT;
\endif
});
my ($bout, $berr) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '6', '-j', '3', '-t', '60', '-f', $script,
		'-h', $node->host, '-p', $node->port, $db
	],
	'>', \$bout, '2>', \$berr);

my $consumer = $node->background_psql($db);
my @delivered;
my $idle_after_done = 0;
while (1)
{
	my $running = $bench->pumpable;
	my $rows = $consumer->query_safe(
		"SELECT token, partition, global_position, stream_id, stream_version
		   FROM projection.poll('four', 25, wait => '200 ms')");
	if ($rows eq '')
	{
		$bench->pump_nb if $running;
		last if !$running && ++$idle_after_done >= 2;
		next;
	}
	$idle_after_done = 0;
	my $token;
	for my $line (split /\n/, $rows)
	{
		my ($t, $p, $pos, $stream, $version) = split /\|/, $line;
		$token = $t;
		push @delivered, [ $p, $pos, $stream, $version ];
	}
	$consumer->query_safe("SELECT projection.ack('four', '$token')");
	$bench->pump_nb if $bench->pumpable;
}
ok($bench->finish, 'pgbench ran') or diag($berr);
like($bout, qr{processed: 360/360}, 'every writer transaction ran');
$consumer->quit;

my $committed = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',' ORDER BY global_position)
	   FROM projection.events WHERE global_position > $start");
my @positions = sort { $a <=> $b } map { $_->[1] } @delivered;
is(join(',', @positions), $committed, 'every committed event delivered exactly once');

my (%last_version, %partition_of, $order_ok, $partition_ok);
($order_ok, $partition_ok) = (1, 1);
for my $d (@delivered)
{
	my ($p, $pos, $stream, $version) = @$d;
	$order_ok = 0 if defined $last_version{$stream} && $version <= $last_version{$stream};
	$last_version{$stream} = $version;
	$partition_ok = 0 if defined $partition_of{$stream} && $partition_of{$stream} != $p;
	$partition_of{$stream} = $p;
}
ok($order_ok, "each stream's events arrive in version order");
ok($partition_ok, 'each stream stays in one partition');
is( $node->safe_psql($db,
		"SELECT bool_and(lag_events = 0) AND NOT bool_or(leased) FROM projection.feed_status WHERE feed = 'four'"),
	't', 'the feed is caught up, no lease left');

$node->stop;
done_testing();
