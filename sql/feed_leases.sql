--
-- feed_leases (1.4): extend_lease keeps a slow consumer's lease, fenced by
-- its token; seek of one partition; the client-owned checkpoint (poll's
-- after)
--
\set regress_db :DBNAME
CREATE DATABASE regress_feed_leases;
\c regress_feed_leases
CREATE EXTENSION projection;
\set VERBOSITY default
CREATE ROLE regress_fl_owner;
CREATE ROLE regress_fl_other;
GRANT SELECT ON projection.events TO regress_fl_owner, regress_fl_other;
SELECT count(projection.append('s-' || i % 4, 'E', jsonb_build_object('i', i))) AS appended
  FROM generate_series(1, 20) i;
SET ROLE regress_fl_owner;
SELECT projection.create_feed('regress_fl', partitions => 2);

--
-- extend_lease
--
CREATE TEMP TABLE lease AS
SELECT DISTINCT token FROM projection.poll('regress_fl', 3, partition => 0, lease => '1 min');
SELECT count(*) AS leases FROM lease;
GRANT SELECT ON lease TO regress_fl_other;
-- the lease now ends an hour from now; the partition stays leased
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease), '1 hour')
       > now() + interval '59 min' AS extended;
SELECT lease_expires > now() + interval '59 min' AS extended, leased
  FROM projection.feed_status WHERE feed = 'regress_fl' AND partition = 0;
\set VERBOSITY terse
SELECT count(*) FROM projection.poll('regress_fl', partition => 0);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- shorter is allowed too
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease), '10 min')
       < now() + interval '11 min' AS shortened;
-- bad arguments: nothing changes
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease), '0 s');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease), NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.extend_lease('regress_fl', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.extend_lease('regress_nofeed', (SELECT token FROM lease));
\echo :LAST_ERROR_SQLSTATE
SELECT lease_expires < now() + interval '11 min' AS unchanged
  FROM projection.feed_status WHERE feed = 'regress_fl' AND partition = 0;
-- only the owner's members may
RESET ROLE;
SET ROLE regress_fl_other;
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease));
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_fl_owner;
-- the lease still acks
SELECT projection.ack('regress_fl', (SELECT token FROM lease)) AS checkpoint;
-- an ended lease is not extended (PJF01), and nothing changes
SELECT projection.extend_lease('regress_fl', (SELECT token FROM lease));
\echo :LAST_ERROR_SQLSTATE
SELECT "position", leased, lease_expires IS NULL AS no_lease
  FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;

--
-- seek of one partition
--
SELECT projection.seek('regress_fl', 10, partition => 1);
SELECT partition, "position" FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;
-- it ends that partition's lease only
TRUNCATE lease;
INSERT INTO lease SELECT DISTINCT token FROM projection.poll('regress_fl', 2, partition => 0);
CREATE TEMP TABLE lease1 AS
SELECT DISTINCT token FROM projection.poll('regress_fl', 2, partition => 1);
SELECT projection.seek('regress_fl', 0, partition => 1);
SELECT projection.ack('regress_fl', (SELECT token FROM lease1));
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_fl', (SELECT token FROM lease)) > 0 AS acked;
SELECT partition, "position", leased FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;
-- errors
SELECT projection.seek('regress_fl', 0, partition => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.seek('regress_fl', 0, partition => -1);
\echo :LAST_ERROR_SQLSTATE
-- without a partition: every partition, as before
SELECT projection.seek('regress_fl', 5);
SELECT partition, "position" FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;

--
-- the client-owned checkpoint: poll after the consumer's own position
--
SELECT partition, "position" FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;
-- partition 0's events after 7, whatever its stored checkpoint (5); the
-- lease moves that checkpoint to 7
TRUNCATE lease;
INSERT INTO lease SELECT DISTINCT token FROM projection.poll('regress_fl', 2, partition => 0, after => 7);
SELECT global_position, stream_id FROM projection.poll('regress_fl', 2, partition => 1, after => 7);
SELECT partition, "position", leased FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;
SELECT projection.ack('regress_fl', (SELECT token FROM lease)) AS checkpoint;
-- a position behind the stored checkpoint: the events after it again
SELECT global_position FROM projection.poll('regress_fl', 3, partition => 0, after => 1, lease => '1 s');
-- errors, and nothing changes
SELECT projection.seek('regress_fl', 0);
SELECT count(*) FROM projection.poll('regress_fl', after => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.poll('regress_fl', partition => 1, after => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.poll('regress_fl', partition => 1, after => 1000);
\echo :LAST_ERROR_SQLSTATE
SELECT partition, "position", leased FROM projection.feed_status WHERE feed = 'regress_fl' ORDER BY partition;
-- a feed of one partition needs no partition
SELECT projection.create_feed('regress_fl1');
SELECT min(global_position), count(*) FROM projection.poll('regress_fl1', after => 15);
SELECT "position" FROM projection.feed_status WHERE feed = 'regress_fl1';

-- a poll of its own commits its lease without waiting for the WAL flush,
-- in its own transaction only: the session's setting is unchanged after
-- it, and a poll inside a transaction block leaves it alone
SELECT projection.seek('regress_fl1', 0);
SELECT global_position FROM projection.poll('regress_fl1', 1);
SHOW synchronous_commit;
SELECT projection.seek('regress_fl1', 0);
BEGIN;
SELECT global_position FROM projection.poll('regress_fl1', 1);
SHOW synchronous_commit;
COMMIT;
SHOW synchronous_commit;

-- clean up
RESET ROLE;
\c :regress_db
DROP DATABASE regress_feed_leases;
DROP ROLE regress_fl_owner, regress_fl_other;
