
# test/t/052_feed_durability.pl -- feeds survive a restart, a crash and
# dump/restore: their partitions, checkpoints, owner and pause flag, and a
# consumer goes on where its last ack left it.
#
# Covers:
#   - a clean restart: checkpoints kept, an unacked lease's events come
#     again once it expires;
#   - kill -9 of a backend holding a lease in an uncommitted ack (the
#     server crash-restarts): the ack never happened, the checkpoint is the
#     last committed one;
#   - an immediate stop right after an ack committed: the ack holds;
#   - pg_dump -Fc and pg_restore into a new database: the feeds, their
#     partitions and checkpoints, owner and paused flag are there, and a
#     poll goes on after the checkpoint.

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
CREATE ROLE feed_owner;
GRANT SELECT ON projection.events TO feed_owner;
SET ROLE feed_owner;
SELECT projection.create_feed('d', partitions => 2);
SELECT projection.create_feed('p', event_types => '{A}');
SELECT projection.pause_feed('p');
RESET ROLE;
SELECT projection.append('s-' || (i % 5), CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END, '{}')
  FROM generate_series(1, 50) i;
});

sub state
{
	my ($dbname) = @_;
	return $node->safe_psql($dbname // $db,
		"SELECT string_agg(feed || ':' || partition || ':' || position || ':' || paused || ':' || owner,
		                   ' ' ORDER BY feed, partition) FROM projection.feed_status");
}

sub poll_ack
{
	my ($dbname, $feed, $n, $partition) = @_;
	my $out = $node->safe_psql($dbname,
		"SELECT token, global_position FROM projection.poll('$feed', $n, partition => $partition)");
	my @rows = split /\n/, $out;
	my ($token) = split /\|/, $rows[0];
	my ($last) = (split /\|/, $rows[-1])[1];
	$node->safe_psql($dbname, "SELECT projection.ack('$feed', '$token')");
	return $last;
}

my $p0 = poll_ack($db, 'd', 5, 0);
my $p1 = poll_ack($db, 'd', 3, 1);
my $before = state();
like($before, qr/^d:0:$p0:false:feed_owner d:1:$p1:false:feed_owner p:0:0:true:feed_owner$/,
	'checkpoints after two acks');

# an unacked lease survives nothing but its expiry
my $unacked = $node->safe_psql($db,
	"SELECT string_agg(global_position::text, ',') FROM projection.poll('d', 4, lease => '1 s', partition => 0)");

# ---------------------------------------------------------------------
# restart
# ---------------------------------------------------------------------
$node->restart;
is(state(), $before, 'a restart keeps every feed and checkpoint');
ok($node->poll_query_until($db,
		"SELECT NOT leased FROM projection.feed_status WHERE feed = 'd' AND partition = 0", 't'),
	'the lease taken before the restart expires');
is($node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',') FROM projection.poll('d', 4, partition => 0)"),
	$unacked, 'and its events come again');
$node->safe_psql($db, "SELECT projection.seek('d', $p0)");

# the seek moved both partitions to $p0
$p1 = $p0;
$before = state();

# ---------------------------------------------------------------------
# kill -9 of a backend in the middle of an ack
# ---------------------------------------------------------------------
my $c = $node->background_psql($db);
my $token = $c->query_safe(
	"SELECT token FROM projection.poll('d', 5, lease => '1 s', partition => 1) LIMIT 1");
$c->query_safe('BEGIN');
$c->query_safe("SELECT projection.ack('d', '$token')");
my $pid = $c->query_safe('SELECT pg_backend_pid()');
my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 of the consumer's backend (pid $pid) before its ack commits");
$node->wait_for_crash_restart($offset);
eval { local $SIG{PIPE} = 'IGNORE'; $c->quit; };
is(state(), $before, 'after the crash the checkpoints are the last committed ones');
ok($node->poll_query_until($db,
		"SELECT NOT leased FROM projection.feed_status WHERE feed = 'd' AND partition = 1", 't'),
	'the killed consumer\'s lease expires');

# ---------------------------------------------------------------------
# immediate stop right after an ack committed
# ---------------------------------------------------------------------
my $p1b = poll_ack($db, 'd', 2, 1);
$node->stop('immediate');
$node->start;
(my $expect = $before) =~ s/d:1:$p1:/d:1:$p1b:/;
is(state(), $expect, 'after an immediate stop the committed ack holds');

# ---------------------------------------------------------------------
# dump and restore
# ---------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/feeds.dump", '-d', $db ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		'pg_restore', '--single-transaction', '--exit-on-error', '-d', 'restored',
		"$dir/feeds.dump"
	],
	'pg_restore');
is(state('restored'), $expect, 'the restored database has the same feeds, checkpoints, owner and pause flag');
my $next = $node->safe_psql('restored',
	"SELECT min(global_position) FROM projection.poll('d', 5, partition => 1)");
is($next,
	$node->safe_psql('restored',
		"SELECT min(global_position) FROM projection.events
		  WHERE global_position > $p1b AND projection.feed_partition(stream_id, 2) = 1"),
	'a poll of the restored feed goes on after its checkpoint');
is($node->safe_psql('restored', "SELECT count(*) FROM projection.poll('p', 5)"),
	'0', 'the paused feed stays paused');
$node->safe_psql('restored', "SELECT projection.resume_feed('p')");
is($node->safe_psql('restored',
		"SELECT bool_and(event_type = 'A') AND count(*) = 5 FROM projection.poll('p', 5)"),
	't', 'and, resumed, hands out only its event types');

$node->stop;
done_testing();
