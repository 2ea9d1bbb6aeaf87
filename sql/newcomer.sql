--
-- newcomer: the first mistakes of a new user, and what the extension tells
-- them (the newcomer audits: an empty stream in a plain INSERT, an internal
-- trigger function on the wrong table, PREPARE after an append, a projection
-- the role does not own, on_error on an inline projection, singular counts in
-- NOTICEs)
--
\set VERBOSITY default

-- a plain INSERT with an empty stream_id is refused, as append() refuses it,
-- and nothing is stored (nothing of a multi-row INSERT either)
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('', 'NcEvent', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('', 'NcEvent', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data)
VALUES ('nc-1', 'NcEvent', '{}'), ('', 'NcEvent', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.events WHERE event_type = 'NcEvent';

-- the append-only guard attached to another table is a trigger protocol
-- error (39P01, as _position's), not "cannot UPDATE projection.events"
CREATE TABLE nc_other (a int);
CREATE TRIGGER nc_guard BEFORE UPDATE ON nc_other
    FOR EACH STATEMENT EXECUTE FUNCTION projection._append_only();
INSERT INTO nc_other VALUES (1);
UPDATE nc_other SET a = 2;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE nc_other;
-- on projection.events it still refuses
UPDATE projection.events SET data = '{}' WHERE false;
\echo :LAST_ERROR_SQLSTATE

-- PREPARE TRANSACTION after an append or a registry change: a hint says
-- what to do instead
BEGIN;
SELECT projection.append('nc-2pc', 'NcEvent', '{}') > 0 AS appended;
PREPARE TRANSACTION 'regress_newcomer_append';
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE nc_seen (id bigint PRIMARY KEY);
BEGIN;
SELECT projection.create('nc_2pc', NULL, tables => '{nc_seen}', start_from => 'end');
PREPARE TRANSACTION 'regress_newcomer_registry';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'regress_newcomer%';

-- a role that does not own a projection is told how it could manage it, as
-- for feeds
CREATE ROLE regress_nc_owner NOLOGIN;
CREATE ROLE regress_nc_other NOLOGIN;
GRANT SELECT ON projection.events TO regress_nc_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON nc_seen TO regress_nc_owner;
SET ROLE regress_nc_owner;
SELECT projection.create('nc_owned', NULL, tables => '{nc_seen}', start_from => 'end');
SET ROLE regress_nc_other;
SELECT projection.pause('nc_owned');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('nc_owned', 'INSERT INTO public.nc_seen SELECT global_position FROM batch');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT projection.drop('nc_owned');
REVOKE ALL ON projection.events, nc_seen FROM regress_nc_owner;
DROP ROLE regress_nc_owner, regress_nc_other;

-- on_error => 'skip' on an inline projection: create says what it governs,
-- as alter does
SELECT projection.create('nc_inline', NULL, mode => 'inline', tables => '{nc_seen}',
                         on_error => 'skip', start_from => 'end');
SELECT projection.alter('nc_inline', on_error => 'skip');
SELECT projection.drop('nc_inline');

-- one event is "1 event" in the NOTICEs of an inline catch-up, a rebuild and
-- retry_dead_letters
CREATE FUNCTION nc_apply(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.data->>'bad' IS NOT NULL THEN
        RAISE EXCEPTION 'bad event';
    END IF;
    INSERT INTO public.nc_seen VALUES (e.global_position);
END $$;
SELECT projection.append('nc-1', 'NcEvent', '{}') > 0 AS appended;
SELECT projection.create('nc_one', 'nc_apply', event_types => '{NcEvent}', mode => 'inline',
                         tables => '{nc_seen}');
SELECT count(*) FROM nc_seen;
SELECT projection.rebuild('nc_one');
SELECT projection.drop('nc_one');
SELECT projection.append('nc-1', 'NcOther', '{"bad": true}') > 0 AS appended;
SELECT projection.create('nc_two', 'nc_apply', event_types => '{NcEvent,NcOther}', mode => 'inline',
                         tables => '{nc_seen}', on_error => 'skip', if_not_empty => 'empty');
SELECT projection.rebuild('nc_two');
SELECT retried, applied, failed FROM projection.retry_dead_letters('nc_two');
SELECT projection.drop('nc_two');
DROP FUNCTION nc_apply(projection.events);
DROP TABLE nc_seen;

-- an event imported with its position (as a restore of a database where 1.6
-- stored an empty stream_id does) is taken as it is
SELECT max(global_position) + 1 AS nc_pos FROM projection.events \gset
INSERT INTO projection.events (global_position, stream_id, event_type, data)
VALUES (:nc_pos, '', 'NcImported', '{}');
SELECT count(*) AS imported FROM projection.events WHERE event_type = 'NcImported' AND stream_id = '';
