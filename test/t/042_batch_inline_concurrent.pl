
# test/t/042_batch_inline_concurrent.pl -- inline batch statements under
# concurrent writers.
#
# Four pgbench clients append events in multi-row statements, each touching
# several hot keys of an inline read model in random order.  The batch
# statement aggregates its statement's events per key and upserts them
# ordered by key, so concurrent appenders take the row locks in one order:
# no deadlock, no lost update, and the read model equals the same
# aggregate computed over the event store.

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
CREATE TABLE sales (day int PRIMARY KEY, n bigint NOT NULL, total numeric NOT NULL);
CREATE TABLE last_sale (stream_id text PRIMARY KEY, amount int NOT NULL, position bigint NOT NULL);
SELECT projection.create('sales', NULL, '{Sale}', mode => 'inline', tables => '{sales}');
SELECT projection.on_batch('sales', $$
	INSERT INTO public.sales AS s (day, n, total)
	SELECT (data->>'day')::int, count(*), sum((data->>'amount')::numeric)
	  FROM batch GROUP BY 1 ORDER BY 1
	ON CONFLICT (day) DO UPDATE SET n = s.n + excluded.n, total = s.total + excluded.total $$);
-- order-dependent: the latest event per stream wins
SELECT projection.create('last_sale', NULL, '{Sale}', mode => 'inline', tables => '{last_sale}');
SELECT projection.on_batch('last_sale', $$
	INSERT INTO public.last_sale AS l (stream_id, amount, position)
	SELECT stream_id, (data->>'amount')::int, global_position
	  FROM (SELECT DISTINCT ON (stream_id) * FROM batch ORDER BY stream_id, global_position DESC) latest
	 ORDER BY stream_id
	ON CONFLICT (stream_id) DO UPDATE SET amount = excluded.amount, position = excluded.position $$);
});

# every statement: 6 events over 5 hot days in random order, in 3 streams
# of 20 shared by all clients (so that one statement holds several events
# of one stream, and clients write the same streams); the rows go in in
# stream order, so that the appenders' stream locks cannot deadlock
my $script = q{
\set s random(1, 20)
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'stream-' || lpad(((:s + g / 2) % 20)::text, 2, '0'), 'Sale',
	   jsonb_build_object('day', (random() * 4)::int, 'amount', (random() * 100)::int)
  FROM generate_series(0, 5) g ORDER BY 1;
};
$node->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=150',
	0,
	[qr{processed: 600/600}],
	[qr{^$}],
	'4 concurrent writers append 3600 events in 600 statements',
	{ '042_append' => $script });

is($node->safe_psql($db, "SELECT count(*) FROM projection.events WHERE event_type = 'Sale'"),
	'3600', 'every event was appended');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM (
  (SELECT day, n, total FROM sales
   EXCEPT
   SELECT (data->>'day')::int, count(*), sum((data->>'amount')::numeric)
	 FROM projection.events WHERE event_type = 'Sale' GROUP BY 1)
  UNION ALL
  (SELECT (data->>'day')::int, count(*), sum((data->>'amount')::numeric)
	 FROM projection.events WHERE event_type = 'Sale' GROUP BY 1
   EXCEPT
   SELECT day, n, total FROM sales)) d}),
	'0', 'the sums per day equal the aggregate over the event store');
is($node->safe_psql($db, 'SELECT sum(n) FROM sales'), '3600', 'every event counted once');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM last_sale l
  JOIN (SELECT DISTINCT ON (stream_id) stream_id, global_position
		  FROM projection.events WHERE event_type = 'Sale'
		 ORDER BY stream_id, global_position DESC) e USING (stream_id)
 WHERE l.position = e.global_position}),
	'20', 'each stream holds its latest event');

$node->stop('fast');
done_testing();
