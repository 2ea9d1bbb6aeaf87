
# test/t/102_snapshot_rebuild_direct.pl -- a rebuild of an async snapshot
# projection folds its batches directly (1.6: no batch statement run, no
# state loaded for a stream the rebuild has not written yet, new states
# inserted without ON CONFLICT), which holds only while nobody else writes
# the states.  Here it runs while a writer appends to the same streams and
# the worker applies the appends (before and after the rebuild), and once
# more with the server killed (kill -9) in the middle of it.  Each time,
# every stream's stored state equals the fold of all its events, computed
# apart (an SQL aggregate over the same fold), and the projection is
# running without an error.

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
# at the position of block_at, a rebuild's fold (not the worker's) waits on
# advisory lock 4242
$node->create_count_fold($db, 'client backend');
# 3,000 events over 50 streams, and appender(n) to append more
$node->create_counted_streams($db, 3000);
$node->safe_psql($db, "SELECT projection.create_snapshot('counts', 'count_fold')");
ok($node->wait_caught_up($db, 'counts'), 'the projection caught up');

# ---------------------------------------------------------------------
# 1. rebuilds while a writer appends and the worker applies its events
# ---------------------------------------------------------------------
my $writer = $node->background_psql($db);
$writer->query_until(qr/started/, "\\echo started\nCALL appender(1500);\n");
for my $i (1 .. 3)
{
	is( $node->safe_psql(
			$db,
			"SET client_min_messages = warning; SET projection.replay_batch_size = 1000; "
			  . "SELECT projection.rebuild('counts') > 0"),
		't', "rebuild $i while the writer appends");
}
$writer->quit;
$node->check_fold_states($db, 'counts', 'rebuilds beside a writer');

# ---------------------------------------------------------------------
# 2. kill -9 in the middle of a rebuild
# ---------------------------------------------------------------------
my $max = $node->max_position($db);
$node->safe_psql($db, "INSERT INTO block_at VALUES ($max - 100)");
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $rebuild = $node->background_psql($db, on_error_stop => 0);
$rebuild->query_until(qr/started/,
	"\\echo started\nSET projection.replay_batch_size = 1000;\nSELECT projection.rebuild('counts');\n");
my $q = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($q) r"),
	'the rebuild waits in its fold, past its first batches');
my $pid = $node->safe_psql('postgres', $q);
my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the rebuilding backend (pid $pid)");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $rebuild->quit; };
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
$node->safe_psql($db, 'TRUNCATE block_at');
$node->safe_psql($db, 'CALL appender(100)');
$node->check_fold_states($db, 'counts', 'after kill -9 in a rebuild');
is( $node->safe_psql(
		$db,
		"SET client_min_messages = warning; SELECT projection.rebuild('counts') > 0"),
	't', 'a rebuild after the crash');
$node->check_fold_states($db, 'counts', 'the rebuild after the crash');

done_testing();
