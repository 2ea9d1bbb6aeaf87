
# test/t/057_search_indexer.pl -- examples/search_indexer end to end: the
# seed's product search fed from a projection feed into a real Sphinx
# (Debian's sphinxsearch, a real-time index written over SphinxQL) by the
# example consumer, killed with SIGKILL several times while writers append.
#
# Covers: product events appended by four concurrent writers (one of them in
# long transactions, so commits come out of position order); the consumer
# killed between its write to Sphinx and its ack (the next run redelivers
# that batch), and killed from outside at arbitrary moments (its lease
# expires and the next run takes the partition over); afterwards the index
# equals the oracle of the product-search read model, a SQL query over the
# events (every product's whole document, its version = the global_position
# of its last event, deleted products as tombstones), and full-text search
# finds what the oracle says.  Then a replay from position 0 (seek), killed
# half-way: the index must still equal the oracle, because a document is
# never replaced by an older one.
#
# test/lib.sh installs sphinxsearch, python3-psycopg and python3-pymysql on
# the host and test/servers.sh in the chroots of the test matrix, so under
# test/suite.sh (PJ_SERVER_NAME set) a missing one is a failure; run by hand
# without them, the test is skipped.

use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use ProjectionNode;
use IPC::Run;
use JSON::PP;
use Time::HiRes ();

my $example = "$FindBin::RealBin/../../examples/search_indexer";
my $python = '/usr/bin/python3';
my $missing =
    !-x '/usr/bin/searchd' ? 'sphinxsearch is not installed'
  : !(-x $python && system($python, '-c', 'import psycopg, pymysql') == 0)
  ? 'python3-psycopg or python3-pymysql is not installed'
  : undef;
if (defined $missing)
{
	die $missing if $ENV{PJ_SERVER_NAME};
	plan skip_all => $missing;
}

my $db = 'postgres';
my $node = start_node('main');

# the consumer's role: it may read events (and so own a feed), nothing more
$node->safe_psql(
	$db, q{
CREATE ROLE search_indexer LOGIN;
GRANT SELECT ON projection.events TO search_indexer;

-- one product event, chosen from (writer, i): ProductCreated for a product
-- without events, otherwise an update, a price change or (rarely) a delete;
-- deleted products get no more events.  The advisory lock orders the
-- writers of one product, so each sees the product's last event.
CREATE FUNCTION product_event(w int, i int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h bigint := abs(hashtext(w || ':' || i));
    n int := h % 60 + 1;
    s text := 'product-' || n;
    last text;
    word text := (ARRAY['wireless','speaker','lamp','oak','steel','solar','quiet','retro'])[h % 8 + 1];
    cat text := (ARRAY['audio','home','garden','office'])[(h / 8) % 4 + 1];
BEGIN
    PERFORM pg_advisory_xact_lock(n);
    SELECT event_type INTO last FROM projection.events
     WHERE stream_id = s ORDER BY stream_version DESC LIMIT 1;
    IF last IS NULL THEN
        PERFORM projection.append(s, 'ProductCreated', jsonb_build_object(
            'product_id', 'prd-' || n, 'name', initcap(word) || ' thing ' || n,
            'description', 'a ' || word || ' ''thing'' \ for "' || cat || '"',
            'category', cat, 'price', round((h % 50000) / 100.0, 2),
            'tags', CASE WHEN h % 3 = 0 THEN '[]'::jsonb ELSE jsonb_build_array(word, cat) END,
            'created_at', '2026-12-01T10:00:00Z'));
    ELSIF last = 'ProductDeleted' THEN
        RETURN;
    ELSIF h % 40 = 0 THEN
        PERFORM projection.append(s, 'ProductDeleted', jsonb_build_object(
            'product_id', 'prd-' || n, 'deleted_at', '2026-12-01T12:00:00Z'));
    ELSIF h % 2 = 0 THEN
        PERFORM projection.append(s, 'ProductUpdated', jsonb_build_object(
            'product_id', 'prd-' || n, 'name', initcap(word) || ' gadget ' || i,
            'description', word || ' ' || w || ' ' || i, 'category', cat,
            'tags', jsonb_build_array(word), 'updated_at', '2026-12-01T11:' || lpad((i % 60)::text, 2, '0') || ':00Z'));
    ELSE
        PERFORM projection.append(s, 'ProductPriceChanged', jsonb_build_object(
            'product_id', 'prd-' || n, 'old_price', 0, 'new_price', round((h % 90000) / 100.0 + 1, 2),
            'changed_at', '2026-12-01T11:30:' || lpad((i % 60)::text, 2, '0') || 'Z'));
    END IF;
END $$;

-- the oracle: the product-search read model as one query over the events
CREATE VIEW product_search_oracle AS
WITH p AS (SELECT stream_id, max(global_position) AS version,
                  bool_or(event_type = 'ProductDeleted') AS deleted
             FROM projection.events WHERE stream_id LIKE 'product-%' GROUP BY stream_id),
     c AS (SELECT DISTINCT ON (stream_id) stream_id, data FROM projection.events
            WHERE event_type = 'ProductCreated' ORDER BY stream_id, global_position DESC),
     u AS (SELECT DISTINCT ON (stream_id) stream_id, data FROM projection.events
            WHERE event_type = 'ProductUpdated' ORDER BY stream_id, global_position DESC),
     pc AS (SELECT DISTINCT ON (stream_id) stream_id, data FROM projection.events
            WHERE event_type = 'ProductPriceChanged' ORDER BY stream_id, global_position DESC)
SELECT c.data->>'product_id' AS product_id, p.version, p.deleted::int AS deleted,
       CASE WHEN p.deleted THEN '' ELSE jsonb_build_object(
           'product_id', c.data->>'product_id',
           'name', coalesce(u.data, c.data)->>'name',
           'description', coalesce(u.data, c.data)->>'description',
           'category', coalesce(u.data, c.data)->>'category',
           'tags', coalesce(coalesce(u.data, c.data)->'tags', '[]'),
           'price', coalesce(pc.data->>'new_price', c.data->>'price'),
           'created_at', c.data->>'created_at',
           'updated_at', u.data->>'updated_at',
           'price_updated_at', pc.data->>'changed_at')::text END AS doc
  FROM p JOIN c USING (stream_id) LEFT JOIN u USING (stream_id) LEFT JOIN pc USING (stream_id);
});

# ---------------------------------------------------------------------
# Sphinx, as this (unprivileged) user, on a private port
# ---------------------------------------------------------------------
my $sx_dir = PostgreSQL::Test::Utils::tempdir('sphinx');
my $sx_port = PostgreSQL::Test::Cluster::get_free_port();
my ($sx_out, $sx_err) = ('', '');
# stop searchd whatever happens (it forks into the background)
END
{
	local $?;    # keep the test's exit status
	system("$example/sphinx.sh", 'stop', $sx_dir) if defined $sx_dir && -e "$sx_dir/searchd.pid";
}
ok( IPC::Run::run(
		[ "$example/sphinx.sh", 'start', $sx_dir, $sx_port, 'products', 'products_v2' ],
		'>', \$sx_out, '2>', \$sx_err),
	'searchd started') or diag("$sx_out\n$sx_err");

my $pg = sprintf('host=%s port=%d dbname=%s user=search_indexer',
	$node->host, $node->port, $db);
my @consumer = (
	$python, "$example/indexer.py", '--pg', $pg, '--sphinx', "127.0.0.1:$sx_port",
	'--create', '--partitions', '4', '--max-events', '20', '--lease', '2', '--wait', '1');

# start_consumer(extra args, env): the consumer in the background
sub start_consumer
{
	my ($extra, %env) = @_;
	my ($out, $err) = ('', '');
	local @ENV{ keys %env } = values %env;
	my $h = IPC::Run::start([ @consumer, @$extra ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	return { h => $h, out => \$out, err => \$err };
}

# acked(): events acknowledged so far, over every partition
sub acked
{
	return $node->safe_psql($db,
		"SELECT coalesce(sum(position), 0) FROM projection.feed_status WHERE feed = 'product_search'");
}

# ---------------------------------------------------------------------
# writers: three in short transactions, one in long ones
# ---------------------------------------------------------------------
my @writers;
for my $w (1 .. 4)
{
	my $script = '';
	for my $i (1 .. 300)
	{
		if ($w == 4)
		{
			$script .= "BEGIN;\n" if $i % 15 == 1;
			$script .= "SELECT product_event($w, $i);\n";
			$script .= "COMMIT;\n" if $i % 15 == 0;
		}
		else
		{
			$script .= "SELECT product_event($w, $i);\n";
		}
	}
	# from a file: IPC::Run feeds a scalar only while the harness is pumped
	my $file = "$sx_dir/writer-$w.sql";
	PostgreSQL::Test::Utils::append_to_file($file, $script);
	push @writers,
	  IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host,
			'-p', $node->port, '-d', $db, '-f', $file
		],
		'<', \undef, '>', '/dev/null', '2>', "$sx_dir/writer-$w.err");
}

# 1. killed by its own hook between the write of its 3rd batch and the ack
my $c = start_consumer([], PJ_INDEXER_KILL_AFTER_WRITE => 3);
$c->{h}->finish;
is($c->{h}->full_result, 9, 'the first consumer died by SIGKILL between write and ack')
  or diag(${ $c->{err} });

# 2. and 3. killed from outside, once the feed has moved on
for my $round (2, 3)
{
	my $before = acked();
	$c = start_consumer([]);
	ok( $node->poll_query_until(
			$db,
			"SELECT coalesce(sum(position), 0) > $before FROM projection.feed_status WHERE feed = 'product_search'"),
		"consumer $round acknowledges batches");
	$c->{h}->signal('KILL');
	$c->{h}->finish;
	is($c->{h}->full_result, 9, "consumer $round killed with SIGKILL mid-run");
}

for my $w (1 .. 4)
{
	$writers[ $w - 1 ]->finish;
	is($writers[ $w - 1 ]->full_result || 0, 0, "writer $w finished")
	  or diag(PostgreSQL::Test::Utils::slurp_file("$sx_dir/writer-$w.err"));
}

# 4. the last run drains the feed (after the dead consumers' leases expire)
$c = start_consumer(['--once']);
$c->{h}->finish;
is($c->{h}->full_result || 0, 0, 'the last consumer drained the feed') or diag(${ $c->{err} });

# ---------------------------------------------------------------------
# the index against the oracle
# ---------------------------------------------------------------------
my $json = JSON::PP->new->canonical(1);

sub canon
{
	my ($line) = @_;
	my ($id, $version, $deleted, $doc) = split /\t|\|/, $line, 4;
	$doc //= '';
	$doc = $json->encode($json->decode($doc)) if $doc ne '';
	return "$id $version $deleted $doc";
}

sub compare_with_oracle
{
	my ($what, $index) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $python, "$example/indexer.py", '--sphinx', "127.0.0.1:$sx_port", '--pg', $pg, '--dump',
			'--index', $index // 'products' ],
		'>', \$out, '2>', \$err)
	  or die "indexer.py --dump failed: $err";
	my @index = sort map { canon($_) } split /\n/, $out;
	my @oracle = sort map { canon($_) } split /\n/,
	  $node->safe_psql($db,
		'SELECT product_id, version, deleted, doc FROM product_search_oracle');
	cmp_ok(scalar @oracle, '>', 30, "$what: the oracle has products (" . scalar(@oracle) . ')');
	is_deeply(\@index, \@oracle, "$what: the Sphinx index equals the oracle");
}

compare_with_oracle('after the kills');
my $deleted = $node->safe_psql($db, 'SELECT count(*) FROM product_search_oracle WHERE deleted = 1');
note("$deleted deleted products (tombstones)");

# full text: the products whose document mentions "lamp"
my ($found, $err) = ('', '');
IPC::Run::run([ $python, "$example/indexer.py", '--sphinx', "127.0.0.1:$sx_port", '--pg', $pg, '--search', '@(name,description,tags) lamp' ],
	'>', \$found, '2>', \$err) or die $err;
is( join(',', sort split /\n/, $found),
	$node->safe_psql(
		$db, q{SELECT coalesce(string_agg(product_id, ',' ORDER BY product_id), '') FROM product_search_oracle
		        WHERE deleted = 0 AND (doc::jsonb->>'name' ~* '\mlamp\M' OR doc::jsonb->>'description' ~* '\mlamp\M'
		              OR doc::jsonb->'tags' ? 'lamp')}),
	'full-text search finds the products the oracle says');

# ---------------------------------------------------------------------
# replay from the beginning, killed half-way: nothing goes backwards
# ---------------------------------------------------------------------
$node->safe_psql($db, "SELECT projection.seek('product_search', 0)");
$c = start_consumer([], PJ_INDEXER_KILL_AFTER_WRITE => 5);
$c->{h}->finish;
is($c->{h}->full_result, 9, 'the replaying consumer died by SIGKILL half-way');
is( $node->safe_psql($db,
		"SELECT sum(lag_events) > 0 FROM projection.feed_status WHERE feed = 'product_search'"),
	't', 'the replay was not over');
compare_with_oracle('after a half replay');

$c = start_consumer(['--once']);
$c->{h}->finish;
is($c->{h}->full_result || 0, 0, 'the replay finished') or diag(${ $c->{err} });
compare_with_oracle('after the replay');

# ---------------------------------------------------------------------
# blue/green: a second feed from the beginning into a second index, then
# the old feed dropped
# ---------------------------------------------------------------------
$node->safe_psql($db, q{
SET ROLE search_indexer;
SELECT projection.create_feed('product_search_v2',
         event_types => '{ProductCreated,ProductUpdated,ProductPriceChanged,ProductDeleted}',
         start_from => 'beginning', partitions => 2);
});
$node->safe_psql($db, "SELECT product_event(5, i) FROM generate_series(1, 40) i");
$c = start_consumer([ '--once', '--feed', 'product_search_v2', '--index', 'products_v2' ]);
$c->{h}->finish;
is($c->{h}->full_result || 0, 0, 'the green index caught up') or diag(${ $c->{err} });
compare_with_oracle('green index', 'products_v2');
$c = start_consumer(['--once']);
$c->{h}->finish;
is($c->{h}->full_result || 0, 0, 'the blue index caught up too') or diag(${ $c->{err} });
compare_with_oracle('blue index before the switch');
$node->safe_psql($db, "SET ROLE search_indexer; SELECT projection.drop_feed('product_search')");
is($node->safe_psql($db, "SELECT string_agg(DISTINCT feed, ',') FROM projection.feed_status"),
	'product_search_v2', 'after the switch only the green feed is left');

$node->stop;
done_testing();
