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
-- a backlog, with statistics: the poll of one partition of 4 reads only
-- that partition's events, through the index (1.6: a form only that index
-- serves; with 1.5's equality, the planner took the position index and
-- read the other three partitions' events too)
RESET ROLE;
SELECT max(global_position) AS backlog_base FROM projection.events \gset
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'b-' || i % 100, 'E', jsonb_build_object('i', i) FROM generate_series(1, 4000) i;
ANALYZE projection.events;
SET ROLE regress_fpa_owner;
SELECT projection.create_feed('regress_fpa4c', start_from => :'backlog_base', partitions => 4);
SELECT pg_stat_force_next_flush();
SELECT idx_tup_read AS read_before FROM pg_stat_user_indexes
 WHERE indexrelname = 'regress_fpa4_partition' \gset
CREATE TEMP TABLE backlog AS
SELECT token, partition, global_position, stream_id, stream_version
  FROM projection.poll('regress_fpa4c', 500, partition => 1);
SELECT pg_stat_force_next_flush();
SELECT idx_tup_read - :read_before AS index_entries_read FROM pg_stat_user_indexes
 WHERE indexrelname = 'regress_fpa4_partition';
SELECT count(*) AS delivered, count(*) FILTER (WHERE projection.feed_partition(stream_id, 4) <> 1) AS others,
       min(global_position) - :backlog_base > 0 AS after_base
  FROM backlog;
-- the same events, in the same order, as the partition's events in the store
SELECT (SELECT array_agg(global_position ORDER BY global_position) FROM backlog)
     = (SELECT array_agg(global_position) FROM (SELECT global_position FROM projection.events
         WHERE global_position > :backlog_base AND projection.feed_partition(stream_id, 4) = 1
         ORDER BY global_position LIMIT 500) s) AS same_events;
-- the index dropped: the next poll reads without it, and still only partition 1's events
RESET ROLE;
DROP INDEX projection.regress_fpa4_partition;
SET ROLE regress_fpa_owner;
SELECT token AS tb FROM backlog LIMIT 1 \gset
CREATE TEMP TABLE backlog2 AS
SELECT partition, global_position, stream_id FROM projection.poll('regress_fpa4c', 500, partition => 1, ack => :'tb');
SELECT count(*) AS delivered, count(*) FILTER (WHERE projection.feed_partition(stream_id, 4) <> 1) AS others,
       min(global_position) > (SELECT max(global_position) FROM backlog) AS after_first
  FROM backlog2;

--
-- a poll that carries an ack writes its partition's row once (1.7): the
-- ack's effect and the new lease are one UPDATE.  Two UPDATEs of the row in
-- one transaction made the second one check the foreign key to the feed
-- again: a KEY SHARE lock on the feed's row (with several consumers, a
-- multixact per poll; TAP 108)
--
RESET ROLE;
SELECT projection.create_feed('regress_fpa_once', partitions => 2);
SELECT token AS o1 FROM projection.poll('regress_fpa_once', 2, partition => 0) LIMIT 1 \gset
BEGIN;
-- (the counter includes the updates of earlier transactions not yet reported)
SELECT pg_stat_get_xact_tuples_updated('projection.feed_partitions'::regclass) AS updates_before \gset
CREATE TEMP TABLE once AS SELECT * FROM projection.poll('regress_fpa_once', 2, partition => 0, ack => :'o1');
SELECT pg_stat_get_xact_tuples_updated('projection.feed_partitions'::regclass) - :updates_before
         AS partition_updates,
       (SELECT xmax::text::bigint FROM projection.feeds WHERE name = 'regress_fpa_once')
         >= pg_current_xact_id()::text::bigint % 4294967296 AS feed_row_locked;
COMMIT;
SELECT array_agg(global_position ORDER BY global_position) AS second_lease FROM once;
SELECT partition, position, leased, lease_last, attempts, failed_position
  FROM projection.feed_status WHERE feed = 'regress_fpa_once' ORDER BY partition;
-- the lease's epoch moved by two (the ack, the lease), as before; its token carries it
SELECT token AS o2 FROM once LIMIT 1 \gset
SELECT p.partition, p.lease_epoch, split_part(:'o2', '.', 3)::bigint = p.lease_epoch AS token_epoch
  FROM projection.feed_partitions p JOIN projection.feeds f ON f.id = p.feed_id
 WHERE f.name = 'regress_fpa_once' ORDER BY p.partition;
-- an ack of partition 0 carried by a poll of partition 1: the ack on its own, then the lease
CREATE TEMP TABLE other AS SELECT * FROM projection.poll('regress_fpa_once', 2, partition => 1, ack => :'o2');
SELECT array_agg(global_position ORDER BY global_position) AS other_lease FROM other;
SELECT partition, position, leased, lease_last
  FROM projection.feed_status WHERE feed = 'regress_fpa_once' ORDER BY partition;
-- a poll of any partition takes the free one with the lowest checkpoint as
-- the ack leaves it: acked to 4, partition 1 is below partition 0 (7) and
-- is leased again; acked past 7, it is above, and partition 0 is leased
SELECT token AS o3 FROM other LIMIT 1 \gset
CREATE TEMP TABLE any1 AS SELECT * FROM projection.poll('regress_fpa_once', 5, ack => :'o3');
SELECT DISTINCT partition, max(global_position) > 7 AS past_7 FROM any1 GROUP BY partition;
SELECT token AS o3b FROM any1 LIMIT 1 \gset
SELECT DISTINCT partition FROM projection.poll('regress_fpa_once', 1, ack => :'o3b');
SELECT partition, position > 7 AS past_7, leased
  FROM projection.feed_status WHERE feed = 'regress_fpa_once' ORDER BY partition;
-- the ack of a lease with a nacked event past it clears the attempts, as ack does
SELECT projection.seek('regress_fpa_once', 0);
SELECT token AS o4, min(global_position) AS o4_first
  FROM projection.poll('regress_fpa_once', 3, partition => 1) GROUP BY token \gset
SELECT projection.nack('regress_fpa_once', :'o4', :o4_first, 'boom', '0 s');
SELECT token AS o5 FROM projection.poll('regress_fpa_once', 3, partition => 1) LIMIT 1 \gset
SELECT attempts, failed_position = :o4_first AS failed, last_error
  FROM projection.feed_status WHERE feed = 'regress_fpa_once' AND partition = 1;
SELECT count(*) AS next_lease FROM projection.poll('regress_fpa_once', 3, partition => 1, ack => :'o5');
SELECT attempts, failed_position, last_error, leased, position > :o4_first AS acked
  FROM projection.feed_status WHERE feed = 'regress_fpa_once' AND partition = 1;

-- clean up
RESET ROLE;
\c :regress_db
DROP DATABASE regress_feed_poll_ack;
DROP ROLE regress_fpa_owner;
