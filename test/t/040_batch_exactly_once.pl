
# test/t/040_batch_exactly_once.pl -- a crash at any moment neither loses nor
# repeats an event of an async projection whose handlers are batch
# statements (projection.on_batch).
#
# The batch statements are not idempotent: one adds the batch's size to a
# counter, the other inserts every event's position into a table whose
# primary key would reject a repeat (the projection would then fail, so its
# state is checked too).  Two crashes hit a catch-up of 60k events:
#   1. kill -9 of the worker while its batch statement is blocked (a
#      function it calls waits on an advisory lock the test holds): the
#      postmaster crash-restarts the whole server;
#   2. kill -9 of the worker wherever it happens to be, while it catches up.
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
# at the positions of block_at, the batch statement blocks in gate() (on the
# test's lock)
$node->create_gate($db);
$node->safe_psql(
	$db, q{
SELECT projection.create('counter', NULL, '{Incremented}', tables => '{counters,applied}',
						 start_from => 'end');
SELECT projection.on_batch('counter',
	'INSERT INTO public.applied (pos) SELECT global_position FROM batch WHERE public.gate(global_position)');
SELECT projection.on_batch('counter',
	'UPDATE public.counters SET n = n + (SELECT count(*) FROM batch) WHERE id = 1');
});

sub bulk_append { return $node->bulk_append($db, @_); }
sub check_exactly_once { return $node->check_exactly_once($db, 'counter', @_); }

# ---------------------------------------------------------------------
# 1. kill -9 of the worker while a batch statement is blocked
# ---------------------------------------------------------------------
my $holder = $node->background_psql($db);
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql($db, 'INSERT INTO block_at VALUES (30000)');
my $last = bulk_append(60_000);

my $pid = $node->blocked_worker_pid('the worker is blocked inside a batch statement');
my $done = $node->safe_psql($db, 'SELECT count(*) FROM applied');
cmp_ok($done, '>', 0, "some batches were committed before the crash ($done events)");
cmp_ok($done, '<', 30000, 'the batch with event 30000 was not');
is($node->safe_psql($db, 'SELECT n FROM counters'), $done,
	'the counter agrees with the committed batches');

my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the worker (pid $pid)");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $holder->quit; };
ok($node->wait_caught_up($db, 'counter'),
	'after the crash-restart the projection catches up');
check_exactly_once('kill -9 of the worker inside a batch statement');

# ---------------------------------------------------------------------
# 2. kill -9 of the worker wherever it is
# ---------------------------------------------------------------------
my $before = $node->safe_psql($db, 'SELECT count(*) FROM applied');
$last = bulk_append(60_000);
ok( $node->poll_query_until(
		$db, "SELECT count(*) > $before + 1000 FROM applied"),
	'the worker is catching up');
$pid = $node->safe_psql('postgres',
	    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'projection worker' "
	  . "AND datname = '$db' AND query LIKE 'projection: %' AND state = 'active' "
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
