--
-- aggregate_memory: projection.aggregate() keeps only the current fold state,
-- whatever the stream's length, and holds a bounded batch of events.  The
-- first folds carry an 8 kB state through 4,000 events and record the
-- backend's memory every 250 events; keeping every intermediate state would
-- grow it by about 32 MB.
--
CREATE TABLE agm_memory (fold text, version bigint, bytes bigint);
CREATE FUNCTION agm_fold_plpgsql(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF e.stream_version % 250 = 0 THEN
        INSERT INTO agm_memory
        SELECT 'plpgsql', e.stream_version, sum(total_bytes) FROM pg_backend_memory_contexts;
    END IF;
    RETURN jsonb_set(state, '{n}', to_jsonb(e.stream_version));
END $$;
CREATE FUNCTION agm_fold_sql(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql AS $$
    WITH m AS (
        INSERT INTO agm_memory
        SELECT 'sql', e.stream_version, b
          FROM (SELECT sum(total_bytes) AS b FROM pg_backend_memory_contexts) c
         WHERE e.stream_version % 250 = 0
    )
    SELECT jsonb_set(state, '{n}', to_jsonb(e.stream_version))
$$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'agm-1', i, 'AgmTick', '{}' FROM generate_series(1, 4000) i;

SELECT s->'n' AS n, length(s->>'pad') AS pad
  FROM projection.aggregate('agm-1', 'agm_fold_plpgsql',
                            jsonb_build_object('pad', repeat('x', 8000))) s;
SELECT s->'n' AS n, length(s->>'pad') AS pad
  FROM projection.aggregate('agm-1', 'agm_fold_sql',
                            jsonb_build_object('pad', repeat('x', 8000))) s;
-- 16 samples each; the largest exceeds the smallest by far less than 32 MB
SELECT fold, count(*) AS samples, max(bytes) - min(bytes) < 4 * 1024 * 1024 AS flat
  FROM agm_memory GROUP BY fold ORDER BY fold COLLATE "C";

-- large events: 60 events of 512 kB (hex, so hardly compressible) are read
-- in batches of projection.batch_bytes (8 MB by default), not all at once
CREATE FUNCTION agm_fold_big(state jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agm_memory
    SELECT 'big', e.stream_version, sum(total_bytes) FROM pg_backend_memory_contexts;
    RETURN jsonb_build_object('n', e.stream_version,
                              'len', coalesce((state->>'len')::bigint, 0) + length(e.data->>'blob'));
END $$;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'agm-big', v, 'AgmBlob',
       jsonb_build_object('blob', (SELECT string_agg(md5(v || ':' || i), '')
                                     FROM generate_series(1, 16384) i))
  FROM generate_series(1, 60) v;
INSERT INTO agm_memory SELECT 'base', 0, sum(total_bytes) FROM pg_backend_memory_contexts;
SELECT projection.aggregate('agm-big', 'agm_fold_big');
-- 32 MB of events; a batch holds about 8 MB
SELECT count(*) AS samples,
       max(bytes) - (SELECT bytes FROM agm_memory WHERE fold = 'base') < 16 * 1024 * 1024 AS bounded
  FROM agm_memory WHERE fold = 'big';

DROP TABLE agm_memory;
DROP FUNCTION agm_fold_plpgsql(jsonb, projection.events);
DROP FUNCTION agm_fold_sql(jsonb, projection.events);
DROP FUNCTION agm_fold_big(jsonb, projection.events);
