
# test/t/113_feed_plans_kept.pl -- poll's event query is planned once per
# backend and form, then reused (feedread.c keeps the plans).
#
# Covers, for the forms of the query whose feed has no partition filter
# (a feed of one partition; one with a parked stream left out; a released
# stream's held events in a feed of four partitions): after a first poll
# and ack, the next polls of the same session plan no query that reads
# projection.events.  debug_print_plan shows every query planned, so a plan
# that names projection.events' relid is the event query planned again.
# (autovacuum is off: an analyze of the events would rightly make the kept
# plans be planned again.)

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'feeds';
my $node = start_node('main', db => $db, conf => 'autovacuum = off');
# streams a and p share a partition of four
my $partner = $node->safe_psql($db, q{
SELECT s FROM (SELECT 'p' || i AS s FROM generate_series(1, 100) i) c
 WHERE projection.feed_partition(s, 4) = projection.feed_partition('a', 4) LIMIT 1});
$node->safe_psql(
	$db, qq{
SELECT projection.create_feed('one');
SELECT projection.create_feed('parked', max_attempts => 1, park => 'stream');
SELECT projection.create_feed('four', partitions => 4, max_attempts => 1, park => 'stream');
SELECT projection.append(s, 'E', jsonb_build_object('i', i))
  FROM generate_series(1, 8) i, (VALUES ('a'), ('$partner')) v(s) ORDER BY i, s;
});
my $events = $node->safe_psql($db, q{SELECT 'projection.events'::regclass::oid});

# park stream a (its first event fails) in 'parked' and 'four'; in 'four',
# the partner's events are acked past a's, and a is released: its held
# events are then read with the one-stream form
for my $feed ('parked', 'four')
{
	$node->safe_psql($db, qq{
SELECT projection.nack('$feed', token, global_position, 'a1 failed')
  FROM projection.poll('$feed', 1) WHERE stream_id = 'a';
});
}
$node->safe_psql($db, q{
SELECT projection.ack('four', token) FROM projection.poll('four', 100) LIMIT 1;
SELECT projection.release_stream('four', 'a');
});

# one poll and its ack, in psql (the session's plans are the point)
sub poll_ack
{
	my ($feed) = @_;
	return qq{SELECT token AS t FROM projection.poll('$feed', 1) \\gset
SELECT projection.ack('$feed', :'t') > 0 AS acked;
};
}

for my $feed ('one', 'parked', 'four')
{
	my ($out, $err) = ('', '');
	$node->psql(
		$db,
		poll_ack($feed)    # the first poll of the session plans the query
		  . "SET client_min_messages = log;\nSET debug_print_plan = on;\n"
		  . poll_ack($feed) . poll_ack($feed) . poll_ack($feed)
		  . "SELECT count(*) > 0 AS some FROM projection.events;\n",
		stdout => \$out,
		stderr => \$err,
		on_error_die => 1);
	is($out, join("\n", ('t') x 4, 't'), "$feed: every poll got an event and its ack went through");
	# the last statement's plan names the events: the check below can see one
	my @plans = split /LOG:  plan:/, $err;
	ok(@plans > 4, "$feed: debug_print_plan shows the statements' plans");
	like($plans[-1], qr/:relid $events\b/, "$feed: a plan that reads the events names their relid");
	my $replanned = grep { /:relid $events\b/ } @plans[0 .. $#plans - 1];
	is($replanned, 0, "$feed: the polls after the first plan no query of the events again");
}

# the polls of 'four' were those of a's held events (a1 to a4)
is( $node->safe_psql($db, q{SELECT replayed_to FROM projection.feed_parked_streams WHERE feed = 'four'}),
	$node->safe_psql($db, q{SELECT global_position FROM projection.events WHERE stream_id = 'a' AND stream_version = 4}),
	"four: the polls handed out stream a's held events");

$node->stop;
done_testing();
