
# test/t/047_snapshot_inline_concurrent.pl -- an inline snapshot projection
# under concurrent writers: pgbench clients append to a few shared streams
# (single appends and multi-stream transactions, in stream order as
# applications should) while others insert multi-row batches into fresh
# streams; no deadlock or lost update, and at the end every stored state
# equals aggregate() of its stream.

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
CREATE FUNCTION sum_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'v')::bigint,
							  'last', e.stream_version)
$$;
SELECT projection.append('hot-' || i, 'Added', '{"v": 0}') FROM generate_series(1, 5) i;
SELECT projection.create_snapshot('sums', 'sum_fold', mode => 'inline');
CREATE SEQUENCE batch_seq;
});
is($node->safe_psql($db, "SELECT count(*) FROM projection.snapshots WHERE name = 'sums'"),
	'5', 'the existing events were folded in at create');

$node->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=150',
	0,
	[qr{processed: 600/600}],
	[qr{^$}],
	'concurrent appends to shared streams',
	{
		'047_single' => q{
\set s random(1, 5)
SELECT projection.append('hot-' || :s, 'Added', jsonb_build_object('v', :s));
},
		'047_multi' => q{
\set a random(1, 2)
\set b random(3, 5)
BEGIN;
SELECT projection.append('hot-' || :a, 'Added', '{"v": 10}');
SELECT projection.append('hot-' || :b, 'Added', '{"v": 100}');
COMMIT;
},
		'047_batch' => q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'batch-' || b.n || '-' || s, v, 'Added', jsonb_build_object('v', v)
  FROM (SELECT nextval('batch_seq') AS n) b, generate_series(1, 3) s, generate_series(1, 4) v;
},
	});

is( $node->safe_psql(
		$db, q{
SELECT (SELECT count(DISTINCT stream_id) FROM projection.events) || ' streams, '
	|| (SELECT count(*) FROM projection.snapshots WHERE name = 'sums') || ' states, '
	|| (SELECT count(*) FROM projection.snapshots s
		 WHERE s.state IS DISTINCT FROM projection.aggregate(s.stream_id, 'sum_fold')) || ' differ, '
	|| (SELECT count(*) FROM projection.snapshots s
		 WHERE s.version <> (SELECT max(stream_version) FROM projection.events e
							  WHERE e.stream_id = s.stream_id)) || ' behind'
}),
	do
	{
		my $s = $node->safe_psql($db, 'SELECT count(DISTINCT stream_id) FROM projection.events');
		"$s streams, $s states, 0 differ, 0 behind";
	},
	'every state equals aggregate() of its stream');
is( $node->safe_psql(
		$db, "SELECT sum((state->>'n')::bigint) = (SELECT count(*) FROM projection.events) "
		  . "FROM projection.snapshots WHERE name = 'sums'"),
	't', 'every event folded exactly once');

$node->stop('fast');
done_testing();
