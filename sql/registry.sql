--
-- registry: projection.create / on / drop / pause / resume / wait, their
-- argument checks, and projection.status
--
CREATE TABLE registry_counts (event_type text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION registry_count(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.registry_counts AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
-- functions that cannot be handlers
CREATE FUNCTION registry_returns_int(e projection.events) RETURNS integer
LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION registry_takes_jsonb(e jsonb) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION registry_two_args(e projection.events, x integer) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION registry_setof(e projection.events) RETURNS SETOF void
LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE registry_procedure(e projection.events)
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION registry_overloaded(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION registry_overloaded(e integer) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE VIEW registry_view AS SELECT * FROM registry_counts;
CREATE SEQUENCE registry_seq;

-- the event store already holds events from the previous test
SELECT count(*) > 0 AS has_events FROM projection.events;

--
-- create: every bad input is refused with its SQLSTATE and changes nothing
--
-- unknown function (from the regproc input function)
SELECT projection.create('r', 'registry_nosuch', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
-- ambiguous name
SELECT projection.create('r', 'registry_overloaded', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
-- wrong signature
SELECT projection.create('r', 'registry_returns_int', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_takes_jsonb', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_two_args', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_setof', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_procedure', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_overloaded(integer)'::regprocedure, mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
-- unknown mode, start_from, on_error: the hint lists the valid values
SELECT projection.create('r', 'registry_count', mode => 'sync');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'INLINE');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', start_from => 'now');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', on_error => 'retry');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
-- NULL and empty arguments
SELECT projection.create(NULL, 'registry_count', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('', 'registry_count', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', start_from => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', on_error => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
-- event_types: empty, with a NULL or an empty string, two-dimensional
SELECT projection.create('r', 'registry_count', '{}', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', '{A,NULL}', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', '{A,""}', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', '{{A},{B}}', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
-- tables: unknown, not a table, NULL, the extension's own
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{registry_nosuch}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{registry_view}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{registry_counts,registry_seq}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{registry_counts,NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{projection.events}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('r', 'registry_count', mode => 'inline', tables => '{projection.projections}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
SELECT count(*) FROM registry_counts;

--
-- an inline projection, created from the end of the store
--
SELECT projection.create('registry_inline', 'registry_count', '{A,B}', mode => 'inline',
                         tables => '{registry_counts}', start_from => 'end');
-- a duplicate name
SELECT projection.create('registry_inline', 'registry_count', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('registry_inline', 'registry_count', mode => 'async');
\echo :LAST_ERROR_SQLSTATE
SELECT name, mode, state, lag_events, lag_seconds, last_error,
       position = (SELECT max(global_position) FROM projection.events) AS at_end,
       handler, event_types, tables, on_error
  FROM projection.status ORDER BY name COLLATE "C";
SELECT count(*) FROM registry_counts;
SELECT projection.append('reg-1', 'A', '{}') AS pos \gset
SELECT projection.append('reg-1', 'B', '{}') AS pos \gset
SELECT projection.append('reg-1', 'C', '{}') AS pos \gset
SELECT * FROM registry_counts ORDER BY event_type COLLATE "C";
-- an inline projection never lags while it runs
SELECT name, state, position = :pos AS at_last_event, lag_events, lag_seconds
  FROM projection.status WHERE name = 'registry_inline';
-- wait() returns at once for it
SELECT projection.wait('registry_inline', :pos);

-- pause and resume change its state
SELECT projection.pause('registry_inline');
SELECT projection.pause('registry_inline');
SELECT name, state, position = :pos AS paused_at_last_event, lag_events FROM projection.status
 WHERE name = 'registry_inline';
SELECT projection.append('reg-1', 'A', '{}') AS paused_pos \gset
SELECT projection.append('reg-1', 'C', '{}') > 0 AS appended;
-- paused: the events it will process count as lag, and are not applied
SELECT name, state, position = :pos AS paused_at_last_event, lag_events, lag_seconds > 0 AS lagging
  FROM projection.status WHERE name = 'registry_inline';
SELECT * FROM registry_counts ORDER BY event_type COLLATE "C";
-- so waiting for them times out
SELECT projection.wait('registry_inline', :paused_pos, '10 ms');
SELECT projection.resume('registry_inline');
SELECT projection.resume('registry_inline');
SELECT projection.wait('registry_inline', :paused_pos, '10 ms');
SELECT name, state, position > :pos AS moved, lag_events, lag_seconds
  FROM projection.status WHERE name = 'registry_inline';
SELECT * FROM registry_counts ORDER BY event_type COLLATE "C";

--
-- projection.on: statement handlers and their checks
--
CREATE TABLE registry_log (position bigint PRIMARY KEY, event_type text NOT NULL);
SELECT projection.create('registry_statements', NULL, mode => 'inline',
                         tables => '{registry_log}', start_from => 'end');
SELECT projection.on('registry_statements', 'C',
                     'INSERT INTO public.registry_log VALUES (($1).global_position, ($1).event_type)');
-- a syntax error
SELECT projection.on('registry_statements', 'C', 'INSERT INTO public.registry_log VALUES (');
\echo :LAST_ERROR_SQLSTATE
-- not DML
SELECT projection.on('registry_statements', 'C', 'CREATE TABLE registry_x ()');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', 'VACUUM public.registry_log');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', 'NOTIFY registry');
\echo :LAST_ERROR_SQLSTATE
-- two statements, or none
SELECT projection.on('registry_statements', 'C', 'SELECT 1; SELECT 2');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', '-- nothing');
\echo :LAST_ERROR_SQLSTATE
-- an unknown table, a parameter other than $1
SELECT projection.on('registry_statements', 'C', 'DELETE FROM registry_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', 'DELETE FROM public.registry_log WHERE position = $2');
\echo :LAST_ERROR_SQLSTATE
-- NULL and empty arguments, unknown projection
SELECT projection.on(NULL, 'C', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', NULL, 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', '', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_statements', 'C', '');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('registry_nosuch', 'C', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
-- only the first statement was added
SELECT p.name, h.seq, h.event_type, h.statement
  FROM projection.handlers h JOIN projection.projections p ON p.id = h.projection_id
 ORDER BY p.name COLLATE "C", h.seq;
SELECT projection.append('reg-2', 'C', '{}') AS pos \gset
SELECT projection.append('reg-2', 'D', '{}') > 0 AS appended;
SELECT position = :pos AS logged, event_type FROM registry_log;

--
-- missing projections
--
SELECT projection.drop('registry_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.pause('registry_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.resume('registry_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.rebuild('registry_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.wait('registry_nosuch', 1);
\echo :LAST_ERROR_SQLSTATE
-- NULL and empty names, and other bad arguments of wait
SELECT projection.drop(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.pause(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.resume(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.rebuild(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.drop('');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.wait(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.wait('registry_inline', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.wait('registry_inline', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.wait('registry_inline', 1, '-1 s');
\echo :LAST_ERROR_SQLSTATE
SELECT name, state FROM projection.status ORDER BY name COLLATE "C";

--
-- async projections (the background worker runs in this instance, so
-- this file only looks at them while they are paused, or after wait())
--
CREATE TABLE registry_async_counts (event_type text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION registry_async_count(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.registry_async_counts AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
-- no WARNING: the library is preloaded here.  Paused in the creating
-- transaction, the worker never sees it running.
BEGIN;
SELECT projection.create('registry_async', 'registry_async_count', '{A,C}',
                         tables => '{registry_async_counts}');
SELECT projection.pause('registry_async');
COMMIT;
-- from the beginning: its lag counts every event of its types
SELECT name, mode, state, position, last_error,
       lag_events = (SELECT count(*) FROM projection.events
                      WHERE event_type IN ('A', 'C')) AS lag_counts_its_types,
       lag_events > 0 AS lagging, lag_seconds > 0 AS lag_seconds
  FROM projection.status WHERE name = 'registry_async';
SELECT projection.append('reg-3', 'C', '{}') AS pos \gset
-- paused: wait() times out
SELECT projection.wait('registry_async', :pos, '10 ms');
SELECT projection.resume('registry_async');
SELECT projection.wait('registry_async', :pos);
SELECT name, mode, state, position = :pos AS at_last_event, lag_events, lag_seconds, last_error
  FROM projection.status WHERE name = 'registry_async';
SELECT c.event_type, c.n = (SELECT count(*) FROM projection.events e
                             WHERE e.event_type = c.event_type) AS all_applied
  FROM registry_async_counts c ORDER BY c.event_type COLLATE "C";
-- an async projection created from the end sees only new events
BEGIN;
SELECT projection.create('registry_async_end', 'registry_async_count', '{D}',
                         tables => '{registry_async_counts}', start_from => 'end');
SELECT projection.pause('registry_async_end');
COMMIT;
SELECT name, state, position = :pos AS at_end, lag_events, lag_seconds
  FROM projection.status WHERE name = 'registry_async_end';
SELECT projection.append('reg-3', 'D', '{}') AS pos \gset
SELECT name, state, lag_events FROM projection.status WHERE name = 'registry_async_end';
SELECT projection.resume('registry_async_end');
SELECT projection.wait('registry_async_end', :pos);
SELECT * FROM registry_async_counts WHERE event_type = 'D';
-- waiting inside the appending transaction cannot succeed: it warns
BEGIN;
SELECT projection.append('reg-3', 'D', '{}') AS pos \gset
SELECT projection.wait('registry_async_end', :pos, '10 ms');
COMMIT;
SELECT projection.wait('registry_async_end', :pos);
SELECT * FROM registry_async_counts WHERE event_type = 'D';

--
-- async errors: on_error 'stop' fails the projection at the event;
-- 'skip' records a dead letter and goes on
--
CREATE TABLE registry_fail_log (position bigint NOT NULL);
CREATE FUNCTION registry_fail(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'bad' THEN
        RAISE EXCEPTION 'bad event %', e.stream_version USING ERRCODE = 'P0099';
    END IF;
    INSERT INTO public.registry_fail_log VALUES (e.global_position);
END $$;
SELECT projection.create('registry_stop', 'registry_fail', '{F}', tables => '{registry_fail_log}',
                         start_from => 'end');
SELECT projection.create('registry_skip', 'registry_fail', '{F}', tables => '{registry_fail_log}',
                         start_from => 'end', on_error => 'skip');
SELECT projection.append('reg-4', 'F', '{}') AS pos1 \gset
SELECT projection.append('reg-4', 'F', '{"bad": true}') AS pos2 \gset
SELECT projection.append('reg-4', 'F', '{}') AS pos3 \gset
-- skip: it goes on to the end
SELECT projection.wait('registry_skip', :pos3);
SELECT name, global_position = :pos2 AS at_bad_event, event_type, stream_id, sqlstate, error
  FROM projection.dead_letters ORDER BY id;
-- stop: it stays failed at the bad event (wait() ends with an error,
-- 55000, as soon as the worker marks it failed; the manage test shows the
-- message)
\set VERBOSITY sqlstate
SELECT projection.wait('registry_stop', :pos3, '1 min');
\set VERBOSITY default
SELECT name, state, position = :pos1 AS before_bad_event, lag_events, last_error,
       last_error_sqlstate, last_error_position = :pos2 AS at_bad_event
  FROM projection.status WHERE name = 'registry_stop';
-- the skipping projection applied the first and the third event, the
-- stopped one the first
SELECT position - :pos1 AS event, count(*) FROM registry_fail_log GROUP BY 1 ORDER BY 1;
-- fix the handler, resume: it retries from the failing event
CREATE OR REPLACE FUNCTION registry_fail(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO public.registry_fail_log VALUES (e.global_position) $$;
SELECT projection.resume('registry_stop');
SELECT projection.wait('registry_stop', :pos3);
SELECT name, state, position = :pos3 AS at_last_event, lag_events, last_error, last_error_sqlstate,
       last_error_position
  FROM projection.status WHERE name = 'registry_stop';
SELECT position - :pos1 AS event, count(*) FROM registry_fail_log GROUP BY 1 ORDER BY 1;

--
-- drop
--
SELECT projection.drop('registry_skip');
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'registry_skip';
SELECT projection.drop('registry_statements');
SELECT count(*) AS statements FROM projection.handlers;
-- the read model is kept
SELECT count(*) FROM registry_log;
-- a dropped inline projection no longer applies events
SELECT projection.append('reg-2', 'C', '{}') > 0 AS appended;
SELECT count(*) FROM registry_log;
-- create, then roll back: nothing is left
BEGIN;
SELECT projection.create('registry_rolled_back', 'registry_count', mode => 'inline',
                         start_from => 'end');
ROLLBACK;
SELECT name, mode, state FROM projection.status ORDER BY name COLLATE "C";
-- rows made by create() carry no restoring session; a row inserted directly
-- (what a restore does) is marked with the inserting session, and the
-- worker leaves that projection alone while the session lives
SELECT count(*) AS marked FROM projection.projections WHERE restored_pid IS NOT NULL;
INSERT INTO projection.projections (name, mode, owner, search_path)
VALUES ('registry_restored', 'async', current_user::regrole, 'public');
SELECT restored_pid = pg_backend_pid() AS by_this_session,
       restored_at = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS started_then
  FROM projection.projections WHERE name = 'registry_restored';
DELETE FROM projection.projections WHERE name = 'registry_restored';
-- a transaction that changed the registry cannot be prepared (sessions
-- could not tell when the change becomes visible); nothing is changed
BEGIN;
SELECT projection.pause('registry_async');
PREPARE TRANSACTION 'regress_projection_registry';
\echo :LAST_ERROR_SQLSTATE
SELECT state FROM projection.status WHERE name = 'registry_async';
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'regress_projection_registry';
SELECT projection.drop('registry_async');
SELECT projection.drop('registry_async_end');
SELECT projection.drop('registry_stop');
SELECT projection.drop('registry_inline');
SELECT projection.drop('registry_inline');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS projections FROM projection.projections;
