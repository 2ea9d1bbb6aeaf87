
# test/t/080_feed_client_checkpoint.pl -- the 1.4 lease tools of feeds in
# real time: extend_lease fencing a consumer that stalled past its lease,
# and the client-owned checkpoint (poll's after) giving exactly-once into a
# sink that stores its position with its writes, across consumers killed
# between their sink's commit and their ack.
#
# Covers:
#   - extend_lease keeps a live lease (a second consumer cannot take the
#     partition); once the lease has expired and a second consumer took it
#     over, the first one's extend_lease and ack are refused (PJF01) and
#     change nothing, the second one's ack moves the checkpoint;
#   - a consumer that writes each batch and its position in one transaction
#     of its sink and is killed before every other ack: each restart polls
#     after the sink's own position, and at the end the sink holds every
#     event of each partition exactly once, in order, although acks were
#     lost;
#   - a long-poll learns at its next look that its feed was paused (it
#     keeps sleeping while events arrive), resumed (it returns them) or
#     dropped (42704), one statement reading the partitions and the feed.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db);
$node->safe_psql(
	$db, q{
SELECT projection.create_feed('slow');
SELECT projection.create_feed('own', partitions => 2);
SELECT projection.append('s-' || (i % 5), 'E', jsonb_build_object('i', i)) FROM generate_series(1, 40) i;
-- the sink: its rows and its position per partition, written together
CREATE TABLE sink (partition int, global_position bigint, stream_id text, stream_version bigint);
CREATE TABLE sink_position (partition int PRIMARY KEY, position bigint NOT NULL);
INSERT INTO sink_position VALUES (0, 0), (1, 0);
});

sub lease_over { return $node->wait_for_lease_over($db, @_); }

# ---------------------------------------------------------------------
# extend_lease, and its fencing
# ---------------------------------------------------------------------
my $t1 = $node->safe_psql($db,
	"SELECT token FROM projection.poll('slow', 5, lease => '30 s') LIMIT 1");
isnt($t1, '', 'the first consumer leased the partition');
$node->safe_psql($db, "SELECT projection.extend_lease('slow', '$t1', '1 hour')");
is($node->safe_psql($db, "SELECT count(*) FROM projection.poll('slow', 5)"), '0',
	'an extended lease keeps the partition from a second consumer');
my ($rc, $out, $err) = $node->psql($db, "SELECT count(*) FROM projection.poll('slow', 5, partition => 0)");
like($err, qr/is leased/, 'which cannot take it by its number either');
is($node->safe_psql($db,
		"SELECT leased FROM projection.feed_status WHERE feed = 'slow'"), 't',
	'the extended lease is still live after its first length');

# let the lease end soon, wait until it has ended, and let a second consumer take over
$node->safe_psql($db, "SELECT projection.extend_lease('slow', '$t1', '100 ms')");
ok(lease_over('slow', 0), 'the shortened lease expired');
my $t2 = $node->safe_psql($db,
	"SELECT token FROM projection.poll('slow', 5, lease => '1 hour') LIMIT 1");
isnt($t2, '', 'a second consumer took the partition over');
($rc, $out, $err) = $node->psql($db, "SELECT projection.extend_lease('slow', '$t1', '1 hour')");
like($err, qr/lease of feed "slow" is no longer held/, 'the first consumer cannot extend a lease taken over');
($rc, $out, $err) = $node->psql($db, "SELECT projection.ack('slow', '$t1')");
like($err, qr/no longer held/, 'nor ack it');
is($node->safe_psql($db, "SELECT position FROM projection.feed_status WHERE feed = 'slow'"),
	'0', 'the refused calls changed nothing');
is($node->safe_psql($db, "SELECT projection.ack('slow', '$t2')"), '5',
	'the second consumer acks its events');

# ---------------------------------------------------------------------
# the client-owned checkpoint: exactly once without relying on acks
# ---------------------------------------------------------------------
# One round of a consumer of partition $p: poll after the sink's position,
# write the rows and the new position in one transaction, and ack unless
# it "dies" (the session ends without the ack; the lease then has to
# expire before the next round can poll the partition).
sub round
{
	my ($p, $die) = @_;
	my $c = $node->background_psql($db);
	my $n = $c->query_safe(q{
WITH batch AS MATERIALIZED (
  SELECT * FROM projection.poll('own', 3, lease => '3 s', partition => } . $p . q{,
                                after => (SELECT position FROM sink_position WHERE partition = } . $p . q{))),
ins AS (INSERT INTO sink SELECT partition, global_position, stream_id, stream_version FROM batch),
pos AS (UPDATE sink_position SET position = (SELECT max(global_position) FROM batch)
         WHERE partition = } . $p . q{ AND EXISTS (SELECT FROM batch))
SELECT count(*) || ' ' || COALESCE(min(token), '') FROM batch});
	my ($count, $token) = split / /, $n;
	$c->query_safe("SELECT projection.ack('own', '$token')") if ($count > 0 && !$die);
	$c->quit;
	lease_over('own', $p) if ($count > 0 && $die);
	return $count;
}

for my $p (0, 1)
{
	my ($i, $got) = (0, 0);
	while (1)
	{
		my $n = round($p, $i % 2 == 0);    # every other consumer dies before its ack
		last if $n == 0;
		$got += $n;
		$i++;
		die "no end to partition $p" if $i > 100;
	}
	cmp_ok($i, '>', 2, "partition $p took several rounds, half of them without an ack");
}

is($node->safe_psql($db, q{
SELECT count(*) FROM (SELECT global_position FROM sink GROUP BY 1 HAVING count(*) > 1) d}),
	'0', 'no event was written twice');
is($node->safe_psql($db, q{
SELECT count(*) FROM projection.events e
 WHERE NOT EXISTS (SELECT FROM sink s WHERE s.global_position = e.global_position)}),
	'0', 'every event reached the sink');
is($node->safe_psql($db, q{
SELECT count(*) FROM sink s
 WHERE s.partition <> projection.feed_partition(s.stream_id, 2)}),
	'0', 'each event came from its stream\'s partition');
is($node->safe_psql($db, q{
SELECT bool_and(ok) FROM (
  SELECT stream_version = row_number() OVER (PARTITION BY stream_id ORDER BY global_position) AS ok
    FROM sink) v}),
	't', 'each stream reached the sink in version order, without a gap');
# ---------------------------------------------------------------------
# a long-poll and pause_feed, resume_feed, drop_feed
# ---------------------------------------------------------------------
$node->safe_psql($db, q{
SELECT projection.create_feed('paused', start_from => 'end');
SELECT projection.pause_feed('paused');
SELECT projection.create_feed('gone', event_types => '{Nothing}');
});

sub start_long_poll
{
	my ($feed, $out, $err) = @_;
	return $node->start_long_poll($db,
		"SELECT global_position FROM projection.poll('$feed', 100, wait => '1 h')", $out, $err);
}

sub wait_for_sleeping_poll { return $node->wait_for_sleeping_poll($db, @_); }

my ($lp_out, $lp_err);
my $h = start_long_poll('paused', \$lp_out, \$lp_err);
ok(wait_for_sleeping_poll('paused'), 'a long-poll of a paused feed sleeps');
my $pos = $node->safe_psql($db, "SELECT projection.append('p-1', 'E', '{}')");
# the append's commit wakes it; it looks, sees the feed paused, and sleeps again
ok(wait_for_sleeping_poll('paused'), 'it sleeps on after an append to the paused feed');
is($node->safe_psql($db, "SELECT leased FROM projection.feed_status WHERE feed = 'paused'"),
	'f', 'and leases nothing');
$node->safe_psql($db, "SELECT projection.resume_feed('paused')");
$h->finish;
chomp $lp_out;
is($lp_out, $pos, 'resume_feed wakes it, and it returns the event');

$h = start_long_poll('gone', \$lp_out, \$lp_err);
ok(wait_for_sleeping_poll('gone'), 'a long-poll of another feed sleeps');
$node->safe_psql($db, "SELECT projection.drop_feed('gone')");
$h->finish;
like($lp_err, qr/feed "gone" was dropped while polling/, 'drop_feed ends it with an error');

$node->stop;
done_testing();
