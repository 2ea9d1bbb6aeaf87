
# test/t/108_feed_ack_once.pl -- a poll that carries an ack writes its
# partition's row once (1.7): the ack's effect and the new lease are one
# UPDATE.  Before, the ack's UPDATE and then the lease's updated the row
# twice in one transaction, so the second one checked the foreign key to the
# feed again: a KEY SHARE lock on the feed's one row, taken by every
# consumer at once, a new multixact per poll.
#
# Covers:
#   - four consumers, each on its own partition, whose polls carry the
#     previous poll's ack, all four transactions open at once: no multixact
#     is created (the next multixact id of a checkpoint before and after is
#     the same), and each gets its partition's next events, its previous
#     lease acked;
#   - the same four open transactions ended by a crash (immediate stop):
#     after the restart nothing of them is left: every checkpoint, lease and
#     token is as it was, so the consumers' acks of their previous leases go
#     through, and the next polls hand out the same events again;
#   - a consumer loop of acking polls over the four partitions drains every
#     event once, in order per partition, the checkpoints at the end.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db, naptime_hour => 1);
$node->safe_psql(
	$db, q{
CREATE INDEX ON projection.events (projection.feed_partition(stream_id, 4), global_position);
SELECT projection.create_feed('f', partitions => 4);
SELECT count(projection.append('s-' || i % 16, 'E', '{}')) FROM generate_series(1, 400) i;
});

# the next multixact id, as a checkpoint records it
sub next_multixact
{
	$node->safe_psql($db, 'CHECKPOINT');
	return $node->safe_psql($db, 'SELECT next_multixact_id FROM pg_control_checkpoint()');
}

# the events of partition p after position "from", up to "n" of them
sub partition_events
{
	my ($p, $from, $n) = @_;
	return $node->safe_psql($db,
		    "SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM "
		  . "(SELECT global_position FROM projection.events "
		  . "WHERE projection.feed_partition(stream_id, 4) = $p AND global_position > $from "
		  . "ORDER BY global_position LIMIT $n) s");
}

sub checkpoints
{
	return $node->safe_psql($db,
		"SELECT string_agg(position::text || ':' || leased::text, ' ' ORDER BY partition) "
		  . "FROM projection.feed_status WHERE feed = 'f'");
}

# each consumer's first lease, committed
my @s = map { $node->background_psql($db) } 0 .. 3;
my (@token, @first_last);
for my $p (0 .. 3)
{
	my ($tok, $last) = split /\|/,
	  $s[$p]->query_safe("SELECT token, max(global_position) FROM projection.poll('f', 10, "
		  . "partition => $p, lease => '1 h') GROUP BY token");
	$token[$p] = $tok;
	$first_last[$p] = $last;
	is($last, (split /,/, partition_events($p, 0, 10))[-1],
		"partition $p: the first lease has its first 10 events");
}
my $before_crash = checkpoints();
is($before_crash, '0:true 0:true 0:true 0:true', 'four leases, nothing acked yet');

# ---------------------------------------------------------------------
# four acking polls in open transactions at once: no multixact
# ---------------------------------------------------------------------
my $multi_before = next_multixact();
my @got;
for my $p (0 .. 3)
{
	$s[$p]->query_safe('BEGIN');
	$got[$p] = $s[$p]->query_safe(
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM "
		  . "projection.poll('f', 10, partition => $p, lease => '1 h', ack => '$token[$p]')");
}
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND state = 'idle in transaction'}),
	4,
	'the four acking polls are in open transactions together');
is(next_multixact(), $multi_before,
	'four polls carrying acks in open transactions at once created no multixact');
for my $p (0 .. 3)
{
	is($got[$p], partition_events($p, $first_last[$p], 10),
		"partition $p: the acking poll hands out the next 10 events");
}

# ---------------------------------------------------------------------
# a crash with the four transactions open: nothing of them is left
# ---------------------------------------------------------------------
$node->stop('immediate');
eval { local $SIG{PIPE} = 'IGNORE'; $_->quit; } for @s;
$node->start;
is(checkpoints(), $before_crash,
	'after the crash every checkpoint and lease is as before the acking polls');
for my $p (0 .. 3)
{
	is( $node->safe_psql($db,
			"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM "
			  . "projection.poll('f', 10, partition => $p, lease => '1 h', ack => '$token[$p]')"),
		partition_events($p, $first_last[$p], 10),
		"partition $p: the first lease's token still acks, and the same events come again");
}
is( $node->safe_psql($db,
		"SELECT string_agg(position::text, ' ' ORDER BY partition) FROM projection.feed_status WHERE feed = 'f'"),
	join(' ', @first_last),
	'each checkpoint is the first lease\'s last event');

# ---------------------------------------------------------------------
# drain: acking polls of each partition in turn deliver every event once
# ---------------------------------------------------------------------
$node->safe_psql($db, q{SELECT projection.seek('f', 0)});
my $multi_drain = next_multixact();
my @tok = (undef) x 4;
my @seen = ([], [], [], []);
my $more = 1;
while ($more)
{
	$more = 0;
	for my $p (0 .. 3)
	{
		my $ack = defined $tok[$p] ? "'$tok[$p]'" : 'NULL';
		my $out = $node->safe_psql($db,
			"SELECT token, global_position FROM projection.poll('f', 7, partition => $p, "
			  . "lease => '1 h', ack => $ack)");
		my @rows = map { [ split /\|/ ] } grep { $_ ne '' } split /\n/, $out;
		$tok[$p] = @rows ? $rows[0][0] : undef;
		push @{ $seen[$p] }, map { $_->[1] } @rows;
		$more ||= @rows > 0;
	}
}
for my $p (0 .. 3)
{
	is(join(',', @{ $seen[$p] }), partition_events($p, 0, 1000),
		"partition $p: every event once, in order");
}
is( $node->safe_psql($db,
		"SELECT bool_and(NOT leased) AND bool_and(lag_events = 0) FROM projection.feed_status WHERE feed = 'f'"),
	't', 'the last acks are in: no lease, no lag');
is(next_multixact(), $multi_drain, 'the drain created no multixact');

$node->stop;
done_testing();
