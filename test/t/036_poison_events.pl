
# test/t/036_poison_events.pl -- the way out of a poison event: skip() and
# retry_dead_letters() with the worker.
#
# Covers: an on_error 'stop' projection fails at a poison event in the
# middle of a backlog; a non-owner's skip() is refused (42501) and changes
# nothing; the owner's skip() records the event in projection.dead_letters,
# logs it, and the worker resumes after it: every other event applied exactly
# once; with on_error 'skip' more dead letters pile up; after the handler is
# fixed, retry_dead_letters() applies them through the current handler, in
# position order, as the owner, and removes them; one that still fails stays
# with its new error; status.dead_letters counts them.

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
CREATE ROLE poison_owner LOGIN;
CREATE ROLE poison_other LOGIN;
GRANT SELECT ON projection.events TO poison_owner;
CREATE SCHEMA model AUTHORIZATION poison_owner;
SET ROLE poison_owner;
CREATE TABLE model.applied (seq bigserial, pos bigint, stream_id text, by_role text);
CREATE TABLE model.poison (stream_id text PRIMARY KEY);
CREATE FUNCTION model.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT FROM model.poison p WHERE p.stream_id = e.stream_id) THEN
		RAISE EXCEPTION 'cannot apply stream %', e.stream_id USING ERRCODE = '22P02';
	END IF;
	INSERT INTO model.applied (pos, stream_id, by_role) VALUES (e.global_position, e.stream_id, current_user);
END $$;
INSERT INTO model.poison VALUES ('bad-1'), ('bad-2'), ('bad-3');
SELECT projection.create('pz', 'model.apply', tables => '{model.applied}');
});

# a backlog with a poison event in the middle
$node->safe_psql($db,
	"SELECT projection.append('ok-' || i, 'E', '{}') FROM generate_series(1, 200) i");
my $poison = $node->safe_psql($db, "SELECT projection.append('bad-1', 'E', '{}')");
$node->safe_psql($db,
	"SELECT projection.append('ok-' || i, 'E', '{}') FROM generate_series(201, 400) i");
my $last = $node->max_position($db);

ok($node->wait_for_state($db, 'pz', 'failed'), 'the projection fails at the poison event');
my $st = $node->status($db, 'pz', [qw(position last_error_position dead_letters)]);
is($st->{last_error_position}, $poison, 'failed at the poison event');
is($node->safe_psql($db, 'SELECT count(*) FROM model.applied'), '200',
	'the events before it are applied');

# another role may not skip it
my ($rc, $out, $err) = $node->psql($db, "SELECT projection.skip('pz')",
	extra_params => [ '-U', 'poison_other', '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/42501/, "a non-owner's skip() is refused with 42501");
is($node->safe_psql($db, "SELECT state || '/' || dead_letters FROM projection.status WHERE name = 'pz'"),
	'failed/0', 'and changes nothing');

# the owner skips it
my $offset = -s $node->logfile;
is( $node->safe_psql($db, "SELECT projection.skip('pz')", extra_params => [ '-U', 'poison_owner' ]),
	$poison, 'skip() returns the skipped position');
ok($node->wait_for_log(qr/projection "pz" skipped event $poison with projection\.skip\(\)/, $offset),
	'skip() is logged');
ok($node->wait_caught_up($db, 'pz', $last), 'the worker resumes after the skipped event');
is( $node->safe_psql($db,
		"SELECT count(*) || '/' || count(DISTINCT pos) || '/' || count(*) FILTER (WHERE pos = $poison) FROM model.applied"),
	'400/400/0', 'every other event applied exactly once, the poison event not');
is( $node->safe_psql($db,
		"SELECT global_position || '/' || stream_id || '/' || sqlstate || '/' || error FROM projection.dead_letters WHERE name = 'pz'"),
	"$poison/bad-1/22P02/cannot apply stream bad-1",
	'the skipped event is in dead_letters with its error');

# on_error 'skip' from now on: two more dead letters, the worker goes on
$node->safe_psql($db, "SELECT projection.alter('pz', on_error => 'skip')",
	extra_params => [ '-U', 'poison_owner' ]);
my $bad2 = $node->safe_psql($db, "SELECT projection.append('bad-2', 'E', '{}')");
$node->safe_psql($db, "SELECT projection.append('ok-401', 'E', '{}')");
my $bad3 = $node->safe_psql($db, "SELECT projection.append('bad-3', 'E', '{}')");
$node->safe_psql($db, "SELECT projection.append('ok-402', 'E', '{}')");
ok($node->wait_caught_up($db, 'pz'), 'with on_error skip the worker goes past them');
is($node->safe_psql($db, "SELECT dead_letters FROM projection.status WHERE name = 'pz'"),
	'3', 'status counts three dead letters');

# a non-owner's retry is refused and changes nothing
($rc, $out, $err) = $node->psql($db, "SELECT projection.retry_dead_letters('pz')",
	extra_params => [ '-U', 'poison_other', '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/42501/, "a non-owner's retry_dead_letters() is refused with 42501");
is($node->safe_psql($db, "SELECT count(*) FROM projection.dead_letters WHERE name = 'pz'"),
	'3', 'and changes nothing');

# the data is fixed for two streams; bad-2 stays poisonous
$node->safe_psql($db, "DELETE FROM model.poison WHERE stream_id IN ('bad-1', 'bad-3')");
$offset = -s $node->logfile;
is( $node->safe_psql($db,
		"SELECT retried || '/' || applied || '/' || failed FROM projection.retry_dead_letters('pz')",
		extra_params => [ '-U', 'poison_owner' ]),
	'3/2/1', 'retry_dead_letters() reports 3 retried, 2 applied, 1 still failing');
ok($node->wait_for_log(qr/projection "pz": 3 dead letters retried/, $offset), 'the retry is logged');
is( $node->safe_psql($db,
		"SELECT string_agg(pos::text || ':' || by_role, ',' ORDER BY seq) FROM model.applied WHERE stream_id LIKE 'bad-%'"),
	"$poison:poison_owner,$bad3:poison_owner",
	'the fixed ones applied in position order, as the owner');
is( $node->safe_psql($db,
		"SELECT global_position || '/' || error FROM projection.dead_letters WHERE name = 'pz'"),
	"$bad2/cannot apply stream bad-2", 'the one still failing stays');
is($node->safe_psql($db, "SELECT dead_letters FROM projection.status WHERE name = 'pz'"),
	'1', 'status counts one dead letter');

# the worker kept running meanwhile
$node->safe_psql($db, "SELECT projection.append('ok-403', 'E', '{}')");
ok($node->wait_caught_up($db, 'pz'), 'the projection keeps running after the retry');
is($node->safe_psql($db, 'SELECT count(*) - count(DISTINCT pos) FROM model.applied'),
	'0', 'no event applied twice');

$node->stop;
done_testing();
