# test/t/115_wait_other_types.pl -- projection.wait() on a position whose
# event the projection does not take.
#
# A projection's checkpoint moves past events of other types only when its
# worker group runs a round: wait(name, position) on such a position must
# still return true, whether the group's worker runs or has left.  Today an
# append asks for a worker in every group with a running async projection,
# whatever the event types; this test pins what wait() promises, for any
# change that leaves the groups of other types asleep.  Two worker groups:
# "a" (id 1, group 1) takes type A, "b" (id 2, group 0) takes type B.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'w';
my $node = start_node('wait_types', db => $db, conf => q{
projection.workers_per_database = 2
projection.worker_idle_timeout = 0
});
$node->safe_psql(
	$db, q{
CREATE TABLE seen (name text, pos bigint);
CREATE FUNCTION ha(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ('a', e.global_position) $$;
CREATE FUNCTION hb(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES ('b', e.global_position) $$;
SELECT projection.create('a', 'ha', event_types => '{A}', mode => 'async');
SELECT projection.create('b', 'hb', event_types => '{B}', mode => 'async');
});
is($node->safe_psql($db, q{SELECT string_agg(name || ':' || (id % 2), ',' ORDER BY name) FROM projection.projections}),
	'a:1,b:0', 'the projections are in two worker groups');

# an event only "a" takes, with no worker running
ok($node->wait_for_no_worker($db), 'no worker runs');
my $pos = $node->safe_psql($db, q{SELECT projection.append('s', 'A', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('a', $pos, '60 s')"), 't', 'a applied its event');
is($node->safe_psql($db, "SELECT projection.wait('b', $pos, '60 s')"), 't',
	'wait() on b returns true for a position of a type b does not take');
is($node->safe_psql($db, "SELECT position >= $pos FROM projection.status WHERE name = 'b'"), 't',
	"b's checkpoint passed the event");
is($node->safe_psql($db, q{SELECT string_agg(name, ',' ORDER BY name) FROM seen}), 'a',
	'only a applied it');

# the same for several events in one transaction, once every worker has left
ok($node->wait_for_no_worker($db), 'the workers left once caught up');
$node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.append('s', 'A', '{}');
SELECT projection.append('t', 'A', '{}');
COMMIT;
});
$pos = $node->safe_psql($db, 'SELECT max(global_position) FROM projection.events');
is($node->safe_psql($db, "SELECT projection.wait('b', $pos, '60 s')"), 't',
	'wait() on b returns true after two events of another type');
is($node->safe_psql($db, "SELECT projection.wait('a', $pos, '60 s')"), 't', 'a applied them');
is($node->safe_psql($db, q{SELECT count(*) FILTER (WHERE name = 'a') || '/' || count(*) FILTER (WHERE name = 'b') FROM seen}),
	'3/0', 'a applied three events, b none');

# and an event of b's type: a's wait returns too
ok($node->wait_for_no_worker($db), 'no worker runs again');
$pos = $node->safe_psql($db, q{SELECT projection.append('s', 'B', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('a', $pos, '60 s')"), 't',
	'wait() on a returns true for a position of a type a does not take');
is($node->safe_psql($db, "SELECT projection.wait('b', $pos, '60 s')"), 't', 'b applied its event');

$node->stop;
done_testing();
