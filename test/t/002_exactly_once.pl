
# test/t/002_exactly_once.pl -- a crash at any moment neither loses nor
# repeats an event of an async projection.
#
# The handler is not idempotent: it increments a counter and inserts the
# event's position into a table whose primary key would reject a repeat (the
# projection would then fail, so its state is checked too).  Three crashes
# hit a catch-up of more than 100k events:
#   1. kill -9 of the worker while it is blocked in the middle of a batch
#      (the handler waits on an advisory lock the test holds): the postmaster
#      crash-restarts the whole server;
#   2. an immediate stop in the same situation, later in the event store;
#   3. kill -9 of the worker wherever it happens to be, while it catches up.
# After each, the projection resumes and every event ends up applied exactly
# once.

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
$node->create_ext($db);
$node->safe_psql(
	$db, q{
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counters VALUES (1, 0);
CREATE TABLE applied (pos bigint PRIMARY KEY);
-- positions at which the handler first takes advisory lock 4242, shared:
-- while the test holds it, the worker blocks there, mid-batch
CREATE TABLE block_at (pos bigint PRIMARY KEY);
CREATE FUNCTION count_event(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT FROM public.block_at b WHERE b.pos = e.global_position) THEN
		PERFORM pg_advisory_xact_lock_shared(4242);
	END IF;
	UPDATE public.counters SET n = n + 1 WHERE id = 1;
	INSERT INTO public.applied (pos) VALUES (e.global_position);
END
$$;
});

# Appends $n events in one INSERT ... SELECT; returns the new last position.
my $streams = 0;

sub bulk_append
{
	my ($n) = @_;

	# fresh streams each time, so explicit stream versions never collide
	$node->safe_psql(
		$db, qq{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'counter-' || ($streams + i % 1000), i / 1000 + 1, 'Incremented',
	   jsonb_build_object('i', i)
  FROM generate_series(0, $n - 1) i;
});
	$streams += 1000;
	return $node->max_position($db);
}

# Every event applied exactly once, and the projection healthy.
sub check_exactly_once
{
	my ($what) = @_;

	is( $node->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM projection.events) || ' events, '
	|| (SELECT count(*) FROM applied) || ' applied, counter '
	|| (SELECT n FROM counters WHERE id = 1) || ', '
	|| (SELECT count(*) FROM projection.events e
		 WHERE NOT EXISTS (SELECT FROM applied a WHERE a.pos = e.global_position))
	|| ' missing, '
	|| (SELECT count(*) FROM applied a
		 WHERE NOT EXISTS (SELECT FROM projection.events e WHERE e.global_position = a.pos))
	|| ' unknown'
}),
		do
		{
			my $n = $node->safe_psql($db, 'SELECT count(*) FROM projection.events');
			"$n events, $n applied, counter $n, 0 missing, 0 unknown";
		},
		"$what: every event applied exactly once");
	my $st = $node->status($db, 'counter');
	is($st->{state}, 'running', "$what: the projection is running");
	is($st->{last_error}, '', "$what: no error recorded");
	is($st->{lag_events}, '0', "$what: no lag");
	# after a crash the sequence resumes up to 32 values further on (it logs
	# ahead), and the checkpoint may move past those never-used positions
	cmp_ok($st->{position}, '>=', $node->max_position($db),
		"$what: the checkpoint is at or past the last event");
	return;
}

# Waits until the worker applying "counter" is blocked on the test's
# advisory lock; returns its pid.
sub blocked_worker_pid
{
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity "
			  . "WHERE backend_type = 'projection worker' AND wait_event_type = 'Lock' "
			  . "AND wait_event = 'advisory'"),
		'the worker is blocked in the middle of a batch');
	return $node->safe_psql('postgres',
		    "SELECT pid FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND wait_event_type = 'Lock' "
		  . "AND wait_event = 'advisory'");
}

# ---------------------------------------------------------------------
# 1. kill -9 of the worker in the middle of a catch-up
# ---------------------------------------------------------------------
my $last = bulk_append(120_000);
cmp_ok($last, '>=', 120_000, 'more than 100k events to catch up with');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (40000), (160000)');

my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');

# created after the events: the projection starts by catching up
$node->safe_psql($db, "SELECT projection.create('counter', 'count_event')");
my $pid = blocked_worker_pid();
my $done = $node->safe_psql($db, 'SELECT count(*) FROM applied');
cmp_ok($done, '>', 0, "some batches were committed before the crash ($done events)");
cmp_ok($done, '<', 40000, 'the batch with event 40000 was not');
is($node->safe_psql($db, "SELECT state FROM projection.status WHERE name = 'counter'"),
	'catching_up', 'the projection is catching up');

my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
# its backend died in the crash-restart: writing to its psql may raise
# SIGPIPE (seen on the slower assert-enabled server)
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
ok($node->wait_caught_up($db, 'counter'),
	'after the crash-restart the projection catches up');
check_exactly_once('kill -9 of the worker mid catch-up');

# ---------------------------------------------------------------------
# 2. immediate stop in the middle of a backlog
# ---------------------------------------------------------------------
$holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$last = bulk_append(120_000);
cmp_ok($last, '>=', 240_000, 'another 120k events');
$pid = blocked_worker_pid();
$done = $node->safe_psql($db, 'SELECT count(*) FROM applied');
cmp_ok($done, '>', 120_000, "part of the backlog was applied ($done events)");
cmp_ok($done, '<', 160_000, 'the batch with event 160000 was not');

$node->stop('immediate');
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
$node->start;
ok($node->wait_caught_up($db, 'counter'),
	'after an immediate stop and a start the projection catches up');
check_exactly_once('immediate stop mid catch-up');

# ---------------------------------------------------------------------
# 3. kill -9 of the worker wherever it is
# ---------------------------------------------------------------------
my $before = $node->safe_psql($db, 'SELECT count(*) FROM applied');
$last = bulk_append(150_000);
ok( $node->poll_query_until(
		$db, "SELECT count(*) > $before + 1000 FROM applied"),
	'the worker is catching up');
# the worker that runs "counter" is the one in the middle of a batch
$pid = $node->safe_psql('postgres',
	    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'projection worker' "
	  . "AND datname = '$db' AND query LIKE 'projection: applying events%' "
	  . "ORDER BY pid LIMIT 1");
($pid) = $node->worker_pids($db) if $pid eq '';
$offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
ok($node->wait_caught_up($db, 'counter'),
	'after the crash-restart the projection catches up');
check_exactly_once('kill -9 of the worker at a random moment');

is($node->safe_psql($db, 'SELECT count(*) FROM projection.dead_letters'),
	'0', 'no dead letters');

$node->stop('fast');
done_testing();
