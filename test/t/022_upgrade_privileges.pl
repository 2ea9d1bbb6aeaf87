# test/t/022_upgrade_privileges.pl -- ALTER EXTENSION projection UPDATE to
# 1.2 brings the privilege checks and dependencies to projections created
# under 1.1.
#
# Covers: at 1.1, projections whose owner lacks SELECT or TRIGGER on
# projection.events (1.1 did not check; here the grants are revoked after
# create, since the new library checks at any version); the update
# to 1.2 warns, naming each projection and the GRANT to run; the inline one
# keeps running in the appender's transaction, the async one is stopped by
# the worker until the GRANT (1.6: no events for an owner that may not read
# them); the update records their owner, so DROP ROLE of it is now
# refused in this database and in another one, and DROP FUNCTION of a
# handler in use is refused; a new projection by the same role needs the
# grants.

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

my $db = 'postgres';
$node->safe_psql($db, "CREATE EXTENSION projection VERSION '1.1'");
$node->wait_for_worker($db);
$node->safe_psql(
	$db, q{
CREATE ROLE regress_old LOGIN;
CREATE SCHEMA old AUTHORIZATION regress_old;
GRANT INSERT, SELECT, TRIGGER ON projection.events TO regress_old;
});
my $as_old = $node->connstr($db) . ' user=regress_old';
$node->safe_psql(
	$db, q{
CREATE TABLE old.inline_log (pos bigint PRIMARY KEY);
CREATE TABLE old.async_log (pos bigint PRIMARY KEY);
CREATE FUNCTION old.inline_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO old.inline_log VALUES (e.global_position) $$;
CREATE FUNCTION old.async_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO old.async_log VALUES (e.global_position) $$;
SELECT projection.create('old_inline', 'old.inline_h', mode => 'inline', tables => '{old.inline_log}');
SELECT projection.create('old_async', 'old.async_h', tables => '{old.async_log}');
}, connstr => $as_old);
$node->safe_psql($db, 'REVOKE SELECT, TRIGGER ON projection.events FROM regress_old');
is($node->safe_psql($db, "SELECT string_agg(name, ',' ORDER BY name) FROM projection.status"),
	'old_async,old_inline', 'at 1.1, projections of a role without SELECT on the events');

my ($ret, $stdout, $stderr) =
  $node->psql($db, "ALTER EXTENSION projection UPDATE TO '1.2'");
is($ret, 0, 'the update to 1.2 succeeds');
like($stderr,
	qr/WARNING:  owner "regress_old" of projection "old_async" lacks SELECT on projection.events/,
	'it warns about the async projection');
like($stderr, qr/HINT:  Run GRANT SELECT ON projection.events TO regress_old;/,
	'with the GRANT to run');
like($stderr,
	qr/WARNING:  owner "regress_old" of projection "old_inline" lacks SELECT, TRIGGER on projection.events/,
	'it warns about the inline projection, which also lacks TRIGGER');
like($stderr, qr/HINT:  Run GRANT SELECT, TRIGGER ON projection.events TO regress_old;/,
	'with its GRANT');
is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'projection'"),
	'1.2', 'the extension is at 1.2');

# the inline one keeps running; the async one is stopped before the event
# its owner may not read (1.6), and goes on after the GRANT and resume()
my $pos = $node->safe_psql($db, "SELECT projection.append('s', 'E', '{}')", connstr => $as_old);
is($node->safe_psql($db, "SELECT count(*) FROM old.inline_log WHERE pos = $pos"),
	'1', 'the inline projection keeps running');
ok($node->wait_for_state($db, 'old_async', 'failed'),
	'the async projection is stopped: its owner may not read the events');
is($node->safe_psql($db, "SELECT count(*) FROM old.async_log WHERE pos = $pos"),
	'0', 'and did not apply the new event');
$node->safe_psql($db, 'GRANT SELECT ON projection.events TO regress_old');
$node->safe_psql($db, "SELECT projection.resume('old_async')", connstr => $as_old);
ok($node->wait_caught_up($db, 'old_async'), 'after the GRANT and resume() it runs again');
is($node->safe_psql($db, "SELECT count(*) FROM old.async_log WHERE pos = $pos"),
	'1', 'and applied the new event');
$node->safe_psql($db, 'REVOKE SELECT ON projection.events FROM regress_old');

# the update recorded the dependencies
($ret, $stdout, $stderr) = $node->psql($db, 'DROP ROLE regress_old');
like($stderr, qr/owner of projection old_async\nowner of projection old_inline/,
	'DROP ROLE of the owner is refused, naming its projections');
$node->safe_psql('postgres', 'CREATE DATABASE other');
($ret, $stdout, $stderr) = $node->psql('other', 'DROP ROLE regress_old');
like($stderr, qr/cannot be dropped because some objects depend on it/,
	'also from another database');
($ret, $stdout, $stderr) =
  $node->psql($db, 'DROP FUNCTION old.async_h(projection.events)');
like($stderr, qr/projection old_async depends on function old.async_h/,
	'DROP FUNCTION of a handler in use is refused');

# a new projection needs the grants
($ret, $stdout, $stderr) = $node->psql($db,
	"SELECT projection.create('new_async', 'old.async_h', start_from => 'end')",
	connstr => $as_old);
like($stderr, qr/permission denied for table events/, 'a new projection needs SELECT');
$node->safe_psql($db, 'GRANT SELECT, TRIGGER ON projection.events TO regress_old');
$node->safe_psql($db,
	"SELECT projection.create('new_inline', 'old.inline_h', mode => 'inline', start_from => 'end')",
	connstr => $as_old);
pass('with SELECT and TRIGGER it creates an inline projection');

$node->stop;
done_testing();
