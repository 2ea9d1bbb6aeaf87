# test/t/025_owner_vanished.pl -- a projection whose owner role no longer
# exists is stopped, not run as a role that is gone.
#
# Covers: an owner dropped where nothing refused it (its pg_shdepend entry
# missing, as after pg_upgrade or a restore with triggers disabled, and the
# DROP ROLE run while the library is not loaded); once the library is back,
# neither the async projection (in the worker) nor the inline one (in the
# appender's transaction) applies another event, and both show state
# 'failed' with a last_error naming the missing owner.

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

# the role owns nothing but its projections, so that DROP ROLE can succeed
# once the projections' entries are gone
$node->safe_psql(
	$db, q{
CREATE ROLE regress_gone LOGIN;
CREATE TABLE public.gone_log (pos bigint PRIMARY KEY, who text);
GRANT INSERT ON public.gone_log TO PUBLIC;
CREATE FUNCTION public.gone_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.gone_log VALUES (e.global_position, current_user) $$;
CREATE TABLE public.gone_inline_log (pos bigint PRIMARY KEY);
GRANT INSERT ON public.gone_inline_log TO PUBLIC;
CREATE FUNCTION public.gone_inline_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.gone_inline_log VALUES (e.global_position) $$;
GRANT SELECT, TRIGGER ON projection.events TO regress_gone;
SET ROLE regress_gone;
SELECT projection.create('gone_async', 'public.gone_h');
SELECT projection.create('gone_inline', 'public.gone_inline_h', mode => 'inline');
RESET ROLE;
SELECT projection.append('s', 'E', '{}');
});
ok($node->wait_caught_up($db, 'gone_async'), 'the projection runs');
is($node->safe_psql($db, 'SELECT count(*) FROM public.gone_inline_log'), '1',
	'so does the inline one');
# the role owns nothing but its projections (and no privileges), so that
# DROP ROLE can succeed once the projections' entries are gone
$node->safe_psql($db, 'REVOKE SELECT, TRIGGER ON projection.events FROM regress_gone');

# without the library, and without the owner entries, nothing refuses DROP ROLE
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
$node->safe_psql($db,
	"DELETE FROM pg_shdepend WHERE classid = 'projection.projections'::regclass");
$node->safe_psql($db, 'DROP ROLE regress_gone');
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "'projection'");
$node->restart;

$node->safe_psql($db, "SELECT projection.append('s', 'E', '{}')");
ok($node->wait_for_state($db, 'gone_async', 'failed'),
	'the async projection of the dropped owner fails');
like($node->safe_psql($db, "SELECT last_error FROM projection.status WHERE name = 'gone_async'"),
	qr/owner of projection "gone_async" does not exist/, 'last_error names the missing owner');
is($node->safe_psql($db, "SELECT last_error_sqlstate FROM projection.status WHERE name = 'gone_async'"),
	'42704', 'with undefined_object');
is($node->safe_psql($db, 'SELECT count(*) FROM public.gone_log'), '1',
	'the worker ran nothing as the dropped role');
ok($node->wait_for_state($db, 'gone_inline', 'failed'), 'the inline one shows failed too');
is($node->safe_psql($db, 'SELECT count(*) FROM public.gone_inline_log'), '1',
	'and appends do not run it');
like(slurp_file($node->logfile), qr/WARNING:  owner of projection "gone_async" does not exist/,
	'the worker logs it');

# the projections can be dropped (by a superuser) and appends go on
$node->safe_psql($db, "SELECT projection.drop('gone_async'); SELECT projection.drop('gone_inline')");
$node->safe_psql($db, "SELECT projection.append('s', 'E', '{}')");
is($node->safe_psql($db, 'SELECT count(*) FROM projection.events'), '3', 'appends go on');

$node->stop;
done_testing();
