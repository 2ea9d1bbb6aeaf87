# test/t/028_update_cancels_batch.pl -- ALTER EXTENSION projection UPDATE
# does not wait behind a worker's batch, as DROP EXTENSION does not.
#
# Covers: at 1.1, an async projection whose handler sleeps for minutes in a
# batch that holds its registry row; the update (1.1 to 1.2 writes every
# registry row) cancels that batch instead of waiting for it, and
# completes; the projection then runs again under the new version.  The
# statement_timeout only bounds how long the old behaviour would hang.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->append_conf('postgresql.conf', 'projection.workers_per_database = 1');
$node->start;

my $db = 'postgres';
$node->safe_psql($db, "CREATE EXTENSION projection VERSION '1.1'");
$node->safe_psql(
	$db, q{
CREATE TABLE applied (pos bigint PRIMARY KEY);
CREATE TABLE stall_once (stalled boolean);
INSERT INTO stall_once VALUES (false);
CREATE FUNCTION stall_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.applied VALUES (e.global_position);
	IF e.event_type = 'Stall' AND NOT (SELECT stalled FROM public.stall_once) THEN
		PERFORM pg_sleep(600);
	END IF;
END $$;
SELECT projection.create('stall', 'stall_h', start_from => 'end');
});
ok($node->wait_for_worker($db), 'worker running');
$node->safe_psql($db, "SELECT projection.append('s', 'Stall', '{}')");
ok( $node->poll_query_until(
		$db,
		"SELECT count(*) = 1 FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND wait_event = 'PgSleep'"),
	'the worker sleeps in its batch');

# the next attempt of the batch must not sleep again
$node->safe_psql($db, 'UPDATE stall_once SET stalled = true');
my ($ret, $stdout, $stderr) = $node->psql($db,
	"SET statement_timeout = '120s'; ALTER EXTENSION projection UPDATE");
is($ret, 0, 'ALTER EXTENSION UPDATE completes') or diag($stderr);
is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'projection'"),
	'1.8', 'at the new version');
ok($node->wait_caught_up($db, 'stall'), 'the projection applies the event after the update');
is($node->safe_psql($db, 'SELECT count(*) FROM applied'), '1', 'once');

$node->stop;
done_testing();
