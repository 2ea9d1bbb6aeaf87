
# test/t/005_dump_restore.pl -- pg_dump and restore keep the event store,
# the projections, their checkpoints and dead letters, and projections
# resume where they were.
#
# The source database has events (appended one by one and bulk-inserted), an
# inline projection, an async projection owned by a plain role and paused
# mid-way (so it has lag), an async projection with statement handlers
# (projection.on), and an on_error 'skip' projection with dead letters.  It is
# dumped in custom format (restored with pg_restore --single-transaction) and
# in plain format (restored with psql -1).  In each copy: the same events with
# the same positions and versions, the same registry rows and checkpoints,
# the same dead letters and read models; a worker runs; resuming the paused
# projection catches up to the read model a from-scratch projection gives;
# nothing is applied twice; a new event gets a position above the restored
# ones and the next version of its stream.  Finally, a default pg_restore
# (no single transaction), and a pg_restore -j 2, of a database whose
# projection runs with a lag, slowed down in the middle: the copy still ends
# up like the source.

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

my $src = 'src';
$node->safe_psql('postgres', "CREATE DATABASE $src");
$node->safe_psql('postgres', 'CREATE ROLE regress_app LOGIN');
$node->create_ext($src);
$node->safe_psql(
	$src, q{
GRANT CREATE ON SCHEMA public TO regress_app;
GRANT SELECT, TRIGGER ON projection.events TO regress_app;  -- to create projections

-- inline: events per stream
CREATE TABLE inl_counts (stream_id text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION inl_h(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.inl_counts VALUES (e.stream_id, 1)
	ON CONFLICT (stream_id) DO UPDATE SET n = inl_counts.n + 1
$$;
SELECT projection.create('inl', 'inl_h', mode => 'inline',
						 tables => ARRAY['inl_counts']::regclass[]);

-- async, with statement handlers
CREATE TABLE stmt_balance (stream_id text PRIMARY KEY, balance numeric NOT NULL);
SELECT projection.create('stmt', NULL, tables => ARRAY['stmt_balance']::regclass[]);
SELECT projection.on('stmt', 'Deposited',
	$$INSERT INTO public.stmt_balance VALUES (($1).stream_id, (($1).data->>'amount')::numeric)
	  ON CONFLICT (stream_id) DO UPDATE SET balance = stmt_balance.balance + EXCLUDED.balance$$);
SELECT projection.on('stmt', 'Withdrawn',
	$$UPDATE public.stmt_balance SET balance = balance - (($1).data->>'amount')::numeric
	  WHERE stream_id = ($1).stream_id$$);

-- async, skips bad events; dl_model's key would turn a repeat into a dead letter
CREATE TABLE dl_model (pos bigint PRIMARY KEY);
CREATE FUNCTION dl_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'bad')::boolean THEN
		RAISE EXCEPTION 'bad event %', e.global_position USING ERRCODE = '22023';
	END IF;
	INSERT INTO public.dl_model VALUES (e.global_position);
END
$$;
SELECT projection.create('dl', 'dl_h', on_error => 'skip');
});

# async, owned by a plain role: a running history of every event
$node->safe_psql(
	$src, q{
CREATE TABLE asy_model (pos bigint PRIMARY KEY, stream_id text, version bigint,
						type text, seen_before bigint);
CREATE TABLE asy_fresh (LIKE asy_model INCLUDING ALL);
CREATE FUNCTION asy_h(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.asy_model
	SELECT e.global_position, e.stream_id, e.stream_version, e.event_type, count(*)
	  FROM public.asy_model
$$;
-- the same logic on another table, for a from-scratch replay later
CREATE FUNCTION asy_fresh_h(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.asy_fresh
	SELECT e.global_position, e.stream_id, e.stream_version, e.event_type, count(*)
	  FROM public.asy_fresh
$$;
SELECT projection.create('asy', 'asy_h', tables => ARRAY['asy_model']::regclass[]);
}, connstr => $node->connstr($src) . ' user=regress_app');

# $n events over 5 accounts, every 7th one bad; returns the last position
sub append_some
{
	my ($db, $n) = @_;

	return $node->safe_psql(
		$db, qq{
SELECT max(projection.append('acct-' || i % 5,
		CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
		jsonb_build_object('amount', i, 'bad', i % 7 = 0)))
  FROM generate_series(1, $n) i;
});
}

append_some($src, 40);
# bulk insert, versions assigned by the extension
$node->safe_psql(
	$src, q{
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'bulk-' || i % 3, 'Deposited', jsonb_build_object('amount', 100 + i)
  FROM generate_series(1, 20) i;
});
for my $p (qw(asy stmt dl))
{
	ok($node->wait_caught_up($src, $p), "source: $p caught up");
}
my $paused_at = $node->max_position($src);
$node->safe_psql($src, "SELECT projection.pause('asy')");
append_some($src, 30);
ok($node->wait_caught_up($src, 'dl'), 'source: dl caught up');
ok($node->wait_caught_up($src, 'stmt'), 'source: stmt caught up');
my $asy = $node->status($src, 'asy', [qw(state position lag_events)]);
is_deeply($asy, { state => 'paused', position => $paused_at, lag_events => 30 },
	'source: asy is paused with a lag');
cmp_ok($node->safe_psql($src, "SELECT count(*) FROM projection.dead_letters"),
	'>', 5, 'source: dl has dead letters');

# what is compared between the source and each copy
my %compare = (
	events => q{
SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', global_position, stream_id,
		stream_version, event_type, data, metadata, recorded_at), E'\n' ORDER BY global_position)
  FROM projection.events},
	registry => q{
SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', id, name, handler, event_types,
		mode, tables, on_error, owner, state, position, last_error), E'\n' ORDER BY id)
  FROM projection.projections},
	handlers => q{
SELECT string_agg(format('%s|%s|%s|%s', p.name, h.seq, h.event_type, h.statement), E'\n'
		ORDER BY p.name, h.seq)
  FROM projection.handlers h JOIN projection.projections p ON p.id = h.projection_id},
	status => q{
SELECT string_agg(format('%s|%s|%s|%s|%s', name, mode, state, position, lag_events), E'\n'
		ORDER BY name)
  FROM projection.status},
	dead_letters => q{
SELECT string_agg(format('%s|%s|%s|%s|%s|%s', name, global_position, event_type, stream_id,
		sqlstate, error), E'\n' ORDER BY name, global_position)
  FROM projection.dead_letters},
	inl_counts =>
	  q{SELECT string_agg(stream_id || ':' || n, ',' ORDER BY stream_id) FROM inl_counts},
	stmt_balance =>
	  q{SELECT string_agg(stream_id || ':' || balance, ',' ORDER BY stream_id) FROM stmt_balance},
	dl_model => q{SELECT string_agg(pos::text, ',' ORDER BY pos) FROM dl_model},
	asy_model => q{
SELECT string_agg(format('%s|%s|%s|%s|%s', pos, stream_id, version, type, seen_before), E'\n'
		ORDER BY pos)
  FROM asy_model},
	sequence =>
	  q{SELECT last_value FROM projection.events_global_position_seq},);
my %before = map { $_ => $node->safe_psql($src, $compare{$_}) } keys %compare;

# ---------------------------------------------------------------------
# dump in both formats, while asy is still paused
# ---------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/src.dump", '-d', $src ],
	'pg_dump -Fc');
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/src.sql", '-d', $src ],
	'pg_dump -Fp');

$node->safe_psql('postgres', 'CREATE DATABASE dst_custom');
$node->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', 'dst_custom', "$dir/src.dump"
	],
	'pg_restore --single-transaction');
$node->safe_psql('postgres', 'CREATE DATABASE dst_plain');
$node->command_ok(
	[
		'psql', '-X', '-q', '-1', '-v', 'ON_ERROR_STOP=1',
		'-d', 'dst_plain', '-f', "$dir/src.sql"
	],
	'plain dump restored with psql -1');

for my $dst (qw(dst_custom dst_plain))
{
	for my $what (sort keys %compare)
	{
		is($node->safe_psql($dst, $compare{$what}),
			$before{$what}, "$dst: $what as in the source");
	}
	ok($node->wait_for_worker($dst), "$dst: the worker runs");

	# nothing is applied twice: dl's key would make a repeat a dead letter
	my $pos = append_some($dst, 1);
	cmp_ok($pos, '>', $node->safe_psql($src, 'SELECT max(global_position) FROM projection.events'),
		"$dst: a new event gets a position above the restored ones");
	is( $node->safe_psql($dst,
			"SELECT stream_version FROM projection.events WHERE global_position = $pos"),
		$node->safe_psql($src,
			"SELECT max(stream_version) + 1 FROM projection.events WHERE stream_id = 'acct-1'"),
		"$dst: and the next version of its stream");
	is($node->safe_psql($dst, "SELECT n FROM inl_counts WHERE stream_id = 'acct-1'"),
		$node->safe_psql($src, "SELECT n + 1 FROM inl_counts WHERE stream_id = 'acct-1'"),
		"$dst: the inline projection applies it");
	ok($node->wait_caught_up($dst, 'dl'), "$dst: dl applies it");
	ok($node->wait_caught_up($dst, 'stmt'), "$dst: stmt applies it");
	is($node->safe_psql($dst, $compare{dead_letters}), $before{dead_letters},
		"$dst: no new dead letters (nothing applied twice)");
	is( $node->safe_psql($dst, 'SELECT count(*) FROM dl_model'),
		$node->safe_psql($src, 'SELECT count(*) + 1 FROM dl_model'),
		"$dst: dl applied just the new event");
	is($node->status($dst, 'asy')->{state}, 'paused', "$dst: asy is still paused");

	# resume the paused projection: it goes on from its checkpoint
	$node->safe_psql($dst, "SELECT projection.resume('asy')",
		connstr => $node->connstr($dst) . ' user=regress_app');
	ok($node->wait_caught_up($dst, 'asy'), "$dst: asy catches up after resume()");
}

# the source's own asy, resumed, and a from-scratch replay of the same logic
$node->safe_psql($src, "SELECT projection.resume('asy')",
	connstr => $node->connstr($src) . ' user=regress_app');
ok($node->wait_caught_up($src, 'asy'), 'source: asy catches up after resume()');
$node->safe_psql($src,
	"SELECT projection.create('asy_fresh', 'asy_fresh_h', tables => ARRAY['asy_fresh']::regclass[])",
	connstr => $node->connstr($src) . ' user=regress_app');
ok($node->wait_caught_up($src, 'asy_fresh'), 'source: a from-scratch projection catches up');
my $fresh = $node->safe_psql($src, $compare{asy_model} =~ s/asy_model/asy_fresh/r);
is($node->safe_psql($src, $compare{asy_model}), $fresh,
	'source: resumed asy equals the from-scratch replay');
for my $dst (qw(dst_custom dst_plain))
{
	# the copies got one more event (the last line); all before it is equal
	my @lines = split /\n/, $node->safe_psql($dst, $compare{asy_model});
	my $new = pop @lines;
	is(join("\n", @lines), $fresh,
		"$dst: resumed asy equals the from-scratch replay of the source");
	like($new, qr/\|acct-1\|/, "$dst: plus the event appended after the restore");
}

# ---------------------------------------------------------------------
# a default pg_restore (one transaction per step) of a database whose
# projection lags: the copy must end up like the source, even though the
# worker of the new database starts while the restore is still running.
# A CHECK constraint that waits on an advisory lock the test holds stands for
# a slow step (a big table) between the registry's data and the read model's
# indexes.
# ---------------------------------------------------------------------
# A source database whose projection "cnt" counts events into "counters",
# dumped (custom format, to $dir/$src.dump) while its worker is held in the
# middle of the last 5 of 15 events, so that the dump has a lag.  $gate is
# SQL creating what holds the restore back: it uses gate_ok(), which waits
# while the test holds advisory lock 9 in the destination database.
sub dump_lagging_source
{
	my ($src, $gate) = @_;

	$node->safe_psql('postgres', "CREATE DATABASE $src");
	$node->create_ext($src);
	$node->safe_psql(
		$src, q{
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION count_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	-- lets the test keep the source's worker in the middle of a batch
	PERFORM pg_advisory_xact_lock_shared(7);
	INSERT INTO public.counters VALUES (1, 1)
	ON CONFLICT (id) DO UPDATE SET n = counters.n + 1;
END
$$;
CREATE FUNCTION gate_ok(x int) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_lock_shared(9);
	PERFORM pg_advisory_unlock_shared(9);
	RETURN true;
END
$$;
SELECT projection.create('cnt', 'count_h');
SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 10);
} . $gate);
	ok($node->wait_caught_up($src, 'cnt'), "$src: the projection applies 10 events");
	my $lock = $node->background_psql($src);
	$lock->query_safe('SELECT pg_advisory_lock(7)');
	$node->safe_psql($src,
		"SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 5)");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = '$src' "
			  . "AND backend_type = 'projection worker' AND wait_event = 'advisory'"),
		"$src: the worker is in the middle of the next 5");
	is_deeply($node->status($src, 'cnt', [qw(state position lag_events)]),
		{ state => 'running', position => 10, lag_events => 5 },
		"$src: the projection runs with a lag");
	$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/$src.dump", '-d', $src ],
		"pg_dump -Fc of $src");
	$lock->query_safe('SELECT pg_advisory_unlock(7)');
	$lock->quit;
	ok($node->wait_caught_up($src, 'cnt'), "$src: the projection catches up");
	is($node->safe_psql($src, 'SELECT n FROM counters'), '15', "$src: 15 events counted");
	return;
}

dump_lagging_source(
	'src2', q{
CREATE TABLE gate (x int CHECK (gate_ok(x)));
INSERT INTO gate VALUES (1);
});

$node->safe_psql('postgres', 'CREATE DATABASE dst_default');
my $gate = $node->background_psql('dst_default');
$gate->query_safe('SELECT pg_advisory_lock(9)');
my ($restore_out, $restore_err) = ('', '');
my $restore = IPC::Run::start(
	[
		'pg_restore', '-d', $node->connstr('dst_default'),
		"$dir/src2.dump"
	],
	'>', \$restore_out, '2>', \$restore_err);
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = 'dst_default' "
		  . "AND backend_type = 'client backend' AND wait_event = 'advisory'"),
	'dst_default: pg_restore is in the middle of the data');
# give the new database's worker the chance to act on the half-restored copy
$node->safe_psql('dst_default', "SELECT projection.wait('cnt', 15, '3 s')");
$gate->query_safe('SELECT pg_advisory_unlock(9)');
$gate->quit;
ok($restore->finish, 'dst_default: pg_restore completes') or diag($restore_err);
ok($node->wait_for_worker('dst_default'), 'dst_default: the worker runs');
ok( $node->poll_query_until(
		'dst_default', "SELECT state <> 'running' OR lag_events = 0 "
		  . "FROM projection.status WHERE name = 'cnt'"),
	'dst_default: the projection settles');
# the worker leaves a restored projection alone until the restoring session
# has ended, so the lagging events land on the complete read model
is_deeply($node->status('dst_default', 'cnt', [qw(state last_error)]),
	{ state => 'running', last_error => '' },
	'dst_default: the projection runs, without error');
is($node->safe_psql('dst_default', 'SELECT n FROM counters'),
	'15', 'dst_default: the read model counts every event once');

# ---------------------------------------------------------------------
# pg_restore -j 2: two sessions restore the data and the indexes, and both
# live until the end of the restore's parallel part.  One of them is held
# back in an index build (its expression waits on an advisory lock the test
# holds) while the other restores the registry, the events and the read
# model; the worker must leave the projection alone until the restore is
# over, however complete the read model looks.
# ---------------------------------------------------------------------
dump_lagging_source(
	'src3', q{
CREATE TABLE gate (x int);
INSERT INTO gate VALUES (1);
ALTER FUNCTION gate_ok(int) IMMUTABLE;
CREATE INDEX gate_idx ON gate ((gate_ok(x)));
});

$node->safe_psql('postgres', 'CREATE DATABASE dst_parallel');
$gate = $node->background_psql('dst_parallel');
$gate->query_safe('SELECT pg_advisory_lock(9)');
($restore_out, $restore_err) = ('', '');
$restore = IPC::Run::start(
	[ 'pg_restore', '-j', '2', '-d', $node->connstr('dst_parallel'), "$dir/src3.dump" ],
	'>', \$restore_out, '2>', \$restore_err);
ok( $node->poll_query_until(
		'dst_parallel',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = 'dst_parallel' "
		  . "AND backend_type = 'client backend' AND wait_event = 'advisory' "
		  . "AND query LIKE 'CREATE INDEX gate_idx%'"),
	'dst_parallel: one pg_restore session waits in an index build');
ok( $node->poll_query_until(
		'dst_parallel',
		"SELECT n = 10 FROM counters WHERE id = 1"),
	'dst_parallel: the read model\'s rows are in');
ok( $node->poll_query_until(
		'dst_parallel',
		"SELECT count(*) = 1 FROM projection.projections p JOIN pg_stat_activity a "
		  . "ON a.pid = p.restored_pid AND a.backend_type = 'client backend' "
		  . "AND a.pid <> pg_backend_pid() WHERE p.name = 'cnt'"),
	'dst_parallel: the registry is restored, marked with a live restoring session');
# give the new database's worker the chance to act on the half-restored copy
$node->safe_psql('dst_parallel', "SELECT projection.wait('cnt', 15, '3 s')");
is_deeply($node->status('dst_parallel', 'cnt', [qw(state position last_error)]),
	{ state => 'running', position => 10, last_error => '' },
	'dst_parallel: the worker left the projection alone during the restore');
$gate->query_safe('SELECT pg_advisory_unlock(9)');
$gate->quit;
ok($restore->finish, 'dst_parallel: pg_restore -j 2 completes') or diag($restore_err);
ok($node->wait_caught_up('dst_parallel', 'cnt'), 'dst_parallel: the projection catches up');
is_deeply($node->status('dst_parallel', 'cnt', [qw(state last_error)]),
	{ state => 'running', last_error => '' },
	'dst_parallel: the projection runs, without error');
is($node->safe_psql('dst_parallel', 'SELECT n FROM counters'),
	'15', 'dst_parallel: the read model counts every event once');

$node->stop('fast');
done_testing();
