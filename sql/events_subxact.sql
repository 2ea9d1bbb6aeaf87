--
-- events_subxact: appends and subtransactions.  Events appended in a
-- subtransaction that rolls back (an EXCEPTION block in a handler, ROLLBACK
-- TO SAVEPOINT) are never applied by inline projections; events appended by
-- handlers that do commit are applied once; append() returns its own
-- event's position; one INSERT may mix given and omitted stream versions.
--
CREATE TABLE ev_counts (event_type text PRIMARY KEY, n integer NOT NULL);

-- counts every event it sees, by type
CREATE FUNCTION ev_count(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ev_counts VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = ev_counts.n + 1;
END $$;

-- appends follow-up events, some in subtransactions that roll back
CREATE FUNCTION ev_emit(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE e.event_type
    WHEN 'A' THEN
        -- append B, then change our mind
        BEGIN
            PERFORM projection.append(e.stream_id || '-b', 'B', '{}');
            RAISE EXCEPTION 'undo';
        EXCEPTION WHEN others THEN NULL;
        END;
    WHEN 'C' THEN
        -- append D in a block that commits
        BEGIN
            PERFORM projection.append(e.stream_id || '-d', 'D', '{}');
        EXCEPTION WHEN others THEN NULL;
        END;
    WHEN 'N' THEN
        -- an inner block that commits inside an outer one that rolls back
        BEGIN
            BEGIN
                PERFORM projection.append(e.stream_id || '-b', 'B', '{}');
            EXCEPTION WHEN others THEN NULL;
            END;
            RAISE EXCEPTION 'undo the outer block';
        EXCEPTION WHEN others THEN NULL;
        END;
    END CASE;
END $$;

SELECT projection.create('ev_emitter', 'ev_emit', '{A,C,N}', mode => 'inline', start_from => 'end');
SELECT projection.create('ev_counter', 'ev_count', mode => 'inline', start_from => 'end');

-- the review's scenario: the store holds only A, and so does the counter
SELECT projection.append('d2', 'A', '{}') AS pos_a \gset
SELECT stream_id, event_type, global_position = :pos_a AS is_returned
  FROM projection.events WHERE stream_id LIKE 'd2%' ORDER BY global_position;
SELECT event_type, n FROM ev_counts ORDER BY event_type COLLATE "C";

-- an inner block's commit does not save its events from the outer rollback
SELECT projection.append('nest', 'N', '{}') AS pos_n \gset
SELECT stream_id, event_type, global_position = :pos_n AS is_returned
  FROM projection.events WHERE stream_id LIKE 'nest%' ORDER BY global_position;
SELECT event_type, n FROM ev_counts ORDER BY event_type COLLATE "C";

-- appends that commit are applied exactly once, after the event that caused
-- them; append() returns C's position, not D's
SELECT projection.append('d5', 'C', '{}') AS pos_c \gset
SELECT stream_id, event_type, global_position = :pos_c AS is_returned
  FROM projection.events WHERE stream_id LIKE 'd5%' ORDER BY global_position;
SELECT event_type, n FROM ev_counts ORDER BY event_type COLLATE "C";

-- ROLLBACK TO SAVEPOINT: the rolled-back B is not applied, its stream
-- version is free again, and append() returns A's position
BEGIN;
SAVEPOINT s;
SELECT projection.append('rb', 'B', '{}') > 0 AS appended;
ROLLBACK TO SAVEPOINT s;
SELECT projection.append('rb', 'A', '{}') AS pos_rb \gset
COMMIT;
SELECT stream_id, stream_version, event_type, global_position = :pos_rb AS is_returned
  FROM projection.events WHERE stream_id LIKE 'rb%' ORDER BY global_position;
SELECT event_type, n FROM ev_counts ORDER BY event_type COLLATE "C";

SELECT projection.drop('ev_emitter');
SELECT projection.drop('ev_counter');

--
-- one INSERT that gives some versions of a stream and leaves others out
--
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('mixed', 1, 'E', '{}'), ('mixed', NULL, 'E', '{}'), ('mixed', NULL, 'E', '{}');
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('mixed', NULL, 'E', '{}'), ('mixed', 5, 'E', '{}'), ('mixed', NULL, 'E', '{}');
SELECT stream_version FROM projection.events WHERE stream_id = 'mixed' ORDER BY global_position;
-- a real conflict is still one
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('mixed', NULL, 'E', '{}'), ('mixed', 7, 'E', '{}');
\echo :LAST_ERROR_SQLSTATE

--
-- an import whose row source rolls back a subtransaction with an append in
-- it: the rows counted before keep counting, so the sequence still moves
-- past the highest imported position
--
CREATE FUNCTION pg_temp.try_append() RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM projection.append('imp-probe', 'Probe', '{}');
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN others THEN NULL;
    END;
    RETURN '{}'::jsonb;
END $$;
SELECT last_value + 100 AS base FROM projection.events_global_position_seq \gset
INSERT INTO projection.events (global_position, stream_id, stream_version, event_type, data)
SELECT :base + 4 - i, 'imp', i, 'Imported', pg_temp.try_append()
  FROM generate_series(1, 3) AS i ORDER BY i;
SELECT last_value >= :base + 3 AS sequence_past_import FROM projection.events_global_position_seq;
SELECT projection.append('imp-after', 'E', '{}') > :base + 3 AS appended_after;
SELECT count(*) AS probes FROM projection.events WHERE stream_id = 'imp-probe';

--
-- a fresh session whose first append fails its version check: the stream
-- version cache of that transaction is forgotten with it
--
\c
SELECT projection.append('fresh', 'E', '{}', expected_version => 5);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('fresh', 'E', '{}') > 0 AS appended;
SELECT projection.append('fresh', 'E', '{}', expected_version => 1) > 0 AS appended;
SELECT stream_version FROM projection.events WHERE stream_id = 'fresh' ORDER BY global_position;
