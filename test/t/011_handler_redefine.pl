# test/t/011_handler_redefine.pl -- a handler redefined while the worker
# runs takes effect from the next event, and never crashes the worker.
#
# The worker has called each handler before it is changed, and the registry
# does not change in between (no resume, no create), so only the handler's
# own definition tells the worker what to run.  Covers: a change of language
# (PL/pgSQL to SQL and back); a body that does not compile
# (check_function_bodies off) under on_error 'skip' (dead letters, then the
# fixed body applies the next events) and under 'stop' (failed, then
# resume() after the fix); ALTER FUNCTION ... OWNER TO of a SECURITY DEFINER
# handler.  Throughout, the server never restarts and no process dies of a
# signal.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;

my $db = 'postgres';
my $node = start_node('main');
my $log_start = -s $node->logfile;
my $started = $node->safe_psql($db, 'SELECT pg_postmaster_start_time()');

# (Re)defines handler $name: in $lang, logging version $version; $broken
# leaves out a semicolon (created with check_function_bodies off).
sub define_handler
{
	my ($name, $lang, $version, %opt) = @_;
	my $insert =
	  "INSERT INTO public.log VALUES ('$name', e.global_position, '$version', current_user::text)";
	my $body =
	    $lang eq 'sql' ? $insert
	  : $opt{broken}   ? "BEGIN $insert END"
	  :                  "BEGIN $insert; END";
	my $definer = $opt{definer} ? 'SECURITY DEFINER' : '';

	$node->safe_psql(
		$db, qq{
SET check_function_bodies = off;
CREATE OR REPLACE FUNCTION public.$name(e projection.events) RETURNS void
LANGUAGE $lang $definer AS \$\$ $body \$\$;
});
	return;
}

# Appends $n events of type $type; returns the last position.
sub append_events
{
	my ($n, $type) = @_;
	my @pos = split /\n/,
	  $node->safe_psql($db,
		"SELECT projection.append('s-' || i, '$type', '{}') FROM generate_series(1, $n) i");
	return $pos[-1];
}

# The versions (and roles) that logged the events after position $after.
sub logged
{
	my ($handler, $after, $col) = @_;
	$col ||= 'version';

	return $node->safe_psql($db,
		    "SELECT string_agg($col, ',' ORDER BY pos) FROM public.log "
		  . "WHERE handler = '$handler' AND pos > $after");
}

$node->safe_psql(
	$db, q{
CREATE TABLE public.log (handler text, pos bigint, version text, who text);
CREATE ROLE regress_tap_definer NOLOGIN;
GRANT INSERT ON public.log TO regress_tap_definer;
});
define_handler('h_lang', 'plpgsql', 'v1');
define_handler('h_skip', 'plpgsql', 'v1');
define_handler('h_def', 'plpgsql', 'v1', definer => 1);
$node->safe_psql(
	$db, q{
SELECT projection.create('lang', 'h_lang', '{L}', start_from => 'end');
SELECT projection.create('skip', 'h_skip', '{S}', start_from => 'end', on_error => 'skip');
SELECT projection.create('def', 'h_def', '{D}', start_from => 'end');
});
$node->wait_for_worker($db);

# the worker calls each handler once
my $pos = append_events(1, 'L');
append_events(1, 'S');
append_events(1, 'D');
ok( $node->wait_caught_up($db, 'lang')
	  && $node->wait_caught_up($db, 'skip')
	  && $node->wait_caught_up($db, 'def'),
	'the worker applied the first events');
is(logged('h_lang', 0) . ' ' . logged('h_skip', 0) . ' ' . logged('h_def', 0),
	'v1 v1 v1', 'with the first definitions');

# ---------------------------------------------------------------------
# a change of language
# ---------------------------------------------------------------------
define_handler('h_lang', 'sql', 'v2 sql');
$pos = append_events(2, 'L');
ok($node->wait_caught_up($db, 'lang', $pos),
	'PL/pgSQL to SQL: the worker applies the next events');
is(logged('h_lang', $pos - 2), 'v2 sql,v2 sql', 'with the SQL body');

define_handler('h_lang', 'plpgsql', 'v3 plpgsql');
$pos = append_events(2, 'L');
ok($node->wait_caught_up($db, 'lang', $pos),
	'SQL to PL/pgSQL: the worker applies the next events');
is(logged('h_lang', $pos - 2), 'v3 plpgsql,v3 plpgsql', 'with the PL/pgSQL body');

# ---------------------------------------------------------------------
# a body that does not compile, on_error 'skip': every event is a dead
# letter (the fast round fails, then each event fails on its own), then the
# fixed body applies the next ones
# ---------------------------------------------------------------------
define_handler('h_skip', 'plpgsql', 'broken', broken => 1);
$pos = append_events(3, 'S');
ok($node->wait_caught_up($db, 'skip', $pos),
	'broken body, on_error skip: the projection goes on');
is( $node->safe_psql(
		$db,
		"SELECT string_agg(sqlstate, ',' ORDER BY global_position) "
		  . "FROM projection.dead_letters WHERE name = 'skip'"),
	'42601,42601,42601',
	'each event is a dead letter with the compile error');
is(logged('h_skip', $pos - 3), '', 'and nothing was logged');

define_handler('h_skip', 'sql', 'v2 fixed');
$pos = append_events(2, 'S');
ok($node->wait_caught_up($db, 'skip', $pos), 'fixed: the next events are applied');
is(logged('h_skip', $pos - 2), 'v2 fixed,v2 fixed', 'with the fixed body');

# ---------------------------------------------------------------------
# a body that does not compile, on_error 'stop'
# ---------------------------------------------------------------------
define_handler('h_lang', 'plpgsql', 'broken', broken => 1);
my $poison = append_events(1, 'L');
ok($node->wait_for_state($db, 'lang', 'failed'),
	'broken body, on_error stop: the projection fails');
my $st = $node->status($db, 'lang', [qw(position last_error_sqlstate)]);
is($st->{position}, $poison - 1, 'at the event that met the broken body');
is($st->{last_error_sqlstate}, '42601', 'with the compile error');
define_handler('h_lang', 'plpgsql', 'v4 fixed');
$node->safe_psql($db, "SELECT projection.resume('lang')");
ok($node->wait_caught_up($db, 'lang', $poison), 'fixed and resumed: it catches up');
is(logged('h_lang', $poison - 1), 'v4 fixed', 'with the fixed body');

# ---------------------------------------------------------------------
# ALTER FUNCTION ... OWNER TO of a SECURITY DEFINER handler
# ---------------------------------------------------------------------
$node->safe_psql($db, 'ALTER FUNCTION public.h_def(projection.events) OWNER TO regress_tap_definer');
$pos = append_events(2, 'D');
ok($node->wait_caught_up($db, 'def', $pos), 'new owner: the next events are applied');
is( logged('h_def', $pos - 2, 'who'),
	'regress_tap_definer,regress_tap_definer',
	'as the new owner of the SECURITY DEFINER handler');

# ---------------------------------------------------------------------
# nothing crashed
# ---------------------------------------------------------------------
is($node->safe_psql($db, 'SELECT pg_postmaster_start_time()'),
	$started, 'the server never restarted');
my $log = slurp_file($node->logfile, $log_start);
unlike($log, qr/terminated by signal/, 'no process died of a signal');

done_testing();
