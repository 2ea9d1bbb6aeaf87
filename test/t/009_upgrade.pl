# test/t/009_upgrade.pl -- ALTER EXTENSION projection UPDATE from 1.0 to 1.1.
#
# A database created at version 1.0 keeps working with the new library
# (checkpoints in the registry row, as 1.0 kept them); after the update the
# worker writes its checkpoints to projection.checkpoints and continues from
# where it was, applying every event once; the registry row is no longer
# rewritten per batch, also while a long transaction holds back the xmin
# horizon; pause, resume and rebuild keep working on the new checkpoints.

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
$node->safe_psql($db, "CREATE EXTENSION projection VERSION '1.0'");
is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'projection'"),
	'1.0', 'the extension is at 1.0');
$node->wait_for_worker($db);
$node->safe_psql(
	$db, q{
CREATE TABLE applied (pos bigint PRIMARY KEY);
CREATE FUNCTION apply_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.applied VALUES (e.global_position) $$;
SELECT projection.create('counted', 'apply_h', tables => '{applied}');
});

# Appends n events, one transaction each.
sub append_one_by_one
{
	my ($n) = @_;

	$node->safe_psql($db,
		join('', map { "SELECT projection.append('s', 'E', '{}');\n" } 1 .. $n));
	return;
}

# Every event applied exactly once?
sub all_applied_once
{
	return $node->safe_psql(
		$db, q{
SELECT (SELECT count(*) FROM applied) = (SELECT count(*) FROM projection.events)
   AND NOT EXISTS (SELECT FROM projection.events e
                    WHERE NOT EXISTS (SELECT FROM applied a WHERE a.pos = e.global_position))});
}

append_one_by_one(20);
ok($node->wait_caught_up($db, 'counted'), 'at 1.0 the worker applies the events');
is(all_applied_once(), 't', 'each once');
is($node->safe_psql($db, "SELECT position FROM projection.projections WHERE name = 'counted'"),
	$node->max_position($db), 'with the checkpoint in the registry row, as 1.0 keeps it');

$node->safe_psql($db, "ALTER EXTENSION projection UPDATE TO '1.1'");
is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'projection'"),
	'1.1', 'the extension is at 1.1');
append_one_by_one(20);
ok($node->wait_caught_up($db, 'counted'), 'after the update the worker goes on');
is(all_applied_once(), 't', 'from where it was: every event once');
is( $node->safe_psql(
		$db,
		"SELECT array_agg(c.position) FROM projection.checkpoints c "
		  . "JOIN projection.projections p ON p.id = c.projection_id WHERE p.name = 'counted'"),
	'{' . $node->max_position($db) . '}',
	'its checkpoint is the one entry of projection.checkpoints');

# a long transaction holding back the xmin horizon: the registry row is not
# rewritten per batch (its xmin stays), and the projection keeps up
my $reader = $node->background_psql($db);
$reader->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$reader->query_safe('SELECT count(*) FROM projection.events');
my $row_xmin = $node->safe_psql($db,
	"SELECT xmin FROM projection.projections WHERE name = 'counted'");
append_one_by_one(100);
ok($node->wait_caught_up($db, 'counted'), 'the projection keeps up beside a long transaction');
is($node->safe_psql($db, "SELECT xmin FROM projection.projections WHERE name = 'counted'"),
	$row_xmin, 'without rewriting its registry row');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM projection.checkpoints c "
		  . "JOIN projection.projections p ON p.id = c.projection_id WHERE p.name = 'counted'"),
	'1', 'and with one visible checkpoint entry');
$reader->query_safe('COMMIT');
$reader->quit;
is(all_applied_once(), 't', 'every event once');

# pause, resume and rebuild on the new checkpoints
$node->safe_psql($db, "SELECT projection.pause('counted')");
append_one_by_one(5);
is($node->status($db, 'counted', [qw(state lag_events)])->{lag_events},
	'5', 'paused: the lag counts from the checkpoint entry');
$node->safe_psql($db, "SELECT projection.resume('counted')");
ok($node->wait_caught_up($db, 'counted'), 'resumed, it catches up');
is(all_applied_once(), 't', 'every event once');
$node->safe_psql($db, "SELECT projection.rebuild('counted')");
ok($node->wait_caught_up($db, 'counted'), 'rebuilt, it runs');
is(all_applied_once(), 't', 'the rebuilt model has every event once');
append_one_by_one(3);
ok($node->wait_caught_up($db, 'counted'), 'and goes on after the rebuild');
is(all_applied_once(), 't', 'every event once');

$node->stop;
done_testing();
