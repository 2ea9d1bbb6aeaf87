
# test/t/130_replace_while_appending.pl -- the replace idiom (off, then on,
# in one transaction) while events are appended and the worker runs, many
# times in one cluster.
#
# Covers: events appended and committed while the replacement is open wait
# for it and are applied by the new statement, also when the worker's round
# for them starts (and reads the registry) before the replacement commits
# and locks the projection's registry row after it: a worker must not apply
# a projection's events with statements older than the row it locked.  Each
# round of the loop replaces the statement by one naming the round; the
# appending transaction also changes another projection's statements, so
# that the worker reloads its registry cache in the round those events
# wake, a registry made large on purpose (a paused projection with many
# statements) so that the load takes a while.  Checked at the end, from the
# rows alone: every event applied exactly once, and by the statement of the
# round that appended it.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $rounds = 100;

my $node = start_node('main');
my $db = 'postgres';

$node->safe_psql(
	$db, q{
CREATE TABLE applied (pos bigint, via int, round int);
CREATE TABLE noise_applied (pos bigint);
SELECT projection.create('rep', NULL, tables => '{applied}');
SELECT projection.on('rep', 'Rep',
	$$INSERT INTO public.applied VALUES (($1).global_position, 0, (($1).data->>'round')::int)$$);
SELECT projection.create('noise', NULL, tables => '{noise_applied}');
SELECT projection.on('noise', 'Noise-' || i,
	$$INSERT INTO public.noise_applied VALUES (($1).global_position)$$)
  FROM generate_series(1, 3000) i;
SELECT projection.pause('noise');
});
$node->safe_psql($db,
	q{SELECT projection.append('r-0', 'Rep', '{"round": 0}') FROM generate_series(1, 5)});
ok($node->wait_caught_up($db, 'rep'), 'the worker applied the first events');

my $bg = $node->background_psql($db);
for my $round (1 .. $rounds)
{
	$bg->query_safe(q{BEGIN});
	$bg->query_safe(q{SELECT projection.off('rep', 'Rep')});
	$bg->query_safe(
		qq{SELECT projection.on('rep', 'Rep', \$\$INSERT INTO public.applied VALUES ((\$1).global_position, $round, ((\$1).data->>'round')::int)\$\$)}
	);

	# appended and committed while the replacement is open, with a change of
	# the registry that makes the woken worker reload it
	my $noise =
	  $round % 2
	  ? q{SELECT projection.off('noise', 'Noise-1')}
	  : q{SELECT projection.on('noise', 'Noise-1', $$INSERT INTO public.noise_applied VALUES (($1).global_position)$$)};
	$node->safe_psql(
		$db, qq{
BEGIN;
$noise;
SELECT projection.append('r-$round', 'Rep', '{"round": $round}') FROM generate_series(1, 10);
COMMIT;
});
	$bg->query_safe(q{COMMIT});
	$node->safe_psql($db,
		qq{SELECT projection.append('r-$round', 'Rep', '{"round": $round}') FROM generate_series(1, 5)});
	$node->wait_caught_up($db, 'rep')
	  or BAIL_OUT("the worker did not catch up in round $round");
}
$bg->quit;

my $events = 5 + 15 * $rounds;
is( $node->safe_psql(
		$db, q{
SELECT count(*) || '/' || count(DISTINCT pos) || '/' ||
       (SELECT count(*) FROM projection.events WHERE event_type = 'Rep')
  FROM applied}),
	"$events/$events/$events",
	'every event applied exactly once');
is( $node->safe_psql(
		$db, q{
SELECT coalesce(string_agg(r, ',' ORDER BY r), 'none')
  FROM (SELECT DISTINCT lpad(round::text, 3) || ':' || via || ' x' || count(*) OVER (PARTITION BY round, via) AS r
          FROM applied WHERE via <> round) wrong}),
	'none',
	'every event applied by the statement of the replacement before it (those that were not: round:statement xcount)');

done_testing();
