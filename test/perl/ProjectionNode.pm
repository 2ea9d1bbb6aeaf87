
# test/perl/ProjectionNode.pm -- a PostgreSQL::Test::Cluster for the
# projection extension's TAP tests (test/t/*.pl).
#
#     use FindBin;
#     use lib "$FindBin::RealBin/../perl";  # PGXS resets the Makefile's PROVE_FLAGS
#     use ProjectionNode;
#
#     my $node = new_node('main');      # initialised, not started
#     $node->start;
#     $node->create_ext('postgres');
#     $node->wait_for_worker('postgres');
#
# or, the same in one call (the set-up most tests share):
#
#     my $node = start_node('main');    # started, the extension created
#     $node->wait_for_worker('postgres');
#     ...
#     $node->wait_caught_up('postgres', 'my_projection');
#
# new_node() preloads the library and sets what the tests rely on:
# enough worker slots for many databases, prepared transactions, and
# restart_after_crash = on (PostgreSQL::Test::Cluster turns it off), so that
# a kill -9 of any backend crash-restarts the server as in production.
#
# Every wait is bounded: poll_query_until and wait_for_log give up after
# $PostgreSQL::Test::Utils::timeout_default seconds.  Helpers whose name
# starts with wait_ return poll_query_until's result (true on success), so a
# test can say ok($node->wait_...(...), 'what it waited for').

package ProjectionNode;

use strict;
use warnings FATAL => 'all';

use parent 'PostgreSQL::Test::Cluster';

use Exporter 'import';
# import nothing: functions imported here would become methods of our nodes
# and hide PostgreSQL::Test::Cluster's (command_ok, for one)
use PostgreSQL::Test::Cluster ();
use PostgreSQL::Test::Utils ();
use Fcntl ();
use File::Path ();
use IPC::Run ();
use Test::More ();
use Time::HiRes ();

our @EXPORT = qw(new_node start_node sql_literal readme_sql_blocks);

=pod

=head1 FUNCTIONS

=over

=item new_node(name, %init_params)

Creates and initialises a node of class ProjectionNode with the projection
library preloaded.  %init_params go to PostgreSQL::Test::Cluster's init (for
example allows_streaming => 1).  Its data directory is a copy of one initdb
made once per prove run (init_from_template), unless %init_params has extra
(initdb options) or force_initdb.  The node is not started.

=cut

sub new_node
{
	my ($name, %params) = @_;
	my $node = ProjectionNode->new($name);

	if (defined $params{extra} || $params{force_initdb})
	{
		$node->init(%params);
	}
	else
	{
		init_from_template($node, %params);
	}
	$node->append_conf(
		'postgresql.conf', qq(
shared_preload_libraries = 'projection'
max_worker_processes = 32
max_prepared_transactions = 5
restart_after_crash = on
# workers start on demand; most tests want them to stay once started
projection.worker_idle_timeout = '1h'
));
	return $node;
}

=pod

=item start_node(name, %params)

The set-up most test files share: new_node(name), then the lines of
$params{conf} appended to postgresql.conf (and projection.naptime set to an
hour with naptime_hour => 1, see naptime_hour below; a synchronous standby
that never comes with no_standby => 1, see syncrep_waiting below), the node
started, the
database $params{db} (default postgres) created unless it is postgres, and
CREATE EXTENSION projection there.  Other %params go to new_node.  Returns the
started node.

=cut

sub start_node
{
	my ($name, %params) = @_;
	my $db = delete $params{db} // 'postgres';
	my $conf = delete $params{conf};
	my $naptime_hour = delete $params{naptime_hour};
	my $no_standby = delete $params{no_standby};
	my $node = new_node($name, %params);

	$node->append_conf('postgresql.conf', $conf) if defined $conf;
	$node->naptime_hour if $naptime_hour;
	$node->append_conf(
		'postgresql.conf', q{
wal_level = replica
max_wal_senders = 2
synchronous_standby_names = 'nobody'
synchronous_commit = local
}) if $no_standby;
	$node->start;
	$node->safe_psql('postgres', "CREATE DATABASE $db") unless $db eq 'postgres';
	$node->create_ext($db);
	return $node;
}

# initdb_template(): the data directory that init_from_template copies,
# made by initdb (with the options PostgreSQL::Test::Cluster's init gives it)
# the first time a test of this prove run asks for it, in the run's tmp_check
# directory, which "make installcheck" empties before prove starts.
sub initdb_template
{
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/projection_initdb_template";

	return $dir if -f "$dir.done";
	open my $lock, '>', "$dir.lock" or die "could not open $dir.lock: $!";
	flock($lock, Fcntl::LOCK_EX) or die "could not lock $dir.lock: $!";
	if (!-f "$dir.done")
	{
		File::Path::rmtree($dir);
		PostgreSQL::Test::Utils::system_or_bail('initdb', '-D', $dir, '-A', 'trust', '-N');
		open my $done, '>', "$dir.done" or die "could not create $dir.done: $!";
		close $done;
	}
	close $lock;
	return $dir;
}

# init_from_template(node, %params): the node's init, with its initdb
# replaced by a copy of initdb_template(), as PostgreSQL 17's own
# INITDB_TEMPLATE does (PostgreSQL 15's PostgreSQL::Test::Cluster has no such
# option, so its call of initdb is intercepted here).  Everything else of init
# (pg_regress --config-auth, the configuration it writes, streaming and
# archiving) runs as usual.  Copying is several times cheaper than initdb,
# and each TAP file starts one to five nodes.
sub init_from_template
{
	my ($node, %params) = @_;
	my $template = initdb_template();
	my $system_or_bail = \&PostgreSQL::Test::Utils::system_or_bail;

	no warnings 'redefine';
	local *PostgreSQL::Test::Utils::system_or_bail = sub {
		return $system_or_bail->(@_) unless $_[0] eq 'initdb';
		Test::More::note('initializing database system by copying '
			  . 'the projection tests\' initdb template');
		return $system_or_bail->('cp', '-RPp', $template, $node->data_dir);
	};
	# 17 and later copy their own template when this is set: we copy ours
	delete local $ENV{INITDB_TEMPLATE};
	$node->init(%params);
	return;
}

=pod

=item sql_literal(string)

The string as an SQL string literal.

=cut

sub sql_literal
{
	my ($s) = @_;

	$s =~ s/'/''/g;
	return "'$s'";
}

=pod

=item readme_sql_blocks(lines)

The ```sql blocks of the README given as its lines (with their newlines),
in order: a list of { line => the line of the opening fence, sql => the
block's text, mark => the text of a "<!-- docs-test: ... -->" marker on the
line just before the fence, or '' }, as a reference; then a reference to the
line numbers of markers not followed by a ```sql fence, and whether the last
block was left open.

=cut

sub readme_sql_blocks
{
	my @lines = @_;
	my (@blocks, @stray);
	my ($in, $cur, $prev) = (0, undef, '');

	for my $i (0 .. $#lines)
	{
		my $l = $lines[$i];
		if (!$in && $l =~ /^```sql\s*$/)
		{
			my $mark = $prev =~ /^<!--\s*docs-test:\s*(.*?)\s*-->\s*$/ ? $1 : '';
			$cur = { line => $i + 1, sql => '', mark => $mark };
			$in = 1;
		}
		elsif ($in && $l =~ /^```\s*$/)
		{
			push @blocks, $cur;
			$in = 0;
		}
		elsif ($in)
		{
			$cur->{sql} .= $l;
		}
		elsif ($l =~ /^<!--\s*docs-test:/ && ($lines[ $i + 1 ] // '') !~ /^```sql\s*$/)
		{
			push @stray, $i + 1;
		}
		$prev = $l;
	}
	return (\@blocks, \@stray, $in);
}

=pod

=back

=head1 METHODS

=over

=item $node->create_ext(db)

CREATE EXTENSION projection in database db.

=cut

sub create_ext
{
	my ($self, $db) = @_;

	$self->safe_psql($db, 'CREATE EXTENSION projection');
	return;
}

=pod

=item $node->workers_per_database()

How many workers the launcher runs in each database with the extension
(projection.workers_per_database, 1 if the server has no such setting).

=cut

sub workers_per_database
{
	my ($self) = @_;

	return $self->safe_psql('postgres',
		"SELECT coalesce(current_setting('projection.workers_per_database', true), '1')"
	);
}

=pod

=item $node->worker_count(db)

How many processes of backend_type 'projection worker' are connected to db
right now.

=cut

sub worker_count
{
	my ($self, $db) = @_;

	return $self->safe_psql('postgres',
		    "SELECT count(*) FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND datname = "
		  . sql_literal($db));
}

=pod

=item $node->worker_pids(db)

The pids of db's projection workers, once all of them run (waits, bounded,
and dies if they never do).

=cut

sub worker_pids
{
	my ($self, $db) = @_;

	$self->wait_for_worker($db)
	  or die "the projection workers of database \"$db\" do not run";
	return split /\n/,
	  $self->safe_psql('postgres',
		    "SELECT pid FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND datname = "
		  . sql_literal($db)
		  . " ORDER BY pid");
}

=pod

=item $node->wait_for_worker(db)

Waits until db has a projection worker, or no running async projection of
db has anything to apply (then no worker is due).  Workers start on demand:
one for each worker group (projection id modulo
projection.workers_per_database) with a running async projection that has
work.  new_node sets projection.worker_idle_timeout to an hour, so they stay,
unless the pool (projection.max_workers) is full and another database needs
the slot of an idle one.

=cut

sub wait_for_worker
{
	my ($self, $db) = @_;
	my $running = "(SELECT count(*) >= 1 FROM pg_stat_activity "
	  . "WHERE backend_type = 'projection worker' AND datname = current_database())";
	my $has_ext = $self->safe_psql($db,
		"SELECT count(*) FROM pg_extension WHERE extname = 'projection'");

	return $self->poll_query_until($db, "SELECT $running") if $has_ext eq '0';
	return $self->poll_query_until($db,
		    "SELECT $running OR NOT EXISTS (SELECT FROM projection.status "
		  . "WHERE mode = 'async' AND state IN ('running', 'catching_up') AND lag_events > 0)");
}

=pod

=item $node->wait_for_no_worker(db)

Waits until no projection worker is connected to db.

=cut

sub wait_for_no_worker
{
	my ($self, $db) = @_;

	return $self->poll_query_until('postgres',
		    "SELECT count(*) = 0 FROM pg_stat_activity "
		  . "WHERE backend_type = 'projection worker' AND datname = "
		  . sql_literal($db));
}

=pod

=item $node->max_position(db)

The highest global_position in db's event store (0 when empty).

=cut

sub max_position
{
	my ($self, $db) = @_;

	return $self->safe_psql($db,
		'SELECT coalesce(max(global_position), 0) FROM projection.events');
}

=pod

=item $node->wait_caught_up(db, projection, [up_to])

Waits until the projection has applied every event up to position up_to
(default: the last event now in the store) and reports no lag: its checkpoint
is at or past up_to, projection.wait() agrees, lag_events is 0 and its state
is 'running'.

=cut

sub wait_caught_up
{
	my ($self, $db, $projection, $up_to) = @_;
	my $name = sql_literal($projection);

	$up_to = $self->max_position($db) unless defined $up_to;
	return $self->poll_query_until($db,
		    "SELECT projection.wait($name, $up_to, '1 s') "
		  . "AND position >= $up_to AND lag_events = 0 AND state = 'running' "
		  . "FROM projection.status WHERE name = $name");
}

=pod

=item $node->wait_for_state(db, projection, state)

Waits until the projection's state in projection.status is state.

=cut

sub wait_for_state
{
	my ($self, $db, $projection, $state) = @_;

	return $self->poll_query_until($db,
		    "SELECT state FROM projection.status WHERE name = "
		  . sql_literal($projection),
		$state);
}

=pod

=item $node->status(db, projection, columns)

One row of projection.status as a hash reference, with the given columns
(an array reference, default: name, mode, state, position, lag_events,
last_error).  NULLs come back as empty strings.

=cut

sub status
{
	my ($self, $db, $projection, $columns) = @_;

	$columns ||= [qw(name mode state position lag_events last_error)];
	# query_hash refuses list context: call it in scalar context
	my $row = $self->query_hash($db,
		"SELECT __COLUMNS__ FROM projection.status WHERE name = "
		  . sql_literal($projection),
		@$columns);
	return $row;
}

=pod

=item $node->wait_for_crash_restart(offset)

After a backend was killed: waits for the postmaster to log that it
reinitialised (searching the log from byte offset), then until connections
are accepted again.

=cut

sub wait_for_crash_restart
{
	my ($self, $offset) = @_;

	$self->wait_for_log(qr/all server processes terminated; reinitializing/,
		$offset);

	# Not poll_query_until: while the server restarts, psql can exit before
	# it reads the query from its stdin, and IPC::Run then dies of the
	# broken pipe (seen on the slower assert-enabled server).
	local $SIG{PIPE} = 'IGNORE';
	my $tries = 10 * $PostgreSQL::Test::Utils::timeout_default;
	for (my $i = 0; $i < $tries; $i++)
	{
		my $up = eval { $self->safe_psql('postgres', 'SELECT 1') eq '1' };
		return 1 if $up;
		Time::HiRes::usleep(100_000);
	}
	return 0;
}

=pod

=item $node->psql_each(dbs, sql)

Runs sql (one statement or several, with no output of its own wanted) in
each database of the array reference dbs, one after the other, in ONE psql
process that connects to each in turn (\c), and returns the lines it
printed.  Much cheaper than a psql process per database when a test walks
hundreds of them.  Dies on the first error, like safe_psql.

=cut

sub psql_each
{
	my ($self, $dbs, $sql) = @_;

	return () unless @$dbs;
	my $out = $self->safe_psql('postgres',
		join('', map { "\\c $_\n$sql\n" } @$dbs));
	return grep { $_ ne '' } split /\n/, $out;
}

=pod

=item $node->poll_each(dbs, query)

Like poll_query_until(db, query) for every database of the array reference
dbs at once: the query (returning one boolean) runs in each database not yet
done, in one psql process per round, until it is true in all of them, or
until no database got done for $PostgreSQL::Test::Utils::timeout_default
seconds.  Returns how many got done.

=cut

sub poll_each
{
	my ($self, $dbs, $query) = @_;
	my %pending = map { $_ => 1 } @$dbs;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;

	while (%pending && time < $deadline)
	{
		my @round = sort keys %pending;
		for my $line ($self->psql_each(\@round,
				"SELECT current_database() || '|' || ($query)::text;"))
		{
			my ($db, $value) = split /\|/, $line, 2;
			if ($value eq 'true' || $value eq 't')
			{
				delete $pending{$db};
				$deadline = time + $PostgreSQL::Test::Utils::timeout_default;
			}
		}
		Time::HiRes::usleep(100_000) if %pending;
	}
	return scalar(@$dbs) - scalar(keys %pending);
}

=pod

=back

=head1 SHARED SET-UPS

Set-ups that several test files use, so that they stay alike.

=over

=item $node->create_exactly_once_tables(db)

The tables of the exactly-once tests (002, 040): counters (one row, id 1,
n 0), applied (pos bigint PRIMARY KEY: a repeated event would violate it)
and block_at (positions at which the test's handler takes advisory lock
4242, shared, so that the worker blocks there while the test holds it).

=cut

sub create_exactly_once_tables
{
	my ($self, $db) = @_;

	$self->safe_psql(
		$db, q{
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counters VALUES (1, 0);
CREATE TABLE applied (pos bigint PRIMARY KEY);
CREATE TABLE block_at (pos bigint PRIMARY KEY);
});
	return;
}

=pod

=item $node->bulk_append(db, n, [streams])

Appends n 'Incremented' events in one INSERT ... SELECT, over streams (default
1000) streams never used before by this node's bulk_append (so explicit stream
versions never collide); returns the new last position.

=cut

sub bulk_append
{
	my ($self, $db, $n, $width) = @_;
	my $streams = $self->{projection_bulk_streams} // 0;

	$width //= 1000;
	$self->safe_psql(
		$db, qq{
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'counter-' || ($streams + i % $width), i / $width + 1, 'Incremented',
	   jsonb_build_object('i', i)
  FROM generate_series(0, $n - 1) i;
});
	$self->{projection_bulk_streams} = $streams + $width;
	return $self->max_position($db);
}

=pod

=item $node->check_exactly_once(db, projection, what)

Test assertions (named after what) for the exactly-once tests: every event of
the store is in applied once, no applied position is unknown, the counter
equals the number of events, and the projection is running, without error
or lag, its checkpoint at or past the last event.

=cut

sub check_exactly_once
{
	my ($self, $db, $projection, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	my $n = $self->safe_psql($db, 'SELECT count(*) FROM projection.events');
	Test::More::is(
		$self->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM projection.events) || ' events, '
	|| (SELECT count(*) FROM applied) || ' applied, counter '
	|| (SELECT n FROM counters WHERE id = 1) || ', '
	|| (SELECT count(*) FROM projection.events e
		 WHERE NOT EXISTS (SELECT FROM applied a WHERE a.pos = e.global_position))
	|| ' missing, '
	|| (SELECT count(*) FROM applied a
		 WHERE NOT EXISTS (SELECT FROM projection.events e WHERE e.global_position = a.pos))
	|| ' unknown'
}),
		"$n events, $n applied, counter $n, 0 missing, 0 unknown",
		"$what: every event applied exactly once");
	my $st = $self->status($db, $projection);
	Test::More::is($st->{state}, 'running', "$what: the projection is running");
	Test::More::is($st->{last_error}, '', "$what: no error recorded");
	Test::More::is($st->{lag_events}, '0', "$what: no lag");
	# after a crash the sequence resumes up to 32 values further on (it logs
	# ahead), and the checkpoint may move past those never-used positions
	Test::More::cmp_ok($st->{position}, '>=', $self->max_position($db),
		"$what: the checkpoint is at or past the last event");
	return;
}

=pod

=item $node->blocked_worker_pid(what)

Waits until exactly one projection worker waits on an advisory lock (the
test's lock 4242), asserting it (named after what); returns its pid.

=cut

sub blocked_worker_pid
{
	my ($self, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $where = "FROM pg_stat_activity WHERE backend_type = 'projection worker' "
	  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'";

	Test::More::ok($self->poll_query_until('postgres', "SELECT count(*) = 1 $where"),
		$what);
	return $self->safe_psql('postgres', "SELECT pid $where");
}

=pod

=item $node->create_gate(db, [backend_type])

The blocking point of the tests that stop a handler, a batch statement or a
fold at a known event: a table block_at (pos bigint PRIMARY KEY; kept if it
exists, as create_exactly_once_tables makes it) and a function
gate(pos bigint) RETURNS boolean, always true, which at the positions of
block_at takes advisory lock 4242, shared, so that its caller blocks there
while the test holds the lock; with backend_type ('projection worker' or
'client backend'), only a caller of that pg_stat_activity.backend_type does
(040, 045, 046, 102, 121).

=cut

sub create_gate
{
	my ($self, $db, $backend_type) = @_;
	my $who =
	  defined $backend_type
	  ? " AND (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()) = "
	  . sql_literal($backend_type)
	  : '';

	$self->safe_psql(
		$db, qq{
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS block_at (pos bigint PRIMARY KEY);
CREATE FUNCTION gate(pos bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN
	IF EXISTS (SELECT FROM public.block_at b WHERE b.pos = gate.pos)$who THEN
		PERFORM pg_advisory_xact_lock_shared(4242);
	END IF;
	RETURN true;
END
\$\$;
});
	return;
}

=pod

=item $node->create_count_fold(db, [backend_type])

The fold of the snapshot tests (045, 102, 121): create_gate(db,
backend_type), then count_fold(state jsonb, e projection.events), which
passes the gate and then counts the events (n), sums their data's i (sum)
and keeps the last one's stream_version (last), so that a lost or repeated
event shows in the state; and count_agg(projection.events), the same fold
as an SQL aggregate, the oracle of check_fold_states.

=cut

sub create_count_fold
{
	my ($self, $db, $backend_type) = @_;

	$self->create_gate($db, $backend_type);
	$self->safe_psql(
		$db, q{
CREATE FUNCTION count_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM public.gate(e.global_position);
	RETURN jsonb_build_object('n', coalesce((state->>'n')::bigint, 0) + 1,
							  'sum', coalesce((state->>'sum')::bigint, 0) + (e.data->>'i')::bigint,
							  'last', e.stream_version);
END
$$;
CREATE AGGREGATE count_agg(projection.events) (sfunc = count_fold, stype = jsonb, initcond = '{}');
});
	return;
}

=pod

=item $node->create_counted_streams(db, n)

The events of the snapshot tests that append beside a rebuild or a
catch-up (102, 125): n events of type 'Counted' over the 50 streams s-0 to
s-49 in one INSERT ... SELECT (data {"i": i}), and a procedure appender(n
int) that appends n more over the same streams, one transaction each, for a
background session to CALL.

=cut

sub create_counted_streams
{
	my ($self, $db, $n) = @_;

	$self->safe_psql(
		$db, qq{
CREATE PROCEDURE appender(n int) LANGUAGE plpgsql AS \$\$
BEGIN
	FOR i IN 1 .. n LOOP
		PERFORM projection.append('s-' || (i % 50), 'Counted', jsonb_build_object('i', i));
		COMMIT;
	END LOOP;
END
\$\$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 's-' || (i % 50), i / 50 + 1, 'Counted', jsonb_build_object('i', i)
  FROM generate_series(0, $n - 1) i;
});
	return;
}

=pod

=item $node->check_fold_states(db, projection, what, [dead_letters => 1])

Test assertions (named after what) for a snapshot projection over the 50
streams of create_counted_streams whose fold is also the aggregate
count_agg: it catches up (wait_caught_up), each of the 50 streams has a
stored state and every state equals count_agg over the stream's events in
position order, and the projection is running and has no last_error.  With
dead_letters => 1, events in projection.dead_letters are left out of
count_agg and last_error is not checked (the fold failed there, on_error
'skip').

=cut

sub check_fold_states
{
	my ($self, $db, $projection, $what, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $name = sql_literal($projection);
	my $dead_letters = $opts{dead_letters};
	my $filter =
	  $dead_letters
	  ? ' FILTER (WHERE e.global_position NOT IN '
	  . '(SELECT global_position FROM projection.dead_letters))'
	  : '';

	Test::More::ok($self->wait_caught_up($db, $projection), "$what: caught up");
	Test::More::is(
		$self->safe_psql(
			$db, qq{
SELECT (SELECT count(*) FROM projection.snapshots WHERE name = $name) || ' states, '
	|| (SELECT count(*)
		  FROM (SELECT e.stream_id, count_agg(e ORDER BY e.global_position)$filter AS state
				  FROM projection.events e GROUP BY e.stream_id) f
		  FULL JOIN (SELECT * FROM projection.snapshots WHERE name = $name) s USING (stream_id)
		 WHERE s.state IS DISTINCT FROM f.state) || ' differ'
}),
		'50 states, 0 differ', "$what: every stream's state is the fold of its events");
	my $st = $self->status($db, $projection);
	Test::More::is($st->{state}, 'running', "$what: the projection is running");
	Test::More::is($st->{last_error}, '', "$what: no error recorded") unless $dead_letters;
	return;
}

=pod

=item $node->create_seen_projection(db)

The set-up of the wake-up tests (013, 014): a table seen (pos bigint
PRIMARY KEY) and an async projection p whose one statement, for events of
type E, inserts the event's position into it.  Such tests also set
projection.naptime to an hour (naptime_hour below), so that only a wake-up
gets an event applied.

=cut

sub create_seen_projection
{
	my ($self, $db) = @_;

	$self->safe_psql(
		$db, q{
CREATE TABLE seen (pos bigint PRIMARY KEY);
SELECT projection.create('p', NULL);
SELECT projection.on('p', 'E', 'INSERT INTO public.seen VALUES (($1).global_position)');
});
	return;
}

=pod

=item $node->naptime_hour()

Sets projection.naptime to an hour (before the start): the worker then runs
a round only when a commit or a rollback wakes it.

=cut

sub naptime_hour
{
	my ($self) = @_;

	$self->append_conf('postgresql.conf', 'projection.naptime = 3600000');
	return;
}

=pod

=item $node->syncrep_waiting(app)

For a node started with no_standby => 1 (start_node): its synchronous
standby never comes, so a session that commits with synchronous_commit = on
has its commit flushed and then waits for the standby (wait_event SyncRep),
invisible to others; synchronous_commit is local for every other session.
Returns an SQL condition: the session named app (application_name) waits
there now (099, 120).

=cut

sub syncrep_waiting
{
	my ($self, $app) = @_;

	return "EXISTS (SELECT FROM pg_stat_activity WHERE application_name = "
	  . sql_literal($app) . " AND wait_event = 'SyncRep')";
}

=pod

=item $node->syncrep_release(db, app)

Cancels the wait of the session named app for the standby (see
syncrep_waiting): its commit, already flushed, becomes visible, with a
WARNING to its client.

=cut

sub syncrep_release
{
	my ($self, $db, $app) = @_;

	$self->safe_psql($db,
		    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = "
		  . sql_literal($app) . " AND wait_event = 'SyncRep'");
	return;
}

=pod

=item $node->create_owned_projection(db, schema, role)

The set-up of the restore tests (023, 026): in db, a schema owned by role
(a login role that exists), with a table schema.log (pos bigint PRIMARY
KEY) and a handler schema.h that inserts each event's position into it,
and an async projection named schema_async that role creates with them;
then one event is appended (wait for it with wait_caught_up).

=cut

sub create_owned_projection
{
	my ($self, $db, $schema, $role) = @_;

	$self->safe_psql(
		$db, qq{
CREATE SCHEMA $schema AUTHORIZATION $role;
GRANT SELECT ON projection.events TO $role;
SET ROLE $role;
CREATE TABLE $schema.log (pos bigint PRIMARY KEY);
CREATE FUNCTION $schema.h(e projection.events) RETURNS void LANGUAGE sql AS
  \$\$ INSERT INTO $schema.log VALUES (e.global_position) \$\$;
SELECT projection.create('${schema}_async', '$schema.h', tables => '{$schema.log}');
RESET ROLE;
SELECT projection.append('s', 'E', '{}');
});
	return;
}

=pod

=item $node->start_long_poll(db, sql, out, [err])

Starts psql running sql (a projection.poll with a long wait, in the feed
tests) in db, in the background, its output to the scalar reference out
(and its errors to err), both emptied first; returns the IPC::Run harness,
bounded by $PostgreSQL::Test::Utils::timeout_default.  Finish it with
$h->finish.

=cut

sub start_long_poll
{
	my ($self, $db, $sql, $out, $err) = @_;

	$err //= \my $ignored;
	($$out, $$err) = ('', '');
	return IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $self->connstr($db), '-c', $sql ],
		'>', $out, '2>', $err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

=pod

=item $node->wait_for_sleeping_poll(db, [feed], [no_snapshot])

Waits until exactly one session of db other than this one runs a
projection.poll with a wait (of feed, if given) and sleeps in it
(wait_event_type Extension); with no_snapshot, one that also holds no
snapshot (backend_xmin is NULL).

=cut

sub wait_for_sleeping_poll
{
	my ($self, $db, $feed, $no_snapshot) = @_;
	my $like = defined $feed ? "%projection.poll(''$feed''%wait%" : '%projection.poll(%wait%';

	return $self->poll_query_until($db,
		    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '$like' "
		  . "AND pid <> pg_backend_pid() AND wait_event_type = 'Extension'"
		  . ($no_snapshot ? ' AND backend_xmin IS NULL' : ''),
		'1');
}

=pod

=item $node->wait_for_lease_over(db, feed, [partition])

Waits until the feed (or its partition) is leased no longer
(projection.feed_status.leased is false).

=cut

sub wait_for_lease_over
{
	my ($self, $db, $feed, $partition) = @_;

	return $self->poll_query_until($db,
		    "SELECT NOT leased FROM projection.feed_status WHERE feed = "
		  . sql_literal($feed)
		  . (defined $partition ? " AND partition = $partition" : ''),
		't');
}

=pod

=item $node->create_recording_projection(db, projection, table, function)

An async projection whose handler, the SQL function named function, inserts
each event's position into table (pos bigint PRIMARY KEY), which only it
writes (017, 019).

=cut

sub create_recording_projection
{
	my ($self, $db, $projection, $table, $function) = @_;

	$self->safe_psql(
		$db, qq{
CREATE TABLE $table (pos bigint PRIMARY KEY);
CREATE FUNCTION $function(e projection.events) RETURNS void
LANGUAGE sql AS \$\$ INSERT INTO public.$table VALUES (e.global_position) \$\$;
SELECT projection.create(} . sql_literal($projection) . qq{, '$function');
});
	return;
}

=pod

=back

=cut

1;
