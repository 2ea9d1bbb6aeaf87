
# test/t/105_aggregate_snapshot.pl -- projection.aggregate() started from a
# snapshot projection's stored state returns what folding every event
# returns, while the worker lags (blocked on the states table, with events
# it has not applied), while a rebuild of the projection is open in another
# session (its states deleted, not committed), and with the state and the
# events after it read in the caller's snapshot (a repeatable-read reader
# does not see the worker's newer state).  DEBUG1 says when the state was
# used; the full fold is that of a VOLATILE twin of the fold.

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
CREATE FUNCTION list_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_set(state, '{seen}', coalesce(state->'seen', '[]') || to_jsonb(e.stream_version))
$$;
CREATE FUNCTION list_full(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$ SELECT list_fold(state, e) $$;
SELECT projection.create_snapshot('lists', 'list_fold');
});

sub append
{
	my ($stream, $n) = @_;

	$node->safe_psql($db,
		"SELECT projection.append('$stream', 'Seen', '{}') FROM generate_series(1, $n)");
	return $node->max_position($db);
}

sub seen
{
	my ($n) = @_;
	return '[' . join(', ', 1 .. $n) . ']';
}

# aggregate() of the stream in a new session:
# (its seen list, whether it equals the full fold, the DEBUG1 lines)
sub aggregate
{
	my ($stream) = @_;
	my ($stdout, $stderr);

	$node->psql(
		$db, qq{
SET client_min_messages = debug1;
SELECT projection.aggregate('$stream', 'list_fold')->'seen',
	   projection.aggregate('$stream', 'list_fold') = projection.aggregate('$stream', 'list_full');
},
		stdout => \$stdout,
		stderr => \$stderr,
		on_error_die => 1);
	my ($seen, $same) = split /\|/, $stdout;
	return ($seen, $same, join("\n", grep { /aggregate\(\)/ } split /\n/, $stderr));
}

append('s-1', 3);
ok($node->wait_caught_up($db, 'lists'), 'the projection caught up');

# ---------------------------------------------------------------------
# the worker lagging: blocked on the states table, with events to apply
# ---------------------------------------------------------------------
my $holder = $node->background_psql($db);
$holder->query_safe('BEGIN; LOCK TABLE projection.snapshot_states IN EXCLUSIVE MODE');
append('s-1', 4);
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'projection worker' "
		  . "AND wait_event_type = 'Lock' AND wait_event = 'relation'"),
	'the worker is blocked on the states');
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(3), 'the stored state lags');
my ($seen, $same, $debug) = aggregate('s-1');
is($seen, seen(7), 'aggregate() folds the events the worker has not applied');
is($same, 't', 'and equals the full fold');
like($debug, qr/starts from snapshot projection "lists" at version 3/, 'from the stored state');
$holder->query_safe('COMMIT');
ok($node->wait_caught_up($db, 'lists'), 'the worker catches up');
($seen, $same, $debug) = aggregate('s-1');
like($debug, qr/at version 7/, 'then from the new state');
is($same, 't', 'still the full fold');

# ---------------------------------------------------------------------
# a rebuild open in another session, appends going on meanwhile
# ---------------------------------------------------------------------
my $rebuilder = $node->background_psql($db);
$rebuilder->query_safe("SET client_min_messages = warning; BEGIN; SELECT projection.rebuild('lists')");
is($rebuilder->query_safe("SELECT count(*) FROM projection.snapshot_states"),
	'1', 'the rebuild holds its new states');
append('s-1', 2);
($seen, $same, $debug) = aggregate('s-1');
is($seen, seen(9), 'during a rebuild, every event');
is($same, 't', 'the full fold');
like($debug, qr/at version 7/, 'from the committed state the rebuild has not replaced yet');
$rebuilder->query_safe('ROLLBACK');
$rebuilder->quit;
ok($node->wait_caught_up($db, 'lists'), 'caught up after the rolled-back rebuild');
($seen, $same, $debug) = aggregate('s-1');
is($seen, seen(9), 'after the rollback');
like($debug, qr/at version 9/, 'from the state the worker wrote');

# ---------------------------------------------------------------------
# the state and the events after it, in the caller's snapshot
# ---------------------------------------------------------------------
my $reader = $node->background_psql($db);
$reader->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
is($reader->query_safe("SELECT projection.aggregate('s-1', 'list_fold')->'seen'"),
	seen(9), 'a repeatable-read reader');
append('s-1', 3);
ok($node->wait_caught_up($db, 'lists'), 'the worker folded three more');
is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's-1'"),
	seen(12), 'the newer state is committed');
is($reader->query_safe("SELECT projection.aggregate('s-1', 'list_fold')->'seen'"),
	seen(9), 'the reader still folds what its snapshot sees');
$reader->query_safe('COMMIT');
$reader->quit;
($seen, $same, $debug) = aggregate('s-1');
is($seen, seen(12), 'a new snapshot sees all');
like($debug, qr/at version 12/, 'from the newest state');

$node->stop('fast');
done_testing();
