
# test/t/006_ordering.pl -- under concurrent appends an async projection sees
# every committed event once, in global_position order, and is not held back
# by transactions that append nothing.
#
# The handler raises unless positions strictly increase (the projection
# would then fail), and records every position it is given under a primary
# key (a repeat would fail it too).  projection.naptime is one hour, so every
# wait relies on the worker being woken.  Covers:
#   - an event committed behind an open appender that then rolls back is
#     applied at once (the abort must wake the worker);
#   - scripted interleavings with background sessions: a transaction holding
#     an early position open while later ones commit (the worker must wait,
#     then apply both in order), rolled-back appends and rolled-back
#     savepoints (gaps the worker must pass), a session that takes a position
#     and sleeps before committing while others commit after it;
#   - pgbench clients appending concurrently (pairs of events, 20% rolled
#     back, bulk INSERTs with rolled-back savepoints), first while the worker
#     applies as they go, then while a session holds an early position open;
#   - bystanders that must not hold the projection back: idle in transaction
#     without and with an xid, a writer of another table, a REPEATABLE READ
#     reader, a prepared transaction, a session with an xid in another
#     database, and an appender in another database with the extension; an
#     appending transaction cannot be prepared.
# At the end the recorded positions are exactly the committed events.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
# the safety-net poll is out of the picture: every wait below relies on the
# worker being woken (by commits, and by the end of a transaction it waits for)
$node->append_conf('postgresql.conf', 'projection.naptime = 3600000');
$node->start;

my $db = 'ord';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->create_ext($db);
$node->create_ext('other');
$node->safe_psql(
	$db, q{
CREATE TABLE seen (pos bigint PRIMARY KEY, seq bigserial UNIQUE);
CREATE TABLE side (x int);
CREATE FUNCTION ord_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	last bigint;
BEGIN
	SELECT max(pos) INTO last FROM public.seen;
	IF last IS NOT NULL AND e.global_position <= last THEN
		RAISE EXCEPTION 'out of order: % after %', e.global_position, last;
	END IF;
	INSERT INTO public.seen (pos) VALUES (e.global_position);
END
$$;
SELECT projection.create('ord', 'ord_h');
});
ok($node->wait_for_worker($db), "the workers of $db run");

# Is every event up to $pos applied?  Gives the worker $timeout to get there.
sub applied_up_to
{
	my ($pos, $timeout) = @_;

	return $node->safe_psql($db, "SELECT projection.wait('ord', $pos, '$timeout')");
}

sub append_in
{
	my ($session, $stream) = @_;

	return $session->query_safe("SELECT projection.append('$stream', 'Step', '{}')");
}

# ---------------------------------------------------------------------
# scripted interleavings
# ---------------------------------------------------------------------
my @s = map { $node->background_psql($db) } 1 .. 5;

# the worker waits for an open appender, which then rolls back: the events
# committed after it are applied without waiting for the poll
{
	$s[0]->query_safe('BEGIN');
	my $gap = append_in($s[0], 'g1');
	my $after = append_in($s[1], 'g2');
	is(applied_up_to($after, '1 s'), 'f',
		'an event committed behind an open appender waits for it');
	$s[0]->query_safe('ROLLBACK');
	is(applied_up_to($after, '30 s'), 't',
		'when that appender rolls back, the event is applied at once');
	is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE pos = $gap"),
		'0', 'and the rolled-back one is not');
}

$s[0]->query_safe('BEGIN');
my $p1 = append_in($s[0], 'a');
my $p2 = append_in($s[1], 'b');    # autocommit, after p1 was drawn
cmp_ok($p2, '>', $p1, 'a later position commits first');
is(applied_up_to($p2, '1 s'), 'f',
	'the worker does not apply it while the earlier position is in flight');
is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE pos >= $p1"),
	'0', 'nothing from the earlier position on was applied');

$s[2]->query_safe('BEGIN');
my $p3 = append_in($s[2], 'c');
$s[2]->query_safe('ROLLBACK');

$s[3]->query_safe('BEGIN');
my $p4 = append_in($s[3], 'd');
$s[3]->query_safe('SAVEPOINT sp');
my $p5 = append_in($s[3], 'd');
$s[3]->query_safe('ROLLBACK TO SAVEPOINT sp');
my $p6 = append_in($s[3], 'd');

my $p7 = append_in($s[1], 'b');
$s[0]->query_safe('COMMIT');
is(applied_up_to($p2, '30 s'), 't',
	'once the earlier transaction commits, both are applied');
is(applied_up_to($p7, '1 s'), 'f',
	'but not past a position another open transaction holds');
is( $node->safe_psql($db,
		"SELECT string_agg(pos::text, ',' ORDER BY pos) FROM seen WHERE pos >= $p1"),
	"$p1,$p2", 'so far exactly the two, in order (the rolled-back one passed)');

# a transaction takes a position and sleeps before its commit; others commit
# later positions meanwhile
$s[4]->query_until(
	qr/drawn/, qq{
BEGIN;
SELECT projection.append('e', 'Step', '{}');
\\echo drawn
SELECT pg_sleep(1);
COMMIT;
});
my $p9 = append_in($s[1], 'b');
$s[3]->query_safe('COMMIT');
my $p10 = append_in($s[1], 'b');
$s[4]->query_safe('SELECT 1');    # returns once the sleeper has committed
is(applied_up_to($p10, '30 s'), 't', 'everything is applied in the end');
is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE pos IN ($p3, $p5)"),
	'0', 'rolled-back positions were never applied');
$_->quit for @s;

# ---------------------------------------------------------------------
# pgbench clients: first while the worker applies as they go, then while a
# session holds an early position open
# ---------------------------------------------------------------------
my %scripts = (
	'pairs@5' => q{
\set r random(1, 100)
\set s random(1, 20)
BEGIN;
SELECT projection.append('t-' || :s, 'Step', '{}');
SELECT pg_sleep(random() * 0.005);
SELECT projection.append('t-' || :s, 'Step', '{}');
\if :r <= 20
ROLLBACK;
\else
COMMIT;
\endif
},
	'bulk@1' => q{
\set r random(1, 100)
BEGIN;
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'bulk-' || :client_id, 'Bulk', jsonb_build_object('i', i) FROM generate_series(1, 10) i;
SAVEPOINT sp;
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'bulk-' || :client_id, 'Bulk', jsonb_build_object('i', i) FROM generate_series(1, 3) i;
\if :r <= 30
ROLLBACK TO SAVEPOINT sp;
\endif
COMMIT;
},);

# pgbench wants distinct script file names for each run
sub run_pgbench
{
	my ($run, $transactions) = @_;
	my $total = 8 * $transactions;

	$node->pgbench(
		"-n -c 8 -j 4 -t $transactions",
		0,
		[qr{processed: $total/$total}],
		[qr{^$}],
		"pgbench: concurrent appenders ($run)",
		{ map { ("006_${run}_$_" => $scripts{$_}) } keys %scripts },
		$db);
	return;
}

run_pgbench('live', 200);
ok($node->wait_caught_up($db, 'ord'), 'the projection catches up with the clients');

my $holder = $node->background_psql($db);
$holder->query_safe('BEGIN');
my $held = append_in($holder, 'held');
run_pgbench('held', 40);
is(applied_up_to($node->max_position($db), '1 s'), 'f',
	'the projection waits for the early position held open during the run');
is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE pos >= $held"),
	'0', 'nothing after it was applied');
$holder->query_safe('COMMIT');
$holder->quit;
ok($node->wait_caught_up($db, 'ord'), 'after its commit the projection catches up');

# ---------------------------------------------------------------------
# bystanders
# ---------------------------------------------------------------------
my %by = (
	'idle in transaction, no xid' => [ $db, 'BEGIN', 'SELECT 1' ],
	'idle in transaction with an xid' => [ $db, 'BEGIN', 'SELECT txid_current()' ],
	'writer of another table' => [ $db, 'BEGIN', 'INSERT INTO side VALUES (1)' ],
	'REPEATABLE READ reader of the events' => [
		$db, 'BEGIN ISOLATION LEVEL REPEATABLE READ',
		'SELECT count(*) FROM projection.events'
	],
	'xid in another database' => [ 'postgres', 'BEGIN', 'SELECT txid_current()' ],
	'appender in another database' => [
		'other', 'BEGIN', "SELECT projection.append('x', 'Other', '{}')"
	],);
my %open;
# a prepared transaction holds its xid until COMMIT PREPARED
$node->safe_psql($db,
	"BEGIN; INSERT INTO side VALUES (2); PREPARE TRANSACTION 'pj_bystander';");
$by{'prepared transaction'} = [];
# an appending transaction cannot be prepared (its events could not be
# ordered): it fails and leaves nothing behind
my ($ret, $out, $err) = $node->psql($db,
	"BEGIN; SELECT projection.append('prep', 'Step', '{}'); PREPARE TRANSACTION 'pj_appender';"
);
like($err, qr/cannot PREPARE a transaction that has appended events/,
	'PREPARE TRANSACTION of an appending transaction is refused');
is($node->safe_psql($db, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'pj_appender'"),
	'0', 'and nothing is left prepared');
for my $what (sort keys %by)
{
	my ($where, @sql) = @{ $by{$what} };

	next unless defined $where;
	$open{$what} = $node->background_psql($where);
	$open{$what}->query_safe($_) for @sql;
}
for my $what (sort keys %by)
{
	my $pos = $node->safe_psql($db, "SELECT projection.append('by', 'Step', '{}')");
	is(applied_up_to($pos, '60 s'), 't',
		"not held back by a bystander ($what, among others)");
}
$open{$_}->query_safe('ROLLBACK') for keys %open;
$open{$_}->quit for keys %open;
$node->safe_psql($db, "COMMIT PREPARED 'pj_bystander'");

# ---------------------------------------------------------------------
# every committed event exactly once, in order
# ---------------------------------------------------------------------
ok($node->wait_caught_up($db, 'ord'), 'the projection is caught up');
my $st = $node->status($db, 'ord', [qw(state last_error)]);
is_deeply($st, { state => 'running', last_error => '' },
	'it never saw a position out of order or twice');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.events e FULL JOIN seen s ON s.pos = e.global_position
 WHERE s.pos IS NULL OR e.global_position IS NULL}),
	'0',
	'the applied positions are exactly the committed events');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM (SELECT pos, lag(pos) OVER (ORDER BY seq) AS prev FROM seen) x
 WHERE prev >= pos}),
	'0',
	'and were applied in increasing order');
cmp_ok($node->safe_psql($db, 'SELECT count(*) FROM seen'), '>', 2000,
	'over a few thousand events');

$node->stop('fast');
done_testing();
