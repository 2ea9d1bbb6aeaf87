# test/t/106_snapshot_inline_order.pl -- an inline snapshot projection never
# loses an event that commits out of order: a transaction A inserts an event
# with an explicit stream_version (as bulk loaders do, without the stream's
# lock), so its position is drawn, and then waits (on an advisory lock held
# by a third session, inside the same INSERT) before its statement folds;
# meanwhile B appends a later version of the same stream.  In every order
# (B commits before A folds; A folds while B's state write is uncommitted;
# a stream both create, with no state row yet, in both orders) A's INSERT
# fails with serialization_failure (40001) rather than committing an event
# its stream's state does not hold, and every stored state equals
# aggregate() of its stream (the full fold).  A retry succeeds.

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
LANGUAGE sql AS $$
	SELECT jsonb_set(state, '{seen}', coalesce(state->'seen', '[]') || to_jsonb(e.stream_version))
$$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('s1', 1, 'E', '{}'), ('s2', 1, 'E', '{}');
SELECT projection.create_snapshot('lists', 'list_fold', mode => 'inline');
});

# the states that differ from the full fold of their stream, and every stream's
# events without a state (none: each stream here has a state)
my $differ = q{
SELECT coalesce(string_agg(e.stream_id || ': ' || coalesce(s.state::text, 'no state')
						   || ' <> ' || projection.aggregate(e.stream_id, 'list_fold')::text, '; '
						   ORDER BY e.stream_id), 'none')
  FROM (SELECT DISTINCT stream_id FROM projection.events) e
  LEFT JOIN projection.snapshots s ON s.name = 'lists' AND s.stream_id = e.stream_id
 WHERE s.state IS DISTINCT FROM projection.aggregate(e.stream_id, 'list_fold')
};

my $gate = 0;

# A: one INSERT of version $ver of $stream (its position drawn at once), then
# of a row of its own gate stream that waits for advisory lock $gate, held by
# the returned locker session, before the statement ends and folds.
sub start_a
{
	my ($stream, $ver) = @_;
	$gate++;
	my $locker = $node->background_psql($db);
	$locker->query_safe("BEGIN; SELECT pg_advisory_xact_lock($gate)");
	my $a = $node->background_psql($db, on_error_stop => 0);
	$a->query_until(
		qr/started/, qq{\\echo started
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT '$stream', $ver, 'E', '{}'::jsonb
UNION ALL
SELECT 'gate-$gate', 1, 'E', jsonb_build_object('gate', pg_advisory_xact_lock($gate)::text);
});
	ok( $node->poll_query_until(
			$db,
			"SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' "
			  . "AND objid = $gate AND NOT granted)"),
		"A ($stream version $ver) has its position and waits before it folds");
	return ($a, $locker);
}

# the SQLSTATE of A's INSERT, and its error message
sub finish_a
{
	my ($a) = @_;
	my $out = $a->query("\\echo sqlstate :SQLSTATE");
	my $err = $a->{stderr};
	$a->{stderr} = '';
	$a->quit;
	my ($state) = $out =~ /sqlstate (\w+)/;
	return ($state, $err);
}

# wait until some session waits for a transaction (a row or index entry lock)
sub wait_for_row_lock
{
	my ($what) = @_;
	ok( $node->poll_query_until(
			$db,
			"SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted)"),
		$what);
}

# ---------------------------------------------------------------------
# 1. B commits (a later version folded in) before A folds
# ---------------------------------------------------------------------
{
	my ($a, $locker) = start_a('s1', 2);
	$node->safe_psql($db,
		"INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('s1', 3, 'E', '{}')");
	$locker->query_safe('COMMIT');
	$locker->quit;
	my ($state, $err) = finish_a($a);
	is($state, '40001', 'B committed first: A\'s INSERT fails with serialization_failure');
	like($err, qr/ERROR:  state of stream "s1" in snapshot projection "lists" already holds version 3/, 'the message names the stream and version');
	like($err, qr/HINT:.*retry/i, 'with a hint to retry');
	is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');
}

# ---------------------------------------------------------------------
# 2. A folds while B's state write is uncommitted (A waits for B's row)
# ---------------------------------------------------------------------
{
	my ($a, $locker) = start_a('s2', 2);
	my $b = $node->background_psql($db);
	$b->query_safe("BEGIN; INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('s2', 3, 'E', '{}')");
	$locker->query_safe('COMMIT');
	$locker->quit;
	wait_for_row_lock('A waits for the state row B wrote');
	$b->query_safe('COMMIT');
	$b->quit;
	my ($state, $err) = finish_a($a);
	is($state, '40001', 'B\'s write uncommitted when A folded: A fails with serialization_failure');
	is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');
}

# ---------------------------------------------------------------------
# 3. a new stream both create, B committed before A folds
# ---------------------------------------------------------------------
{
	my ($a, $locker) = start_a('n1', 1);
	$node->safe_psql($db,
		"INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('n1', 2, 'E', '{}')");
	$locker->query_safe('COMMIT');
	$locker->quit;
	my ($state, $err) = finish_a($a);
	is($state, '40001', 'new stream, B committed first: A fails with serialization_failure');
	is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');
}

# ---------------------------------------------------------------------
# 4. a new stream both create, B's first state uncommitted when A folds
# ---------------------------------------------------------------------
{
	my ($a, $locker) = start_a('n2', 1);
	my $b = $node->background_psql($db);
	$b->query_safe("BEGIN; INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('n2', 2, 'E', '{}')");
	$locker->query_safe('COMMIT');
	$locker->quit;
	wait_for_row_lock('A waits for the first state B wrote');
	$b->query_safe('COMMIT');
	$b->quit;
	my ($state, $err) = finish_a($a);
	is($state, '40001', 'new stream, B\'s state uncommitted: A fails with serialization_failure');
	is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');
}

# ---------------------------------------------------------------------
# the retry, and the orders that were always right
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.append(s, 'E', '{}') FROM unnest('{s1,s2,n1,n2}'::text[]) s");
is($node->safe_psql($db, $differ), 'none', 'retried through append: every state is the full fold');
is( $node->safe_psql($db,
		"SELECT string_agg(stream_id || '=' || (state->'seen')::text, ' ' ORDER BY stream_id) "
		  . "FROM projection.snapshots WHERE name = 'lists' AND stream_id NOT LIKE 'gate-%'"),
	'n1=[2, 3] n2=[2, 3] s1=[1, 3, 4] s2=[1, 3, 4]',
	'the states hold every committed event');
{
	# A folds first and holds the state: B waits for it, then folds after it
	my $a = $node->background_psql($db);
	$a->query_safe("BEGIN; INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
		  . "VALUES ('s1', 5, 'E', '{}')");
	my $b = $node->background_psql($db);
	$b->query_until(qr/started/, "\\echo started\nINSERT INTO projection.events "
		  . "(stream_id, stream_version, event_type, data) VALUES ('s1', 6, 'E', '{}');\n");
	wait_for_row_lock('B waits for the state row A wrote');
	$a->query_safe('COMMIT');
	$a->quit;
	$b->query_safe('SELECT 1');
	$b->quit;
	is($node->safe_psql($db, "SELECT state->'seen' FROM projection.snapshots WHERE stream_id = 's1'"),
		'[1, 3, 4, 5, 6]', 'in commit order: both folded');
}
is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');

# ---------------------------------------------------------------------
# out of version order without concurrency: a version below the state's
# (every retry fails alike), and one statement's versions out of order
# ---------------------------------------------------------------------
my ($rc, $out, $err) = $node->psql($db,
	"INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
	  . "VALUES ('s1', 2, 'E', '{}')");
like($err, qr/ERROR:  state of stream "s1" in snapshot projection "lists" already holds version 6/,
	'a missing version inserted after later ones is refused');
($rc, $out, $err) = $node->psql($db,
	"INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
	  . "VALUES ('o1', 2, 'E', '{}'), ('o1', 1, 'E', '{}')");
like($err, qr/ERROR:  events of stream "o1" are not in version order/,
	'one statement\'s versions out of order are refused');
is($node->safe_psql($db, "SELECT count(*) FROM projection.events WHERE stream_id = 'o1'"),
	'0', 'and nothing of the statement is stored');
is($node->safe_psql($db, $differ), 'none', 'every state equals the full fold of its stream');

$node->stop('fast');
done_testing();
