
# test/t/054_feed_wakeups.pl -- what ends a long-poll besides a commit of
# new events: the end of a lease, the end of a nack's back-off, and an ack
# or a seek that frees a partition with events left.
#
# projection.naptime is one hour and every long-poll waits up to an hour, so
# each poll below returns only because the event under test woke it (or its
# own timer for the lease or back-off end); a missing wake-up makes the test
# time out instead of pass.

use strict;
use warnings FATAL => 'all';

use IPC::Run;
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
SELECT projection.create_feed('w');
SELECT projection.append('s', 'E', jsonb_build_object('i', i)) FROM generate_series(1, 4) i;
});

sub start_long_poll
{
	my ($out) = @_;
	return $node->start_long_poll($db,
		"SELECT global_position FROM projection.poll('w', 10, wait => '1 h')", $out);
}

sub wait_for_sleeping_poll { return $node->wait_for_sleeping_poll($db); }

# the end of a lease: another consumer's lease of the only partition expires
my $held = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',') FROM projection.poll('w', 10, lease => '2 s')");
is($held, '1,2,3,4', 'a consumer leases the partition and never acks');
my $out;
my $h = start_long_poll(\$out);
ok(wait_for_sleeping_poll(), 'a long-poll sleeps while the lease lasts');
$h->finish;
chomp $out;
is(join(',', split /\n/, $out), $held, 'the lease\'s end wakes it, with the same events');

# an ack that leaves events wakes a long-poll
my $c = $node->background_psql($db);
$node->safe_psql($db, 'SELECT projection.seek(\'w\', 0)');
my $token = $c->query_safe("SELECT token FROM projection.poll('w', 10, lease => '1 h') LIMIT 1");
$h = start_long_poll(\$out);
ok(wait_for_sleeping_poll(), 'a long-poll sleeps while the partition is leased for an hour');
$c->query_safe("SELECT projection.ack('w', '$token', 2)");
$h->finish;
chomp $out;
is(join(',', split /\n/, $out), '3,4', 'a partial ack wakes it, with the events after the ack');

# the end of a nack's back-off
$node->safe_psql($db, 'SELECT projection.seek(\'w\', 2)');
$token = $c->query_safe("SELECT token FROM projection.poll('w', 10) LIMIT 1");
is($c->query_safe("SELECT projection.nack('w', '$token', 3, 'sink down', retry_after => '2 s')"),
	'2', 'a nack of event 3 acks what came before');
$h = start_long_poll(\$out);
ok(wait_for_sleeping_poll(), 'a long-poll sleeps through the back-off');
$h->finish;
chomp $out;
is(join(',', split /\n/, $out), '3,4', 'the back-off\'s end wakes it, the failed event first');
is($node->safe_psql($db, "SELECT attempts || ' ' || last_error FROM projection.feed_status WHERE feed = 'w'"),
	'1 sink down', 'feed_status counts the attempt');

# a seek frees the leased partition at once
$token = $c->query_safe("SELECT projection.seek('w', 0)");
$token = $c->query_safe("SELECT token FROM projection.poll('w', 10, lease => '1 h') LIMIT 1");
$h = start_long_poll(\$out);
ok(wait_for_sleeping_poll(), 'a long-poll sleeps behind an hour-long lease');
$c->query_safe("SELECT projection.seek('w', 1)");
$h->finish;
chomp $out;
is(join(',', split /\n/, $out), '2,3,4', 'a seek ends the lease and wakes it');
$c->quit;

$node->stop;
done_testing();
