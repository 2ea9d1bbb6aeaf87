/* sql/projection--1.5--1.6.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.6'" to load this file. \quit

/*
 * Version 1.6.  Version 1.5 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

/*
 * Section "park4" (issue 13): parking a whole stream.  A feed created with
 * park => 'stream' parks, at max_attempts, the failing event and its
 * stream: the stream's later events are held back (poll's read leaves the
 * partition's parked streams out) while the partition goes on with the
 * other streams; release_stream() has the next polls of the partition
 * deliver the parked event and the held ones, in position order, before
 * going on (src/feedpark.c).  The held events are not copied: a parked
 * stream is one row of projection.feed_holds, and its events are read
 * again from projection.events.
 * create_feed gets the park argument at its end (the 1.3 function is
 * replaced), feed_status a parked_streams column.
 */
ALTER TABLE projection.feeds ADD COLUMN park text NOT NULL DEFAULT 'event'
	CHECK (park OPERATOR(pg_catalog.=) ANY (ARRAY['event', 'stream']));

/*
 * projection.feed_holds: one row per parked stream of a feed partition:
 * its events from parked_from on are held back.  After release_stream, released_at is set
 * and replayed_to says up to where the held events have been acked;
 * lease_token is the partition's lease whose events are this stream's held
 * ones (a poll of the partition hands those out first).  The row goes when
 * the held events up to the partition's checkpoint are all acked.
 */
CREATE TABLE projection.feed_holds (
	feed_id			integer NOT NULL REFERENCES projection.feeds (id) ON DELETE CASCADE,
	partition		integer NOT NULL,
	stream_id		text NOT NULL,
	parked_from		bigint NOT NULL,
	attempts		integer NOT NULL,
	error			text,
	parked_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	released_at		timestamptz,
	replayed_to		bigint,
	lease_token		text,
	PRIMARY KEY (feed_id, partition, stream_id),
	FOREIGN KEY (feed_id, partition) REFERENCES projection.feed_partitions (feed_id, partition) ON DELETE CASCADE
);
COMMENT ON TABLE projection.feed_holds IS 'streams parked by feeds with park => ''stream'', their later events held back (written only by the extension''s functions)';
SELECT pg_catalog.pg_extension_config_dump('projection.feed_holds', '');
REVOKE ALL ON projection.feed_holds FROM PUBLIC;

ALTER EXTENSION projection DROP FUNCTION projection.create_feed(text, text[], text, integer, integer);
DROP FUNCTION projection.create_feed(text, text[], text, integer, integer);
CREATE FUNCTION projection.create_feed(name text, event_types text[] DEFAULT NULL,
									   start_from text DEFAULT 'beginning',
									   partitions integer DEFAULT 1,
									   max_attempts integer DEFAULT NULL,
									   park text DEFAULT 'event') RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_create_feed';
COMMENT ON FUNCTION projection.create_feed(text, text[], text, integer, integer, text) IS 'creates a feed owned by the caller (needs SELECT on projection.events); park: what max_attempts parks, the event or its stream';
REVOKE ALL ON FUNCTION projection.create_feed(text, text[], text, integer, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.create_feed(text, text[], text, integer, integer, text) TO PUBLIC;

CREATE FUNCTION projection.release_stream(feed text, stream_id text, skip boolean DEFAULT false)
	RETURNS void
	LANGUAGE c VOLATILE PARALLEL UNSAFE
	AS 'MODULE_PATHNAME', 'projection_release_stream';
COMMENT ON FUNCTION projection.release_stream(text, text, boolean) IS 'has the next polls of a parked stream''s partition deliver its parked event (or, with skip, only the events after it) and its held events before going on (owner only)';
REVOKE ALL ON FUNCTION projection.release_stream(text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projection.release_stream(text, text, boolean) TO PUBLIC;

CREATE OR REPLACE VIEW projection.feed_status AS
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
		 WHERE k.feed_id OPERATOR(pg_catalog.=) f.id) AS parked,
	   (SELECT pg_catalog.count(*) FROM projection.feed_holds s
		 WHERE s.feed_id OPERATOR(pg_catalog.=) f.id
		   AND s.partition OPERATOR(pg_catalog.=) p.partition) AS parked_streams
  FROM projection.feeds f
  JOIN projection.feed_partitions p ON p.feed_id OPERATOR(pg_catalog.=) f.id
  CROSS JOIN LATERAL (
	SELECT pg_catalog.count(*) AS lag_events, pg_catalog.min(e.recorded_at) AS oldest
	  FROM projection.events e
	 WHERE e.global_position OPERATOR(pg_catalog.>) p."position"
	   AND (f.event_types IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY (f.event_types))
	   AND (f.partitions OPERATOR(pg_catalog.=) 1
			OR projection.feed_partition(e.stream_id, f.partitions) OPERATOR(pg_catalog.=) p.partition)) l;

/* the parked streams, for the feed's owner and readers of the events */
CREATE VIEW projection.feed_parked_streams WITH (security_barrier) AS
SELECT f.name AS feed, s.partition, s.stream_id, s.parked_from, s.attempts, s.error, s.parked_at,
	   s.released_at, s.replayed_to
  FROM projection.feed_holds s
  JOIN projection.feeds f ON f.id OPERATOR(pg_catalog.=) s.feed_id
 WHERE pg_catalog.pg_has_role(f.owner, 'USAGE')
	OR pg_catalog.has_table_privilege('projection.events', 'SELECT');
COMMENT ON VIEW projection.feed_parked_streams IS 'streams parked by feeds with park => ''stream'' (rows of the caller''s feeds, or all for readers of events)';
GRANT SELECT ON projection.feed_parked_streams TO PUBLIC;
