--
-- A dead letter is the same row whichever path skipped the event: the
-- worker's careful replay (on_error 'skip') and a rebuild's replay (event
-- by event after its chunk failed) write it through one function, for a
-- per-event handler and for a batch statement alike; and
-- retry_dead_letters() applies them through the same one-event path (the
-- handler, then the batch statements as a one-row batch) once fixed.
--
\set SHOW_CONTEXT never
CREATE ROLE regress_dlp_owner NOLOGIN;
CREATE SCHEMA dlp AUTHORIZATION regress_dlp_owner;
GRANT SELECT ON projection.events TO regress_dlp_owner;
SET ROLE regress_dlp_owner;
CREATE TABLE dlp.seen (global_position bigint PRIMARY KEY, kind text NOT NULL);
CREATE TABLE dlp.batch_seen (global_position bigint PRIMARY KEY, kind text NOT NULL);
CREATE TABLE dlp.broken (stream_id text PRIMARY KEY);
CREATE FUNCTION dlp.handle(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM dlp.broken b WHERE b.stream_id = e.stream_id) THEN
        RAISE EXCEPTION 'stream % is broken', e.stream_id
            USING ERRCODE = 'data_exception', DETAIL = 'The handler refuses it.';
    END IF;
    INSERT INTO dlp.seen VALUES (e.global_position, 'handler');
END $$;
-- raises for a stream listed in dlp.broken, through a division by zero
CREATE FUNCTION dlp.check(s text) RETURNS integer
LANGUAGE sql AS $$ SELECT 1 / (SELECT count(*)::integer - count(b.stream_id)::integer
                                 FROM (SELECT s) x LEFT JOIN dlp.broken b ON b.stream_id = s) $$;
SELECT projection.create('dlp_handler', 'dlp.handle', '{DlpEvent}', tables => '{dlp.seen}',
                         start_from => 'end', on_error => 'skip');
SELECT projection.create('dlp_batch', NULL, '{DlpEvent}', tables => '{dlp.batch_seen}',
                         start_from => 'end', on_error => 'skip');
SELECT projection.on_batch('dlp_batch', $$
    INSERT INTO dlp.batch_seen
    SELECT global_position, 'batch' FROM batch WHERE dlp.check(stream_id) = 1$$);
INSERT INTO dlp.broken VALUES ('d-2'), ('d-4');
RESET ROLE;
SELECT projection.append('d-1', 'DlpEvent', '{}') AS first \gset
SELECT projection.append('d-2', 'DlpEvent', '{}') > :first AS appended;
SELECT projection.append('d-3', 'DlpEvent', '{}') > :first AS appended;
SELECT projection.append('d-4', 'DlpEvent', '{}') > :first AS appended;
SELECT projection.append('d-5', 'DlpEvent', '{}') AS last \gset
SELECT projection.wait('dlp_handler', :last, '1 hour'), projection.wait('dlp_batch', :last, '1 hour');

-- the worker's dead letters
SELECT name, global_position - :first AS event, event_type, stream_id, sqlstate, error, detail,
       context IS NOT NULL AS has_context
  FROM projection.dead_letters WHERE name LIKE 'dlp\_%' ORDER BY name, global_position;
CREATE TEMP TABLE worker_letters AS
  SELECT name, global_position, event_type, stream_id, sqlstate, error, detail, context
    FROM projection.dead_letters WHERE name LIKE 'dlp\_%';
SELECT kind, count(*) FROM (SELECT kind FROM dlp.seen UNION ALL SELECT kind FROM dlp.batch_seen) s
 GROUP BY kind ORDER BY kind;

-- a rebuild replays every event and records its own dead letters: the same rows
SET ROLE regress_dlp_owner;
SELECT projection.rebuild('dlp_handler') > 0 AS rebuilt;
SELECT projection.rebuild('dlp_batch') > 0 AS rebuilt;
RESET ROLE;
SELECT d.name, count(*) AS letters,
       count(*) FILTER (WHERE EXISTS (
           SELECT FROM worker_letters w
            WHERE (w.name, w.global_position, w.event_type, w.stream_id, w.sqlstate, w.error,
                   w.detail, w.context) IS NOT DISTINCT FROM
                  (d.name, d.global_position, d.event_type, d.stream_id, d.sqlstate, d.error,
                   d.detail, d.context))) AS same
  FROM projection.dead_letters d WHERE d.name LIKE 'dlp\_%' GROUP BY d.name ORDER BY d.name;

-- fixed: retry_dead_letters applies them (handler, then batch statements as a one-row batch)
SET ROLE regress_dlp_owner;
DELETE FROM dlp.broken;
SELECT * FROM projection.retry_dead_letters('dlp_handler');
SELECT * FROM projection.retry_dead_letters('dlp_batch');
RESET ROLE;
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name LIKE 'dlp\_%';
SELECT kind, count(*) FROM (SELECT kind FROM dlp.seen UNION ALL SELECT kind FROM dlp.batch_seen) s
 GROUP BY kind ORDER BY kind;

SELECT projection.drop('dlp_handler'), projection.drop('dlp_batch');
DROP SCHEMA dlp CASCADE;
REVOKE SELECT ON projection.events FROM regress_dlp_owner;
DROP ROLE regress_dlp_owner;
DROP TABLE worker_letters;
