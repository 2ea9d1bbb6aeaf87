
# test/t/001_worker_lifecycle.pl -- when the per-database worker runs, and
# that it never stands in the way of database commands or shutdown.
#
# Workers start on demand (pool.c): a database gets one when it has an async
# projection with work, so each check below creates the projection first.
#
# Covers: start right after the first async projection (no restart), after a restart,
# after crash-restarts (immediate stop; kill -9 of a backend); no worker left
# in a database without the extension; two databases at once; DROP EXTENSION
# and CREATE EXTENSION again; DROP DATABASE (plain and WITH (FORCE)),
# ALTER DATABASE ... RENAME and SET TABLESPACE, CREATE DATABASE ... TEMPLATE
# while the worker runs; pg_terminate_backend of the worker; fast shutdown; a
# standby runs no worker until it is promoted; databases without the
# extension do not use up the worker slots; create() warns when no worker can
# start (max_worker_processes too low).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
# PGXS's Makefile.global resets PROVE_FLAGS, so find our module ourselves
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

# An async projection "lifecycle" in $db whose read model records every
# event it applies.  Idempotent: after DROP EXTENSION ... CASCADE (which
# drops the handler) and CREATE EXTENSION, positions start again at 1, so the
# read model is emptied.
sub setup_projection
{
	my ($node, $db) = @_;

	$node->safe_psql(
		$db, q{
CREATE TABLE IF NOT EXISTS lifecycle_model (
	pos bigint PRIMARY KEY,
	stream_id text NOT NULL,
	db text NOT NULL
);
TRUNCATE lifecycle_model;
CREATE OR REPLACE FUNCTION lifecycle_h(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.lifecycle_model (pos, stream_id, db)
	VALUES (e.global_position, e.stream_id, pg_catalog.current_database())
$$;
SELECT projection.create('lifecycle', 'lifecycle_h');
});
	return;
}

# Appends one event in $db and waits until the async projection has applied
# it: the worker really runs there.
sub check_applies
{
	my ($node, $db, $what) = @_;
	my $pos = $node->safe_psql($db,
		"SELECT projection.append('s-$db', 'Tick', '{}')");

	ok( $node->poll_query_until(
			$db,
			"SELECT count(*) = 1 FROM lifecycle_model "
			  . "WHERE pos = $pos AND db = current_database()"),
		"$what: the worker of $db applies a new event");
	return $pos;
}

my $node = new_node('main');
$node->start;

# At start-up the launcher probes every database once; 'postgres' has no
# extension, so its probe leaves, silently.
$node->wait_for_log(qr/projection: looking for pending async work in \d+ databases after the server start/);
ok($node->wait_for_no_worker('postgres'),
	'no worker lingers in a database without the extension');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'projection launcher'"
	),
	'1',
	'one launcher runs');

# ---------------------------------------------------------------------
# CREATE EXTENSION starts the worker without a restart
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db1');
$node->create_ext('db1');
setup_projection($node, 'db1');
# with nothing to apply yet, the new projection needs no worker; its first
# event gets one started
check_applies($node, 'db1', 'after CREATE EXTENSION');
ok($node->wait_for_worker('db1'),
	'a worker runs in db1 right after its first async event, without a restart');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND datname = 'db1' "
		  . "AND application_name = 'projection worker'"),
	'1',
	'pg_stat_activity shows one projection worker connected to db1 (one group has a projection)');

# CREATE EXTENSION in a rolled-back transaction starts nothing
$node->safe_psql('postgres', 'CREATE DATABASE db_rollback');
$node->safe_psql('db_rollback',
	'BEGIN; CREATE EXTENSION projection; ROLLBACK;');
# a committed CREATE EXTENSION elsewhere makes the launcher probe again
$node->safe_psql('postgres', 'CREATE DATABASE db_probe');
$node->create_ext('db_probe');
setup_projection($node, 'db_probe');
ok($node->wait_for_worker('db_probe'), 'worker in db_probe');
ok($node->wait_for_no_worker('db_rollback'),
	'no worker in a database whose CREATE EXTENSION rolled back');

# ---------------------------------------------------------------------
# two databases at once
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->create_ext('db2');
setup_projection($node, 'db2');
ok($node->wait_for_worker('db2'), 'a worker runs in db2 too');
check_applies($node, 'db2', 'two databases');
check_applies($node, 'db1', 'two databases');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(datname || ':' || n, ',' ORDER BY datname) FROM "
		  . "(SELECT datname, count(*) AS n FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND datname IN ('db1', 'db2') "
		  . "GROUP BY datname) w"),
	'db1:1,db2:1',
	'each database has its own worker, no more');

# ---------------------------------------------------------------------
# restart, immediate stop, kill -9 of a backend
# ---------------------------------------------------------------------
$node->restart;
check_applies($node, 'db1', 'after a restart');
check_applies($node, 'db2', 'after a restart');
ok($node->wait_for_worker('db1'), 'worker back in db1 after a restart');
ok($node->wait_for_worker('db2'), 'worker back in db2 after a restart');

$node->stop('immediate');
$node->start;
check_applies($node, 'db1', 'after an immediate stop');
ok($node->wait_for_worker('db1'),
	'worker back in db1 after a crash (immediate stop)');
check_applies($node, 'db2', 'after an immediate stop');

{
	my $offset = -s $node->logfile;
	my $bg = $node->background_psql('postgres');
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');

	ok(kill('KILL', $pid), "kill -9 of backend $pid");
	$node->wait_for_crash_restart($offset);
	eval { local $SIG{PIPE} = 'IGNORE'; $bg->quit; };    # its backend is gone
	check_applies($node, 'db1', 'after kill -9 of a backend');
	check_applies($node, 'db2', 'after kill -9 of a backend');
	ok($node->wait_for_worker('db1'),
		'worker back in db1 after the crash-restart');
	ok($node->wait_for_worker('db2'),
		'worker back in db2 after the crash-restart');
}

# pg_terminate_backend: the launcher starts the worker again
{
	my @pids = $node->worker_pids('db1');
	my $offset = -s $node->logfile;

	is( $node->safe_psql('postgres',
			"SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity "
			  . "WHERE backend_type = 'projection worker' AND datname = 'db1'"),
		't',
		'pg_terminate_backend of the workers of db1');
	$node->wait_for_log(qr/terminating background worker "projection worker" due to administrator command/,
		$offset);
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) >= 1 "
			  . "FROM pg_stat_activity WHERE backend_type = 'projection worker' AND datname = 'db1' "
			  . "AND pid NOT IN (" . join(',', @pids) . ")"),
		'the launcher starts a new worker for db1 (its work was cut short)');
	check_applies($node, 'db1', 'after pg_terminate_backend');
}

# ---------------------------------------------------------------------
# DROP EXTENSION, then CREATE EXTENSION again
# ---------------------------------------------------------------------
ok($node->wait_for_worker('db2'), 'worker in db2 before DROP EXTENSION');
my ($ret, $stdout, $stderr) =
  $node->psql('db2', 'DROP EXTENSION projection CASCADE');
is($ret, 0, 'DROP EXTENSION succeeds while the worker runs')
  or diag($stderr);
ok($node->wait_for_no_worker('db2'), 'the worker leaves after DROP EXTENSION');
check_applies($node, 'db1', 'the other database is unaffected by DROP EXTENSION');

$node->create_ext('db2');
setup_projection($node, 'db2');
ok($node->wait_for_worker('db2'), 'CREATE EXTENSION and a projection again bring the worker back');
is(check_applies($node, 'db2', 'after CREATE EXTENSION again'),
	'1', 'the new event store starts at position 1');

# a DROP EXTENSION that rolls back leaves a working worker behind
$node->safe_psql('db2', 'BEGIN; DROP EXTENSION projection CASCADE; ROLLBACK;');
ok($node->wait_for_worker('db2'), 'worker in db2 after a rolled-back DROP EXTENSION');
check_applies($node, 'db2', 'after a rolled-back DROP EXTENSION');

# ---------------------------------------------------------------------
# database commands while the worker runs
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->create_ext('db3');
setup_projection($node, 'db3');
check_applies($node, 'db3', 'before DROP DATABASE');
ok($node->wait_for_worker('db3'), 'worker in db3 before DROP DATABASE');
($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db3');
is($ret, 0, 'plain DROP DATABASE succeeds while the worker runs')
  or diag($stderr);
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname = 'db3'"),
	'0', 'db3 is gone');
check_applies($node, 'db1', 'the launcher keeps serving db1 after DROP DATABASE');
$node->safe_psql('postgres', 'CREATE DATABASE db4');
$node->create_ext('db4');
setup_projection($node, 'db4');
ok($node->wait_for_worker('db4'),
	'the launcher starts workers for new databases after DROP DATABASE');
check_applies($node, 'db4', 'new database after DROP DATABASE');

ok($node->wait_for_worker('db4'), 'worker in db4 before DROP DATABASE WITH (FORCE)');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE db4 WITH (FORCE)');
is($ret, 0, 'DROP DATABASE WITH (FORCE) succeeds while the worker runs')
  or diag($stderr);

# DROP DATABASE right after CREATE EXTENSION, while the workers have just
# started (two databases at a time, so the launcher is busy): repeated,
# since the start and the stop race each other
{
	my $failed = 0;

	for my $i (1 .. 15)
	{
		my @dbs = ("churn_a$i", "churn_b$i");

		$node->safe_psql('postgres', "CREATE DATABASE $_") for @dbs;
		$node->create_ext($_) for @dbs;
		setup_projection($node, $_) for @dbs;
		for my $db (@dbs)
		{
			$node->wait_for_worker($db)
			  or diag("$db: its workers did not all start");
		}
		for my $db (@dbs)
		{
			my ($r, $o, $e) = $node->psql('postgres', "DROP DATABASE $db");
			next if $r == 0;
			$failed++;
			diag("DROP DATABASE $db: $e");
			$node->safe_psql('postgres', "DROP DATABASE $db WITH (FORCE)");
		}
	}
	is($failed, 0,
		'DROP DATABASE right after the workers start succeeds, 30 times out of 30');
}

# a failing DROP DATABASE (another session is connected) leaves the worker
# running afterwards
{
	my $bg = $node->background_psql('db2');
	ok($node->wait_for_worker('db2'), 'worker in db2 before a failing DROP DATABASE');
	($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db2');
	isnt($ret, 0, 'DROP DATABASE fails while a user session is connected');
	like($stderr, qr/is being accessed by other users/, 'for that reason');
	$bg->quit;
	check_applies($node, 'db2', 'after a failed DROP DATABASE');
	ok($node->wait_for_worker('db2'), 'the worker comes back after the failed DROP DATABASE');
}

ok($node->wait_for_worker('db1'), 'worker in db1 before RENAME');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'ALTER DATABASE db1 RENAME TO db1_renamed');
is($ret, 0, 'ALTER DATABASE ... RENAME succeeds while the worker runs')
  or diag($stderr);
check_applies($node, 'db1_renamed', 'after RENAME');
ok($node->wait_for_worker('db1_renamed'),
	'the worker comes back in the renamed database');

ok($node->wait_for_worker('db1_renamed'), 'worker in db1_renamed before TEMPLATE');
($ret, $stdout, $stderr) = $node->psql('postgres',
	'CREATE DATABASE db5 TEMPLATE db1_renamed');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database with a worker succeeds')
  or diag($stderr);
check_applies($node, 'db1_renamed', 'after being used as a template');
ok($node->wait_for_worker('db1_renamed'),
	'the template database gets its worker back');
check_applies($node, 'db5', 'copy of a template');
ok($node->wait_for_worker('db5'),
	'the copy, which has the extension, gets a worker too');

{
	my $tsdir = PostgreSQL::Test::Utils::tempdir_short();

	$node->safe_psql('postgres', "CREATE TABLESPACE pj_ts LOCATION '$tsdir'");
	ok($node->wait_for_worker('db5'), 'worker in db5 before SET TABLESPACE');
	($ret, $stdout, $stderr) =
	  $node->psql('postgres', 'ALTER DATABASE db5 SET TABLESPACE pj_ts');
	is($ret, 0, 'ALTER DATABASE ... SET TABLESPACE succeeds while the worker runs')
	  or diag($stderr);
	check_applies($node, 'db5', 'after SET TABLESPACE');
	ok($node->wait_for_worker('db5'), 'the worker comes back after SET TABLESPACE');
}

is($node->worker_count('postgres'), '0',
	'still no worker in the database without the extension');
is($node->worker_count('db_rollback'), '0',
	'still no worker where CREATE EXTENSION rolled back');

# ---------------------------------------------------------------------
# fast shutdown is not held up
# ---------------------------------------------------------------------
check_applies($node, 'db1_renamed', 'before the shutdown');
ok($node->wait_for_worker('db1_renamed'), 'workers run before the shutdown');
ok($node->stop('fast', fail_ok => 1), 'fast shutdown completes');

# ---------------------------------------------------------------------
# a standby runs no worker until it is promoted
# ---------------------------------------------------------------------
my $primary = new_node('primary', allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
$primary->create_ext('app');
setup_projection($primary, 'app');
check_applies($primary, 'app', 'primary');
$primary->backup('b1');

my $standby = ProjectionNode->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;

my $before = check_applies($primary, 'app', 'primary with a standby');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('app', "SELECT count(*) FROM lifecycle_model WHERE pos = $before"),
	'1', 'the standby replays what the primary applied');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity "
		  . "WHERE backend_type IN ('projection worker', 'projection launcher')"),
	'0',
	'no projection launcher or worker runs on the standby');

# an event the primary has not applied: pause the projection, append, and
# let the standby replay both
$primary->safe_psql('app', "SELECT projection.pause('lifecycle')");
my $pending = $primary->safe_psql('app',
	"SELECT projection.append('s-app', 'Tick', '{}')");
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'app',
		"SELECT count(*) FROM projection.events e WHERE e.global_position = $pending "
		  . "AND NOT EXISTS (SELECT FROM lifecycle_model m WHERE m.pos = e.global_position)"
	),
	'1',
	'the standby has the pending event, unapplied');
is( $standby->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity "
		  . "WHERE backend_type IN ('projection worker', 'projection launcher')"),
	'0',
	'still no projection process on the standby');
$primary->stop('fast');

$standby->promote;
$standby->wait_for_log(qr/projection launcher started/);
$standby->safe_psql('app', "SELECT projection.resume('lifecycle')");
ok($standby->wait_for_worker('app'), 'the promoted standby runs a worker once there is work');
ok($standby->wait_caught_up('app', 'lifecycle'),
	'after resume() it applies what the primary had not');
is($standby->safe_psql('app', "SELECT count(*) FROM lifecycle_model WHERE pos = $pending"),
	'1', 'including the event appended while the projection was paused');
check_applies($standby, 'app', 'after promotion');
is( $standby->safe_psql(
		'app',
		"SELECT count(*) = (SELECT count(*) FROM projection.events) FROM lifecycle_model"
	),
	't',
	'every event applied once on the promoted standby');

$standby->stop('fast');

# ---------------------------------------------------------------------
# databases without the extension do not use up the worker slots
# ---------------------------------------------------------------------
my $many = new_node('many');
$many->start;
my $nslots = $many->safe_psql('postgres',
	"SELECT coalesce(current_setting('projection.max_workers', true), '8')");
$many->safe_psql('postgres', "CREATE DATABASE spare_$_") for 1 .. $nslots;
$many->safe_psql('postgres', 'CREATE DATABASE late');
$many->create_ext('late');
setup_projection($many, 'late');
ok($many->wait_for_worker('late'),
	"a worker runs in a database created after $nslots databases without the extension");
check_applies($many, 'late', 'after many databases without the extension');
$many->stop('fast');

# ---------------------------------------------------------------------
# no worker can run: create() says so
# ---------------------------------------------------------------------
# max_worker_processes = 2 is taken by the projection launcher and the
# logical replication launcher: no projection worker can ever start
my $starved = new_node('starved');
$starved->append_conf('postgresql.conf', 'max_worker_processes = 2');
$starved->start;
$starved->create_ext('postgres');
$starved->wait_for_log(qr/max_worker_processes \(2\) is too small for projection.max_workers/);
my $create_err;
$starved->psql(
	'postgres', q{
CREATE TABLE lifecycle_model (pos bigint PRIMARY KEY, stream_id text, db text);
CREATE FUNCTION lifecycle_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.lifecycle_model VALUES (e.global_position, e.stream_id, '') $$;
SELECT projection.create('lifecycle', 'lifecycle_h');
},
	stderr => \$create_err,
	on_error_die => 1);
like($create_err, qr/WARNING:.*\n.*HINT:.*max_worker_processes/,
	'creating an async projection where no worker can start warns, with a hint');
$starved->stop('fast');

done_testing();
