# test/t/090_pool_batch_only.pl -- workers of projections whose only
# handlers are batch statements give their pool slot back.
#
# A snapshot projection's only handler is a batch statement, as is that of a
# projection created with handler => NULL and given on_batch statements.  A
# worker whose group holds only such projections must count them as ready:
# otherwise it never believes it has caught up, never leaves when idle, and
# never gives its slot to another database that waits for one, whose events
# then are never applied.  With a pool of one slot: a database with a
# snapshot projection, then one with a per-event projection, then one with a
# batch-only projection each get their events applied, and an idle worker
# of the last leaves.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('pool_batch_only');
$node->append_conf(
	'postgresql.conf', q{
projection.max_workers = 1
projection.workers_per_database = 1
});
$node->start;

# a database whose only async projection is a snapshot projection
$node->safe_psql('postgres', 'CREATE DATABASE snap');
$node->create_ext('snap');
$node->safe_psql(
	'snap', q{
CREATE FUNCTION count_fold(state jsonb, e projection.events) RETURNS jsonb
	LANGUAGE sql AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
SELECT projection.create_snapshot('counts', 'count_fold');
SELECT projection.append('s-' || (g % 3), 'E', '{}') FROM generate_series(1, 30) g;
});
ok($node->wait_caught_up('snap', 'counts'), 'the snapshot projection caught up');
is( $node->safe_psql(
		'snap',
		"SELECT string_agg(stream_id || '=' || (state->>'n'), ',' ORDER BY stream_id) "
		  . "FROM projection.snapshots WHERE name = 'counts'"),
	's-0=10,s-1=10,s-2=10',
	'the snapshot states are folded');

# another database: its worker needs the only slot, held by an idle worker
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->create_ext('other');
$node->safe_psql(
	'other', q{
CREATE TABLE seen (pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
SELECT projection.create('p', 'h');
SELECT projection.append('o', 'E', '{}') FROM generate_series(1, 5);
});
ok($node->wait_caught_up('other', 'p'),
	'the idle worker of a snapshot projection gives its slot to another database');
is($node->safe_psql('other', 'SELECT count(*) FROM seen'),
	'5', 'the other database got its events applied');

# a database whose only async projection has only batch statements
$node->safe_psql('postgres', 'CREATE DATABASE batch');
$node->create_ext('batch');
$node->safe_psql(
	'batch', q{
CREATE TABLE totals (stream_id text PRIMARY KEY, n bigint NOT NULL);
SELECT projection.create('totals', NULL, tables => '{public.totals}');
SELECT projection.on_batch('totals', $$
	INSERT INTO public.totals AS t SELECT stream_id, count(*) FROM batch GROUP BY 1 ORDER BY 1
	ON CONFLICT (stream_id) DO UPDATE SET n = t.n + excluded.n $$);
SELECT projection.append('b-' || (g % 2), 'E', '{}') FROM generate_series(1, 10) g;
});
ok($node->wait_caught_up('batch', 'totals'), 'the batch-only projection caught up');
is( $node->safe_psql(
		'batch', "SELECT string_agg(stream_id || '=' || n, ',' ORDER BY stream_id) FROM totals"),
	'b-0=5,b-1=5',
	'the batch statement applied every event once');

# the first database gets the slot back in turn
$node->safe_psql('snap', "SELECT projection.append('s-0', 'E', '{}')");
ok($node->wait_caught_up('snap', 'counts'),
	'the idle worker of a batch-only projection gives its slot back');
is( $node->safe_psql(
		'snap',
		"SELECT state->>'n' FROM projection.snapshots WHERE name = 'counts' AND stream_id = 's-0'"),
	'11',
	'the snapshot projection applied the new event');

# an idle worker of a batch-only projection leaves after the idle time-out
$node->safe_psql('postgres',
	"ALTER SYSTEM SET projection.worker_idle_timeout = '100ms'");
$node->reload;
ok($node->wait_for_no_worker('snap'),
	'the worker of a snapshot projection leaves when idle');
ok($node->wait_for_no_worker('batch'), 'no worker left in the batch database');

$node->stop;
done_testing();
