
# test/t/003_errors.pl -- handler errors in async projections, and pausing.
#
# Covers: on_error 'stop' (failed at the poison event, position before it,
# last_error set, the poison event's own writes rolled back, other
# projections go on, the failure survives a restart, resume() retries from
# that event, and completes once the handler is fixed); on_error 'skip'
# (dead letters with sqlstate and error, the projection reaches the end);
# a transient error (lock time-out while another session holds a row lock)
# is retried, and applied once when it goes away, without failing the
# projection or applying anything twice; pause/resume (lag grows while paused, the pause survives a
# restart, resume() catches up); a projection resumed while the worker
# replays a failed round event by event misses nothing.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

# one worker for the database: the failing projection and the others share
# it (the hard case for isolation; with several workers they may not)
my $db = 'postgres';
my $node = start_node('main', conf => 'projection.workers_per_database = 1');

# Appends $n events of type $type with data $data; returns the positions.
sub append_events
{
	my ($n, $type, $data) = @_;
	$data = '{}' unless defined $data;

	return split /\n/,
	  $node->safe_psql($db,
		    "SELECT projection.append('s-' || i, '$type', '$data') "
		  . "FROM generate_series(1, $n) i");
}

# ---------------------------------------------------------------------
# on_error 'stop'
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE stop_model (pos bigint PRIMARY KEY);
CREATE TABLE other_model (pos bigint PRIMARY KEY);
-- writes first, then raises on a poison event: the write must not survive
CREATE FUNCTION stop_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.stop_model VALUES (e.global_position);
	IF (e.data->>'poison')::boolean THEN
		RAISE EXCEPTION 'poison event %', e.global_position USING ERRCODE = '22023';
	END IF;
END
$$;
CREATE FUNCTION other_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.other_model VALUES (e.global_position) $$;
SELECT projection.create('stopper', 'stop_h');
SELECT projection.create('other', 'other_h');
});

append_events(10, 'Thing');
my ($poison) = append_events(1, 'Thing', '{"poison": true}');
append_events(10, 'Thing');

ok($node->wait_for_state($db, 'stopper', 'failed'),
	'on_error stop: the projection fails at the poison event');
my $st = $node->status($db, 'stopper',
	[qw(state position last_error last_error_sqlstate last_error_position)]);
is($st->{position}, $poison - 1, 'its position is the event before the poison event');
like($st->{last_error}, qr/poison event $poison/, 'last_error holds the error message');
is($st->{last_error_sqlstate}, '22023', 'and its SQLSTATE');
is($st->{last_error_position}, $poison, 'and the failing position');
is( $node->safe_psql($db, q{SELECT count(*) || ' ' || max(pos) FROM stop_model}),
	($poison - 1) . ' ' . ($poison - 1),
	'the events before the poison event were applied, its own write rolled back');
$node->wait_for_log(qr/projection "stopper" failed at event $poison: poison event $poison/);

ok($node->wait_caught_up($db, 'other'),
	'another projection on the same events reaches the end');
is( $node->safe_psql($db, 'SELECT count(*) FROM other_model'),
	$node->safe_psql($db, 'SELECT count(*) FROM projection.events'),
	'it applied every event');

# the failed projection stays where it failed while others go on
append_events(5, 'Thing');
ok($node->wait_caught_up($db, 'other'), 'the other projection applies new events');
$st = $node->status($db, 'stopper', [qw(state position lag_events)]);
is_deeply($st, { state => 'failed', position => $poison - 1, lag_events => 16 },
	'the failed projection stays at its failing event, its lag grows');

$node->restart;
append_events(1, 'Thing');
ok($node->wait_caught_up($db, 'other'), 'after a restart the other projection runs');
$st = $node->status($db, 'stopper', [qw(state position)]);
is_deeply($st, { state => 'failed', position => $poison - 1 },
	'the failure survives a restart');

# resume() without a fix retries the same event and fails again
$node->safe_psql($db, "SELECT projection.resume('stopper')");
ok($node->wait_for_state($db, 'stopper', 'failed'),
	'resume() without a fix: the projection fails again');
$st = $node->status($db, 'stopper', [qw(position last_error_position)]);
is_deeply($st, { position => $poison - 1, last_error_position => $poison },
	'at the same event');

# fix the handler, resume: it retries from the poison event and completes
$node->safe_psql(
	$db, q{
CREATE OR REPLACE FUNCTION stop_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.stop_model VALUES (e.global_position);
END
$$;
SELECT projection.resume('stopper');
});
ok($node->wait_caught_up($db, 'stopper'),
	'after fixing the handler, resume() catches up');
is( $node->safe_psql(
		$db,
		'SELECT (SELECT count(*) FROM stop_model) = (SELECT count(*) FROM projection.events) '
		  . "AND (SELECT count(*) FROM stop_model WHERE pos = $poison) = 1"),
	't',
	'every event is applied once, the poison event included');
$st = $node->status($db, 'stopper', [qw(state last_error)]);
is_deeply($st, { state => 'running', last_error => '' },
	'the projection runs and its error is cleared');

# ---------------------------------------------------------------------
# on_error 'skip'
# ---------------------------------------------------------------------
my ($zero) = append_events(1, 'Thing', '{"zero": true}');
append_events(3, 'Thing');
$node->safe_psql(
	$db, q{
CREATE TABLE skip_model (pos bigint PRIMARY KEY);
CREATE FUNCTION skip_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.skip_model VALUES (e.global_position);
	IF (e.data->>'poison')::boolean THEN
		RAISE EXCEPTION 'poison event %', e.global_position USING ERRCODE = '22023';
	END IF;
	IF (e.data->>'zero')::boolean THEN
		PERFORM 1 / 0;
	END IF;
END
$$;
SELECT projection.create('skipper', 'skip_h', on_error => 'skip');
});
ok($node->wait_caught_up($db, 'skipper'),
	'on_error skip: the projection reaches the end');
is( $node->safe_psql(
		$db,
		"SELECT string_agg(global_position || '|' || event_type || '|' || sqlstate || '|' || error, E'\\n' "
		  . "ORDER BY global_position) FROM projection.dead_letters WHERE name = 'skipper'"
	),
	"$poison|Thing|22023|poison event $poison\n$zero|Thing|22012|division by zero",
	'both failing events are in dead_letters, with sqlstate and error');
is( $node->safe_psql(
		$db,
		'SELECT count(*) FROM projection.events e WHERE NOT EXISTS '
		  . '(SELECT FROM skip_model m WHERE m.pos = e.global_position)'),
	'2',
	'every other event was applied, the failing ones left no writes');
is($node->safe_psql($db, "SELECT count(*) FROM skip_model WHERE pos IN ($poison, $zero)"),
	'0', 'namely the two failing ones');
is($node->status($db, 'skipper')->{state}, 'running', 'the projection keeps running');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name <> 'skipper'"),
	'0', 'only that projection has dead letters');

# ---------------------------------------------------------------------
# a transient error is retried, not a failure
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE lockme (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO lockme VALUES (1, 0);
CREATE FUNCTION lock_h(e projection.events) RETURNS void
LANGUAGE plpgsql SET lock_timeout = '100ms' AS $$
BEGIN
	UPDATE public.lockme SET n = n + 1 WHERE id = 1;
END
$$;
SELECT projection.create('locker', 'lock_h', event_types => ARRAY['Locking']);
});
my $holder = $node->background_psql($db);
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT * FROM lockme WHERE id = 1 FOR UPDATE');
my $offset = -s $node->logfile;
my ($locking) = append_events(1, 'Locking');
# a handler call is retried a few times (with back-off) before on_error
# decides (016_worker_errors.pl): release the lock after the first retry
$node->wait_for_log(
	qr/retrying in \d+ ms after error: canceling statement due to lock timeout/,
	$offset);
pass('the worker retries the event while the row stays locked');
$holder->query_safe('COMMIT');
$holder->quit;
ok($node->wait_caught_up($db, 'locker', $locking),
	'once the lock is released the event is applied');
$st = $node->status($db, 'locker', [qw(state position last_error)]);
is_deeply($st, { state => 'running', position => $locking, last_error => '' },
	'the projection did not fail on a lock time-out');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'locker'"),
	'0', 'nor did it skip the event');
is($node->safe_psql($db, 'SELECT n FROM lockme'), '1',
	'exactly once, despite the retries');

# ---------------------------------------------------------------------
# pause and resume
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE pause_model (pos bigint PRIMARY KEY);
CREATE FUNCTION pause_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.pause_model VALUES (e.global_position) $$;
SELECT projection.create('pausable', 'pause_h', event_types => ARRAY['Pausable']);
});
append_events(2, 'Pausable');
ok($node->wait_caught_up($db, 'pausable'), 'the projection runs');
$node->safe_psql($db, "SELECT projection.pause('pausable')");
append_events(5, 'Pausable');
ok($node->wait_caught_up($db, 'other'),
	'the worker goes on with the other projections');
$st = $node->status($db, 'pausable', [qw(state lag_events)]);
is_deeply($st, { state => 'paused', lag_events => 5 },
	'the paused projection is paused and its lag grows');
is($node->safe_psql($db, 'SELECT count(*) FROM pause_model'), '2',
	'it applied nothing while paused');
is( $node->safe_psql(
		$db,
		"SELECT projection.wait('pausable', (SELECT max(global_position) FROM projection.events), '0.2 s')"
	),
	'f',
	'projection.wait() does not report it caught up');

$node->restart;
append_events(1, 'Pausable');
ok($node->wait_caught_up($db, 'other'), 'after a restart the worker runs');
$st = $node->status($db, 'pausable', [qw(state lag_events)]);
is_deeply($st, { state => 'paused', lag_events => 6 },
	'the projection is still paused after a restart');
is($node->safe_psql($db, 'SELECT count(*) FROM pause_model'), '2',
	'and still applied nothing');

$node->safe_psql($db, "SELECT projection.resume('pausable')");
ok($node->wait_caught_up($db, 'pausable'), 'resume() catches up');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM projection.events e WHERE event_type = 'Pausable' AND NOT EXISTS "
		  . '(SELECT FROM pause_model m WHERE m.pos = e.global_position)'),
	'0',
	'every event it missed is applied');
is($node->safe_psql($db, 'SELECT count(*) FROM pause_model'), '8', 'once');

# ---------------------------------------------------------------------
# a projection resumed while the worker isolates a failing event
# ---------------------------------------------------------------------
# The worker replays a failed round in chunks of 32 events, each its own
# transaction.  A projection resumed meanwhile shows up in a later chunk with
# a checkpoint below it: it must sit that replay out (and catch up later),
# not take the chunk's events and skip the ones before.
$node->safe_psql(
	$db, q{
CREATE TABLE careful_model (pos bigint PRIMARY KEY);
CREATE TABLE resumed_model (pos bigint PRIMARY KEY);
-- raises on a poison event; blocks (shared advisory lock 4343) on a marked one
CREATE FUNCTION careful_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'careful_block')::boolean THEN
		PERFORM pg_advisory_xact_lock_shared(4343);
	END IF;
	IF (e.data->>'careful_poison')::boolean THEN
		RAISE EXCEPTION 'careful poison %', e.global_position;
	END IF;
	INSERT INTO public.careful_model VALUES (e.global_position);
END
$$;
CREATE FUNCTION resumed_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.resumed_model VALUES (e.global_position) $$;
SELECT projection.create('careful', 'careful_h', ARRAY['Careful'], on_error => 'skip');
SELECT projection.create('resumed', 'resumed_h', ARRAY['Careful']);
});
append_events(3, 'Careful');
ok($node->wait_caught_up($db, 'resumed'), 'both projections run');
$node->safe_psql($db, "SELECT projection.pause('resumed')");
my $blocker = $node->background_psql($db);
$blocker->query_safe('SELECT pg_advisory_lock(4343)');
# 100 events in one transaction: the 10th is poison, the 60th blocks; the
# first round fails at the 10th, and the careful replay blocks in its
# second chunk
$node->safe_psql($db,
	    "SELECT projection.append('careful-' || i, 'Careful', "
	  . "jsonb_build_object('careful_poison', i = 10, 'careful_block', i = 60)) "
	  . "FROM generate_series(1, 100) i");
ok( $node->poll_query_until(
		$db,
		"SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343 AND NOT granted)"
	),
	'the careful replay is blocked in its second chunk');
$node->safe_psql($db, "SELECT projection.resume('resumed')");
$blocker->query_safe('SELECT pg_advisory_unlock(4343)');
$blocker->quit;
ok($node->wait_caught_up($db, 'careful'), 'the careful replay ends');
ok($node->wait_caught_up($db, 'resumed'), 'the resumed projection catches up');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM projection.events e WHERE event_type = 'Careful' AND NOT EXISTS "
		  . '(SELECT FROM resumed_model m WHERE m.pos = e.global_position)'),
	'0',
	'the resumed projection missed no event');
is($node->safe_psql($db, 'SELECT count(*) FROM resumed_model'), '103', 'and applied each once');
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'careful'"),
	'1', 'the poison event is a dead letter of the other projection');
is($node->safe_psql($db, 'SELECT count(*) FROM careful_model'), '102',
	'which applied every other event once');

$node->stop('fast');
done_testing();
