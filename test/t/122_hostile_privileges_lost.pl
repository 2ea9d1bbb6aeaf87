
# test/t/122_hostile_privileges_lost.pl -- privileges revoked while async
# projections and a feed consumer run: a clear failure, no event handed to a
# role that may no longer read it, and the work resumes after the GRANT.
#
#   1. the owner of an async projection (batch statements) loses SELECT on
#      projection.events: the worker used to go on handing it every new
#      event; it now stops the projection before its next event (state
#      failed, a last_error that says why, no dead letter, wait() fails at
#      once), rebuild() refuses to replay events to it (42501), and after the
#      GRANT resume() goes on from the checkpoint, each event once;
#   2. the owner loses INSERT on its read model: on_error 'stop' fails at
#      the event with the privilege error, resumes after the GRANT;
#      on_error 'skip' records the events as dead letters (the contract's
#      dead_letters lists what the model lacks), which retry_dead_letters
#      applies after the GRANT;
#   3. a feed consumer's role loses SELECT on projection.events between two
#      polls: the next poll is refused (42501), nothing is delivered, the
#      checkpoint stays, and after the GRANT the poll hands out the same
#      events again.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = start_node('main');
my $db = 'postgres';
$node->safe_psql(
	$db, q{
CREATE ROLE regress_h4_owner LOGIN;
GRANT SELECT ON projection.events TO regress_h4_owner;
CREATE TABLE public.seen (pos bigint PRIMARY KEY);
CREATE TABLE public.stop_log (pos bigint PRIMARY KEY);
CREATE TABLE public.skip_log (pos bigint PRIMARY KEY);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.seen, public.stop_log, public.skip_log
  TO regress_h4_owner;
CREATE FUNCTION public.skip_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.skip_log VALUES (e.global_position) $$;
SET ROLE regress_h4_owner;
SELECT projection.create('seen_p', NULL, '{E}', tables => '{seen}');
SELECT projection.on_batch('seen_p', 'INSERT INTO public.seen SELECT global_position FROM batch');
SELECT projection.create('stop_p', NULL, '{E}', tables => '{stop_log}');
SELECT projection.on_batch('stop_p', 'INSERT INTO public.stop_log SELECT global_position FROM batch');
SELECT projection.create('skip_p', 'public.skip_h', '{E}', tables => '{skip_log}', on_error => 'skip');
RESET ROLE;
CREATE FUNCTION public.count_fold(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql AS
  $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
SET ROLE regress_h4_owner;
SELECT projection.create_snapshot('snap_p', 'public.count_fold', event_types => '{E}');
});

# appends n events of type E; returns the last position
sub append_events
{
	my ($n) = @_;
	return $node->safe_psql($db,
		"SELECT max(projection.append('s-' || (i % 7), 'E', jsonb_build_object('i', i))) "
		  . "FROM generate_series(1, $n) i");
}

# the positions of type E missing from a table, and those it has twice (the key forbids) or unknown
sub model_check
{
	my ($table) = @_;
	return $node->safe_psql($db,
		    "SELECT (SELECT count(*) FROM projection.events e WHERE e.event_type = 'E' "
		  . "AND NOT EXISTS (SELECT FROM public.$table t WHERE t.pos = e.global_position)) || ' missing, ' "
		  . "|| (SELECT count(*) FROM public.$table t WHERE NOT EXISTS "
		  . "(SELECT FROM projection.events e WHERE e.global_position = t.pos)) || ' unknown'");
}

# wait()'s SQLSTATE, or 'ok'
sub wait_sqlstate
{
	my ($name, $up_to) = @_;
	my ($ret, $out, $err) = $node->psql($db,
		"\\set VERBOSITY sqlstate\nSELECT projection.wait('$name', $up_to, '60 s')");
	return $ret == 0 ? ($out eq 't' ? 'ok' : "returned $out") : ($err =~ /ERROR:\s+([0-9A-Z]{5})/ ? $1 : $err);
}

my $p = append_events(50);
ok($node->wait_caught_up($db, $_, $p), "$_ caught up") for qw(seen_p stop_p skip_p snap_p);

# ---------------------------------------------------------------------
# 1. the owner may no longer read projection.events
# ---------------------------------------------------------------------
$node->safe_psql($db, 'REVOKE SELECT ON projection.events FROM regress_h4_owner');
my $before = $node->safe_psql($db, 'SELECT count(*) FROM seen');
$p = append_events(20);
is(wait_sqlstate('seen_p', $p), '55000',
	'SELECT revoked: wait() fails at once, the projection has stopped');
my $st = $node->status($db, 'seen_p');
is($st->{state}, 'failed', 'SELECT revoked: the projection is failed');
like($st->{last_error}, qr/may no longer read projection\.events/,
	'SELECT revoked: last_error says why');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'), $before,
	'SELECT revoked: no event after the REVOKE reached the read model');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'seen_p'"),
	'0', 'SELECT revoked: no dead letter (not an error of an event)');

my ($ret, $out, $err) = $node->psql($db,
	"SET ROLE regress_h4_owner;\n\\set VERBOSITY verbose\nSELECT projection.rebuild('seen_p')");
isnt($ret, 0, 'SELECT revoked: rebuild() by the owner is refused');
like($err, qr/42501.*permission denied for table events/s, 'SELECT revoked: with 42501');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'), $before,
	'SELECT revoked: the read model is as it was');

# resume() without the GRANT: the worker stops it again before its next event
$node->safe_psql($db, "SET ROLE regress_h4_owner; SELECT projection.resume('seen_p')");
is(wait_sqlstate('seen_p', $p), '55000', 'resume() without the GRANT: stopped again');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'), $before,
	'resume() without the GRANT: still no event handed over');

# the owner's other projections stopped the same way
is($node->status($db, $_)->{state}, 'failed', "SELECT revoked: $_ stopped too") for qw(stop_p skip_p snap_p);
# snapshot() folds the latest events: no longer for the owner
($ret, $out, $err) = $node->psql($db,
	"SET ROLE regress_h4_owner;\n\\set VERBOSITY verbose\nSELECT projection.snapshot('snap_p', 's-1')");
like($err, qr/42501.*permission denied for snapshot projection "snap_p"/s,
	'SELECT revoked: snapshot() by the owner is refused (42501)');
is($out, '', 'SELECT revoked: snapshot() hands the owner no state');

$node->safe_psql($db, 'GRANT SELECT ON projection.events TO regress_h4_owner');
for my $name (qw(seen_p stop_p skip_p snap_p))
{
	$node->safe_psql($db, "SET ROLE regress_h4_owner; SELECT projection.resume('$name')");
	ok($node->wait_caught_up($db, $name, $p), "after the GRANT and resume(): $name caught up");
}
is(model_check($_), '0 missing, 0 unknown', "after the GRANT: every event once in $_")
  for qw(seen stop_log skip_log);
is($node->safe_psql($db,
		"SET ROLE regress_h4_owner; SELECT projection.snapshot('snap_p', 's-1')->>'n'"),
	$node->safe_psql($db, "SELECT count(*) FROM projection.events WHERE stream_id = 's-1'"),
	'after the GRANT: snapshot() by the owner, every event folded once');

# ---------------------------------------------------------------------
# 2. the owner may no longer write its read model
# ---------------------------------------------------------------------
$node->safe_psql($db, 'REVOKE INSERT ON public.stop_log, public.skip_log FROM regress_h4_owner');
$p = append_events(10);
is(wait_sqlstate('stop_p', $p), '55000', "INSERT revoked, on_error 'stop': the projection fails");
$st = $node->status($db, 'stop_p');
is($st->{state}, 'failed', "INSERT revoked, on_error 'stop': state failed");
like($st->{last_error}, qr/permission denied for table stop_log/,
	"INSERT revoked, on_error 'stop': last_error is the privilege error");
ok($node->wait_caught_up($db, 'skip_p', $p), "INSERT revoked, on_error 'skip': goes on");
is($node->safe_psql($db, "SELECT count(*) || ' ' || min(sqlstate) FROM projection.dead_letters WHERE name = 'skip_p'"),
	'10 42501', "INSERT revoked, on_error 'skip': each event a dead letter with its 42501");

$node->safe_psql($db, 'GRANT INSERT ON public.stop_log, public.skip_log TO regress_h4_owner');
$node->safe_psql($db, "SET ROLE regress_h4_owner; SELECT projection.resume('stop_p')");
ok($node->wait_caught_up($db, 'stop_p', $p), "after the GRANT, on_error 'stop': resumed and caught up");
is(model_check('stop_log'), '0 missing, 0 unknown', "after the GRANT, on_error 'stop': every event once");
$node->safe_psql($db, "SET ROLE regress_h4_owner; SELECT projection.retry_dead_letters('skip_p')");
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'skip_p'"),
	'0', "after the GRANT, on_error 'skip': retry_dead_letters applied them");
is(model_check('skip_log'), '0 missing, 0 unknown', "after the GRANT, on_error 'skip': every event once");

# ---------------------------------------------------------------------
# 3. a feed consumer's role loses SELECT between polls
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE ROLE regress_h4_consumer LOGIN;
GRANT SELECT ON projection.events TO regress_h4_consumer;
SET ROLE regress_h4_consumer;
SELECT projection.create_feed('h4_feed', '{E}');
});
my $poll = "SELECT token, count(*), min(global_position), max(global_position) "
  . "FROM projection.poll('h4_feed', 30) GROUP BY token";
my $first = $node->safe_psql($db, "SET ROLE regress_h4_consumer; $poll");
my ($token, $n, $lo, $hi) = split /\|/, $first;
is($n, '30', 'feed: the first poll hands out 30 events');
$node->safe_psql($db,
	"SET ROLE regress_h4_consumer; SELECT projection.ack('h4_feed', '$token')");
$node->safe_psql($db, 'REVOKE SELECT ON projection.events FROM regress_h4_consumer');
($ret, $out, $err) = $node->psql($db,
	"SET ROLE regress_h4_consumer;\n\\set VERBOSITY verbose\n$poll");
isnt($ret, 0, 'feed: the poll after the REVOKE is refused');
like($err, qr/42501.*permission denied for table events/s, 'feed: with 42501');
is($out, '', 'feed: nothing delivered');
is($node->safe_psql($db,
		"SELECT position || ' ' || leased FROM projection.feed_status WHERE feed = 'h4_feed'"),
	"$hi false", 'feed: the checkpoint is at the ack, no lease taken');
$node->safe_psql($db, 'GRANT SELECT ON projection.events TO regress_h4_consumer');
my $again = $node->safe_psql($db, "SET ROLE regress_h4_consumer; $poll");
my (undef, $n2, $lo2) = split /\|/, $again;
is($n2, '30', 'feed: after the GRANT the poll hands out events again');
is($node->safe_psql($db,
		"SELECT min(global_position) FROM projection.events WHERE event_type = 'E' AND global_position > $hi"),
	$lo2, 'feed: from the first event after the checkpoint, none lost');

$node->stop('fast');
done_testing();
