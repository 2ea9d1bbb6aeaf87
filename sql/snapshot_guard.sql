--
-- snapshot_guard: a snapshot projection's own batch statement (the one that
-- calls projection._snapshot_apply) cannot be removed with off_batch, and
-- on_batch and on() refuse snapshot projections; the view
-- projection.batch_statements lists batch statements as
-- projection.statements lists those of on()
--
CREATE ROLE regress_sg_owner NOLOGIN;
CREATE ROLE regress_sg_other NOLOGIN;
GRANT SELECT, INSERT, TRIGGER ON projection.events TO regress_sg_owner;
CREATE SCHEMA regress_sg AUTHORIZATION regress_sg_owner;
GRANT USAGE ON SCHEMA regress_sg TO PUBLIC;

SET ROLE regress_sg_owner;
CREATE FUNCTION regress_sg.count_fold(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
CREATE TABLE regress_sg.seen (global_position bigint PRIMARY KEY);
SELECT projection.create_snapshot('sg_counts', 'regress_sg.count_fold', event_types => '{SgTick}');
SELECT projection.create('sg_plain', NULL, event_types => '{SgTick}', tables => '{regress_sg.seen}');
SELECT projection.on_batch('sg_plain', 'INSERT INTO regress_sg.seen SELECT global_position FROM batch');
RESET ROLE;

SELECT projection.append('sg-1', 'SgTick', '{}') > 0 AS appended;
SELECT projection.append('sg-1', 'SgTick', '{}') > 0 AS appended;
SELECT max(global_position) AS last FROM projection.events \gset
SELECT projection.wait('sg_counts', :last, '30 s') AS caught_up;
SELECT stream_id, state FROM projection.snapshots WHERE name = 'sg_counts';

--
-- errors: each changes nothing
--
SET ROLE regress_sg_owner;
-- off_batch would remove the statement that writes the states
SELECT projection.off_batch('sg_counts');
\echo :LAST_ERROR_SQLSTATE
-- on_batch and on() would add handlers to a kind of projection that has one
SELECT projection.on_batch('sg_counts', 'SELECT count(*) FROM batch WHERE pg_catalog.random() < 2');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on('sg_counts', 'SgTick', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- ownership is still checked first
SET ROLE regress_sg_other;
SELECT projection.off_batch('sg_counts');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- the snapshot's statement is still its only one, and no per-event handler was added
SELECT h.seq, h.statement LIKE 'SELECT projection._snapshot_apply(%' AS snapshot_statement
  FROM projection.batch_handlers h JOIN projection.projections p ON p.id = h.projection_id
 WHERE p.name = 'sg_counts' ORDER BY h.seq;
SELECT count(*) AS handlers
  FROM projection.handlers h JOIN projection.projections p ON p.id = h.projection_id
 WHERE p.name = 'sg_counts';

-- and the states are still written
SELECT projection.append('sg-1', 'SgTick', '{}') > 0 AS appended;
SELECT max(global_position) AS last FROM projection.events \gset
SELECT projection.wait('sg_counts', :last, '30 s') AS caught_up;
SELECT stream_id, state, state = projection.snapshot('sg_counts', stream_id) AS current
  FROM projection.snapshots WHERE name = 'sg_counts';

--
-- projection.batch_statements: the batch statements, listable by everyone,
-- the text only for the owner's role and readers of the events
--
SET ROLE regress_sg_owner;
SELECT projection.on_batch('sg_plain', 'INSERT INTO regress_sg.seen SELECT global_position FROM batch ON CONFLICT DO NOTHING');
SELECT name, seq, statement, owner, snapshot FROM projection.batch_statements
 WHERE name LIKE 'sg\_%' ORDER BY name COLLATE "C", seq;
RESET ROLE;
-- another role sees that they exist, not their text
SET ROLE regress_sg_other;
SELECT name, seq, statement IS NULL AS masked, owner, snapshot FROM projection.batch_statements
 WHERE name LIKE 'sg\_%' ORDER BY name COLLATE "C", seq;
-- the table behind it stays closed
SELECT count(*) FROM projection.batch_handlers;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a role with SELECT on the events sees the text
GRANT SELECT ON projection.events TO regress_sg_other;
SET ROLE regress_sg_other;
SELECT count(statement) AS visible FROM projection.batch_statements WHERE name LIKE 'sg\_%';
RESET ROLE;
REVOKE SELECT ON projection.events FROM regress_sg_other;
-- projection.statements still lists only the statements of on()
SELECT count(*) AS on_statements FROM projection.statements WHERE name LIKE 'sg\_%';

-- an ordinary projection's batch statements are still removed by off_batch
SET ROLE regress_sg_owner;
SELECT projection.off_batch('sg_plain') AS removed;
RESET ROLE;
SELECT name, seq, snapshot FROM projection.batch_statements
 WHERE name LIKE 'sg\_%' ORDER BY name COLLATE "C", seq;

--
-- clean up
--
SELECT projection.drop('sg_counts');
SELECT projection.drop('sg_plain');
DROP SCHEMA regress_sg CASCADE;
REVOKE ALL ON projection.events FROM regress_sg_owner;
DROP ROLE regress_sg_owner;
DROP ROLE regress_sg_other;
