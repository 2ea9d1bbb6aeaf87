
# test/t/121_hostile_crash_mid_rebuild.pl -- kill -9 of a backend in the
# middle of a rebuild with batch statements, in the middle of a rebuild of a
# snapshot projection, and in the middle of an inline batch statement: after
# the crash-restart every read model equals its oracle (each event applied
# exactly once, nothing of the killed transaction left) and each checkpoint
# is where its read model is.
#
# 040 and 045 kill the worker; here the killed process is a client backend
# (rebuild() runs in the caller's session, an inline batch statement in the
# appender's), each blocked at a known event by an advisory lock the test
# holds:
#   1. rebuild() of an async projection whose handlers are two batch
#      statements (a counter and one row per event);
#   2. rebuild() of an async snapshot projection (the fold counts and sums);
#   3. an INSERT of 3,000 events through an inline projection's batch
#      statement (the async projections take these events too).
# Events appended while a rebuild is blocked are applied once, after the
# crash, by the worker.

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
$node->create_exactly_once_tables($db);
# at the positions of block_at, a client backend (not the worker) blocks on
# the test's advisory lock 4242: in gate(), and so in count_fold
$node->create_count_fold($db, 'client backend');
$node->safe_psql(
	$db, q{
SELECT projection.create('counter', NULL, '{Incremented}', tables => '{counters,applied}');
SELECT projection.on_batch('counter',
	'INSERT INTO public.applied (pos) SELECT global_position FROM batch WHERE public.gate(global_position)');
-- an upsert: a rebuild empties counters
SELECT projection.on_batch('counter',
	'INSERT INTO public.counters AS c SELECT 1, count(*) FROM batch
	 ON CONFLICT (id) DO UPDATE SET n = c.n + excluded.n');

-- the oracle: the same fold without the gate, folding every event
CREATE FUNCTION count_full(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'i')::bigint,
							  'last', e.stream_version) $$;
SELECT projection.create_snapshot('counts', 'count_fold', event_types => '{Incremented}');
});

my $last = $node->bulk_append($db, 20_000);
ok($node->wait_caught_up($db, 'counter', $last), 'the batch projection caught up');
ok($node->wait_caught_up($db, 'counts', $last), 'the snapshot projection caught up');

# Kills the client backend that waits on the advisory lock (its query
# matching $like), waits for the crash-restart.
sub kill_blocked_backend
{
	my ($like, $what) = @_;
	my $where = "FROM pg_stat_activity WHERE backend_type = 'client backend' "
	  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '$like'";

	ok($node->poll_query_until('postgres', "SELECT count(*) = 1 $where"),
		"$what: the backend is blocked in the middle");
	my $pid = $node->safe_psql('postgres', "SELECT pid $where");
	my $offset = -s $node->logfile;
	ok(kill('KILL', $pid), "$what: kill -9 of the backend (pid $pid)");
	ok($node->wait_for_crash_restart($offset), "$what: the server restarted");
	return;
}

sub check_snapshot
{
	my ($what) = @_;
	my $streams = $node->safe_psql($db,
		"SELECT count(DISTINCT stream_id) FROM projection.events WHERE event_type = 'Incremented'");
	my $n = $node->safe_psql($db,
		"SELECT count(*) FROM projection.events WHERE event_type = 'Incremented'");

	is( $node->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM projection.snapshots WHERE name = 'counts') || ' states, '
	|| (SELECT count(*) FROM projection.snapshots s
		 WHERE s.name = 'counts'
		   AND s.state IS DISTINCT FROM projection.aggregate(s.stream_id, 'count_full')) || ' differ, '
	|| (SELECT coalesce(sum((state->>'n')::bigint), 0) FROM projection.snapshots WHERE name = 'counts')
	|| ' events folded'
}),
		"$streams states, 0 differ, $n events folded",
		"$what: every stream's state is the full fold of its events");
	my $st = $node->status($db, 'counts');
	is($st->{state}, 'running', "$what: the snapshot projection is running");
	is($st->{last_error}, '', "$what: no error recorded");
	cmp_ok($st->{position}, '>=', $node->max_position($db),
		"$what: its checkpoint is at or past the last event");
	return;
}

# ---------------------------------------------------------------------
# 1. kill -9 in the middle of rebuild() with batch statements
# ---------------------------------------------------------------------
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (10000)');
my $rebuilder = $node->background_psql($db, on_error_stop => 0);
$rebuilder->query_until(qr/started/, "\\echo started\nSELECT projection.rebuild('counter');\n");
ok($node->poll_query_until($db,
		"SELECT state = 'rebuilding' FROM projection.status WHERE name = 'counter'"),
	'rebuild: the projection shows as rebuilding');
# appended while the rebuild runs: the worker applies them after the crash
$last = $node->bulk_append($db, 2_000);
kill_blocked_backend('SELECT projection.rebuild%', 'rebuild with batch statements');
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
eval { local $SIG{PIPE} = 'IGNORE'; $rebuilder->quit; };
ok($node->wait_caught_up($db, 'counter', $last),
	'rebuild with batch statements: the worker applies the events appended meanwhile');
$node->check_exactly_once($db, 'counter', 'kill -9 in the middle of a rebuild with batch statements');

# the rebuild, run again, completes and changes nothing
$node->safe_psql($db, 'DELETE FROM block_at');
$node->safe_psql($db, "SELECT projection.rebuild('counter')");
ok($node->wait_caught_up($db, 'counter'), 'the rebuild run again: caught up');
$node->check_exactly_once($db, 'counter', 'a rebuild after the crash');

# ---------------------------------------------------------------------
# 2. kill -9 in the middle of rebuild() of a snapshot projection
# ---------------------------------------------------------------------
ok($node->wait_caught_up($db, 'counts'), 'the snapshot projection caught up');
check_snapshot('before the snapshot rebuild');
$holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (15000)');
$rebuilder = $node->background_psql($db, on_error_stop => 0);
$rebuilder->query_until(qr/started/, "\\echo started\nSELECT projection.rebuild('counts');\n");
$last = $node->bulk_append($db, 2_000);
kill_blocked_backend('SELECT projection.rebuild%', 'rebuild of a snapshot projection');
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
eval { local $SIG{PIPE} = 'IGNORE'; $rebuilder->quit; };
$node->safe_psql($db, 'DELETE FROM block_at');
ok($node->wait_caught_up($db, 'counts', $last),
	'rebuild of a snapshot projection: the worker applies the events appended meanwhile');
check_snapshot('kill -9 in the middle of a snapshot rebuild');

# ---------------------------------------------------------------------
# 3. kill -9 in the middle of an inline batch statement
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE inline_applied (pos bigint PRIMARY KEY);
SELECT projection.create('inline_log', NULL, '{Incremented}', mode => 'inline',
						 tables => '{inline_applied}');
SELECT projection.on_batch('inline_log',
	'INSERT INTO public.inline_applied SELECT global_position FROM batch WHERE public.gate(global_position)');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'log-a', i, 'Incremented', jsonb_build_object('i', i) FROM generate_series(1, 100) i;
});
my $first = $node->max_position($db);
$holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (' . ($first + 1500) . ')');
my $appender = $node->background_psql($db, on_error_stop => 0);
$appender->query_until(qr/started/, "\\echo started\n"
	  . "INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
	  . "SELECT 'log-b', i, 'Incremented', jsonb_build_object('i', i) FROM generate_series(1, 3000) i;\n");
kill_blocked_backend('INSERT INTO projection.events%', 'inline batch statement');
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
eval { local $SIG{PIPE} = 'IGNORE'; $appender->quit; };
is( $node->safe_psql(
		$db, q{
SELECT (SELECT count(*) FROM projection.events WHERE stream_id LIKE 'log-%') || ' events, '
	|| (SELECT count(*) FROM inline_applied) || ' applied, '
	|| (SELECT count(*) FROM projection.events WHERE stream_id = 'log-b') || ' of the killed INSERT'}),
	'100 events, 100 applied, 0 of the killed INSERT',
	'inline batch statement: nothing of the killed INSERT, the earlier events applied');
$node->safe_psql($db, 'DELETE FROM block_at');
$node->safe_psql($db,
	    "INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
	  . "SELECT 'log-b', i, 'Incremented', jsonb_build_object('i', i) FROM generate_series(1, 3000) i");
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.events e
 WHERE e.stream_id LIKE 'log-%'
   AND NOT EXISTS (SELECT FROM inline_applied a WHERE a.pos = e.global_position)}),
	'0', 'inline batch statement: the INSERT done again is applied, every event once');
is($node->safe_psql($db, 'SELECT count(*) FROM inline_applied'), '3100',
	'inline batch statement: 3100 events applied');

# the async projections went on through all of it
ok($node->wait_caught_up($db, 'counter'), 'the batch projection is caught up at the end');
$node->check_exactly_once($db, 'counter', 'at the end');
ok($node->wait_caught_up($db, 'counts'), 'the snapshot projection is caught up at the end');
check_snapshot('at the end');
is($node->safe_psql($db, 'SELECT count(*) FROM projection.dead_letters'),
	'0', 'no dead letters');

$node->stop('fast');
done_testing();
