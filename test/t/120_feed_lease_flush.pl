
# test/t/120_feed_lease_flush.pl -- a poll commits its lease without
# waiting for the WAL flush only when the lease is all its transaction
# writes (1.4's asynchronous lease commit).
#
# The server has a synchronous standby that never comes
# (synchronous_standby_names = 'nobody'): a transaction that commits with
# synchronous_commit = on waits for it (wait_event SyncRep) and stays
# invisible, one that commits with synchronous_commit off does not wait.
# That tells, without timing, which way a commit went.
#
# Covers:
#   - a plain "SELECT ... FROM projection.poll(...)" in autocommit commits
#     its lease without waiting;
#   - a pipeline (extended protocol, one transaction up to the Sync) that
#     appends an event and then polls, or polls and then appends, commits
#     the append as the session's synchronous_commit says: the event must
#     not become visible (acknowledged to the client) before it is
#     durable.  The poll's lease commit used to switch the whole
#     transaction to synchronous_commit off (IsTransactionBlock() is false
#     in a pipeline), so an append acknowledged to its client could be lost
#     in a crash.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'flush';
my $node = start_node('lease_flush', db => $db, no_standby => 1);
$node->safe_psql(
	$db, q{
SELECT projection.create_feed('f');
SELECT projection.append('s', 'E', '{}') FROM generate_series(1, 5);
});

# Wait until the session named "app" either waits for the standby
# ('waited') or its transaction became visible without waiting ('async');
# "visible" is a query that is true once the transaction's writes show.
sub commit_path
{
	my ($app, $visible) = @_;
	my $path = "CASE WHEN " . $node->syncrep_waiting($app)
	  . " THEN 'waited' WHEN ($visible) THEN 'async' END";
	my $result;

	$node->poll_query_until($db, "SELECT $path IS NOT NULL")
	  or return 'neither';
	$result = $node->safe_psql($db, "SELECT $path");
	# let a waiting commit go on (committed locally, with a WARNING)
	$node->syncrep_release($db, $app);
	return $result;
}

# ---------------------------------------------------------------------
# a poll of its own: its lease does not wait for the flush
# ---------------------------------------------------------------------
my $s = $node->background_psql($db, on_error_stop => 0);
$s->query_safe(q{SET synchronous_commit = on; SET application_name = 'poller'});
$s->query_until(qr/polling/, q{\echo polling
SELECT global_position FROM projection.poll('f', 2);
});
is(commit_path('poller', q{SELECT leased FROM projection.feed_status WHERE feed = 'f'}),
	'async', 'a poll of its own commits its lease without waiting for the flush');
$s->quit;
$node->safe_psql($db, q{SELECT projection.seek('f', 0)});

# ---------------------------------------------------------------------
# pipelines: the append's commit waits for the flush
# ---------------------------------------------------------------------
my %scripts = (
	'append_then_poll' => q{
\startpipeline
SELECT projection.append('pipe-1', 'E', '{}');
SELECT * FROM projection.poll('f', 2);
\endpipeline
},
	'poll_then_append' => q{
\startpipeline
SELECT * FROM projection.poll('f', 2);
SELECT projection.append('pipe-2', 'E', '{}');
\endpipeline
},);

my $i = 0;
for my $name (sort keys %scripts)
{
	my $stream = $scripts{$name} =~ /'(pipe-\d)'/ ? $1 : die;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/120_$name.sql";
	my ($out, $err) = ('', '');

	$i++;
	PostgreSQL::Test::Utils::append_to_file($file, $scripts{$name});
	# the environment of pgbench alone (safe_psql must not wait for the standby)
	my $h = IPC::Run::start(
		[
			'env', "PGAPPNAME=pipe$i", 'PGOPTIONS=-c synchronous_commit=on',
			'pgbench', '-n', '-M', 'extended', '-t', '1', '-f', $file,
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$out, '2>', \$err);
	is( commit_path(
			"pipe$i",
			"SELECT EXISTS (SELECT 1 FROM projection.events WHERE stream_id = '$stream')"),
		'waited',
		"$name: the pipeline's append waits for the flush before it is visible");
	$h->finish;
	$node->safe_psql($db, q{SELECT projection.seek('f', 0)});
}

$node->stop;
done_testing();
