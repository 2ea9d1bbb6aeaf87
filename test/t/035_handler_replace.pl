
# test/t/035_handler_replace.pl -- off() and the replace idiom (off, then
# on, in one transaction) take effect from the next event, in the worker
# and in the inline appenders of other sessions.
#
# Covers: an async projection's statement replaced while the worker runs
# (events appended while the replacement is uncommitted wait for it): every
# event applied before it by the old statement only, every later one by the
# new one only, each exactly once; off() of the
# last statement of a type makes the worker pass those events; a session
# that appended (and so cached the registry) before another session replaced
# or removed an inline projection's statement applies the new set at its
# next append, also inside a transaction it had open across the change.

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

# ---------------------------------------------------------------------
# async: replace in the worker
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE applied (pos bigint, via text);
SELECT projection.create('rep_async', NULL, tables => '{applied}');
SELECT projection.on('rep_async', 'Rep',
	$$INSERT INTO public.applied VALUES (($1).global_position, 'v1')$$);
SELECT projection.on('rep_async', 'Other',
	$$INSERT INTO public.applied VALUES (($1).global_position, 'other')$$);
});
$node->safe_psql($db,
	"SELECT projection.append('r-' || i, 'Rep', '{}') FROM generate_series(1, 50) i");
ok($node->wait_caught_up($db, 'rep_async'), 'the worker applied the first events');

# the replacement, uncommitted, holds the projection's registry row as any
# management call does: the worker leaves the projection alone until the
# commit, and then applies the waiting events with the new statement
my $applied_v1 = $node->max_position($db);
my $bg = $node->background_psql($db);
$bg->query_safe(q{BEGIN});
$bg->query_safe(q{SELECT projection.off('rep_async', 'Rep')});
$bg->query_safe(
	q{SELECT projection.on('rep_async', 'Rep', $$INSERT INTO public.applied VALUES (($1).global_position, 'v2')$$)}
);
$node->safe_psql($db,
	"SELECT projection.append('r-' || i, 'Rep', '{}') FROM generate_series(51, 60) i");
$bg->query_safe(q{COMMIT});
$node->safe_psql($db,
	"SELECT projection.append('r-' || i, 'Rep', '{}') FROM generate_series(61, 80) i");
ok($node->wait_caught_up($db, 'rep_async'), 'the worker applied the later events');

is( $node->safe_psql(
		$db, qq{
SELECT count(*) FILTER (WHERE via = 'v1' AND pos <= $applied_v1) || '/' ||
       count(*) FILTER (WHERE via = 'v2' AND pos > $applied_v1) || '/' ||
       count(*) || '/' || count(DISTINCT pos)
  FROM applied WHERE via IN ('v1', 'v2')}),
	'50/30/80/80',
	'v1 before the replacement, v2 for every event after it, every event once');

# off() of the only statement of a type: its events pass
$node->safe_psql($db, q{SELECT projection.off('rep_async', 'Rep')});
$node->safe_psql($db,
	"SELECT projection.append('r-' || i, 'Rep', '{}') FROM generate_series(81, 90) i");
$node->safe_psql($db, "SELECT projection.append('o-1', 'Other', '{}')");
ok($node->wait_caught_up($db, 'rep_async'), 'the worker passes the removed type');
is( $node->safe_psql(
		$db, q{SELECT count(*) FILTER (WHERE via IN ('v1', 'v2')) || '/' || count(*) FILTER (WHERE via = 'other') FROM applied}),
	'80/1',
	'after off(), events of that type are no longer applied; other types still are');

# ---------------------------------------------------------------------
# inline: another session's appends see the change at their next event
# ---------------------------------------------------------------------
$node->safe_psql(
	$db, q{
CREATE TABLE inline_applied (pos bigint, via text);
SELECT projection.create('rep_inline', NULL, mode => 'inline', tables => '{inline_applied}');
SELECT projection.on('rep_inline', 'Inl',
	$$INSERT INTO public.inline_applied VALUES (($1).global_position, 'v1')$$);
});
my $app = $node->background_psql($db);
$app->query_safe(q{SELECT projection.append('i-1', 'Inl', '{}')});

# replaced by this session: the other one's next append runs v2
$node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.off('rep_inline', 'Inl');
SELECT projection.on('rep_inline', 'Inl',
	$$INSERT INTO public.inline_applied VALUES (($1).global_position, 'v2')$$);
COMMIT;
});
$app->query_safe(q{SELECT projection.append('i-2', 'Inl', '{}')});
is( $node->safe_psql($db, q{SELECT string_agg(via, ',' ORDER BY pos) FROM inline_applied}),
	'v1,v2', 'another session applies the replacement from its next append');

# inside a transaction open across the change
$app->query_safe(q{BEGIN});
$app->query_safe(q{SELECT projection.append('i-3', 'Inl', '{}')});
$node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.off('rep_inline', 'Inl');
SELECT projection.on('rep_inline', 'Inl',
	$$INSERT INTO public.inline_applied VALUES (($1).global_position, 'v3')$$);
COMMIT;
});
$app->query_safe(q{SELECT projection.append('i-4', 'Inl', '{}')});
$app->query_safe(q{COMMIT});
is( $node->safe_psql($db, q{SELECT string_agg(via, ',' ORDER BY pos) FROM inline_applied}),
	'v1,v2,v2,v3',
	'an open transaction applies the replacement from its next append');

# removed: the other session's next append applies nothing
$node->safe_psql($db, q{SELECT projection.off('rep_inline', 'Inl')});
$app->query_safe(q{SELECT projection.append('i-5', 'Inl', '{}')});
is($node->safe_psql($db, q{SELECT count(*) FROM inline_applied}),
	'4', 'after off(), another session applies no statement for that type');
# and the event was appended
is($node->safe_psql($db, q{SELECT count(*) FROM projection.events WHERE stream_id = 'i-5'}),
	'1', 'the append itself went through');

$app->quit;
$bg->quit;
$node->stop;
done_testing();
