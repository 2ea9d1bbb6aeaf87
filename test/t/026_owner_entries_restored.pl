# test/t/026_owner_entries_restored.pl -- owner entries of projections that
# were loaded without the registry's trigger come back.
#
# Covers: pg_restore --data-only --disable-triggers loads the registry without its row
# trigger, so without pg_shdepend entries; the worker records them once it
# sees the restored registry (DROP ROLE from another database is then
# refused, counting the restored database); projection.repair_dependencies()
# does the same on demand (superuser only), and reports how many it
# recorded.

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
CREATE ROLE regress_rst LOGIN;
CREATE DATABASE src;
CREATE DATABASE dst;
});
$node->create_ext('src');
$node->create_owned_projection('src', 'rst', 'regress_rst');
ok($node->wait_caught_up('src', 'rst_async'), 'the projection runs in src');

my $entries =
    "SELECT count(*) FROM pg_shdepend WHERE classid = 'projection.projections'::regclass "
  . "AND refobjid = 'regress_rst'::regrole AND deptype = 'o' "
  . "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";

my $dir = PostgreSQL::Test::Utils::tempdir();
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/src.dump", '-d', 'src' ], 'pg_dump -Fc');
# --disable-triggers only acts on a data-only restore
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '--schema-only', '-d', 'dst', "$dir/src.dump" ],
	'pg_restore --schema-only');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '--data-only', '--disable-triggers',
		'-d', 'dst', "$dir/src.dump"
	],
	'pg_restore --data-only --disable-triggers');
ok($node->poll_query_until('dst', $entries, '1'),
	'the worker records the owner entry of the restored projection');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP ROLE regress_rst');
like($stderr, qr/objects? in database dst/, 'DROP ROLE from another database counts it');
like(slurp_file($node->logfile),
	qr/recorded the owner of projection "rst_async" in pg_shdepend/, 'the worker logs the repair');

# on demand
$node->safe_psql('dst',
	"DELETE FROM pg_shdepend WHERE classid = 'projection.projections'::regclass");
is($node->safe_psql('dst', 'SELECT projection.repair_dependencies()'), '1',
	'repair_dependencies() records the missing entry');
is($node->safe_psql('dst', $entries), '1', 'one entry');
is($node->safe_psql('dst', 'SELECT projection.repair_dependencies()'), '0',
	'and then has nothing to do');
($ret, $stdout, $stderr) = $node->psql('dst',
	'SET ROLE regress_rst; SELECT projection.repair_dependencies()');
like($stderr, qr/permission denied for function repair_dependencies/,
	'it is for superusers only');

$node->stop;
done_testing();
