--
-- retry_dead_letters() of a snapshot projection: a dead letter whose stream
-- has had later events folded in since cannot be folded any more (its state
-- is past it).  It must stay a dead letter, counted as failed, and not be
-- reported applied and removed while the state lacks it.  A dead letter
-- whose stream has nothing later is folded in and removed.
--
\set SHOW_CONTEXT never
CREATE ROLE regress_hsr_owner NOLOGIN;
CREATE SCHEMA hsr AUTHORIZATION regress_hsr_owner;
GRANT SELECT ON projection.events TO regress_hsr_owner;
SET ROLE regress_hsr_owner;
CREATE TABLE hsr.broken (stream_id text PRIMARY KEY);
-- counts the events; raises (division by zero) for a stream in hsr.broken
CREATE FUNCTION hsr.fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0)
             + 1 / (SELECT 1 - count(*)::int FROM hsr.broken b WHERE b.stream_id = e.stream_id)) $$;
SELECT projection.create_snapshot('hsr_counts', 'hsr.fold', event_types => '{HsrEvent}',
                                  on_error => 'skip');
INSERT INTO hsr.broken VALUES ('hsr-1'), ('hsr-2');
RESET ROLE;
SELECT projection.append('hsr-1', 'HsrEvent', '{}') AS p1 \gset
SELECT projection.append('hsr-2', 'HsrEvent', '{}') AS p2 \gset
SELECT projection.wait('hsr_counts', :p2, '1 hour');
SELECT stream_id, sqlstate FROM projection.dead_letters WHERE name = 'hsr_counts' ORDER BY 1;
SET ROLE regress_hsr_owner;
-- hsr-1 is fixed and gets a later event, folded by the worker; hsr-2 is fixed
DELETE FROM hsr.broken;
RESET ROLE;
SELECT projection.append('hsr-1', 'HsrEvent', '{}') AS p3 \gset
SELECT projection.wait('hsr_counts', :p3, '1 hour');
SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'hsr_counts' ORDER BY 1;
SET ROLE regress_hsr_owner;
-- hsr-2's event is folded in; hsr-1's cannot be any more: it stays
SELECT * FROM projection.retry_dead_letters('hsr_counts');
RESET ROLE;
SELECT stream_id, sqlstate, replace(error, :'p1', 'P1') AS error
  FROM projection.dead_letters WHERE name = 'hsr_counts' ORDER BY 1;
SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'hsr_counts' ORDER BY 1;
-- the rebuild the error's hint names folds every event in order
SET ROLE regress_hsr_owner;
SELECT projection.rebuild('hsr_counts');
RESET ROLE;
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'hsr_counts';
SELECT stream_id, state, version FROM projection.snapshots WHERE name = 'hsr_counts' ORDER BY 1;

SELECT projection.drop('hsr_counts');
DROP SCHEMA hsr CASCADE;
REVOKE SELECT ON projection.events FROM regress_hsr_owner;
DROP ROLE regress_hsr_owner;
