/* sql/projection--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.1'" to load this file. \quit

/*
 * Async checkpoints move from projection.projections.position to an
 * append-only log.  The worker used to UPDATE the registry row after every
 * batch; while any long transaction held back the xmin horizon those row
 * versions could not be pruned, so every round walked a longer chain of
 * them (and every update invalidated every backend's registry cache).  Now
 * a batch INSERTs (projection, position) in the same transaction as the
 * handlers' writes, and the checkpoint is the newest entry, found from the
 * top of the primary key whatever lies below it; the same statement
 * deletes the previous entry.  projection.projections.position stays the base:
 * what create, pause, failures and rebuild set (they clear the log).  The
 * effective checkpoint is the greater of the two.
 */
CREATE TABLE projection.checkpoints (
	projection_id	integer NOT NULL,
	position		bigint NOT NULL,
	saved_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (projection_id, position)
);
COMMENT ON TABLE projection.checkpoints IS 'checkpoints of async projections, newest last (written only by the worker and the extension''s functions)';
SELECT pg_catalog.pg_extension_config_dump('projection.checkpoints', '');
REVOKE ALL ON projection.checkpoints FROM PUBLIC;

/*
 * A registry row inserted other than by projection.create() is being
 * restored: the trigger marks it with the restoring session, and the worker
 * leaves the projection alone until that session has ended (pg_restore
 * without --single-transaction loads the read-model tables after the
 * registry and the events, in other transactions).
 */
ALTER TABLE projection.projections
	ADD COLUMN restored_pid integer,
	ADD COLUMN restored_at timestamptz;
CREATE FUNCTION projection._restored() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_restored_trigger';
COMMENT ON FUNCTION projection._restored() IS 'marks a registry row restored from a dump with the restoring session';
REVOKE ALL ON FUNCTION projection._restored() FROM PUBLIC;
CREATE TRIGGER _restored BEFORE INSERT ON projection.projections
	FOR EACH ROW EXECUTE FUNCTION projection._restored();

CREATE OR REPLACE VIEW projection.status WITH (security_barrier) AS
SELECT p.name,
	   p.mode,
	   CASE WHEN w.rebuild_total OPERATOR(pg_catalog.>) 0 THEN 'rebuilding' ELSE p.state END AS state,
	   CASE WHEN p.mode = 'inline' AND p.state = 'running'
			THEN COALESCE((SELECT pg_catalog.max(e.global_position) FROM projection.events e), 0)
			ELSE GREATEST(p.position, k.position) END AS position,
	   CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0::bigint
			ELSE (SELECT pg_catalog.count(*) FROM projection.events e
				   WHERE e.global_position OPERATOR(pg_catalog.>) GREATEST(p.position, k.position)
					 AND (p.event_types IS NULL
						  OR e.event_type OPERATOR(pg_catalog.=) ANY (p.event_types)
						  OR EXISTS (SELECT 1 FROM projection.handlers h
									  WHERE h.projection_id = p.id
										AND h.event_type OPERATOR(pg_catalog.=) e.event_type)))
	   END AS lag_events,
	   CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0::double precision
			ELSE COALESCE(
				(SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) e.recorded_at)
				   FROM projection.events e
				  WHERE e.global_position OPERATOR(pg_catalog.>) GREATEST(p.position, k.position)
					AND (p.event_types IS NULL
						 OR e.event_type OPERATOR(pg_catalog.=) ANY (p.event_types)
						 OR EXISTS (SELECT 1 FROM projection.handlers h
									 WHERE h.projection_id = p.id
									   AND h.event_type OPERATOR(pg_catalog.=) e.event_type))
				  ORDER BY e.global_position LIMIT 1), 0)
	   END AS lag_seconds,
	   p.last_error,
	   p.last_error_sqlstate,
	   p.last_error_position,
	   p.handler,
	   p.event_types,
	   p.tables,
	   p.on_error,
	   p.owner,
	   w.rebuild_done,
	   w.rebuild_total,
	   GREATEST(p.updated_at, k.saved_at) AS updated_at
  FROM projection.projections p
  LEFT JOIN LATERAL (SELECT c.position, c.saved_at FROM projection.checkpoints c
					  WHERE c.projection_id OPERATOR(pg_catalog.=) p.id
					  ORDER BY c.position DESC LIMIT 1) k ON true
  LEFT JOIN projection._worker_info() w ON w.projection_id OPERATOR(pg_catalog.=) p.id;
