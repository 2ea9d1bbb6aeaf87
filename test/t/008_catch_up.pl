# test/t/008_catch_up.pl -- a projection that is far behind (new with
# start_from 'beginning', or resumed after a long pause) catches up in
# batches of its own, and the projections that are up to date keep getting
# new events meanwhile instead of waiting until it has caught up with them.
#
# One worker runs every projection of the database and a batch is 10 events,
# so the test can tell rounds apart: each handler logs the position and the
# transaction (pg_current_xact_id) that applied it, and one worker round is
# one transaction.  An event appended in the same transaction as the resume
# (or the create) of the laggard becomes visible together with it; the up to
# date projection must apply it in the laggard's first round, not after the
# laggard's last.  A handler error in that round is replayed event by event
# for the others' batch only, and nothing is lost or applied twice.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main', conf => q(
projection.workers_per_database = 1
projection.batch_size = 10
));
$node->wait_for_worker($db);
$node->safe_psql(
	$db, q{
CREATE TABLE log (name text, pos bigint, xid xid8 NOT NULL, PRIMARY KEY (name, pos));
CREATE FUNCTION log_a(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.log VALUES ('a', e.global_position, pg_current_xact_id()) $$;
CREATE FUNCTION log_b(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.log VALUES ('b', e.global_position, pg_current_xact_id()) $$;
CREATE FUNCTION log_c(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.log VALUES ('c', e.global_position, pg_current_xact_id()) $$;
SELECT projection.create('a', 'log_a', '{A}', tables => '{log}', start_from => 'end');
SELECT projection.create('b', 'log_b', '{A,B}', tables => '{log}', start_from => 'end');
});

# Appends n events of type t, one statement.
sub append_events
{
	my ($t, $n) = @_;

	$node->safe_psql($db,
		"INSERT INTO projection.events (stream_id, event_type, data) "
		  . "SELECT '$t-' || i, '$t', '{}' FROM generate_series(1, $n) i");
	return;
}

append_events('A', 5);
ok($node->wait_caught_up($db, 'a'), 'a caught up');
ok($node->wait_caught_up($db, 'b'), 'b caught up');

#
# 1. a resumed projection, 100 events behind
#
$node->safe_psql($db, "SELECT projection.pause('a')");
append_events('A', 60);
append_events('B', 40);    # not a's type: a reads only its own events
ok($node->wait_caught_up($db, 'b'), 'b keeps up while a is paused');
my $paused_at = $node->status($db, 'a', [qw(position)])->{position};
my $new_pos = $node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.resume('a');
SELECT projection.append('late-b', 'B', '{}');
COMMIT;
});
$new_pos = (split /\n/, $new_pos)[-1];
ok($node->wait_caught_up($db, 'a'), 'a catches up after its resume');
ok($node->wait_caught_up($db, 'b'), 'b applied the new event');

is( $node->safe_psql(
		$db, qq{
SELECT count(*) = 60 AND bool_and(e.event_type = 'A') AND count(DISTINCT l.pos) = count(*)
  FROM log l JOIN projection.events e ON e.global_position = l.pos
 WHERE l.name = 'a' AND l.pos > $paused_at}),
	't', 'a applied its 60 events once, and only events of its type');
cmp_ok(
	$node->safe_psql($db,
		"SELECT count(DISTINCT xid) FROM log WHERE name = 'a' AND pos > $paused_at"),
	'>=', 6, 'in batches of 10, one transaction each');
is( $node->safe_psql(
		$db, qq{
SELECT (SELECT xid FROM log WHERE name = 'b' AND pos = $new_pos)
     = (SELECT xid FROM log WHERE name = 'a' AND pos > $paused_at ORDER BY pos LIMIT 1)}),
	't',
	"b applied the event appended with a's resume in a's first catch-up round, not after a had caught up");
is( $node->safe_psql(
		$db, q{
SELECT bool_and(ok) FROM (
  SELECT xid >= lag(xid) OVER (PARTITION BY name ORDER BY pos) IS NOT FALSE AS ok FROM log) s}),
	't', 'each projection applied its events in position order');

#
# 2. a new projection created with start_from 'beginning'
#
my $c_pos = $node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.create('c', 'log_c', '{B}', tables => '{log}', start_from => 'beginning',
                         if_not_empty => 'keep');  -- log is shared: the other projections' rows stay
SELECT projection.append('late-b2', 'B', '{}');
COMMIT;
});
$c_pos = (split /\n/, $c_pos)[-1];
ok($node->wait_caught_up($db, 'c'), 'c catches up');
ok($node->wait_caught_up($db, 'b'), 'b applied the event appended with the create of c');
is( $node->safe_psql(
		$db, q{
SELECT count(*) = (SELECT count(*) FROM projection.events WHERE event_type = 'B')
       AND count(*) = count(DISTINCT pos)
  FROM log WHERE name = 'c'}),
	't', 'c applied every B event once');
is( $node->safe_psql(
		$db, qq{
SELECT (SELECT xid FROM log WHERE name = 'b' AND pos = $c_pos)
     = (SELECT xid FROM log WHERE name = 'c' ORDER BY pos LIMIT 1)}),
	't', "b applied the event appended with c's create in c's first catch-up round");
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM log WHERE name = 'b'}),
	$node->safe_psql(
		$db, q{SELECT count(*) FROM projection.events WHERE event_type IN ('A', 'B')}),
	'b applied every A and B event once');

#
# 3. a handler error in the others' batch while a laggard catches up: the
#    event-by-event replay covers that batch only; the laggard's batch rolls
#    back with the round and is applied again later, once
#
$node->safe_psql(
	$db, q{
CREATE FUNCTION log_f(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'poison')::boolean THEN
		RAISE EXCEPTION 'poison %', e.global_position;
	END IF;
	INSERT INTO public.log VALUES ('f', e.global_position, pg_current_xact_id());
END $$;
SELECT projection.create('f', 'log_f', '{A,B}', tables => '{log}', on_error => 'skip',
                         if_not_empty => 'keep');  -- log is shared
});
ok($node->wait_caught_up($db, 'f'), 'f caught up');
$node->safe_psql($db, "SELECT projection.pause('a')");
append_events('A', 50);
ok($node->wait_caught_up($db, 'f'), 'f keeps up while a is paused');
my $poison = $node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.resume('a');
SELECT projection.append('poison', 'B', '{"poison": true}');
COMMIT;
});
$poison = (split /
/, $poison)[-1];
ok($node->wait_caught_up($db, 'f'), 'f goes past the poison event');
ok($node->wait_caught_up($db, 'a'), 'a catches up');
is( $node->safe_psql(
		$db, "SELECT array_agg(global_position) FROM projection.dead_letters WHERE name = 'f'"),
	"{$poison}", 'the poison event is f\'s only dead letter');
is( $node->safe_psql(
		$db, q{
SELECT (SELECT count(*) FROM log WHERE name = 'a')
     = (SELECT count(*) FROM projection.events WHERE event_type = 'A')}),
	't', 'a applied every A event once');
is( $node->safe_psql(
		$db, q{
SELECT count(*) FROM projection.events e
 WHERE e.event_type IN ('A', 'B') AND e.global_position > (SELECT min(pos) FROM log WHERE name = 'f')
   AND NOT EXISTS (SELECT FROM log l WHERE l.name = 'f' AND l.pos = e.global_position)}),
	'1', 'f applied every event after its creation once, but the poison one');

$node->stop;
done_testing();
