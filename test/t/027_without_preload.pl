# test/t/027_without_preload.pl -- dependencies hold in backends that have
# not loaded the library (no shared_preload_libraries).
#
# Covers: in fresh sessions of a server without the library preloaded (so
# without our hooks until something loads it): DROP FUNCTION of a handler
# in use and DROP TABLE of a read-model table are refused with 2BP01, and
# CASCADE drops the projection; DROP OWNED BY drops the role's projections;
# DROP ROLE of an owner is refused (PostgreSQL's own error, since DROP ROLE
# fires no event trigger); DROP EXTENSION leaves no owner entry behind, so
# the role can then be dropped.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->start;
my $db = 'postgres';
$node->create_ext($db);

sub setup
{
	my ($name) = @_;
	$node->safe_psql(
		$db, qq{
SET client_min_messages = error;
CREATE TABLE nop.${name}_log (pos bigint PRIMARY KEY);
CREATE FUNCTION nop.${name}_h(e projection.events) RETURNS void LANGUAGE sql AS
  \$\$ INSERT INTO nop.${name}_log VALUES (e.global_position) \$\$;
SELECT projection.create('$name', 'nop.${name}_h', mode => 'inline', tables => '{nop.${name}_log}');
}, connstr => $node->connstr($db) . ' user=regress_nop');
	return;
}

$node->safe_psql(
	$db, q{
CREATE ROLE regress_nop LOGIN;
CREATE SCHEMA nop AUTHORIZATION regress_nop;
GRANT SELECT, TRIGGER, INSERT ON projection.events TO regress_nop;
});
setup('p1');

# every psql is a new backend: none has loaded the library
my ($ret, $stdout, $stderr) = $node->psql($db, 'DROP FUNCTION nop.p1_h(projection.events)');
like($stderr, qr/ERROR:  cannot drop function nop.p1_h\(projection.events\) because other objects depend on it/,
	'DROP FUNCTION of a handler in use is refused');
like($stderr, qr/projection p1 depends on function/, 'naming the projection');
($ret, $stdout, $stderr) = $node->psql($db, 'DROP TABLE nop.p1_log', on_error_stop => 1,
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  2BP01: cannot drop table nop.p1_log because other objects depend on it/,
	'DROP TABLE of a read-model table is refused with 2BP01');
($ret, $stdout, $stderr) = $node->psql($db, 'DROP TABLE nop.p1_log CASCADE');
like($stderr, qr/NOTICE:  drop cascades to projection p1/, 'CASCADE drops the projection');
is($node->safe_psql($db, 'SELECT count(*) FROM projection.status'), '0', 'it is gone');

setup('p2');
($ret, $stdout, $stderr) = $node->psql($db, 'DROP ROLE regress_nop');
isnt($ret, 0, 'DROP ROLE of an owner is refused');
is($node->safe_psql($db, "SELECT count(*) FROM pg_roles WHERE rolname = 'regress_nop'"), '1',
	'the role is still there');
$node->safe_psql($db, 'DROP OWNED BY regress_nop');
is($node->safe_psql($db, 'SELECT count(*) FROM projection.status'), '0',
	'DROP OWNED BY drops the projections of the role');

# DROP EXTENSION takes the owner entries with the registry
$node->safe_psql(
	$db, q{
CREATE SCHEMA nop AUTHORIZATION regress_nop;
GRANT SELECT, TRIGGER, INSERT ON projection.events TO regress_nop;
});
setup('p3');
$node->safe_psql($db, 'DROP EXTENSION projection CASCADE');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM pg_shdepend WHERE refobjid = 'regress_nop'::regrole "
		  . "AND classid NOT IN ('pg_class'::regclass, 'pg_proc'::regclass, "
		  . "'pg_namespace'::regclass, 'pg_type'::regclass)"),
	'0', 'DROP EXTENSION leaves no owner entry behind');
$node->safe_psql($db, 'DROP OWNED BY regress_nop; DROP ROLE regress_nop');
pass('then the role can be dropped');

$node->stop;
done_testing();
