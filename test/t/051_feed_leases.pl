
# test/t/051_feed_leases.pl -- leases of a feed: redelivery after a
# consumer dies between its write and its ack, lease expiry and takeover
# with the stale ack refused, competing consumers on partitions, seek.
#
# Covers:
#   - a consumer that polled and wrote its sink but was killed before its
#     ack: once its lease expires, the next poll hands out exactly its
#     unacknowledged events again, in the same order, and nothing else;
#   - a consumer whose lease expired is overtaken by a second one: the
#     second gets the same events, the first one's ack is refused (PJF01)
#     and changes nothing, the second one's ack moves the checkpoint;
#   - 4 consumers on 8 partitions, interleaved (each polls while others
#     hold leases): every event acked exactly once, each stream's events
#     in version order and from one partition only;
#   - seek back to the beginning redelivers everything; seek ahead skips.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db);
$node->safe_psql(
	$db, q{
CREATE TABLE sink (global_position bigint, consumer text);
SELECT projection.create_feed('kill');
SELECT projection.create_feed('race');
SELECT projection.append('k-' || (i % 3), 'E', jsonb_build_object('i', i)) FROM generate_series(1, 10) i;
});

sub lease_over { return $node->wait_for_lease_over($db, @_); }

# ---------------------------------------------------------------------
# killed between write and ack
# ---------------------------------------------------------------------
my $c1 = $node->background_psql($db);
# ack the first 4 events, then take 3 more and write them, and die
my $t = $c1->query_safe("SELECT token FROM projection.poll('kill', 4) LIMIT 1");
$c1->query_safe("SELECT projection.ack('kill', '$t')");
my $rows = $c1->query_safe(
	"INSERT INTO sink SELECT global_position, 'c1' FROM projection.poll('kill', 3, lease => '2 s')
	 RETURNING global_position");
my @written = split /\n/, $rows;
is(scalar @written, 3, 'the consumer wrote three events');
my $pid = $c1->query_safe('SELECT pg_backend_pid()');
$node->safe_psql($db, "SELECT pg_terminate_backend($pid)");
$c1->quit;
ok(lease_over('kill'), 'the dead consumer\'s lease expires');
my $again = $node->safe_psql($db,
	"SELECT global_position FROM projection.poll('kill', 3)");
is($again, join("\n", @written), 'exactly its unacknowledged events come again, in order');
is($node->safe_psql($db, "SELECT position FROM projection.feed_status WHERE feed = 'kill'"),
	'4', 'the checkpoint stayed at the last ack');

# ---------------------------------------------------------------------
# lease expiry, takeover, stale ack refused
# ---------------------------------------------------------------------
my ($a, $b) = map { $node->background_psql($db) } 1 .. 2;
my $got_a = $a->query_safe(
	"SELECT string_agg(token || ' ' || global_position, ',' ORDER BY global_position)
	   FROM projection.poll('race', 5, lease => '1 s')");
my ($ta) = $got_a =~ /^(\S+)/;
ok(lease_over('race'), 'the first consumer\'s lease expires');
my $got_b = $b->query_safe(
	"SELECT string_agg(token || ' ' || global_position, ',' ORDER BY global_position)
	   FROM projection.poll('race', 5)");
my ($tb) = $got_b =~ /^(\S+)/;
(my $pos_a = $got_a) =~ s/\S+ //g;
(my $pos_b = $got_b) =~ s/\S+ //g;
is($pos_b, $pos_a, 'the second consumer gets the same events');
isnt($tb, $ta, 'with a new token');
my ($ret, $stdout, $stderr) =
  $node->psql($db, "SELECT projection.ack('race', '$ta')", on_error_stop => 0,
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/PJF01/, 'the first consumer\'s ack is refused with PJF01');
is($node->safe_psql($db,
		"SELECT position || ' ' || leased FROM projection.feed_status WHERE feed = 'race'"),
	'0 true', 'and changed nothing: the checkpoint stays, the second lease holds');
is($b->query_safe("SELECT projection.ack('race', '$tb')"), '5', 'the second consumer acks');
$_->quit for ($a, $b);

# ---------------------------------------------------------------------
# 4 consumers on 8 partitions
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
SELECT projection.create_feed('eight', partitions => 8);
SELECT projection.append('o-' || (i % 40), 'E', jsonb_build_object('i', i))
  FROM generate_series(1, 400) i;
});
my $total = $node->safe_psql($db, 'SELECT count(*) FROM projection.events');
my @c = map { $node->background_psql($db) } 1 .. 4;
my @held = (undef) x 4;    # the token and rows each consumer holds
my (@acked, %seen_partitions);
my $empty_rounds = 0;
while ($empty_rounds < 2)
{
	my $any = 0;
	for my $i (0 .. 3)
	{
		# a consumer acks what it holds, then polls again (so the others
		# poll while it holds a lease)
		if (defined $held[$i])
		{
			my ($token, @rows) = @{ $held[$i] };
			$c[$i]->query_safe("SELECT projection.ack('eight', '$token')");
			push @acked, @rows;
			$held[$i] = undef;
		}
		my $out = $c[$i]->query_safe(
			"SELECT token, partition, global_position, stream_id, stream_version
			   FROM projection.poll('eight', 7)");
		next if $out eq '';
		$any = 1;
		my ($token, @rows);
		for my $line (split /\n/, $out)
		{
			my ($tk, $p, $pos, $stream, $version) = split /\|/, $line;
			$token = $tk;
			push @rows, [ $p, $pos, $stream, $version, $i ];
			$seen_partitions{$p}{$i} = 1;
		}
		$held[$i] = [ $token, @rows ];
	}
	$empty_rounds = $any ? 0 : $empty_rounds + 1;
}
$_->quit for @c;

my %count;
$count{ $_->[1] }++ for @acked;
is(scalar(keys %count), $total, 'every event acked');
is(scalar(grep { $_ != 1 } values %count), 0, 'each exactly once');
my (%last, %part, $order_ok, $part_ok);
($order_ok, $part_ok) = (1, 1);
for my $r (@acked)
{
	my ($p, $pos, $stream, $version) = @$r;
	$order_ok = 0 if defined $last{$stream} && $version != $last{$stream} + 1;
	$last{$stream} = $version;
	$part_ok = 0 if defined $part{$stream} && $part{$stream} != $p;
	$part{$stream} = $p;
}
ok($order_ok, "each stream's events in version order, none missing in between");
ok($part_ok, 'each stream from one partition');
is(scalar(keys %seen_partitions), 8, 'all 8 partitions were served');
my %by;
for my $p (keys %seen_partitions) { $by{$_} = 1 for keys %{ $seen_partitions{$p} } }
is(scalar(keys %by), 4, 'by all 4 consumers');
is($node->safe_psql($db,
		"SELECT sum(lag_events) FROM projection.feed_status WHERE feed = 'eight'"),
	'0', 'no lag left');

# ---------------------------------------------------------------------
# seek
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.seek('eight', 0)");
is($node->safe_psql($db,
		"SELECT sum(lag_events) FROM projection.feed_status WHERE feed = 'eight'"),
	$total, 'seek to 0: everything is due again');
my $first = $node->safe_psql($db,
	"SELECT min(global_position) FROM projection.poll('eight', 1000, partition => 3)");
is($first,
	$node->safe_psql($db,
		"SELECT min(global_position) FROM projection.events WHERE projection.feed_partition(stream_id, 8) = 3"),
	'and partition 3 starts over at its first event');
$node->safe_psql($db, "SELECT projection.seek('eight', $total)");
is($node->safe_psql($db, "SELECT count(*) FROM projection.poll('eight', 1000)"),
	'0', 'seek to the end: nothing due');

$node->stop;
done_testing();
