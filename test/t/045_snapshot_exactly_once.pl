
# test/t/045_snapshot_exactly_once.pl -- an async snapshot projection
# applies every event exactly once across crashes: after each crash its
# stored states equal a full projection.aggregate() of every stream.
#
# The fold counts the events it sees and sums a value from each, so a lost
# or repeated event shows in the state.  Two crashes hit a catch-up of 60k
# events over 2,000 streams:
#   1. kill -9 of the worker while its fold is blocked in the middle of a
#      batch (on an advisory lock the test holds);
#   2. kill -9 of the worker wherever it is, while it catches up.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main');
# at the positions of block_at, the worker's fold takes advisory lock 4242
$node->create_count_fold($db, 'projection worker');

# Every stream's stored state equals aggregate() and snapshot(); every
# stream has a state; the projection is healthy.
sub check_exactly_once
{
	my ($what) = @_;

	is( $node->safe_psql(
			$db, q{
SELECT (SELECT count(DISTINCT stream_id) FROM projection.events) || ' streams, '
	|| (SELECT count(*) FROM projection.snapshots WHERE name = 'counts') || ' states, '
	|| (SELECT count(*) FROM projection.snapshots s
		 WHERE s.name = 'counts'
		   AND s.state IS DISTINCT FROM projection.aggregate(s.stream_id, 'count_fold')) || ' differ, '
	|| (SELECT coalesce(sum((state->>'n')::bigint), 0) FROM projection.snapshots WHERE name = 'counts')
	|| ' events folded'
}),
		do
		{
			my $s = $node->safe_psql($db,
				'SELECT count(DISTINCT stream_id) FROM projection.events');
			my $n = $node->safe_psql($db, 'SELECT count(*) FROM projection.events');
			"$s streams, $s states, 0 differ, $n events folded";
		},
		"$what: every event folded exactly once");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM projection.snapshots s
 WHERE s.name = 'counts' AND (s.state->>'last')::bigint <> s.version}),
		'0', "$what: each state's version is its last event's");
	my $st = $node->status($db, 'counts');
	is($st->{state}, 'running', "$what: the projection is running");
	is($st->{last_error}, '', "$what: no error recorded");
	return;
}

# ---------------------------------------------------------------------
# 1. kill -9 of the worker with its fold blocked mid-batch
# ---------------------------------------------------------------------
# 60,000 events over 2,000 fresh streams
my $last = $node->bulk_append($db, 60_000, 2000);
$node->safe_psql($db, 'INSERT INTO block_at VALUES (30000)');
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');

$node->safe_psql($db, "SELECT projection.create_snapshot('counts', 'count_fold')");
my $pid = $node->blocked_worker_pid('the worker is blocked in the middle of a batch');
my $done = $node->safe_psql($db,
	"SELECT coalesce(sum((state->>'n')::bigint), 0) FROM projection.snapshots WHERE name = 'counts'");
cmp_ok($done, '<', 30000, "the batch with event 30000 was not committed ($done events folded)");

my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
ok($node->wait_caught_up($db, 'counts'), 'after the crash-restart the projection catches up');
check_exactly_once('kill -9 with the fold blocked');

# ---------------------------------------------------------------------
# 2. kill -9 of the worker wherever it is
# ---------------------------------------------------------------------
my $before = $node->safe_psql($db,
	"SELECT coalesce(sum((state->>'n')::bigint), 0) FROM projection.snapshots WHERE name = 'counts'");
$last = $node->bulk_append($db, 60_000, 2000);
ok( $node->poll_query_until(
		$db,
		"SELECT coalesce(sum((state->>'n')::bigint), 0) > $before + 1000 "
		  . "FROM projection.snapshots WHERE name = 'counts'"),
	'the worker is catching up');
($pid) = $node->worker_pids($db);
$offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
ok($node->wait_caught_up($db, 'counts'), 'after the crash-restart the projection catches up');
check_exactly_once('kill -9 at a random moment');

# a rebuild gives the same states back
$node->safe_psql($db, 'CREATE TABLE before AS SELECT * FROM projection.snapshots');
$node->safe_psql($db, "SELECT projection.rebuild('counts')");
ok($node->wait_caught_up($db, 'counts'), 'caught up after the rebuild');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM ((TABLE before EXCEPT ALL TABLE projection.snapshots)
                      UNION ALL (TABLE projection.snapshots EXCEPT ALL TABLE before)) d}),
	'0', 'the rebuild gives the same states');

$node->stop('fast');
done_testing();
