--
-- snapshot: per-stream snapshot projections (create_snapshot, snapshot(),
-- the projection.snapshots view), their errors and who may read them
--
CREATE ROLE regress_snap_owner NOLOGIN;
CREATE ROLE regress_snap_reader NOLOGIN;
CREATE ROLE regress_snap_other NOLOGIN;
GRANT SELECT, INSERT, TRIGGER ON projection.events TO regress_snap_owner;
GRANT SELECT ON projection.events TO regress_snap_reader;
CREATE SCHEMA regress_snap AUTHORIZATION regress_snap_owner;
GRANT USAGE ON SCHEMA regress_snap TO PUBLIC;

SET ROLE regress_snap_owner;
-- a cart: opened, items added and removed, checked out
CREATE FUNCTION regress_snap.cart_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE e.event_type
           WHEN 'SnapOpened' THEN jsonb_build_object('status', 'open', 'items', 0, 'total', 0)
           WHEN 'SnapAdded' THEN state || jsonb_build_object(
                'items', (state->>'items')::int + 1,
                'total', (state->>'total')::numeric + (e.data->>'price')::numeric)
           WHEN 'SnapRemoved' THEN state || jsonb_build_object(
                'items', (state->>'items')::int - 1,
                'total', (state->>'total')::numeric - (e.data->>'price')::numeric)
           WHEN 'SnapClosed' THEN state || '{"status": "closed"}'
           ELSE state END
           || jsonb_build_object('v', e.stream_version)
$$;
-- wrong shapes
CREATE FUNCTION regress_snap.int_fold(state int, e projection.events) RETURNS int
LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION regress_snap.text_fold(state jsonb, e projection.events) RETURNS text
LANGUAGE sql AS $$ SELECT '' $$;
CREATE FUNCTION regress_snap.handler(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
-- a fold that fails on a poison event
CREATE FUNCTION regress_snap.picky_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'poison' THEN
        RAISE EXCEPTION 'poison event %', e.stream_version;
    END IF;
    RETURN state || jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1);
END $$;
RESET ROLE;

-- events before the projections exist
SELECT projection.append('snap-1', 'SnapOpened', '{}') > 0 AS appended;
SELECT projection.append('snap-1', 'SnapAdded', '{"price": 10}') > 0 AS appended;
SELECT projection.append('snap-2', 'SnapOpened', '{}') > 0 AS appended;
SELECT projection.append('snap-1', 'SnapAdded', '{"price": 5}') > 0 AS appended;

--
-- errors: each changes nothing
--
SET ROLE regress_snap_owner;
SELECT count(*) AS projections FROM projection.status;
-- a function that does not exist (regproc's own error)
SELECT projection.create_snapshot('snap_bad', 'regress_snap.nosuch');
\echo :LAST_ERROR_SQLSTATE
-- wrong signatures
SELECT projection.create_snapshot('snap_bad', 'regress_snap.int_fold');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.text_fold');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.handler');
\echo :LAST_ERROR_SQLSTATE
-- NULL and empty arguments, bad mode and on_error, bad event types
SELECT projection.create_snapshot(NULL, 'regress_snap.cart_fold');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('', 'regress_snap.cart_fold');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold', initial => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold', mode => 'sometimes');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold', on_error => 'ignore');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold', event_types => '{""}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS projections FROM projection.status;
RESET ROLE;

-- a fold the creator may not execute
REVOKE EXECUTE ON FUNCTION regress_snap.cart_fold(jsonb, projection.events) FROM PUBLIC;
SET ROLE regress_snap_reader;
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION regress_snap.cart_fold(jsonb, projection.events) TO PUBLIC;
-- a creator who may not read the events
SET ROLE regress_snap_other;
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold');
\echo :LAST_ERROR_SQLSTATE
-- an inline one needs TRIGGER too
RESET ROLE;
SET ROLE regress_snap_reader;
SELECT projection.create_snapshot('snap_bad', 'regress_snap.cart_fold', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a temporary fold
CREATE FUNCTION pg_temp.temp_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state $$;
SELECT projection.create_snapshot('snap_bad', 'pg_temp.temp_fold');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS projections FROM projection.status;

--
-- an inline snapshot projection: the existing events are folded in at once
--
SET ROLE regress_snap_owner;
SELECT projection.create_snapshot('snap_cart', 'regress_snap.cart_fold',
                                  event_types => '{SnapOpened,SnapAdded,SnapRemoved,SnapClosed}',
                                  mode => 'inline');
SELECT name, stream_id, state, version, global_position > 0 AS has_position
  FROM projection.snapshots WHERE name = 'snap_cart' ORDER BY stream_id COLLATE "C";
-- a duplicate name
SELECT projection.create_snapshot('snap_cart', 'regress_snap.cart_fold');
\echo :LAST_ERROR_SQLSTATE
-- appends fold in, in the appending transaction; other types are not folded
SELECT projection.append('snap-2', 'SnapAdded', '{"price": 7}') > 0 AS appended;
SELECT projection.append('snap-2', 'SnapIgnored', '{}') > 0 AS appended;
SELECT projection.append('snap-1', 'SnapRemoved', '{"price": 5}') > 0 AS appended;
-- a multi-row INSERT: one batch, two streams, several events of one stream
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('snap-3', 1, 'SnapOpened', '{}'),
    ('snap-3', 2, 'SnapAdded', '{"price": 1}'),
    ('snap-1', 5, 'SnapClosed', '{}'),
    ('snap-3', 3, 'SnapAdded', '{"price": 2}');
SELECT stream_id, state, version FROM projection.snapshots
 WHERE name = 'snap_cart' ORDER BY stream_id COLLATE "C";
-- snapshot() is the stored state here (nothing is pending); it equals aggregate()
-- of the projection's event types
SELECT s.stream_id, projection.snapshot('snap_cart', s.stream_id) = s.state AS same_as_stored,
       projection.snapshot('snap_cart', s.stream_id) = projection.aggregate(s.stream_id, 'regress_snap.cart_fold') AS same_as_aggregate
  FROM projection.snapshots s WHERE s.name = 'snap_cart' ORDER BY s.stream_id COLLATE "C";
-- (snap-2 has an event of another type: aggregate folds it, the snapshot does not)
SELECT projection.snapshot('snap_cart', 'snap-2'), projection.aggregate('snap-2', 'regress_snap.cart_fold');
-- a stream without events gets the initial state
SELECT projection.snapshot('snap_cart', 'snap-nosuch');
-- an event the projection rejects aborts the append (inline), and nothing changes
-- (its context names the event's position, which depends on the tests before)
\set SHOW_CONTEXT never
SELECT projection.append('snap-3', 'SnapAdded', '{"price": "lots"}');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors
SELECT state FROM projection.snapshots WHERE name = 'snap_cart' AND stream_id = 'snap-3';
-- a rolled-back append leaves the state as it was
BEGIN;
SELECT projection.append('snap-3', 'SnapClosed', '{}') > 0 AS appended;
SELECT state->>'status' AS status_inside FROM projection.snapshots WHERE name = 'snap_cart' AND stream_id = 'snap-3';
ROLLBACK;
SELECT state->>'status' AS status_after FROM projection.snapshots WHERE name = 'snap_cart' AND stream_id = 'snap-3';

--
-- _snapshot_apply: only the projection's batch statement writes its states,
-- even its owner's direct call is refused (aggregate() starts from them)
--
SELECT projection._snapshot_apply('snap_cart', array_agg(e ORDER BY e.global_position))
  FROM projection.events e
 WHERE e.event_type IN ('SnapOpened', 'SnapAdded', 'SnapRemoved', 'SnapClosed');
\echo :LAST_ERROR_SQLSTATE
SELECT stream_id, state, version FROM projection.snapshots
 WHERE name = 'snap_cart' ORDER BY stream_id COLLATE "C";
SELECT projection._snapshot_apply('snap_cart', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- only the owner may call it, for a snapshot projection that exists
SET ROLE regress_snap_reader;
SELECT projection._snapshot_apply('snap_cart', array_agg(e)) FROM projection.events e;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT projection._snapshot_apply('snap_nosuch', '{}');
\echo :LAST_ERROR_SQLSTATE

--
-- rebuild empties the states and folds every event again
--
CREATE TEMP TABLE snap_before AS
    SELECT stream_id, state, version, global_position FROM projection.snapshots WHERE name = 'snap_cart';
SET ROLE regress_snap_owner;
SELECT projection.rebuild('snap_cart') > 0 AS rebuilt;
RESET ROLE;
SELECT NOT EXISTS ((TABLE snap_before EXCEPT ALL
                    SELECT stream_id, state, version, global_position FROM projection.snapshots WHERE name = 'snap_cart')
                   UNION ALL
                   (SELECT stream_id, state, version, global_position FROM projection.snapshots WHERE name = 'snap_cart'
                    EXCEPT ALL TABLE snap_before)) AS identical;

--
-- an async snapshot projection: snapshot() is fresh while the worker is paused
--
SET ROLE regress_snap_owner;
SELECT projection.create_snapshot('snap_async', 'regress_snap.cart_fold',
                                  initial => '{"status": "none"}',
                                  event_types => '{SnapOpened,SnapAdded,SnapRemoved,SnapClosed}');
SELECT max(global_position) AS last FROM projection.events \gset
SELECT projection.wait('snap_async', :last, '30 s') AS caught_up;
SELECT stream_id, state = projection.snapshot('snap_cart', stream_id) AS same_as_inline
  FROM projection.snapshots WHERE name = 'snap_async' ORDER BY stream_id COLLATE "C";
SELECT projection.pause('snap_async');
SELECT projection.append('snap-2', 'SnapClosed', '{}') > 0 AS appended;
SELECT projection.append('snap-4', 'SnapOpened', '{}') > 0 AS appended;
-- the stored state lags; snapshot() does not
SELECT state->>'status' AS stored FROM projection.snapshots WHERE name = 'snap_async' AND stream_id = 'snap-2';
SELECT projection.snapshot('snap_async', 'snap-2')->>'status' AS fresh,
       projection.snapshot('snap_async', 'snap-4') AS new_stream,
       (SELECT count(*) FROM projection.snapshots WHERE name = 'snap_async' AND stream_id = 'snap-4') AS stored_rows;
SELECT projection.resume('snap_async');
SELECT max(global_position) AS last FROM projection.events \gset
SELECT projection.wait('snap_async', :last, '30 s') AS caught_up;
SELECT stream_id, state = projection.snapshot('snap_async', stream_id) AS fresh_equals_stored
  FROM projection.snapshots WHERE name = 'snap_async' ORDER BY stream_id COLLATE "C";
RESET ROLE;

--
-- on_error => 'skip': the poison event is a dead letter, and snapshot()
-- leaves it out as the projection did
--
SET ROLE regress_snap_owner;
SELECT projection.create_snapshot('snap_picky', 'regress_snap.picky_fold',
                                  event_types => '{SnapPicky}', on_error => 'skip');
RESET ROLE;
SELECT projection.append('snap-5', 'SnapPicky', '{}') > 0 AS appended;
SELECT projection.append('snap-5', 'SnapPicky', '{"poison": true}') > 0 AS appended;
SELECT projection.append('snap-5', 'SnapPicky', '{}') AS last \gset
SELECT projection.wait('snap_picky', :last, '30 s') AS caught_up;
SELECT state, version FROM projection.snapshots WHERE name = 'snap_picky';
SELECT name, error FROM projection.dead_letters WHERE name = 'snap_picky';
SELECT projection.snapshot('snap_picky', 'snap-5');

--
-- who may read the states
--
SET ROLE regress_snap_other;
SELECT count(*) AS visible_rows FROM projection.snapshots;
SELECT projection.snapshot('snap_cart', 'snap-1');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.snapshot_states;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.snapshot_defs;
\echo :LAST_ERROR_SQLSTATE
-- a leaky function in the query sees no hidden row (security_barrier)
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$;
SELECT count(*) FROM projection.snapshots WHERE pg_temp.leak(state::text);
DROP FUNCTION pg_temp.leak(text);
RESET ROLE;
SET ROLE regress_snap_reader;
SELECT count(*) > 0 AS visible_rows FROM projection.snapshots WHERE name = 'snap_cart';
SELECT projection.snapshot('snap_cart', 'snap-1')->>'status' AS status;
RESET ROLE;

--
-- snapshot(): unknown projection, not a snapshot projection, NULLs
--
SELECT projection.snapshot('snap_nosuch', 'snap-1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('snap_plain', NULL, mode => 'async', start_from => 'end');
SELECT projection.snapshot('snap_plain', 'snap-1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection._snapshot_apply('snap_plain', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.drop('snap_plain');
SELECT projection.snapshot(NULL, 'snap-1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.snapshot('snap_cart', NULL);
\echo :LAST_ERROR_SQLSTATE

--
-- dependencies: the fold cannot be dropped while a projection uses it;
-- drop() removes the states
--
DROP FUNCTION regress_snap.cart_fold(jsonb, projection.events);
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_snap_other;
SELECT projection.drop('snap_cart');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_snap_owner;
SELECT projection.drop('snap_cart');
SELECT projection.drop('snap_async');
SELECT projection.drop('snap_picky');
RESET ROLE;
SELECT count(*) AS states FROM projection.snapshot_states;
SELECT count(*) AS defs FROM projection.snapshot_defs;
DROP FUNCTION regress_snap.cart_fold(jsonb, projection.events);

DROP SCHEMA regress_snap CASCADE;
REVOKE ALL ON projection.events FROM regress_snap_owner, regress_snap_reader;
DROP ROLE regress_snap_owner, regress_snap_reader, regress_snap_other;
