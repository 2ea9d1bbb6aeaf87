--
-- aggregate_snapshot: aggregate() starts from a snapshot projection's stored
-- state when that gives exactly what folding every event gives, and folds
-- every event otherwise.  DEBUG1 says which; each result is compared with the
-- full fold of a VOLATILE twin of the fold (never started from a state).
--
SET client_min_messages = warning;
CREATE SCHEMA aggsnap;
-- order-sensitive: the state lists every event folded, in order
CREATE FUNCTION aggsnap.trace(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_set(state, '{trace}',
                     coalesce(state->'trace', '[]') || to_jsonb(e.stream_version || ':' || e.event_type))
$$;
CREATE FUNCTION aggsnap.trace_full(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$ SELECT aggsnap.trace(state, e) $$;
-- aggregate() with the fold and with its full-fold twin
CREATE FUNCTION aggsnap.check(stream text, fold regproc, initial jsonb DEFAULT '{}')
RETURNS TABLE (result jsonb, same boolean) LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    full_fold jsonb;
BEGIN
    SET LOCAL client_min_messages = debug1;
    r := projection.aggregate(stream, fold, initial);
    SET client_min_messages = warning;
    full_fold := projection.aggregate(stream, 'aggsnap.trace_full', initial);
    RETURN QUERY SELECT r, r IS NOT DISTINCT FROM full_fold;
END $$;

SELECT projection.append('as-1', 'A' || i, '{}') > 0 AS appended FROM generate_series(1, 4) i;
SELECT projection.create_snapshot('aggsnap_all', 'aggsnap.trace');
SELECT projection.wait('aggsnap_all', (SELECT max(global_position) FROM projection.events), '30 s');
-- a usable snapshot: started from the state at version 4
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
-- a stream without a state: every event
SELECT projection.append('as-none', 'X', '{}') > 0 AS appended;
SELECT * FROM aggsnap.check('as-nosuch', 'aggsnap.trace');

-- a paused (lagging) projection: its state, then the events after it
SELECT projection.pause('aggsnap_all');
SELECT projection.append('as-1', 'B' || i, '{}') > 0 AS appended FROM generate_series(1, 2) i;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
-- this transaction's own uncommitted events too
BEGIN;
SELECT projection.append('as-1', 'C', '{}') > 0 AS appended;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
ROLLBACK;
SELECT projection.resume('aggsnap_all');
SELECT projection.wait('aggsnap_all', (SELECT max(global_position) FROM projection.events), '30 s');

-- another initial state: not the projection's (byte for byte: 1.0 is not 1)
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace', '{"n": 1}');
SELECT projection.create_snapshot('aggsnap_n', 'aggsnap.trace', '{"n": 1.0}');
SELECT projection.wait('aggsnap_n', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace', '{"n": 1}');
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace', '{"n": 1.0}');
SELECT projection.drop('aggsnap_n');

-- a VOLATILE fold never starts from a state
SELECT projection.create_snapshot('aggsnap_vol', 'aggsnap.trace_full');
SELECT projection.wait('aggsnap_vol', (SELECT max(global_position) FROM projection.events), '30 s');
SET client_min_messages = debug1;
SELECT projection.aggregate('as-1', 'aggsnap.trace_full') ? 'trace' AS folded;
SET client_min_messages = warning;
SELECT projection.drop('aggsnap_vol');

-- a projection of some event types only: not used
SELECT projection.create_snapshot('aggsnap_some', 'aggsnap.trace', event_types => '{A1,A2,A3,A4,B1,B2}');
SELECT projection.wait('aggsnap_some', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT projection.drop('aggsnap_all');
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SELECT projection.drop('aggsnap_some');

-- altered to every event type: its states lack the events of the other
-- types passed before, so not used until a rebuild
SELECT projection.create_snapshot('aggsnap_alter', 'aggsnap.trace', event_types => '{A1,A3}');
SELECT projection.wait('aggsnap_alter', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT projection.alter('aggsnap_alter', reset_event_types => true);
SELECT state FROM projection.snapshots WHERE name = 'aggsnap_alter' AND stream_id = 'as-1';
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SELECT projection.rebuild('aggsnap_alter') > 0 AS rebuilt;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SELECT projection.drop('aggsnap_alter');

-- an inline snapshot projection: not used
SELECT projection.create_snapshot('aggsnap_inline', 'aggsnap.trace', mode => 'inline');
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SELECT projection.drop('aggsnap_inline');

-- the fold redefined after the states began: not used until a rebuild
SELECT projection.create_snapshot('aggsnap_all', 'aggsnap.trace');
SELECT projection.wait('aggsnap_all', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
CREATE OR REPLACE FUNCTION aggsnap.trace(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_set(state, '{trace}',
                     coalesce(state->'trace', '[]') || to_jsonb(e.stream_version || '/' || e.event_type))
$$;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
-- ALTER FUNCTION changes the definition too
SELECT projection.rebuild('aggsnap_all') > 0 AS rebuilt;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
ALTER FUNCTION aggsnap.trace(jsonb, projection.events) SET work_mem = '2MB';
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
-- inside a rebuild's transaction: its new states
BEGIN;
SELECT projection.rebuild('aggsnap_all') > 0 AS rebuilt;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
ROLLBACK;
-- rolled back: the old definition stays recorded
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SELECT projection.rebuild('aggsnap_all') > 0 AS rebuilt;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');

-- versions not in position order (explicit versions): every event
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('as-order', 2, 'Second', '{}'), ('as-order', 1, 'First', '{}');
SELECT projection.wait('aggsnap_all', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT state FROM projection.snapshots WHERE name = 'aggsnap_all' AND stream_id = 'as-order';
SELECT * FROM aggsnap.check('as-order', 'aggsnap.trace');

-- a skipped event (a dead letter of the stream) is not in the state: every
-- event, so aggregate() fails on it as the full fold does
CREATE FUNCTION aggsnap.picky(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF e.event_type = 'AggsnapPoison' THEN
        RAISE EXCEPTION 'poison at version %', e.stream_version;
    END IF;
    RETURN aggsnap.trace(state, e);
END $$;
SELECT projection.create_snapshot('aggsnap_skip', 'aggsnap.picky', on_error => 'skip');
SELECT projection.append('as-poison', t, '{}') > 0 AS appended FROM unnest('{A,AggsnapPoison,B}'::text[]) t;
SELECT projection.wait('aggsnap_skip', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT stream_id, sqlstate, error FROM projection.dead_letters WHERE name = 'aggsnap_skip';
SELECT state FROM projection.snapshots WHERE name = 'aggsnap_skip' AND stream_id = 'as-poison';
SET client_min_messages = debug1;
SELECT projection.aggregate('as-poison', 'aggsnap.picky');
-- another stream of the same projection, without dead letters: used
SELECT projection.aggregate('as-1', 'aggsnap.picky') = projection.aggregate('as-1', 'aggsnap.trace_full') AS same;
SET client_min_messages = warning;
SELECT projection.drop('aggsnap_skip');
-- a failed projection (on_error stop): its state stops before the poison
-- event, which aggregate() folds and fails on, as the full fold does; after
-- skip() the event is a dead letter: every event
SELECT projection.create_snapshot('aggsnap_stop', 'aggsnap.picky');
DO $$
BEGIN
    PERFORM projection.wait('aggsnap_stop', (SELECT max(global_position) FROM projection.events), '30 s');
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE WARNING 'aggsnap_stop failed';
END $$;
SELECT state, last_error FROM projection.status WHERE name = 'aggsnap_stop';
SELECT state FROM projection.snapshots WHERE name = 'aggsnap_stop' AND stream_id = 'as-poison';
SET client_min_messages = debug1;
SELECT projection.aggregate('as-poison', 'aggsnap.picky');
SET client_min_messages = warning;
SELECT projection.skip('aggsnap_stop') > 0 AS skipped;
SELECT projection.wait('aggsnap_stop', (SELECT max(global_position) FROM projection.events), '30 s');
SELECT state FROM projection.snapshots WHERE name = 'aggsnap_stop' AND stream_id = 'as-poison';
SET client_min_messages = debug1;
SELECT projection.aggregate('as-poison', 'aggsnap.picky');
SET client_min_messages = warning;
SELECT projection.drop('aggsnap_stop');

-- privileges: a role that may read events (not the owner) gets the same, from
-- the state; one that may not is refused, as before
CREATE ROLE regress_aggsnap_reader;
CREATE ROLE regress_aggsnap_nobody;
GRANT USAGE ON SCHEMA projection, aggsnap TO regress_aggsnap_reader, regress_aggsnap_nobody;
GRANT SELECT ON projection.events TO regress_aggsnap_reader;
SET ROLE regress_aggsnap_reader;
SELECT * FROM aggsnap.check('as-1', 'aggsnap.trace');
SET ROLE regress_aggsnap_nobody;
SELECT projection.aggregate('as-1', 'aggsnap.trace');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- row-level security on the events: the state folded rows a reader may not
-- see, so every event (the reader's visible ones)
ALTER TABLE projection.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY aggsnap_some ON projection.events FOR SELECT TO regress_aggsnap_reader
    USING (event_type <> 'A2');
SET ROLE regress_aggsnap_reader;
SET client_min_messages = debug1;
SELECT projection.aggregate('as-1', 'aggsnap.trace');
SET client_min_messages = warning;
RESET ROLE;
DROP POLICY aggsnap_some ON projection.events;
ALTER TABLE projection.events DISABLE ROW LEVEL SECURITY;

SELECT projection.drop('aggsnap_all');
REVOKE ALL ON projection.events FROM regress_aggsnap_reader;
REVOKE ALL ON SCHEMA projection, aggsnap FROM regress_aggsnap_reader, regress_aggsnap_nobody;
DROP ROLE regress_aggsnap_reader, regress_aggsnap_nobody;
DROP SCHEMA aggsnap CASCADE;
