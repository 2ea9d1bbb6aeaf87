--
-- hostile_snapshot_fold: PL/pgSQL folds get each event row as a read/write
-- expanded record they take over without a copy, and their results are
-- kept without a copy (1.6).  Folds that change their event argument
-- (data, stream_id, metadata) and return something derived from it, that
-- raise after changing it (under on_error skip the event retried alone
-- must be the original one), that return a part of the event, their state
-- unchanged or NULL, that pass the event on to another function, an SQL
-- fold; five snapshot projections over the same events, in the worker's
-- catch-up, in rebuilds and in live rounds (where the five get the same
-- rows read).  Each stored state must equal the same fold run
-- as an SQL aggregate over the stream's events.  Then a fold that appends
-- from within (inline): the appended event is folded too, after it.
--
SET client_min_messages = warning;
CREATE SCHEMA hf;
CREATE FUNCTION hf.mod_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	orig jsonb := e.data;
BEGIN
	e.data := jsonb_build_object('mangled', true, 'i', -1);
	e.stream_id := 'mangled';
	e.metadata := '{"m": 1}';
	IF orig ? 'poison' THEN
		RAISE EXCEPTION 'poison event %', e.global_position;
	END IF;
	RETURN coalesce(s, '{}') || jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1,
		'sum', coalesce((s->>'sum')::int, 0) + coalesce((orig->>'i')::int, 0), 'sid', e.stream_id);
END $$;
-- what every other fold (and the retried event) must see: the original event
CREATE FUNCTION hf.plain_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	RETURN coalesce(s, '{}') || jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1,
		'sum', coalesce((s->>'sum')::int, 0) + coalesce((e.data->>'i')::int, 0), 'sid', e.stream_id,
		'mangled', e.data ? 'mangled', 'meta', e.metadata);
END $$;
-- the event's metadata itself, its state unchanged, NULL, its changed data
CREATE FUNCTION hf.take_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF e.event_type = 'HfMeta' THEN
		RETURN e.metadata;
	END IF;
	IF (e.data->>'i')::int % 3 = 0 THEN
		RETURN s;
	END IF;
	IF (e.data->>'i')::int % 7 = 0 THEN
		RETURN NULL;
	END IF;
	e.data := e.data || jsonb_build_object('prev', s->'i');
	RETURN e.data;
END $$;
-- the event passed on to a function that changes its copy
CREATE FUNCTION hf.pass(e projection.events) RETURNS projection.events
LANGUAGE plpgsql AS $$
BEGIN
	e.data := '{"passed": 1}';
	RETURN e;
END $$;
CREATE FUNCTION hf.call_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	f projection.events;
BEGIN
	f := hf.pass(e);
	RETURN coalesce(s, '{}') || jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1,
		'f', f.data, 'e', e.data->'i', 'row', to_jsonb(e)->'metadata');
END $$;
CREATE FUNCTION hf.sql_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS
	'SELECT coalesce($1, ''{}'') || jsonb_build_object(''n'', coalesce(($1->>''n'')::int, 0) + 1, ''d'', $2.data)';
CREATE AGGREGATE hf.mod_agg(projection.events) (sfunc = hf.mod_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE hf.plain_agg(projection.events) (sfunc = hf.plain_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE hf.take_agg(projection.events) (sfunc = hf.take_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE hf.call_agg(projection.events) (sfunc = hf.call_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE hf.sql_agg(projection.events) (sfunc = hf.sql_fold, stype = jsonb, initcond = '{}');
-- per projection: its streams whose state is not the aggregate's (poison events left out)
CREATE FUNCTION hf.differences() RETURNS TABLE (name text, streams bigint, wrong bigint)
LANGUAGE sql AS $$
	WITH f AS (
		SELECT e.stream_id,
			   hf.mod_agg(e ORDER BY e.global_position) FILTER (WHERE NOT e.data ? 'poison') AS mod,
			   hf.plain_agg(e ORDER BY e.global_position) AS plain,
			   hf.take_agg(e ORDER BY e.global_position) AS take,
			   hf.call_agg(e ORDER BY e.global_position) AS call,
			   hf.sql_agg(e ORDER BY e.global_position) AS sql
		  FROM projection.events e WHERE e.stream_id LIKE 'hf-%' GROUP BY 1)
	SELECT s.name, count(*),
		   count(*) FILTER (WHERE s.state IS DISTINCT FROM
							CASE s.name WHEN 'hf_mod' THEN f.mod WHEN 'hf_plain' THEN f.plain
							WHEN 'hf_take' THEN f.take WHEN 'hf_call' THEN f.call ELSE f.sql END)
	  FROM projection.snapshots s JOIN f USING (stream_id)
	 WHERE s.name LIKE 'hf\_%' GROUP BY 1 ORDER BY 1
$$;
-- 3,000 events of four streams, two of them poison (one in the middle of a batch)
INSERT INTO projection.events (stream_id, stream_version, event_type, data, metadata)
SELECT 'hf-' || (i % 4), i / 4 + 1, CASE WHEN i % 50 = 49 THEN 'HfMeta' ELSE 'HfE' END,
	   CASE WHEN i IN (1234, 2501) THEN jsonb_build_object('i', i, 'poison', true)
			ELSE jsonb_build_object('i', i) END,
	   jsonb_build_object('mi', i)
  FROM generate_series(0, 2999) i;
-- and a stream whose data and metadata are compressed in line, one whose data is out of line (TOAST)
INSERT INTO projection.events (stream_id, stream_version, event_type, data, metadata)
SELECT 'hf-zip', i + 1, CASE WHEN i % 2 = 0 THEN 'HfMeta' ELSE 'HfE' END,
	   jsonb_build_object('i', i, 'pad', repeat('z', 6000)), jsonb_build_object('pad', repeat('m', 6000 + i))
  FROM generate_series(0, 19) i;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'hf-big', i + 1, 'HfE', jsonb_build_object('i', i, 'pad', (SELECT string_agg(md5((i * 1000 + j)::text), '')
																   FROM generate_series(1, 300) j))
  FROM generate_series(0, 9) i;
-- (hf-zip's values are smaller than their text: compressed; hf-big's larger than a page: out of line)
SELECT stream_id, bool_and(pg_column_size(data) < octet_length(data::text)) AS compressed,
	   bool_and(pg_column_size(data) > 8192) AS larger_than_a_page
  FROM projection.events WHERE stream_id IN ('hf-zip', 'hf-big') GROUP BY 1 ORDER BY 1;
SET projection.replay_batch_size = 1000;
SELECT projection.create_snapshot('hf_mod', 'hf.mod_fold', event_types => '{HfE,HfMeta}', on_error => 'skip');
SELECT projection.create_snapshot('hf_plain', 'hf.plain_fold', event_types => '{HfE,HfMeta}');
SELECT projection.create_snapshot('hf_take', 'hf.take_fold', event_types => '{HfE,HfMeta}');
SELECT projection.create_snapshot('hf_call', 'hf.call_fold', event_types => '{HfE,HfMeta}');
SELECT projection.create_snapshot('hf_sql', 'hf.sql_fold', event_types => '{HfE,HfMeta}');
SELECT n, projection.wait(n, (SELECT max(global_position) FROM projection.events), '60 s')
  FROM unnest('{hf_mod,hf_plain,hf_take,hf_call,hf_sql}'::text[]) n;
-- the worker's rounds
SELECT * FROM hf.differences();
SELECT d.name, e.data FROM projection.dead_letters d JOIN projection.events e USING (global_position)
 WHERE d.name LIKE 'hf\_%' ORDER BY 1, 2;
-- the rebuilds
SELECT n, projection.rebuild(n) > 0 AS rebuilt FROM unnest('{hf_mod,hf_plain,hf_take,hf_call,hf_sql}'::text[]) n;
SELECT * FROM hf.differences();
SELECT d.name, e.data FROM projection.dead_letters d JOIN projection.events e USING (global_position)
 WHERE d.name LIKE 'hf\_%' ORDER BY 1, 2;
-- live rounds after the catch-up: the five projections' batches over the same rows read
INSERT INTO projection.events (stream_id, stream_version, event_type, data, metadata)
SELECT 'hf-' || (i % 4), i / 4 + 1, CASE WHEN i % 50 = 49 THEN 'HfMeta' ELSE 'HfE' END,
	   CASE WHEN i = 3101 THEN jsonb_build_object('i', i, 'poison', true) ELSE jsonb_build_object('i', i) END,
	   jsonb_build_object('mi', i)
  FROM generate_series(3000, 3199) i;
SELECT n, projection.wait(n, (SELECT max(global_position) FROM projection.events), '60 s')
  FROM unnest('{hf_mod,hf_plain,hf_take,hf_call,hf_sql}'::text[]) n;
SELECT * FROM hf.differences();
SELECT d.name, e.data FROM projection.dead_letters d JOIN projection.events e USING (global_position)
 WHERE d.name LIKE 'hf\_%' ORDER BY 1, 2;
-- snapshot() folds the same (no events after the states: the stored ones)
SELECT s.name, count(*) FILTER (WHERE s.state IS DISTINCT FROM projection.snapshot(s.name, s.stream_id)) AS wrong
  FROM projection.snapshots s WHERE s.name LIKE 'hf\_%' GROUP BY 1 ORDER BY 1;
SELECT stream_id, state FROM projection.snapshots WHERE name = 'hf_mod' AND stream_id LIKE 'hf-_' ORDER BY 1;
SELECT n, projection.drop(n) FROM unnest('{hf_mod,hf_plain,hf_take,hf_call,hf_sql}'::text[]) n;
--
-- inline: a fold that appends an event from within; the appended event is
-- folded after the one that appended it, in this transaction
--
CREATE FUNCTION hf.append_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF e.event_type = 'HfA' THEN
		PERFORM projection.append(e.stream_id, 'HfB', jsonb_build_object('after', e.stream_version));
		e.event_type := 'changed';
	END IF;
	RETURN jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1,
							  'types', coalesce(s->'types', '[]') || to_jsonb(e.event_type));
END $$;
SELECT projection.create_snapshot('hf_append', 'hf.append_fold', event_types => '{HfA,HfB}', mode => 'inline');
SELECT projection.append('hf-inline', 'HfA', '{}') > 0 AS appended;
BEGIN;
SELECT projection.append('hf-inline', 'HfA', '{}') > 0 AS appended;
SELECT projection.append('hf-inline', 'HfB', '{}') > 0 AS appended;
COMMIT;
SELECT stream_version, event_type, data FROM projection.events WHERE stream_id = 'hf-inline' ORDER BY 1;
SELECT state, version FROM projection.snapshots WHERE name = 'hf_append';
SELECT projection.snapshot('hf_append', 'hf-inline');
SELECT projection.drop('hf_append');
DROP SCHEMA hf CASCADE;
