
# test/t/085_seed_models.pl -- test/demo.sql runs, and the seed statements the
# benchmark reads from it agree with the benchmark's oracle.
#
# test/bench/models.py takes the seed's per-event statements from
# test/demo.sql (its one source), and writes the set-based rebuild (the
# oracle) that every benchmark variant is checked against.  Here the demo
# runs end to end in a fresh database, as test/demo.sh runs it (it checks
# its set-based read models against its per-event ones itself); then the
# demo's events are replayed through the benchmark's PL/pgSQL handlers (the
# demo's statements, as models.py reads them) into one schema, and the oracle
# rebuilds the same read models into another: they must be equal, table by
# table, in the columns the benchmark compares.  A demo statement changed so
# that the read model no longer matches the oracle fails here, not in a
# benchmark run.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;
use IPC::Run;

my $top = "$FindBin::RealBin/../..";
my $python = '/usr/bin/python3';
if (!-x $python)
{
	# run by test/suite.sh, the packages are there: a missing one fails
	die "$python is not installed" if $ENV{PJ_SERVER_NAME};
	plan skip_all => "$python is not installed";
}

my $node = new_node('main');
$node->start;
my $db = 'projection_demo';
$node->safe_psql('postgres', "CREATE DATABASE $db");

my ($ret, $out, $err) = $node->psql($db, '',
	extra_params => [ '-f', "$top/test/demo.sql" ],
	on_error_stop => 1);
is($ret, 0, 'test/demo.sql runs to the end') or diag("$out\n$err");
like($out, qr/=== Demo complete/, 'the demo completes');
unlike($err, qr/ERROR/, 'without an error');

# models(code): what the python code prints, with models imported
sub models
{
	my ($code) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ $python, '-c', "import sys; sys.path.insert(0, '$top/test/bench'); import models\n$code" ],
		'<', \undef, '>', \$o, '2>', \$e)
	  or die "models.py: $e";
	return $o;
}

my $upto = $node->max_position($db);
cmp_ok($upto, '>', 20, "the demo appended events ($upto)");

# per-event: the benchmark's handlers, run by its PL/pgSQL loop
$node->safe_psql($db,
	models("print(models.schema_sql('seed_events', models.SEED, handlers=True, checkpoints=True))\n"
		  . "print(models.loop_sql('seed_events', models.SEED))"));
$node->safe_psql($db, "CALL seed_events.catch_up($upto)");

# the oracle
$node->safe_psql($db,
	models("print(models.schema_sql('seed_oracle', models.SEED, handlers=False))\n"
		  . "print(';\\n'.join(models.oracle_sql('seed_oracle', models.SEED, $upto)) + ';')"));

my @tables = split /\n/,
  models("for n in models.SEED:\n"
	  . "    for t, c in models.PROJECTIONS[n]['compare'].items():\n"
	  . "        print(n + '\\t' + t + '\\t' + c)");
cmp_ok(scalar @tables, '>=', 6, 'the read models to compare');
for my $line (@tables)
{
	my ($name, $table, $cols) = split /\t/, $line;
	my $rows = $node->safe_psql($db, "SELECT count(*) FROM seed_oracle.$table");
	cmp_ok($rows, '>', 0, "$name: the oracle's $table has rows ($rows)");
	is( $node->safe_psql(
			$db,
			models("print(models.diff_sql('seed_events', 'seed_oracle', '$table', '$cols'))")),
		'',
		"$name: $table of the demo's statements equals the oracle's");
}

$node->stop;
done_testing();
