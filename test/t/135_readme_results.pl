
# test/t/135_readme_results.pl -- what the README says its examples return,
# and that it documents every object and setting of the extension.
#
# 056_readme_examples runs every ```sql block and fails on an error; it does
# not look at what a block returns.  A newcomer compares, though: the
# results the README shows in comments (-- 1 | 9.50, -- NOTICE: ...,
# --  {"total": ...}) must be what the block gives.  So the blocks run here
# again, in order, the same way (a fresh database, each block in its own
# psql session, the docs-test skip markers honoured), and the blocks listed
# below must give the results their comments show.  A block is found by a
# line of its text; a README edit that drops or rewords one fails here
# until this list follows.
#
# Then the reference: every function of schema projection has its
# signature in the README (the public ones) or a row in "Internal objects"
# (the _ ones), every view and table of the schema is named, and every GUC
# the library defines has a row in "Configuration".

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
my $text = join '', @lines;

# the blocks, as 056 reads them
my ($blocks) = readme_sql_blocks(@lines);
my @blocks = @$blocks;

# [ a line of the block, what its output (stdout and stderr) must match, why ]
my @expect = (    # psql -XAtq output: unaligned, no headers
	[ "TABLE order_totals;", qr/^1\|9\.50$/m, 'the intro read model is 1 | 9.50' ],
	[ "if_not_exists => true);   -- NOTICE",
		qr/NOTICE:  projection "orders_seen" already exists, skipping/,
		'the second create says "already exists, skipping"' ],
	[ "SELECT projection.rebuild('order_summary');",
		[ qr/NOTICE:  projection "order_summary" rebuilt from 3 events$/m, qr/^3$/m ],
		'rebuild says 3 events and returns 3' ],
	[ "SELECT projection.wait('daily_sales', :pos);", qr/^t$/m, 'wait() returns true' ],
	[ "SELECT projection.aggregate('order-1', 'order_fold');",
		qr/^\{"total": 9\.50, "status": "shipped"\}$/m, 'aggregate() folds order-1 as shown' ],
	[ "SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'carts';",
		qr/^cart-1\|\{"items": 1, "total": 9\.50\}\|2$/m, 'the stored cart state is as shown' ],
	[ "SELECT projection.snapshot('carts', 'cart-1');",
		qr/^\{"items": 1, "total": 9\.50\}$/m, 'snapshot() of cart-1 is as shown' ],
	[ "SELECT projection.feed_partition('product-1', 4);", qr/^2$/m, 'product-1 is in partition 2 of 4' ],
	[ "SELECT projection.repair_dependencies();", qr/^0$/m, 'repair_dependencies() finds nothing missing' ],
	[ "TABLE app.orders_placed;", qr/^t\n3\|\d{4}-/m,
		'the application role waits and reads its own read model' ],);

my $node = new_node('main');
$node->start;
my $db = 'readme';
$node->safe_psql('postgres', "CREATE DATABASE $db");

my %output;    # block line -> stdout and stderr
for my $b (@blocks)
{
	next if $b->{mark} =~ /^skip/;
	my ($out, $err) = ('', '');
	$node->psql($db, $b->{sql}, stdout => \$out, stderr => \$err, on_error_stop => 1);
	$output{ $b->{line} } = "$out\n$err";
}

for my $e (@expect)
{
	my ($needle, $res, $why) = @$e;
	my @found = grep { index($_->{sql}, $needle) >= 0 } @blocks;
	is(scalar @found, 1, "one README block holds \"$needle\"") or next;
	my $b = $found[0];
	like($output{ $b->{line} } // '', $_, "README.md line $b->{line}: $why")
	  for (ref $res eq 'ARRAY' ? @$res : ($res));
}

# ---------------------------------------------------------------------
# the reference documents every object and setting
# ---------------------------------------------------------------------
my @functions = split /\n/, $node->safe_psql(
	$db, q{
	SELECT DISTINCT p.proname FROM pg_proc p
	 WHERE p.pronamespace = 'projection'::regnamespace ORDER BY 1});
cmp_ok(scalar @functions, '>', 30, 'the schema has its functions (' . scalar(@functions) . ')');
for my $f (@functions)
{
	if ($f =~ /^_/)
	{
		like($text, qr/^\| `projection\.\Q$f\E\(/m, "internal function $f has a row in \"Internal objects\"");
	}
	else
	{
		like($text, qr/^projection\.\Q$f\E\(/m, "function projection.$f has its signature in the README");
	}
}

my @relations = split /\n/, $node->safe_psql(
	$db, q{
	SELECT relname || ' ' || relkind::text FROM pg_class
	 WHERE relnamespace = 'projection'::regnamespace AND relkind IN ('r', 'v') ORDER BY 1});
for my $r (@relations)
{
	my ($name, $kind) = split / /, $r;
	if ($kind eq 'v')
	{
		like($text, qr/^### projection\.\Q$name\E\b/m, "view projection.$name has a section");
	}
	else
	{
		like($text, qr/`projection\.\Q$name\E`/, "table projection.$name is named");
	}
}

my @gucs = split /\n/, $node->safe_psql($db,
	"SELECT name || ' ' || context || ' ' || setting FROM pg_settings WHERE name LIKE 'projection.%' ORDER BY 1");
cmp_ok(scalar @gucs, '>=', 8, 'the library defines its settings (' . scalar(@gucs) . ')');
for my $g (@gucs)
{
	my ($name, $context) = split / /, $g;
	like($text, qr/^\| `\Q$name\E` \| [^|]+ \| \Q$context\E \|/m,
		"setting $name has a row in \"Configuration\" with its context ($context)");
}

$node->stop;
done_testing();
