--
-- inline_recursion: an inline handler that appends events its own projection
-- handles (a handler function, an "on" statement, an "on_batch" statement)
-- stops after 1000 levels of nested appends with statement_too_complex, and
-- the appending statement leaves nothing behind; chains that end, through
-- other projections or the same one, still work.  The statement_timeout
-- turns an endless loop into a failure instead of a hang.
--
SET statement_timeout = '20s';
\set SHOW_CONTEXT never
CREATE SCHEMA ir;
CREATE TABLE ir.seen (stream_id text, event_type text, n integer);

--
-- 1. a handler function that appends an event of its own type
--
CREATE FUNCTION ir.echo(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ir.seen VALUES (e.stream_id, e.event_type, (e.data->>'n')::integer);
    PERFORM projection.append(e.stream_id, 'IrEcho',
                              jsonb_build_object('n', (e.data->>'n')::integer + 1));
END $$;
SELECT projection.create('ir_echo', 'ir.echo', '{IrEcho}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.append('ir-echo-1', 'IrEcho', '{"n": 0}');
\echo :LAST_ERROR_SQLSTATE
-- nothing applied, nothing appended
SELECT count(*) AS seen FROM ir.seen;
SELECT count(*) AS events FROM projection.events WHERE stream_id LIKE 'ir-%';
-- a multi-row INSERT too
INSERT INTO projection.events (stream_id, event_type, data)
VALUES ('ir-echo-2', 'IrEcho', '{"n": 0}'), ('ir-echo-3', 'IrEcho', '{"n": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS seen FROM ir.seen;
SELECT count(*) AS events FROM projection.events WHERE stream_id LIKE 'ir-%';
-- caught by a savepoint: the transaction goes on, and its next append works
BEGIN;
SAVEPOINT s;
SELECT projection.append('ir-echo-4', 'IrEcho', '{"n": 0}');
ROLLBACK TO SAVEPOINT s;
SELECT projection.drop('ir_echo');
SELECT projection.append('ir-echo-4', 'IrEcho', '{"n": 0}') > 0 AS appended;
COMMIT;
SELECT count(*) AS seen FROM ir.seen;
SELECT stream_id, event_type FROM projection.events WHERE stream_id LIKE 'ir-echo-%';

--
-- 2. a chain that ends: the same projection 1000 levels deep works, one
--    level more does not
--
CREATE FUNCTION ir.count_down(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ir.seen VALUES (e.stream_id, e.event_type, (e.data->>'n')::integer);
    IF (e.data->>'n')::integer < (e.data->>'stop')::integer THEN
        PERFORM projection.append(e.stream_id, 'IrCount',
                                  jsonb_build_object('n', (e.data->>'n')::integer + 1,
                                                     'stop', e.data->'stop'));
    END IF;
END $$;
SELECT projection.create('ir_count', 'ir.count_down', '{IrCount}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.append('ir-count-1', 'IrCount', '{"n": 0, "stop": 1000}') > 0 AS appended;
SELECT count(*) AS seen, max(n) AS deepest FROM ir.seen;
SELECT projection.append('ir-count-2', 'IrCount', '{"n": 0, "stop": 1001}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS seen FROM ir.seen WHERE stream_id = 'ir-count-2';
SELECT count(*) AS events FROM projection.events WHERE stream_id = 'ir-count-2';
SELECT projection.drop('ir_count');
TRUNCATE ir.seen;

--
-- 3. an "on" statement that appends its own event type
--
SELECT projection.create('ir_on', NULL, '{IrOn}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.on('ir_on', 'IrOn',
    $$SELECT projection.append(($1).stream_id, 'IrOn', '{}')$$);
SELECT projection.append('ir-on-1', 'IrOn', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS events FROM projection.events WHERE stream_id LIKE 'ir-on-%';
SELECT projection.drop('ir_on');

--
-- 4. an "on_batch" statement that appends its own event type
--
SELECT projection.create('ir_batch', NULL, '{IrBatch}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.on_batch('ir_batch',
    $$INSERT INTO projection.events (stream_id, event_type, data)
      SELECT stream_id, 'IrBatch', '{}' FROM batch$$);
SELECT projection.append('ir-batch-1', 'IrBatch', '{}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data)
VALUES ('ir-batch-2', 'IrBatch', '{}'), ('ir-batch-3', 'IrBatch', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS events FROM projection.events WHERE stream_id LIKE 'ir-batch-%';
SELECT projection.drop('ir_batch');

--
-- 5. a chain through three projections, each appending the next type
--
CREATE FUNCTION ir.relay(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ir.seen VALUES (e.stream_id, e.event_type, NULL);
    IF e.event_type = 'IrA' THEN
        PERFORM projection.append(e.stream_id, 'IrB', '{}');
    ELSIF e.event_type = 'IrB' THEN
        PERFORM projection.append(e.stream_id, 'IrC', '{}');
    END IF;
END $$;
SELECT projection.create('ir_a', 'ir.relay', '{IrA}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.create('ir_b', 'ir.relay', '{IrB}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.create('ir_c', NULL, '{IrC}', mode => 'inline',
                         tables => '{ir.seen}', start_from => 'end');
SELECT projection.on_batch('ir_c',
    $$INSERT INTO ir.seen SELECT stream_id, event_type, NULL FROM batch$$);
SELECT projection.append('ir-chain-1', 'IrA', '{}') > 0 AS appended;
SELECT stream_id, event_type FROM ir.seen ORDER BY event_type COLLATE "C";
SELECT stream_id, stream_version, event_type FROM projection.events
 WHERE stream_id LIKE 'ir-chain-%' ORDER BY global_position;
SELECT projection.drop('ir_a');
SELECT projection.drop('ir_b');
SELECT projection.drop('ir_c');
DROP SCHEMA ir CASCADE;
RESET statement_timeout;
