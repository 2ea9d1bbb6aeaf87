
# test/t/004_security.pl -- the worker runs each handler as the role that
# created the projection, never as a superuser on its behalf, whoever
# appended the event.
#
# Covers: a handler records current_user / session_user (the owner, for
# events appended by a superuser and by another role); a handler that tries
# ALTER ROLE ... SUPERUSER on its owner fails, the projection records the
# error and the role stays unprivileged; a handler that reads a table its
# owner cannot read fails and records the error, and copies nothing; a
# handler that tries SET ROLE, RESET ROLE, SET/RESET SESSION AUTHORIZATION or
# set_config('role') fails too.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main');
$node->safe_psql(
	$db, q{
CREATE ROLE regress_alice LOGIN;
CREATE ROLE regress_bob LOGIN;
CREATE SCHEMA alice AUTHORIZATION regress_alice;
GRANT INSERT ON projection.events TO regress_bob;
GRANT SELECT ON projection.events TO regress_alice;  -- to create projections
CREATE TABLE public.secret (x text);
INSERT INTO public.secret VALUES ('classified');
});

my $as_alice = $node->connstr($db) . ' user=regress_alice';
my $as_bob = $node->connstr($db) . ' user=regress_bob';

# regress_alice, a plain role, creates her projections
$node->safe_psql(
	$db, q{
CREATE TABLE alice.who (pos bigint PRIMARY KEY, usr text, sess text, super boolean);
CREATE FUNCTION alice.whoami(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO alice.who
	SELECT e.global_position, current_user, session_user, r.rolsuper
	  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
END
$$;
SELECT projection.create('alice_who', 'alice.whoami', event_types => ARRAY['Who'],
						 tables => ARRAY['alice.who']::regclass[]);

CREATE FUNCTION alice.escalate(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	ALTER ROLE regress_alice SUPERUSER;
END
$$;
SELECT projection.create('alice_escalate', 'alice.escalate', event_types => ARRAY['Escalate']);

CREATE TABLE alice.stolen (x text);
CREATE FUNCTION alice.steal(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO alice.stolen SELECT x FROM public.secret;
END
$$;
SELECT projection.create('alice_steal', 'alice.steal', event_types => ARRAY['Steal']);

CREATE FUNCTION alice.become(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	SET ROLE postgres;
	INSERT INTO alice.stolen SELECT x FROM public.secret;
END
$$;
SELECT projection.create('alice_become', 'alice.become', event_types => ARRAY['Become']);

CREATE FUNCTION alice.reset(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE e.data->>'sql';
	INSERT INTO alice.stolen SELECT x FROM public.secret;
END
$$;
SELECT projection.create('alice_reset', 'alice.reset', event_types => ARRAY['Reset'],
						 on_error => 'skip');
}, connstr => $as_alice);

is( $node->safe_psql(
		$db,
		"SELECT string_agg(name || ':' || owner, ',' ORDER BY name) FROM projection.status"
	),
	'alice_become:regress_alice,alice_escalate:regress_alice,'
	  . 'alice_reset:regress_alice,alice_steal:regress_alice,alice_who:regress_alice',
	'the projections belong to regress_alice');

# the superuser and regress_bob append
my $by_super = $node->safe_psql($db, "SELECT projection.append('w-1', 'Who', '{}')");
my $by_bob = $node->safe_psql($db, "SELECT projection.append('w-2', 'Who', '{}')",
	connstr => $as_bob);
$node->safe_psql(
	$db, q{
SELECT projection.append('x-1', 'Escalate', '{}');
SELECT projection.append('x-2', 'Steal', '{}');
SELECT projection.append('x-3', 'Become', '{}');
});

# ---------------------------------------------------------------------
# the handler's identity
# ---------------------------------------------------------------------
ok($node->wait_caught_up($db, 'alice_who'), 'the identity projection runs');
is( $node->safe_psql(
		$db,
		q{SELECT string_agg(pos || ':' || usr || ':' || super, ',' ORDER BY pos) FROM alice.who}
	),
	"$by_super:regress_alice:false,$by_bob:regress_alice:false",
	'the handler runs as the owner, not a superuser, whoever appended');

# ---------------------------------------------------------------------
# ALTER ROLE ... SUPERUSER from a handler
# ---------------------------------------------------------------------
ok($node->wait_for_state($db, 'alice_escalate', 'failed'),
	'the handler that makes its owner superuser fails');
my $st = $node->status($db, 'alice_escalate', [qw(last_error last_error_sqlstate)]);
is($st->{last_error_sqlstate}, '42501', 'with insufficient_privilege');
like($st->{last_error}, qr/permission|must be superuser/, 'the error says why');
is($node->safe_psql($db, "SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_alice'"),
	'f', 'regress_alice is still not a superuser');

# ---------------------------------------------------------------------
# reading a table the owner cannot read
# ---------------------------------------------------------------------
ok($node->wait_for_state($db, 'alice_steal', 'failed'),
	'the handler that reads a forbidden table fails');
$st = $node->status($db, 'alice_steal', [qw(last_error last_error_sqlstate)]);
is($st->{last_error_sqlstate}, '42501', 'with insufficient_privilege');
like($st->{last_error}, qr/permission denied for table secret/, 'the error says why');

ok($node->wait_for_state($db, 'alice_become', 'failed'),
	'the handler that tries SET ROLE fails');
$st = $node->status($db, 'alice_become', [qw(last_error)]);
like($st->{last_error}, qr/role|security-restricted/, 'the error says why');
is($node->safe_psql($db, 'SELECT count(*) FROM alice.stolen'),
	'0', 'nothing was copied out of the forbidden table');

# RESET ROLE and SET SESSION AUTHORIZATION in the worker (whose session
# user is the bootstrap superuser) do not escape the owner's identity
$node->safe_psql(
	$db, q{
SELECT projection.append('r-1', 'Reset', '{"sql": "RESET ROLE"}');
SELECT projection.append('r-2', 'Reset', '{"sql": "SET SESSION AUTHORIZATION DEFAULT"}');
SELECT projection.append('r-3', 'Reset', '{"sql": "RESET SESSION AUTHORIZATION"}');
SELECT projection.append('r-4', 'Reset', '{"sql": "SELECT set_config(''role'', ''none'', true)"}');
});
ok( $node->poll_query_until(
		$db, "SELECT count(*) = 4 FROM projection.dead_letters WHERE name = 'alice_reset'"),
	'each identity change in the worker fails (dead-lettered)');
is( $node->safe_psql(
		$db,
		"SELECT string_agg(DISTINCT sqlstate, ',') FROM projection.dead_letters WHERE name = 'alice_reset'"
	),
	'42501', 'with insufficient_privilege');
is($node->safe_psql($db, 'SELECT count(*) FROM alice.stolen'),
	'0', 'and nothing was copied out of the forbidden table');

# regress_alice's failed projections did not hold the others back
$by_super = $node->safe_psql($db, "SELECT projection.append('w-3', 'Who', '{}')");
ok($node->wait_caught_up($db, 'alice_who'), 'the identity projection keeps running');
is($node->safe_psql($db, "SELECT usr FROM alice.who WHERE pos = $by_super"),
	'regress_alice', 'still as its owner');

$node->stop('fast');
done_testing();
