
# test/t/055_exporter.pl -- monitoring/postgres_exporter/queries.yaml, read
# by the real exporter: Debian's prometheus-postgres-exporter runs against
# this test server as a role without superuser (pg_monitor and SELECT on
# projection.dead_letters.name only, as the README says), and its /metrics
# must show each projection's position, lag, state and dead letters, and the
# worker counts, with the values the server has.
#
# Covers: a projection caught up, one paused with a lag, one failed on a
# poison event, one that skipped two events into dead letters, an inline
# one; the worker counts equal pg_stat_activity's; a feed's partitions; a
# feed with park => 'stream' whose consumer nacked an event max_attempts
# times, parking its stream: projection_feed_parked_streams (1.7) is 1 on
# that partition and 0 on the other, as feed_status says; no event data
# (the failing handler's message quotes the event) reaches the metrics; the
# exporter's role is not a superuser and cannot read events.
#
# test/lib.sh installs the exporter on the host and test/servers.sh in the
# chroots of the test matrix, so under test/suite.sh (PJ_SERVER_NAME set) a
# missing exporter is a failure; run by hand without it, the test is skipped.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes ();

my $exporter;
for my $dir (split /:/, ($ENV{PATH} // '') . ':/usr/bin:/usr/sbin')
{
	if (-x "$dir/prometheus-postgres-exporter")
	{
		$exporter = "$dir/prometheus-postgres-exporter";
		last;
	}
}
if (!defined $exporter)
{
	die 'prometheus-postgres-exporter is not installed' if $ENV{PJ_SERVER_NAME};
	plan skip_all => 'prometheus-postgres-exporter is not installed';
}

my $queries = "$FindBin::RealBin/../../monitoring/postgres_exporter/queries.yaml";
ok(-r $queries, 'the queries file is in the repository');

my $db = 'postgres';
my $node = start_node('main');

$node->safe_psql(
	$db, q{
CREATE TABLE applied (name text, pos bigint);
CREATE FUNCTION h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'poison' THEN
        RAISE 'cannot apply %', e.data->>'poison';
    END IF;
    INSERT INTO public.applied VALUES (e.stream_id, e.global_position);
END $$;
SELECT projection.create('caught_up', 'h', event_types => '{Good}');
SELECT projection.create('paused', 'h');
SELECT projection.pause('paused');
SELECT projection.create('failing', 'h');
SELECT projection.create('skipping', 'h', on_error => 'skip');
SELECT projection.create('inline_one', 'h', event_types => '{Good}', mode => 'inline');

SELECT projection.create_feed('search', partitions => 2);
SELECT projection.create_feed('parking', partitions => 2, max_attempts => 2, park => 'stream');

CREATE ROLE projection_exporter LOGIN;
GRANT pg_monitor TO projection_exporter;
GRANT SELECT (name) ON projection.dead_letters TO projection_exporter;
});
ok($node->wait_for_worker($db), 'workers running');
$node->safe_psql(
	$db, q{
SELECT projection.append('s-1', 'Good', '{}');
SELECT projection.append('s-1', 'Bad', '{"poison": "secret-card-4111"}');
SELECT projection.append('s-2', 'Bad', '{"poison": "secret-card-4222"}');
SELECT projection.append('s-2', 'Good', '{}');
});
my $last = $node->max_position($db);
ok($node->wait_caught_up($db, 'caught_up', $last), 'caught_up applied every event');

# the consumer of "parking" fails at the first event of partition 1 twice
# (max_attempts): its stream is parked
for my $attempt (1 .. 2)
{
	$node->safe_psql(
		$db, q{
SET client_min_messages = error;
SELECT projection.nack('parking', token, global_position, 'cannot index', '0 s')
  FROM projection.poll('parking', 1, partition => 1)});
}
is( $node->safe_psql(
		$db, q{SELECT partition || ':' || attempts || ':' || (released_at IS NULL) FROM projection.feed_parked_streams
                WHERE feed = 'parking'}),
	'1:2:true',
	'the second nack parked the stream of partition 1');
ok($node->wait_caught_up($db, 'skipping', $last), 'skipping went past both poison events');
ok($node->wait_for_state($db, 'failing', 'failed'), 'failing stopped at the poison event');

is( $node->safe_psql(
		$db, q{
SELECT rolsuper, has_table_privilege('projection_exporter', 'projection.events', 'SELECT'),
       has_column_privilege('projection_exporter', 'projection.dead_letters', 'error', 'SELECT')
  FROM pg_roles WHERE rolname = 'projection_exporter'}),
	'f|f|f',
	'the exporter role is no superuser and reads no event data');

# ---------------------------------------------------------------------
# the exporter
# ---------------------------------------------------------------------
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($out, $err) = ('', '');
my $dsn = sprintf('host=%s port=%d user=projection_exporter dbname=%s sslmode=disable',
	$node->host, $node->port, $db);
local $ENV{DATA_SOURCE_NAME} = $dsn;
my $h = IPC::Run::start(
	[
		$exporter, "--web.listen-address=127.0.0.1:$port",
		"--extend.query-path=$queries", '--log.level=warn'
	],
	'<', \undef, '>', \$out, '2>', \$err);

# scrape(): the metrics as { "metric{label=value,...}" => value }, the labels
# sorted, "server" left out
sub scrape
{
	my $res = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$port/metrics");
	return (undef, undef) unless $res->{success};
	my %m;
	for my $line (split /\n/, $res->{content})
	{
		next if $line =~ /^#/;
		next unless $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
		my ($metric, $labels, $value) = ($1, $2 // '', $3);
		my @l = sort grep { !/^server=/ } ($labels =~ /(\w+="[^"]*")/g);
		$m{ $metric . '{' . join(',', @l) . '}' } = $value;
	}
	return (\%m, $res->{content});
}

# the exporter needs a moment to listen: retry, bounded like poll_query_until
my ($m, $text);
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
while (time < $deadline)
{
	($m, $text) = scrape();
	last if $m && exists $m->{'pg_up{}'} && grep { /^projection_lag_events/ } keys %$m;
	Time::HiRes::usleep(100_000);
}
ok($m, 'the exporter serves /metrics') or diag("exporter stderr: $err");
is($m->{'pg_up{}'}, 1, 'the exporter reached the server');

sub metric
{
	my ($name, %labels) = @_;
	$labels{datname} //= $db;
	my $key = $name . '{'
	  . join(',', map { qq($_="$labels{$_}") } sort keys %labels) . '}';
	return $m->{$key};
}

my %status = map { my @f = split /\|/; $f[0] => [@f] } split /\n/,
  $node->safe_psql($db,
	'SELECT name, mode, position, lag_events, lag_seconds > 0 FROM projection.status');
for my $p (qw(caught_up paused failing skipping inline_one))
{
	my ($name, $mode, $position, $lag) = @{ $status{$p} };
	is(metric('projection_position', name => $p, mode => $mode),
		$position, "$p: position $position");
	is(metric('projection_lag_events', name => $p, mode => $mode),
		$lag, "$p: lag_events $lag");
}
is(metric('projection_lag_events', name => 'paused', mode => 'async'),
	4, 'the paused projection lags by its 4 events');
is(metric('projection_lag_events', name => 'failing', mode => 'async'),
	3, 'the failed one by the poison event and the two after it');
cmp_ok(metric('projection_lag_seconds', name => 'paused', mode => 'async'),
	'>', 0, 'the paused projection has a lag in seconds');
is(metric('projection_lag_seconds', name => 'caught_up', mode => 'async'),
	0, 'the caught-up one has none');
is(metric('projection_dead_letters', name => 'skipping', mode => 'async'),
	2, 'two dead letters for skipping');
is(metric('projection_dead_letters', name => 'failing', mode => 'async'),
	0, 'none for failing');

my %expect_state = (
	caught_up => 'running',
	paused => 'paused',
	failing => 'failed',
	skipping => 'running',
	inline_one => 'running');
for my $p (sort keys %expect_state)
{
	for my $s (qw(running paused failed rebuilding catching_up))
	{
		is(metric('projection_state_active', name => $p, state => $s),
			$s eq $expect_state{$p} ? 1 : 0,
			"$p: state $s is " . ($s eq $expect_state{$p} ? 1 : 0));
	}
}

# Worker counts: the exporter's must equal what a superuser sees in
# pg_stat_activity at the same moment; sample until the count is the same
# before and after a scrape (workers may start or stop in between).
my $count_sql = q{SELECT count(*) FILTER (WHERE datname = current_database()),
                         count(*) FROM pg_stat_activity WHERE backend_type = 'projection worker'};
my $same = 0;
my ($before, $after);
$deadline = time + $PostgreSQL::Test::Utils::timeout_default;
while (time < $deadline)
{
	$before = $node->safe_psql($db, $count_sql);
	($m, $text) = scrape();
	$after = $node->safe_psql($db, $count_sql);
	if ($m && $before eq $after)
	{
		$same = 1;
		last;
	}
}
ok($same, 'worker count stable across one scrape');
my ($here, $all) = split /\|/, $before;
# (how many there are is the pool's business: idle workers may leave)
is(metric('projection_workers_running'), $here, "workers of the database: $here");
is(metric('projection_workers_server_running'), $all, "workers of the server: $all");
is(metric('projection_workers_launchers'), 1, 'one launcher');
is( metric('projection_workers_slots'),
	$node->safe_psql($db, 'SHOW projection.max_workers'),
	'worker slots');

# the feed: nothing acknowledged yet, so each partition lags by its events
my %feed = map { my @f = split /\|/; $f[0] => [@f] } split /\n/,
  $node->safe_psql($db,
	"SELECT partition, position, lag_events, leased::int FROM projection.feed_status WHERE feed = 'search'");
is(scalar keys %feed, 2, 'the feed has two partitions');
my $feed_lag = 0;
for my $part (sort keys %feed)
{
	my (undef, $position, $lag, $leased) = @{ $feed{$part} };
	$feed_lag += $lag;
	is(metric('projection_feed_position', feed => 'search', partition => $part),
		$position, "feed partition $part: position $position");
	is(metric('projection_feed_lag_events', feed => 'search', partition => $part),
		$lag, "feed partition $part: lag_events $lag");
	is(metric('projection_feed_leased', feed => 'search', partition => $part),
		$leased, "feed partition $part: leased $leased");
}
is($feed_lag, 4, 'the feed lags by the four events over its partitions');
is(metric('projection_feed_parked', feed => 'search', partition => 0), 0, 'nothing parked');
is(metric('projection_feed_attempts', feed => 'search', partition => 0), 0, 'no failed attempt');
is(metric('projection_feed_parked_streams', feed => 'search', partition => $_),
	0, "no parked stream in partition $_ of search") for 0 .. 1;

# the feed that parked a stream
my %parking = map { my @f = split /\|/; $f[0] => $f[1] } split /\n/,
  $node->safe_psql($db,
	"SELECT partition, parked_streams FROM projection.feed_status WHERE feed = 'parking'");
is_deeply(\%parking, { 0 => 0, 1 => 1 }, 'feed_status: one parked stream, in partition 1');
for my $part (0 .. 1)
{
	is(metric('projection_feed_parked_streams', feed => 'parking', partition => $part),
		$parking{$part}, "parking partition $part: parked_streams $parking{$part}");
}
is(metric('projection_feed_parked', feed => 'parking', partition => 1),
	1, 'the parked event counts in projection_feed_parked too');

unlike($text, qr/secret-card/, 'no event data in the metrics');
unlike($err, qr/level=error/, 'the exporter logged no error')
  or diag($err);

$h->kill_kill;
$node->stop;
done_testing();
