# test/t/023_dependencies_restore.pl -- the dependencies of projections
# survive pg_dump / pg_restore, and hold across databases.
#
# Covers: a projection owned by a plain role, dumped and restored with
# pg_restore into another database: the restored registry rows get their
# pg_shdepend owner entries (DROP ROLE refused, naming the projection),
# their handler and table are protected, and the restored projection runs;
# DROP ROLE from a third database is refused while either database holds a
# projection of the role; DROP OWNED in one database drops that database's
# projections only; DROP EXTENSION leaves no entry behind, and then the role
# can be dropped.

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

$node->safe_psql(
	'postgres', q{
CREATE ROLE regress_dep LOGIN;
CREATE DATABASE src;
CREATE DATABASE dst;
CREATE DATABASE third;
});
$node->create_ext('src');
$node->create_owned_projection('src', 'dep', 'regress_dep');
ok($node->wait_caught_up('src', 'dep_async'), 'the projection runs in src');

my $dir = PostgreSQL::Test::Utils::tempdir();
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/src.dump", '-d', 'src' ], 'pg_dump -Fc');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', 'dst', "$dir/src.dump" ],
	'pg_restore');

is( $node->safe_psql(
		'dst',
		"SELECT count(*) FROM pg_shdepend WHERE classid = 'projection.projections'::regclass "
		  . "AND refobjid = 'regress_dep'::regrole AND deptype = 'o' "
		  . "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"),
	'1', 'the restored projection has its owner entry');
my ($ret, $stdout, $stderr) = $node->psql('dst', 'DROP ROLE regress_dep');
like($stderr, qr/owner of projection dep_async/, 'DROP ROLE in the restored database names it');
($ret, $stdout, $stderr) = $node->psql('dst', 'DROP TABLE dep.log');
like($stderr, qr/projection dep_async depends on table dep.log/,
	'its table is protected in the restored database');
($ret, $stdout, $stderr) = $node->psql('dst', 'DROP FUNCTION dep.h(projection.events)');
like($stderr, qr/projection dep_async depends on function dep.h/, 'and its handler');

$node->safe_psql('dst', "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up('dst', 'dep_async'), 'the restored projection runs');
is($node->safe_psql('dst', 'SELECT count(*) FROM dep.log'), '2', 'every event once');

# roles are cluster-wide: the other databases count the entries
($ret, $stdout, $stderr) = $node->psql('third', 'DROP ROLE regress_dep');
like($stderr, qr/cannot be dropped because some objects depend on it/,
	'DROP ROLE from a third database is refused');
like($stderr, qr/objects? in database src/, 'counting the objects in src');
like($stderr, qr/objects? in database dst/, 'and in dst');

# DROP OWNED acts on the current database only
$node->safe_psql('dst', 'DROP OWNED BY regress_dep');
is($node->safe_psql('dst', 'SELECT count(*) FROM projection.status'), '0',
	'DROP OWNED in dst drops its projection');
is($node->safe_psql('src', 'SELECT count(*) FROM projection.status'), '1',
	'and leaves the one in src');

# DROP EXTENSION leaves no entry behind
$node->safe_psql('src', 'DROP EXTENSION projection CASCADE');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_shdepend WHERE refobjid = 'regress_dep'::regrole "
		  . "AND classid NOT IN ('pg_class'::regclass, 'pg_proc'::regclass, "
		  . "'pg_namespace'::regclass, 'pg_type'::regclass, 'pg_extension'::regclass)"),
	'0', 'DROP EXTENSION removes the owner entries of its projections');
$node->safe_psql('src', 'DROP OWNED BY regress_dep');
$node->safe_psql('third', 'DROP ROLE regress_dep');
pass('then the role can be dropped');

$node->stop;
done_testing();
