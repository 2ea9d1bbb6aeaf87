--
-- security: ownership of projections, privileges needed to create them and
-- to append, and the identity handlers run with
--
-- regress_owner (created in setup, owning schema regress_owned) owns the
-- projections of this file; regress_other tries to interfere;
-- regress_appender appends.  The projection owner and regress_other may
-- read the events (as an application reading its event store would), and
-- create inline projections (TRIGGER).
GRANT SELECT, TRIGGER ON projection.events TO regress_owner, regress_other;
CREATE SCHEMA regress_others AUTHORIZATION regress_other;
GRANT USAGE ON SCHEMA regress_owned TO regress_other, regress_appender;

SET ROLE regress_owner;
CREATE TABLE regress_owned.who (
    position    bigint PRIMARY KEY,
    handled_as  name NOT NULL,
    appended_by text
);
CREATE FUNCTION regress_owned.record_who(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- unqualified on purpose: resolved with the search_path fixed at create
    INSERT INTO who VALUES (e.global_position, current_user, e.metadata->>'by');
END $$;
SET search_path = regress_owned, public;
SELECT projection.create('sec_who', 'record_who', '{Who}', mode => 'inline',
                         tables => '{who}', start_from => 'end');
RESET search_path;
RESET ROLE;
SELECT name, mode, state, owner, tables FROM projection.status WHERE name = 'sec_who';

--
-- only the owner (or a superuser, or a member of the owner role) manages
-- a projection
--
SET ROLE regress_other;
SELECT projection.drop('sec_who');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.pause('sec_who');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.resume('sec_who');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.rebuild('sec_who');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('sec_who', 'Who', 'DELETE FROM regress_owned.who');
\echo :LAST_ERROR_SQLSTATE
-- it may watch it
SELECT name, state FROM projection.status WHERE name = 'sec_who';
SELECT projection.wait('sec_who', 1);
RESET ROLE;
SELECT name, state, owner FROM projection.status WHERE name = 'sec_who';
SELECT count(*) AS statements FROM projection.handlers;
-- the superuser may
SELECT projection.pause('sec_who');
SELECT projection.resume('sec_who');
SELECT projection.rebuild('sec_who') = (SELECT count(*) FROM projection.events WHERE event_type = 'Who') AS rebuilt;
SELECT name, state FROM projection.status WHERE name = 'sec_who';
-- a member of the owner role may
GRANT regress_owner TO regress_other;
SET ROLE regress_other;
SELECT projection.pause('sec_who');
SELECT projection.resume('sec_who');
RESET ROLE;
REVOKE regress_owner FROM regress_other;

--
-- creating a projection needs EXECUTE on the handler and INSERT, UPDATE
-- and DELETE on every table
--
SET ROLE regress_owner;
CREATE FUNCTION regress_owned.private_handler(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
REVOKE EXECUTE ON FUNCTION regress_owned.private_handler(projection.events) FROM PUBLIC;
RESET ROLE;
SET ROLE regress_other;
CREATE FUNCTION regress_others.noop(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE TABLE regress_others.mine (n integer);
SELECT projection.create('sec_other', 'regress_owned.private_handler', mode => 'inline');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('sec_other', 'regress_others.noop', mode => 'inline',
                         tables => '{regress_others.mine,regress_owned.who}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- SELECT and INSERT are not enough
GRANT SELECT, INSERT ON regress_owned.who TO regress_other;
SET ROLE regress_other;
SELECT projection.create('sec_other', 'regress_others.noop', mode => 'inline',
                         tables => '{regress_owned.who}', start_from => 'end');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS projections FROM projection.status WHERE name = 'sec_other';
-- its own function and table: fine
SELECT projection.create('sec_other', 'regress_others.noop', mode => 'inline',
                         tables => '{regress_others.mine}', start_from => 'end');
RESET ROLE;
REVOKE SELECT, INSERT ON regress_owned.who FROM regress_other;
SELECT name, owner FROM projection.status ORDER BY name COLLATE "C";
-- regress_owner cannot drop regress_other's projection either
SET ROLE regress_owner;
SELECT projection.drop('sec_other');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT projection.drop('sec_other');

--
-- nobody writes the registry or the event store directly, not even a
-- projection's owner
--
SET ROLE regress_owner;
UPDATE projection.projections SET state = 'paused' WHERE name = 'sec_who';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.projections WHERE name = 'sec_who';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.projections (name, mode, owner, search_path)
VALUES ('sec_forged', 'inline', 'regress_owner', 'pg_catalog');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.handlers
SELECT id, 99, 'Who', 'DELETE FROM regress_owned.who' FROM projection.projections;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.handlers;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.dead_letters;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.dead_letters (name, global_position, event_type, stream_id, sqlstate, error)
VALUES ('sec_who', 1, 'Who', 's', 'XX000', 'forged');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('sec', 'Who', '{}');
\echo :LAST_ERROR_SQLSTATE
UPDATE projection.events SET data = '{}';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM projection.events;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE projection.events;
\echo :LAST_ERROR_SQLSTATE
SELECT setval('projection.events_global_position_seq', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('sec', 'Who', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT name, state FROM projection.status ORDER BY name COLLATE "C";
SELECT count(*) AS statements FROM projection.handlers;

--
-- appending needs INSERT on projection.events; the inline handler runs as
-- the projection's owner, whoever appends
--
SET ROLE regress_appender;
SELECT projection.append('sec', 'Who', '{}', '{"by": "regress_appender"}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT INSERT ON projection.events TO regress_appender;
SET ROLE regress_appender;
SELECT projection.append('sec', 'Who', '{}', '{"by": "regress_appender"}') > 0 AS appended;
INSERT INTO projection.events (stream_id, event_type, data, metadata)
VALUES ('sec', 'Who', '{}', '{"by": "regress_appender"}');
-- it cannot read or write the read model itself
SELECT count(*) FROM regress_owned.who;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT projection.append('sec', 'Who', '{}', '{"by": "superuser"}') > 0 AS appended;
-- statement handlers run as the owner too, with the same search_path
SET ROLE regress_owner;
SELECT projection.on('sec_who', 'WhoStatement',
                     $$INSERT INTO who VALUES (($1).global_position, current_user, 'statement')$$);
RESET ROLE;
SET ROLE regress_appender;
SELECT projection.append('sec', 'WhoStatement', '{}') > 0 AS appended;
RESET ROLE;
SELECT handled_as, appended_by FROM regress_owned.who ORDER BY position;

--
-- a handler runs as its owner the way a SECURITY DEFINER function does,
-- and as a security-restricted operation: it can neither change its identity
-- nor create temporary objects, and the append fails
--
SET ROLE regress_owner;
CREATE FUNCTION regress_owned.set_role(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'SET LOCAL ROLE regress_owner';
END $$;
SELECT projection.create('sec_set_role', 'regress_owned.set_role', '{SetRole}', mode => 'inline',
                         start_from => 'end');
RESET ROLE;
SET ROLE regress_appender;
SELECT projection.append('sec', 'SetRole', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- not even when a superuser appends
SELECT projection.append('sec', 'SetRole', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE event_type = 'SetRole';
SELECT projection.drop('sec_set_role');
-- the same for temporary objects, which could outlive it
SET ROLE regress_owner;
CREATE FUNCTION regress_owned.temp_table(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE regress_left_behind (n integer);
END $$;
SELECT projection.create('sec_temp_table', 'regress_owned.temp_table', '{TempTable}',
                         mode => 'inline', start_from => 'end');
RESET ROLE;
SELECT projection.append('sec', 'TempTable', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE event_type = 'TempTable';
SELECT projection.drop('sec_temp_table');

--
-- the handler's search_path is the one fixed at create: an appender's
-- temporary table or search_path does not redirect its writes
--
SELECT search_path FROM projection.projections WHERE name = 'sec_who';
CREATE SCHEMA regress_evil AUTHORIZATION regress_appender;
SET ROLE regress_appender;
CREATE TABLE regress_evil.who (position bigint, handled_as name, appended_by text);
CREATE TEMP TABLE who (position bigint, handled_as name, appended_by text);
SET search_path = pg_temp, regress_evil, public;
SELECT projection.append('sec', 'Who', '{}', '{"by": "shadowing appender"}') > 0 AS appended;
SELECT count(*) AS temp_rows FROM pg_temp.who;
SELECT count(*) AS evil_rows FROM regress_evil.who;
RESET search_path;
DROP TABLE pg_temp.who;
RESET ROLE;
SELECT handled_as, appended_by FROM regress_owned.who ORDER BY position;

--
-- the same for an async projection: the worker runs the handler as the
-- owner too
--
SET ROLE regress_owner;
CREATE TABLE regress_owned.async_who (position bigint PRIMARY KEY, handled_as name NOT NULL);
CREATE FUNCTION regress_owned.record_async_who(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO regress_owned.async_who VALUES (e.global_position, current_user)
$$;
SELECT projection.create('sec_async_who', 'regress_owned.record_async_who', '{Who}',
                         tables => '{regress_owned.async_who}', start_from => 'end');
RESET ROLE;
SET ROLE regress_appender;
SELECT projection.append('sec', 'Who', '{}', '{"by": "regress_appender"}') AS pos \gset
RESET ROLE;
SELECT projection.wait('sec_async_who', :pos);
SELECT handled_as, count(*) FROM regress_owned.async_who GROUP BY 1;

-- catch-up at create runs as the owner too
SET ROLE regress_owner;
CREATE TABLE regress_owned.caught_up (position bigint PRIMARY KEY, handled_as name NOT NULL);
CREATE FUNCTION regress_owned.record_caught_up(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO regress_owned.caught_up VALUES (e.global_position, current_user)
$$;
SELECT projection.create('sec_caught_up', 'regress_owned.record_caught_up', '{Who}', mode => 'inline',
                         tables => '{regress_owned.caught_up}');
RESET ROLE;
SELECT handled_as, count(*) FROM regress_owned.caught_up GROUP BY 1;

-- the superuser drops the owner's projections
SELECT projection.drop('sec_who');
SELECT projection.drop('sec_async_who');
SELECT projection.drop('sec_caught_up');
REVOKE INSERT ON projection.events FROM regress_appender;
REVOKE SELECT, TRIGGER ON projection.events FROM regress_owner, regress_other;
SELECT count(*) AS projections FROM projection.status;
