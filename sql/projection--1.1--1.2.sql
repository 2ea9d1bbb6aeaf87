/* sql/projection--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.2'" to load this file. \quit

/*
 * Version 1.2: correctness and privileges (see the README's "Upgrading"
 * section for what changes for existing projections).
 */

/* ------------------------------------------------------------------------
 * Privileges and dependencies (issue 10)
 * ------------------------------------------------------------------------
 */

/*
 * A projection's owner is recorded in pg_shdepend, as the owner of any
 * object is, so that DROP ROLE of the owner is refused in every database;
 * DROP OWNED / REASSIGN OWNED act on it in this one (src/depend.c).  The
 * entries follow the registry rows, whoever writes them: create, REASSIGN
 * OWNED, and pg_restore, which loads the rows after CREATE EXTENSION.
 */
CREATE FUNCTION projection._registry_owner() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_registry_owner_trigger';
COMMENT ON FUNCTION projection._registry_owner() IS 'records the owner of each projection in pg_shdepend';
REVOKE ALL ON FUNCTION projection._registry_owner() FROM PUBLIC;
CREATE TRIGGER _registry_owner AFTER INSERT OR UPDATE OF owner OR DELETE ON projection.projections
	FOR EACH ROW EXECUTE FUNCTION projection._registry_owner();
CREATE TRIGGER _registry_owner_truncate AFTER TRUNCATE ON projection.projections
	FOR EACH STATEMENT EXECUTE FUNCTION projection._registry_owner();

-- the projections created before this version get their entries now
UPDATE projection.projections SET owner = owner;

/*
 * Creating a projection now needs SELECT on projection.events, and an
 * inline one TRIGGER too.  Projections created before whose owners lack
 * them keep running; they are named here with the GRANT that makes them
 * conform.  A projection whose owner was dropped (possible before this
 * version) no longer runs at all.
 */
DO $$
DECLARE
	r record;
	missing text;
BEGIN
	FOR r IN
		SELECT p.name, p.mode, p.owner::pg_catalog.oid AS owner_oid, a.rolname,
			   pg_catalog.has_table_privilege(p.owner::pg_catalog.oid, 'projection.events'::pg_catalog.regclass, 'SELECT') AS can_select,
			   pg_catalog.has_table_privilege(p.owner::pg_catalog.oid, 'projection.events'::pg_catalog.regclass, 'TRIGGER') AS can_trigger
		  FROM projection.projections p
		  LEFT JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) p.owner::pg_catalog.oid
		 ORDER BY p.name COLLATE "C"
	LOOP
		IF r.rolname IS NULL THEN
			RAISE WARNING 'the owner of projection "%" does not exist', r.name
				USING DETAIL = pg_catalog.format('Role %s was dropped while it owned the projection, which no longer runs.', r.owner_oid),
					  HINT = pg_catalog.format('Drop it with SELECT projection.drop(%L) and create it again.', r.name);
			CONTINUE;
		END IF;
		missing := NULL;
		IF NOT r.can_select THEN
			missing := 'SELECT';
		END IF;
		IF r.mode OPERATOR(pg_catalog.=) 'inline' AND NOT r.can_trigger THEN
			missing := COALESCE(missing OPERATOR(pg_catalog.||) ', ', '') OPERATOR(pg_catalog.||) 'TRIGGER';
		END IF;
		IF missing IS NOT NULL THEN
			RAISE WARNING 'owner "%" of projection "%" lacks % on projection.events', r.rolname, r.name, missing
				USING DETAIL = 'Creating this projection now requires it. The projection keeps running.',
					  HINT = pg_catalog.format('Run GRANT %s ON projection.events TO %I;', missing, r.rolname);
		END IF;
	END LOOP;
END
$$;

/* ------------------------------------------------------------------------
 * Management (issue "Never wrong" items 14-16, review D9)
 * ------------------------------------------------------------------------
 */

/*
 * create() refuses start_from => 'beginning' over tables that already hold
 * rows (the existing events would be applied on top of them, counting them
 * twice), unless if_not_empty says what to do: 'keep' the rows (handlers
 * that are idempotent, or rows not derived from events) or 'empty' them as
 * rebuild() does.  A new argument with a default: drop and recreate.
 */
DROP FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text);
CREATE FUNCTION projection.create(name text, handler regproc, event_types text[] DEFAULT NULL,
								  mode text DEFAULT 'async', tables regclass[] DEFAULT '{}',
								  start_from text DEFAULT 'beginning', on_error text DEFAULT 'stop',
								  if_not_empty text DEFAULT 'error')
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_create';
COMMENT ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text) IS 'registers a projection';
REVOKE ALL ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text, text) TO PUBLIC;

/*
 * The status view reads its rows from one C function: the lag of each
 * projection is counted within a bounded window after its checkpoint (an
 * estimate past it, lag_exact false), the function's query runs with jit
 * off, and its fixed, small estimate keeps the view's own plan far below
 * jit_above_cost, however many projections and events there are.  The
 * function masks last_error (which can quote event data) for callers who
 * are neither members of the projection's owner role nor allowed to SELECT
 * projection.events; it is executable by PUBLIC because the view calls it
 * as its reader.
 */
CREATE FUNCTION projection._status(OUT name text, OUT mode text, OUT state text,
								   OUT "position" bigint, OUT lag_events bigint,
								   OUT lag_seconds double precision, OUT last_error text,
								   OUT last_error_sqlstate text, OUT last_error_position bigint,
								   OUT handler regprocedure, OUT event_types text[],
								   OUT tables regclass[], OUT on_error text, OUT owner regrole,
								   OUT rebuild_done bigint, OUT rebuild_total bigint,
								   OUT updated_at timestamptz, OUT lag_exact boolean)
	RETURNS SETOF record
	LANGUAGE c STABLE PARALLEL RESTRICTED STRICT ROWS 100 COST 100
	AS 'MODULE_PATHNAME', 'projection_status';
COMMENT ON FUNCTION projection._status() IS 'rows of projection.status (last_error masked for callers who may not read events)';
REVOKE ALL ON FUNCTION projection._status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection._status() TO PUBLIC;

CREATE OR REPLACE VIEW projection.status WITH (security_barrier) AS
SELECT s.name, s.mode, s.state, s."position", s.lag_events, s.lag_seconds, s.last_error,
	   s.last_error_sqlstate, s.last_error_position, s.handler, s.event_types, s.tables,
	   s.on_error, s.owner, s.rebuild_done, s.rebuild_total, s.updated_at, s.lag_exact
  FROM projection._status() s;
COMMENT ON VIEW projection.status IS 'one row per projection: state, checkpoint, lag and last error (last_error only for the owner and readers of events)';
