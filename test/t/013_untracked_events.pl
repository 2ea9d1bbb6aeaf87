# test/t/013_untracked_events.pl -- events inserted without the position
# trigger (session_replication_role = replica, as a logical replication
# subscriber's apply worker runs) are not applied by async projections: their
# positions are above the sequence's last_value, which bounds every read of
# the worker.  That is not silent: the worker logs one WARNING naming the
# cause and the way out, and following its hint (moving the sequence past
# the events) gets them applied.
#
# projection.naptime is one hour, so every round below is one a commit woke.

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

my $first = $node->safe_psql($db, q{SELECT projection.append('local', 'E', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('p', $first, '60 s')"),
	't', 'a local append is applied');

# an event as a subscriber would receive it: its publisher's position, and
# no trigger fires
my $untracked = $first + 10;
$node->safe_psql(
	$db, qq{
SET session_replication_role = replica;
INSERT INTO projection.events (global_position, stream_id, stream_version, event_type, data)
VALUES ($untracked, 'replicated', 1, 'E', '{}');
});

# the next local appends wake the worker; their events are applied, the
# replicated one is not, and the worker says why, once
my $offset = -s $node->logfile;
my $second = $node->safe_psql($db, q{SELECT projection.append('local', 'E', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('p', $second, '60 s')"),
	't', 'a local append after the untracked event is applied');
$node->wait_for_log(
	qr/WARNING:  projection\.events holds events that async projections will not apply\n.*DETAIL:  Positions up to $untracked are in the store, but the sequence projection\.events_global_position_seq has handed out only up to $second\. Rows inserted with session_replication_role = replica/s,
	$offset);
my $third = $node->safe_psql($db, q{SELECT projection.append('local', 'E', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('p', $third, '60 s')"),
	't', 'and the next one');
is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE pos = $untracked"),
	'0', 'the untracked event is not applied');
my $log = slurp_file($node->logfile, $offset);
my $warnings = () = $log =~ /holds events that async projections will not apply/g;
is($warnings, 1, 'the warning is logged once');
like($log, qr/HINT:  Append events with the triggers enabled\.  To have async projections apply these events, move the sequence past them/,
	'the hint says what to do');

# following the hint: once the sequence is past the event, the next commit
# that wakes the worker gets it applied, and the warning does not come back
$node->safe_psql($db,
	q{SELECT pg_catalog.setval('projection.events_global_position_seq', max(global_position)) FROM projection.events});
my $fourth = $node->safe_psql($db, q{SELECT projection.append('local', 'E', '{}')});
ok($fourth > $untracked, 'local appends continue above it');
is($node->safe_psql($db, "SELECT projection.wait('p', $fourth, '60 s')"), 't',
	'after setval the untracked event and the next append are applied');
is($node->safe_psql($db, q{SELECT (SELECT array_agg(pos ORDER BY pos) FROM seen)
	= (SELECT array_agg(global_position ORDER BY global_position) FROM projection.events)}),
	't', 'every event is applied');
$log = slurp_file($node->logfile, $offset);
$warnings = () = $log =~ /holds events that async projections will not apply/g;
is($warnings, 1, 'no second warning once the sequence is past the events');

$node->stop;
done_testing();
