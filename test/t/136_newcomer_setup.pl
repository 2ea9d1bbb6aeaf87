
# test/t/136_newcomer_setup.pl -- the set-up mistakes of a new user, and
# what the extension says about them at once.
#
# A server without shared_preload_libraries: creating an async projection
# warns (55000, with the HINT to preload), and so does creating a feed (1.7:
# before, create_feed succeeded silently and every poll failed); a feed
# starting at the end and a poll are refused, saying why.  The extension in
# a second database of that server says the same.  A non-owner managing a
# projection whose owner role is gone gets "must be owner" with no HINT (the
# HINT names the owner role to GRANT, and there is none).  Then the library
# preloaded with too few max_worker_processes: create warns, and its HINT
# counts the workers of one database (1.6 said "per database", which reads
# as a multiple of the number of databases, contrary to the worker pool).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->start;

my ($ret, $out, $err);
for my $db ('postgres', 'second')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db") if $db ne 'postgres';
	$node->safe_psql($db, 'CREATE EXTENSION projection');
	$node->safe_psql($db, 'CREATE TABLE t (id bigint PRIMARY KEY)');

	($ret, $out, $err) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT projection.create('a', NULL, tables => '{t}')");
	is($ret, 0, "$db: create of an async projection without the preloaded library succeeds");
	like($err, qr/WARNING:  55000: async projections will not run: the projection library is not preloaded/,
		"$db: with a WARNING saying why");
	like($err, qr/HINT:  Add "projection" to shared_preload_libraries and restart the server\./,
		"$db: and what to do");

	($ret, $out, $err) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT projection.create_feed('f')");
	is($ret, 0, "$db: create_feed without the preloaded library succeeds");
	like($err, qr/WARNING:  55000: feed "f" cannot be polled: the projection library is not preloaded/,
		"$db: with a WARNING that its polls will fail");
	like($err, qr/HINT:  Add "projection" to shared_preload_libraries and restart the server\./,
		"$db: and what to do");
	is($node->safe_psql($db, "SELECT count(*) FROM projection.feeds WHERE name = 'f'"),
		'1', "$db: the feed exists");

	($ret, $out, $err) = $node->psql($db, "SELECT * FROM projection.poll('f')");
	isnt($ret, 0, "$db: its poll fails");
	like($err, qr/ERROR:  cannot poll a feed: the projection library is not preloaded/, "$db: saying why");

	($ret, $out, $err) = $node->psql($db, "SELECT projection.create_feed('g', start_from => 'end')");
	isnt($ret, 0, "$db: a feed starting at the end is refused");
	like($err, qr/ERROR:  cannot create a feed starting at the end: the projection library is not preloaded/,
		"$db: saying why");

	# an inline projection needs no preload, and says nothing about workers
	($ret, $out, $err) = $node->psql($db,
		"SELECT projection.create('i', NULL, mode => 'inline', tables => '{t}', start_from => 'end')");
	is($ret, 0, "$db: an inline projection is created");
	unlike($err, qr/WARNING/, "$db: without a WARNING");
}

# a non-owner's management call on a projection whose owner role is gone
# (dropped where nothing refused it: no library loaded, the owner entries
# lost): "must be owner", without a GRANT of a role that does not exist
$node->safe_psql(
	'postgres', q{
CREATE ROLE regress_gone;
CREATE ROLE regress_bystander;
GRANT SELECT ON projection.events TO regress_gone;
GRANT SELECT, INSERT, UPDATE, DELETE ON t TO regress_gone;
SET ROLE regress_gone;
SELECT projection.create('gone', NULL, tables => '{t}', start_from => 'end');
RESET ROLE;
REVOKE ALL ON projection.events, t FROM regress_gone;
});
# in a session that has not loaded the library (which would refuse DROP ROLE)
$node->safe_psql(
	'postgres', q{
DELETE FROM pg_shdepend WHERE classid = 'projection.projections'::regclass;
DROP ROLE regress_gone;
});
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE regress_bystander;\n\\set VERBOSITY verbose\nSELECT projection.pause('gone')");
isnt($ret, 0, "a non-owner's pause of a projection whose owner is gone fails");
like($err, qr/ERROR:  42501: must be owner of projection "gone"/, 'as "must be owner"');
unlike($err, qr/HINT/, 'with no GRANT to suggest');
$node->safe_psql('postgres', "SELECT projection.drop('gone'); DROP ROLE regress_bystander");

# the library preloaded, with too few background workers for one database's groups
$node->stop;
$node->append_conf('postgresql.conf', qq(
shared_preload_libraries = 'projection'
max_worker_processes = 3
));
$node->start;
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT projection.create('b', NULL, tables => '{t}', start_from => 'end')");
is($ret, 0, 'create with max_worker_processes = 3 succeeds');
like($err, qr/WARNING:  55000: async projections may not run: max_worker_processes is 3/,
	'with a WARNING naming max_worker_processes');
like(
	$err,
	qr/HINT:  Raise max_worker_processes to at least 4 \(the launcher, the logical replication launcher and the projection\.workers_per_database workers of one busy database\), and restart the server\./,
	'whose HINT counts the workers of one database');
($ret, $out, $err) = $node->psql('postgres', "SELECT projection.create_feed('h')");
is($ret, 0, 'create_feed with the library preloaded');
unlike($err, qr/WARNING/, 'says nothing about preloading');

$node->stop;
done_testing();
