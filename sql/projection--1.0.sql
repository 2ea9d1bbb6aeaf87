/* sql/projection--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION projection" to load this file. \quit

CREATE SCHEMA projection;
COMMENT ON SCHEMA projection IS 'event store and projections (read models)';

/*
 * The event store.
 *
 * Positions come from projection.events_global_position_seq, drawn by the
 * C trigger _position after the transaction has taken its xid (see
 * src/trigger.c).  The sequence must keep CACHE 1: the async worker's fence
 * reads its last_value as "the highest position anyone may hold".
 */
CREATE SEQUENCE projection.events_global_position_seq AS bigint CACHE 1 NO CYCLE;

CREATE TABLE projection.events (
	global_position bigint NOT NULL,
	stream_id		text NOT NULL,
	stream_version	bigint NOT NULL,
	event_type		text NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb NOT NULL DEFAULT '{}',
	recorded_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	CONSTRAINT events_pkey PRIMARY KEY (global_position),
	CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
	CONSTRAINT events_stream_version_check CHECK (stream_version OPERATOR(pg_catalog.>) 0),
	CONSTRAINT events_event_type_check CHECK (event_type OPERATOR(pg_catalog.<>) '')
);
ALTER SEQUENCE projection.events_global_position_seq OWNED BY projection.events.global_position;
COMMENT ON TABLE projection.events IS 'append-only event store, one row per event';

/*
 * The registry: one row per projection.  "position" is the checkpoint, the
 * last event the projection has applied; for async projections it moves in
 * the same transaction as the handler's writes.
 */
CREATE SEQUENCE projection.projections_id_seq AS integer;
CREATE TABLE projection.projections (
	id				integer PRIMARY KEY DEFAULT pg_catalog.nextval('projection.projections_id_seq'),
	name			text NOT NULL UNIQUE,
	handler			regprocedure,
	event_types		text[],
	mode			text NOT NULL CHECK (mode IN ('inline', 'async')),
	tables			regclass[] NOT NULL DEFAULT '{}',
	on_error		text NOT NULL DEFAULT 'stop' CHECK (on_error IN ('stop', 'skip')),
	owner			regrole NOT NULL,
	search_path		text NOT NULL,
	state			text NOT NULL DEFAULT 'running'
		CHECK (state IN ('running', 'paused', 'failed', 'rebuilding', 'catching_up')),
	position		bigint NOT NULL DEFAULT 0,
	last_error		text,
	last_error_sqlstate text,
	last_error_position bigint,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE projection.projections IS 'registry of projections and their checkpoints (written only by the extension''s functions)';

/* statement handlers added with projection.on(), run in "seq" order */
ALTER SEQUENCE projection.projections_id_seq OWNED BY projection.projections.id;

CREATE TABLE projection.handlers (
	projection_id	integer NOT NULL REFERENCES projection.projections (id) ON DELETE CASCADE,
	seq				integer NOT NULL,
	event_type		text NOT NULL,
	statement		text NOT NULL,
	PRIMARY KEY (projection_id, seq)
);
COMMENT ON TABLE projection.handlers IS 'statement handlers added with projection.on()';

CREATE SEQUENCE projection.dead_letters_id_seq AS bigint;
CREATE TABLE projection.dead_letters (
	id				bigint PRIMARY KEY DEFAULT pg_catalog.nextval('projection.dead_letters_id_seq'),
	name			text NOT NULL,
	global_position bigint NOT NULL,
	event_type		text NOT NULL,
	stream_id		text NOT NULL,
	sqlstate		text NOT NULL,
	error			text NOT NULL,
	detail			text,
	context			text,
	failed_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER SEQUENCE projection.dead_letters_id_seq OWNED BY projection.dead_letters.id;
CREATE INDEX dead_letters_name_idx ON projection.dead_letters (name, global_position);
COMMENT ON TABLE projection.dead_letters IS 'events skipped by projections with on_error => ''skip'', with their errors';

SELECT pg_catalog.pg_extension_config_dump('projection.events', '');
SELECT pg_catalog.pg_extension_config_dump('projection.events_global_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('projection.projections', '');
SELECT pg_catalog.pg_extension_config_dump('projection.projections_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('projection.handlers', '');
SELECT pg_catalog.pg_extension_config_dump('projection.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('projection.dead_letters_id_seq', '');

/* ------------------------------------------------------------------------
 * Triggers on the event store
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION projection._position() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_position_trigger';
COMMENT ON FUNCTION projection._position() IS 'assigns global_position (xid first, then the sequence) and stream_version';

CREATE FUNCTION projection._inline() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_inline_trigger';
COMMENT ON FUNCTION projection._inline() IS 'runs inline projections for the inserted events, in position order';

CREATE FUNCTION projection._append_only() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_append_only_trigger';
COMMENT ON FUNCTION projection._append_only() IS 'refuses UPDATE, DELETE and TRUNCATE of events';

CREATE FUNCTION projection._registry_changed() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_registry_changed_trigger';
COMMENT ON FUNCTION projection._registry_changed() IS 'invalidates every backend''s cache of the projection registry';

-- BEFORE ROW triggers fire in name order: keep this one first
CREATE TRIGGER _0_position BEFORE INSERT ON projection.events
	FOR EACH ROW EXECUTE FUNCTION projection._position();
CREATE TRIGGER _inline AFTER INSERT ON projection.events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION projection._inline();
CREATE TRIGGER _append_only BEFORE UPDATE OR DELETE ON projection.events
	FOR EACH STATEMENT EXECUTE FUNCTION projection._append_only();
CREATE TRIGGER _append_only_truncate BEFORE TRUNCATE ON projection.events
	FOR EACH STATEMENT EXECUTE FUNCTION projection._append_only();

CREATE TRIGGER _registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projection.projections
	FOR EACH STATEMENT EXECUTE FUNCTION projection._registry_changed();
CREATE TRIGGER _registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projection.handlers
	FOR EACH STATEMENT EXECUTE FUNCTION projection._registry_changed();

/* ------------------------------------------------------------------------
 * The SQL interface (see README.md)
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION projection.append(stream_id text, event_type text, data jsonb,
								  metadata jsonb DEFAULT '{}', expected_version bigint DEFAULT NULL)
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_append';
COMMENT ON FUNCTION projection.append(text, text, jsonb, jsonb, bigint) IS 'appends one event at the stream''s next version and returns its global_position';

CREATE FUNCTION projection.create(name text, handler regproc, event_types text[] DEFAULT NULL,
								  mode text DEFAULT 'async', tables regclass[] DEFAULT '{}',
								  start_from text DEFAULT 'beginning', on_error text DEFAULT 'stop')
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_create';
COMMENT ON FUNCTION projection.create(text, regproc, text[], text, regclass[], text, text) IS 'registers a projection';

CREATE FUNCTION projection.on(name text, event_type text, statement text)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_on';
COMMENT ON FUNCTION projection.on(text, text, text) IS 'adds a SQL statement handler ($1 is the event row) for one event type';

CREATE FUNCTION projection.drop(name text)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_drop';
COMMENT ON FUNCTION projection.drop(text) IS 'unregisters a projection (its tables are kept)';

CREATE FUNCTION projection.pause(name text)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_pause';
COMMENT ON FUNCTION projection.pause(text) IS 'stops applying events to a projection until resume()';

CREATE FUNCTION projection.resume(name text)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_resume';
COMMENT ON FUNCTION projection.resume(text) IS 'resumes a paused projection, or retries a failed one from its failing event';

CREATE FUNCTION projection.rebuild(name text)
	RETURNS bigint
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_rebuild';
COMMENT ON FUNCTION projection.rebuild(text) IS 'rebuilds a projection''s tables from every event; readers keep the old read model until the new one replaces it';

CREATE FUNCTION projection.wait(name text, up_to bigint, timeout interval DEFAULT '5 s')
	RETURNS boolean
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_wait';
COMMENT ON FUNCTION projection.wait(text, bigint, interval) IS 'waits until the projection has applied every event up to up_to; false on timeout';

CREATE FUNCTION projection.aggregate(stream_id text, fold regproc, initial jsonb DEFAULT '{}')
	RETURNS jsonb
	LANGUAGE c VOLATILE PARALLEL UNSAFE CALLED ON NULL INPUT
	AS 'MODULE_PATHNAME', 'projection_aggregate';
COMMENT ON FUNCTION projection.aggregate(text, regproc, jsonb) IS 'folds one stream''s events, in order, through fold(state jsonb, e projection.events)';

/* internal: wakes the launcher at commit so this database gets its worker */
CREATE FUNCTION projection._notify_launcher()
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE STRICT
	AS 'MODULE_PATHNAME', 'projection_notify_launcher';
COMMENT ON FUNCTION projection._notify_launcher() IS 'asks the launcher to start this database''s worker when the transaction commits';

/* internal: per-projection progress published in shared memory by the worker */
CREATE FUNCTION projection._worker_info(OUT projection_id integer, OUT applied bigint,
										OUT rebuild_done bigint, OUT rebuild_total bigint)
	RETURNS SETOF record
	LANGUAGE c VOLATILE PARALLEL SAFE STRICT
	AS 'MODULE_PATHNAME', 'projection_worker_info';
COMMENT ON FUNCTION projection._worker_info() IS 'progress of this database''s projections from shared memory';

/* ------------------------------------------------------------------------
 * Watching
 * ------------------------------------------------------------------------
 */
CREATE VIEW projection.status WITH (security_barrier) AS
SELECT p.name,
	   p.mode,
	   CASE WHEN w.rebuild_total OPERATOR(pg_catalog.>) 0 THEN 'rebuilding' ELSE p.state END AS state,
	   CASE WHEN p.mode = 'inline' AND p.state = 'running'
			THEN COALESCE((SELECT pg_catalog.max(e.global_position) FROM projection.events e), 0)
			ELSE p.position END AS position,
	   CASE WHEN p.mode = 'inline' AND p.state = 'running' THEN 0::bigint
			ELSE (SELECT pg_catalog.count(*) FROM projection.events e
				   WHERE e.global_position OPERATOR(pg_catalog.>) p.position
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
				  WHERE e.global_position OPERATOR(pg_catalog.>) p.position
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
	   p.updated_at
  FROM projection.projections p
  LEFT JOIN projection._worker_info() w ON w.projection_id OPERATOR(pg_catalog.=) p.id;
COMMENT ON VIEW projection.status IS 'one row per projection: state, checkpoint, lag and last error';

/* ------------------------------------------------------------------------
 * Privileges: the registry and events are written only through the
 * functions above, which check ownership themselves.
 * ------------------------------------------------------------------------
 */
REVOKE ALL ON ALL TABLES IN SCHEMA projection FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA projection FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA projection FROM PUBLIC;
GRANT USAGE ON SCHEMA projection TO PUBLIC;
GRANT SELECT ON projection.status TO PUBLIC;
GRANT EXECUTE ON FUNCTION
	projection.append(text, text, jsonb, jsonb, bigint),
	projection.create(text, regproc, text[], text, regclass[], text, text),
	projection.on(text, text, text),
	projection.drop(text),
	projection.pause(text),
	projection.resume(text),
	projection.rebuild(text),
	projection.wait(text, bigint, interval),
	projection.aggregate(text, regproc, jsonb),
	projection._worker_info()	-- read by the status view, as the caller
	TO PUBLIC;

SELECT projection._notify_launcher();
