--
-- table_guard: the columns, names and schema of the extension's relations
-- are the extension's (1.8).  Before, ADD COLUMN on projection.events made
-- every append fail with an internal error (XX000, "has 8 columns, expected
-- 7") and every rebuild of a snapshot projection too.
--
\set VERBOSITY default

CREATE FUNCTION tg_count(s jsonb, e projection.events) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1);
-- (its catch-up NOTICE depends on the events earlier tests left)
SET client_min_messages = warning;
SELECT projection.create_snapshot('tg_counts', 'tg_count', event_types => '{TgEvent}', mode => 'inline');
RESET client_min_messages;
SELECT projection.append('tg-1', 'TgEvent', '{}') IS NOT NULL AS appended;

-- columns: added, dropped, retyped, renamed; all refused with 0A000
ALTER TABLE projection.events ADD COLUMN tenant text;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events DROP COLUMN metadata;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ALTER COLUMN data TYPE json;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events RENAME COLUMN data TO payload;
\echo :LAST_ERROR_SQLSTATE
-- one column change among allowed subcommands refuses the whole statement
ALTER TABLE projection.events SET (fillfactor = 90), ADD COLUMN tenant text;
\echo :LAST_ERROR_SQLSTATE
-- the other tables of the extension too (no hint about events there)
ALTER TABLE projection.checkpoints ADD COLUMN note text;
\echo :LAST_ERROR_SQLSTATE

-- names and schema: the table, a view, a sequence, a constraint, the index
-- of a constraint
ALTER TABLE projection.events RENAME TO events_old;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events SET SCHEMA public;
\echo :LAST_ERROR_SQLSTATE
ALTER VIEW projection.status RENAME TO projection_status;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events RENAME CONSTRAINT events_stream_version_key TO events_stream_key;
\echo :LAST_ERROR_SQLSTATE
ALTER INDEX projection.events_stream_version_key RENAME TO events_stream_key;
\echo :LAST_ERROR_SQLSTATE

-- what would reach the table through another object, or let other rows be
-- read as events: a partition, a typed table, inheritance either way
CREATE TABLE tg_parent (LIKE projection.events) PARTITION BY RANGE (global_position);
ALTER TABLE tg_parent ATTACH PARTITION projection.events FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
\echo :LAST_ERROR_SQLSTATE
CREATE TYPE tg_event AS (global_position bigint, stream_id text, stream_version bigint,
    event_type text, data jsonb, metadata jsonb, recorded_at timestamptz);
ALTER TABLE projection.events OF tg_event;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE tg_base (data jsonb);
ALTER TABLE projection.events INHERIT tg_base;
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE tg_child () INHERITS (projection.events);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE tg_other (LIKE projection.events);
ALTER TABLE tg_other INHERIT projection.events;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE tg_parent, tg_base, tg_other;
DROP TYPE tg_event;

-- constraints (the code opens some by name; a stream-version constraint
-- dropped and replaced let appends store a version twice), defaults, NOT
-- NULL, identity
ALTER TABLE projection.events DROP CONSTRAINT events_stream_version_key;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ALTER CONSTRAINT events_stream_version_key DEFERRABLE;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.checkpoints DROP CONSTRAINT checkpoints_pkey;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ADD CONSTRAINT tg_check CHECK (stream_id <> 'x');
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ALTER COLUMN metadata DROP DEFAULT;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ALTER COLUMN metadata DROP NOT NULL;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE projection.events ALTER COLUMN stream_version ADD GENERATED ALWAYS AS IDENTITY;
\echo :LAST_ERROR_SQLSTATE

-- the views, the sequence, the schema, the extension's members
CREATE OR REPLACE VIEW projection.status AS SELECT 1 AS x;
\echo :LAST_ERROR_SQLSTATE
ALTER SEQUENCE projection.events_global_position_seq RESTART WITH 1;
\echo :LAST_ERROR_SQLSTATE
ALTER SCHEMA projection RENAME TO projection_old;
\echo :LAST_ERROR_SQLSTATE
ALTER EXTENSION projection DROP TABLE projection.events;
\echo :LAST_ERROR_SQLSTATE

-- nothing changed: the table has its seven columns, and appending, the
-- inline fold and a rebuild work
SELECT count(*) AS columns FROM pg_attribute
 WHERE attrelid = 'projection.events'::regclass AND attnum > 0 AND NOT attisdropped;
SELECT projection.append('tg-1', 'TgEvent', '{}') IS NOT NULL AS appended;
SELECT projection.rebuild('tg_counts');
SELECT projection.snapshot('tg_counts', 'tg-1');

-- the registry's handler column to text and back, as the README's
-- pg_upgrade steps do
ALTER TABLE projection.projections ALTER COLUMN handler TYPE text USING handler::text;
ALTER TABLE projection.projections ALTER COLUMN handler TYPE regprocedure USING handler::regprocedure;

-- what stays allowed: storage parameters, an index of one's own (renamed,
-- dropped), a table of one's own in the schema, a column dropped that is not
-- one of the seven (the first step of repairing a table altered before 1.8)
ALTER TABLE projection.events SET (fillfactor = 90);
ALTER TABLE projection.events RESET (fillfactor);
CREATE INDEX tg_event_type ON projection.events (event_type);
ALTER INDEX projection.tg_event_type RENAME TO tg_event_type2;
DROP INDEX projection.tg_event_type2;
CREATE TABLE projection.tg_mine (a int);
ALTER TABLE projection.tg_mine ADD COLUMN b int;
ALTER TABLE projection.tg_mine RENAME TO tg_mine2;
DROP TABLE projection.tg_mine2;
ALTER TABLE projection.events DROP COLUMN IF EXISTS tenant;
-- a table outside the extension that does not exist: PostgreSQL's own answer
ALTER TABLE IF EXISTS tg_nosuch ADD COLUMN b int;

-- the ROLLBACK of a failed transaction block reads no catalog in the hook
-- (an assertion failure of the assert-enabled server before)
BEGIN;
SELECT 1 / 0;
ROLLBACK;

SELECT projection.drop('tg_counts');
DROP FUNCTION tg_count;
