# test/t/014_rolled_back_wake.pl -- a transaction that stays open after its
# appends were all rolled back (to a savepoint, or by an EXCEPTION block)
# releases the async projections at once: the rollback wakes the worker that
# stopped before its positions.  projection.naptime is one hour, so only
# that wake-up can get the later events applied.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main', naptime_hour => 1);
$node->create_seen_projection($db);
ok($node->wait_for_worker($db), 'the workers run');

my $holder = $node->background_psql($db);

# ROLLBACK TO SAVEPOINT after another session's later event was committed
# (and found the holder's position in its way)
$holder->query_safe('BEGIN');
$holder->query_safe('SAVEPOINT sp');
$holder->query_safe(q{SELECT projection.append('holder', 'E', '{}')});
my $later = $node->safe_psql($db, q{SELECT projection.append('other', 'E', '{}')});
$holder->query_safe('ROLLBACK TO SAVEPOINT sp');
is($node->safe_psql($db, "SELECT projection.wait('p', $later, '60 s')"),
	't', 'the rollback to a savepoint releases the projection');

# the same with an append rolled back by an EXCEPTION block, in the same
# still open transaction: the block appends, then waits for an advisory lock
# while another session commits a later event, then raises
my $locker = $node->background_psql($db);
$locker->query_safe('SELECT pg_advisory_lock(42)');
$holder->query_until(qr/appending/, q{\echo appending
DO $$ BEGIN
	PERFORM projection.append('holder', 'E', '{}');
	PERFORM pg_advisory_lock(42);
	RAISE EXCEPTION 'undo';
EXCEPTION WHEN raise_exception THEN NULL;
END $$;
});
ok( $node->poll_query_until(
		$db, q{SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted}),
	'the EXCEPTION block has appended and waits');
my $after = $node->safe_psql($db, q{SELECT projection.append('other', 'E', '{}')});
$locker->query_safe('SELECT pg_advisory_unlock(42)');
is($node->safe_psql($db, "SELECT projection.wait('p', $after, '60 s')"),
	't', 'the EXCEPTION block\'s rollback releases the projection');
$locker->quit;

$holder->query_safe('COMMIT');
$holder->quit;
is($node->safe_psql($db, q{SELECT array_agg(pos ORDER BY pos) FROM seen}),
	"{$later,$after}", 'exactly the committed events are applied');

$node->stop;
done_testing();
