
# test/t/126_hostile_snapshot_memory.pl -- the worker's memory while it
# catches up 200,000 events through a snapshot projection whose PL/pgSQL
# fold changes its event argument (1.6: each event row handed over as a
# read/write expanded record, the fold's result kept without a copy).  The
# fold stops twice at the same point of a round, after 20,000 and after
# 180,000 events; each time the worker's memory contexts are logged
# (pg_log_backend_memory_contexts): their grand total must not have grown
# with the 160,000 events between (a leak of 50 bytes an event would add
# 8 MB).  Then every state is the fold of its events.

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
CREATE FUNCTION count_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF e.global_position = 20000 THEN
		PERFORM pg_advisory_xact_lock_shared(4201);
	ELSIF e.global_position = 180000 THEN
		PERFORM pg_advisory_xact_lock_shared(4202);
	END IF;
	e.data := e.data || jsonb_build_object('seen', e.stream_version);
	RETURN jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'i')::bigint,
							  'last', e.data->'seen');
END
$$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 's-' || (i % 1000), i / 1000 + 1, 'Counted', jsonb_build_object('i', i, 'pad', repeat('x', 100))
  FROM generate_series(0, 199999) i;
});
is($node->safe_psql($db, 'SELECT min(global_position) || \'-\' || max(global_position) FROM projection.events'),
	'1-200000', 'the events are at positions 1 to 200,000');

my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4201), pg_advisory_lock(4202)');

# the backend waiting for advisory lock $key (pg_locks, not pg_stat_activity:
# right after the first lock is released the worker is still shown waiting
# for it until it wakes, which a wait for the second must not take for it)
sub waiting
{
	my ($key) = @_;
	return "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $key";
}

# the grand total of the worker's memory contexts, logged now
sub worker_memory
{
	my ($pid) = @_;
	my $offset = -s $node->logfile;

	$node->safe_psql($db, "SELECT pg_log_backend_memory_contexts($pid)");
	$node->wait_for_log(qr/\[$pid\] LOG:  Grand total: \d+ bytes/, $offset);
	my $log = slurp_file($node->logfile, $offset);
	$log =~ /\[$pid\] LOG:  Grand total: (\d+) bytes/ or die "no grand total in the log";
	return $1;
}

$node->safe_psql($db, "SELECT projection.create_snapshot('counts', 'count_fold')");
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM (" . waiting(4201) . ") w"),
	'the worker stops in its fold at event 20,000');
my $pid = $node->safe_psql($db, waiting(4201));
my $first = worker_memory($pid);
$holder->query_safe('SELECT pg_advisory_unlock(4201)');
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM (" . waiting(4202) . ") w"),
	'the worker stops in its fold at event 180,000');
is($node->safe_psql($db, waiting(4202)), $pid, 'the same worker');
my $second = worker_memory($pid);
note("worker memory: $first bytes at event 20,000, $second bytes at event 180,000");
cmp_ok($second, '<', $first + 8 * 1024 * 1024,
	'the worker\'s memory did not grow with the 160,000 events folded between');
$holder->query_safe('SELECT pg_advisory_unlock(4202)');
$holder->quit;

ok($node->wait_caught_up($db, 'counts'), 'caught up');
is( $node->safe_psql(
		$db, q{
SELECT count(*) || ' states, '
	|| count(*) FILTER (WHERE (s.state->>'n')::int = 200 AND (s.state->>'last')::int = 200
					   AND (s.state->>'sum')::bigint = 200 * substr(s.stream_id, 3)::bigint + 1000 * 19900)
	|| ' right'
  FROM projection.snapshots s WHERE s.name = 'counts'
}),
	'1000 states, 1000 right', 'every stream folded its 200 events once');

done_testing();
