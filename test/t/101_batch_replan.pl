
# test/t/101_batch_replan.pl -- a batch statement's kept plan is planned again
# when the tables it reads or writes have grown (1.5).
#
# The plan of a batch statement is kept and generic.  Planned while the read
# model is empty (at the worker's first batch of a catch-up, at the start of
# a rebuild of a new read model), a MERGE keyed by the batch's key is a hash
# join over a Seq Scan of the whole read model; kept while the read model
# grows to tens of thousands of rows, every later batch would scan it all
# (work growing with batches x rows).  With auto_explain logging every
# nested statement's plan, the last batches of a catch-up and of a rebuild
# must read the read model through its primary key instead, and the read
# model must be exactly right.  (random_page_cost = 1.1, the usual setting
# for SSDs, so that the index wins at tens of thousands of rows already;
# with the default of 4 it does at about 100,000.)

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $node = new_node('main');
$node->append_conf('postgresql.conf', qq(
shared_preload_libraries = 'projection,auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_analyze = off
projection.replay_batch_size = 500
projection.batch_size = 500
random_page_cost = 1.1
));
$node->start;

my $db = 'postgres';
my $n = 40000;
$node->create_ext($db);
$node->safe_psql(
	$db, qq{
CREATE TABLE summary (order_id text PRIMARY KEY, lines int NOT NULL, total bigint NOT NULL);
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'order-' || (i % $n), i / $n + 1, 'LineAdded', jsonb_build_object('amount', i % 7)
  FROM generate_series(0, 2 * $n - 1) i;
});

# the statement of the seed's order summary: one row per order
my $merge = q{
MERGE INTO public.summary s
USING (SELECT stream_id, count(*) AS n, sum((data->>'amount')::bigint) AS amount
         FROM batch GROUP BY stream_id) b
   ON s.order_id = b.stream_id
 WHEN MATCHED THEN UPDATE SET lines = s.lines + b.n, total = s.total + b.amount
 WHEN NOT MATCHED THEN INSERT VALUES (b.stream_id, b.n, b.amount)
};

# the plans auto_explain logged for the batch statement since offset, in order
sub merge_plans
{
	my ($offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my @plans;
	for my $entry (split /\n(?=\S.*?LOG:\s+duration:)/, $log)
	{
		push @plans, $entry if $entry =~ /Query Text:.*MERGE INTO public\.summary/s;
	}
	return @plans;
}

sub check_summary
{
	my ($what) = @_;
	is( $node->safe_psql(
			$db, q{
SELECT count(*), sum(lines), sum(total) FROM summary;
}),
		$node->safe_psql(
			$db, q{
SELECT count(DISTINCT stream_id), count(*), sum((data->>'amount')::bigint) FROM projection.events;
}),
		"$what: the read model is exact");
}

sub check_last_plans
{
	my ($what, @plans) = @_;
	cmp_ok(scalar(@plans), '>=', 50, "$what: the batch statement ran in many batches");
	my @last = @plans[-5 .. -1];
	is(scalar(grep { /Seq Scan on summary/ } @last), 0,
		"$what: the last batches do not scan the whole read model")
	  or diag($last[-1]);
	is(scalar(grep { /Index Scan using summary_pkey on summary/ } @last), 5,
		"$what: the last batches read the read model by its key")
	  or diag($last[-1]);
}

# catch-up: the worker's first batch plans the statement over an empty read model
my $offset = -s $node->logfile;
$node->safe_psql(
	$db, qq{
BEGIN;
SELECT projection.create('orders', NULL, '{LineAdded}', tables => '{summary}');
SELECT projection.on_batch('orders', \$m\$$merge\$m\$);
COMMIT;
});
$node->wait_caught_up($db, 'orders');
check_summary('catch-up');
check_last_plans('catch-up', merge_plans($offset));

# rebuild of a new read model: planned at its start, over an empty table
$node->safe_psql(
	$db, q{
BEGIN;
SELECT projection.drop('orders');
DROP TABLE summary;
CREATE TABLE summary (order_id text PRIMARY KEY, lines int NOT NULL, total bigint NOT NULL);
COMMIT;
});
$node->safe_psql(
	$db, qq{
SELECT projection.create('orders', NULL, '{LineAdded}', tables => '{summary}',
						 start_from => 'end');
SELECT projection.on_batch('orders', \$m\$$merge\$m\$);
});
$offset = -s $node->logfile;
$node->safe_psql($db, q{SELECT projection.rebuild('orders')});
check_summary('rebuild');
check_last_plans('rebuild', merge_plans($offset));

$node->stop;
done_testing();
