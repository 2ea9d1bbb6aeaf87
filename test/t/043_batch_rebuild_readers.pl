
# test/t/043_batch_rebuild_readers.pl -- rebuild() of an async projection
# whose handler is a batch statement, with readers sampling the read model.
#
# A hot key (one counter row, updated by every batch) and a per-stream
# table, over 200k events.  The rebuild is stopped in the middle (a function
# its batch statement calls waits on an advisory lock the test holds) while
# readers sample: every sample sees the old, complete read model, never an
# empty or half-built one; appends meanwhile are not blocked.  Then the
# rebuild finishes, the worker applies what was appended during it, and the
# read model equals the same aggregates computed over the event store.

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
$node->safe_psql(
	$db, q{
CREATE TABLE total (id int PRIMARY KEY, n bigint NOT NULL, amount bigint NOT NULL);
CREATE TABLE per_stream (stream_id text PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE block_at (pos bigint PRIMARY KEY);
CREATE FUNCTION gate(pos bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF EXISTS (SELECT FROM public.block_at b WHERE b.pos = gate.pos) THEN
		PERFORM pg_advisory_xact_lock_shared(4343);
	END IF;
	RETURN true;
END
$$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'acct-' || (i % 500), i / 500 + 1, 'Deposited', jsonb_build_object('amount', i % 7)
  FROM generate_series(0, 199999) i;
SELECT projection.create('totals', NULL, '{Deposited}', tables => '{total,per_stream}');
SELECT projection.on_batch('totals', $$
	INSERT INTO public.total AS t (id, n, amount)
	SELECT 1, count(*), sum((data->>'amount')::bigint) FROM batch WHERE public.gate(global_position)
	ON CONFLICT (id) DO UPDATE SET n = t.n + excluded.n, amount = t.amount + excluded.amount $$);
SELECT projection.on_batch('totals', $$
	INSERT INTO public.per_stream AS p (stream_id, n)
	SELECT stream_id, count(*) FROM batch GROUP BY 1 ORDER BY 1
	ON CONFLICT (stream_id) DO UPDATE SET n = p.n + excluded.n $$);
});

my $oracle = q{
SELECT count(*) || ' ' || sum((data->>'amount')::bigint) || ' ' || count(DISTINCT stream_id)
  FROM projection.events WHERE event_type = 'Deposited'};
my $model = q{SELECT n || ' ' || amount || ' ' || (SELECT count(*) FROM per_stream WHERE n > 0)
  FROM total};

ok($node->wait_caught_up($db, 'totals'), 'the projection caught up with 200k events');
my $complete = $node->safe_psql($db, $oracle);
is($node->safe_psql($db, $model), $complete, 'the read model equals the aggregate');

# block the rebuild's replay in the middle
my $middle = $node->safe_psql($db,
	"SELECT global_position FROM projection.events ORDER BY global_position OFFSET 100000 LIMIT 1");
$node->safe_psql($db, "INSERT INTO block_at VALUES ($middle)");
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4343)');

my $rebuilder = $node->background_psql($db);
$rebuilder->query_until(qr/started/, "\\echo started\nSELECT projection.rebuild('totals');\n");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT projection.rebuild%' "
		  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"),
	'the rebuild is blocked in the middle of its replay');
is($node->safe_psql($db, "SELECT state FROM projection.status WHERE name = 'totals'"),
	'rebuilding', 'the projection shows as rebuilding');

# readers sample the read model; appends go on meanwhile
my $partial = 0;
for my $i (1 .. 20)
{
	my $seen = $node->safe_psql($db, $model);
	$partial++ if $seen ne $complete;
	$node->safe_psql($db,
		"INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('late-$i', 1, 'Deposited', '{\"amount\": 1}')") if $i % 4 == 0;
}
is($partial, 0, 'every sample during the rebuild saw the old, complete read model');

$holder->query_safe('SELECT pg_advisory_unlock(4343)');
$holder->quit;
$rebuilder->quit;
ok($node->wait_caught_up($db, 'totals'),
	'after the rebuild the projection applies the events appended meanwhile');
is($node->safe_psql($db, $model), $node->safe_psql($db, $oracle),
	'the rebuilt read model equals the aggregate over every event');
is($node->safe_psql($db, "SELECT count(*) FROM per_stream"), '505', 'every stream once');

$node->stop('fast');
done_testing();
