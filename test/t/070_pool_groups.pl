# test/t/070_pool_groups.pl -- worker groups without async work start no worker.
#
# projection.workers_per_database = 4: a database's projections fall into
# four worker groups (projection id modulo 4).  Creating, resuming or
# rebuilding an async projection is async work only for its own group, and
# only when it has events to apply: a group without a projection, or whose
# projections are caught up, gets no worker.  projection.worker_idle_timeout
# is 0, so a worker leaves as soon as it is caught up and every worker in the
# log was started for the step before.  A second database, "sentinel", is
# served after each step: once its event is applied and the launcher is idle,
# the launcher has seen the step's commit.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('groups');
$node->append_conf(
	'postgresql.conf', q{
projection.workers_per_database = 4
projection.worker_idle_timeout = 0
});
$node->start;

for my $db (qw(g sentinel))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->create_ext($db);
	$node->safe_psql(
		$db, q{
CREATE TABLE seen (name text, pos bigint);
CREATE FUNCTION h(e projection.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.seen VALUES (e.data->>'to', e.global_position) $$;
});
}
$node->safe_psql('sentinel', q{SELECT projection.create('s', 'h', mode => 'async')});

# the launcher has served every commit made before this call
sub settle
{
	my $pos = $node->safe_psql('sentinel', q{SELECT projection.append('s', 'E', '{"to": "s"}')});
	is($node->safe_psql('sentinel', "SELECT projection.wait('s', $pos, '60 s')"),
		't', 'the sentinel database was served');
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'projection launcher' AND state = 'idle'}
		),
		'the launcher is idle');
	ok($node->wait_for_no_worker('sentinel'), 'the sentinel worker left');
	return;
}

# the worker groups started for database "g" in the log after $offset
sub started_groups
{
	my ($offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my %groups = map { $_ => 1 } ($log =~ /starting worker (\d+) for database "g"/g);

	return join(',', sort keys %groups);
}

settle();

# projection ids 1, 2, ...: group = id % 4
my $offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.create('a', 'h', mode => 'async')});
settle();
is(started_groups($offset), '', 'creating an async projection on an empty store starts no worker');

$offset = -s $node->logfile;
my $pos = $node->safe_psql('g', q{SELECT projection.append('x', 'E', '{"to": "a"}')});
is($node->safe_psql('g', "SELECT projection.wait('a', $pos, '60 s')"), 't', 'the event is applied');
settle();
is(started_groups($offset), '1', 'by a worker of the projection\'s own group only');
ok($node->wait_for_no_worker('g'), 'which left once caught up');

$offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.create('b', 'h', mode => 'async', start_from => 'end')});
settle();
is(started_groups($offset), '', 'creating a projection that starts at the end starts no worker');

$offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.pause('a')});
$node->safe_psql('g', q{SELECT projection.resume('a')});
settle();
is(started_groups($offset), '', 'resuming a caught-up projection starts no worker');

$offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.rebuild('a')});
settle();
is(started_groups($offset), '', 'rebuilding a projection starts no worker when nothing is left after it');

# events while "a" is paused: "b" (group 2) applies them; resuming "a"
# starts its group's worker only
$node->safe_psql('g', q{SELECT projection.pause('a')});
$offset = -s $node->logfile;
$pos = $node->safe_psql('g',
	q{SELECT max(projection.append('x', 'E', '{"to": "ab"}')) FROM generate_series(1, 3)});
is($node->safe_psql('g', "SELECT projection.wait('b', $pos, '60 s')"), 't', 'b applied the events');
settle();
is(started_groups($offset), '2', 'appending while a is paused starts the worker of b\'s group only');
ok($node->wait_for_no_worker('g'), 'which left');

$offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.resume('a')});
is($node->safe_psql('g', "SELECT projection.wait('a', $pos, '60 s')"), 't', 'the resumed projection caught up');
settle();
is(started_groups($offset), '1', 'resuming a projection with events to apply starts its group\'s worker only');
is($node->safe_psql('g', q{SELECT count(*) FROM seen WHERE name = 'ab'}), '6', 'the three events applied once by each projection');

# a projection created from the beginning over existing events (id 3, group 3)
ok($node->wait_for_no_worker('g'), 'no worker in g');
$offset = -s $node->logfile;
$node->safe_psql('g', q{SELECT projection.create('c', 'h', mode => 'async')});
is($node->safe_psql('g', "SELECT projection.wait('c', $pos, '60 s')"), 't', 'the new projection caught up');
settle();
is(started_groups($offset), '3', 'a projection created over existing events gets its group\'s worker only');

$node->stop;
done_testing();
