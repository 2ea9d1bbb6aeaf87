--
-- events: appending to the event store with projection.append(), INSERT
-- and COPY; versions, expected_version, the append-only guard
--

-- append() returns the new event's global_position; versions count 1, 2, 3
-- within each stream
SELECT projection.append('order-1', 'OrderCreated', '{"order_id": 1}');
SELECT projection.append('order-1', 'OrderItemAdded', '{"order_id": 1, "price": 9.5}');
SELECT projection.append('order-2', 'OrderCreated', '{"order_id": 2}', '{"user": "ann"}');
SELECT projection.append('order-1', 'OrderShipped', '{"order_id": 1}');
SELECT global_position, stream_id, stream_version, event_type, data, metadata,
       recorded_at IS NOT NULL AS recorded
  FROM projection.events ORDER BY global_position;
-- the returned position is the position of the stored row
SELECT projection.append('order-2', 'OrderItemAdded', '{"order_id": 2, "price": 1}') AS pos \gset
SELECT stream_id, stream_version FROM projection.events WHERE global_position = :pos;

-- metadata defaults to '{}', also when passed as NULL
SELECT projection.append('meta', 'E', '{}');
SELECT projection.append('meta', 'E', '{}', NULL);
SELECT projection.append('meta', 'E', '{}', metadata => '{"trace": "t1"}');
SELECT stream_version, metadata FROM projection.events WHERE stream_id = 'meta'
 ORDER BY stream_version;

--
-- expected_version
--
-- matches the current version: appended
SELECT projection.append('order-1', 'OrderCompleted', '{"order_id": 1}', expected_version => 3);
-- differs: a version conflict naming the stream and both versions, and
-- nothing appended
SELECT projection.append('order-1', 'OrderCancelled', '{"order_id": 1}', expected_version => 3);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('order-1', 'OrderCancelled', '{"order_id": 1}', expected_version => 9);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*), max(stream_version) FROM projection.events WHERE stream_id = 'order-1';
-- 0: the stream must not exist yet
SELECT projection.append('order-3', 'OrderCreated', '{"order_id": 3}', expected_version => 0);
SELECT projection.append('order-3', 'OrderCreated', '{"order_id": 3}', expected_version => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE stream_id = 'order-3';
-- a conflict aborts the whole transaction, including earlier appends
BEGIN;
SELECT projection.append('order-4', 'OrderCreated', '{"order_id": 4}', expected_version => 0);
SELECT projection.append('order-4', 'OrderItemAdded', '{"order_id": 4}', expected_version => 0);
ROLLBACK;
SELECT count(*) FROM projection.events WHERE stream_id = 'order-4';
-- negative versions are invalid
SELECT projection.append('order-4', 'OrderCreated', '{}', expected_version => -1);
\echo :LAST_ERROR_SQLSTATE
-- within one transaction, each append sees the versions appended before it
BEGIN;
SELECT projection.append('tx', 'E', '{"n": 1}', expected_version => 0) > 0 AS appended;
SELECT projection.append('tx', 'E', '{"n": 2}', expected_version => 1) > 0 AS appended;
SELECT projection.append('tx', 'E', '{"n": 3}') > 0 AS appended;
COMMIT;
SELECT stream_version, data FROM projection.events WHERE stream_id = 'tx' ORDER BY stream_version;
-- a rolled-back savepoint gives its versions back
BEGIN;
SELECT projection.append('sp', 'E', '{"n": 1}') > 0 AS appended;
SAVEPOINT a;
SELECT projection.append('sp', 'E', '{"n": 2}') > 0 AS appended;
ROLLBACK TO SAVEPOINT a;
SELECT projection.append('sp', 'E', '{"n": 3}', expected_version => 1) > 0 AS appended;
COMMIT;
SELECT stream_version, data FROM projection.events WHERE stream_id = 'sp' ORDER BY stream_version;

--
-- NULL and empty arguments
--
SELECT projection.append(NULL, 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('s', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('s', 'E', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('s', '', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS events FROM projection.events;

--
-- plain INSERT: multi-row, INSERT ... SELECT, with and without stream_version
--
SELECT max(global_position) AS last FROM projection.events \gset
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bulk-1', 1, 'Created', '{"n": 1}'),
       ('bulk-1', 2, 'Changed', '{"n": 2}'),
       ('bulk-2', 1, 'Created', '{"n": 3}');
-- without stream_version: the next versions, in row order, also for a
-- stream that already has events and for two streams interleaved
INSERT INTO projection.events (stream_id, event_type, data)
VALUES ('bulk-1', 'Changed', '{"n": 4}'),
       ('bulk-3', 'Created', '{"n": 5}'),
       ('bulk-1', 'Changed', '{"n": 6}'),
       ('bulk-3', 'Changed', '{"n": 7}');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'bulk-4', i - 7, 'Tick', jsonb_build_object('n', i) FROM generate_series(8, 10) AS i;
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'bulk-4', 'Tock', jsonb_build_object('n', i) FROM generate_series(11, 13) AS i ORDER BY i;
SELECT global_position - :last AS pos, stream_id, stream_version, event_type, data, metadata
  FROM projection.events WHERE global_position > :last ORDER BY global_position;
-- positions increase with the rows
SELECT bool_and(data->>'n' = (global_position - :last)::text) AS in_row_order
  FROM projection.events WHERE global_position > :last;
-- RETURNING shows what the extension assigned
INSERT INTO projection.events (stream_id, event_type, data)
VALUES ('bulk-1', 'Changed', '{}'), ('bulk-5', 'Created', '{}')
RETURNING global_position > :last AS positioned, stream_id, stream_version, metadata;
-- versions need not be dense: the next one follows the highest
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('gap', 5, 'E', '{}');
SELECT projection.append('gap', 'E', '{}', expected_version => 5) > 0 AS appended;
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('gap', 'E', '{}');
SELECT stream_version FROM projection.events WHERE stream_id = 'gap' ORDER BY stream_version;
-- a duplicate version is a unique violation, and the whole statement fails
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bulk-6', 1, 'Created', '{}'), ('bulk-2', 1, 'Created', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE stream_id = 'bulk-6';
-- constraints of the table (terse: the DETAIL would show recorded_at)
\set VERBOSITY terse
INSERT INTO projection.events (stream_id, event_type, data) VALUES (NULL, 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('s', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('s', '', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES ('s', 0, 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type) VALUES ('s', 'E');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT count(*) FROM projection.events WHERE stream_id = 's';

--
-- COPY
--
SELECT max(global_position) AS last FROM projection.events \gset
COPY projection.events (stream_id, event_type, data) FROM STDIN;
copy-1	Created	{"n": 1}
copy-2	Created	{"n": 2}
copy-1	Changed	{"n": 3}
\.
COPY projection.events (stream_id, stream_version, event_type, data, metadata) FROM STDIN WITH (FORMAT csv);
copy-3,1,Created,"{""n"": 4}","{""source"": ""csv""}"
copy-3,2,Changed,"{""n"": 5}","{}"
\.
SELECT row_number() OVER (ORDER BY global_position) AS n, stream_id, stream_version,
       event_type, data, metadata
  FROM projection.events WHERE global_position > :last ORDER BY global_position;

--
-- the store is append-only: UPDATE, DELETE and TRUNCATE are refused, even
-- for the superuser, and change nothing
--
SELECT count(*) AS events, sum(stream_version) AS versions FROM projection.events;
UPDATE projection.events SET data = '{}' WHERE stream_id = 'order-1';
\echo :LAST_ERROR_SQLSTATE
UPDATE projection.events SET data = '{}' WHERE false;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.events WHERE stream_id = 'order-1';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.events;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE projection.events;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('order-1', 1, 'OrderCreated', '{}')
ON CONFLICT (stream_id, stream_version) DO UPDATE SET data = '{}';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS events, sum(stream_version) AS versions FROM projection.events;
SELECT data FROM projection.events WHERE stream_id = 'order-1' AND stream_version = 1;

--
-- global_position is assigned by the extension: a role that may append
-- cannot choose it
--
GRANT INSERT ON projection.events TO regress_appender;
SET ROLE regress_appender;
INSERT INTO projection.events (global_position, stream_id, event_type, data)
VALUES (1000000, 'forged', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
-- without it the same role appends
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('appender', 'E', '{}');
SELECT projection.append('appender', 'E', '{}') > 0 AS appended;
RESET ROLE;
REVOKE INSERT ON projection.events FROM regress_appender;
SELECT stream_id, stream_version FROM projection.events
 WHERE stream_id IN ('forged', 'appender') ORDER BY global_position;
-- the owner of projection.events (here the superuser) may import events
-- with their positions (as pg_restore does); the sequence moves past them
SELECT max(global_position) AS last FROM projection.events \gset
INSERT INTO projection.events (global_position, stream_id, stream_version, event_type, data)
VALUES (:last + 1, 'imported', 1, 'E', '{}'), (:last + 2, 'imported', 2, 'E', '{}');
SELECT projection.append('imported', 'E', '{}') - :last AS pos;
SELECT global_position - :last AS pos, stream_version FROM projection.events
 WHERE stream_id = 'imported' ORDER BY global_position;
-- but not mixed with rows whose positions are assigned, nor non-positive ones
INSERT INTO projection.events (global_position, stream_id, event_type, data)
VALUES (:last + 10, 'imported', 'E', '{}'), (NULL, 'imported', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (global_position, stream_id, event_type, data)
VALUES (0, 'imported', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE stream_id = 'imported';

--
-- two-phase commit: a transaction that appended cannot be prepared
--
BEGIN;
SELECT projection.append('twophase', 'E', '{}') > 0 AS appended;
PREPARE TRANSACTION 'regress_projection_append';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE stream_id = 'twophase';
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'regress_projection_append';
BEGIN;
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('twophase', 'E', '{}');
PREPARE TRANSACTION 'regress_projection_insert';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE stream_id = 'twophase';
-- one that did not append can
BEGIN;
SELECT count(*) FROM projection.events WHERE stream_id = 'twophase';
PREPARE TRANSACTION 'regress_projection_read';
COMMIT PREPARED 'regress_projection_read';
