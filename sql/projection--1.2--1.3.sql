/* sql/projection--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.3'" to load this file. \quit

/*
 * Version 1.3: operability, batch handlers and snapshots, feeds.  Each
 * section below says what it adds; the README's "Upgrading" section says
 * what changes for existing projections.
 */

/* ------------------------------------------------------------------------
 * Handler management and poison-event tools (issue 11, items 2 and 3):
 * off, the statements view, create's if_not_exists, alter, skip,
 * retry_dead_letters, and a dead-letter count in status (src/lifecycle.c)
 * ------------------------------------------------------------------------
 */

/*
 * create() gets if_not_exists: a no-op with a NOTICE when the projection
 * exists with the same definition, an error naming the differences when it
 * differs.  A new argument with a default, so existing calls keep working:
 * drop and recreate, as 1.2 did for if_not_empty.
 */
DROP FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text);
CREATE FUNCTION projection.create(name text, handler regproc, event_types text[] DEFAULT NULL,
								  mode text DEFAULT 'async', tables regclass[] DEFAULT '{}',
								  start_from text DEFAULT 'beginning', on_error text DEFAULT 'stop',
								  if_not_empty text DEFAULT 'error', if_not_exists boolean DEFAULT false)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_create';
COMMENT ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text, boolean) IS 'registers a projection (if_not_exists: a no-op when an identical one exists)';
REVOKE ALL ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text, boolean) TO PUBLIC;

CREATE FUNCTION projection.off(name text, event_type text, if_exists boolean DEFAULT false)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_off';
COMMENT ON FUNCTION projection.off(text, text, boolean) IS 'removes the statements added with on() for one event type (owner only)';
REVOKE ALL ON FUNCTION projection.off(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.off(text, text, boolean) TO PUBLIC;

CREATE FUNCTION projection.alter(name text, on_error text DEFAULT NULL, event_types text[] DEFAULT NULL,
								 tables regclass[] DEFAULT NULL, reset_event_types boolean DEFAULT false)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_alter';
COMMENT ON FUNCTION projection.alter(text, text, text[], regclass[], boolean) IS 'changes a projection''s on_error, event_types or tables, from the next event on (owner only)';
REVOKE ALL ON FUNCTION projection.alter(text, text, text[], regclass[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.alter(text, text, text[], regclass[], boolean) TO PUBLIC;

CREATE FUNCTION projection.skip(name text)
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_skip';
COMMENT ON FUNCTION projection.skip(text) IS 'records the event a failed projection stopped at in dead_letters and resumes after it; returns its position (owner only)';
REVOKE ALL ON FUNCTION projection.skip(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.skip(text) TO PUBLIC;

CREATE FUNCTION projection.retry_dead_letters(name text, OUT retried bigint, OUT applied bigint,
											  OUT failed bigint)
	RETURNS record
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_retry_dead_letters';
COMMENT ON FUNCTION projection.retry_dead_letters(text) IS 'applies a projection''s dead letters again through its current handlers, in position order, removing those that succeed (owner only)';
REVOKE ALL ON FUNCTION projection.retry_dead_letters(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.retry_dead_letters(text) TO PUBLIC;

/*
 * A projection's statements, for everyone to list; the statement text
 * (which can embed values) only for members of the owner role and roles
 * with SELECT on projection.events, as status masks last_error.  The view
 * reads the registry with its owner's rights; the filter uses the caller's.
 */
CREATE VIEW projection.statements WITH (security_barrier) AS
SELECT p.name, h.event_type, h.seq,
	   CASE WHEN pg_catalog.pg_has_role(p.owner::pg_catalog.oid, 'USAGE')
				 OR pg_catalog.has_table_privilege('projection.events'::pg_catalog.regclass, 'SELECT')
			THEN h.statement END AS statement,
	   p.owner
  FROM projection.handlers h
  JOIN projection.projections p ON p.id OPERATOR(pg_catalog.=) h.projection_id;
COMMENT ON VIEW projection.statements IS 'the statements added with projection.on(), in the order they run (statement only for the owner and readers of events)';
GRANT SELECT ON projection.statements TO PUBLIC;

/*
 * The number of dead letters of one projection, for the status view: a
 * function with a fixed cost, so that a large dead_letters table does not
 * push the view's plan over jit_above_cost; it reads the table as its
 * owner and returns only a count.
 */
CREATE FUNCTION projection._dead_letter_count(name text)
	RETURNS bigint
	LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	SET jit = off
	AS 'SELECT pg_catalog.count(*) FROM projection.dead_letters d WHERE d.name OPERATOR(pg_catalog.=) $1';
COMMENT ON FUNCTION projection._dead_letter_count(text) IS 'number of dead letters of a projection (for projection.status)';
REVOKE ALL ON FUNCTION projection._dead_letter_count(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection._dead_letter_count(text) TO PUBLIC;

CREATE OR REPLACE VIEW projection.status WITH (security_barrier) AS
SELECT s.name, s.mode, s.state, s."position", s.lag_events, s.lag_seconds, s.last_error,
	   s.last_error_sqlstate, s.last_error_position, s.handler, s.event_types, s.tables,
	   s.on_error, s.owner, s.rebuild_done, s.rebuild_total, s.updated_at, s.lag_exact,
	   projection._dead_letter_count(s.name) AS dead_letters
  FROM projection._status() s;
COMMENT ON VIEW projection.status IS 'one row per projection: state, checkpoint, lag, last error (last_error only for the owner and readers of events) and number of dead letters';

/* ------------------------------------------------------------------------
 * Batch handlers: projection.on_batch (issue 12, item 1)
 * ------------------------------------------------------------------------
 */

/*
 * Set-based handlers added with projection.on_batch(), run in "seq" order
 * once per batch, after the projection's per-event handlers of that batch.
 * The statement reads the batch's events as the relation "batch".
 */
CREATE TABLE projection.batch_handlers (
	projection_id	integer NOT NULL REFERENCES projection.projections (id) ON DELETE CASCADE,
	seq				integer NOT NULL,
	statement		text NOT NULL,
	PRIMARY KEY (projection_id, seq)
);
COMMENT ON TABLE projection.batch_handlers IS 'set-based statement handlers added with projection.on_batch()';
SELECT pg_catalog.pg_extension_config_dump('projection.batch_handlers', '');
REVOKE ALL ON projection.batch_handlers FROM PUBLIC;
CREATE TRIGGER _registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projection.batch_handlers
	FOR EACH STATEMENT EXECUTE FUNCTION projection._registry_changed();

CREATE FUNCTION projection.on_batch(name text, statement text)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_on_batch';
COMMENT ON FUNCTION projection.on_batch(text, text) IS 'adds a set-based SQL statement handler, run once per batch over the relation "batch" of its events';
REVOKE ALL ON FUNCTION projection.on_batch(text, text) FROM PUBLIC;
-- any role may call it; it checks ownership of the projection itself
GRANT EXECUTE ON FUNCTION projection.on_batch(text, text) TO PUBLIC;

CREATE FUNCTION projection.off_batch(name text)
	RETURNS integer
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_off_batch';
COMMENT ON FUNCTION projection.off_batch(text) IS 'removes the set-based statement handlers of a projection, returning how many';
REVOKE ALL ON FUNCTION projection.off_batch(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.off_batch(text) TO PUBLIC;

/* ------------------------------------------------------------------------
 * Feeds (issue 13): events handed, in order and without gaps, to consumers
 * outside the database, with leases and checkpoints kept here (src/feed.c).
 * ------------------------------------------------------------------------
 */
CREATE SEQUENCE projection.feeds_id_seq AS integer;
CREATE TABLE projection.feeds (
	id				integer PRIMARY KEY DEFAULT pg_catalog.nextval('projection.feeds_id_seq'),
	name			text NOT NULL UNIQUE,
	owner			regrole NOT NULL,
	event_types		text[],
	partitions		integer NOT NULL
		CHECK (partitions OPERATOR(pg_catalog.>=) 1 AND partitions OPERATOR(pg_catalog.<=) 1024),
	paused			boolean NOT NULL DEFAULT false,
	max_attempts	integer CHECK (max_attempts OPERATOR(pg_catalog.>=) 1),
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE projection.feeds_id_seq OWNED BY projection.feeds.id;
COMMENT ON TABLE projection.feeds IS 'feeds for consumers outside the database (written only by the extension''s functions)';

/*
 * One row per partition of a feed: its checkpoint ("position": every event
 * of the partition up to it is acknowledged), its lease, and the event
 * that nack() reported failing (failed_position, attempts, last_error; no
 * poll before retry_at).  lease_epoch
 * grows with every lease and every seek, so a poll's view of the row is
 * checked again when it takes the lease (src/feed.c).
 */
CREATE TABLE projection.feed_partitions (
	feed_id			integer NOT NULL REFERENCES projection.feeds (id) ON DELETE CASCADE,
	partition		integer NOT NULL,
	position		bigint NOT NULL DEFAULT 0,
	lease_epoch		bigint NOT NULL DEFAULT 0,
	lease_token		text,
	lease_holder	text,
	lease_expires	timestamptz,
	lease_last		bigint,
	acked_at		timestamptz,
	failed_position bigint,
	attempts		integer NOT NULL DEFAULT 0,
	last_error		text,
	retry_at		timestamptz,
	PRIMARY KEY (feed_id, partition)
);
CREATE UNIQUE INDEX feed_partitions_token_idx ON projection.feed_partitions (lease_token);
COMMENT ON TABLE projection.feed_partitions IS 'checkpoint and lease of each feed partition (written only by the extension''s functions)';

/* events a feed parked after max_attempts failed deliveries (nack) */
CREATE TABLE projection.feed_parked (
	feed_id			integer NOT NULL REFERENCES projection.feeds (id) ON DELETE CASCADE,
	global_position bigint NOT NULL,
	stream_id		text NOT NULL,
	event_type		text NOT NULL,
	attempts		integer NOT NULL,
	error			text,
	parked_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (feed_id, global_position)
);
COMMENT ON TABLE projection.feed_parked IS 'events parked by feeds after repeated failed deliveries (written only by the extension''s functions)';

SELECT pg_catalog.pg_extension_config_dump('projection.feeds', '');
SELECT pg_catalog.pg_extension_config_dump('projection.feed_parked', '');
SELECT pg_catalog.pg_extension_config_dump('projection.feeds_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('projection.feed_partitions', '');
REVOKE ALL ON projection.feeds, projection.feed_partitions, projection.feed_parked,
	projection.feeds_id_seq FROM PUBLIC;

CREATE FUNCTION projection.feed_partition(stream_id text, partitions integer) RETURNS integer
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
	AS 'MODULE_PATHNAME', 'projection_feed_partition';
COMMENT ON FUNCTION projection.feed_partition(text, integer) IS 'the partition of a stream in a feed of that many partitions (32-bit FNV-1a of the stream id''s bytes, modulo partitions)';

CREATE FUNCTION projection.create_feed(name text, event_types text[] DEFAULT NULL,
									   start_from text DEFAULT 'beginning',
									   partitions integer DEFAULT 1,
									   max_attempts integer DEFAULT NULL) RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_create_feed';
COMMENT ON FUNCTION projection.create_feed(text, text[], text, integer, integer) IS 'creates a feed owned by the caller (needs SELECT on projection.events)';

CREATE FUNCTION projection.drop_feed(name text) RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_drop_feed';
COMMENT ON FUNCTION projection.drop_feed(text) IS 'drops a feed with its checkpoints and leases (owner only)';

CREATE FUNCTION projection.poll(feed text, max_events integer DEFAULT 100,
								wait interval DEFAULT '0 s', lease interval DEFAULT '30 s',
								partition integer DEFAULT NULL, max_bytes integer DEFAULT NULL)
	RETURNS TABLE (token text, partition integer, global_position bigint, stream_id text,
				   stream_version bigint, event_type text, data jsonb, metadata jsonb,
				   recorded_at timestamptz)
	LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
	AS 'MODULE_PATHNAME', 'projection_poll';
COMMENT ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer) IS 'leases a feed partition and returns its next events up to the safe horizon (owner only)';

CREATE FUNCTION projection.ack(feed text, token text, up_to bigint DEFAULT NULL) RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_ack';
COMMENT ON FUNCTION projection.ack(text, text, bigint) IS 'moves a leased partition''s checkpoint and ends the lease (owner only; a lost lease is refused with PJF01)';

CREATE FUNCTION projection.nack(feed text, token text, failed_position bigint, error text DEFAULT NULL,
								retry_after interval DEFAULT '10 s') RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_nack';
COMMENT ON FUNCTION projection.nack(text, text, bigint, text, interval) IS 'acks the events of a lease before a failed one, ends the lease and retries the failed one after retry_after, or parks it after max_attempts (owner only)';

CREATE FUNCTION projection.seek(feed text, "position" bigint) RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_seek';
COMMENT ON FUNCTION projection.seek(text, bigint) IS 'moves every partition''s checkpoint of a feed and ends its leases (owner only)';

CREATE FUNCTION projection.pause_feed(name text) RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_pause_feed';
COMMENT ON FUNCTION projection.pause_feed(text) IS 'stops a feed''s polls from handing out events (owner only)';

CREATE FUNCTION projection.resume_feed(name text) RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_resume_feed';
COMMENT ON FUNCTION projection.resume_feed(text) IS 'lets a paused feed hand out events again (owner only)';

/*
 * feed_status: readable by PUBLIC, like projection.status; last_error (the
 * consumer's text, which may quote event data) only for members of the
 * feed's owner role and readers of projection.events.  lag_events counts the committed events of the feed's types
 * in the partition after its checkpoint.
 */
CREATE VIEW projection.feed_status AS
SELECT f.name AS feed, p.partition, p."position",
	   l.lag_events,
	   COALESCE(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.oldest)::double precision, 0) AS lag_seconds,
	   p.lease_expires IS NOT NULL AND p.lease_expires OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp() AS leased,
	   p.lease_holder, p.lease_expires, p.lease_last, f.paused, f.owner, p.acked_at,
	   p.failed_position, p.attempts, p.retry_at,
	   CASE WHEN pg_catalog.pg_has_role(f.owner, 'USAGE')
				 OR pg_catalog.has_table_privilege('projection.events', 'SELECT')
			THEN p.last_error END AS last_error,
	   (SELECT pg_catalog.count(*) FROM projection.feed_parked k
		 WHERE k.feed_id OPERATOR(pg_catalog.=) f.id) AS parked
  FROM projection.feeds f
  JOIN projection.feed_partitions p ON p.feed_id OPERATOR(pg_catalog.=) f.id
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) AS lag_events, pg_catalog.min(e.recorded_at) AS oldest
	  FROM projection.events e
	 WHERE e.global_position OPERATOR(pg_catalog.>) p."position"
	   AND (f.event_types IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY (f.event_types))
	   AND (f.partitions OPERATOR(pg_catalog.=) 1
			OR projection.feed_partition(e.stream_id, f.partitions) OPERATOR(pg_catalog.=) p.partition)) l;
COMMENT ON VIEW projection.feed_status IS 'one row per feed partition: checkpoint, lag and lease';
GRANT SELECT ON projection.feed_status TO PUBLIC;

/* the parked events, for the feed's owner and readers of the events */
CREATE VIEW projection.feed_parked_events WITH (security_barrier) AS
SELECT f.name AS feed, k.global_position, k.stream_id, k.event_type, k.attempts, k.error, k.parked_at
  FROM projection.feed_parked k
  JOIN projection.feeds f ON f.id OPERATOR(pg_catalog.=) k.feed_id
 WHERE pg_catalog.pg_has_role(f.owner, 'USAGE')
	OR pg_catalog.has_table_privilege('projection.events', 'SELECT');
COMMENT ON VIEW projection.feed_parked_events IS 'events parked by feeds after max_attempts failed deliveries (rows of the caller''s feeds, or all for readers of events)';
GRANT SELECT ON projection.feed_parked_events TO PUBLIC;

REVOKE ALL ON FUNCTION
	projection.feed_partition(text, integer),
	projection.create_feed(text, text[], text, integer, integer),
	projection.drop_feed(text),
	projection.poll(text, integer, interval, interval, integer, integer),
	projection.ack(text, text, bigint),
	projection.nack(text, text, bigint, text, interval),
	projection.seek(text, bigint),
	projection.pause_feed(text),
	projection.resume_feed(text)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	projection.feed_partition(text, integer),
	projection.create_feed(text, text[], text, integer, integer),
	projection.drop_feed(text),
	projection.poll(text, integer, interval, interval, integer, integer),
	projection.ack(text, text, bigint),
	projection.nack(text, text, bigint, text, interval),
	projection.seek(text, bigint),
	projection.pause_feed(text),
	projection.resume_feed(text)
	TO PUBLIC;

/* ------------------------------------------------------------------------
 * Privileges: owners and dependencies that survive every way in (issue 10)
 * ------------------------------------------------------------------------
 */

/*
 * pg_upgrade and a restore with triggers disabled load registry rows
 * without their pg_shdepend owner entries; a projection whose owner was
 * dropped where nothing refused it must not run.  The worker checks both
 * whenever the registry changed; this runs the same check on demand.
 */
CREATE FUNCTION projection.repair_dependencies() RETURNS integer
	LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_repair_dependencies';
COMMENT ON FUNCTION projection.repair_dependencies() IS 'records missing owner entries of projections in pg_shdepend and stops projections whose owner is gone (superuser)';
REVOKE ALL ON FUNCTION projection.repair_dependencies() FROM PUBLIC;

/*
 * A backend that has not loaded the library (no shared_preload_libraries)
 * runs DROP FUNCTION, DROP TABLE, DROP OWNED and DROP EXTENSION without our
 * hooks.  This event trigger fires there too: it loads the library, whose
 * hooks then refuse or cascade the drop of a handler or table in use, drop
 * the projections of DROP OWNED, and remove the owner entries with the
 * registry at DROP EXTENSION (src/depend.c).  ENABLE ALWAYS: also with
 * session_replication_role = replica.
 */
CREATE FUNCTION projection._ddl_command_start() RETURNS event_trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_ddl_command_start';
COMMENT ON FUNCTION projection._ddl_command_start() IS 'event trigger: dependencies of projections in backends that had not loaded the library';
REVOKE ALL ON FUNCTION projection._ddl_command_start() FROM PUBLIC;
CREATE EVENT TRIGGER projection_dependencies ON ddl_command_start
	WHEN TAG IN ('DROP AGGREGATE', 'DROP DOMAIN', 'DROP EXTENSION', 'DROP FUNCTION',
				 'DROP LANGUAGE', 'DROP OWNED', 'DROP PROCEDURE', 'DROP ROUTINE',
				 'DROP SCHEMA', 'DROP TABLE', 'DROP TYPE')
	EXECUTE FUNCTION projection._ddl_command_start();
ALTER EVENT TRIGGER projection_dependencies ENABLE ALWAYS;

/* ------------------------------------------------------------------------
 * Per-stream snapshots (issue 12 item 2)
 * ------------------------------------------------------------------------
 */

/*
 * A snapshot projection is an ordinary projection (registry row, mode,
 * checkpoint, on_error) whose only handler is a batch statement calling
 * projection._snapshot_apply over the batch's events; snapshot_defs holds
 * its fold and initial state, snapshot_states one state per stream with
 * the position and stream version of the last event folded into it.  Both
 * are written only by the extension's functions (src/snapshot.c); the
 * states are read through the view projection.snapshots.
 */
CREATE TABLE projection.snapshot_defs (
	projection_id	integer PRIMARY KEY REFERENCES projection.projections (id) ON DELETE CASCADE,
	fold			regprocedure NOT NULL,
	initial			jsonb NOT NULL
);
COMMENT ON TABLE projection.snapshot_defs IS 'fold and initial state of each snapshot projection (written only by create_snapshot)';

/*
 * No foreign key to snapshot_defs: its check would run for every new state;
 * the states of a projection go with its definition through the trigger
 * below instead.
 */
CREATE TABLE projection.snapshot_states (
	projection_id	integer NOT NULL,
	stream_id		text NOT NULL,
	state			jsonb,
	version			bigint NOT NULL,
	global_position bigint NOT NULL,
	PRIMARY KEY (projection_id, stream_id)
);
COMMENT ON TABLE projection.snapshot_states IS 'one folded state per stream and snapshot projection, with the last event folded in (read it as projection.snapshots)';

CREATE FUNCTION projection._snapshot_defs_deleted() RETURNS trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	DELETE FROM projection.snapshot_states s USING old_defs d
	 WHERE s.projection_id OPERATOR(pg_catalog.=) d.projection_id;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION projection._snapshot_defs_deleted() IS 'deletes the stored states of dropped snapshot projections';
REVOKE ALL ON FUNCTION projection._snapshot_defs_deleted() FROM PUBLIC;
CREATE TRIGGER _snapshot_defs_deleted AFTER DELETE ON projection.snapshot_defs
	REFERENCING OLD TABLE AS old_defs
	FOR EACH STATEMENT EXECUTE FUNCTION projection._snapshot_defs_deleted();

SELECT pg_catalog.pg_extension_config_dump('projection.snapshot_defs', '');
SELECT pg_catalog.pg_extension_config_dump('projection.snapshot_states', '');
REVOKE ALL ON projection.snapshot_defs FROM PUBLIC;
REVOKE ALL ON projection.snapshot_states FROM PUBLIC;

CREATE FUNCTION projection.create_snapshot(name text, fold regproc, initial jsonb DEFAULT '{}',
										   event_types text[] DEFAULT NULL, mode text DEFAULT 'async',
										   on_error text DEFAULT 'stop')
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_create_snapshot';
COMMENT ON FUNCTION projection.create_snapshot(text, regproc, jsonb, text[], text, text) IS 'registers a snapshot projection: one state per stream, folded by fold(state jsonb, e projection.events)';
REVOKE ALL ON FUNCTION projection.create_snapshot(text, regproc, jsonb, text[], text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.create_snapshot(text, regproc, jsonb, text[], text, text) TO PUBLIC;

CREATE FUNCTION projection.snapshot(name text, stream_id text)
	RETURNS jsonb
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_snapshot';
COMMENT ON FUNCTION projection.snapshot(text, text) IS 'the current state of one stream in a snapshot projection: the stored state folded forward with the stream''s events not yet applied';
REVOKE ALL ON FUNCTION projection.snapshot(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.snapshot(text, text) TO PUBLIC;

/*
 * The batch statement of a snapshot projection calls this as the
 * projection's owner, so it is executable by PUBLIC; it refuses any caller
 * who is not a member of the named projection's owner role (for whom it
 * writes nothing but that projection's own states, as a handler may write
 * its own tables).
 */
CREATE FUNCTION projection._snapshot_apply(name text, events projection.events[])
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE STRICT
	AS 'MODULE_PATHNAME', 'projection_snapshot_apply';
COMMENT ON FUNCTION projection._snapshot_apply(text, projection.events[]) IS 'folds a batch of events into a snapshot projection''s stored states; returns the number of states written';
REVOKE ALL ON FUNCTION projection._snapshot_apply(text, projection.events[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection._snapshot_apply(text, projection.events[]) TO PUBLIC;

/*
 * The states quote event data: rows show only to members of the
 * projection's owner role and to roles that may read projection.events
 * (the rule of status.last_error).  The view reads the tables as its owner;
 * the condition is evaluated as the reader.
 */
CREATE VIEW projection.snapshots WITH (security_barrier) AS
SELECT p.name, s.stream_id, s.state, s.version, s.global_position
  FROM projection.snapshot_states s
  JOIN projection.projections p ON p.id OPERATOR(pg_catalog.=) s.projection_id
 WHERE pg_catalog.pg_has_role(p.owner::pg_catalog.oid, 'USAGE')
	OR pg_catalog.has_table_privilege('projection.events'::pg_catalog.regclass, 'SELECT');
COMMENT ON VIEW projection.snapshots IS 'stored states of snapshot projections, one row per stream (only for the owner and readers of events)';
GRANT SELECT ON projection.snapshots TO PUBLIC;

/*
 * Section "pool" (workers on demand, issue 11): workers come from a shared
 * pool and a database holds one only while it has async work.
 * projection.status gains waiting_for_worker: true while an async
 * projection that can run waits for a free worker slot of the pool.  The
 * view keeps the columns of the sections above (dead_letters) and adds its
 * own at the end.
 */
CREATE FUNCTION projection._waiting_for_worker() RETURNS boolean
	LANGUAGE c STABLE PARALLEL RESTRICTED
	AS 'MODULE_PATHNAME', 'projection_waiting_for_worker';
COMMENT ON FUNCTION projection._waiting_for_worker() IS 'whether a worker group of this database waits for a free slot of the worker pool';
REVOKE ALL ON FUNCTION projection._waiting_for_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection._waiting_for_worker() TO PUBLIC;

CREATE OR REPLACE VIEW projection.status WITH (security_barrier) AS
SELECT s.name, s.mode, s.state, s."position", s.lag_events, s.lag_seconds, s.last_error,
	   s.last_error_sqlstate, s.last_error_position, s.handler, s.event_types, s.tables,
	   s.on_error, s.owner, s.rebuild_done, s.rebuild_total, s.updated_at, s.lag_exact,
	   projection._dead_letter_count(s.name) AS dead_letters,
	   (s.mode OPERATOR(pg_catalog.=) 'async'
		AND s.state OPERATOR(pg_catalog.=) ANY ('{running,catching_up}')
		AND projection._waiting_for_worker()) AS waiting_for_worker
  FROM projection._status() s;
COMMENT ON VIEW projection.status IS 'one row per projection: state, checkpoint, lag, last error (last_error only for the owner and readers of events), number of dead letters, and whether it waits for a worker slot';
