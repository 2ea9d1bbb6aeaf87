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
