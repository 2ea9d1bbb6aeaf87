
# test/t/016_worker_errors.pl -- how the worker gets out of errors.
#
# Covers: a handler that always raises a "transient" SQLSTATE (40001) is
# retried a bounded number of times, then on_error decides: 'stop' fails
# the projection with that error, 'skip' dead-letters each event, and
# another projection of the same worker keeps applying; a worker backing
# off after an error (a lock time-out outside any handler) exits at once
# when terminated, not at the end of its back-off; a poison event at the end
# of a long catch-up over events of other types is isolated by reading only
# the projection's event types (a structural count: the checkpoints the
# careful replay writes, one per chunk it commits).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::Local qw(timegm);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
# one worker per database: the projections of a database share it
$node->append_conf('postgresql.conf', 'projection.workers_per_database = 1');
$node->start;

# ---------------------------------------------------------------------
# a handler that always raises 40001
# ---------------------------------------------------------------------
my $db = 'postgres';
$node->create_ext($db);
$node->safe_psql(
	$db, q{
CREATE TABLE steady_model (pos bigint PRIMARY KEY);
CREATE FUNCTION always_40001(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'always' USING ERRCODE = '40001';
END
$$;
CREATE FUNCTION steady_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.steady_model VALUES (e.global_position) $$;
SELECT projection.create('tx_stop', 'always_40001', event_types => ARRAY['Tx']);
SELECT projection.create('tx_skip', 'always_40001', event_types => ARRAY['Tx'],
	on_error => 'skip');
SELECT projection.create('steady', 'steady_h');
});
my ($first) = split /\n/,
  $node->safe_psql($db,
	"SELECT projection.append('tx-' || i, 'Tx', '{}') FROM generate_series(1, 2) i");
$node->safe_psql($db,
	"SELECT projection.append('o-' || i, 'Other', '{}') FROM generate_series(1, 5) i");

ok($node->wait_for_state($db, 'tx_stop', 'failed'),
	"on_error 'stop': the projection fails after a few attempts");
my $st = $node->status($db, 'tx_stop',
	[qw(position last_error last_error_sqlstate last_error_position)]);
is_deeply(
	$st,
	{
		position => $first - 1,
		last_error => 'always',
		last_error_sqlstate => '40001',
		last_error_position => $first
	},
	'at the first event, with the handler\'s error');
ok( $node->poll_query_until(
		$db,
		"SELECT count(*) = 2 AND bool_and(sqlstate = '40001') "
		  . "FROM projection.dead_letters WHERE name = 'tx_skip'"),
	"on_error 'skip': each event becomes a dead letter");
ok($node->wait_caught_up($db, 'tx_skip'), 'and the projection goes on to the end');
ok($node->wait_caught_up($db, 'steady'), 'the other projection of the worker keeps applying');
is($node->safe_psql($db, 'SELECT count(*) FROM steady_model'),
	'7', 'every event once');

# ---------------------------------------------------------------------
# the back-off ends at once on SIGTERM
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE backoff');
# the worker's own lock waits time out, outside any handler
$node->safe_psql('postgres', "ALTER DATABASE backoff SET lock_timeout = '20ms'");
$node->create_ext('backoff');
$node->safe_psql(
	'backoff', q{
CREATE TABLE m (pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.m VALUES (e.global_position) $$;
SELECT projection.create('p', 'h');
SELECT projection.append('s', 'E', '{}');
});
ok($node->wait_caught_up('backoff', 'p'), 'the projection runs');
my ($pid) = $node->worker_pids('backoff');

my $holder = $node->background_psql('backoff');
$holder->query_safe('BEGIN');
# the worker waits for registry locks without a time-out (cancels, a lock
# time-out's included, only reach it inside a batch); the checkpoint write
# at the end of a batch is its own statement, outside any handler
$holder->query_safe('LOCK TABLE projection.checkpoints IN SHARE MODE');
my $offset = -s $node->logfile;
$node->safe_psql('backoff', "SELECT projection.append('s', 'E', '{}')");
# the back-off doubles from 100 ms to its longest, 10 s
$offset = $node->wait_for_log(
	qr/\[$pid\][^\n]*retrying in 10000 ms after error: canceling statement due to lock timeout/,
	$offset);
my $log = slurp_file($node->logfile);
my @retry = ($log =~ /^(\S+ \S+)[^\n]*\[$pid\][^\n]*retrying in 10000 ms/mg);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$node->wait_for_log(qr/\[$pid\][^\n]*terminating background worker/, $offset);
$log = slurp_file($node->logfile, $offset);
my ($exited) = ($log =~ /^(\S+ \S+)[^\n]*\[$pid\][^\n]*terminating background worker/m);

# log_line_prefix starts with %m: "YYYY-MM-DD HH:MM:SS.mmm"
sub log_ms
{
	my ($ts) = @_;
	my ($y, $mo, $d, $h, $mi, $s, $ms) =
	  ($ts =~ /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)\.(\d+)$/)
	  or die "unexpected log timestamp \"$ts\"";
	return timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms;
}
my $slept = log_ms($exited) - log_ms($retry[-1]);
note("the worker exited $slept ms into its 10000 ms back-off");
cmp_ok($slept, '<', 10000, 'a terminated worker leaves its back-off at once');

$holder->query_safe('COMMIT');
$holder->quit;
$node->safe_psql('backoff', "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_caught_up('backoff', 'p'), 'a new worker takes over');

# ---------------------------------------------------------------------
# a poison event at the end of a long catch-up
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE catchup');
$node->create_ext('catchup');
$node->safe_psql(
	'catchup', q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'n-' || i, 1, 'Noise', '{}' FROM generate_series(1, 100000) i;
SELECT projection.append('poison', 'Poison', '{}');
CREATE FUNCTION poisoned_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'poison';
END
$$;
SELECT projection.create('poisoned', 'poisoned_h', event_types => ARRAY['Poison'],
	on_error => 'skip');
});
ok( $node->poll_query_until(
		'catchup',
		"SELECT count(*) = 1 FROM projection.dead_letters WHERE name = 'poisoned'"),
	'the poison event becomes a dead letter');
ok($node->wait_caught_up('catchup', 'poisoned'), 'and the catch-up completes');

# a worker flushes its statistics at exit at the latest
($pid) = $node->worker_pids('catchup');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
	'the worker exited');
my $checkpoints = $node->safe_psql('catchup',
	"SELECT n_tup_ins FROM pg_stat_user_tables "
	  . "WHERE schemaname = 'projection' AND relname = 'checkpoints'");
note("checkpoints written during the catch-up: $checkpoints");
# read unfiltered, 32 events a transaction, the range would take 3,000 and more
cmp_ok($checkpoints, '<', 50,
	'the careful replay reads only the projection\'s event types');

$node->stop;
done_testing();
