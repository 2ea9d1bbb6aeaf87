--
-- snapshot_sql_fold: a fold written in LANGUAGE sql with an SQL-standard
-- body (RETURN expr, BEGIN ATOMIC SELECT expr; END) is evaluated as an
-- expression, with no function call per event (1.7), in snapshot batches
-- (inline, the worker's catch-up, rebuild), in snapshot()'s fold-forward
-- and in aggregate(); any other fold is called through fmgr.  The results
-- must be those of the same fold in PL/pgSQL; the choice is shown by a
-- DEBUG2 line; an error inside the body names the fold and the event; a
-- redefined fold's new body is used by the next batch, aggregate() and
-- snapshot(), and its digest changes (aggregate() stops starting from the
-- states folded by the old body); strictness, SECURITY DEFINER, SET
-- clauses and the privileges of the functions the body calls behave as
-- for a call.
--
SET client_min_messages = warning;
CREATE SCHEMA sqf;
CREATE FUNCTION sqf.fold_plpgsql(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE e.event_type
    WHEN 'SqfAdd' THEN
        jsonb_set(s, '{n}', to_jsonb(coalesce((s->'n')::int, 0) + (e.data->'q')::int))
    WHEN 'SqfName' THEN s || jsonb_build_object('name', e.data->'name', 'v', e.stream_version)
    WHEN 'SqfNull' THEN NULL
    ELSE s END;
END $$;
CREATE FUNCTION sqf.fold_sql(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN CASE e.event_type
    WHEN 'SqfAdd' THEN
        jsonb_set(s, '{n}', to_jsonb(coalesce((s->'n')::int, 0) + (e.data->'q')::int))
    WHEN 'SqfName' THEN s || jsonb_build_object('name', e.data->'name', 'v', e.stream_version)
    WHEN 'SqfNull' THEN NULL
    ELSE s END;
CREATE FUNCTION sqf.fold_atomic(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT CASE e.event_type
        WHEN 'SqfAdd' THEN
            jsonb_set(s, '{n}', to_jsonb(coalesce((s->'n')::int, 0) + (e.data->'q')::int))
        WHEN 'SqfName' THEN s || jsonb_build_object('name', e.data->'name', 'v', e.stream_version)
        WHEN 'SqfNull' THEN NULL
        ELSE s END;
END;
-- bodies that are not one expression alone: a FROM clause, a sublink
CREATE FUNCTION sqf.fold_from(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT sqf.fold_sql(s, e) FROM (VALUES (1)) v(k) WHERE k = 1;
END;
CREATE FUNCTION sqf.fold_sublink(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN (SELECT sqf.fold_sql(s, e));
-- a string body, VOLATILE, SET clauses
CREATE FUNCTION sqf.fold_string(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS 'SELECT sqf.fold_sql(s, e)';
CREATE FUNCTION sqf.fold_volatile(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql RETURN sqf.fold_sql(s, e);
CREATE FUNCTION sqf.fold_set(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog RETURN sqf.fold_sql(s, e);
CREATE AGGREGATE sqf.oracle(projection.events) (sfunc = sqf.fold_plpgsql, stype = jsonb, initcond = '{}');

INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sqf-' || s, v,
       CASE WHEN v % 5 = 0 THEN 'SqfName' WHEN s = 3 AND v = 7 THEN 'SqfNull'
            WHEN v % 7 = 0 THEN 'SqfOther' ELSE 'SqfAdd' END,
       jsonb_build_object('q', v * s, 'name', 'n' || v)
  FROM generate_series(1, 4) s, generate_series(1, 12) v;

-- which folds are evaluated as expressions
SET client_min_messages = debug2;
SELECT projection.aggregate('sqf-1', 'sqf.fold_sql') = projection.aggregate('sqf-1', 'sqf.fold_plpgsql') AS same;
SELECT projection.aggregate('sqf-1', 'sqf.fold_atomic') = projection.aggregate('sqf-1', 'sqf.fold_plpgsql') AS same;
SELECT f, projection.aggregate('sqf-2', f::regproc) = projection.aggregate('sqf-2', 'sqf.fold_plpgsql') AS same
  FROM unnest('{sqf.fold_from,sqf.fold_sublink,sqf.fold_string,sqf.fold_volatile,sqf.fold_set}'::text[]) f;
SET client_min_messages = warning;

-- the same states as the PL/pgSQL fold: inline batches, one statement per stream
SELECT projection.create_snapshot('sqf_' || f, ('sqf.fold_' || f)::regproc,
                                  event_types => '{SqfAdd,SqfName,SqfNull,SqfOther}', mode => 'inline')
  FROM unnest('{plpgsql,sql,atomic,from}'::text[]) f;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'sqf-' || s, v, CASE WHEN v % 5 = 0 THEN 'SqfName' ELSE 'SqfAdd' END,
       jsonb_build_object('q', v, 'name', 'm' || v)
  FROM generate_series(1, 4) s, generate_series(13, 20) v;
SELECT projection.append('sqf-5', 'SqfAdd', '{"q": 5}') > 0 AS appended;
-- and through the worker's catch-up and a rebuild (every event type, async)
SELECT projection.create_snapshot('sqf_async', 'sqf.fold_sql');
SELECT projection.wait('sqf_async', (SELECT max(global_position) FROM projection.events), '60 s');
CREATE VIEW sqf.check AS
SELECT s.name, count(*) AS streams,
       count(*) FILTER (WHERE s.state IS DISTINCT FROM
           (SELECT sqf.oracle(e ORDER BY e.global_position) FROM projection.events e
             WHERE e.stream_id = s.stream_id)) AS wrong
  FROM projection.snapshots s WHERE s.name LIKE 'sqf\_%' AND s.stream_id LIKE 'sqf-%'
 GROUP BY s.name ORDER BY s.name COLLATE "C";
SELECT * FROM sqf.check;
SELECT projection.rebuild('sqf_async') > 0 AS rebuilt;
SELECT projection.rebuild('sqf_sql') > 0 AS rebuilt;
SELECT * FROM sqf.check;
-- the NULL state of a non-strict fold stays NULL (NULL || ... is NULL)
SELECT stream_id, state FROM projection.snapshots WHERE name = 'sqf_sql' AND state IS NULL;

-- an error inside the body names the fold and the event (the position masked)
SELECT projection.drop('sqf_' || f) FROM unnest('{plpgsql,atomic,from}'::text[]) f;
CREATE FUNCTION sqf.error_context(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    ctx text;
BEGIN
    EXECUTE stmt;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, ctx = PG_EXCEPTION_CONTEXT;
    RETURN msg || E'\n' || regexp_replace(split_part(ctx, E'\n', 1), 'position [0-9]+', 'position N');
END $$;
SELECT sqf.error_context($$SELECT projection.append('sqf-1', 'SqfAdd', '{"q": "x"}')$$);
BEGIN;
SELECT projection.drop('sqf_sql');
SELECT projection.pause('sqf_async');
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES ('sqf-bad', 1, 'SqfAdd', '{"q": []}');
SELECT sqf.error_context($$SELECT projection.aggregate('sqf-bad', 'sqf.fold_sql')$$);
SELECT sqf.error_context($$SELECT projection.snapshot('sqf_async', 'sqf-bad')$$);
ROLLBACK;
SELECT projection.drop('sqf_sql');

-- a redefined fold: the next batch, snapshot() and aggregate() use the new
-- body, and aggregate() no longer starts from the states of the old one
SELECT projection.create_snapshot('sqf_inline', 'sqf.fold_sql', event_types => '{SqfAdd}', mode => 'inline');
SELECT projection.append('sqf-6', 'SqfAdd', '{"q": 1}') > 0 AS appended;
SELECT projection.wait('sqf_async', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT projection.pause('sqf_async');
SELECT fold_definition IS NOT NULL AS recorded FROM projection.snapshot_defs d
  JOIN projection.projections p ON p.id = d.projection_id WHERE p.name = 'sqf_async';
CREATE OR REPLACE FUNCTION sqf.fold_sql(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_set(s, '{n}', to_jsonb(coalesce((s->'n')::int, 0) + 100));
SELECT projection.append('sqf-6', 'SqfAdd', '{"q": 1}') > 0 AS appended;
SELECT state FROM projection.snapshots WHERE name = 'sqf_inline' AND stream_id = 'sqf-6';
SELECT state FROM projection.snapshots WHERE name = 'sqf_async' AND stream_id = 'sqf-6';
SELECT projection.snapshot('sqf_async', 'sqf-6');
SET client_min_messages = debug1;
SELECT projection.aggregate('sqf-6', 'sqf.fold_sql');
SET client_min_messages = warning;
SELECT projection.resume('sqf_async');
SELECT projection.wait('sqf_async', (SELECT max(global_position) FROM projection.events), '60 s');
SELECT fold_definition IS NULL AS forgotten FROM projection.snapshot_defs d
  JOIN projection.projections p ON p.id = d.projection_id WHERE p.name = 'sqf_async';
SELECT state FROM projection.snapshots WHERE name = 'sqf_async' AND stream_id = 'sqf-6';
SELECT projection.drop('sqf_inline');

-- STRICT: a NULL state stays NULL without evaluating the body
CREATE FUNCTION sqf.fold_strict(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT
RETURN CASE WHEN e.event_type = 'SqfNull' THEN NULL
            ELSE coalesce(s, '{"revived": true}') || jsonb_build_object('v', e.stream_version) END;
SELECT projection.create_snapshot('sqf_strict', 'sqf.fold_strict', event_types => '{SqfAdd,SqfNull}', mode => 'inline');
SELECT projection.append('sqf-7', t, '{}') > 0 AS appended FROM unnest('{SqfAdd,SqfNull,SqfAdd}'::text[]) t;
SELECT state FROM projection.snapshots WHERE name = 'sqf_strict' AND stream_id = 'sqf-7';
SELECT projection.snapshot('sqf_strict', 'sqf-7');
SELECT projection.aggregate('sqf-7', 'sqf.fold_strict');
SELECT projection.drop('sqf_strict');

-- SECURITY DEFINER runs as its owner; any other fold as the projection's owner
CREATE ROLE regress_sqf_definer;
CREATE FUNCTION sqf.fold_definer(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY DEFINER RETURN s || jsonb_build_object('user', current_user);
ALTER FUNCTION sqf.fold_definer(jsonb, projection.events) OWNER TO regress_sqf_definer;
CREATE FUNCTION sqf.fold_invoker(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE RETURN s || jsonb_build_object('user', current_user);
SELECT projection.create_snapshot('sqf_' || f, ('sqf.fold_' || f)::regproc, event_types => '{SqfWho}', mode => 'inline')
  FROM unnest('{definer,invoker}'::text[]) f;
SET client_min_messages = debug2;
SELECT projection.append('sqf-8', 'SqfWho', '{}') > 0 AS appended;
SET client_min_messages = warning;
SELECT name, state->>'user' = CASE name WHEN 'sqf_definer' THEN 'regress_sqf_definer' ELSE current_user::text END AS right_user
  FROM projection.snapshots WHERE stream_id = 'sqf-8' AND name IN ('sqf_definer', 'sqf_invoker')
 ORDER BY name COLLATE "C";
SELECT projection.aggregate('sqf-8', 'sqf.fold_definer')->>'user' AS definer;
SELECT projection.drop('sqf_' || f) FROM unnest('{definer,invoker}'::text[]) f;

-- the functions the body calls are executed with the rights of the user the
-- fold runs as (checked when the batch's expression is prepared)
CREATE ROLE regress_sqf_user;
GRANT USAGE ON SCHEMA sqf TO regress_sqf_user;
GRANT SELECT ON projection.events TO regress_sqf_user;
CREATE FUNCTION sqf.secret(s jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN s || '{"secret": true}';
END $$;
REVOKE EXECUTE ON FUNCTION sqf.secret(jsonb) FROM PUBLIC;
CREATE FUNCTION sqf.fold_secret(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE RETURN sqf.secret(s);
SELECT projection.aggregate('sqf-8', 'sqf.fold_secret');
SET ROLE regress_sqf_user;
SELECT sqf.error_context($$SELECT projection.aggregate('sqf-8', 'sqf.fold_secret')$$);
RESET ROLE;

-- the event passed on whole to a function that changes its copy: the body
-- still sees the event as it is
CREATE FUNCTION sqf.mangle(s jsonb, e projection.events) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    e.stream_id := 'mangled';
    e.data := '{}';
    RETURN s || jsonb_build_object('inner', e.stream_id);
END $$;
CREATE FUNCTION sqf.fold_pass(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN sqf.mangle(s, e) || jsonb_build_object('outer', e.stream_id, 'data', e.data, 'again', sqf.mangle('{}', e));
SELECT projection.create_snapshot('sqf_pass', 'sqf.fold_pass', event_types => '{SqfWho}', mode => 'inline');
SELECT projection.append('sqf-9', 'SqfWho', '{"d": 1}') > 0 AS appended;
SELECT state FROM projection.snapshots WHERE name = 'sqf_pass';
SELECT projection.aggregate('sqf-9', 'sqf.fold_pass');
SELECT projection.drop('sqf_pass');

-- an event with a value kept out of line (TOAST): the body reads it
CREATE FUNCTION sqf.fold_len(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN s || jsonb_build_object('len', length(e.data->>'blob'), 'md5', md5(e.data->>'blob'), 'sid', e.stream_id);
SELECT projection.create_snapshot('sqf_len', 'sqf.fold_len', event_types => '{SqfBlob}', mode => 'inline');
SELECT projection.append('sqf-10', 'SqfBlob',
                         jsonb_build_object('blob', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 20000) i))) > 0 AS appended;
SELECT state->'len' AS len, state->>'md5' = (SELECT md5(string_agg(md5(i::text), '')) FROM generate_series(1, 20000) i) AS same_md5,
       state->'sid' AS sid
  FROM projection.snapshots WHERE name = 'sqf_len';
SELECT projection.aggregate('sqf-10', 'sqf.fold_len') = (SELECT state FROM projection.snapshots WHERE name = 'sqf_len') AS same;
SELECT projection.drop('sqf_len');

-- a compressed value (stored inline or out of line) read in three places,
-- in the branch taken and not in the other: each column is made plain at
-- its first reference of an event (1.8), the same result as the PL/pgSQL
-- twin's through fmgr, for every event, inline and in a rebuild
CREATE FUNCTION sqf.fold_three(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN e.event_type = 'SqfPacked'
            THEN s || jsonb_build_object('a', e.data->'a', 'b', e.data->'b',
                                         'len', length(e.data->>'pad'), 'n', coalesce((s->>'n')::int, 0) + 1)
            ELSE s || jsonb_build_object('meta', e.metadata, 'other', e.data->'a') END;
CREATE FUNCTION sqf.fold_three_plpgsql(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN CASE WHEN e.event_type = 'SqfPacked'
                THEN s || jsonb_build_object('a', e.data->'a', 'b', e.data->'b',
                                             'len', length(e.data->>'pad'), 'n', coalesce((s->>'n')::int, 0) + 1)
                ELSE s || jsonb_build_object('meta', e.metadata, 'other', e.data->'a') END;
END $$;
SELECT projection.create_snapshot('sqf_three', 'sqf.fold_three', event_types => '{SqfPacked,SqfPlain}', mode => 'inline');
INSERT INTO projection.events (stream_id, event_type, data, metadata)
SELECT 'sqf-11', CASE WHEN i % 3 = 0 THEN 'SqfPlain' ELSE 'SqfPacked' END,
       jsonb_build_object('a', i, 'b', -i, 'pad', repeat(md5(i::text), 100 * i)),
       jsonb_build_object('i', i)
  FROM generate_series(1, 12) i;
SELECT state - 'meta' AS state, state->'meta' AS meta FROM projection.snapshots WHERE name = 'sqf_three';
SELECT projection.aggregate('sqf-11', 'sqf.fold_three_plpgsql') = projection.snapshot('sqf_three', 'sqf-11') AS same_as_plpgsql;
SELECT projection.rebuild('sqf_three');
SELECT projection.aggregate('sqf-11', 'sqf.fold_three_plpgsql') = projection.snapshot('sqf_three', 'sqf-11') AS same_after_rebuild;
SELECT projection.drop('sqf_three');

SELECT projection.drop('sqf_async');
DROP SCHEMA sqf CASCADE;
REVOKE SELECT ON projection.events FROM regress_sqf_user;
DROP ROLE regress_sqf_user;
DROP ROLE regress_sqf_definer;
RESET client_min_messages;
