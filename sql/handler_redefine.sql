--
-- handler_redefine: a change to a handler (CREATE OR REPLACE FUNCTION,
-- ALTER FUNCTION ... OWNER / SECURITY / SET) takes effect from the next
-- event, in a session that has already called it, and a handler whose body
-- fails to compile gives the same clean error every time, never a crash.
-- Everything below runs in one session on purpose.
--
-- terse errors: the context lines would quote event positions
\set VERBOSITY terse
CREATE ROLE regress_hr_definer NOLOGIN;
CREATE SCHEMA hr;
CREATE TABLE hr.log (pos bigint, version text, who text, app text);
GRANT USAGE ON SCHEMA hr TO regress_hr_definer;
GRANT INSERT ON hr.log TO regress_hr_definer;

CREATE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hr.log VALUES (e.global_position, 'v1 plpgsql', current_user, NULL);
END $$;
SELECT projection.create('hr_inline', 'hr.apply', '{HrEvent}', mode => 'inline',
                         tables => '{hr.log}', start_from => 'end');
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;

-- the versions logged so far, in order; the superuser running the test
-- shows as "tester"
CREATE VIEW hr.versions AS
SELECT row_number() OVER (ORDER BY pos) AS n, version,
       CASE WHEN who = session_user THEN 'tester' ELSE who END AS who, app
  FROM hr.log;

--
-- 1. a body that does not compile, created with check_function_bodies off
-- (no superuser needed): every append fails with the compile error, the
-- second one too (it used to crash the server); once fixed, appends work
--
SET check_function_bodies = off;
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hr.log VALUES (e.global_position, 'broken', current_user, NULL)
END $$;
RESET check_function_bodies;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
\echo :LAST_ERROR_SQLSTATE
-- in a savepoint, then again in the same transaction
BEGIN;
SAVEPOINT a;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
ROLLBACK TO SAVEPOINT a;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
ROLLBACK;
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hr.log VALUES (e.global_position, 'v2 plpgsql', current_user, NULL);
END $$;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT * FROM hr.versions ORDER BY n;

--
-- 2. a change of language: PL/pgSQL to SQL and back, each followed by two
-- appends
--
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO hr.log VALUES (e.global_position, 'v3 sql', current_user, NULL)
$$;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hr.log VALUES (e.global_position, 'v4 plpgsql', current_user, NULL);
END $$;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
-- and inside one transaction: the event after the change runs the new body
BEGIN;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO hr.log VALUES (e.global_position, 'v5 sql', current_user, NULL)
$$;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
COMMIT;
SELECT * FROM hr.versions WHERE n > 3 ORDER BY n;

--
-- 3. identity and settings: SECURITY DEFINER, then ALTER FUNCTION ... OWNER
-- TO, SET, SECURITY INVOKER, each followed by two appends
--
CREATE OR REPLACE FUNCTION hr.apply(e projection.events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO hr.log
    VALUES (e.global_position, 'v6 definer', current_user, current_setting('application_name'));
END $$;
SET application_name = 'session';
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
ALTER FUNCTION hr.apply(projection.events) OWNER TO regress_hr_definer;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
ALTER FUNCTION hr.apply(projection.events) SET application_name = 'handler';
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
ALTER FUNCTION hr.apply(projection.events) SECURITY INVOKER;
ALTER FUNCTION hr.apply(projection.events) RESET application_name;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
SELECT projection.append('hr-1', 'HrEvent', '{}') > 0 AS appended;
RESET application_name;
SELECT * FROM hr.versions WHERE n > 8 ORDER BY n;

--
-- 4. statement handlers: a kept plan follows a change to a function it
-- calls, even one the planner inlined or folded into a constant
--
CREATE FUNCTION hr.label() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'l1 folded' $$;
CREATE FUNCTION hr.label_of(e projection.events) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN RETURN 'p1 plpgsql'; END $$;
SELECT projection.create('hr_statements', NULL, mode => 'inline', tables => '{}',
                         start_from => 'end');
SELECT projection.on('hr_statements', 'HrStatement', $$
    INSERT INTO hr.log VALUES (($1).global_position, hr.label(), current_user, hr.label_of($1))
$$);
SELECT projection.append('hr-2', 'HrStatement', '{}') > 0 AS appended;
CREATE OR REPLACE FUNCTION hr.label() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'l2 folded' $$;
CREATE OR REPLACE FUNCTION hr.label_of(e projection.events) RETURNS text
LANGUAGE sql AS $$ SELECT 'p2 sql' $$;
SELECT projection.append('hr-2', 'HrStatement', '{}') > 0 AS appended;
SELECT projection.append('hr-2', 'HrStatement', '{}') > 0 AS appended;
SELECT * FROM hr.versions WHERE n > 14 ORDER BY n;

SELECT projection.drop('hr_inline');
SELECT projection.drop('hr_statements');
DROP SCHEMA hr CASCADE;
DROP ROLE regress_hr_definer;
\set VERBOSITY default
