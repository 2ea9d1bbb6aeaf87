
# test/t/007_rebuild.pl -- projection.rebuild() against a live server:
# readers keep the old read model until the rebuild commits, appends go on
# and are applied exactly once, a cancel rolls everything back, a failed
# projection comes back, and an inline rebuild holds appends until it
# commits.
#
# The read models count events and sum an amount per stream, keep a grand
# total, and record every applied position under a primary key (applying an
# event twice would fail the projection, so its state is checked too).
# Before each rebuild the handler is replaced by one that multiplies the
# amounts by 10: the old and the new read model differ, and a reader can tell
# which one it sees.  Every handler first calls maybe_block(), which takes an
# advisory lock (shared) at positions listed in block_at; the test holds
# those locks, so a rebuild (or the worker) provably stops in the middle, at
# a chosen event, for as long as the test needs.  Nothing sleeps: every wait
# polls pg_locks / pg_stat_activity / projection.status, bounded.
#
# Covers:
#   1. an async rebuild stopped at three points of its replay: every sample
#      taken by other sessions (fresh connections and a long-lived one) is
#      the old, complete read model; projection.status says 'rebuilding'
#      with its progress; after the commit the model is the new one, exactly
#      up to the checkpoint the rebuild set;
#   2. appends during that rebuild complete while it is still blocked, other
#      projections (sharing the one worker) apply them meanwhile, and after
#      the commit the worker applies them to the rebuilt model, once;
#   3. pg_cancel_backend of a rebuild stopped in the middle: the old read
#      model, checkpoint and state are intact, and the worker goes on;
#   4. a projection failed on a poison event (on_error 'stop'): a rebuild
#      before the fix fails and changes nothing; with the handler fixed, the
#      rebuild brings it back 'running', with a complete model (and, as a
#      a rebuild failing inside a savepoint must not leave it shown as
#      'rebuilding');
#   5. an inline rebuild: an append from another session waits on its lock
#      until the rebuild commits, then lands in the new model exactly once.
# The number rebuild() returns is not checked (what it counts may change);
# the read models are.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

# one worker for the database: the projection being rebuilt and the others
# share it, so "other projections keep running" means the worker really
# passes over the locked one
my $db = 'postgres';
my $node = start_node('main', conf => 'projection.workers_per_database = 1');
ok($node->wait_for_worker($db), 'the worker runs');

$node->safe_psql(
	$db, q{
-- (projection, position) at which that projection's handler waits for
-- advisory lock lock_key, shared; the test holds it exclusively
CREATE TABLE block_at (
	name text NOT NULL,
	pos bigint NOT NULL,
	lock_key int NOT NULL,
	PRIMARY KEY (name, pos)
);
CREATE FUNCTION maybe_block(p_name text, p_pos bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	k int;
BEGIN
	SELECT b.lock_key INTO k FROM public.block_at b
	 WHERE b.name = p_name AND b.pos = p_pos;
	IF FOUND THEN
		PERFORM pg_advisory_xact_lock_shared(k);
	END IF;
END
$$;

-- "acc" (async, every event type) and "inl" (inline, Credit events) keep the
-- same kind of read model
CREATE TABLE acc_streams (stream_id text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE acc_total (id int PRIMARY KEY CHECK (id = 1), n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE acc_applied (pos bigint PRIMARY KEY);
CREATE TABLE inl_streams (stream_id text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE inl_total (id int PRIMARY KEY CHECK (id = 1), n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE inl_applied (pos bigint PRIMARY KEY);

-- "other" (async, every event type): a bystander that must keep running
CREATE TABLE other_seen (pos bigint PRIMARY KEY);
CREATE FUNCTION other_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.other_seen VALUES (e.global_position) $$;
});

# The handler of projection $p ("acc" or "inl"), with amounts multiplied by
# $factor: CREATE OR REPLACE, so it also changes a projection's logic.
sub handler_sql
{
	my ($p, $factor) = @_;

	return qq{
CREATE OR REPLACE FUNCTION ${p}_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	v_amount bigint := $factor * coalesce((e.data->>'amount')::bigint, 0);
BEGIN
	PERFORM public.maybe_block('$p', e.global_position);
	INSERT INTO public.${p}_streams AS s VALUES (e.stream_id, 1, v_amount)
	ON CONFLICT (stream_id) DO UPDATE SET n = s.n + 1, total = s.total + excluded.total;
	INSERT INTO public.${p}_total AS t VALUES (1, 1, v_amount)
	ON CONFLICT (id) DO UPDATE SET n = t.n + 1, total = t.total + excluded.total;
	INSERT INTO public.${p}_applied VALUES (e.global_position);
END
\$\$;
};
}

# A summary of projection $p's read model, read in one statement (one
# snapshot): what a reader sees.
sub signature_sql
{
	my ($p) = @_;

	return qq{
SELECT (SELECT count(*) || ' streams, n ' || coalesce(sum(n), 0) || ', total '
			   || coalesce(sum(total), 0) FROM ${p}_streams)
	|| '; grand total ' || coalesce((SELECT n || '/' || total FROM ${p}_total), 'none')
	|| '; applied ' || (SELECT count(*) FROM ${p}_applied)
	|| ' up to ' || coalesce((SELECT max(pos) FROM ${p}_applied), 0)};
}

# A reader must never wait for a rebuild: lock_timeout turns a wait into an
# error (and a failed test) instead of a hang.
sub signature
{
	my ($p) = @_;

	return $node->safe_psql($db, "SET lock_timeout = '30s';" . signature_sql($p));
}

# Checks that projection $p's read model is exactly what its events
# ($filter, a condition on "e") say, amounts times $factor: every event
# applied once, per-stream counts and sums, the grand total.
sub check_model
{
	my ($what, $p, $filter, $factor) = @_;
	my $expected_sum = "$factor * coalesce(sum((e.data->>'amount')::bigint), 0)";

	my $n = $node->safe_psql($db,
		"SELECT count(*) FROM projection.events e WHERE $filter");
	is( $node->safe_psql(
			$db, qq{
SELECT (SELECT count(*) FROM ${p}_applied) || ' applied, '
	|| (SELECT count(*) FROM projection.events e WHERE $filter
		   AND NOT EXISTS (SELECT FROM ${p}_applied a WHERE a.pos = e.global_position))
	|| ' missing, '
	|| (SELECT count(*) FROM ${p}_applied a WHERE NOT EXISTS
		   (SELECT FROM projection.events e WHERE e.global_position = a.pos AND $filter))
	|| ' unknown, '
	|| (SELECT count(*)
		  FROM (SELECT e.stream_id, count(*) AS n, $expected_sum AS total
				  FROM projection.events e WHERE $filter GROUP BY e.stream_id) x
		  FULL JOIN ${p}_streams s USING (stream_id)
		 WHERE x.n IS DISTINCT FROM s.n OR x.total IS DISTINCT FROM s.total)
	|| ' wrong streams, grand total '
	|| coalesce((SELECT (t.n = x.n AND t.total = x.total)::text
				   FROM ${p}_total t,
						(SELECT count(*) AS n, $expected_sum AS total
						   FROM projection.events e WHERE $filter) x), 'missing')
}),
		"$n applied, 0 missing, 0 unknown, 0 wrong streams, grand total true",
		"$what: the read model is exactly its $n events (amounts x $factor)");
	return;
}

# Waits until the backends matching $who (a condition on pg_stat_activity
# "a") wait for advisory lock $key.
sub wait_blocked
{
	my ($who, $key) = @_;

	return $node->poll_query_until($db, blocked_sql($who, $key));
}

sub blocked_sql
{
	my ($who, $key) = @_;

	return "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
	  . "WHERE $who AND l.locktype = 'advisory' AND l.classid = 0 AND l.objid = $key "
	  . "AND l.objsubid = 1 AND NOT l.granted AND a.wait_event = 'advisory')";
}

# The position of the $k-th event (1-based) matching $filter.
sub nth_position
{
	my ($filter, $k) = @_;

	return $node->safe_psql($db,
		    "SELECT global_position FROM projection.events e WHERE $filter "
		  . "ORDER BY global_position OFFSET $k - 1 LIMIT 1");
}

# A background session for a rebuild: its pid, NOTICEs off (they go to
# stderr, which BackgroundPsql takes for an error).
sub rebuild_session
{
	my (%params) = @_;
	my $s = $node->background_psql($db, %params);

	$s->query_safe('SET client_min_messages = warning');
	return ($s, $s->query_safe('SELECT pg_backend_pid()'));
}

# Sends "SELECT projection.rebuild($name)" on session $s without waiting for
# it to finish.
sub start_rebuild
{
	my ($s, $name) = @_;

	$s->query_until(qr/rebuild starts/,
		"\\echo rebuild starts\nSELECT projection.rebuild('$name');\n");
	return;
}

sub status_of
{
	my ($name) = @_;

	return $node->status($db, $name,
		[qw(state position last_error rebuild_done rebuild_total)]);
}

# the test holds the advisory locks the handlers wait for
my $holder = $node->background_psql($db);
# a long-lived reader, besides the fresh connections of safe_psql
my $reader = $node->background_psql($db);
$reader->query_safe("SET lock_timeout = '30s'");

# ---------------------------------------------------------------------
# 1. readers see the old, complete read model during an async rebuild
# ---------------------------------------------------------------------
my $n_events = 5000;
$node->safe_psql($db, handler_sql('acc', 1));
$node->safe_psql(
	$db, q{
SELECT projection.create('acc', 'acc_h',
						 tables => '{acc_streams,acc_total,acc_applied}');
SELECT projection.create('other', 'other_h', tables => '{other_seen}');
});
# 50 streams; explicit versions, as a bulk load would give them
$node->safe_psql(
	$db, qq{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'acct-' || (i % 50), i / 50 + 1, 'Deposited', jsonb_build_object('amount', i % 7 + 1)
  FROM generate_series(0, $n_events - 1) i;
});
my $last = $node->max_position($db);
ok($node->wait_caught_up($db, 'acc'), "the async projection applies $n_events events");
check_model('before the rebuild', 'acc', 'true', 1);
my $old = signature('acc');

# the new logic; nothing is pending, so the worker applies nothing with it
$node->safe_psql($db, handler_sql('acc', 10));

# three stops on the replay, each behind its own lock
my @stops = (
	[ nth_position('true', 1000), 4242 ],
	[ nth_position('true', 2500), 4243 ],
	[ nth_position('true', 4000), 4244 ]);
for my $stop (@stops)
{
	my ($pos, $key) = @$stop;

	$node->safe_psql($db, "INSERT INTO block_at VALUES ('acc', $pos, $key)");
	$holder->query_safe("SELECT pg_advisory_lock($key)");
}

my ($rb, $rb_pid) = rebuild_session();
start_rebuild($rb, 'acc');

my $prev_done = -1;
for my $i (0 .. $#stops)
{
	my ($pos, $key) = @{ $stops[$i] };

	$holder->query_safe("SELECT pg_advisory_unlock($stops[$i - 1][1])") if $i > 0;
	ok(wait_blocked("a.pid = $rb_pid", $key),
		"the rebuild is stopped in the middle of its replay, at event $pos");
	my $st = status_of('acc');
	is($st->{state}, 'rebuilding', "at event $pos: projection.status says rebuilding");
	is($st->{rebuild_total}, $n_events,
		"at event $pos: rebuild_total counts every event (the projection handles them all)");
	cmp_ok($st->{rebuild_done}, '<', $pos, "at event $pos: rebuild_done is short of it");
	cmp_ok($st->{rebuild_done}, '>=', $prev_done, "at event $pos: rebuild_done does not go back");
	$prev_done = $st->{rebuild_done};
	is($st->{position}, $last, "at event $pos: the checkpoint has not moved");
	for my $sample (1 .. 2)
	{
		is(signature('acc'), $old,
			"at event $pos, sample $sample: a new session sees the old, complete read model");
		is($reader->query_safe(signature_sql('acc')),
			$old, "at event $pos, sample $sample: a long-lived session sees it too");
	}
}

# ---------------------------------------------------------------------
# 2. appends during the rebuild: not blocked, applied once, after it
# ---------------------------------------------------------------------
# A blocked append would wait until the rebuild ends, which needs the test to
# go on: statement_timeout turns that into an error instead of a hang.
my $appended = $node->safe_psql(
	$db, q{
SET statement_timeout = '60s';
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'late-' || (i % 10), 'Deposited', jsonb_build_object('amount', 100 + i)
  FROM generate_series(1, 300) i;
SELECT projection.append('late-single', 'Deposited', jsonb_build_object('amount', 1000 * i))
  FROM generate_series(1, 5) i;
});
my @appended = split /\n/, $appended;
is(scalar @appended, 5, 'appends complete while the rebuild is blocked');
is($node->safe_psql($db, blocked_sql("a.pid = $rb_pid", $stops[-1][1])),
	't', 'and the rebuild is still blocked');
my $first_late = $node->safe_psql($db,
	"SELECT min(global_position) FROM projection.events WHERE global_position > $last");
# once the rebuild commits, the worker will stop at the first of them
$node->safe_psql($db, "INSERT INTO block_at VALUES ('acc', $first_late, 4245)");
$holder->query_safe('SELECT pg_advisory_lock(4245)');

ok($node->wait_caught_up($db, 'other'),
	'another projection on the same worker applies the new events meanwhile');
is(signature('acc'), $old,
	'the read model being rebuilt is still the old one after the appends');
is(status_of('acc')->{position}, $last, 'and its checkpoint has not moved');

$holder->query_safe("SELECT pg_advisory_unlock($stops[-1][1])");
my ($out, $err) = $rb->query("SELECT 'rebuild returned'");
ok(!$err && $out =~ /rebuild returned$/, 'the rebuild completes without error')
  or diag("stdout: $out\nstderr: $rb->{stderr}");
$rb->quit;

ok(wait_blocked("a.backend_type = 'projection worker'", 4245),
	'after the commit the worker applies the appended events (stopped at the first)');
my $st = status_of('acc');
cmp_ok($st->{position}, '>=', $last, 'the rebuild set the checkpoint at the last event it saw');
cmp_ok($st->{position}, '<', $first_late, 'not past the events appended meanwhile');
is($st->{state}, 'running', 'the projection is running again');
check_model('committed rebuild', 'acc', "e.global_position <= $last", 10);
is($reader->query_safe(signature_sql('acc')),
	signature('acc'), 'the long-lived session sees the new model too');

$holder->query_safe('SELECT pg_advisory_unlock(4245)');
ok($node->wait_caught_up($db, 'acc'), 'the worker catches up');
check_model('rebuild with concurrent appends', 'acc', 'true', 10);
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.events e FULL JOIN other_seen o ON o.pos = e.global_position
 WHERE o.pos IS NULL OR e.global_position IS NULL}),
	'0',
	'the other projection applied every event once');

# ---------------------------------------------------------------------
# 3. a cancelled rebuild leaves everything as it was
# ---------------------------------------------------------------------
$node->safe_psql($db, 'DELETE FROM block_at');
$old = signature('acc');
my $before = status_of('acc');
# a logic the cancelled rebuild would have applied
$node->safe_psql($db, handler_sql('acc', 100));
my $stop = nth_position('true', 3000);
$node->safe_psql($db, "INSERT INTO block_at VALUES ('acc', $stop, 4242)");
$holder->query_safe('SELECT pg_advisory_lock(4242)');

# on_error_stop => 0: the session outlives the cancelled statement
my ($rb2, $rb2_pid) = rebuild_session(on_error_stop => 0);
start_rebuild($rb2, 'acc');
ok(wait_blocked("a.pid = $rb2_pid", 4242),
	"a second rebuild is stopped in the middle, at event $stop");
is(status_of('acc')->{state}, 'rebuilding', 'projection.status says rebuilding');
is($node->safe_psql($db, "SELECT pg_cancel_backend($rb2_pid)"),
	't', 'pg_cancel_backend() of the rebuild');
($out) = $rb2->query("SELECT 'session alive'");
like($rb2->{stderr}, qr/canceling statement due to user request/,
	'the rebuild is cancelled');
like($out, qr/session alive$/, 'its session goes on');
$rb2->quit;

is(signature('acc'), $old, 'after the cancel: the old read model, intact');
my $after = status_of('acc');
is_deeply(
	[ @$after{qw(state position last_error)} ],
	[ @$before{qw(state position last_error)} ],
	'after the cancel: the same state, checkpoint and last error');
is($after->{state}, 'running', 'namely running');
ok(!$after->{rebuild_total}, 'no rebuild in progress any more');

# back to the logic of the read model; the worker goes on from its checkpoint
$node->safe_psql($db, handler_sql('acc', 10));
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$node->safe_psql($db, 'DELETE FROM block_at');
$node->safe_psql($db,
	    "SELECT projection.append('after-cancel-' || (i % 5), 'Deposited', "
	  . "jsonb_build_object('amount', i)) FROM generate_series(1, 100) i");
ok($node->wait_caught_up($db, 'acc'), 'after the cancel the worker applies new events');
check_model('after the cancelled rebuild', 'acc', 'true', 10);

# ---------------------------------------------------------------------
# 4. rebuild of a failed projection, once its handler is fixed
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE fragile_model (pos bigint PRIMARY KEY, stream_id text NOT NULL, amount bigint NOT NULL);
CREATE FUNCTION fragile_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'poison')::boolean THEN
		RAISE EXCEPTION 'poison event %', e.global_position;
	END IF;
	INSERT INTO public.fragile_model
	VALUES (e.global_position, e.stream_id, (e.data->>'amount')::bigint);
END
$$;
SELECT projection.create('fragile', 'fragile_h', '{Fragile}',
						 tables => '{fragile_model}', on_error => 'stop');
});
# appends $n Fragile events to three streams
sub append_fragile
{
	my ($n) = @_;

	$node->safe_psql($db,
		    "SELECT projection.append('fragile-' || (i % 3), 'Fragile', "
		  . "jsonb_build_object('amount', i)) FROM generate_series(1, $n) i");
	return;
}
append_fragile(30);
my $poison = $node->safe_psql($db,
	"SELECT projection.append('fragile-x', 'Fragile', '{\"poison\": true, \"amount\": 7}')");
append_fragile(20);
ok($node->wait_for_state($db, 'fragile', 'failed'),
	'the projection fails on the poison event');
is( $node->status($db, 'fragile', [qw(last_error_position)])->{last_error_position},
	$poison, 'at the poison event');
is($node->safe_psql($db, "SELECT count(*) FROM fragile_model WHERE pos >= $poison"),
	'0', 'nothing from the poison event on was applied');

# a rebuild with the handler not yet fixed fails on the same event, and is
# rolled back: still failed there, the read model untouched
my $fragile_sig = 'SELECT count(*) || \' rows up to \' || max(pos) FROM fragile_model';
my $fragile_before = $node->safe_psql($db, $fragile_sig);
my $fragile_status = $node->status($db, 'fragile',
	[qw(state position last_error last_error_position)]);
my ($ret, undef, $stderr) = $node->psql($db, "SELECT projection.rebuild('fragile')");
isnt($ret, 0, 'a rebuild before the fix fails');
like($stderr, qr/poison event $poison/, 'on the poison event');
is_deeply($node->status($db, 'fragile', [qw(state position last_error last_error_position)]),
	$fragile_status, 'and leaves the projection failed, as it was');
is($node->safe_psql($db, $fragile_sig), $fragile_before, 'with its read model untouched');

# a rebuild that fails inside a subtransaction (a savepoint, an EXCEPTION
# block) ends there: the status does not keep showing it as rebuilding
$node->psql($db,
	"BEGIN; SAVEPOINT s; SELECT projection.rebuild('fragile'); ROLLBACK TO SAVEPOINT s; COMMIT;",
	on_error_stop => 0);
is($node->status($db, 'fragile', [qw(state)])->{state},
	'failed', 'a rebuild that fails inside a savepoint leaves the state as it was');
$node->safe_psql($db,
	"DO \$\$ BEGIN PERFORM projection.rebuild('fragile'); EXCEPTION WHEN OTHERS THEN NULL; END \$\$;");
is($node->status($db, 'fragile', [qw(state)])->{state},
	'failed', 'a rebuild that fails inside an EXCEPTION block leaves the state as it was');

# the fix: poison events count like the others; the new logic multiplies
# amounts by 10
$node->safe_psql(
	$db, q{
CREATE OR REPLACE FUNCTION fragile_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.fragile_model
	VALUES (e.global_position, e.stream_id, 10 * (e.data->>'amount')::bigint);
END
$$;
});
$node->safe_psql($db, "SELECT projection.rebuild('fragile')");
is_deeply(
	$node->status($db, 'fragile', [qw(state last_error last_error_position)]),
	{ state => 'running', last_error => '', last_error_position => '' },
	'after the rebuild the projection is running, its error cleared');
ok($node->wait_caught_up($db, 'fragile'), 'and caught up');
is( $node->safe_psql(
		$db, q{
SELECT count(*) || ' rows, ' || (SELECT count(*) FROM projection.events e
	FULL JOIN fragile_model m ON m.pos = e.global_position
	WHERE e.event_type = 'Fragile' AND (m.pos IS NULL OR m.stream_id <> e.stream_id
		  OR m.amount <> 10 * (e.data->>'amount')::bigint)
	   OR e.global_position IS NULL) || ' wrong'
  FROM fragile_model}),
	'51 rows, 0 wrong',
	'the read model holds every event, the poison one included, with the new logic');

# ---------------------------------------------------------------------
# 5. rebuild of an inline projection: appends wait for its commit
# ---------------------------------------------------------------------
my $credit = "e.event_type = 'Credit'";
$node->safe_psql($db, handler_sql('inl', 1));
$node->safe_psql($db,
	"SELECT projection.create('inl', 'inl_h', '{Credit}', mode => 'inline', "
	  . "tables => '{inl_streams,inl_total,inl_applied}')");
$node->safe_psql(
	$db, q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'credit-' || (i % 20), i / 20 + 1, 'Credit', jsonb_build_object('amount', i % 11)
  FROM generate_series(0, 1999) i;
});
check_model('inline, before the rebuild', 'inl', $credit, 1);
$old = signature('inl');

$node->safe_psql($db, handler_sql('inl', 10));
$stop = nth_position($credit, 1200);
$node->safe_psql($db, "INSERT INTO block_at VALUES ('inl', $stop, 4242)");
$holder->query_safe('SELECT pg_advisory_lock(4242)');

my ($rb3, $rb3_pid) = rebuild_session();
start_rebuild($rb3, 'inl');
ok(wait_blocked("a.pid = $rb3_pid", 4242),
	"the inline rebuild is stopped in the middle, at event $stop");
is(status_of('inl')->{state}, 'rebuilding', 'projection.status says rebuilding');

my $ap = $node->background_psql($db);
my $ap_pid = $ap->query_safe('SELECT pg_backend_pid()');
$ap->query_until(qr/append starts/,
	    "\\echo append starts\n"
	  . "SELECT projection.append('credit-late', 'Credit', '{\"amount\": 5000}');\n");
ok( $node->poll_query_until(
		$db, qq{
SELECT a.wait_event_type = 'Lock' AND a.wait_event = 'relation'
   AND EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted
				  AND l.relation = 'projection.events'::regclass)
  FROM pg_stat_activity a WHERE a.pid = $ap_pid}),
	'an append from another session waits for the rebuild (lock on projection.events)');
is(signature('inl'), $old, 'a reader sees the old inline read model meanwhile');
is($reader->query_safe(signature_sql('inl')), $old, 'a long-lived reader too');

$holder->query_safe('SELECT pg_advisory_unlock(4242)');
($out, $err) = $rb3->query("SELECT 'rebuild returned'");
ok(!$err && $out =~ /rebuild returned$/, 'the inline rebuild completes without error')
  or diag("stdout: $out\nstderr: $rb3->{stderr}");
$rb3->quit;
$out = $ap->query_safe("SELECT 'append returned'");
like($out, qr/^(\d+)\nappend returned$/, 'the waiting append completes after the commit');
my ($late) = $out =~ /^(\d+)/;
$ap->quit;

is($node->safe_psql($db, "SELECT count(*) FROM inl_applied WHERE pos = $late"),
	'1', 'its event is in the rebuilt read model, once');
check_model('inline, after the rebuild and the waiting append', 'inl', $credit, 10);
is(status_of('inl')->{state}, 'running', 'the inline projection is running');

# ---------------------------------------------------------------------
# every async projection caught up, every event once
# ---------------------------------------------------------------------
ok($node->wait_caught_up($db, $_), "$_ is caught up") for qw(acc other fragile);
check_model('in the end', 'acc', 'true', 10);
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.events e FULL JOIN other_seen o ON o.pos = e.global_position
 WHERE o.pos IS NULL OR e.global_position IS NULL}),
	'0',
	'in the end: the other projection applied every event once');
is($node->safe_psql($db, 'SELECT count(*) FROM projection.dead_letters'),
	'0', 'no dead letters');

$reader->quit;
$holder->quit;
$node->stop('fast');
done_testing();
