--
-- lifecycle: changing a projection after create(), and poison events
--   off() and the replace idiom (off, then on, in one transaction)
--   the projection.statements view and who sees the statement text
--   create(..., if_not_exists => true)
--   alter(): on_error, event_types, tables
--   skip() of a failed projection, retry_dead_letters(), status.dead_letters
-- Every call as the owner and, refused with 42501 and changing nothing, as
-- another role.
--
-- event positions depend on the tests before: no CONTEXT lines (they name them)
\set SHOW_CONTEXT never
CREATE ROLE regress_lc_owner NOLOGIN;
CREATE ROLE regress_lc_other NOLOGIN;
CREATE SCHEMA lc AUTHORIZATION regress_lc_owner;
GRANT USAGE ON SCHEMA lc TO regress_lc_other;
GRANT SELECT, TRIGGER, INSERT ON projection.events TO regress_lc_owner;
SET ROLE regress_lc_owner;
CREATE TABLE lc.orders (order_id text PRIMARY KEY, status text NOT NULL);
CREATE TABLE lc.other (id int);
CREATE FUNCTION lc.count(e projection.events) RETURNS void
LANGUAGE sql AS $$ SELECT 1 $$;
SELECT projection.create('lc_inline', NULL, mode => 'inline', tables => '{lc.orders}',
                         start_from => 'end');
SELECT projection.on('lc_inline', 'LcPlaced',
    $$INSERT INTO lc.orders VALUES (($1).data->>'id', 'placed')$$);
SELECT projection.on('lc_inline', 'LcShipped',
    $$UPDATE lc.orders SET status = 'in transit' WHERE order_id = ($1).data->>'id'$$);
-- on() for a type that has a statement already says so
SELECT projection.on('lc_inline', 'LcShipped',
    $$UPDATE lc.orders SET status = status || '!' WHERE order_id = ($1).data->>'id'$$);
RESET ROLE;

-- ---------------------------------------------------------------------
-- the statements view
-- ---------------------------------------------------------------------
SELECT name, event_type, seq, statement, owner FROM projection.statements
 WHERE name = 'lc_inline' ORDER BY seq;
-- another role sees that they exist, not their text
SET ROLE regress_lc_other;
SELECT name, event_type, seq, statement IS NULL AS masked FROM projection.statements
 WHERE name = 'lc_inline' ORDER BY seq;
-- the table behind it stays closed
SELECT count(*) FROM projection.handlers;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a role with SELECT on the events sees the text
GRANT SELECT ON projection.events TO regress_lc_other;
SET ROLE regress_lc_other;
SELECT count(statement) AS visible FROM projection.statements WHERE name = 'lc_inline';
RESET ROLE;
REVOKE SELECT ON projection.events FROM regress_lc_other;

-- ---------------------------------------------------------------------
-- off()
-- ---------------------------------------------------------------------
SET ROLE regress_lc_other;
SELECT projection.off('lc_inline', 'LcShipped');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS statements FROM projection.statements WHERE name = 'lc_inline';
SET ROLE regress_lc_owner;
-- errors: unknown projection, no statements for the type, NULL and empty arguments
SELECT projection.off('lc_nonesuch', 'LcShipped');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.off('lc_inline', 'LcNothing');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.off('lc_inline', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.off('lc_inline', '');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.off('lc_inline', 'LcShipped', if_exists => NULL);
\echo :LAST_ERROR_SQLSTATE
-- if_exists: a NOTICE, as DROP ... IF EXISTS
SELECT projection.off('lc_inline', 'LcNothing', if_exists => true);
SELECT count(*) AS statements FROM projection.statements WHERE name = 'lc_inline';

-- the two LcShipped statements run, in order
SELECT projection.append('o-1', 'LcPlaced', '{"id": "o-1"}') IS NOT NULL AS appended;
SELECT projection.append('o-1', 'LcShipped', '{"id": "o-1"}') IS NOT NULL AS appended;
SELECT * FROM lc.orders ORDER BY 1;
-- replace: off, then on, in one transaction
BEGIN;
SELECT projection.off('lc_inline', 'LcShipped');
SELECT projection.on('lc_inline', 'LcShipped',
    $$UPDATE lc.orders SET status = 'shipped' WHERE order_id = ($1).data->>'id'$$);
COMMIT;
SELECT event_type, statement FROM projection.statements WHERE name = 'lc_inline' ORDER BY seq;
-- the next event runs the new statement only
SELECT projection.append('o-2', 'LcPlaced', '{"id": "o-2"}') IS NOT NULL AS appended;
SELECT projection.append('o-2', 'LcShipped', '{"id": "o-2"}') IS NOT NULL AS appended;
SELECT * FROM lc.orders ORDER BY 1;
-- a rolled-back off() removes nothing
BEGIN;
SELECT projection.off('lc_inline', 'LcShipped');
ROLLBACK;
SELECT count(*) AS statements FROM projection.statements WHERE name = 'lc_inline';
-- off() of the last statement of a type: its events pass unapplied
SELECT projection.off('lc_inline', 'LcShipped');
SELECT projection.append('o-1', 'LcShipped', '{"id": "o-1"}') IS NOT NULL AS appended;
SELECT * FROM lc.orders ORDER BY 1;
RESET ROLE;
-- a superuser may
SELECT projection.off('lc_inline', 'LcPlaced');
SELECT count(*) AS statements FROM projection.statements WHERE name = 'lc_inline';

-- ---------------------------------------------------------------------
-- create(..., if_not_exists => true)
-- ---------------------------------------------------------------------
SET ROLE regress_lc_owner;
SELECT projection.create('lc_async', 'lc.count', '{LcA,LcB}', tables => '{lc.orders}',
                         start_from => 'end', if_not_exists => true);
-- identical (event types and tables are sets; start_from is not compared): a NOTICE
SELECT projection.create('lc_async', 'lc.count', '{LcB,LcA,LcB}', tables => '{lc.orders}',
                         if_not_exists => true);
-- different: an error naming each difference, and nothing changes
SELECT projection.create('lc_async', 'lc.count', '{LcA}', tables => '{lc.orders,lc.other}',
                         on_error => 'skip', if_not_exists => true);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('lc_async', NULL, '{LcA,LcB}', mode => 'inline', tables => '{lc.orders}',
                         if_not_exists => true);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('lc_async', 'lc.count', if_not_exists => true);
\echo :LAST_ERROR_SQLSTATE
-- without it, as before
SELECT projection.create('lc_async', 'lc.count', '{LcA,LcB}', tables => '{lc.orders}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('lc_async', 'lc.count', '{LcA,LcB}', if_not_exists => NULL);
\echo :LAST_ERROR_SQLSTATE
-- arguments are checked before the existing projection is compared
SELECT projection.create('lc_async', 'lc.count', '{LcA,LcB}', tables => '{lc.orders}',
                         mode => 'sometimes', if_not_exists => true);
\echo :LAST_ERROR_SQLSTATE
SELECT handler, event_types, tables, on_error, mode FROM projection.status WHERE name = 'lc_async';
RESET ROLE;
-- another role: privileges are checked as for a new projection
SET ROLE regress_lc_other;
SELECT projection.create('lc_async', 'lc.count', '{LcA,LcB}', tables => '{lc.orders}',
                         if_not_exists => true);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ---------------------------------------------------------------------
-- alter()
-- ---------------------------------------------------------------------
SET ROLE regress_lc_other;
SELECT projection.alter('lc_async', on_error => 'skip');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT on_error FROM projection.status WHERE name = 'lc_async';
SET ROLE regress_lc_owner;
SELECT projection.alter('lc_async', on_error => 'skip');
SELECT on_error FROM projection.status WHERE name = 'lc_async';
-- new event types: from the next event, with a NOTICE
SELECT projection.alter('lc_async', event_types => '{LcA,LcC}');
-- the same set again: no NOTICE
SELECT projection.alter('lc_async', event_types => '{LcC,LcA}');
SELECT projection.alter('lc_async', reset_event_types => true);
SELECT event_types FROM projection.status WHERE name = 'lc_async';
SELECT projection.alter('lc_async', event_types => '{LcA}', tables => '{lc.orders,lc.other}');
SELECT event_types, tables FROM projection.status WHERE name = 'lc_async';
-- on_error of an inline projection: a NOTICE saying what it governs
SELECT projection.alter('lc_inline', on_error => 'skip');
-- errors, each changing nothing
SELECT projection.alter('lc_async');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', event_types => '{LcB}', reset_event_types => true);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', on_error => 'sometimes');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', event_types => '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', event_types => '{LcB,NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', tables => '{projection.events}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_async', reset_event_types => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter('lc_nonesuch', on_error => 'stop');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.alter(NULL, on_error => 'stop');
\echo :LAST_ERROR_SQLSTATE
SELECT event_types, tables, on_error FROM projection.status WHERE name = 'lc_async';
RESET ROLE;

-- ---------------------------------------------------------------------
-- skip() and retry_dead_letters()
-- ---------------------------------------------------------------------
SET ROLE regress_lc_owner;
CREATE TABLE lc.totals (stream_id text PRIMARY KEY, n integer NOT NULL);
CREATE TABLE lc.broken (stream_id text PRIMARY KEY);
CREATE FUNCTION lc.total(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM lc.broken b WHERE b.stream_id = e.stream_id) THEN
        RAISE EXCEPTION 'cannot total stream %', e.stream_id USING ERRCODE = '22023';
    END IF;
    INSERT INTO lc.totals VALUES (e.stream_id, 1)
        ON CONFLICT (stream_id) DO UPDATE SET n = totals.n + 1;
END $$;
SELECT projection.create('lc_poison', 'lc.total', '{LcTotal}', tables => '{lc.totals}',
                         start_from => 'end');
-- not failed: skip() refuses, for async and inline alike
SELECT projection.skip('lc_poison');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.skip('lc_inline');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO lc.broken VALUES ('t-2');
RESET ROLE;
SELECT projection.append('t-1', 'LcTotal', '{}') AS t1 \gset
SELECT projection.append('t-2', 'LcTotal', '{}') AS poison \gset
SELECT projection.append('t-1', 'LcTotal', '{}') AS t3 \gset
-- the worker fails the projection at the poison event
\set VERBOSITY sqlstate
SELECT projection.wait('lc_poison', :t3, '1 hour');
\set VERBOSITY default
SELECT state, last_error, last_error_position = :poison AS at_poison, dead_letters
  FROM projection.status WHERE name = 'lc_poison';
-- another role may not skip it
SET ROLE regress_lc_other;
SELECT projection.skip('lc_poison');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT state FROM projection.status WHERE name = 'lc_poison';
SET ROLE regress_lc_owner;
-- skip(): the event goes to dead_letters, the projection resumes after it
SELECT projection.skip('lc_poison') = :poison AS skipped_poison;
SELECT projection.wait('lc_poison', :t3, '1 hour');
SELECT state, last_error, dead_letters FROM projection.status WHERE name = 'lc_poison';
SELECT * FROM lc.totals ORDER BY 1;
RESET ROLE;
SELECT name, global_position = :poison AS poison, event_type, stream_id, sqlstate, error
  FROM projection.dead_letters WHERE name = 'lc_poison';
-- (on_error => 'skip' dead-letters without stopping; retry treats both alike)
SELECT projection.alter('lc_poison', on_error => 'skip');
SELECT projection.append('t-2', 'LcTotal', '{}') AS t4 \gset
SELECT projection.wait('lc_poison', :t4, '1 hour');
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'lc_poison';

-- retry as another role: refused, nothing changes
SET ROLE regress_lc_other;
SELECT * FROM projection.retry_dead_letters('lc_poison');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'lc_poison';
SET ROLE regress_lc_owner;
-- still broken: both fail again and stay, with the new error
UPDATE lc.broken SET stream_id = 't-2';
CREATE OR REPLACE FUNCTION lc.total(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM lc.broken b WHERE b.stream_id = e.stream_id) THEN
        RAISE EXCEPTION 'still cannot total stream %', e.stream_id USING ERRCODE = '22023';
    END IF;
    INSERT INTO lc.totals VALUES (e.stream_id, 1)
        ON CONFLICT (stream_id) DO UPDATE SET n = totals.n + 1;
END $$;
SELECT * FROM projection.retry_dead_letters('lc_poison');
RESET ROLE;
SELECT error FROM projection.dead_letters WHERE name = 'lc_poison' ORDER BY global_position;
SET ROLE regress_lc_owner;
-- fixed: both applied, in position order, and removed
DELETE FROM lc.broken;
SELECT * FROM projection.retry_dead_letters('lc_poison');
SELECT * FROM lc.totals ORDER BY 1;
SELECT dead_letters FROM projection.status WHERE name = 'lc_poison';
-- nothing left: zeros
SELECT * FROM projection.retry_dead_letters('lc_poison');
SELECT * FROM projection.retry_dead_letters('lc_nonesuch');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM projection.retry_dead_letters(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.skip('lc_nonesuch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.skip(NULL);
\echo :LAST_ERROR_SQLSTATE
-- dead_letters in status is a count anyone may read (the rows stay closed)
RESET ROLE;
SET ROLE regress_lc_other;
SELECT name, dead_letters FROM projection.status WHERE name LIKE 'lc\_%' ORDER BY name COLLATE "C";
SELECT count(*) FROM projection.dead_letters;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

SELECT count(*) FROM (SELECT projection.drop(name) FROM projection.status WHERE name LIKE 'lc\_%') d;
DROP SCHEMA lc CASCADE;
REVOKE SELECT, TRIGGER, INSERT ON projection.events FROM regress_lc_owner;
DROP ROLE regress_lc_owner, regress_lc_other;
