--
-- privileges: what creating a projection and aggregating need, the
-- dependencies of projections on their handler, tables and owner, and
-- attempts by a low-privilege role to run code with another role's rights
--
-- regress_priv_owner creates projections; regress_priv_evil may only append
-- (INSERT on projection.events) and owns a schema of its own.
CREATE ROLE regress_priv_owner;
CREATE ROLE regress_priv_evil;
CREATE ROLE regress_priv_heir;
CREATE SCHEMA regress_priv AUTHORIZATION regress_priv_owner;
CREATE SCHEMA regress_priv_evil AUTHORIZATION regress_priv_evil;
GRANT USAGE ON SCHEMA regress_priv TO regress_priv_evil;
GRANT INSERT ON projection.events TO regress_priv_evil;

SET ROLE regress_priv_owner;
CREATE TABLE regress_priv.log (pos bigint PRIMARY KEY, who name NOT NULL);
CREATE TABLE regress_priv.alog (pos bigint PRIMARY KEY, who name NOT NULL);
CREATE FUNCTION regress_priv.h(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO regress_priv.log VALUES (e.global_position, current_user) $$;
CREATE FUNCTION regress_priv.ah(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO regress_priv.alog VALUES (e.global_position, current_user) $$;
CREATE FUNCTION regress_priv.fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('n', COALESCE((s->>'n')::int, 0) + 1) $$;

--
-- reading events needs SELECT on projection.events: without it, no
-- projection of any mode and no aggregate
--
SELECT projection.create('priv_async', 'regress_priv.ah', tables => '{regress_priv.alog}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('priv_inline', 'regress_priv.h', mode => 'inline',
                         tables => '{regress_priv.log}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('priv_statements', NULL, mode => 'inline', start_from => 'end');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('priv-1', 'regress_priv.fold');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS projections FROM projection.status WHERE name LIKE 'priv%';

-- SELECT is enough for an async projection and aggregate, not for inline
GRANT SELECT ON projection.events TO regress_priv_owner;
SET ROLE regress_priv_owner;
SELECT projection.create('priv_async', 'regress_priv.ah', tables => '{regress_priv.alog}',
                         start_from => 'end');
SELECT projection.create('priv_inline', 'regress_priv.h', mode => 'inline',
                         tables => '{regress_priv.log}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('priv-1', 'regress_priv.fold');
RESET ROLE;

-- inline projections need TRIGGER too (their code runs in every appender's
-- transaction, as a trigger's would)
GRANT TRIGGER ON projection.events TO regress_priv_owner;
SET ROLE regress_priv_owner;
SELECT projection.create('priv_inline', 'regress_priv.h', mode => 'inline',
                         tables => '{regress_priv.log}', start_from => 'end');
-- a temporary function cannot be a handler (it would vanish with the session)
CREATE FUNCTION pg_temp.temp_handler(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
SELECT projection.create('priv_temp', 'pg_temp.temp_handler', mode => 'inline', start_from => 'end');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT name, mode, owner FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";

--
-- dependencies: the handler, the tables and the owner cannot be dropped
-- from under a projection
--
DROP FUNCTION regress_priv.h(projection.events);
\echo :LAST_ERROR_SQLSTATE
DROP TABLE regress_priv.log;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE regress_priv.log, regress_priv.alog;
\echo :LAST_ERROR_SQLSTATE
DROP ROLE regress_priv_owner;
\echo :LAST_ERROR_SQLSTATE
-- nothing changed, and appends work, for everyone
SELECT name, owner FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";
SET ROLE regress_priv_evil;
SELECT projection.append('priv-1', 'Any', '{}') AS pos \gset
RESET ROLE;
SELECT pos = :pos AS applied, who FROM regress_priv.log;
-- the owner is recorded as PostgreSQL records the owner of any object
SELECT count(*) AS owner_entries FROM pg_shdepend
 WHERE classid = 'projection.projections'::regclass AND deptype = 'o'
   AND refobjid = 'regress_priv_owner'::regrole
   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database());

-- CASCADE drops the projections that depend on the object, as it drops views
BEGIN;
DROP TABLE regress_priv.log CASCADE;
SELECT name FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";
ROLLBACK;
BEGIN;
DROP FUNCTION regress_priv.h(projection.events) CASCADE;
SELECT name FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";
-- appends do not meet a dangling handler
SELECT projection.append('priv-1', 'Any', '{}') > 0 AS appended;
ROLLBACK;
BEGIN;
DROP SCHEMA regress_priv CASCADE;
SELECT name FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";
ROLLBACK;
SELECT name FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";

-- REASSIGN OWNED gives the projections to the new role
BEGIN;
REASSIGN OWNED BY regress_priv_owner TO regress_priv_heir;
SELECT name, owner FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";
SELECT refobjid::regrole, count(*) FROM pg_shdepend
 WHERE classid = 'projection.projections'::regclass GROUP BY 1;
SELECT projection.append('priv-1', 'Any', '{}') AS pos \gset
SELECT who FROM regress_priv.log WHERE pos = :pos;
ROLLBACK;

-- DROP OWNED drops them, and then the role can go
BEGIN;
DROP OWNED BY regress_priv_owner;
SELECT count(*) AS projections FROM projection.status WHERE name LIKE 'priv%';
DROP ROLE regress_priv_owner;
SELECT count(*) AS owner_entries FROM pg_shdepend
 WHERE classid = 'projection.projections'::regclass;
ROLLBACK;

-- a role that may not run these commands gets PostgreSQL's own error, and
-- nothing happens to the projections (terse: 16 and later add a DETAIL to
-- these three errors)
SET ROLE regress_priv_evil;
\set VERBOSITY terse
DROP ROLE regress_priv_owner;
\echo :LAST_ERROR_SQLSTATE
DROP OWNED BY regress_priv_owner;
\echo :LAST_ERROR_SQLSTATE
REASSIGN OWNED BY regress_priv_owner TO regress_priv_evil;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
DROP FUNCTION regress_priv.h(projection.events) CASCADE;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT name, owner FROM projection.status WHERE name LIKE 'priv%' ORDER BY name COLLATE "C";

--
-- hijack attempts by regress_priv_evil
--
-- internal functions cannot be called, nor attached as triggers
SET ROLE regress_priv_evil;
SELECT projection._notify_launcher();
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE regress_priv_evil.t (n integer);
CREATE TRIGGER evil AFTER INSERT ON regress_priv_evil.t
    FOR EACH ROW EXECUTE FUNCTION projection._registry_owner();
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER evil BEFORE INSERT ON regress_priv_evil.t
    FOR EACH ROW EXECUTE FUNCTION projection._position();
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER evil AFTER INSERT ON regress_priv_evil.t
    REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION projection._inline();
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER evil AFTER INSERT ON regress_priv_evil.t
    FOR EACH STATEMENT EXECUTE FUNCTION projection._registry_changed();
\echo :LAST_ERROR_SQLSTATE
-- creating a projection needs SELECT, which it does not have
CREATE FUNCTION regress_priv_evil.copy(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO regress_priv_evil.t VALUES (e.global_position) $$;
SELECT projection.create('priv_evil', 'regress_priv_evil.copy', tables => '{regress_priv_evil.t}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- functions and operators shadowing what a handler calls, in a schema on the
-- appender's search_path, are not used: the handler resolves names with the
-- search_path fixed at create, and runs as its owner
CREATE TABLE regress_priv_evil.calls (who name);
GRANT INSERT ON regress_priv_evil.calls TO PUBLIC;
SET ROLE regress_priv_owner;
SET search_path = regress_priv;
CREATE TABLE regress_priv.shadow (pos bigint, lowered text, same boolean);
CREATE FUNCTION regress_priv.shadowed(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO shadow VALUES (e.global_position, lower(e.event_type::varchar),
                               e.event_type::varchar = 'Shadow'::varchar)
$$;
SELECT projection.create('priv_shadow', 'shadowed', '{Shadow}', mode => 'inline',
                         tables => '{shadow}', start_from => 'end');
RESET search_path;
RESET ROLE;
SET ROLE regress_priv_evil;
CREATE FUNCTION regress_priv_evil.lower(varchar) RETURNS text
LANGUAGE sql AS $$ INSERT INTO regress_priv_evil.calls VALUES (current_user) RETURNING 'hijacked'::text $$;
CREATE FUNCTION regress_priv_evil.eq(varchar, varchar) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO regress_priv_evil.calls VALUES (current_user) RETURNING false $$;
CREATE OPERATOR regress_priv_evil.= (LEFTARG = varchar, RIGHTARG = varchar,
                                     FUNCTION = regress_priv_evil.eq);
CREATE TABLE regress_priv_evil.shadow (pos bigint, lowered text, same boolean);
SET search_path = regress_priv_evil, pg_catalog, regress_priv;
SELECT projection.append('priv-2', 'Shadow', '{}') > 0 AS appended;
RESET search_path;
RESET ROLE;
SELECT lowered, same FROM regress_priv.shadow;
SELECT count(*) AS hijacked_calls FROM regress_priv_evil.calls;
SELECT count(*) AS evil_rows FROM regress_priv_evil.shadow;

-- a handler (here SECURITY DEFINER, run as its owner) cannot change its
-- identity, whatever an appender puts in the event
SET ROLE regress_priv_owner;
CREATE TABLE regress_priv.ran (pos bigint, usr name);
CREATE FUNCTION regress_priv.run(e projection.events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE e.data->>'sql';
    INSERT INTO regress_priv.ran VALUES (e.global_position, current_user);
END $$;
-- the same without SECURITY DEFINER: the handler already runs as its owner
CREATE FUNCTION regress_priv.run_invoker(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE e.data->>'sql';
    INSERT INTO regress_priv.ran VALUES (e.global_position, current_user);
END $$;
SELECT projection.create('priv_run', 'regress_priv.run', '{Run}', mode => 'inline',
                         tables => '{regress_priv.ran}', start_from => 'end');
SELECT projection.create('priv_run_invoker', 'regress_priv.run_invoker', '{RunInvoker}',
                         mode => 'inline', tables => '{regress_priv.ran}', start_from => 'end');
RESET ROLE;
-- (the context lines would show event positions)
\set SHOW_CONTEXT never
SET ROLE regress_priv_evil;
SELECT projection.append('priv-3', 'Run', '{"sql": "SET ROLE postgres"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'Run', '{"sql": "RESET ROLE"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'Run', '{"sql": "SET SESSION AUTHORIZATION DEFAULT"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'Run', '{"sql": "SELECT set_config(''role'', ''regress_priv_heir'', true)"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'RunInvoker', '{"sql": "SET ROLE postgres"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'RunInvoker', '{"sql": "RESET ROLE"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'RunInvoker', '{"sql": "SET SESSION AUTHORIZATION DEFAULT"}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('priv-3', 'RunInvoker', '{"sql": "RESET SESSION AUTHORIZATION"}');
\echo :LAST_ERROR_SQLSTATE
\set SHOW_CONTEXT errors
-- a harmless statement runs, as the owner
SELECT projection.append('priv-3', 'Run', '{"sql": "SELECT 1"}') > 0 AS appended;
SELECT projection.append('priv-3', 'RunInvoker', '{"sql": "SELECT 1"}') > 0 AS appended;
RESET ROLE;
SELECT usr, count(*) FROM regress_priv.ran GROUP BY usr;
SELECT count(*) AS runs FROM projection.events WHERE stream_id = 'priv-3';

-- clean up: DROP OWNED takes the projections with the rest
DROP OWNED BY regress_priv_owner, regress_priv_evil, regress_priv_heir CASCADE;
SELECT count(*) AS projections FROM projection.status WHERE name LIKE 'priv%';
DROP ROLE regress_priv_owner, regress_priv_evil, regress_priv_heir;
