--
-- hostile_subxact_inline: SAVEPOINT / ROLLBACK TO around appends through an
-- inline projection whose handler is a batch statement and an inline
-- snapshot projection.  What a rolled-back subtransaction appended leaves
-- nothing in either read model (nor its stream version), what it released
-- stays, and an error caught in a PL/pgSQL block (a subtransaction) inside
-- an inline batch statement or an inline fold leaves the next append right.
-- Each model is compared with its oracle: the events that exist.
--
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE SCHEMA hsx;
CREATE TABLE hsx.rows (pos bigint PRIMARY KEY, stream_id text NOT NULL, version bigint NOT NULL,
                       CHECK (version < 100));
CREATE TABLE hsx.per_stream (stream_id text PRIMARY KEY, n bigint NOT NULL);
SELECT projection.create('hsx_rows', NULL, '{HsxEvent}', mode => 'inline',
                         tables => '{hsx.rows,hsx.per_stream}');
SELECT projection.on_batch('hsx_rows',
    'INSERT INTO hsx.rows SELECT global_position, stream_id, stream_version FROM batch');
SELECT projection.on_batch('hsx_rows',
    'INSERT INTO hsx.per_stream AS p SELECT stream_id, count(*) FROM batch GROUP BY 1
     ON CONFLICT (stream_id) DO UPDATE SET n = p.n + excluded.n');
-- the fold raises for an event whose data says so
CREATE FUNCTION hsx.fold(state jsonb, e projection.events) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (e.data->>'poison')::boolean THEN
        RAISE EXCEPTION 'poison event %', e.stream_version;
    END IF;
    RETURN jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
                              'versions', coalesce(state->'versions', '[]') || to_jsonb(e.stream_version));
END $$;
CREATE FUNCTION hsx.fold_full(state jsonb, e projection.events) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1,
                              'versions', coalesce(state->'versions', '[]') || to_jsonb(e.stream_version)) $$;
SELECT projection.create_snapshot('hsx_snap', 'hsx.fold', event_types => '{HsxEvent}', mode => 'inline');
-- every model against the events that exist
CREATE VIEW hsx.check AS
SELECT (SELECT count(*) FROM projection.events WHERE event_type = 'HsxEvent') AS events,
       (SELECT count(*) FROM projection.events e WHERE e.event_type = 'HsxEvent'
           AND NOT EXISTS (SELECT FROM hsx.rows r WHERE r.pos = e.global_position
                             AND r.stream_id = e.stream_id AND r.version = e.stream_version)) AS rows_missing,
       (SELECT count(*) FROM hsx.rows r
         WHERE NOT EXISTS (SELECT FROM projection.events e WHERE e.global_position = r.pos)) AS rows_unknown,
       (SELECT count(*) FROM hsx.per_stream p
         WHERE p.n <> (SELECT count(*) FROM projection.events e WHERE e.stream_id = p.stream_id
                          AND e.event_type = 'HsxEvent')) AS counts_wrong,
       (SELECT count(*) FROM (SELECT DISTINCT stream_id FROM projection.events WHERE event_type = 'HsxEvent') s
         WHERE projection.snapshot('hsx_snap', s.stream_id)
               IS DISTINCT FROM projection.aggregate(s.stream_id, 'hsx.fold_full')) AS states_wrong,
       (SELECT count(*) FROM projection.snapshots sn
         WHERE sn.name = 'hsx_snap'
           AND sn.version <> (SELECT max(stream_version) FROM projection.events e
                               WHERE e.stream_id = sn.stream_id)) AS versions_wrong;

-- 1. ROLLBACK TO: the rolled-back event is nowhere, its version is reused
BEGIN;
SELECT projection.append('hsx-1', 'HsxEvent', '{}') > 0 AS a;
SAVEPOINT s;
SELECT projection.append('hsx-1', 'HsxEvent', '{}') > 0 AS b;
SELECT projection.append('hsx-2', 'HsxEvent', '{}') > 0 AS b2;
ROLLBACK TO SAVEPOINT s;
SELECT projection.append('hsx-1', 'HsxEvent', '{}') > 0 AS c;
COMMIT;
SELECT stream_id, stream_version FROM projection.events WHERE event_type = 'HsxEvent'
 ORDER BY global_position;
SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'hsx_snap'
 ORDER BY stream_id COLLATE "C";
SELECT * FROM hsx.check;

-- 2. nested: RELEASE of the inner one, ROLLBACK TO the outer one; a
--    multi-row INSERT (one batch) inside
BEGIN;
SAVEPOINT s1;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'hsx-3', i, 'HsxEvent', '{}' FROM generate_series(1, 5) i;
SAVEPOINT s2;
SELECT projection.append('hsx-3', 'HsxEvent', '{}') > 0 AS d;
RELEASE SAVEPOINT s2;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'hsx-3', i, 'HsxEvent', '{}' FROM generate_series(1, 3) i;
SAVEPOINT s3;
SELECT projection.append('hsx-3', 'HsxEvent', '{}') > 0 AS e;
RELEASE SAVEPOINT s3;
COMMIT;
SELECT state FROM projection.snapshots WHERE name = 'hsx_snap' AND stream_id = 'hsx-3';
SELECT * FROM hsx.check;

-- 3. errors inside the inline batch statement and the inline fold, caught by
--    a PL/pgSQL block (a subtransaction), then more appends to the streams
DO $$
BEGIN
    BEGIN
        -- the read model's CHECK refuses version 100: the batch statement fails
        INSERT INTO projection.events (stream_id, stream_version, event_type, data)
        SELECT 'hsx-4', i, 'HsxEvent', '{}' FROM generate_series(1, 100) i;
    EXCEPTION WHEN check_violation THEN
        RAISE WARNING 'caught check_violation';
    END;
    BEGIN
        PERFORM projection.append('hsx-1', 'HsxEvent', '{"poison": true}');
    EXCEPTION WHEN raise_exception THEN
        RAISE WARNING 'caught poison';
    END;
    PERFORM projection.append('hsx-4', 'HsxEvent', '{}');
    PERFORM projection.append('hsx-1', 'HsxEvent', '{}');
END $$;
SELECT stream_id, max(stream_version) FROM projection.events WHERE event_type = 'HsxEvent'
 GROUP BY 1 ORDER BY stream_id COLLATE "C";
SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'hsx_snap'
 ORDER BY stream_id COLLATE "C";
SELECT * FROM hsx.check;

-- 4. an error after the appends in the same subtransaction: all of it goes
BEGIN;
SAVEPOINT s;
SELECT projection.append('hsx-5', 'HsxEvent', '{}') > 0 AS f;
SELECT 1 / 0;
ROLLBACK TO SAVEPOINT s;
SELECT projection.append('hsx-5', 'HsxEvent', '{}') > 0 AS g;
COMMIT;
SELECT state, version FROM projection.snapshots WHERE name = 'hsx_snap' AND stream_id = 'hsx-5';
SELECT * FROM hsx.check;

SELECT name, state, last_error FROM projection.status WHERE name LIKE 'hsx%' ORDER BY 1;
SELECT projection.drop('hsx_snap');
SELECT projection.drop('hsx_rows');
DROP SCHEMA hsx CASCADE;
