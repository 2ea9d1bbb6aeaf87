# test/t/030_worker_pool.pl -- workers from a shared pool, on demand.
#
# On the default settings (max_worker_processes 8, projection.max_workers 4,
# projection.worker_idle_timeout 10 s), many databases, each with an async
# projection, all get their events applied exactly once although far fewer
# workers may run at once; a database holds a worker only while it has work;
# an idle worker leaves and a commit brings one back; a database without
# async projections starts no worker; a group waiting for a slot shows in
# projection.status; the launcher says nothing about databases without the
# extension, and nothing alarming after DROP DATABASE.
#
# POOL_DATABASES sets how many databases (default 200; the README's
# performance section gives the time this takes).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $ndbs = $ENV{POOL_DATABASES} || 200;
my $max_workers = 4;

my $node = new_node('pool');
# back to the server's and the extension's defaults for the pool
$node->append_conf(
	'postgresql.conf', q{
max_worker_processes = 8
projection.worker_idle_timeout = '10s'
});
$node->start;

is($node->safe_psql('postgres', 'SHOW projection.max_workers'),
	$max_workers, 'projection.max_workers has its default');

# a database without the extension, present from the start
$node->safe_psql('postgres', 'CREATE DATABASE noext');

# a template with an async projection; nothing is ever appended there
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->create_ext('tmpl');
$node->safe_psql(
	'tmpl', q{
CREATE TABLE seen (n int, pos bigint PRIMARY KEY);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ((e.data->>'n')::int, e.global_position) $$;
SELECT projection.create('p', 'h', mode => 'async');
});

my @dbs = map { "d$_" } 1 .. $ndbs;
# one psql for all of them (a psql process per database costs more than the
# CREATE DATABASE)
$node->safe_psql('postgres', join('', map { "CREATE DATABASE $_ TEMPLATE tmpl;\n" } @dbs));
pass("$ndbs databases with an async projection");

# three events in every database, one database after the other: the
# launcher serves them max_workers at a time
# each database's append in its own session and transaction, all in one psql
# (\c); after every 20th, a look at how many workers run
my $script = '';
for my $i (0 .. $#dbs)
{
	$script .= "\\c $dbs[$i]\n"
	  . q{SELECT count(*) AS appended FROM (SELECT projection.append('s', 'E', json_build_object('n', n)::jsonb) FROM generate_series(1, 3) n) a \gset}
	  . "\n";
	$script .= "\\c postgres\n"
	  . q{SELECT 'workers ' || count(*) FROM pg_stat_activity WHERE backend_type = 'projection worker';}
	  . "\n"
	  if $i % 20 == 0;
}
my $max_seen = 0;
for my $line (split /\n/, $node->safe_psql('postgres', $script))
{
	next unless $line =~ /^workers (\d+)$/;
	$max_seen = $1 if $1 > $max_seen;
}

my $applied = $node->poll_each(\@dbs,
	q{SELECT count(*) = 3 AND count(DISTINCT n) = 3 AND min(n) = 1 AND max(n) = 3 FROM seen});
is($applied, $ndbs, "all $ndbs databases have their three events applied");
my $exactly_once = grep { $_ eq 't' } $node->psql_each(\@dbs,
	q{SELECT (SELECT count(*) FROM seen) = 3 AND position = 3 AND lag_events = 0 FROM projection.status WHERE name = 'p';});
is($exactly_once, $ndbs, 'each exactly once, and every checkpoint at 3');
ok($max_seen <= $max_workers,
	"never more than projection.max_workers workers at once (saw $max_seen)");

my $log = slurp_file($node->logfile);
unlike($log, qr/could not start a projection worker/,
	'no background worker start failed on the default max_worker_processes');
unlike($log, qr/max_worker_processes \(\d+\) is too small/,
	'the defaults fit max_worker_processes: no sizing WARNING');

# --- an idle worker leaves and a commit brings one back --------------------
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET projection.worker_idle_timeout = '200ms'; SELECT pg_reload_conf()});
ok($node->wait_for_no_worker('d1'), 'd1 holds no worker');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'projection worker'}),
	'no database holds a worker once all are idle');
# the last databases' workers left when idle for the timeout (10 s, or
# 200 ms if still there when it shrank); d1's gave its slot to a later
# database long before, and said so
like(
	slurp_file($node->logfile),
	qr/projection worker \d+ for database "d\d+" stopping: idle for (10000|200) ms/,
	'the idle workers say why they left');
like(
	slurp_file($node->logfile),
	qr/projection worker \d+ for database "d1" stopping: its pool slot is wanted by another database/,
	'and the one of d1 why it left earlier');

my $offset = -s $node->logfile;
$node->safe_psql('d1', q{SELECT projection.append('s', 'E', '{"n": 4}')});
ok($node->poll_query_until('d1', q{SELECT count(*) = 4 FROM seen}),
	'the next append in d1 is applied');
like(
	slurp_file($node->logfile, $offset),
	qr/starting worker \d+ for database "d1": async work to apply/,
	'by a worker started for it at once');
is($node->safe_psql('d1', q{SELECT count(*) FROM seen WHERE n = 4}),
	'1', 'once');

# --- no worker, no wake-up where nothing is async ---------------------------
$node->safe_psql('postgres', 'CREATE DATABASE inl');
$node->create_ext('inl');
$node->safe_psql(
	'inl', q{
CREATE TABLE seen (n int);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ((e.data->>'n')::int) $$;
SELECT projection.create('p', 'h', mode => 'inline');
});
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->create_ext('plain');
$node->safe_psql('postgres', 'CREATE DATABASE paused');
$node->create_ext('paused');
$node->safe_psql(
	'paused', q{
CREATE TABLE seen (n int);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ((e.data->>'n')::int) $$;
SELECT projection.create('p', 'h', mode => 'async');
});
ok($node->wait_for_no_worker('paused'), 'the new async projection caught up and its worker left');
$node->safe_psql('paused', q{SELECT projection.pause('p')});

$offset = -s $node->logfile;
for my $db (qw(inl plain paused))
{
	$node->safe_psql($db,
		q{SELECT projection.append('s' || n, 'E', json_build_object('n', n)::jsonb) FROM generate_series(1, 20) n});
	$node->safe_psql($db, q{SELECT projection.append('t', 'E', '{"n": 0}')}) for 1 .. 5;
}
is($node->safe_psql('inl', 'SELECT count(*) FROM seen'), '25', 'the inline projection applied its events');
# a database that does get work afterwards shows the launcher has run since
$node->safe_psql('d2', q{SELECT projection.append('s', 'E', '{"n": 4}')});
ok($node->poll_query_until('d2', q{SELECT count(*) = 4 FROM seen}), 'd2 applied its event');
my $since = slurp_file($node->logfile, $offset);
unlike($since, qr/database "(inl|plain|paused)"/,
	'no worker was started (or logged about) for databases without a running async projection');
like($since, qr/starting worker \d+ for database "d2"/, 'while d2 got one');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'projection worker' AND datname IN ('inl', 'plain', 'paused')}),
	'0',
	'none of them holds a worker');

# resuming the paused projection is async work: it gets a worker and catches up
$node->safe_psql('paused', q{SELECT projection.resume('p')});
ok($node->poll_query_until('paused', q{SELECT count(*) = 25 FROM seen}),
	'the resumed projection catches up');

# --- waiting for a slot shows in projection.status ---------------------------
# four databases whose handlers wait for a lock the test holds keep every
# slot busy (busy workers are not asked to leave); a fifth must wait
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET projection.worker_idle_timeout = '1h'; SELECT pg_reload_conf()});
my @busy = @dbs[ 10 .. 10 + $max_workers - 1 ];
my @holders;
for my $db (@busy)
{
	$node->safe_psql(
		$db, q{
CREATE TABLE gate ();
CREATE OR REPLACE FUNCTION h(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM FROM public.gate;
	INSERT INTO public.seen VALUES ((e.data->>'n')::int, e.global_position);
END $$;
});
	my $h = $node->background_psql($db);
	$h->query_safe('BEGIN');
	$h->query_safe('LOCK TABLE gate IN ACCESS EXCLUSIVE MODE');
	push @holders, $h;
	$node->safe_psql($db, q{SELECT projection.append('s', 'E', '{"n": 5}')});
}
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = } . $max_workers
		  . q{ FROM pg_stat_activity WHERE backend_type = 'projection worker' AND wait_event_type = 'Lock'}),
	'every pool slot is held by a busy worker');
my $waiter = $dbs[20];
$node->safe_psql($waiter, q{SELECT projection.append('s', 'E', '{"n": 5}')});
ok( $node->poll_query_until($waiter,
		q{SELECT waiting_for_worker FROM projection.status WHERE name = 'p'}),
	'projection.status says the projection waits for a worker slot');
is($node->safe_psql($waiter, q{SELECT count(*) FROM seen}), '3', 'and it has not applied the event yet');
$_->query_safe('ROLLBACK') for @holders;
$_->quit for @holders;
ok($node->poll_query_until($waiter, q{SELECT count(*) = 4 FROM seen}),
	'once a worker is free, the waiting database gets one');
ok( $node->poll_query_until($waiter,
		q{SELECT NOT waiting_for_worker FROM projection.status WHERE name = 'p'}),
	'and no longer waits');
for my $db (@busy)
{
	ok($node->poll_query_until($db, q{SELECT count(*) = 4 FROM seen}), "$db applied its event");
}

# --- DROP DATABASE of a database whose worker runs: nothing alarming ---------
$offset = -s $node->logfile;
my $victim = $dbs[30];
$node->safe_psql($victim, q{SELECT projection.append('s', 'E', '{"n": 6}')});
ok($node->wait_for_worker($victim), "$victim has a worker");
my $dropped_at = -s $node->logfile;
$node->safe_psql('postgres', "DROP DATABASE $victim");
# more work elsewhere makes the launcher look at the demand table again
$node->safe_psql($dbs[31], q{SELECT projection.append('s', 'E', '{"n": 6}')});
ok($node->poll_query_until($dbs[31], q{SELECT count(*) = 4 FROM seen}), "$dbs[31] goes on");
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET projection.worker_idle_timeout = '200ms'; SELECT pg_reload_conf()});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'projection worker'}),
	'every worker left');
$since = slurp_file($node->logfile, $offset);
like($since, qr/for database "$victim" stopping: a database command needs the database/,
	'the worker of the dropped database left, saying why');
unlike($since, qr/FATAL/, 'no FATAL line after DROP DATABASE');
unlike(slurp_file($node->logfile, $dropped_at), qr/starting worker \d+ for database "$victim"/,
	'no worker started for it again');

$log = slurp_file($node->logfile);
unlike($log, qr/"noext"/, 'the launcher never mentioned the database without the extension');
unlike($log, qr/WARNING/, 'no WARNING from start to end');

$node->stop;
done_testing();
