
# test/t/041_batch_poison.pl -- a poison event inside a batch of an async
# projection whose handler is a batch statement (projection.on_batch).
#
# The batch fails as a whole; the worker applies it again event by event
# (the same statement over one-row batches, in subtransactions), so that
# on_error applies to the one failing event:
#   - on_error 'stop': the projection fails at exactly that event, with
#     every event before it applied; after the cause is fixed, resume()
#     goes on from it;
#   - on_error 'skip': the event is a dead letter, every other one is
#     applied.
# After the bad batch, the next ones are set-based again (a log of batch
# sizes shows batches of more than one event).

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
$node->safe_psql(
	$db, q{
-- the poison: events whose "i" is listed here
CREATE TABLE poison (i int PRIMARY KEY);
INSERT INTO poison VALUES (1500);
CREATE FUNCTION check_event(pos bigint, i int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF EXISTS (SELECT FROM public.poison p WHERE p.i = check_event.i) THEN
		RAISE EXCEPTION 'poison event %', pos USING ERRCODE = '22023';
	END IF;
	RETURN pos;
END
$$;
});

foreach my $mode ('stop', 'skip')
{
	$node->safe_psql(
		$db, qq{
CREATE TABLE applied_$mode (pos bigint PRIMARY KEY);
CREATE TABLE sizes_$mode (n bigint NOT NULL, last bigint NOT NULL);
SELECT projection.create('p_$mode', NULL, '{Item}', tables => '{applied_$mode}',
						 on_error => '$mode');
SELECT projection.on_batch('p_$mode',
	'INSERT INTO public.applied_$mode (pos) SELECT public.check_event(global_position, (data->>''i'')::int) FROM batch');
SELECT projection.on_batch('p_$mode',
	'INSERT INTO public.sizes_$mode SELECT count(*), max(global_position) FROM batch');
});
}

# 3000 events, of which one is poison, in one statement
$node->safe_psql(
	$db, q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'item-' || i, 1, 'Item', jsonb_build_object('i', i) FROM generate_series(1, 3000) i;
});
my $first = $node->safe_psql($db, "SELECT min(global_position) FROM projection.events");
my $last = $node->max_position($db);
my $bad = $node->safe_psql($db,
	"SELECT global_position FROM projection.events WHERE data->>'i' = '1500'");

# ---------------------------------------------------------------------
# on_error 'stop'
# ---------------------------------------------------------------------
ok($node->wait_for_state($db, 'p_stop', 'failed'), "'stop': the projection fails");
my $st = $node->status($db, 'p_stop',
	[qw(state position last_error last_error_position last_error_sqlstate)]);
is($st->{position}, $bad - 1, "'stop': its checkpoint is just before the poison event");
is($st->{last_error_position}, $bad, "'stop': the error is the poison event's");
is($st->{last_error_sqlstate}, '22023', "'stop': with its SQLSTATE");
like($st->{last_error}, qr/poison event $bad/, "'stop': and its message");
is( $node->safe_psql(
		$db,
		"SELECT count(*) || ' ' || min(pos) || ' ' || max(pos) FROM applied_stop"),
	($bad - $first) . " $first " . ($bad - 1),
	"'stop': every event before the poison event is applied, none after it");

# fixed: resume goes on from the poison event, set-based again (once
# 'skip' has passed it: the fix is for both)
ok($node->wait_caught_up($db, 'p_skip', $last), "'skip' has caught up");
$node->safe_psql($db, 'DELETE FROM poison');
$node->safe_psql($db, "SELECT projection.resume('p_stop')");
ok($node->wait_caught_up($db, 'p_stop', $last), "'stop': after the fix it catches up");
is($node->safe_psql($db, "SELECT count(*) FROM applied_stop WHERE pos BETWEEN $first AND $last"),
	'3000', "'stop': every event is applied once");
cmp_ok($node->safe_psql($db, "SELECT max(n) FROM sizes_stop WHERE last > $bad"),
	'>', 1, "'stop': after the poison event, batches are set-based again");

# ---------------------------------------------------------------------
# on_error 'skip'
# ---------------------------------------------------------------------
ok($node->wait_caught_up($db, 'p_skip', $last), "'skip': the projection catches up");
is( $node->safe_psql(
		$db,
		"SELECT string_agg(global_position || ' ' || sqlstate || ' ' || error, ',') "
		  . "FROM projection.dead_letters WHERE name = 'p_skip'"),
	"$bad 22023 poison event $bad",
	"'skip': the poison event, and only it, is a dead letter");
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM applied_skip WHERE pos BETWEEN $first AND $last"),
	'2999', "'skip': every other event is applied");
is($node->safe_psql($db, "SELECT count(*) FROM applied_skip WHERE pos = $bad"),
	'0', "'skip': the poison event is not");
cmp_ok( $node->safe_psql(
		$db, "SELECT count(*) FROM sizes_skip WHERE n = 1 AND last BETWEEN $bad - 5 AND $bad + 5"),
	'>=', 5, "'skip': the events around the poison event were applied one by one");
# the poison event's batch was the whole backlog: the next ones come now
$node->safe_psql(
	$db, q{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'item-' || i, 2, 'Item', jsonb_build_object('i', i) FROM generate_series(1, 500) i;
});
ok($node->wait_caught_up($db, 'p_skip'), "'skip': it applies the next events");
cmp_ok($node->safe_psql($db, "SELECT max(n) FROM sizes_skip WHERE last > $last"),
	'>', 1, "'skip': after the poison event, batches are set-based again");
is($node->safe_psql($db, "SELECT count(*) FROM applied_skip WHERE pos > $last"),
	'500', "'skip': and apply every event");
is($node->status($db, 'p_skip')->{state}, 'running', "'skip': the projection is running");

$node->stop('fast');
done_testing();
