--
-- feed_poll_ack (1.5): a poll that carries the previous poll's ack (poll's
-- ack argument), and the poll of one partition through the feed's partition
-- index (an expression index on projection.feed_partition(stream_id, N))
--
\set regress_db :DBNAME
CREATE DATABASE regress_feed_poll_ack;
\c regress_feed_poll_ack
CREATE EXTENSION projection;
\set VERBOSITY default
CREATE ROLE regress_fpa_owner;
GRANT SELECT ON projection.events TO regress_fpa_owner;
SELECT count(projection.append('s-' || i % 4, 'E', jsonb_build_object('i', i))) AS appended
  FROM generate_series(1, 10) i;
SET ROLE regress_fpa_owner;
SELECT projection.create_feed('regress_fpa');

--
-- the ack carried by the next poll
--
SELECT token AS t1 FROM projection.poll('regress_fpa', 3) LIMIT 1 \gset
-- the poll acks the first lease (up to its last event, 3), then hands out 4 to 6
CREATE TEMP TABLE second AS SELECT * FROM projection.poll('regress_fpa', 3, ack => :'t1');
SELECT global_position FROM second ORDER BY 1;
SELECT token AS t2 FROM second LIMIT 1 \gset
SELECT position, leased, lease_last FROM projection.feed_status WHERE feed = 'regress_fpa';
-- the acked token is spent: PJF01, and nothing changes (the new lease stays)
SELECT count(*) FROM projection.poll('regress_fpa', 3, ack => :'t1');
\echo :LAST_ERROR_SQLSTATE
SELECT position, leased, lease_last FROM projection.feed_status WHERE feed = 'regress_fpa';
-- ack the second lease through the next poll: 7 to 9
CREATE TEMP TABLE third AS SELECT * FROM projection.poll('regress_fpa', 3, ack => :'t2');
SELECT global_position, token <> :'t2' AS new_token FROM third ORDER BY 1;
SELECT position, leased, lease_last FROM projection.feed_status WHERE feed = 'regress_fpa';
-- a poll that carries an ack does not wait for events: with nothing left it
-- returns at once, no rows, and the ack is done
SELECT token AS t3 FROM third LIMIT 1 \gset
SELECT token AS t3b FROM projection.poll('regress_fpa', 10, ack => :'t3') LIMIT 1 \gset
SELECT count(*) FROM projection.poll('regress_fpa', 10, wait => '1 h', ack => :'t3b');
SELECT position, leased FROM projection.feed_status WHERE feed = 'regress_fpa';
-- in autocommit it commits without waiting for the WAL flush (an ack lost
-- in a server crash only means redelivery); in a transaction block the
-- session's setting holds
SELECT projection.seek('regress_fpa', 0);
SELECT token AS t4 FROM projection.poll('regress_fpa', 1) LIMIT 1 \gset
SELECT token AS t5 FROM projection.poll('regress_fpa', 1, ack => :'t4') LIMIT 1 \gset
SHOW synchronous_commit;
BEGIN;
SELECT global_position FROM projection.poll('regress_fpa', 1, ack => :'t5');
SHOW synchronous_commit;
ROLLBACK;
-- the rolled-back ack changed nothing: t5's lease (event 2) is live
SELECT position, leased, lease_last FROM projection.feed_status WHERE feed = 'regress_fpa';
SELECT projection.ack('regress_fpa', :'t5');
-- a NULL ack is a poll without one
SELECT count(*) FROM projection.poll('regress_fpa', 1, ack => NULL);
SELECT projection.seek('regress_fpa', 0);
-- a token of another feed is no lease of this one
SELECT projection.create_feed('regress_fpa2');
SELECT token AS t6 FROM projection.poll('regress_fpa2', 1) LIMIT 1 \gset
SELECT count(*) FROM projection.poll('regress_fpa', 1, ack => :'t6');
\echo :LAST_ERROR_SQLSTATE
SELECT feed, position, leased FROM projection.feed_status ORDER BY feed COLLATE "C";

--
-- the partition index
--
-- a feed of several partitions without an index that serves them: NOTICE
SELECT projection.create_feed('regress_fpa4', partitions => 4);
RESET ROLE;
SELECT count(projection.append('p-' || i % 16, 'E', jsonb_build_object('i', i))) AS appended
  FROM generate_series(1, 200) i;
SET ROLE regress_fpa_owner;
CREATE TEMP TABLE without_index AS
SELECT partition, global_position, stream_id
  FROM projection.poll('regress_fpa4', 1000, partition => 2);
SELECT projection.seek('regress_fpa4', 0);
RESET ROLE;
CREATE INDEX regress_fpa4_partition ON projection.events
  (projection.feed_partition(stream_id, 4), global_position);
SET ROLE regress_fpa_owner;
-- with the index: no NOTICE for a feed of 4 partitions; one for 3
SELECT projection.create_feed('regress_fpa4b', partitions => 4);
SELECT projection.create_feed('regress_fpa3', partitions => 3);
-- the poll of partition 2 reads through the index and returns the same events
SELECT pg_stat_force_next_flush();
SELECT idx_scan AS scans_before FROM pg_stat_user_indexes
 WHERE indexrelname = 'regress_fpa4_partition' \gset
CREATE TEMP TABLE with_index AS
SELECT partition, global_position, stream_id
  FROM projection.poll('regress_fpa4', 1000, partition => 2);
SELECT pg_stat_force_next_flush();
SELECT idx_scan > :scans_before AS used_index FROM pg_stat_user_indexes
 WHERE indexrelname = 'regress_fpa4_partition';
SELECT count(*) > 0 AS some, count(*) FILTER (WHERE projection.feed_partition(stream_id, 4) <> 2) AS others
  FROM with_index;
SELECT (SELECT array_agg(global_position ORDER BY global_position) FROM with_index)
     = (SELECT array_agg(global_position ORDER BY global_position) FROM without_index) AS same_events;

-- clean up
RESET ROLE;
\c :regress_db
DROP DATABASE regress_feed_poll_ack;
DROP ROLE regress_fpa_owner;
