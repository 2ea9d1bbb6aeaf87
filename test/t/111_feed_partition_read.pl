
# test/t/111_feed_partition_read.pl -- what a poll of one partition reads
# when the partition index exists (1.6: the index whatever the statistics
# say, bounded on both sides).
#
# Covers:
#   - a backlog of 4 partitions, with statistics (ANALYZE): 4 consumers, one
#     per partition, each polling with the ack carried by its next poll,
#     drain it; every event is delivered once, in stream order, from its
#     partition, and the events' rows fetched are as many as the events
#     delivered (pg_stat_user_tables.idx_tup_fetch; 1.5 read the position
#     index's range with a filter: 4 times as many);
#   - a horizon held back by an open appending transaction while 20,000
#     later events commit: the poll of a partition returns only the events
#     below the held position, and reads no more than a few blocks of the
#     partition index (the scan stops at the horizon, not at the end of
#     the partition's entries); after the commit, the rest comes, in order.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->append_conf('postgresql.conf', 'projection.naptime = 3600000');
# no autovacuum: its index scans would count in the statistics compared here
$node->append_conf('postgresql.conf', 'autovacuum = off');
$node->start;

my $db = 'feeds';
$node->safe_psql('postgres', "CREATE DATABASE $db");
$node->create_ext($db);
$node->safe_psql($db,
	q{CREATE INDEX fp4 ON projection.events (projection.feed_partition(stream_id, 4), global_position)});

# this database's counts, once every backend's are in the statistics
sub stat_value
{
	my ($sql) = @_;
	return $node->safe_psql($db,
		"SELECT pg_stat_force_next_flush(); SELECT pg_stat_clear_snapshot(); $sql");
}

# drain partition $p of feed $feed with the ack carried by the next poll;
# returns [[position, stream, version], ...] in delivery order
sub drain_partition
{
	my ($feed, $p) = @_;
	my ($token, @got);
	for (;;)
	{
		my $ack = defined $token ? "'$token'" : 'NULL';
		my $out = $node->safe_psql($db,
			"SELECT token, global_position, stream_id, stream_version "
			  . "FROM projection.poll('$feed', 500, partition => $p, ack => $ack)");
		my @rows = map { [ split /\|/ ] } grep { $_ ne '' } split /\n/, $out;
		last unless @rows;
		$token = $rows[0][0];
		push @got, map { [ @$_[ 1 .. 3 ] ] } @rows;
	}
	return \@got;
}

# every event of (first, last] once, in stream order, each from partition $p
sub check_partition
{
	my ($what, $got, $p, $first, $last) = @_;
	my $want = $node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM projection.events "
		  . "WHERE global_position > $first AND global_position <= $last "
		  . "AND projection.feed_partition(stream_id, 4) = $p");
	is(join(',', map { $_->[0] } @$got), $want, "$what: partition ${p}'s events once, in position order");
	my %v;
	my $in_order = 1;
	for my $e (@$got)
	{
		$in_order = 0 if exists $v{ $e->[1] } && $e->[2] <= $v{ $e->[1] };
		$v{ $e->[1] } = $e->[2];
	}
	ok($in_order, "$what: partition $p, each stream in order");
}

# a backlog of 20,000 events over 1,000 streams, with statistics
my $first = $node->safe_psql($db, 'SELECT COALESCE(max(global_position), 0) FROM projection.events');
$node->safe_psql($db,
	q{INSERT INTO projection.events (stream_id, event_type, data)
	  SELECT 's-' || i % 1000, 'E', jsonb_build_object('i', i, 'pad', repeat('x', 100))
	  FROM generate_series(1, 20000) i});
$node->safe_psql($db, 'ANALYZE projection.events');
my $last = $node->safe_psql($db, 'SELECT max(global_position) FROM projection.events');
$node->safe_psql($db, "SELECT projection.create_feed('backlog', start_from => '$first', partitions => 4)");

my $fetch_sql = q{SELECT idx_tup_fetch FROM pg_stat_user_tables
                  WHERE schemaname = 'projection' AND relname = 'events'};
my $fetched0 = stat_value($fetch_sql);
my %got = map { $_ => drain_partition('backlog', $_) } 0 .. 3;
my $fetched = stat_value($fetch_sql) - $fetched0;
check_partition('backlog', $got{$_}, $_, $first, $last) for 0 .. 3;
is($fetched, $last - $first,
	'backlog: the polls fetched as many event rows as they delivered (only their partitions\' events)');

# a horizon held back: 200 events commit, then an appending transaction
# stays open at the next position while 20,000 later events commit
$node->safe_psql($db,
	q{INSERT INTO projection.events (stream_id, event_type, data)
	  SELECT 'u-' || i % 100, 'E', '{}' FROM generate_series(1, 200) i});
my $below = $node->safe_psql($db, 'SELECT max(global_position) FROM projection.events');
my $hold = $node->background_psql($db);
$hold->query_safe('BEGIN');
my $held = $hold->query_safe(q{SELECT projection.append('held', 'E', '{}')});
$held =~ s/\s+//g;
$node->safe_psql($db,
	q{INSERT INTO projection.events (stream_id, event_type, data)
	  SELECT 't-' || i % 1000, 'E', jsonb_build_object('i', i, 'pad', repeat('x', 100))
	  FROM generate_series(1, 20000) i});
my $after = $node->safe_psql($db, 'SELECT max(global_position) FROM projection.events');
$node->safe_psql($db, 'ANALYZE projection.events');
$node->safe_psql($db, "SELECT projection.create_feed('held', start_from => '$last', partitions => 4)");

my $blocks_sql = q{SELECT idx_blks_hit + idx_blks_read FROM pg_statio_user_indexes
                   WHERE indexrelname = 'fp4'};
my $blocks0 = stat_value($blocks_sql);
my $out = $node->safe_psql($db,
	q{SELECT count(*), count(*) FILTER (WHERE global_position > } . $below . q{),
	         bool_and(projection.feed_partition(stream_id, 4) = 1)
	  FROM projection.poll('held', 500, partition => 1)});
my $blocks = stat_value($blocks_sql) - $blocks0;
my $want = $node->safe_psql($db,
	"SELECT count(*) FROM projection.events WHERE global_position > $last AND global_position <= $below "
	  . "AND projection.feed_partition(stream_id, 4) = 1");
cmp_ok($want, '>', 0, 'held horizon: partition 1 has events below the held position');
is($out, "$want|0|t", 'held horizon: the poll of partition 1 returns its events below the held position, none above');
# 20,000 later events put about 5,000 entries (some 15 leaf pages) in each
# partition above the horizon; a scan that stops at the horizon reads the
# path from the root and a leaf or two
cmp_ok($blocks, '<=', 6,
	"held horizon: the poll read $blocks blocks of the partition index, not the partition's entries above the horizon");

# that lease ends (its events come again below)
$node->safe_psql($db, "SELECT projection.seek('held', $last, 1)");
$hold->query_safe('COMMIT');
$hold->quit;
my %rest = map { $_ => drain_partition('held', $_) } 0 .. 3;
check_partition('after the commit', $rest{$_}, $_, $last, $after) for 0 .. 3;

done_testing();
