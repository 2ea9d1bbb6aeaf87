--
-- hostile_aggregate_trust: aggregate() starts from a snapshot projection's
-- stored states only while they are what folding every event gives.  Two
-- ways they were not (1.5):
--  1. a fold replaced and then put back (a CREATE OR REPLACE undone): the
--     fold's digest is the one the states started from again, yet the states
--     hold events folded by the other body;
--  2. states written by a direct call of projection._snapshot_apply with
--     made-up events, by any role that may read events and create a snapshot
--     projection over somebody else's fold: every caller of aggregate() with
--     that fold got the forged state.
-- Each aggregate() is compared with the full fold of a VOLATILE twin.
--
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE SCHEMA hat;
CREATE FUNCTION hat.count(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
CREATE FUNCTION hat.count_full(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql VOLATILE AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
GRANT USAGE ON SCHEMA hat TO PUBLIC;
SELECT projection.create_snapshot('hat_counts', 'hat.count');
SELECT max(projection.append('hat-1', 'HatEvent', '{}')) AS p FROM generate_series(1, 3) \gset
SELECT projection.wait('hat_counts', :p, '1 hour');

--
-- 1. the fold replaced (events folded by the new body), then put back
--
CREATE OR REPLACE FUNCTION hat.count(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 100) $$;
SELECT max(projection.append('hat-1', 'HatEvent', '{}')) AS p FROM generate_series(1, 3) \gset
SELECT projection.wait('hat_counts', :p, '1 hour');
SELECT state FROM projection.snapshots WHERE name = 'hat_counts' AND stream_id = 'hat-1';
CREATE OR REPLACE FUNCTION hat.count(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
-- the states mix both bodies: aggregate() folds every event
SELECT projection.aggregate('hat-1', 'hat.count') AS agg,
       projection.aggregate('hat-1', 'hat.count_full') AS full_fold;
-- a rebuild folds every event again with the fold as it is: used again
SELECT projection.rebuild('hat_counts') > 0 AS rebuilt;
SELECT state FROM projection.snapshots WHERE name = 'hat_counts' AND stream_id = 'hat-1';
SELECT projection.aggregate('hat-1', 'hat.count') AS agg,
       projection.aggregate('hat-1', 'hat.count_full') AS full_fold;

--
-- 2. made-up states through a direct call of _snapshot_apply
--
CREATE ROLE regress_hat_mallory;
CREATE ROLE regress_hat_alice;
GRANT SELECT ON projection.events TO regress_hat_mallory, regress_hat_alice;
SET ROLE regress_hat_mallory;
SELECT projection.create_snapshot('hat_evil', 'hat.count');
SELECT projection.wait('hat_evil', :p, '1 hour');
-- an event that does not exist, and one with a real position and version
SELECT projection._snapshot_apply('hat_evil',
    ARRAY[ROW(1000000, 'hat-1', 1000000, 'HatEvent', '{}', '{}', now())::projection.events]);
\echo :LAST_ERROR_SQLSTATE
SELECT projection._snapshot_apply('hat_evil',
    ARRAY[ROW(e.global_position, 'hat-2', 1, 'HatEvent', '{}', '{}', now())::projection.events])
  FROM projection.events e WHERE e.stream_id = 'hat-1' AND e.stream_version = 1;
\echo :LAST_ERROR_SQLSTATE
-- the owner of the projection too: no state but its batch statement's
RESET ROLE;
SELECT projection._snapshot_apply('hat_counts', array_agg(e ORDER BY e.global_position))
  FROM projection.events e WHERE e.stream_id = 'hat-1';
\echo :LAST_ERROR_SQLSTATE
-- from another projection's batch statement
SELECT projection.create('hat_other', NULL, start_from => 'end');
SELECT projection.on_batch('hat_other',
    'SELECT projection._snapshot_apply(''hat_counts'', pg_catalog.array_agg(b::projection.events)) FROM batch b');
SELECT projection.append('hat-3', 'HatEvent', '{}') AS p \gset
SELECT projection.wait('hat_counts', :p, '1 hour');
SELECT projection.wait('hat_evil', :p, '1 hour');
-- wait() fails at once, 55000, once hat_other has failed (its message names positions)
CREATE FUNCTION pg_temp.wait_sqlstate(name text, up_to bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM projection.wait(name, up_to, '1 hour');
    RETURN 'caught up';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SELECT pg_temp.wait_sqlstate('hat_other', :p);
SELECT name, state, last_error FROM projection.status WHERE name = 'hat_other';
SELECT projection.drop('hat_other');
SET ROLE regress_hat_alice;
SELECT projection.aggregate('hat-1', 'hat.count') AS agg,
       projection.aggregate('hat-1', 'hat.count_full') AS full_fold;
SELECT projection.aggregate('hat-2', 'hat.count') AS agg,
       projection.aggregate('hat-2', 'hat.count_full') AS full_fold;
RESET ROLE;
SELECT name, stream_id, state, version FROM projection.snapshots
 WHERE name LIKE 'hat%' AND stream_id LIKE 'hat-%' ORDER BY name COLLATE "C", stream_id COLLATE "C";

SELECT projection.drop('hat_evil');
SELECT projection.drop('hat_counts');
DROP SCHEMA hat CASCADE;
REVOKE SELECT ON projection.events FROM regress_hat_mallory, regress_hat_alice;
DROP ROLE regress_hat_mallory;
DROP ROLE regress_hat_alice;
