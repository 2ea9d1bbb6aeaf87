
# test/t/053_feed_concurrent_consumers.pl -- four consumers running at the
# same time on a feed of eight partitions, long-polling while pgbench writers
# append in long transactions that commit out of order.
#
# Each consumer is a procedure looping in its own session: poll (long-poll),
# write the events into a sink table and commit (the lease is then visible
# to the others), ack and commit.  The sink's UNIQUE (global_position) makes
# a second delivery of an acked event fail its consumer.  At the end: every
# committed event is in the sink exactly once, each stream's events were
# written in version order, each stream by one partition, and the work was
# shared by the consumers.

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
my $node = start_node('main', db => $db);
$node->safe_psql(
	$db, q{
CREATE TABLE sink (seq bigserial PRIMARY KEY, consumer int NOT NULL, partition int NOT NULL,
                   global_position bigint NOT NULL UNIQUE, stream_id text NOT NULL,
                   stream_version bigint NOT NULL);
CREATE TABLE ctl (done boolean NOT NULL);
INSERT INTO ctl VALUES (false);
SELECT projection.create_feed('eight', partitions => 8);
CREATE PROCEDURE consume(me int) LANGUAGE plpgsql AS $$
DECLARE
	tok text;
	n int;
	idle int := 0;
BEGIN
	LOOP
		WITH p AS (SELECT * FROM projection.poll('eight', 20, wait => '100 ms')),
		     w AS (INSERT INTO sink (consumer, partition, global_position, stream_id, stream_version)
		           SELECT me, p.partition, p.global_position, p.stream_id, p.stream_version FROM p)
		SELECT min(p.token), count(*) INTO tok, n FROM p;
		COMMIT;
		IF n > 0 THEN
			PERFORM projection.ack('eight', tok);
			COMMIT;
			idle := 0;
		ELSE
			idle := idle + 1;
		END IF;
		EXIT WHEN idle >= 5 AND (SELECT done FROM ctl);
	END LOOP;
END
$$;
});
my $start = $node->safe_psql($db, 'SELECT COALESCE(max(global_position), 0) FROM projection.events');

my @consumers;
for my $i (1 .. 4)
{
	my ($out, $err) = ('', '');
	push @consumers,
	  [
		IPC::Run::start(
			[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', "CALL consume($i)" ],
			'>', \$out, '2>', \$err,
			IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default)),
		\$err
	  ];
}

$node->pgbench(
	'-n -c 4 -j 2 -t 80',
	0,
	[qr{processed: 320/320}],
	[qr{^$}],
	'pgbench: writers with long transactions',
	{
		'053_writers' => q{
\set r random(1, 100)
\set s random(1, 40)
BEGIN;
SELECT projection.append('s-' || :s, 'Step', '{}');
SELECT pg_sleep(random() * 0.02);
SELECT projection.append('s-' || :s, 'Step', '{}');
\if :r <= 10
SELECT pg_sleep(0.1);
\endif
\if :r > 85
ROLLBACK;
\else
COMMIT;
\endif
}
	},
	$db);

$node->safe_psql($db, 'UPDATE ctl SET done = true');
for my $c (@consumers)
{
	my ($h, $err) = @$c;
	ok($h->finish, 'a consumer ended cleanly') or diag($$err);
}

is( $node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position) FROM sink"),
	$node->safe_psql($db,
		"SELECT string_agg(global_position::text, ',' ORDER BY global_position)
		   FROM projection.events WHERE global_position > $start"),
	'every committed event is in the sink, once');
is( $node->safe_psql($db, q{
SELECT count(*) FROM (
  SELECT stream_version, lag(stream_version) OVER (PARTITION BY stream_id ORDER BY seq) AS prev
    FROM sink) s
 WHERE prev IS NOT NULL AND stream_version <> prev + 1}),
	'0', "each stream's events were written in version order, none missing");
is($node->safe_psql($db,
		'SELECT count(*) FROM (SELECT stream_id FROM sink GROUP BY stream_id HAVING count(DISTINCT partition) > 1) s'),
	'0', 'each stream came from one partition');
is($node->safe_psql($db, 'SELECT count(DISTINCT partition) FROM sink'),
	'8', 'all eight partitions served');
cmp_ok($node->safe_psql($db, 'SELECT count(DISTINCT consumer) FROM sink'),
	'>=', 2, 'by several consumers');
is($node->safe_psql($db,
		"SELECT sum(lag_events) || ' ' || bool_or(leased) FROM projection.feed_status WHERE feed = 'eight'"),
	'0 false', 'nothing left, no lease held');

$node->stop;
done_testing();
