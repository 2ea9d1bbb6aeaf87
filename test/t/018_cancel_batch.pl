
# test/t/018_cancel_batch.pl -- a slow batch holds nothing hostage.
#
# A handler that sleeps for ten minutes on one event keeps its worker's
# batch (and the registry rows it locked) open.  pause(), drop() and DROP
# EXTENSION must still finish at once: each runs here with statement_timeout
# = 20 s, which they would hit if they waited for the batch.  The cancelled
# batch rolls back (its event is not applied), the worker does not count it
# as a failure (no retry back-off, no restart), the other projection of the
# same worker goes on, and nothing is applied twice.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

# one worker: the stalled projection and the other one share its batches
my $db = 'postgres';
my $node = start_node('main', conf => 'projection.workers_per_database = 1');

$node->safe_psql(
	$db, q{
CREATE TABLE applied (name text, pos bigint, PRIMARY KEY (name, pos));
CREATE FUNCTION stall_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.applied VALUES ('stall', e.global_position);
	IF e.event_type = 'Stall' THEN
		PERFORM pg_sleep(600);
	END IF;
END $$;
CREATE FUNCTION other_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.applied VALUES ('other', e.global_position) $$;
SELECT projection.create('stall', 'stall_h', start_from => 'end');
SELECT projection.create('other', 'other_h', start_from => 'end');
});
ok($node->wait_for_worker($db), 'worker running');

# Appends one event; returns its position.
sub append_event
{
	my ($type) = @_;
	return $node->safe_psql($db, "SELECT projection.append('s', '$type', '{}')");
}

# Waits until the worker sleeps in the stalled handler.
sub wait_for_stall
{
	return $node->poll_query_until($db,
		"SELECT count(*) = 1 FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND wait_event = 'PgSleep'");
}

# Runs a statement that must not wait for the stalled batch.
sub at_once
{
	my ($sql, $what) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql($db, "SET statement_timeout = '20s'; $sql");
	is($ret, 0, "$what finishes while the handler sleeps")
	  or diag($stderr);
	return;
}

my $pos1 = append_event('Plain');
ok($node->wait_caught_up($db, 'stall', $pos1), 'both projections applied a plain event');
ok($node->wait_caught_up($db, 'other', $pos1), 'and the other one too');
my ($worker) = $node->worker_pids($db);

# ---------------------------------------------------------------------
# pause
# ---------------------------------------------------------------------
my $log_offset = -s $node->logfile;
my $stall = append_event('Stall');
ok(wait_for_stall(), 'the handler sleeps in the batch of the Stall event');

# a role that does not own the projection (or the extension) cannot cancel
# the batch: its calls wait or fail like any other, and the batch goes on
$node->safe_psql($db, 'CREATE ROLE regress_evil LOGIN');
my $batch_sql = "SELECT xact_start FROM pg_stat_activity WHERE pid = $worker";
my $batch = $node->safe_psql($db, $batch_sql);
my ($ret, $stdout, $stderr) = $node->psql(
	$db, "SET lock_timeout = '300ms'; SELECT projection.pause('stall')",
	extra_params => [ '-U', 'regress_evil' ]);
like($stderr, qr/lock timeout/, "a non-owner's pause() waits for the batch like any locker");
($ret, $stdout, $stderr) = $node->psql(
	$db, 'DROP EXTENSION projection CASCADE',
	extra_params => [ '-U', 'regress_evil' ]);
like($stderr, qr/must be owner of extension projection/,
	"a non-owner's DROP EXTENSION is refused by PostgreSQL");
is($node->safe_psql($db, $batch_sql), $batch, 'and neither cancelled the batch');

at_once("SELECT projection.pause('stall')", 'pause()');
is($node->safe_psql($db, "SELECT state FROM projection.status WHERE name = 'stall'"),
	'paused', 'the projection is paused');
is( $node->safe_psql(
		$db, "SELECT count(*) FROM applied WHERE name = 'stall' AND pos = $stall"),
	'0',
	'the Stall event is not applied (its batch rolled back)');
my $pos2 = append_event('Plain');
ok($node->wait_caught_up($db, 'other', $pos2),
	'the other projection applies the Stall event and the next one');
is($node->safe_psql($db, "SELECT position FROM projection.status WHERE name = 'stall'"),
	$pos1, 'the paused projection stays before the Stall event');
is(($node->worker_pids($db))[0], $worker, 'the same worker goes on (no restart)');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/retrying/, 'the cancelled batch is not a failure: no retry back-off');

# ---------------------------------------------------------------------
# drop (the resumed projection stalls again on the same event)
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.resume('stall')");
ok(wait_for_stall(), 'resumed, the handler sleeps again on the Stall event');
at_once("SELECT projection.drop('stall')", 'drop()');
is($node->safe_psql($db, "SELECT count(*) FROM projection.status WHERE name = 'stall'"),
	'0', 'the projection is dropped');
my $pos3 = append_event('Plain');
ok($node->wait_caught_up($db, 'other', $pos3), 'the other projection goes on');
is( $node->safe_psql(
		$db, "SELECT count(*) FROM applied WHERE name = 'stall' AND pos >= $stall"),
	'0',
	'the dropped projection applied nothing after its pause');
is( $node->safe_psql(
		$db,
		"SELECT string_agg(pos::text, ',' ORDER BY pos) FROM applied WHERE name = 'other' AND pos > $pos1"
	),
	"$stall,$pos2,$pos3",
	'the other projection applied each event once, in order');

# ---------------------------------------------------------------------
# DROP EXTENSION
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.create('stall', 'stall_h', start_from => 'end')");
append_event('Stall');
ok(wait_for_stall(), 'a new stalling projection sleeps in its batch');
$log_offset = -s $node->logfile;
at_once('DROP EXTENSION projection CASCADE', 'DROP EXTENSION');
ok($node->wait_for_no_worker($db), 'the worker leaves');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/stopping: extension "projection" is not installed there/,
	'it leaves because the extension is gone');
unlike($log, qr/projection worker.*exited with exit code 1/, 'without an error');

$node->stop;
done_testing();
