# test/t/021_database_commands_privileges.pl -- database commands stop a
# database's workers only when PostgreSQL would let the role run them (review
# D6).
#
# Covers the worker_spi t/002-style matrix of database commands (DROP
# DATABASE, ALTER DATABASE ... RENAME and SET TABLESPACE, CREATE DATABASE ...
# TEMPLATE) run by a role that does not own the database: each fails with
# PostgreSQL's own error and the database's workers keep their pids; DROP
# DATABASE in a transaction block (as a superuser) stops nothing either.  Run
# by the owner (a plain role with CREATEDB), the same commands succeed while
# the workers run, as before.

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
CREATE ROLE regress_tenant LOGIN CREATEDB;
CREATE ROLE regress_intruder LOGIN CREATEDB;
CREATE DATABASE tenant OWNER regress_tenant;
});
$node->create_ext('tenant');
$node->safe_psql(
	'tenant', q{
CREATE TABLE applied (pos bigint PRIMARY KEY);
CREATE FUNCTION apply_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.applied VALUES (e.global_position) $$;
SELECT projection.create('counted', 'apply_h', tables => '{applied}');
});

my $intruder = $node->connstr('postgres') . ' user=regress_intruder';
my $owner = $node->connstr('postgres') . ' user=regress_tenant';

# a worker runs once the projection has an event to apply (and stays)
$node->safe_psql('tenant', "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up('tenant', 'counted'), 'the first event is applied');
my @pids = $node->worker_pids('tenant');

# A command the intruder may not run: PostgreSQL's error, the same workers.
sub refused
{
	my ($sql, $error, $what, %opts) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', $sql, connstr => $opts{connstr} // $intruder);

	isnt($ret, 0, "$what fails");
	like($stderr, $error, "$what: with PostgreSQL's own error");
	is(join(',', $node->worker_pids('tenant')), join(',', @pids),
		"$what: the workers of the database keep running (same pids)");
	return;
}

refused('DROP DATABASE tenant', qr/must be owner of database tenant/,
	'DROP DATABASE by a non-owner');
refused('DROP DATABASE tenant WITH (FORCE)', qr/must be owner of database tenant/,
	'DROP DATABASE WITH (FORCE) by a non-owner');
refused('ALTER DATABASE tenant RENAME TO stolen', qr/must be owner of database tenant/,
	'ALTER DATABASE RENAME by a non-owner');
refused('ALTER DATABASE tenant SET TABLESPACE pg_default',
	qr/must be owner of database tenant/,
	'ALTER DATABASE SET TABLESPACE by a non-owner');
refused('CREATE DATABASE copied TEMPLATE tenant', qr/permission denied to copy database "tenant"/,
	'CREATE DATABASE TEMPLATE by a non-owner');
refused('ALTER DATABASE tenant SET TABLESPACE pg_default',
	qr/permission denied for tablespace pg_default/,
	'ALTER DATABASE SET TABLESPACE by the owner without CREATE on the tablespace',
	connstr => $owner);
refused("BEGIN;\nDROP DATABASE tenant;", qr/cannot run inside a transaction block/,
	'DROP DATABASE in a transaction block, even by a superuser',
	connstr => $node->connstr('postgres'));
refused("BEGIN;\nALTER DATABASE tenant SET TABLESPACE pg_default;",
	qr/cannot run inside a transaction block/,
	'ALTER DATABASE SET TABLESPACE in a transaction block, even by a superuser',
	connstr => $node->connstr('postgres'));

# the projection still applies events, from the same workers
my $pos = $node->safe_psql('tenant', "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up('tenant', 'counted'), 'the projection keeps applying events');
is(join(',', $node->worker_pids('tenant')), join(',', @pids), 'with the same workers');

# the owner is not blocked: each command succeeds while the workers run
$node->safe_psql('postgres', 'ALTER DATABASE tenant RENAME TO tenant_renamed',
	connstr => $owner);
$node->safe_psql('postgres', 'ALTER DATABASE tenant_renamed RENAME TO tenant',
	connstr => $owner);
pass('the owner renames the database while its workers run');
ok($node->wait_for_worker('tenant'), 'and the workers come back');
$node->safe_psql('postgres', 'GRANT CREATE ON TABLESPACE pg_default TO regress_tenant');
$node->safe_psql('postgres', 'ALTER DATABASE tenant SET TABLESPACE pg_default',
	connstr => $owner);
pass('the owner runs ALTER DATABASE SET TABLESPACE');
$node->safe_psql('postgres', 'CREATE DATABASE tenant_copy TEMPLATE tenant',
	connstr => $owner);
pass('the owner copies the database with CREATE DATABASE TEMPLATE');
is($node->safe_psql('tenant_copy', 'SELECT count(*) FROM applied'),
	$node->safe_psql('tenant', 'SELECT count(*) FROM applied'), 'the copy holds the read model');
$node->safe_psql('postgres', 'DROP DATABASE tenant_copy', connstr => $owner);
$pos = $node->safe_psql('tenant', "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up('tenant', 'counted'), 'the projection goes on after those commands');
$node->safe_psql('postgres', 'DROP DATABASE tenant', connstr => $owner);
pass('the owner drops the database while its workers run');
ok($node->wait_for_no_worker('tenant'), 'and no worker is left for it');

$node->stop;
done_testing();
