# test/t/072_log_at_commit.pl -- the LOG lines of management calls are
# written when, and only if, the change commits.
#
# pause, resume, rebuild, skip and retry_dead_letters inside a savepoint
# that is rolled back, or a transaction that aborts, leave no line in the
# server log; the same calls committed leave one each.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('logs');
$node->safe_psql(
	$db, q{
CREATE TABLE seen (pos bigint);
CREATE TABLE cured ();
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'poison') IS NOT NULL AND NOT EXISTS (SELECT FROM public.cured) THEN
		RAISE EXCEPTION 'poison event %', e.global_position;
	END IF;
	INSERT INTO public.seen VALUES (e.global_position);
END $$;
SELECT projection.create('rolled', 'h', mode => 'async');
SELECT projection.create('kept', 'h', mode => 'async');
});

my $offset = -s $node->logfile;
# rolled back: a savepoint, and a whole transaction
$node->safe_psql(
	$db, q{
BEGIN;
SAVEPOINT s;
SELECT projection.pause('rolled');
ROLLBACK TO SAVEPOINT s;
COMMIT;
BEGIN;
SELECT projection.pause('rolled');
ROLLBACK;
SELECT projection.pause('kept');
});
$node->safe_psql(
	$db, q{
SELECT projection.pause('rolled');
BEGIN;
SAVEPOINT s;
SELECT projection.resume('rolled');
SAVEPOINT t;
SELECT 1;
RELEASE SAVEPOINT t;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT projection.resume('kept');
BEGIN;
SAVEPOINT s;
SELECT projection.rebuild('rolled');
ROLLBACK TO SAVEPOINT s;
SELECT projection.rebuild('kept');
COMMIT;
});
my $log = slurp_file($node->logfile, $offset);
like($log, qr/projection "kept" paused/, 'a committed pause is logged');
like($log, qr/projection "kept" resumed/, 'a committed resume is logged');
like($log, qr/projection "kept" rebuilt from/, 'a committed rebuild is logged');
like($log, qr/projection "rolled" paused/, 'the committed pause of "rolled" is logged');
my @paused = ($log =~ /projection "rolled" paused/g);
is(scalar @paused, 1, 'the pauses rolled back (savepoint, transaction) are not logged');
unlike($log, qr/projection "rolled" resumed/, 'the resume rolled back with its savepoint is not');
unlike($log, qr/projection "rolled" rebuilt/, 'nor the rebuild');

# skip and retry_dead_letters: a poison event fails "kept"
$node->safe_psql($db, q{SELECT projection.pause('rolled')});
my $poison = $node->safe_psql($db, q{SELECT projection.append('s', 'E', '{"poison": true}')});
$node->wait_for_state($db, 'kept', 'failed') or die 'kept did not fail';

$offset = -s $node->logfile;
$node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.skip('kept');
ROLLBACK;
});
$log = slurp_file($node->logfile, $offset);
unlike($log, qr/skipped event \d+ with projection.skip/, 'a skip rolled back is not logged');
is($node->safe_psql($db, q{SELECT state FROM projection.status WHERE name = 'kept'}),
	'failed', 'and changed nothing');
$node->safe_psql($db, q{SELECT projection.skip('kept')});
$log = slurp_file($node->logfile, $offset);
like(
	$log,
	qr/projection "kept" skipped event $poison with projection.skip\(\); it is in projection.dead_letters/,
	'a committed skip is logged');
like($log, qr/DETAIL:  The event had failed with SQLSTATE P0001/, 'with its detail');

$node->safe_psql($db, 'INSERT INTO cured DEFAULT VALUES');
$offset = -s $node->logfile;
$node->safe_psql(
	$db, q{
BEGIN;
SAVEPOINT s;
SELECT * FROM projection.retry_dead_letters('kept');
ROLLBACK TO SAVEPOINT s;
COMMIT;
});
$log = slurp_file($node->logfile, $offset);
unlike($log, qr/dead letters retried with projection.retry_dead_letters/,
	'a retry of dead letters rolled back is not logged');
$node->safe_psql($db, q{SELECT * FROM projection.retry_dead_letters('kept')});
$log = slurp_file($node->logfile, $offset);
like(
	$log,
	qr/projection "kept": 1 dead letters retried with projection.retry_dead_letters\(\), 1 applied, 0 still failing/,
	'a committed one is');

$node->stop;
done_testing();
