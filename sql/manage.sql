--
-- manage: what management calls promise beyond the happy path
--   create(start_from => 'beginning') over tables that hold rows
--   rebuild() of an on_error => 'skip' projection
--   wait() on a projection that cannot move
--   projection.status: last_error masking, bounded lag, a plan without JIT
--
-- event positions depend on the tests before: no CONTEXT lines (they name them)
\set SHOW_CONTEXT never
CREATE SCHEMA mg;
CREATE TABLE mg.counts (stream_id text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION mg.count(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (e.data->>'poison')::boolean THEN
        RAISE EXCEPTION 'cannot count card %', e.data->>'card' USING ERRCODE = '22023';
    END IF;
    INSERT INTO mg.counts VALUES (e.stream_id, 1)
        ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1;
END $$;

SELECT projection.append('mg-1', 'MgCounted', '{}') AS p1 \gset
SELECT projection.append('mg-1', 'MgCounted', '{}') AS p2 \gset

-- ---------------------------------------------------------------------
-- create from the beginning over a table that holds rows
-- ---------------------------------------------------------------------
INSERT INTO mg.counts VALUES ('mg-1', 7);
SELECT projection.create('mg_inline', 'mg.count', '{MgCounted}', mode => 'inline', tables => '{mg.counts}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('mg_async', 'mg.count', '{MgCounted}', tables => '{mg.counts}');
\echo :LAST_ERROR_SQLSTATE
-- nothing changed
SELECT count(*) FROM projection.projections WHERE name LIKE 'mg_%';
SELECT * FROM mg.counts ORDER BY 1;
SELECT projection.create('mg_inline', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', if_not_empty => 'sometimes');
\echo :LAST_ERROR_SQLSTATE
-- 'empty' empties them first (as rebuild does): no double count
SELECT projection.create('mg_inline', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', if_not_empty => 'empty');
SELECT * FROM mg.counts ORDER BY 1;
SELECT projection.drop('mg_inline');
-- 'keep' keeps the rows, as the user asked
SELECT projection.create('mg_inline', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', if_not_empty => 'keep');
SELECT * FROM mg.counts ORDER BY 1;
SELECT projection.drop('mg_inline');
-- start_from => 'end' applies no existing event: no check
SELECT projection.create('mg_inline', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', start_from => 'end');
SELECT projection.drop('mg_inline');

-- ---------------------------------------------------------------------
-- rebuild honours on_error => 'skip'
-- ---------------------------------------------------------------------
TRUNCATE mg.counts;
SELECT projection.create('mg_skip', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', on_error => 'skip');
SELECT projection.append('mg-2', 'MgCounted', '{}') AS p3 \gset
-- an inline handler error aborts the append (on_error is for replays)
SELECT projection.append('mg-2', 'MgCounted', '{"poison": true, "card": "4111-SECRET"}');
\echo :LAST_ERROR_SQLSTATE
-- a poison event that got in while the projection was paused
SELECT projection.pause('mg_skip');
SELECT projection.append('mg-2', 'MgCounted', '{"poison": true, "card": "4111-SECRET"}') AS poison \gset
SELECT projection.append('mg-2', 'MgCounted', '{}') AS p5 \gset
-- resume catches up, skipping (and recording) the poison event
SELECT projection.resume('mg_skip');
SELECT * FROM mg.counts ORDER BY 1;
SELECT global_position = :poison AS poison_event, sqlstate, error
  FROM projection.dead_letters WHERE name = 'mg_skip';
-- a rebuild replays everything: the same event is skipped again, and the
-- dead letters are those of this replay (one, not two)
SELECT projection.rebuild('mg_skip');
SELECT * FROM mg.counts ORDER BY 1;
SELECT global_position = :poison AS poison_event, sqlstate, error
  FROM projection.dead_letters WHERE name = 'mg_skip';
-- a stop projection still refuses: the rebuild fails and changes nothing
SELECT projection.create('mg_stop', 'mg.count', '{MgCounted}', mode => 'inline',
                         tables => '{mg.counts}', if_not_empty => 'keep', start_from => 'end');
SELECT projection.drop('mg_skip');
SELECT projection.rebuild('mg_stop');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mg.counts ORDER BY 1;
SELECT projection.drop('mg_stop');

-- ---------------------------------------------------------------------
-- wait() on a projection that cannot move is an error at once
-- ---------------------------------------------------------------------
TRUNCATE mg.counts;
CREATE TABLE mg.fails (pos bigint);
CREATE FUNCTION mg.fail(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cannot count card %', e.data->>'card' USING ERRCODE = '22023';
END $$;
SELECT projection.create('mg_fails', 'mg.fail', '{MgFails}', tables => '{mg.fails}', start_from => 'end');
-- wait()'s error, with positions (which depend on the tests before) as N
CREATE FUNCTION mg.try_wait(up_to bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    PERFORM projection.wait('mg_fails', up_to, '1 hour');
    RETURN 'true';
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9]+', 'N', 'g')
        || coalesce(' / ' || nullif(detail, ''), '');
END $$;
SELECT projection.append('mg-3', 'MgFails', '{"card": "4111-SECRET"}') AS failing \gset
-- the wait ends with an error as soon as the worker fails the projection
-- (not after the hour)
\set VERBOSITY sqlstate
SELECT projection.wait('mg_fails', :failing, '1 hour');
\set VERBOSITY default
SELECT state, last_error FROM projection.status WHERE name = 'mg_fails';
-- once failed, at once, with the reason
SELECT mg.try_wait(:failing);
-- up to a position it has reached: true
SELECT projection.wait('mg_fails', :failing - 1, '1 hour');

-- ---------------------------------------------------------------------
-- last_error shows only to the owner and to readers of the events
-- ---------------------------------------------------------------------
CREATE ROLE regress_mg_nobody;
CREATE ROLE regress_mg_reader;
GRANT USAGE ON SCHEMA mg TO regress_mg_nobody;
GRANT SELECT ON projection.events TO regress_mg_reader;
SET ROLE regress_mg_nobody;
SELECT name, state, last_error, last_error_sqlstate FROM projection.status WHERE name = 'mg_fails';
SELECT name, last_error FROM projection._status() WHERE name = 'mg_fails';
-- nor through wait()'s error
SELECT mg.try_wait(:failing);
RESET ROLE;
SET ROLE regress_mg_reader;
SELECT name, state, last_error FROM projection.status WHERE name = 'mg_fails';
RESET ROLE;
SELECT projection.drop('mg_fails');
REVOKE SELECT ON projection.events FROM regress_mg_reader;
REVOKE USAGE ON SCHEMA mg FROM regress_mg_nobody;
DROP ROLE regress_mg_nobody, regress_mg_reader;

-- ---------------------------------------------------------------------
-- status: lag counted within a bounded window, and a plan without JIT
-- ---------------------------------------------------------------------
CREATE TABLE mg.sink (pos bigint);
CREATE FUNCTION mg.sink(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO mg.sink VALUES (e.global_position) $$;
SELECT projection.create('mg_lag', 'mg.sink', '{MgLag}', tables => '{mg.sink}', start_from => 'end');
SELECT projection.pause('mg_lag');
-- 3 of its events among others: an exact lag
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'mg-lag-' || i, 1, CASE WHEN i % 10 = 0 THEN 'MgLag' ELSE 'MgOther' END, '{}'
  FROM generate_series(1, 30) i;
SELECT lag_events, lag_exact, lag_seconds >= 0 AS lag_seconds_ok FROM projection.status WHERE name = 'mg_lag';
-- 1,000 of its events in 10,000: an estimate from the window after the
-- checkpoint, flagged as such
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'mg-lag-' || i, 2, CASE WHEN i % 10 = 0 THEN 'MgLag' ELSE 'MgOther' END, '{}'
  FROM generate_series(1, 10000) i;
SELECT lag_events BETWEEN 500 AND 2000 AS lag_estimated, lag_exact FROM projection.status WHERE name = 'mg_lag';
-- thousands of projections: the view's plan is one function scan, costed
-- far below jit_above_cost, whatever the size of the registry and store
SELECT count(*) FROM (
    SELECT projection.create('mg_many_' || i, 'mg.sink', '{MgNone}', tables => '{mg.sink}', start_from => 'end')
      FROM generate_series(1, 2000) i) c;
ANALYZE projection.events;
ANALYZE projection.projections;
SELECT count(*) FILTER (WHERE name LIKE 'mg_many_%') AS many,
       count(*) FILTER (WHERE name LIKE 'mg_many_%' AND lag_events = 0) AS caught_up
  FROM projection.status;
CREATE FUNCTION mg.plan(q text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    p jsonb;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO p;
    RETURN p;
END $$;
SELECT (p->0->'Plan'->>'Total Cost')::float8 < current_setting('jit_above_cost')::float8 AS below_jit,
       p->0->'Plan'->>'Node Type' AS node,
       p::text NOT LIKE '%"events"%' AS no_scan_of_events
  FROM mg.plan('SELECT * FROM projection.status') p;
SELECT count(*) FROM (SELECT projection.drop(name) FROM projection.status WHERE name LIKE 'mg_%') d;
DROP SCHEMA mg CASCADE;
