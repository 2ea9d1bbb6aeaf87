--
-- snapshot_batches: a snapshot projection's batches folded directly (1.6):
-- streams whose events span several batches (worker catch-up and
-- rebuild), a rebuild over the states it emptied, a fold error in the
-- middle of a large batch (on_error skip and stop), event data kept out
-- of line (TOAST), folds in SQL (their results copied), events given out
-- of position order
--
SET client_min_messages = warning;
CREATE SCHEMA sb;
-- PL/pgSQL: the event as an expanded record, the result taken as it is
CREATE FUNCTION sb.count_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF e.data ? 'poison' THEN
		RAISE EXCEPTION 'poison event % of stream %', e.stream_version, e.stream_id;
	END IF;
	RETURN jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1,
							  'sum', coalesce((s->>'sum')::bigint, 0) + coalesce((e.data->>'i')::bigint, 0),
							  'last', e.stream_version,
							  'pad', coalesce(length(e.data->>'pad'), (s->>'pad')::int, 0));
END
$$;
-- SQL: a result that is its argument, or a part of the event, is copied
CREATE FUNCTION sb.sql_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN e.event_type = 'SbSkip' THEN s
				WHEN e.event_type = 'SbTake' THEN e.data
				ELSE s || jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1) END
$$;
-- the same folds as SQL aggregates, to compare each stored state with
CREATE AGGREGATE sb.count_agg(projection.events) (sfunc = sb.count_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE sb.sql_agg(projection.events) (sfunc = sb.sql_fold, stype = jsonb, initcond = '{}');
-- streams whose stored state is not the fold of their events, or not what snapshot() says
CREATE FUNCTION sb.differences(p text) RETURNS bigint
LANGUAGE sql AS $$
	SELECT count(*)
	  FROM (SELECT e.stream_id, sb.count_agg(e ORDER BY e.global_position) AS state
			  FROM projection.events e WHERE e.event_type = 'SbCount' GROUP BY e.stream_id) f
	  FULL JOIN (SELECT * FROM projection.snapshots WHERE name = p) x USING (stream_id)
	 WHERE x.state IS DISTINCT FROM f.state
		OR x.state IS DISTINCT FROM projection.snapshot(p, coalesce(x.stream_id, f.stream_id))
$$;
-- 2,500 events of three streams, interleaved: each stream's events span
-- the worker's and a rebuild's batches (1,000 events at least)
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-' || (i % 3), i / 3 + 1, 'SbCount', jsonb_build_object('i', i)
  FROM generate_series(0, 2499) i;
SET projection.replay_batch_size = 1000;
--
-- async: the worker's catch-up, then rebuilds over the emptied states
--
SELECT projection.create_snapshot('sb_counts', 'sb.count_fold', event_types => '{SbCount}');
SELECT projection.wait('sb_counts', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT stream_id, state->>'n' AS n, state->>'sum' AS sum, version, state->>'last' AS last
  FROM projection.snapshots WHERE name = 'sb_counts' ORDER BY stream_id COLLATE "C";
SELECT sb.differences('sb_counts');
SELECT projection.rebuild('sb_counts');
SELECT stream_id, state->>'n' AS n, state->>'sum' AS sum, version
  FROM projection.snapshots WHERE name = 'sb_counts' ORDER BY stream_id COLLATE "C";
SELECT sb.differences('sb_counts');
-- twice in one transaction, and a rebuild rolled back to a savepoint:
-- the states are the old ones again, and the next rebuild loads them
BEGIN;
SELECT projection.rebuild('sb_counts');
SAVEPOINT s;
SELECT projection.rebuild('sb_counts');
ROLLBACK TO s;
SELECT count(*) AS states FROM projection.snapshots WHERE name = 'sb_counts';
SELECT projection.rebuild('sb_counts');
COMMIT;
SELECT sb.differences('sb_counts');
-- events after the rebuild go to the worker, on top of the rebuilt states
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-' || (i % 3), i / 3 + 1, 'SbCount', jsonb_build_object('i', i)
  FROM generate_series(2500, 2505) i;
SELECT projection.wait('sb_counts', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT stream_id, state->>'n' AS n, version FROM projection.snapshots
 WHERE name = 'sb_counts' ORDER BY stream_id COLLATE "C";
SELECT sb.differences('sb_counts');
--
-- a poison event in the middle of a large batch
--
SELECT projection.pause('sb_counts');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-' || (i % 3), i / 3 + 1,  'SbCount',
	   CASE WHEN i = 2800 THEN jsonb_build_object('i', i, 'poison', true) ELSE jsonb_build_object('i', i) END
  FROM generate_series(2506, 3999) i;
-- on_error skip: the worker retries the batch event by event, the poison
-- event becomes a dead letter, the stream's later events are folded
SELECT projection.create_snapshot('sb_skip', 'sb.count_fold', event_types => '{SbCount}', on_error => 'skip');
SELECT projection.wait('sb_skip', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT d.stream_id, e.stream_version, d.sqlstate, d.error FROM projection.dead_letters d
  JOIN projection.events e USING (global_position) WHERE d.name = 'sb_skip';
SELECT stream_id, state->>'n' AS n, version FROM projection.snapshots
 WHERE name = 'sb_skip' ORDER BY stream_id COLLATE "C";
-- the poison event's stream misses one event; snapshot() leaves it out too
SELECT x.stream_id, projection.snapshot('sb_skip', x.stream_id) = x.state AS fresh_is_stored,
	   (x.state->>'n')::int AS n,
	   (SELECT count(*) FROM projection.events e WHERE e.stream_id = x.stream_id) AS events
  FROM projection.snapshots x WHERE x.name = 'sb_skip' ORDER BY x.stream_id COLLATE "C";
-- the rebuild does the same, over large batches (the retry event by event
-- writes states the rebuild then loads)
SELECT projection.rebuild('sb_skip');
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'sb_skip';
SELECT stream_id, state->>'n' AS n, version FROM projection.snapshots
 WHERE name = 'sb_skip' ORDER BY stream_id COLLATE "C";
-- on_error stop: the rebuild fails at the poison event and changes nothing
\set VERBOSITY terse
SELECT projection.rebuild('sb_counts');
\set VERBOSITY default
SELECT state FROM projection.status WHERE name = 'sb_counts';
SELECT stream_id, state->>'n' AS n, version FROM projection.snapshots
 WHERE name = 'sb_counts' ORDER BY stream_id COLLATE "C";
SELECT projection.drop('sb_counts');
SELECT projection.drop('sb_skip');
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'sb_skip';
--
-- event data kept out of line (TOAST): worker, rebuild, inline
--
CREATE TABLE sb.big AS
SELECT string_agg(md5(i::text), '') AS pad FROM generate_series(1, 4000) i;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-big', v, 'SbBig', jsonb_build_object('i', v, 'pad', b.pad)
  FROM generate_series(1, 3) v, sb.big b;
-- and compressed in line
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-zip', v, 'SbBig', jsonb_build_object('i', v, 'pad', repeat('ab', 2000))
  FROM generate_series(1, 3) v;
-- (sb-big's data is larger than a page: out of line; sb-zip's compressed in line)
SELECT stream_id, bool_and(pg_column_size(data) > 8192) AS out_of_line,
	   bool_and(pg_column_size(data) < length(data->>'pad')) AS compressed
  FROM projection.events WHERE stream_id IN ('sb-big', 'sb-zip') GROUP BY 1 ORDER BY 1;
SELECT projection.create_snapshot('sb_big', 'sb.count_fold', event_types => '{SbBig}');
SELECT projection.wait('sb_big', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT stream_id, state FROM projection.snapshots WHERE name = 'sb_big' ORDER BY 1;
SELECT projection.rebuild('sb_big');
SELECT stream_id, state FROM projection.snapshots WHERE name = 'sb_big' ORDER BY 1;
SELECT projection.drop('sb_big');
SELECT projection.create_snapshot('sb_big_inline', 'sb.count_fold', event_types => '{SbBig}', mode => 'inline');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-big', v, 'SbBig', jsonb_build_object('i', v, 'pad', b.pad || 'y')
  FROM generate_series(4, 5) v, sb.big b;
SELECT stream_id, state FROM projection.snapshots WHERE name = 'sb_big_inline' ORDER BY 1;
SELECT projection.drop('sb_big_inline');
--
-- a fold in SQL: results that are its argument or a part of the event
--
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('sb-sql', 1, 'SbCount', '{}'), ('sb-sql', 2, 'SbTake', '{"taken": 1}'), ('sb-sql', 3, 'SbSkip', '{}'),
	   ('sb-sql', 4, 'SbCount', '{}'), ('sb-sql', 5, 'SbSkip', '{}');
SELECT projection.create_snapshot('sb_sql', 'sb.sql_fold', event_types => '{SbCount,SbTake,SbSkip}');
SELECT projection.wait('sb_sql', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT state FROM projection.snapshots WHERE name = 'sb_sql' AND stream_id = 'sb-sql';
SELECT projection.rebuild('sb_sql');
SELECT state, state = (SELECT sb.sql_agg(e ORDER BY e.global_position) FROM projection.events e
						WHERE e.stream_id = 'sb-sql') AS same
  FROM projection.snapshots WHERE name = 'sb_sql' AND stream_id = 'sb-sql';
SELECT projection.create_snapshot('sb_sql_inline', 'sb.sql_fold', event_types => '{SbCount,SbTake,SbSkip}', mode => 'inline');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('sb-sql', 6, 'SbTake', '{"taken": 2}'), ('sb-sql', 7, 'SbSkip', '{}'), ('sb-sql', 8, 'SbCount', '{}');
SELECT state FROM projection.snapshots WHERE name = 'sb_sql_inline' AND stream_id = 'sb-sql';
SELECT projection.drop('sb_sql');
SELECT projection.drop('sb_sql_inline');
--
-- a PL/pgSQL fold that passes its event on as a whole row: the expanded
-- record over the row read is flattened into a proper composite
--
CREATE FUNCTION sb.row_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	RETURN s || jsonb_build_object('rows', coalesce(s->'rows', '[]') ||
		jsonb_build_array(to_jsonb(e) - 'global_position' - 'recorded_at'),
		'typed', pg_typeof(e)::text, 'same', (e).stream_id = (e::projection.events).stream_id);
END
$$;
CREATE AGGREGATE sb.row_agg(projection.events) (sfunc = sb.row_fold, stype = jsonb, initcond = '{}');
SELECT projection.create_snapshot('sb_rows', 'sb.row_fold', event_types => '{SbBig,SbRow}');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('sb-row', 1, 'SbRow', '{"a": 1}'), ('sb-row', 2, 'SbRow', '{"b": [2, 3]}');
SELECT projection.wait('sb_rows', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT state->'rows' AS rows, state->>'typed' AS typed, state->>'same' AS same
  FROM projection.snapshots WHERE name = 'sb_rows' AND stream_id = 'sb-row';
SELECT projection.rebuild('sb_rows');
SELECT count(*) AS differ
  FROM (SELECT e.stream_id, sb.row_agg(e ORDER BY e.global_position) AS state
		  FROM projection.events e WHERE e.event_type IN ('SbBig', 'SbRow') GROUP BY e.stream_id) f
  FULL JOIN (SELECT * FROM projection.snapshots WHERE name = 'sb_rows') x USING (stream_id)
 WHERE x.state IS DISTINCT FROM f.state;
SELECT projection.drop('sb_rows');
--
-- _snapshot_apply called directly, even by the owner with real events: refused (42501), no state written
--
SELECT projection.create_snapshot('sb_order', 'sb.count_fold', event_types => '{SbOrder}');
SELECT projection.pause('sb_order');
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sb-o' || (v % 2), v / 2 + 1, 'SbOrder', jsonb_build_object('i', v) FROM generate_series(0, 9) v;
SELECT projection._snapshot_apply('sb_order', array_agg(e ORDER BY e.global_position DESC))
  FROM projection.events e WHERE e.stream_id IN ('sb-o0', 'sb-o1');
SELECT stream_id, state->>'n' AS n, state->>'sum' AS sum, state->>'last' AS last, version
  FROM projection.snapshots WHERE name = 'sb_order' ORDER BY stream_id COLLATE "C";
SELECT projection.drop('sb_order');
DROP SCHEMA sb CASCADE;
RESET projection.replay_batch_size;
RESET client_min_messages;
