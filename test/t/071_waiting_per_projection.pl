# test/t/071_waiting_per_projection.pl -- projection.status says whether THIS
# projection waits for a worker slot.
#
# One pool slot (projection.max_workers = 1) and two worker groups: the
# worker of one group is busy in a handler that waits for a lock the test
# holds; a projection of the other group then has work and no slot.  Only
# that projection shows waiting_for_worker; the one whose group has its
# worker does not, and neither does a paused one.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('waiting', conf => q{
projection.max_workers = 1
projection.workers_per_database = 2
});
$node->safe_psql(
	$db, q{
CREATE TABLE gate ();
CREATE TABLE seen (name text, pos bigint);
CREATE FUNCTION slow(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM FROM public.gate;
	INSERT INTO public.seen VALUES ('busy', e.global_position);
END $$;
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ('other', e.global_position) $$;
-- id 1: group 1
SELECT projection.create('busy', 'slow', mode => 'async');
});

my $holder = $node->background_psql($db);
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE gate IN ACCESS EXCLUSIVE MODE');
my $pos = $node->safe_psql($db, q{SELECT projection.append('s', 'E', '{}')});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'projection worker' AND wait_event_type = 'Lock'}
	),
	'the only pool slot is held by the busy worker of group 1');

# id 2 (group 0), from the beginning: it has an event to apply and no slot;
# id 3 (group 1) is paused
$node->safe_psql(
	$db, q{
SELECT projection.create('other', 'h', mode => 'async');
SELECT projection.create('idle', 'h', mode => 'async');
SELECT projection.pause('idle');
});
ok( $node->poll_query_until($db,
		q{SELECT waiting_for_worker FROM projection.status WHERE name = 'other'}),
	'the projection whose group has no worker waits for a slot');
is( $node->safe_psql($db,
		q{SELECT name || '=' || waiting_for_worker FROM projection.status ORDER BY name COLLATE "C"}),
	"busy=false\nidle=false\nother=true",
	'the busy projection, whose group has its worker, and the paused one do not');
is($node->safe_psql($db, q{SELECT count(*) FROM seen}), '0', 'nothing is applied yet');

$holder->query_safe('ROLLBACK');
$holder->quit;
is($node->safe_psql($db, "SELECT projection.wait('busy', $pos, '60 s')"), 't', 'the busy worker finishes');
is($node->safe_psql($db, "SELECT projection.wait('other', $pos, '60 s')"),
	't', 'and the waiting projection gets the slot');
ok( $node->poll_query_until($db,
		q{SELECT count(*) = 0 FROM projection.status WHERE waiting_for_worker}),
	'then nothing waits');

$node->stop;
done_testing();
