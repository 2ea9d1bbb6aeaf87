
# test/t/046_snapshot_fresh.pl -- projection.snapshot() is current however
# far the async worker lags: with the worker blocked in the middle of a
# batch (its fold waits on an advisory lock the test holds, with the
# batch's state rows locked), and with the projection paused, snapshot()
# returns the fold of every committed event of the stream, without waiting
# for the worker; the stored state catches up afterwards.

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
# at the positions of block_at, the fold takes advisory lock 4242 in the
# worker only: snapshot() calls the same fold
$node->create_gate($db, 'projection worker');
$node->safe_psql(
	$db, q{
CREATE ROLE reader LOGIN;
GRANT SELECT ON projection.events TO reader;
CREATE FUNCTION list_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM public.gate(e.global_position);
	RETURN jsonb_set(state, '{seen}', coalesce(state->'seen', '[]') || to_jsonb(e.stream_version));
END
$$;
SELECT projection.create_snapshot('lists', 'list_fold');
});

sub append
{
	my ($stream, $n) = @_;

	for (1 .. $n)
	{
		$node->safe_psql($db, "SELECT projection.append('$stream', 'Seen', '{}')");
	}
	return $node->max_position($db);
}

sub seen
{
	my ($n) = @_;
	return '[' . join(', ', 1 .. $n) . ']';
}

my $last = append('s-1', 3);
ok($node->wait_caught_up($db, 'lists'), 'the projection caught up');
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(3), 'three events stored');

# ---------------------------------------------------------------------
# the worker blocked in the middle of a batch
# ---------------------------------------------------------------------
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (' . ($last + 1) . ')');
$last = append('s-1', 4);
$node->blocked_worker_pid('the worker is blocked in the middle of a batch');
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(3), 'the stored state lags');
# not blocked by the worker's lock on the state row, and current
is($node->safe_psql($db, "SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(7), 'snapshot() folds the events the worker has not applied');
is( $node->safe_psql(
		$db, "SELECT projection.snapshot('lists', 's-1') = projection.aggregate('s-1', 'list_fold')"),
	't', 'snapshot() equals aggregate()');
# a stream with no stored state yet
append('s-2', 2);
is($node->safe_psql($db, "SELECT projection.snapshot('lists', 's-2')->'seen'"),
	seen(2), 'a stream the worker has not reached');
# as a role that may read events (not the owner)
is( $node->safe_psql(
		$db, "SET ROLE reader; SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(7), 'the same for a reader of events');
# an uncommitted append of another session is not folded in; one's own is
my $writer = $node->background_psql($db);
$writer->query_safe("BEGIN; SELECT projection.append('s-1', 'Seen', '{}')");
is($node->safe_psql($db, "SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(7), 'another session\'s uncommitted event is not');
is($writer->query_safe("SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(8), 'the session\'s own uncommitted event is');
$writer->query_safe('COMMIT');
$writer->quit;

$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;
$last = $node->max_position($db);
ok($node->wait_caught_up($db, 'lists', $last), 'the worker catches up');
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(8), 'the stored state caught up');
is($node->safe_psql($db, "SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(8), 'and snapshot() agrees');

# ---------------------------------------------------------------------
# the projection paused
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.pause('lists')");
append('s-1', 2);
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(8), 'paused: the stored state does not move');
is($node->safe_psql($db, "SELECT projection.snapshot('lists', 's-1')->'seen'"),
	seen(10), 'paused: snapshot() is current');
$node->safe_psql($db, "SELECT projection.resume('lists')");
ok($node->wait_caught_up($db, 'lists'), 'resumed: caught up');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.snapshots s
 WHERE s.state IS DISTINCT FROM projection.snapshot('lists', s.stream_id)
	OR s.state IS DISTINCT FROM projection.aggregate(s.stream_id, 'list_fold')}),
	'0', 'every stored state equals snapshot() and aggregate()');

$node->stop('fast');
done_testing();
