/* sql/projection--1.4--1.5.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.5'" to load this file. \quit

/*
 * Version 1.5.  Version 1.4 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

/*
 * Section snap3: aggregate() from a snapshot.  fold_definition records,
 * when a snapshot projection's states start (create_snapshot, rebuild), a
 * digest of its fold's definition (projection_snapshot_fold_definition in
 * src/snapfold.c); aggregate() starts from a stored state only while the
 * fold still has that definition.  NULL for the snapshot projections of
 * 1.4 (how their states were folded is not known) until their next
 * rebuild.
 */
ALTER TABLE projection.snapshot_defs ADD COLUMN fold_definition text;
COMMENT ON COLUMN projection.snapshot_defs.fold_definition IS 'digest of the fold''s definition when the states started (create_snapshot or the last rebuild); aggregate() uses the states only while it is unchanged';

/*
 * Section "feeds3" (issue 13): poll carries the previous poll's ack (ack =>
 * token), so a consumer's loop has one round trip and no WAL flush between
 * an append's commit and the next poll's return (src/feedpoll.c).  The 1.4
 * function is replaced.
 */
ALTER EXTENSION projection DROP FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint);
DROP FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint);
CREATE FUNCTION projection.poll(feed text, max_events integer DEFAULT 100,
								wait interval DEFAULT '0 s', lease interval DEFAULT '30 s',
								partition integer DEFAULT NULL, max_bytes integer DEFAULT NULL,
								after bigint DEFAULT NULL, ack text DEFAULT NULL)
	RETURNS TABLE (token text, partition integer, global_position bigint, stream_id text,
				   stream_version bigint, event_type text, data jsonb, metadata jsonb,
				   recorded_at timestamptz)
	LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
	AS 'MODULE_PATHNAME', 'projection_poll';
COMMENT ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint, text) IS 'leases a feed partition and returns its next events up to the safe horizon, after its checkpoint or the consumer''s own, first acking the previous poll''s lease if given (owner only)';
REVOKE ALL ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.poll(text, integer, interval, interval, integer, integer, bigint, text) TO PUBLIC;
