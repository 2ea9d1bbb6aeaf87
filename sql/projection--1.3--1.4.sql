/* sql/projection--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.4'" to load this file. \quit

/*
 * Version 1.4.  Version 1.3 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

/* ------------------------------------------------------------------------
 * Feeds: owners in pg_shdepend (issue 13, src/feeddepend.c)
 *
 * One pg_shdepend "owner" entry per feed, kept by a row trigger (so rows
 * that pg_restore loads get theirs too): DROP ROLE of a feed's owner is
 * refused with 2BP01, also from another database; DROP OWNED BY drops the
 * role's feeds and REASSIGN OWNED BY gives them to the new role (the
 * utility hook, src/depend.c).  The UPDATE records the entries of the
 * feeds that exist.
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION projection._feed_owner() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_feed_owner_trigger';
COMMENT ON FUNCTION projection._feed_owner() IS 'records the owner of each feed in pg_shdepend';
REVOKE ALL ON FUNCTION projection._feed_owner() FROM PUBLIC;
CREATE TRIGGER _feed_owner AFTER INSERT OR UPDATE OF owner OR DELETE ON projection.feeds
	FOR EACH ROW EXECUTE FUNCTION projection._feed_owner();
CREATE TRIGGER _feed_owner_truncate AFTER TRUNCATE ON projection.feeds
	FOR EACH STATEMENT EXECUTE FUNCTION projection._feed_owner();
UPDATE projection.feeds SET owner = owner;
COMMENT ON FUNCTION projection.repair_dependencies() IS 'records missing owner entries of projections and feeds in pg_shdepend and stops projections whose owner is gone (superuser)';

/* ------------------------------------------------------------------------
 * Feeds: extend_lease, seek of one partition (issue 13, src/feedack.c)
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION projection.extend_lease(feed text, token text, lease interval DEFAULT '30 s')
	RETURNS timestamptz
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_extend_lease';
COMMENT ON FUNCTION projection.extend_lease(text, text, interval) IS 'makes a live feed lease end that long from now (owner only; a lost lease is refused with PJF01)';
REVOKE ALL ON FUNCTION projection.extend_lease(text, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.extend_lease(text, text, interval) TO PUBLIC;

-- seek gains a partition argument: the 1.3 function is replaced
ALTER EXTENSION projection DROP FUNCTION projection.seek(text, bigint);
DROP FUNCTION projection.seek(text, bigint);
CREATE FUNCTION projection.seek(feed text, "position" bigint, partition integer DEFAULT NULL)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_seek';
COMMENT ON FUNCTION projection.seek(text, bigint, integer) IS 'moves the checkpoint of every partition of a feed, or of one, and ends their leases (owner only)';
REVOKE ALL ON FUNCTION projection.seek(text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.seek(text, bigint, integer) TO PUBLIC;

/*
 * poll gains "after": the client-owned checkpoint (the consumer keeps its
 * position with its own writes and passes it in; src/feedpoll.c).  The 1.3
 * function is replaced.
 */
ALTER EXTENSION projection DROP FUNCTION projection.poll(text, integer, interval, interval, integer, integer);
DROP FUNCTION projection.poll(text, integer, interval, interval, integer, integer);
CREATE FUNCTION projection.poll(feed text, max_events integer DEFAULT 100,
								wait interval DEFAULT '0 s', lease interval DEFAULT '30 s',
								partition integer DEFAULT NULL, max_bytes integer DEFAULT NULL,
								after bigint DEFAULT NULL)
	RETURNS TABLE (token text, partition integer, global_position bigint, stream_id text,
				   stream_version bigint, event_type text, data jsonb, metadata jsonb,
				   recorded_at timestamptz)
	LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
	AS 'MODULE_PATHNAME', 'projection_poll';
COMMENT ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint) IS 'leases a feed partition and returns its next events up to the safe horizon, after its checkpoint or the consumer''s own (owner only)';
REVOKE ALL ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint) TO PUBLIC;
/*
 * Section "pool2" (workers on demand, issue 11): waiting_for_worker says
 * whether THIS projection's worker group waits for a free slot of the pool,
 * no longer whether any group of its database does.  The view keeps its
 * columns; the database-wide _waiting_for_worker() of 1.3 goes.
 */
CREATE FUNCTION projection._waiting_for_worker(name text) RETURNS boolean
	LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
	AS 'MODULE_PATHNAME', 'projection_waiting_for_worker_of';
COMMENT ON FUNCTION projection._waiting_for_worker(text) IS 'whether the worker group of this async projection waits for a free slot of the worker pool';
REVOKE ALL ON FUNCTION projection._waiting_for_worker(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection._waiting_for_worker(text) TO PUBLIC;

CREATE OR REPLACE VIEW projection.status WITH (security_barrier) AS
SELECT s.name, s.mode, s.state, s."position", s.lag_events, s.lag_seconds, s.last_error,
	   s.last_error_sqlstate, s.last_error_position, s.handler, s.event_types, s.tables,
	   s.on_error, s.owner, s.rebuild_done, s.rebuild_total, s.updated_at, s.lag_exact,
	   projection._dead_letter_count(s.name) AS dead_letters,
	   (s.mode OPERATOR(pg_catalog.=) 'async'
		AND s.state OPERATOR(pg_catalog.=) ANY ('{running,catching_up}')
		AND projection._waiting_for_worker(s.name)) AS waiting_for_worker
  FROM projection._status() s;
COMMENT ON VIEW projection.status IS 'one row per projection: state, checkpoint, lag, last error (last_error only for the owner and readers of events), number of dead letters, and whether its worker group waits for a worker slot';

DROP FUNCTION projection._waiting_for_worker();

/*
 * Section "fixes1" (issue 11 item 2): a projection's batch statements, for
 * everyone to list, as projection.statements lists those of on(): the
 * statement text only for members of the owner role and roles with SELECT
 * on projection.events.  "snapshot" marks the own statement of a snapshot
 * projection (which off_batch, on_batch and on() refuse to touch).  The
 * view reads the registry with its owner's rights; the filter uses the
 * caller's.
 */
CREATE VIEW projection.batch_statements WITH (security_barrier) AS
SELECT p.name, b.seq,
	   CASE WHEN pg_catalog.pg_has_role(p.owner::pg_catalog.oid, 'USAGE')
				 OR pg_catalog.has_table_privilege('projection.events'::pg_catalog.regclass, 'SELECT')
			THEN b.statement END AS statement,
	   p.owner,
	   EXISTS (SELECT 1 FROM projection.snapshot_defs d
				WHERE d.projection_id OPERATOR(pg_catalog.=) p.id) AS snapshot
  FROM projection.batch_handlers b
  JOIN projection.projections p ON p.id OPERATOR(pg_catalog.=) b.projection_id;
COMMENT ON VIEW projection.batch_statements IS 'the batch statements added with projection.on_batch() (and those of snapshot projections), in the order they run (statement only for the owner and readers of events)';
GRANT SELECT ON projection.batch_statements TO PUBLIC;
