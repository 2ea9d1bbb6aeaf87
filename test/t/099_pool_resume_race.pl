# test/t/099_pool_resume_race.pl -- an append that commits while a resume is
# committing still gets a worker.
#
# A management call (here resume) decides at pre-commit whether its
# projection's group has work: a checkpoint below the sequence's last value.
# An append that draws its position after that check, and reads the
# registry before the resume is visible, sees the projection paused and
# asks for no worker either: without care, the event waits for the next
# append.  The resume is held between its pre-commit and its visibility by
# synchronous replication to a standby that does not exist (its commit is
# flushed, then waits, then becomes visible when the wait is cancelled).

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'race';
my $node = start_node('resume_race', db => $db, no_standby => 1,
	conf => 'projection.worker_idle_timeout = 0');
$node->safe_psql(
	$db, q{
CREATE TABLE seen (pos bigint);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
SELECT projection.create('p', 'h', mode => 'async');
});
my $pos = $node->safe_psql($db, q{SELECT projection.append('s', 'E', '{}')});
is($node->safe_psql($db, "SELECT projection.wait('p', $pos, '60 s')"), 't', 'the first event is applied');
ok($node->wait_for_no_worker($db), 'the worker left once caught up');
$node->safe_psql($db, q{SELECT projection.pause('p')});

# the resume: past its pre-commit, waiting for the standby, not yet visible
my $resume = $node->background_psql($db);
$resume->query_safe(q{SET synchronous_commit = on; SET application_name = 'resumer'});
$resume->query_until(qr/resuming/, q{\echo resuming
SELECT projection.resume('p');
});
ok($node->poll_query_until($db, 'SELECT ' . $node->syncrep_waiting('resumer')),
	'the resume waits for synchronous replication');

# the append, committed while the resume is not yet visible
$pos = $node->safe_psql($db, q{SELECT projection.append('s', 'E', '{}')});
is($node->safe_psql($db, q{SELECT state FROM projection.projections WHERE name = 'p'}),
	'paused', 'the append committed while p was still paused for everyone else');

# the resume becomes visible
$node->syncrep_release($db, 'resumer');
$resume->quit;
is($node->safe_psql($db, q{SELECT state FROM projection.projections WHERE name = 'p'}),
	'running', 'the resume committed');

is($node->safe_psql($db, "SELECT projection.wait('p', $pos, '30 s')"), 't',
	'the event appended during the resume is applied');
is($node->safe_psql($db, 'SELECT count(*) FROM seen'), '2', 'both events, once each');

$node->stop;
done_testing();
