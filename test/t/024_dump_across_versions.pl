
# test/t/024_dump_across_versions.pl -- pg_dump of a PostgreSQL 15 database
# restored into a newer server (17, 18) keeps the events, the projections,
# their checkpoints and dead letters, and the projections resume where they
# were.
#
# Two servers of different versions never run in one test process here (the
# newer ones live in chroots), so the test runs in two halves, handed over
# through a directory by test/run-tests.sh:
#
#   PJ_XVERSION_ROLE=source (the pg15 run): builds a database with an async
#     projection caught up, one paused with a lag, and an on_error 'skip'
#     projection with dead letters; writes what the copy must show into
#     PJ_XVERSION_DIR, then the dump (pg_dump -Fc), then the file "done".
#   PJ_XVERSION_ROLE=target (the pg17 and pg18 runs, after pg15): restores
#     that dump with its own pg_restore and compares; appends; resumes.
#
# Without those variables (a run of this file alone, or without pg15 in
# SERVERS) the test is skipped.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $dir = $ENV{PJ_XVERSION_DIR} // '';
my $role = $ENV{PJ_XVERSION_ROLE} // '';
plan skip_all => 'needs PJ_XVERSION_DIR and PJ_XVERSION_ROLE (set by test/run-tests.sh)'
  unless $dir ne '' && ($role eq 'source' || $role eq 'target');
plan skip_all => 'no dump from a source run in PJ_XVERSION_DIR'
  if $role eq 'target' && !-f "$dir/done";

# What is compared: whole rows as text, so columns added later are covered.
my %compare = (
	events => q{SELECT string_agg(e::text, E'\n' ORDER BY global_position) FROM projection.events e},
	# without the restore hold (restored_pid, restored_at), which a restore sets
	projections => q{
SELECT string_agg((to_jsonb(p) - 'restored_pid' - 'restored_at')::text, E'\n' ORDER BY id)
  FROM projection.projections p},
	checkpoints =>
	  q{SELECT string_agg(c::text, E'\n' ORDER BY c::text COLLATE "C") FROM projection.checkpoints c},
	dead_letters =>
	  q{SELECT string_agg(d::text, E'\n' ORDER BY d::text COLLATE "C") FROM projection.dead_letters d},
	status => q{
SELECT string_agg(format('%s|%s|%s|%s', name, state, position, lag_events), E'\n' ORDER BY name)
  FROM projection.status},
	counts => q{SELECT string_agg(stream_id || ':' || n, ',' ORDER BY stream_id) FROM counts},
	lagging => q{SELECT count(*) FROM lagging_model},
	skipping => q{SELECT string_agg(pos::text, ',' ORDER BY pos) FROM skipping_model},
	sequence => q{SELECT last_value FROM projection.events_global_position_seq},);

my $node = new_node('main');
$node->start;

# $n events over 4 streams, every 5th one bad for "skipping"
sub append_some
{
	my ($db, $n) = @_;

	return $node->safe_psql(
		$db, qq{
SELECT max(projection.append('s-' || i % 4, 'Happened',
		jsonb_build_object('i', i, 'bad', i % 5 = 0)))
  FROM generate_series(1, $n) i;
});
}

sub slurp_or_empty
{
	my ($f) = @_;
	open(my $fh, '<', $f) or die "could not open $f: $!";
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

if ($role eq 'source')
{
	$node->safe_psql('postgres', 'CREATE DATABASE src');
	$node->create_ext('src');
	$node->safe_psql(
		'src', q{
CREATE TABLE counts (stream_id text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION counts_h(e projection.events) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO public.counts VALUES (e.stream_id, 1)
	ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1
$$;
SELECT projection.create('counts', 'counts_h', tables => ARRAY['counts']::regclass[]);

CREATE TABLE lagging_model (pos bigint PRIMARY KEY);
CREATE FUNCTION lagging_h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.lagging_model VALUES (e.global_position) $$;
SELECT projection.create('lagging', 'lagging_h', tables => ARRAY['lagging_model']::regclass[]);

CREATE TABLE skipping_model (pos bigint PRIMARY KEY);
CREATE FUNCTION skipping_h(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data->>'bad')::boolean THEN
		RAISE EXCEPTION 'bad event %', e.global_position USING ERRCODE = '22023';
	END IF;
	INSERT INTO public.skipping_model VALUES (e.global_position);
END
$$;
SELECT projection.create('skipping', 'skipping_h', on_error => 'skip');
});
	append_some('src', 20);
	ok($node->wait_caught_up('src', $_), "source: $_ caught up") for qw(counts lagging skipping);
	$node->safe_psql('src', "SELECT projection.pause('lagging')");
	append_some('src', 10);
	ok($node->wait_caught_up('src', $_), "source: $_ caught up again") for qw(counts skipping);
	is($node->status('src', 'lagging', [qw(state lag_events)])->{lag_events},
		10, 'source: lagging is paused with a lag');

	for my $what (sort keys %compare)
	{
		PostgreSQL::Test::Utils::append_to_file("$dir/$what.txt",
			$node->safe_psql('src', $compare{$what}));
	}
	$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/src.dump", '-d', 'src' ],
		'source: pg_dump -Fc');
	PostgreSQL::Test::Utils::append_to_file("$dir/done",
		$node->safe_psql('postgres', 'SHOW server_version'));
}
else
{
	note('restoring a dump of PostgreSQL ' . slurp_or_empty("$dir/done"));
	$node->safe_psql('postgres', 'CREATE DATABASE dst');
	$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', 'dst', "$dir/src.dump" ],
		'pg_restore of the older server\'s dump');
	for my $what (sort keys %compare)
	{
		is($node->safe_psql('dst', $compare{$what}),
			slurp_or_empty("$dir/$what.txt"), "$what as in the source");
	}
	ok($node->wait_for_worker('dst'), 'the worker runs');

	my $before = $node->safe_psql('dst', 'SELECT max(global_position) FROM projection.events');
	my $dead = $node->safe_psql('dst', 'SELECT count(*) FROM projection.dead_letters');
	my $pos = append_some('dst', 5);    # i = 5 is bad
	cmp_ok($pos, '>', $before, 'a new event gets a position above the restored ones');
	ok($node->wait_caught_up('dst', $_), "$_ applies the new events") for qw(counts skipping);
	is($node->safe_psql('dst', 'SELECT sum(n) FROM counts'), 35,
		'counts applied each event once');
	is($node->safe_psql('dst', 'SELECT count(*) FROM projection.dead_letters'),
		$dead + 1, 'skipping: one new dead letter, none repeated');

	$node->safe_psql('dst', "SELECT projection.resume('lagging')");
	ok($node->wait_caught_up('dst', 'lagging'), 'lagging catches up after resume()');
	is($node->safe_psql('dst', 'SELECT count(*) FROM lagging_model'), 35,
		'lagging applied each event once');
}

$node->stop;
done_testing();
