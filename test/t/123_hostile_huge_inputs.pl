
# test/t/123_hostile_huge_inputs.pl -- inputs far past the usual sizes give
# a correct read model or a clear error, never a crash or a wrong model:
#   1. an event of ~100 MB of jsonb (incompressible) through an async
#      projection with a batch statement and a per-event handler, and
#      through an inline projection's batch statement, between small events;
#   2. a snapshot state grown to ~20 MB (each event adds 1 MB to it),
#      async: the stored state, snapshot() and aggregate() (from the state
#      and by the full fold) agree;
#   3. a batch over the memory bound: projection.batch_bytes at its minimum
#      (64 kB) with events of ~400 kB each, every batch one event over the
#      bound, through batch statements and a rebuild.
# The sizes are checked through md5 and length, so that a truncated or
# mixed-up value shows.

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
-- n kB of text that pglz cannot compress: 100 kB of md5 hex repeated (its
-- history window is 4 kB), so the value is stored at its full size
CREATE FUNCTION blob(kb int) RETURNS text LANGUAGE sql AS $$
	SELECT left(repeat((SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3200) i),
					   kb / 100 + 1), kb * 1024) $$;
CREATE TABLE big_batch (pos bigint PRIMARY KEY, len bigint, sum text);
CREATE TABLE big_each (pos bigint PRIMARY KEY, len bigint, sum text);
CREATE TABLE big_inline (pos bigint PRIMARY KEY, len bigint, sum text);
CREATE FUNCTION big_each_h(e projection.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO public.big_each VALUES (e.global_position, length(e.data->>'blob'), md5(e.data->>'blob')) $$;
SELECT projection.create('big_batch_p', NULL, '{Big}', tables => '{big_batch}');
SELECT projection.on_batch('big_batch_p',
	'INSERT INTO public.big_batch SELECT global_position, length(data->>''blob''), md5(data->>''blob'') FROM batch');
SELECT projection.create('big_each_p', 'big_each_h', '{Big}', tables => '{big_each}');
SELECT projection.create('big_inline_p', NULL, '{Big}', mode => 'inline', tables => '{big_inline}');
SELECT projection.on_batch('big_inline_p',
	'INSERT INTO public.big_inline SELECT global_position, length(data->>''blob''), md5(data->>''blob'') FROM batch');
});

# the events of type Big as "position length md5" lines, the oracle of each model
my $oracle = q{SELECT string_agg(global_position || ' ' || length(data->>'blob') || ' ' || md5(data->>'blob'), ', '
	ORDER BY global_position) FROM projection.events WHERE event_type = 'Big'};
sub model
{
	my ($table) = @_;
	return $node->safe_psql($db,
		"SELECT string_agg(pos || ' ' || len || ' ' || sum, ', ' ORDER BY pos) FROM public.$table");
}

# ---------------------------------------------------------------------
# 1. a ~100 MB event between small ones
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
SELECT projection.append('big-1', 'Big', jsonb_build_object('blob', blob(1)));
SELECT projection.append('big-2', 'Big', jsonb_build_object('blob', blob(100 * 1024)));
SELECT projection.append('big-1', 'Big', jsonb_build_object('blob', blob(2)));
});
is($node->safe_psql($db,
		"SELECT pg_column_size(data) > 100 * 1024 * 1024 FROM projection.events WHERE stream_id = 'big-2'"),
	't', 'the big event is stored at over 100 MB');
ok($node->wait_caught_up($db, $_), "100 MB event: $_ caught up") for qw(big_batch_p big_each_p);
my $want = $node->safe_psql($db, $oracle);
is(model('big_batch'), $want, '100 MB event: the batch statement saw every event whole');
is(model('big_each'), $want, '100 MB event: the per-event handler saw every event whole');
is(model('big_inline'), $want, '100 MB event: the inline batch statement saw every event whole');

# ---------------------------------------------------------------------
# 2. a snapshot state of ~20 MB
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
-- the state keeps every event's chunk: it grows by 1 MB an event
CREATE FUNCTION grow(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
							  'chunks', coalesce(state->'chunks', '[]') || jsonb_build_array(e.data->>'chunk')) $$;
CREATE FUNCTION grow_full(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql VOLATILE AS $$
	SELECT grow(state, e) $$;
SELECT projection.create_snapshot('grow_p', 'grow', event_types => NULL);
});
$node->safe_psql($db,
	"SELECT projection.append('grow-1', 'Grow', jsonb_build_object('chunk', i || blob(1000))) "
	  . "FROM generate_series(1, 20) i");
ok($node->wait_caught_up($db, 'grow_p'), 'big state: the snapshot projection caught up');
is($node->safe_psql($db,
		"SELECT (state->>'n') || ' ' || (pg_column_size(state) > 20 * 1000 * 1000) "
		  . "FROM projection.snapshots WHERE name = 'grow_p' AND stream_id = 'grow-1'"),
	'20 true', 'big state: the stored state holds 20 events, over 20 MB');
is( $node->safe_psql(
		$db, q{
SELECT count(DISTINCT md5(x::text)) || ' ' || (min(md5(x::text)) = md5(projection.aggregate('grow-1', 'grow_full')::text))
  FROM (SELECT state AS x FROM projection.snapshots WHERE name = 'grow_p' AND stream_id = 'grow-1'
		UNION ALL SELECT projection.snapshot('grow_p', 'grow-1')
		UNION ALL SELECT projection.aggregate('grow-1', 'grow')) s}),
	'1 true', 'big state: stored state, snapshot() and aggregate() equal the full fold');
$node->safe_psql($db, "SELECT projection.append('grow-1', 'Grow', jsonb_build_object('chunk', 'last'))");
is( $node->safe_psql(
		$db, q{
SELECT (projection.snapshot('grow_p', 'grow-1')->>'n') || ' '
	|| (md5(projection.aggregate('grow-1', 'grow')::text) = md5(projection.aggregate('grow-1', 'grow_full')::text))}),
	'21 true', 'big state: folded forward from the stored state, the same as the full fold');

# ---------------------------------------------------------------------
# 3. batches over the memory bound
# ---------------------------------------------------------------------
$node->safe_psql($db, "ALTER SYSTEM SET projection.batch_bytes = '64kB'");
$node->reload;
$node->safe_psql($db,
	"SELECT projection.append('mid-' || (i % 3), 'Big', jsonb_build_object('blob', i || blob(400))) "
	  . "FROM generate_series(1, 40) i");
ok($node->wait_caught_up($db, $_), "batches over the bound: $_ caught up") for qw(big_batch_p big_each_p);
$want = $node->safe_psql($db, $oracle);
is(model('big_batch'), $want, 'batches over the bound: the batch statement model is the oracle');
is(model('big_each'), $want, 'batches over the bound: the per-event model is the oracle');
is(model('big_inline'), $want, 'batches over the bound: the inline model is the oracle');
$node->safe_psql($db, "SELECT projection.rebuild('big_batch_p')");
ok($node->wait_caught_up($db, 'big_batch_p'), 'batches over the bound: caught up after a rebuild');
is(model('big_batch'), $want, 'batches over the bound: the rebuilt model is the oracle');
is($node->safe_psql($db, 'SELECT count(*) FROM projection.dead_letters'), '0', 'no dead letters');
is($node->safe_psql($db, "SELECT count(*) FROM projection.status WHERE state <> 'running'"),
	'0', 'every projection is running');

$node->stop('fast');
done_testing();
