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
