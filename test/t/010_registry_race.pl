# test/t/010_registry_race.pl -- a change to a projection and the events
# committed with it are applied together, never with the old definition.
#
# A committing transaction becomes visible before it sends its cache
# invalidations, and its commit wakes the worker in between: a worker round
# could read the transaction's events with a snapshot that sees them while
# its cached registry still held the old definition.  An event of a type
# just added with projection.on() was then passed over by the projection
# for good, and a projection created together with an event started a
# round late.  Each case is repeated, since the window is short.
#
# One worker runs every projection; projection.naptime is one hour, so every
# round below is started by a commit's wake-up.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $rounds = 40;

my $db = 'postgres';
my $node = start_node('main', conf => q(
projection.workers_per_database = 1
projection.naptime = 3600000
));
$node->wait_for_worker($db);
$node->safe_psql(
	$db, q{
CREATE TABLE seen (name text, pos bigint, xid xid8 NOT NULL, PRIMARY KEY (name, pos));
SELECT projection.create('grows', NULL, tables => '{seen}', start_from => 'end');
SELECT projection.on('grows', 'T0',
  $$INSERT INTO seen VALUES ('grows', $1.global_position, pg_current_xact_id())$$);
CREATE FUNCTION see_new(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.seen VALUES ('new-' || e.event_type, e.global_position, pg_current_xact_id()) $$;
CREATE FUNCTION see_old(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.seen VALUES ('old', e.global_position, pg_current_xact_id()) $$;
SELECT projection.create('old', 'see_old', tables => '{seen}', start_from => 'end');
});

#
# 1. projection.on() adds a handler for a new event type, and an event of
#    that type is appended in the same transaction
#
my @positions;
for my $i (1 .. $rounds)
{
	my $out = $node->safe_psql(
		$db, qq{
BEGIN;
SELECT projection.on('grows', 'T$i',
  \$\$INSERT INTO seen VALUES ('grows', \$1.global_position, pg_current_xact_id())\$\$);
SELECT projection.append('s-$i', 'T$i', '{}');
COMMIT;
});
	push @positions, (split /\n/, $out)[-1];
}
ok($node->wait_caught_up($db, 'grows'), 'grows caught up');
is( $node->safe_psql(
		$db, qq{
SELECT count(*) FROM seen WHERE name = 'grows' AND pos IN (@{[ join ', ', @positions ]})}),
	$rounds,
	'every event appended with the handler for its type was applied');
is($node->status($db, 'grows', [qw(state)])->{state},
	'running', 'grows is still running');

#
# 2. a projection created together with an event: the worker starts it in
#    the round that applies the event to the others
#
my @created;
for my $i (1 .. $rounds)
{
	my $out = $node->safe_psql(
		$db, qq{
BEGIN;
SELECT projection.create('new_$i', 'see_new', '{N$i}', tables => '{seen}', start_from => 'end');
SELECT projection.append('n-$i', 'N$i', '{}');
COMMIT;
});
	push @created, (split /\n/, $out)[-1];
}
ok($node->wait_caught_up($db, 'old'), 'old caught up');
my $all_caught_up = 1;
$all_caught_up &&= $node->wait_caught_up($db, "new_$_") for (1 .. $rounds);
ok($all_caught_up, 'every new projection caught up');
is( $node->safe_psql(
		$db, qq{
SELECT count(*) FROM unnest('{@{[ join ',', @created ]}}'::bigint[]) WITH ORDINALITY AS c(pos, i)
  JOIN seen n ON n.name = 'new-N' || c.i AND n.pos = c.pos
  JOIN seen o ON o.name = 'old' AND o.pos = c.pos
 WHERE n.xid = o.xid}),
	$rounds,
	'each new projection applied the event created with it in the same round as the others');

done_testing();
