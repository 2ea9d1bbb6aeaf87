/* sql/projection--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.4'" to load this file. \quit

/*
 * Version 1.4.  Version 1.3 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

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
