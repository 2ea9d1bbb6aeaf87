--
-- aggregate: live aggregation of one stream through a fold function
--
CREATE FUNCTION agg_order(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE e.event_type
           WHEN 'OrderItemAdded' THEN jsonb_set(state, '{total}',
                to_jsonb(coalesce((state->>'total')::numeric, 0) + (e.data->>'price')::numeric))
           WHEN 'OrderShipped' THEN state || '{"status": "shipped"}'
           WHEN 'OrderCompleted' THEN state || '{"status": "completed"}'
           ELSE state END
$$;
-- the stream order-1 from the events test
SELECT stream_version, event_type, data FROM projection.events WHERE stream_id = 'order-1'
 ORDER BY stream_version;
SELECT projection.aggregate('order-1', 'agg_order');
SELECT projection.aggregate('order-1', 'agg_order', '{"total": 100}');

-- the fold sees the events in version order (here not their position order)
CREATE FUNCTION agg_trace(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_set(state, '{trace}',
                     coalesce(state->'trace', '[]') || to_jsonb(e.stream_version || ':' || e.event_type));
END $$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data) VALUES
    ('agg-1', 3, 'Third', '{}'), ('agg-1', 1, 'First', '{}'), ('agg-1', 2, 'Second', '{}');
SELECT projection.aggregate('agg-1', 'agg_trace');
-- only its own stream
SELECT projection.append('agg-2', 'Other', '{}') > 0 AS appended;
SELECT projection.aggregate('agg-1', 'agg_trace', '{"trace": ["start"]}');
-- the transaction's own, uncommitted events too
BEGIN;
SELECT projection.append('agg-1', 'Fourth', '{}') > 0 AS appended;
SELECT projection.aggregate('agg-1', 'agg_trace');
ROLLBACK;
SELECT projection.aggregate('agg-1', 'agg_trace');

-- an unknown stream returns the initial state
SELECT projection.aggregate('agg-nosuch', 'agg_trace');
SELECT projection.aggregate('agg-nosuch', 'agg_trace', '{"empty": true}');
SELECT projection.aggregate('agg-nosuch', 'agg_trace', '[]');

-- a fold may return NULL: a non-strict fold gets the NULL state, a strict
-- one is not called again and the result is NULL
CREATE FUNCTION agg_null_on_second(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN e.stream_version = 2 THEN NULL
                ELSE coalesce(state, '{"after_null": true}') || jsonb_build_object('v' || e.stream_version, true)
           END
$$;
CREATE FUNCTION agg_strict_null_on_second(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql STRICT AS $$
    SELECT CASE WHEN e.stream_version = 2 THEN NULL
                ELSE coalesce(state, '{"after_null": true}') || jsonb_build_object('v' || e.stream_version, true)
           END
$$;
SELECT projection.aggregate('agg-1', 'agg_null_on_second') AS non_strict,
       projection.aggregate('agg-1', 'agg_strict_null_on_second') IS NULL AS strict_is_null;

-- a fold's error is the caller's error
CREATE FUNCTION agg_fail(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF e.stream_version = 2 THEN
        RAISE EXCEPTION 'cannot fold version %', e.stream_version USING ERRCODE = 'data_exception';
    END IF;
    RETURN state;
END $$;
SELECT projection.aggregate('agg-1', 'agg_fail');
\echo :LAST_ERROR_SQLSTATE

--
-- bad input
--
-- unknown function (from the regproc input function)
SELECT projection.aggregate('agg-1', 'agg_nosuch');
\echo :LAST_ERROR_SQLSTATE
-- wrong signatures
CREATE FUNCTION agg_returns_text(state jsonb, e projection.events) RETURNS text
LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION agg_swapped(e projection.events, state jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION agg_one_arg(e projection.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION agg_json(state json, e projection.events) RETURNS json
LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION agg_setof(state jsonb, e projection.events) RETURNS SETOF jsonb
LANGUAGE sql AS $$ SELECT state $$;
SELECT projection.aggregate('agg-1', 'agg_returns_text');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'agg_swapped');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'agg_one_arg');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'agg_json');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'agg_setof');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'jsonb_concat');
\echo :LAST_ERROR_SQLSTATE
-- NULL arguments
SELECT projection.aggregate(NULL, 'agg_trace');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('agg-1', 'agg_trace', NULL);
\echo :LAST_ERROR_SQLSTATE

--
-- privileges: aggregate runs as the caller, who needs SELECT on
-- projection.events and EXECUTE on the fold
--
SET ROLE regress_other;
SELECT projection.aggregate('agg-1', 'agg_trace');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT ON projection.events TO regress_other;
REVOKE EXECUTE ON FUNCTION agg_trace(jsonb, projection.events) FROM PUBLIC;
SET ROLE regress_other;
SELECT projection.aggregate('agg-1', 'agg_trace');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.aggregate('order-1', 'agg_order');
RESET ROLE;
REVOKE SELECT ON projection.events FROM regress_other;
GRANT EXECUTE ON FUNCTION agg_trace(jsonb, projection.events) TO PUBLIC;

-- the test roles are no longer needed (the temporary instance is thrown
-- away anyway)
SET client_min_messages = warning;
DROP SCHEMA regress_owned, regress_others, regress_evil CASCADE;
DROP OWNED BY regress_owner, regress_appender, regress_other;
RESET client_min_messages;
DROP ROLE regress_owner, regress_appender, regress_other;
