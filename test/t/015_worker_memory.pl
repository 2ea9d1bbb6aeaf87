
# test/t/015_worker_memory.pl -- the worker's memory: what it frees, and
# what bounds it.
#
# Covers: a couple of hundred async projections catching up together in one
# database are all applied, each event once, and the server never
# crash-restarts (the round's projection array was read after SPI_finish
# freed it: a crash on an assert-enabled server); careful mode (a handler
# failing on every event, on_error 'skip') does not keep its errors: the
# worker's memory does not grow with the number of dead letters; a batch of
# events of a few MB each is bounded by projection.batch_bytes, in the
# worker and in a rebuild, and every event is still applied once.
#
# Memory is read with pg_log_backend_memory_contexts(): its "Grand total"
# line in the server log.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

# one worker: every projection of the database shares it
my $db = 'postgres';
my $node = start_node('main', conf => 'projection.workers_per_database = 1');
my $started = $node->safe_psql($db, 'SELECT pg_postmaster_start_time()');

# The "Grand total" bytes of every memory-context dump that process $pid
# logged after byte $offset of the server log, in log order.
sub logged_totals
{
	my ($pid, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);

	return ($log =~ /\[$pid\][^\n]*Grand total: (\d+) bytes/g);
}

# The total memory of process $pid now: asks it to log its memory contexts
# and waits for the dump.
sub memory_of
{
	my ($pid) = @_;
	my $offset = -s $node->logfile;

	$node->safe_psql($db, "SELECT pg_log_backend_memory_contexts($pid)");
	$node->wait_for_log(qr/\[$pid\][^\n]*Grand total: \d+ bytes/, $offset);
	my @totals = logged_totals($pid, $offset);
	return $totals[0];
}

sub max_of
{
	my $max = 0;
	for (@_) { $max = $_ if $_ > $max; }
	return $max;
}

# ---------------------------------------------------------------------
# a couple of hundred projections catching up at once
# ---------------------------------------------------------------------
my $nproj = 200;
$node->safe_psql(
	$db, q{
CREATE TABLE many_model (projection text, pos bigint, PRIMARY KEY (projection, pos));
SELECT projection.append('m-' || i, 'Tick', '{}') FROM generate_series(1, 50) i;
});
# one statement handler each, naming its projection, all created in one
# transaction so that they catch up together
$node->safe_psql(
	$db, qq{
DO \$\$
BEGIN
	FOR i IN 1..$nproj LOOP
		PERFORM projection.create('many_' || i, NULL, event_types => ARRAY['Tick']);
		PERFORM projection.on('many_' || i, 'Tick',
			format('INSERT INTO public.many_model VALUES (%L, (\$1).global_position)', 'many_' || i));
	END LOOP;
END
\$\$;
});
$node->safe_psql($db,
	"SELECT projection.append('m-' || i, 'Tick', '{}') FROM generate_series(51, 100) i");
ok( $node->poll_query_until(
		$db,
		"SELECT count(*) = $nproj FROM projection.status "
		  . "WHERE name LIKE 'many\\_%' AND state = 'running' AND lag_events = 0"),
	"all $nproj projections caught up");
is($node->safe_psql($db, 'SELECT count(*) FROM many_model'),
	$nproj * 100, 'every projection applied every event (once: the key says so)');
is($node->safe_psql($db, 'SELECT pg_postmaster_start_time()'),
	$started, 'the server never crash-restarted');
unlike(slurp_file($node->logfile), qr/terminated by signal|reinitializing/,
	'no process crashed');

my ($worker) = $node->worker_pids($db);

# ---------------------------------------------------------------------
# careful mode keeps no error: memory does not grow with dead letters
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE FUNCTION always_fails(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'cannot apply event %', e.global_position
		USING DETAIL = repeat('some detail ', 20);
END
$$;
SELECT projection.create('skipper', 'always_fails', event_types => ARRAY['Bad'],
	on_error => 'skip');
});

my $flood = 4000;
my $letters = 0;
my @memory;
for my $round (1 .. 2)
{
	$node->safe_psql($db,
		"SELECT projection.append('b-' || i, 'Bad', '{}') FROM generate_series(1, $flood) i");
	$letters += $flood;
	ok( $node->poll_query_until(
			$db,
			"SELECT count(*) = $letters FROM projection.dead_letters WHERE name = 'skipper'"),
		"flood $round: every event is a dead letter");
	$node->wait_caught_up($db, 'skipper');
	push @memory, memory_of($worker);
}
my $growth = $memory[1] - $memory[0];
note("worker memory after $flood and after "
	  . 2 * $flood
	  . " dead letters: @memory bytes");
cmp_ok($growth, '<', 1024 * 1024,
	"$flood more dead letters grow the worker's memory by less than 1 MB");

# ---------------------------------------------------------------------
# large events: batches bounded by bytes (worker and rebuild)
# ---------------------------------------------------------------------
# 30 events of 2 MB of random hex each, in one transaction: without the
# bound the worker reads them in one batch (60 MB and more)
$node->safe_psql(
	$db, q{
CREATE TABLE big_model (pos bigint PRIMARY KEY, len int NOT NULL);
-- logs the memory of the process applying it, while the batch is held
CREATE FUNCTION big_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_catalog.pg_log_backend_memory_contexts(pg_catalog.pg_backend_pid());
	INSERT INTO public.big_model VALUES (e.global_position, length(e.data->>'blob'));
END
$$;
SELECT projection.create('big', 'big_h', event_types => ARRAY['Big'], tables => '{big_model}');
});
my $offset = -s $node->logfile;
$node->safe_psql(
	$db, q{
SELECT projection.append('big-' || i, 'Big',
	jsonb_build_object('blob', (SELECT string_agg(md5(random()::text || i || j), '')
								FROM generate_series(1, 65536) j)))
FROM generate_series(1, 30) i;
});
ok($node->wait_caught_up($db, 'big'), 'the worker applied the large events');
is($node->safe_psql($db, 'SELECT count(*), min(len), max(len) FROM big_model'),
	'30|2097152|2097152', 'each of them once');
$node->wait_for_log(qr/\[$worker\][^\n]*Grand total/, $offset);
my $peak = max_of(logged_totals($worker, $offset));
note("worker memory while applying: at most $peak bytes");
cmp_ok($peak, '<', 40 * 1024 * 1024,
	"the worker's batch of large events is bounded (projection.batch_bytes = 8MB)");

$offset = -s $node->logfile;
my ($pid, $replayed) = split /\|/,
  $node->safe_psql($db, "SELECT pg_backend_pid(), projection.rebuild('big')");
is($replayed, '30', 'a rebuild replays the large events');
is($node->safe_psql($db, 'SELECT count(*) FROM big_model'), '30', 'once each');
$peak = max_of(logged_totals($pid, $offset));
note("rebuilding backend's memory while replaying: at most $peak bytes");
cmp_ok($peak, '>', 0, 'the rebuild logged its memory');
cmp_ok($peak, '<', 40 * 1024 * 1024, "the rebuild's batches are bounded too");

is($node->safe_psql($db, 'SELECT pg_postmaster_start_time()'),
	$started, 'still no crash-restart');

$node->stop;
done_testing();
