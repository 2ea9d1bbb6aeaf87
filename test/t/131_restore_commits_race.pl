
# test/t/131_restore_commits_race.pl -- a restore whose registry rows and
# events commit in different sessions at the same time (pg_restore -j) still
# gets its projections a worker.
#
# Each commit that restores registry rows or events looks for async work
# before it commits (pool.c, projection_pool_at_pre_commit).  In a parallel
# restore the registry rows and the events are restored by different
# sessions: the registry's session may look before the events (and the
# sequence set from them) are in, and the events' session before the
# registry's commit is visible to it.  Neither then asked for a worker, and
# none ever came: the restored projection kept its restore mark and never
# caught up (seen once in 005, pg_restore -j 2).  Here the registry's commit
# is held invisible by a synchronous standby that never comes while the
# events are restored and committed, then released; the restoring session
# stays open a while, then ends, and the projection must catch up.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'dst';
my $node = start_node('restore_commits_race', db => $db, no_standby => 1);
$node->safe_psql(
	$db, q{
CREATE TABLE seen (pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
});

# the registry's session: its commit waits for the standby, invisible
my $registry = $node->background_psql($db);
$registry->query_safe(q{SET synchronous_commit = on; SET application_name = 'registry'});
$registry->query_until(qr/restoring/, q{\echo restoring
INSERT INTO projection.projections (name, handler, mode, tables, owner, search_path, position, state)
VALUES ('p', 'h(projection.events)', 'async', ARRAY['seen']::regclass[], current_user::regrole,
		'public', 0, 'running');
});
ok($node->poll_query_until($db, 'SELECT ' . $node->syncrep_waiting('registry')),
	'the registry row\'s commit waits for synchronous replication');

# the events' session: restores the events with their positions and commits
# while the registry row is not yet visible
$node->safe_psql(
	$db, q{
INSERT INTO projection.events (global_position, stream_id, stream_version, event_type, data)
SELECT g, 's', g, 'E', '{}' FROM generate_series(1, 5) g;
});
is($node->safe_psql($db, 'SELECT count(*) FROM projection.projections'),
	'0', 'the events committed while the registry row was not yet visible');

$node->syncrep_release($db, 'registry');
ok( $node->poll_query_until(
		$db,
		"SELECT count(*) = 1 FROM projection.projections p JOIN pg_stat_activity a "
		  . "ON a.pid = p.restored_pid AND a.application_name = 'registry' WHERE p.name = 'p'"),
	'the registry row is visible, marked with its live restoring session');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'),
	'0', 'nothing is applied while the restoring session lives');

# the restore is over
$registry->quit;
ok( $node->poll_query_until(
		$db, "SELECT position = 5 FROM projection.status WHERE name = 'p'"),
	'the projection catches up once the restoring session has ended');
is($node->safe_psql($db, "SELECT restored_pid IS NULL FROM projection.projections WHERE name = 'p'"),
	't', 'the worker forgot the ended restoring session');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'), '5', 'every event applied once');
is_deeply($node->status($db, 'p', [qw(state last_error)]),
	{ state => 'running', last_error => '' },
	'the projection runs, without error');

$node->stop;
done_testing();
