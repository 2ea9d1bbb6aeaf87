
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

my $db = 'postgres';
my $node = start_node('main');
$node->create_exactly_once_tables($db);
$node->safe_psql(
	$db, q{
-- at the positions of block_at, the handler blocks (on the test's lock)
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

sub bulk_append { return $node->bulk_append($db, @_); }
sub check_exactly_once { return $node->check_exactly_once($db, 'counter', @_); }
sub blocked_worker_pid { return $node->blocked_worker_pid('the worker is blocked in the middle of a batch'); }

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
