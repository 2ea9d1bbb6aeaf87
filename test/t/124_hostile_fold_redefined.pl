
# test/t/124_hostile_fold_redefined.pl -- a snapshot projection's fold
# redefined (CREATE OR REPLACE) while the worker is folding a batch with it:
# the worker does not crash, every event is folded exactly once (by the old
# body or the new one), and aggregate() never starts from the states that
# mix both bodies, also once the old body is put back; after a rebuild the
# states are the new full fold and aggregate() uses them again.
#
# The fold adds "step" (1 in the first body, 100 in the second) to n and
# counts its calls in k: k says how many events each state folded, n which
# body folded them.  The worker blocks inside the fold in the middle of a
# catch-up batch (advisory lock 4242, held by the test) while the fold is
# replaced.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = start_node('main');
my $db = 'postgres';

# (re)defines fold() with the given step; IMMUTABLE, as aggregate() needs
sub define_fold
{
	my ($step) = @_;
	$node->safe_psql(
		$db, qq{
CREATE OR REPLACE FUNCTION fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
	IF EXISTS (SELECT FROM public.block_at b WHERE b.pos = e.global_position)
	   AND (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()) = 'projection worker' THEN
		PERFORM pg_advisory_xact_lock_shared(4242);
	END IF;
	RETURN jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + $step,
							  'k', coalesce((state->>'k')::bigint, 0) + 1);
END
\$\$;
});
	return;
}

$node->safe_psql(
	$db, q{
CREATE TABLE block_at (pos bigint PRIMARY KEY);
-- full folds with each body, never started from a state (VOLATILE)
CREATE FUNCTION full_1(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'k', coalesce((state->>'k')::bigint, 0) + 1) $$;
CREATE FUNCTION full_100(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 100,
							  'k', coalesce((state->>'k')::bigint, 0) + 1) $$;
});
define_fold(1);
$node->safe_psql($db, "SELECT projection.create_snapshot('folds', 'fold')");

# 20 streams of 500 events, in one INSERT: the catch-up's batches are large
sub append_events
{
	my ($from, $n) = @_;
	$node->safe_psql($db,
		    "INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "SELECT 'f-' || (i % 20), $from + i / 20 + 1, 'F', '{}' FROM generate_series(0, $n - 1) i");
	return $node->max_position($db);
}
my $last = append_events(0, 10_000);
ok($node->wait_caught_up($db, 'folds', $last), 'the first events are folded');

my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (' . ($last + 5000) . ')');
$last = append_events(500, 10_000);
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'projection worker' "
		  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"),
	'the worker is blocked inside the fold, in the middle of a batch');
define_fold(100);
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;
# and events surely folded by later transactions, with the second body
$last = append_events(1000, 2_000);
ok($node->wait_caught_up($db, 'folds', $last), 'after the redefinition the worker caught up');

# each state folded every event of its stream once; n = a + 100 b with a + b = k
is( $node->safe_psql(
		$db, q{
SELECT count(*) || ' states, '
	|| count(*) FILTER (WHERE (s.state->>'k')::bigint <> (SELECT count(*) FROM projection.events e
														   WHERE e.stream_id = s.stream_id)) || ' miscounted, '
	|| count(*) FILTER (WHERE ((s.state->>'n')::bigint - (s.state->>'k')::bigint) % 99 <> 0) || ' undecodable'
  FROM projection.snapshots s WHERE s.name = 'folds'}),
	'20 states, 0 miscounted, 0 undecodable',
	'every event folded exactly once, by one body or the other');
my $mixed = $node->safe_psql($db,
	"SELECT count(*) FROM projection.snapshots WHERE name = 'folds' AND (state->>'n')::bigint <> 1000");
cmp_ok($mixed, '>', 0, "the states hold events of the second body ($mixed of 20 streams)");
is($node->status($db, 'folds')->{state}, 'running', 'the projection is running');

# how many streams aggregate() with the fold as it is gives otherwise than
# aggregate() with the full fold $full
sub aggregate_differs
{
	my ($full) = @_;
	return $node->safe_psql(
		$db, qq{
SELECT count(*) FILTER (WHERE projection.aggregate(s.stream_id, 'fold')
						IS DISTINCT FROM projection.aggregate(s.stream_id, '$full'))
  FROM (SELECT DISTINCT stream_id FROM projection.events) s});
}

# aggregate() with the fold as it is: the full fold with the second body, not the mixed states
is(aggregate_differs('full_100'), '0', 'aggregate() with the second body: the full fold');

# the first body put back: the states still mix both, aggregate() folds every event
define_fold(1);
is(aggregate_differs('full_1'),
	'0', 'the first body put back: aggregate() is its full fold, not the mixed states');

# a rebuild folds every event with the fold as it is: the states are used again
$node->safe_psql($db, 'DELETE FROM block_at');
$node->safe_psql($db, "SELECT projection.rebuild('folds')");
ok($node->wait_caught_up($db, 'folds'), 'rebuilt');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FILTER (WHERE s.state IS DISTINCT FROM projection.aggregate(s.stream_id, 'full_1'))
	|| ' ' || count(*) FILTER (WHERE projection.aggregate(s.stream_id, 'fold')
							   IS DISTINCT FROM projection.aggregate(s.stream_id, 'full_1'))
  FROM projection.snapshots s WHERE s.name = 'folds'}),
	'0 0', 'after the rebuild: every state and aggregate() are the full fold');
my ($ret, $out, $err) = $node->psql($db,
	"SET client_min_messages = debug1; SELECT projection.aggregate('f-1', 'fold')");
like($err, qr/starts from snapshot projection "folds"/,
	'after the rebuild: aggregate() starts from the states again');

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no process died of a signal');
$node->stop('fast');
done_testing();
