
# test/t/125_hostile_snapshot_catch_up.pl -- an async snapshot projection's
# direct batches (1.6: states loaded without FOR UPDATE, new ones inserted
# without ON CONFLICT, "alone") under the callers that may interleave with
# the worker: the server killed (kill -9) in the middle of a catch-up
# (exactly once after the restart), snapshot() and projection.snapshots read
# while a rebuild runs (the old states until it commits), pause and resume
# in the middle of a catch-up, and retry_dead_letters while the worker
# applies new events of the same streams.  Each time every stream's stored
# state equals the fold of its events (an SQL aggregate over the same fold),
# dead letters left out.

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
$node->safe_psql(
	$db, q{
-- a position at which a fold waits on advisory lock 4242 (who: 'worker' or 'client')
CREATE TABLE block_at (pos bigint, who text);
-- events whose fold fails while poison.active
CREATE TABLE poison (active boolean);
INSERT INTO poison VALUES (true);
CREATE FUNCTION count_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT FROM public.block_at b WHERE b.pos = e.global_position
			   AND (b.who = 'client') = ((SELECT backend_type FROM pg_stat_activity
										  WHERE pid = pg_backend_pid()) = 'client backend')) THEN
		PERFORM pg_advisory_xact_lock_shared(4242);
	END IF;
	IF e.data ? 'poison' AND (SELECT active FROM public.poison) THEN
		RAISE EXCEPTION 'poison event at %', e.global_position;
	END IF;
	e.data := e.data || '{"changed": true}';
	RETURN jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'i')::bigint,
							  'last', e.stream_version);
END
$$;
CREATE AGGREGATE count_agg(projection.events) (sfunc = count_fold, stype = jsonb, initcond = '{}');
});
# 20,000 events over 50 streams, and appender(n) to append more
$node->create_counted_streams($db, 20_000);

# check_fold_states: every stream's state is the fold of its events (dead
# letters left out), the projection running

# the pid of the backend or worker waiting for advisory lock 4242 in the fold
my $waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'";

# ---------------------------------------------------------------------
# 1. kill -9 in the middle of the worker's catch-up
# ---------------------------------------------------------------------
$node->safe_psql($db, "INSERT INTO block_at VALUES (12000, 'worker')");
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, "SELECT projection.create_snapshot('counts', 'count_fold', on_error => 'skip')");
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($waiting) w"),
	'the worker waits in its fold, in the middle of the catch-up');
my $done = $node->safe_psql($db,
	"SELECT count(*) > 0 AND max(global_position) < 12000 FROM projection.snapshot_states");
is($done, 't', 'some rounds of the catch-up committed, not the one that waits');
my $pid = $node->safe_psql($db, $waiting);
my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
$node->safe_psql($db, 'TRUNCATE block_at');
$node->check_fold_states($db, 'counts', 'after kill -9 in a catch-up', dead_letters => 1);

# ---------------------------------------------------------------------
# 2. snapshot() and projection.snapshots while a rebuild runs
# ---------------------------------------------------------------------
$node->safe_psql($db, 'CALL appender(500)');
ok($node->wait_caught_up($db, 'counts'), 'caught up before the rebuild');
my $before = $node->safe_psql($db,
	"SELECT string_agg(stream_id || '=' || state::text || ':' || version, ',' ORDER BY stream_id) "
	  . "FROM projection.snapshots WHERE name = 'counts'");
my $via_snapshot = "SELECT string_agg(stream_id || '=' || projection.snapshot('counts', stream_id)::text "
  . "|| ':' || version, ',' ORDER BY stream_id) FROM projection.snapshots WHERE name = 'counts'";
is($node->safe_psql($db, $via_snapshot), $before, 'snapshot() agrees with the stored states');
$node->safe_psql($db, "INSERT INTO block_at VALUES (15000, 'client')");
$holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $rebuild = $node->background_psql($db);
$rebuild->query_until(qr/started/,
	"\\echo started\nSET projection.replay_batch_size = 1000;\nSELECT projection.rebuild('counts');\n");
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($waiting) w"),
	'the rebuild waits in its fold, past its first batches');
is( $node->safe_psql($db,
		"SELECT string_agg(stream_id || '=' || state::text || ':' || version, ',' ORDER BY stream_id) "
		  . "FROM projection.snapshots WHERE name = 'counts'"),
	$before, 'during the rebuild, projection.snapshots shows the old states');
is($node->safe_psql($db, $via_snapshot), $before, 'during the rebuild, snapshot() gives the old states');
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$rebuild->quit;
$holder->quit;
$node->safe_psql($db, 'TRUNCATE block_at');
is($node->safe_psql($db, $via_snapshot), $before, 'after the rebuild: the same states');
$node->check_fold_states($db, 'counts', 'after a rebuild read meanwhile', dead_letters => 1);

# ---------------------------------------------------------------------
# 3. pause and resume in the middle of a catch-up
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.pause('counts')");
$node->safe_psql($db, 'CALL appender(3000)');
my $mid = $node->safe_psql($db, 'SELECT max(global_position) - 1500 FROM projection.events');
$node->safe_psql($db, "INSERT INTO block_at VALUES ($mid, 'worker')");
$holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, "SELECT projection.resume('counts')");
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM ($waiting) w"),
	'the worker waits in its fold, in the middle of the catch-up');
# pause cancels the waiting round
$node->safe_psql($db, "SELECT projection.pause('counts')");
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;
$node->safe_psql($db, "SELECT projection.resume('counts')");
$node->safe_psql($db, 'TRUNCATE block_at');
$node->check_fold_states($db, 'counts', 'after pause and resume in a catch-up', dead_letters => 1);

# ---------------------------------------------------------------------
# 4. retry_dead_letters while the worker applies new events of the streams
# ---------------------------------------------------------------------
$node->safe_psql($db,
	"SELECT projection.append('s-' || i, 'Counted', jsonb_build_object('i', 0, 'poison', true)) "
	  . "FROM generate_series(0, 9) i");
ok($node->wait_caught_up($db, 'counts'), 'the poison events were skipped');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'counts'"),
	'10', 'ten dead letters');
$node->check_fold_states($db, 'counts', 'with dead letters', dead_letters => 1);
$node->safe_psql($db, 'UPDATE poison SET active = false');
my $writer = $node->background_psql($db);
$writer->query_until(qr/started/, "\\echo started\nCALL appender(2000);\n");
# each retry: the dead letters of streams the worker folded further meanwhile stay (55000)
my $left = $node->safe_psql($db,
	"SET client_min_messages = warning; SELECT failed FROM projection.retry_dead_letters('counts')");
$writer->quit;
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'counts'"),
	$left, 'the dead letters not applied stay');
is( $node->safe_psql($db,
		"SELECT count(*) FROM projection.dead_letters WHERE name = 'counts' AND sqlstate <> '55000'"),
	'0', 'each because the state holds later events');
$node->check_fold_states($db, 'counts', 'after retry_dead_letters beside the worker', dead_letters => 1);
is( $node->safe_psql($db, "SET client_min_messages = warning; SELECT projection.rebuild('counts') > 0"),
	't', 'a rebuild');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'counts'"),
	'0', 'no dead letters after the rebuild (the poison is gone)');
$node->check_fold_states($db, 'counts', 'the rebuild', dead_letters => 1);

done_testing();
