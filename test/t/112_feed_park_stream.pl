
# test/t/112_feed_park_stream.pl -- whole-stream parking (1.6): a feed
# created with park => 'stream' parks, at max_attempts, a poison event
# together with its stream.
#
# Covers:
#   - a consumer that nacks a poison event on a feed of 4 partitions: at
#     max_attempts its stream is parked, the stream's later events
#     (appended before and after the parking) are never delivered while it
#     is parked, and every other stream's event is delivered exactly once,
#     in stream order, the poison stream's partition included;
#   - a restart (immediate stop: a crash) while the stream is parked keeps
#     it parked and its events held, and so do pg_dump and pg_restore;
#   - release_stream: the parked event and the held ones come first, in
#     position order, then the partition goes on; a lease of the held
#     events that is never acked (a consumer killed) hands out exactly the
#     same events again once it expires; a restart between two acks of
#     the held events continues after the acked ones; in the end every
#     event was delivered exactly once (the unacked lease aside), each
#     stream in order, and nothing is parked or lagging;
#   - a feed with the default park => 'event' still passes the poison event
#     over and delivers its stream's later events (1.5's behaviour).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db);
$node->safe_psql(
	$db, q{
SELECT projection.create_feed('f', partitions => 4, max_attempts => 2, park => 'stream');
SELECT projection.create_feed('e', max_attempts => 2);
SELECT projection.append('s-' || (i % 12), 'E', jsonb_build_object('i', i)) FROM generate_series(1, 120) i;
});

# the poison: the third event of stream s-5
my $poison = $node->safe_psql($db,
	q{SELECT global_position FROM projection.events WHERE stream_id = 's-5' AND stream_version = 3});
my $poison_partition = $node->safe_psql($db, q{SELECT projection.feed_partition('s-5', 4)});
my $healed = 0;

my @consumed;    # [position, stream, version] in the order the sink took them

# poll once (any partition); the sink takes the events up to the poison
# (nacked, unless healed) and acks; returns the number of rows polled
sub consume_once
{
	my ($feed, %opt) = @_;
	my $max = $opt{max} // 10;
	my $lease = $opt{lease} // '1 h';
	my $out = $node->safe_psql($db,
		"SELECT token, global_position, stream_id, stream_version "
		  . "FROM projection.poll('$feed', $max, lease => '$lease')");
	my @rows = map { [ split /\|/ ] } grep { $_ ne '' } split /\n/, $out;
	return 0 unless @rows;
	my $token = $rows[0][0];
	return scalar @rows if $opt{no_ack};
	for my $r (@rows)
	{
		if ($r->[1] == $poison && !$healed)
		{
			$node->safe_psql($db,
				"SET client_min_messages = error; "
				  . "SELECT projection.nack('$feed', '$token', $r->[1], 'poison', retry_after => '0 s')");
			return scalar @rows;
		}
		push @consumed, [ @$r[ 1 .. 3 ] ];
	}
	$node->safe_psql($db, "SELECT projection.ack('$feed', '$token')");
	return scalar @rows;
}

sub drain
{
	my ($feed) = @_;
	for (1 .. 1000)
	{
		return if consume_once($feed) == 0;
	}
	die "the feed $feed does not drain";
}

# each stream's versions as consumed, in order
sub versions_of
{
	my ($stream) = @_;
	return join ',', map { $_->[2] } grep { $_->[1] eq $stream } @consumed;
}

# every consumed position once
sub consumed_once
{
	my %seen;
	$seen{ $_->[0] }++ for @consumed;
	return !grep { $_ > 1 } values %seen;
}

# ---------------------------------------------------------------------
# the poison parks its stream; the others flow
# ---------------------------------------------------------------------
drain('f');
is( $node->safe_psql($db,
		q{SELECT partition || ':' || stream_id || ':' || parked_from || ':' || attempts || ':' || (released_at IS NULL) FROM projection.feed_parked_streams}),
	"$poison_partition:s-5:$poison:2:true",
	'the poison parked its stream after max_attempts');
is(versions_of('s-5'), '1,2', 'the parked stream stopped before its poison event');
is(scalar(@consumed), 120 - 8, 'every event of the other streams was delivered');
ok(consumed_once(), 'none twice');
is(versions_of('s-1'), join(',', 1 .. 10), 'another stream in order');
my $same = (grep { $_ ne 's-5' && $node->safe_psql($db, "SELECT projection.feed_partition('$_', 4)") == $poison_partition }
	  map { "s-$_" } 0 .. 11)[0];
is(versions_of($same), join(',', 1 .. 10), "a stream of the poison's partition ($same) in order");
is( $node->safe_psql($db, q{SELECT sum(parked_streams) || ':' || sum(parked) FROM projection.feed_status WHERE feed = 'f'}),
	'1:4', 'feed_status: the parked stream in its partition\'s row, the parked event in every row of the feed');

# appended while parked: s-5's events are held, the others come
$node->safe_psql($db,
	q{SELECT projection.append('s-' || (i % 12), 'E', jsonb_build_object('i', i)) FROM generate_series(121, 144) i});
drain('f');
is(versions_of('s-5'), '1,2', 'events appended to the parked stream are held');
is(scalar(@consumed), 112 + 22, 'the others appended meanwhile were delivered');

# ---------------------------------------------------------------------
# a crash keeps the parked state
# ---------------------------------------------------------------------
$node->stop('immediate');
$node->start;
is($node->safe_psql($db, q{SELECT stream_id || ':' || parked_from FROM projection.feed_parked_streams}),
	"s-5:$poison", 'still parked after a crash');
is(consume_once('f'), 0, 'nothing to deliver after the restart: the stream is held');

# dump and restore keep it (feed_holds is a configuration table)
my $dir = PostgreSQL::Test::Utils::tempdir();
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/feeds.dump", '-d', $db ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[ 'pg_restore', '--single-transaction', '--exit-on-error', '-d', 'restored', "$dir/feeds.dump" ],
	'pg_restore');
is( $node->safe_psql('restored',
		q{SELECT f.park || ':' || s.stream_id || ':' || s.parked_from FROM projection.feed_parked_streams s JOIN projection.feeds f ON f.name = s.feed}),
	"stream:s-5:$poison", 'the parked stream is restored');
$node->safe_psql('restored', q{SELECT projection.append('s-5', 'E', '{}')});
is($node->safe_psql('restored', "SELECT count(*) FROM projection.poll('f', 100, partition => $poison_partition)"),
	'0', 'and still held there');

# ---------------------------------------------------------------------
# release: the held events first, in order
# ---------------------------------------------------------------------
$healed = 1;
$node->safe_psql($db, q{SELECT projection.release_stream('f', 's-5')});
$node->safe_psql($db,
	q{SELECT projection.append('s-' || (i % 12), 'E', jsonb_build_object('i', i)) FROM generate_series(145, 156) i});
# a consumer killed with a lease of held events: the same events again
my $held_first = $node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM projection.poll('f', 3, lease => '1 s', partition => $poison_partition)");
my @expected_held = split /\n/, $node->safe_psql($db,
	"SELECT global_position FROM projection.events WHERE stream_id = 's-5' AND global_position >= $poison ORDER BY 1");
is($held_first, join(',', @expected_held[ 0 .. 2 ]), 'the first poll after the release hands out the held events from the parked one');
$node->wait_for_lease_over($db, 'f', $poison_partition);
# the next poll of that partition: the same events; ack two of them only
my $out = $node->safe_psql($db,
	"SELECT token, global_position, stream_id, stream_version FROM projection.poll('f', 3, partition => $poison_partition)");
my @rows = map { [ split /\|/ ] } split /\n/, $out;
is(join(',', map { $_->[1] } @rows), $held_first, 'an unacked lease of held events: the same events again');
push @consumed, map { [ @$_[ 1 .. 3 ] ] } @rows[ 0 .. 1 ];
$node->safe_psql($db, "SELECT projection.ack('f', '$rows[0][0]', $rows[1][1])");
is($node->safe_psql($db, q{SELECT replayed_to FROM projection.feed_parked_streams}),
	$rows[1][1], 'the ack moved the stream past the acked held events');

# a restart between two acks of the held events
$node->stop('immediate');
$node->start;
drain('f');
is(versions_of('s-5'), join(',', 1 .. 13), 'the released stream: every event, in order');
ok(consumed_once(), 'each event once');
is(scalar(@consumed), 156, 'every event delivered');
is($node->safe_psql($db, q{SELECT count(*) FROM projection.feed_parked_streams}),
	'0', 'nothing parked once the held events are acked');
is( $node->safe_psql($db,
		q{SELECT sum(lag_events) || ':' || bool_and(position = (SELECT max(global_position) FROM projection.events WHERE projection.feed_partition(stream_id, 4) = partition)) FROM projection.feed_status WHERE feed = 'f'}),
	'0:true', 'every partition at its last event, no lag');
is(versions_of('s-1'), join(',', 1 .. 13), 'another stream in order');

# ---------------------------------------------------------------------
# park => 'event' (the default) is 1.5's behaviour
# ---------------------------------------------------------------------
@consumed = ();
$healed = 0;
drain('e');
is(versions_of('s-5'), join(',', 1, 2, 4 .. 13), "an 'event' feed passes the poison over and goes on with its stream");
is($node->safe_psql($db, q{SELECT count(*) FROM projection.feed_parked_streams WHERE feed = 'e'}),
	'0', 'and parks no stream');
is($node->safe_psql($db, q{SELECT string_agg(global_position::text, ',') FROM projection.feed_parked_events WHERE feed = 'e'}),
	$poison, 'it parked the event');

$node->stop;
done_testing();
