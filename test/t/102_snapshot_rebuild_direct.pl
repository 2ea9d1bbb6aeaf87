
# test/t/102_snapshot_rebuild_direct.pl -- a rebuild of an async snapshot
# projection folds its batches directly (1.6: no batch statement run, no
# state loaded for a stream the rebuild has not written yet, new states
# inserted without ON CONFLICT), which holds only while nobody else writes
# the states.  Here it runs while a writer appends to the same streams and
# the worker applies the appends (before and after the rebuild), and once
# more with the server killed (kill -9) in the middle of it.  Each time,
# every stream's stored state equals the fold of all its events, computed
# apart (an SQL aggregate over the same fold), and the projection is
# running without an error.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->start;

my $db = 'postgres';
$node->create_ext($db);
$node->safe_psql(
	$db, q{
CREATE FUNCTION count_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF e.global_position = (SELECT b.pos FROM public.block_at b)
	   AND (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()) = 'client backend' THEN
		PERFORM pg_advisory_xact_lock_shared(4242);
	END IF;
	RETURN jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'i')::bigint,
							  'last', e.stream_version);
END
$$;
CREATE AGGREGATE count_agg(projection.events) (sfunc = count_fold, stype = jsonb, initcond = '{}');
-- a position at which a rebuild's fold (not the worker's) waits on advisory lock 4242
CREATE TABLE block_at (pos bigint);
-- appends n events to 50 streams, one transaction each
CREATE PROCEDURE appender(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. n LOOP
		PERFORM projection.append('s-' || (i % 50), 'Counted', jsonb_build_object('i', i));
		COMMIT;
	END LOOP;
END
$$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 's-' || (i % 50), i / 50 + 1, 'Counted', jsonb_build_object('i', i)
  FROM generate_series(0, 2999) i;
SELECT projection.create_snapshot('counts', 'count_fold');
});
ok($node->wait_caught_up($db, 'counts'), 'the projection caught up');

# Every stream's state is the fold of all its events, and the projection is healthy.
sub check_states
{
	my ($what) = @_;

	ok($node->wait_caught_up($db, 'counts'), "$what: caught up");
	is( $node->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM projection.snapshots WHERE name = 'counts') || ' states, '
	|| (SELECT count(*)
		  FROM (SELECT e.stream_id, count_agg(e ORDER BY e.global_position) AS state
				  FROM projection.events e GROUP BY e.stream_id) f
		  FULL JOIN (SELECT * FROM projection.snapshots WHERE name = 'counts') s USING (stream_id)
		 WHERE s.state IS DISTINCT FROM f.state) || ' differ'
}),
		'50 states, 0 differ', "$what: every stream's state is the fold of its events");
	my $st = $node->status($db, 'counts');
	is($st->{state}, 'running', "$what: the projection is running");
	is($st->{last_error}, '', "$what: no error recorded");
	return;
}

# ---------------------------------------------------------------------
# 1. rebuilds while a writer appends and the worker applies its events
# ---------------------------------------------------------------------
my $writer = $node->background_psql($db);
$writer->query_until(qr/started/, "\\echo started\nCALL appender(1500);\n");
for my $i (1 .. 3)
{
	is( $node->safe_psql(
			$db,
			"SET client_min_messages = warning; SET projection.replay_batch_size = 1000; "
			  . "SELECT projection.rebuild('counts') > 0"),
		't', "rebuild $i while the writer appends");
}
$writer->quit;
check_states('rebuilds beside a writer');

# ---------------------------------------------------------------------
# 2. kill -9 in the middle of a rebuild
# ---------------------------------------------------------------------
my $max = $node->max_position($db);
$node->safe_psql($db, "INSERT INTO block_at VALUES ($max - 100)");
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $rebuild = $node->background_psql($db, on_error_stop => 0);
$rebuild->query_until(qr/started/,
	"\\echo started\nSET projection.replay_batch_size = 1000;\nSELECT projection.rebuild('counts');\n");
my $q = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($q) r"),
	'the rebuild waits in its fold, past its first batches');
my $pid = $node->safe_psql('postgres', $q);
my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the rebuilding backend (pid $pid)");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $rebuild->quit; };
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
$node->safe_psql($db, 'TRUNCATE block_at');
$node->safe_psql($db, 'CALL appender(100)');
check_states('after kill -9 in a rebuild');
is( $node->safe_psql(
		$db,
		"SET client_min_messages = warning; SELECT projection.rebuild('counts') > 0"),
	't', 'a rebuild after the crash');
check_states('the rebuild after the crash');

done_testing();
