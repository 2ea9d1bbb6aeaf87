--
-- feeds: create_feed, poll, ack, seek, pause/resume, drop_feed, feed_status,
-- their errors and privileges
--
-- In a database of its own, so that the positions in the messages do not
-- depend on the events the other tests appended.
\set regress_db :DBNAME
CREATE DATABASE regress_feeds;
\c regress_feeds
CREATE EXTENSION projection;
\set VERBOSITY default
CREATE ROLE regress_feed_owner;
CREATE ROLE regress_feed_other;
CREATE ROLE regress_feed_member;
GRANT regress_feed_owner TO regress_feed_member;

-- the partition of a stream is fixed arithmetic (FNV-1a), the same everywhere
SELECT s, projection.feed_partition(s, 8) AS p8, projection.feed_partition(s, 1000) AS p1000
  FROM unnest(ARRAY['order-1', 'order-2', 'customer-42', '', 'ünïcode']) s;
SELECT projection.feed_partition('x', 0);
\echo :LAST_ERROR_SQLSTATE

--
-- creating a feed needs SELECT on projection.events
--
SET ROLE regress_feed_owner;
SELECT projection.create_feed('regress_f');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS feeds FROM projection.feed_status;
GRANT SELECT ON projection.events TO regress_feed_owner;

-- bad arguments: clear errors, nothing created
SET ROLE regress_feed_owner;
SELECT projection.create_feed(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', partitions => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', partitions => 1025);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', start_from => 'middle');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', start_from => '-1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', event_types => '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_feed('regress_f', event_types => '{NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS feeds FROM projection.feed_status;

-- a feed of two partitions from the end of the store
SELECT projection.create_feed('regress_f', start_from => 'end', partitions => 2);
SELECT projection.create_feed('regress_f');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT feed, partition, lag_events, lag_seconds, leased, lease_holder, lease_expires, paused, owner
  FROM projection.feed_status ORDER BY feed, partition;

-- events: order-1 and order-3 share partition 1, order-2 is in partition 0
SELECT s, projection.feed_partition(s, 2) AS p FROM unnest(ARRAY['order-1', 'order-2', 'order-3']) s;
SELECT COALESCE(max(global_position), 0) AS base FROM projection.events \gset
SELECT projection.append('order-1', 'Created', '{"n": 1}') - :base AS pos;
SELECT projection.append('order-2', 'Created', '{"n": 2}') - :base AS pos;
SELECT projection.append('order-1', 'Paid', '{"n": 3}') - :base AS pos;
SELECT projection.append('order-3', 'Created', '{"n": 4}') - :base AS pos;
SELECT projection.append('order-1', 'Shipped', '{"n": 5}') - :base AS pos;
SELECT partition, position - :base AS position, lag_events
  FROM projection.feed_status WHERE feed = 'regress_f' ORDER BY partition;

--
-- poll and ack: only the owner and members of the owner role
--
SET ROLE regress_feed_other;
SELECT * FROM projection.poll('regress_f');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.seek('regress_f', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.drop_feed('regress_f');
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_feed_member;
-- bad arguments
SELECT * FROM projection.poll('regress_nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.poll('regress_f', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.poll('regress_f', wait => '-1 s');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.poll('regress_f', lease => '0 s');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.poll('regress_f', partition => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.poll('regress_f', max_bytes => 0);
\echo :LAST_ERROR_SQLSTATE
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM projection.poll('regress_f');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) AS leased FROM projection.feed_status WHERE leased;

-- the free partition with the oldest checkpoint (then the lowest number)
-- first, up to max_events, in position order
CREATE TEMP TABLE got0 AS SELECT * FROM projection.poll('regress_f', 2);
SELECT partition, global_position - :base AS pos, stream_id, stream_version, event_type, data
  FROM got0 ORDER BY global_position;
SELECT count(DISTINCT token) AS tokens FROM got0;
SELECT token AS token0 FROM got0 LIMIT 1 \gset
-- partition 0 is leased: the next poll takes partition 1
CREATE TEMP TABLE got1 AS SELECT * FROM projection.poll('regress_f', 10);
SELECT partition, global_position - :base AS pos, stream_id FROM got1 ORDER BY global_position;
SELECT token AS token1 FROM got1 LIMIT 1 \gset
SELECT partition, position - :base AS position, leased, lease_holder LIKE '%(pid %)' AS holder_shown,
       lease_expires > now() AS expires_later, lease_last - :base AS lease_last
  FROM projection.feed_status WHERE feed = 'regress_f' ORDER BY partition;
-- a leased partition given explicitly is refused while its lease lasts
\set VERBOSITY terse
SELECT * FROM projection.poll('regress_f', partition => 0);
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
-- no free partition with events: no rows, no lease
SELECT count(*) FROM projection.poll('regress_f');

-- ack: up_to must lie within the lease; a bad one changes nothing
SELECT projection.ack('regress_f', :'token0', :base + 5);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', :'token0', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', NULL);
\echo :LAST_ERROR_SQLSTATE
-- a partial ack: the checkpoint moves to up_to, the lease ends
SELECT projection.ack('regress_f', :'token0', :base + 1) - :base AS acked;
-- the same token again: the lease is gone (PJF01), nothing changes
SELECT projection.ack('regress_f', :'token0');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', 'made-up');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', :'token1') - :base AS acked;
SELECT partition, position - :base AS position, leased, lag_events
  FROM projection.feed_status WHERE feed = 'regress_f' ORDER BY partition;
-- partition 0's event again (not acked), then partition 1's after the ack
SELECT partition, global_position - :base AS pos, stream_id, stream_version
  FROM projection.poll('regress_f', 10);
SELECT count(*) AS nothing_free FROM projection.poll('regress_f', 10);
SELECT projection.seek('regress_f', :base);

-- an expired lease hands out the same events again, in the same order,
-- and the old token is refused (PJF01), even before anyone took over
SELECT token AS short FROM projection.poll('regress_f', 2, lease => '1 ms', partition => 1) LIMIT 1 \gset
SELECT pg_sleep(0.01);
SELECT projection.ack('regress_f', :'short');
\echo :LAST_ERROR_SQLSTATE
CREATE TEMP TABLE again AS SELECT * FROM projection.poll('regress_f', 10, partition => 1);
SELECT global_position - :base AS pos, stream_id, stream_version FROM again ORDER BY global_position;
SELECT token AS again FROM again LIMIT 1 \gset
SELECT projection.ack('regress_f', :'short');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_f', :'again', :base + 3) - :base AS acked;

-- seek: every checkpoint moves, every lease ends (its ack is refused)
SELECT token AS sought FROM projection.poll('regress_f', 10, partition => 0) LIMIT 1 \gset
SELECT projection.seek('regress_f', :base + 1);
SELECT projection.ack('regress_f', :'sought');
\echo :LAST_ERROR_SQLSTATE
SELECT partition, position - :base AS position, leased, lag_events
  FROM projection.feed_status WHERE feed = 'regress_f' ORDER BY partition;
SELECT projection.seek('regress_f', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.seek('regress_f', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT global_position - :base AS pos, stream_id FROM projection.poll('regress_f', 10, partition => 1);

-- pause: polls hand out nothing; resume: they do again
SELECT projection.pause_feed('regress_f');
SELECT count(*) AS while_paused FROM projection.poll('regress_f', 10, partition => 0);
SELECT DISTINCT paused FROM projection.feed_status WHERE feed = 'regress_f';
SELECT projection.resume_feed('regress_f');
SELECT global_position - :base AS pos FROM projection.poll('regress_f', 10, partition => 0);

-- a feed of some event types only, from a given position, with a bytes cap
SELECT projection.create_feed('regress_typed', event_types => '{Created}', start_from => (:base)::text);
CREATE TEMP TABLE typed AS SELECT * FROM projection.poll('regress_typed', 10, max_bytes => 1);
SELECT global_position - :base AS pos, event_type FROM typed;
SELECT token AS typed FROM typed \gset
SELECT projection.ack('regress_typed', :'typed') - :base AS acked;
SELECT global_position - :base AS pos, event_type FROM projection.poll('regress_typed', 10);

-- nack: the events before the failed one are acked, the failed one comes
-- back first after retry_after; after max_attempts nacks in a row it is
-- parked and the partition goes on
SELECT projection.create_feed('regress_nack', start_from => (:base)::text, max_attempts => 2);
SELECT projection.create_feed('regress_bad', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT token AS n1 FROM projection.poll('regress_nack', 3) LIMIT 1 \gset
SELECT projection.nack('regress_nack', :'n1', :base + 5, 'boom');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.nack('regress_nack', :'n1', :base, 'boom');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.nack('regress_nack', :'n1', :base + 2, 'boom', retry_after => '-1 s');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.nack('regress_nack', :'n1', :base + 2, 'boom: {"n": 2}', retry_after => '1 h') - :base AS checkpoint;
SELECT position - :base AS position, failed_position - :base AS failed_position, attempts,
       retry_at > now() AS backing_off, leased, last_error
  FROM projection.feed_status WHERE feed = 'regress_nack';
-- the lease is over: its token is refused
SELECT projection.ack('regress_nack', :'n1');
\echo :LAST_ERROR_SQLSTATE
-- backing off: nothing to poll, not even by number
SELECT count(*) AS backing_off FROM projection.poll('regress_nack', 3);
SELECT count(*) AS backing_off FROM projection.poll('regress_nack', 3, partition => 0);
-- once retry_after has passed (moved here by the superuser), the failed
-- event comes first
RESET ROLE;
UPDATE projection.feed_partitions SET retry_at = now()
 WHERE feed_id = (SELECT id FROM projection.feeds WHERE name = 'regress_nack');
SET ROLE regress_feed_member;
CREATE TEMP TABLE n2 AS SELECT * FROM projection.poll('regress_nack', 3);
SELECT global_position - :base AS pos, stream_id FROM n2 ORDER BY global_position;
SELECT token AS n2 FROM n2 LIMIT 1 \gset
-- the second failure in a row parks it, the checkpoint passes it
\set VERBOSITY terse
SELECT projection.nack('regress_nack', :'n2', :base + 2, 'boom again') - :base AS checkpoint;
\set VERBOSITY default
SELECT feed, global_position - :base AS pos, stream_id, event_type, attempts, error
  FROM projection.feed_parked_events;
SELECT position - :base AS position, failed_position, attempts, retry_at, leased, parked
  FROM projection.feed_status WHERE feed = 'regress_nack';
SELECT global_position - :base AS pos FROM projection.poll('regress_nack', 10);
-- others see neither the error nor the parked events
SET ROLE regress_feed_other;
SELECT last_error, parked FROM projection.feed_status WHERE feed = 'regress_nack';
SELECT count(*) FROM projection.feed_parked_events;
SET ROLE regress_feed_member;
SELECT projection.drop_feed('regress_nack');
DROP TABLE n2;

-- a long-poll that finds nothing returns no rows when wait passes
SELECT projection.create_feed('regress_quiet', start_from => 'end');
SELECT count(*) FROM projection.poll('regress_quiet', wait => '10 ms');
DROP TABLE got0, got1, again, typed;
RESET ROLE;
-- own uncommitted events are never handed out
BEGIN;
SELECT projection.append('order-9', 'Created', '{}') > 0 AS appended;
SELECT count(*) AS own_events FROM projection.poll('regress_quiet');
ROLLBACK;
SELECT count(*) AS rolled_back_events FROM projection.poll('regress_quiet');
SET ROLE regress_feed_member;

-- drop_feed: the owner's members may; an unknown feed is an error
SELECT projection.drop_feed('regress_typed');
SELECT projection.drop_feed('regress_quiet');
SELECT projection.drop_feed('regress_typed');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT feed, count(*) AS partitions FROM projection.feed_status GROUP BY feed ORDER BY feed;

-- nobody writes the feed tables directly
SET ROLE regress_feed_owner;
UPDATE projection.feed_partitions SET position = 0;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.feeds;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- the owner losing SELECT on the events stops its polls
REVOKE SELECT ON projection.events FROM regress_feed_owner;
SET ROLE regress_feed_owner;
SELECT * FROM projection.poll('regress_f');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- clean up
SELECT projection.drop_feed('regress_f');
SELECT count(*) AS feeds FROM projection.feed_status;
\c :regress_db
DROP DATABASE regress_feeds;
DROP ROLE regress_feed_member, regress_feed_other, regress_feed_owner;
