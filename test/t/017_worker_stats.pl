
# test/t/017_worker_stats.pl -- the worker reports its table statistics.
#
# Covers: while the worker lives (not only when it exits), the cumulative
# statistics show the rows it wrote into projection.checkpoints and into a
# read model only it writes, so that autovacuum and autoanalyze see them.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main', conf => 'projection.workers_per_database = 1');
$node->create_recording_projection($db, 'p', 'worker_only', 'h');

# one transaction per append: the worker applies them in several rounds
for my $i (1 .. 50)
{
	$node->safe_psql($db, "SELECT projection.append('s-$i', 'E', '{}')");
}
ok($node->wait_caught_up($db, 'p'), 'the worker applied 50 events');
# started by the first event (nothing to apply before it), it stays for the idle timeout
my ($pid) = $node->worker_pids($db);

sub inserted
{
	my ($schema, $table) = @_;
	return "(SELECT n_tup_ins FROM pg_stat_user_tables "
	  . "WHERE schemaname = '$schema' AND relname = '$table')";
}
# pg_stat_clear_snapshot: a fresh read on every poll, whatever stats_fetch_consistency says
ok( $node->poll_query_until(
		$db,
		"SELECT "
		  . inserted('public', 'worker_only')
		  . " = 50 AND "
		  . inserted('projection', 'checkpoints')
		  . " > 0 FROM pg_stat_clear_snapshot()"),
	'the statistics show the rows of the read model and of the checkpoints');
is($node->safe_psql($db, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"),
	'1', 'while the worker that wrote them still runs');

$node->stop;
done_testing();
