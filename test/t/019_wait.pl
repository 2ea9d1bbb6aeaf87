
# test/t/019_wait.pl -- projection.wait() holds no snapshot while it sleeps,
# and says at once when the projection cannot move.
#
# Covers: during a long wait the waiting backend advertises no xmin
# (pg_stat_activity.backend_xmin IS NULL), so it holds back neither vacuum
# nor the worker's pruning, and the wait still returns true once the worker
# gets there; inside the appending transaction wait() warns and returns
# false at once; on a server without the preloaded library an async
# projection is an error at once (55000), not a time-out.

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
$node->create_recording_projection($db, 'p', 'applied', 'apply_h');
ok($node->wait_for_worker($db), 'worker running');
my $pos = $node->safe_psql($db, "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up($db, 'p', $pos), 'caught up');

# ---------------------------------------------------------------------
# no xmin while sleeping
# ---------------------------------------------------------------------
my $target = $pos + 5;
my $waiter = $node->background_psql($db);
$waiter->query_until(qr/waiting/,
	"\\echo waiting\nSELECT projection.wait('p', $target, '5 min') AS reached;\n");
ok( $node->poll_query_until(
		$db,
		"SELECT count(*) = 1 FROM pg_stat_activity "
		  . "WHERE query LIKE 'SELECT projection.wait(%' AND state = 'active' "
		  . "AND wait_event = 'Extension' AND backend_xmin IS NULL"),
	'the sleeping wait() advertises no xmin');
# (the fresh snapshot of each re-check is short-lived: look again)
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT projection.wait(%' "
		  . "AND backend_xmin IS NOT NULL"),
	'0',
	'and still none a moment later');
$node->safe_psql($db,
	"SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 5)");
my $out = $waiter->query_safe('SELECT 1');
like($out, qr/^t\b/m, 'the wait returns true once the worker applied up_to');
$waiter->quit;

# ---------------------------------------------------------------------
# inside the appending transaction: false at once
# ---------------------------------------------------------------------
my ($ret, $stdout, $stderr) = $node->psql(
	$db, q{
BEGIN;
SELECT projection.append('s', 'E', '{}') AS mine \gset
SELECT projection.wait('p', :mine, '1 hour');
COMMIT;
});
is($ret, 0, 'wait() inside the appending transaction returns');
like($stdout, qr/^f$/m, 'with false');
like($stderr, qr/WARNING:  waiting for projection "p" inside a transaction that appended events/,
	'and the warning');

# ---------------------------------------------------------------------
# no worker can run it: an error at once
# ---------------------------------------------------------------------
$node->stop;
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->start;
($ret, $stdout, $stderr) =
  $node->psql($db, "SELECT projection.wait('p', 1000000, '1 hour')");
isnt($ret, 0, 'wait() on an async projection without the preloaded library fails');
like(
	$stderr,
	qr/ERROR:  no worker can run async projection "p": the projection library is not preloaded/,
	'at once, saying why');
like($stderr, qr/HINT:  Add "projection" to shared_preload_libraries/, 'and what to do');
($ret, $stdout, $stderr) =
  $node->psql($db, "SELECT projection.wait('p', 1, '1 hour')");
like($stdout, qr/^t$/, 'a position it has reached is still true');

$node->stop;
done_testing();
