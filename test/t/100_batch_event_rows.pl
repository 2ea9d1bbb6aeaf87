
# test/t/100_batch_event_rows.pl -- events whose data is stored out of line
# (TOAST), read as rows of projection.events by the worker and by replays
# (1.5: no whole-row value is built for batch statements).
#
#   - batch statements see every event's data, fetched from TOAST, in the
#     worker (catch-up and running), in rebuild() and after a failing batch
#     (event by event, on_error 'skip');
#   - per-event handlers (a handler function beside a batch statement) get
#     the whole event, with its data;
#   - projection.batch_bytes still bounds a batch by the events' stored size,
#     out-of-line values included: with batch_bytes = 256kB and events of
#     about 200kB each, no batch holds more than two of them (counting only
#     the rows as read, with their TOAST pointers, all of them would fit in
#     one).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main', conf => qq(
projection.batch_bytes = '256kB'
projection.replay_batch_size = 1000
));
$node->safe_psql(
	$db, q{
CREATE TABLE seen_batch (pos bigint PRIMARY KEY, len int NOT NULL, head text NOT NULL);
CREATE TABLE seen_event (pos bigint PRIMARY KEY, len int NOT NULL, head text NOT NULL);
CREATE TABLE sizes (n bigint NOT NULL, last bigint NOT NULL);
CREATE TABLE poison (i int PRIMARY KEY);
CREATE FUNCTION check_event(i int) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF EXISTS (SELECT FROM public.poison p WHERE p.i = check_event.i) THEN
		RAISE EXCEPTION 'poison event %', i USING ERRCODE = '22023';
	END IF;
	RETURN i;
END
$$;
CREATE FUNCTION record_event(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.seen_event
	VALUES (e.global_position, length(e.data->>'blob'), left(e.data->>'blob', 8))
$$;
SELECT projection.create('big', 'record_event'::regproc, '{Big}',
						 tables => '{seen_batch,seen_event,sizes}', on_error => 'skip');
SELECT projection.on_batch('big', $$
	INSERT INTO public.seen_batch
	SELECT global_position, length(data->>'blob'), left(data->>'blob', 8)
	  FROM batch WHERE public.check_event((data->>'i')::int) IS NOT NULL$$);
SELECT projection.on_batch('big',
	'INSERT INTO public.sizes SELECT count(*), max(global_position) FROM batch');
});

# events of about 200kB of random hex each (stored out of line, not
# compressible), appended in one statement: one backlog for the worker
my $append = q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'big-' || i, 1, 'Big',
	   jsonb_build_object('i', i, 'blob',
						  (SELECT string_agg(md5(i::text || '-' || k::text || random()::text), '')
							 FROM generate_series(1, 6400) k))
  FROM generate_series(%d, %d) i;
};
$node->safe_psql($db, sprintf($append, 1, 8));
cmp_ok( $node->safe_psql(
		$db,
		"SELECT min(pg_column_size(data)) FROM projection.events WHERE event_type = 'Big'"),
	'>', 150000, 'the events are large');
ok( $node->safe_psql(
		$db,
		"SELECT pg_relation_size(reltoastrelid) > 8 * 150000 FROM pg_class "
		  . "WHERE oid = 'projection.events'::regclass"),
	'their data is stored out of line');
ok($node->wait_caught_up($db, 'big'), 'the worker catches up');

my $check = q{
SELECT count(*) || ' ' || count(*) FILTER (WHERE b.len = 204800 AND b.head = left(e.data->>'blob', 8))
	   || ' ' || count(*) FILTER (WHERE v.len = 204800 AND v.head = left(e.data->>'blob', 8))
  FROM projection.events e
  LEFT JOIN seen_batch b ON b.pos = e.global_position
  LEFT JOIN seen_event v ON v.pos = e.global_position
 WHERE e.event_type = 'Big' AND (e.data->>'i')::int NOT IN (SELECT i FROM poison)
};
is($node->safe_psql($db, $check), '8 8 8',
	'worker: the batch statement and the handler saw every event with its data');
cmp_ok($node->safe_psql($db, 'SELECT max(n) FROM sizes'), '<=', 2,
	'worker: projection.batch_bytes bounds the batches by the stored size');

# running: the next events, one of them poison (event by event, skipped)
$node->safe_psql($db, 'INSERT INTO poison VALUES (11)');
$node->safe_psql($db, sprintf($append, 9, 14));
ok($node->wait_caught_up($db, 'big'), 'the worker applies the next events');
is($node->safe_psql($db, $check), '13 13 13',
	'worker, a failing batch applied event by event: every other event with its data');
is( $node->safe_psql(
		$db,
		"SELECT string_agg((e.data->>'i') || ' ' || d.error, ',') FROM projection.dead_letters d "
		  . "JOIN projection.events e USING (global_position) WHERE d.name = 'big'"),
	'11 poison event 11',
	'worker: the poison event is the only dead letter');

# rebuild, in the session: the same, in batches bounded the same way
$node->safe_psql($db, 'DELETE FROM poison');
is($node->safe_psql($db, "SELECT projection.rebuild('big')"), '14', 'rebuild replays every event');
is($node->safe_psql($db, $check), '14 14 14',
	'rebuild: the batch statement and the handler saw every event with its data');
cmp_ok($node->safe_psql($db, 'SELECT max(n) FROM sizes'), '<=', 2,
	'rebuild: projection.batch_bytes bounds the batches by the stored size');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'big'"),
	'0', 'rebuild: no dead letter is left');

# rebuild with a poison event: that batch event by event, the rest set-based
$node->safe_psql($db, 'INSERT INTO poison VALUES (3)');
is($node->safe_psql($db, "SELECT projection.rebuild('big')"), '13',
	'rebuild under on_error skip replays every event but the poison one');
is($node->safe_psql($db, $check), '13 13 13',
	'rebuild, a failing batch applied event by event: every other event with its data');

$node->stop('fast');
done_testing();
