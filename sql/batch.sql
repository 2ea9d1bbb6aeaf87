--
-- batch: set-based handlers added with projection.on_batch()
--   the API and its errors (nothing is registered on bad input)
--   async and inline batches, against the same read model computed directly
--   a batch that meets one key twice (ON CONFLICT, 21000)
--   mixing with per-event handlers; off_batch; the status view's lag
--
-- event positions depend on the tests before: no CONTEXT lines (they name them)
\set SHOW_CONTEXT never
CREATE ROLE regress_batch_owner NOLOGIN;
CREATE ROLE regress_batch_other NOLOGIN;
CREATE SCHEMA bt;
GRANT USAGE ON SCHEMA bt TO regress_batch_owner;
GRANT SELECT ON projection.events TO regress_batch_owner;
CREATE TABLE bt.daily (day date PRIMARY KEY, orders integer NOT NULL, revenue numeric NOT NULL);
CREATE TABLE bt.status (order_id text PRIMARY KEY, status text NOT NULL, position bigint NOT NULL);
CREATE TABLE bt.secret (x integer);
ALTER TABLE bt.daily OWNER TO regress_batch_owner;
ALTER TABLE bt.status OWNER TO regress_batch_owner;

SET ROLE regress_batch_owner;
SELECT projection.create('bt_daily', NULL, '{BtPlaced}', tables => '{bt.daily}', start_from => 'end');
RESET ROLE;

-- ---------------------------------------------------------------------
-- bad input: each is refused, and nothing is registered
-- ---------------------------------------------------------------------
SELECT projection.on_batch(NULL, 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', '');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_nosuch', 'INSERT INTO bt.daily SELECT now(), 1, 1 FROM batch');
\echo :LAST_ERROR_SQLSTATE
-- only the owner may add one
SET ROLE regress_batch_other;
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.daily SELECT now(), 1, 1 FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.off_batch('bt_daily');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_batch_owner;
-- the statement is prepared now, as the owner, with the projection's search_path
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.nosuch SELECT * FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.daily SELECT nosuch FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'INSERT INTO daily SELECT now(), 1, 1 FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.daily SELEC now(), 1, 1 FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.daily SELECT now(), 1, 1 FROM bacth');
\echo :LAST_ERROR_SQLSTATE
-- a table the owner may not read
SELECT projection.on_batch('bt_daily', 'INSERT INTO bt.daily SELECT now(), count(*), 1 FROM batch, bt.secret');
\echo :LAST_ERROR_SQLSTATE
-- one statement, a DML statement or a SELECT
SELECT projection.on_batch('bt_daily', 'DELETE FROM bt.daily; INSERT INTO bt.daily SELECT now(), 1, 1 FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'CREATE TABLE bt.t AS SELECT * FROM batch');
\echo :LAST_ERROR_SQLSTATE
-- the batch is read-only
SELECT projection.on_batch('bt_daily', 'DELETE FROM batch');
\echo :LAST_ERROR_SQLSTATE
-- a statement that does not read the batch would do the same whatever the events
SELECT projection.on_batch('bt_daily', 'UPDATE bt.daily SET orders = orders + 1');
\echo :LAST_ERROR_SQLSTATE
-- a statement that writes nothing
SELECT projection.on_batch('bt_daily', 'SELECT count(*) FROM batch');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.on_batch('bt_daily', 'SELECT b.* FROM batch b JOIN bt.daily d ON d.day = b.recorded_at::date');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS batch_statements FROM projection.batch_handlers;
-- not a table anyone but the extension writes
SET ROLE regress_batch_owner;
SELECT count(*) FROM projection.batch_handlers;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ---------------------------------------------------------------------
-- async: daily sales, one upsert per batch, sums and counts order-free
-- ---------------------------------------------------------------------
SET ROLE regress_batch_owner;
SELECT projection.on_batch('bt_daily', $$
    INSERT INTO bt.daily AS d (day, orders, revenue)
    SELECT (data->>'day')::date, count(*), sum((data->>'total')::numeric)
      FROM batch
     GROUP BY 1 ORDER BY 1
    ON CONFLICT (day) DO UPDATE SET orders = d.orders + excluded.orders,
                                    revenue = d.revenue + excluded.revenue $$);
-- its event types are those of the projection
SELECT lag_events FROM projection.status WHERE name = 'bt_daily';
RESET ROLE;
SELECT projection_id IS NOT NULL AS registered, seq, statement LIKE '%ON CONFLICT (day)%' AS statement
  FROM projection.batch_handlers;

INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'bt-' || g, 1, CASE WHEN g % 10 = 0 THEN 'BtOther' ELSE 'BtPlaced' END,
       jsonb_build_object('day', date '2026-01-01' + g % 5, 'total', g)
  FROM generate_series(1, 2500) g;
SELECT projection.append('bt-x', 'BtPlaced', '{"day": "2026-01-01", "total": 1000}') AS last \gset
SELECT projection.wait('bt_daily', :last, '30 s');
SELECT lag_events FROM projection.status WHERE name = 'bt_daily';
-- the read model equals the set-based statement over every event
SELECT day, orders, revenue FROM bt.daily
EXCEPT
SELECT (data->>'day')::date, count(*)::integer, sum((data->>'total')::numeric)
  FROM projection.events WHERE event_type = 'BtPlaced' AND stream_id LIKE 'bt-%' GROUP BY 1;
SELECT count(*) AS days, sum(orders) AS orders, sum(revenue) AS revenue FROM bt.daily;

-- a rebuild runs the same statement over large batches: the same result
SET ROLE regress_batch_owner;
SELECT projection.rebuild('bt_daily');
RESET ROLE;
SELECT count(*) AS days, sum(orders) AS orders, sum(revenue) AS revenue FROM bt.daily;

-- ---------------------------------------------------------------------
-- a batch that meets one key twice
-- ---------------------------------------------------------------------
-- latest status per order, written naively: two events of one order in one
-- batch make the upsert touch its row twice
GRANT TRIGGER ON projection.events TO regress_batch_owner;
SET ROLE regress_batch_owner;
SELECT projection.create('bt_status_inline', NULL, '{BtOrderPlaced,BtOrderShipped}',
                         mode => 'inline', tables => '{bt.status}', start_from => 'end');
SELECT projection.on_batch('bt_status_inline', $$
    INSERT INTO bt.status AS s (order_id, status, position)
    SELECT data->>'order_id', event_type, global_position FROM batch
    ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, position = excluded.position $$);
RESET ROLE;
-- one event per order in a statement: fine
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bt-o1', 1, 'BtOrderPlaced', '{"order_id": "o1"}'),
       ('bt-o2', 1, 'BtOrderPlaced', '{"order_id": "o2"}');
SELECT order_id, status FROM bt.status ORDER BY 1;
-- inline, the error aborts the append, with a hint saying what to do
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bt-o1', 2, 'BtOrderShipped', '{"order_id": "o1"}'),
       ('bt-o3', 1, 'BtOrderPlaced', '{"order_id": "o3"}'),
       ('bt-o3', 2, 'BtOrderShipped', '{"order_id": "o3"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS appended FROM projection.events WHERE stream_id = 'bt-o3';
SELECT order_id, status FROM bt.status ORDER BY 1;
-- written per key, latest event first, ordered by key: fine
SET ROLE regress_batch_owner;
SELECT projection.off_batch('bt_status_inline');
SELECT projection.on_batch('bt_status_inline', $$
    INSERT INTO bt.status AS s (order_id, status, position)
    SELECT order_id, event_type, global_position
      FROM (SELECT DISTINCT ON (data->>'order_id') data->>'order_id' AS order_id, event_type, global_position
              FROM batch ORDER BY data->>'order_id', global_position DESC) latest
     ORDER BY order_id
    ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, position = excluded.position $$);
RESET ROLE;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bt-o1', 2, 'BtOrderShipped', '{"order_id": "o1"}'),
       ('bt-o3', 1, 'BtOrderPlaced', '{"order_id": "o3"}'),
       ('bt-o3', 2, 'BtOrderShipped', '{"order_id": "o3"}');
SELECT order_id, status FROM bt.status ORDER BY 1;
SET ROLE regress_batch_owner;
SELECT projection.drop('bt_status_inline');
RESET ROLE;

-- async, and in a rebuild, the failed batch is applied again event by
-- event: the naive statement gives the right result, one event at a time
TRUNCATE bt.status;
SET ROLE regress_batch_owner;
SELECT projection.create('bt_status', NULL, '{BtOrderPlaced,BtOrderShipped}',
                         tables => '{bt.status}');
SELECT projection.on_batch('bt_status', $$
    INSERT INTO bt.status AS s (order_id, status, position)
    SELECT data->>'order_id', event_type, global_position FROM batch
    ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, position = excluded.position $$);
RESET ROLE;
SELECT projection.append('bt-o4', 'BtOrderPlaced', '{"order_id": "o4"}') AS last \gset
SELECT projection.wait('bt_status', :last, '30 s');
SELECT s.order_id, s.status, s.position = l.global_position AS latest
  FROM bt.status s
  JOIN (SELECT DISTINCT ON (data->>'order_id') data->>'order_id' AS order_id, global_position
          FROM projection.events WHERE event_type IN ('BtOrderPlaced', 'BtOrderShipped')
         ORDER BY data->>'order_id', global_position DESC) l USING (order_id)
 ORDER BY 1;
SELECT name, state FROM projection.status WHERE name = 'bt_status';
SET ROLE regress_batch_owner;
SELECT projection.rebuild('bt_status');
RESET ROLE;
SELECT order_id, status FROM bt.status ORDER BY 1;

-- ---------------------------------------------------------------------
-- mixing: per-event handlers first, then the batch statements, which see
-- their effects; all as the owner
-- ---------------------------------------------------------------------
CREATE TABLE bt.log (position bigint, what text, who name);
ALTER TABLE bt.log OWNER TO regress_batch_owner;
CREATE FUNCTION bt.log_event(e projection.events) RETURNS void
LANGUAGE sql AS $$ INSERT INTO bt.log VALUES (e.global_position, 'event', current_user) $$;
ALTER FUNCTION bt.log_event(projection.events) OWNER TO regress_batch_owner;
SET ROLE regress_batch_owner;
SELECT projection.create('bt_mixed', 'bt.log_event', '{BtMixed}', mode => 'inline',
                         tables => '{bt.log}', start_from => 'end');
SELECT projection.on('bt_mixed', 'BtMixed', $$ INSERT INTO bt.log VALUES (($1).global_position, 'on', current_user) $$);
SELECT projection.on_batch('bt_mixed', $$
    INSERT INTO bt.log
    SELECT max(global_position), 'batch of ' || count(*) || ', ' ||
           (SELECT count(*) FROM bt.log l WHERE l.position IN (SELECT global_position FROM batch)) || ' seen',
           current_user
      FROM batch $$);
RESET ROLE;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('bt-m', 1, 'BtMixed', '{}'), ('bt-m', 2, 'BtMixed', '{}'), ('bt-m', 3, 'BtOther', '{}');
SELECT position - (SELECT min(position) FROM bt.log) AS n, what, who FROM bt.log ORDER BY position, what;
SET ROLE regress_batch_owner;
SELECT projection.drop('bt_mixed');
SELECT projection.drop('bt_status');
-- off_batch removes them all and says how many
SELECT projection.off_batch('bt_daily');
SELECT projection.off_batch('bt_daily');
SELECT projection.drop('bt_daily');
RESET ROLE;
SELECT count(*) AS batch_statements FROM projection.batch_handlers;

DROP SCHEMA bt CASCADE;
REVOKE SELECT, TRIGGER ON projection.events FROM regress_batch_owner;
DROP ROLE regress_batch_owner, regress_batch_other;
