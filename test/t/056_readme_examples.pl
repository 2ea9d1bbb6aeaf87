
# test/t/056_readme_examples.pl -- the README's SQL examples run as written.
#
# Every ```sql block of README.md runs, verbatim and in the README's order,
# against a fresh database of a server with the library preloaded, as the
# bootstrap superuser, each block in its own psql session with
# ON_ERROR_STOP: any error fails the test, naming the block's line.  So an
# example cannot drift from the code: its tables must be defined by an
# earlier block, and its events must be valid for the handlers defined
# before it (an async handler's error shows up as a failed wait() or
# projection, which later blocks check).
#
# The marker for the rare block that must not run as it stands is an HTML
# comment (invisible on GitHub) on the line right before the fence:
#
#   <!-- docs-test: skip (why) -->          the block is not run
#   <!-- docs-test: error SQLSTATE -->      the block must fail, with SQLSTATE
#
# At the end, the async projections the README created must not be failed:
# an event invalid for its handler would fail the projection without an
# error in any block.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $readme = "$FindBin::RealBin/../../README.md";
open my $fh, '<', $readme or die "could not open $readme: $!";
my @lines = <$fh>;
close $fh;

# the blocks: { line => first line of the fence, sql => text, mark => marker }
my ($blocks, $stray, $open) = readme_sql_blocks(@lines);
my @blocks = @$blocks;
fail("README.md line $_: a docs-test marker not followed by a ```sql fence") for @$stray;
ok(!$open, 'every ```sql block of the README is closed');
cmp_ok(scalar @blocks, '>', 10, 'the README has SQL examples (' . scalar(@blocks) . ')');

my $node = new_node('main');
$node->start;
my $db = 'readme';
$node->safe_psql('postgres', "CREATE DATABASE $db");

my ($ran, $skipped) = (0, 0);
for my $b (@blocks)
{
	my $where = "README.md line $b->{line}";
	my ($mark, $arg) = split /\s+/, $b->{mark}, 2;
	$mark //= '';
	if ($mark eq 'skip')
	{
		$skipped++;
		note("$where: skipped $arg");
		next;
	}
	my ($out, $err) = ('', '');
	my $rc = $node->psql(
		$db, "\\set VERBOSITY verbose\n" . $b->{sql},
		stdout => \$out,
		stderr => \$err,
		on_error_stop => 1);
	$ran++;
	if ($mark eq 'error')
	{
		my $code = $arg // '';
		ok($rc != 0 && $err =~ /ERROR:  \Q$code\E/, "$where fails with $code as the README says")
		  or diag("exit $rc, stderr:\n$err");
	}
	elsif ($mark eq '')
	{
		ok($rc == 0 && $err !~ /ERROR:/, "$where runs")
		  or diag("block:\n$b->{sql}\nstderr:\n$err");
		note("$where: $_") for grep { /WARNING:/ } split /\n/, $err;
	}
	else
	{
		fail("$where: unknown docs-test marker \"$b->{mark}\" (skip or error)");
	}
}
note("$ran blocks run, $skipped skipped");
cmp_ok($skipped, '<=', 3, 'only a few blocks are kept from running');

# every async projection the README made has applied what it was given
is( $node->safe_psql(
		$db,
		"SELECT string_agg(name || ': ' || coalesce(last_error, ''), '; ') "
		  . "FROM projection.status WHERE state = 'failed'"),
	'',
	'no projection of the README failed on its events');
for my $p (split /\n/,
	$node->safe_psql($db, "SELECT name FROM projection.status WHERE mode = 'async' AND state = 'running'"))
{
	ok($node->wait_caught_up($db, $p), "async projection $p catches up");
}

$node->stop;
done_testing();
