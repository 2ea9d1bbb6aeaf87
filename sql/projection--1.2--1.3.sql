/* sql/projection--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.3'" to load this file. \quit

/*
 * Version 1.3: operability, batch handlers and snapshots, feeds.  Each
 * section below says what it adds; the README's "Upgrading" section says
 * what changes for existing projections.
 */

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
