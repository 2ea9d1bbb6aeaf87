
# test/t/132_restore_session_pool.pl -- a worker that leaves restored
# projections alone while their restoring session lives does not hold its
# pool slot for them.
#
# A psql session that ran a plain-format restore (pg_dump | psql) and stays
# open keeps its mark on the restored registry rows, and the worker leaves
# those projections alone until the session ends.  Such a worker used to
# count as busy for as long as the session lived: never idle, so never asked
# to leave for another database, and with a small pool other databases got
# no worker at all.  Now it is idle (and leaves when idle long enough, or
# when another database wants the slot), and the end of the restoring
# session asks for a worker again: the restored projection catches up once
# the session has ended, whether its worker had left or stayed.
#
# The pool has one slot, and projection.naptime is an hour: only a wake-up
# gets anything applied, so the end of the session must wake a worker.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = start_node(
	'restore_session_pool',
	db => 'src',
	naptime_hour => 1,
	conf => q{
projection.max_workers = 1
projection.workers_per_database = 1
});

# the source: an async projection, three events applied
$node->safe_psql(
	'src', q{
CREATE TABLE seen (pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
SELECT projection.create('p', 'h', mode => 'async');
SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 3);
});
ok($node->wait_caught_up('src', 'p'), 'src: the projection has caught up');
my $dir = PostgreSQL::Test::Utils::tempdir();
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/src.sql", '-d', 'src' ],
	'pg_dump -Fp of src');

# another database that will need the pool's one slot
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->create_ext('other');
$node->safe_psql(
	'other', q{
CREATE TABLE seen (pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
SELECT projection.create('q', 'h', mode => 'async');
});

# A restore into $db by a psql session that stays open; returns the session
# once the restored registry row is marked with it and a worker of $db runs.
sub restore_and_stay
{
	my ($db) = @_;

	$node->safe_psql('postgres', "CREATE DATABASE $db");
	my $session = $node->background_psql($db);
	$session->query_safe("\\i $dir/src.sql");
	$session->query_safe("SET application_name = 'restoring'");
	ok( $node->poll_query_until(
			$db,
			"SELECT count(*) = 1 FROM projection.projections p JOIN pg_stat_activity a "
			  . "ON a.pid = p.restored_pid AND a.application_name = 'restoring' "
			  . "WHERE p.name = 'p'"),
		"$db: the restored registry row is marked with its live restoring session");
	# its commit asked for a worker, which waits behind the session
	ok($node->poll_query_until('postgres', 'SELECT ' . worker_of($db)),
		"$db: a worker runs for the restored projection");
	return $session;
}

sub worker_of
{
	my ($db) = @_;

	return "EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'projection worker' "
	  . "AND datname = " . sql_literal($db) . ")";
}

# --- the worker gives its slot up to another database ----------------------
my $restoring = restore_and_stay('dst');
# events appended in dst meanwhile are not applied while the session lives
$node->safe_psql('dst', q{SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 2)});

$node->safe_psql('other', q{SELECT projection.append('t', 'E', '{}') FROM generate_series(1, 4)});
# (polled without projection.wait: each look is quick, so that a failure
# shows within the default timeout)
ok( $node->poll_query_until(
		'other', "SELECT count(*) = 4 FROM seen"),
	'other: its projection gets the pool\'s slot and catches up while dst\'s restoring session lives');
ok($node->wait_caught_up('other', 'q'), 'other: its checkpoint is at the last event');
like(
	slurp_file($node->logfile),
	qr/projection worker 0 for database "dst" stopping: its pool slot is wanted by another database/,
	'dst\'s worker left for the other database');
is($node->safe_psql('dst', 'SELECT count(*) FROM seen'),
	'3', 'dst: nothing applied while the restoring session lives');

# the restore is over: its end asks for a worker (other's idle one leaves)
$restoring->quit;
ok($node->poll_query_until('dst', "SELECT count(*) = 5 FROM seen"),
	'dst: the restored projection catches up once the restoring session has ended');
ok($node->wait_caught_up('dst', 'p', 5), 'dst: its checkpoint is at the last event');
is($node->safe_psql('dst', 'SELECT count(*), min(pos), max(pos) FROM seen'),
	'5|1|5', 'dst: every event applied once');
is($node->safe_psql('dst', "SELECT restored_pid IS NULL FROM projection.projections WHERE name = 'p'"),
	't', 'dst: the worker forgot the ended restoring session');

# --- the worker stays on its slot, idle: the session's end wakes it --------
$restoring = restore_and_stay('dst2');
$node->safe_psql('dst2', q{SELECT projection.append('s', 'E', '{}')});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'projection worker' "
		  . "AND datname = 'dst2' AND state = 'idle' "
		  . "AND query LIKE '%1 restored projection waits for its restoring session to end%'"),
	'dst2: its worker is idle, and says that the restored projection waits for its session');
is($node->safe_psql('dst2', 'SELECT count(*) FROM seen'),
	'3', 'dst2: nothing applied while the restoring session lives');
$restoring->quit;
ok($node->poll_query_until('dst2', "SELECT count(*) = 4 FROM seen"),
	'dst2: the restored projection catches up once the restoring session has ended');
ok($node->wait_caught_up('dst2', 'p', 4), 'dst2: its checkpoint is at the last event');
is($node->safe_psql('dst2', 'SELECT count(*), min(pos), max(pos) FROM seen'),
	'4|1|4', 'dst2: every event applied once');
is_deeply($node->status('dst2', 'p', [qw(state last_error)]),
	{ state => 'running', last_error => '' },
	'dst2: the projection runs, without error');

$node->stop;
done_testing();
