--
-- inline: projections applied inside the appending transaction.  The four
-- read models of the seed patterns in miniature, then ordering, errors,
-- catch-up, re-entrancy, pause/resume and event type filters.
--
CREATE SCHEMA shop;

--
-- 1. order summary: one PL/pgSQL handler for every order event
--
CREATE TABLE shop.order_summaries (
    order_id    text PRIMARY KEY,
    customer_id text NOT NULL,
    status      text NOT NULL,
    total       numeric NOT NULL DEFAULT 0,
    item_count  integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    shipped_at  timestamptz
);
CREATE FUNCTION shop.order_summary_apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE e.event_type
    WHEN 'OrderCreated' THEN
        INSERT INTO shop.order_summaries (order_id, customer_id, status, created_at)
        VALUES (e.data->>'order_id', e.data->>'customer_id', 'created',
                (e.data->>'created_at')::timestamptz);
    WHEN 'OrderItemAdded' THEN
        UPDATE shop.order_summaries
           SET total = total + (e.data->>'price')::numeric * (e.data->>'qty')::integer,
               item_count = item_count + (e.data->>'qty')::integer
         WHERE order_id = e.data->>'order_id';
    WHEN 'OrderItemRemoved' THEN
        UPDATE shop.order_summaries
           SET total = total - (e.data->>'price')::numeric * (e.data->>'qty')::integer,
               item_count = item_count - (e.data->>'qty')::integer
         WHERE order_id = e.data->>'order_id';
    WHEN 'OrderShipped' THEN
        UPDATE shop.order_summaries
           SET status = 'shipped', shipped_at = (e.data->>'shipped_at')::timestamptz
         WHERE order_id = e.data->>'order_id';
    WHEN 'OrderCompleted' THEN
        UPDATE shop.order_summaries SET status = 'completed' WHERE order_id = e.data->>'order_id';
    WHEN 'OrderCancelled' THEN
        UPDATE shop.order_summaries SET status = 'cancelled' WHERE order_id = e.data->>'order_id';
    END CASE;
END $$;
SELECT projection.create('order_summary', 'shop.order_summary_apply',
                         '{OrderCreated,OrderItemAdded,OrderItemRemoved,OrderShipped,OrderCompleted,OrderCancelled}',
                         mode => 'inline', tables => '{shop.order_summaries}', start_from => 'end');

--
-- 2. daily sales: statement handlers, an ON CONFLICT upsert
--
CREATE TABLE shop.daily_sales (
    date          date PRIMARY KEY,
    total_orders  integer NOT NULL,
    total_revenue numeric NOT NULL,
    refunds       integer NOT NULL DEFAULT 0
);
SELECT projection.create('daily_sales', NULL, mode => 'inline', tables => '{shop.daily_sales}',
                         start_from => 'end');
SELECT projection.on('daily_sales', 'OrderCompleted', $$
    INSERT INTO shop.daily_sales AS d (date, total_orders, total_revenue)
    VALUES (left(($1).data->>'completed_at', 10)::date, 1, (($1).data->>'total_amount')::numeric)
    ON CONFLICT (date) DO UPDATE
       SET total_orders = d.total_orders + 1,
           total_revenue = d.total_revenue + excluded.total_revenue
$$);
SELECT projection.on('daily_sales', 'OrderRefunded', $$
    UPDATE shop.daily_sales
       SET total_revenue = total_revenue - (($1).data->>'amount')::numeric,
           refunds = refunds + 1
     WHERE date = left(($1).data->>'completed_at', 10)::date
$$);

--
-- 3. customer activity: one handler writes two tables for one event
--
CREATE TABLE shop.customer_activity_summary (
    customer_id    text PRIMARY KEY,
    name           text NOT NULL,
    orders         integer NOT NULL DEFAULT 0,
    lifetime_value numeric NOT NULL DEFAULT 0,
    last_order_at  timestamptz
);
CREATE TABLE shop.customer_order_history (
    customer_id  text NOT NULL,
    order_id     text NOT NULL,
    amount       numeric NOT NULL,
    completed_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, order_id)
);
CREATE FUNCTION shop.customer_activity_apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'CustomerRegistered' THEN
        INSERT INTO shop.customer_activity_summary (customer_id, name)
        VALUES (e.data->>'customer_id', e.data->>'name');
    ELSE -- OrderCompleted
        UPDATE shop.customer_activity_summary
           SET orders = orders + 1,
               lifetime_value = lifetime_value + (e.data->>'total_amount')::numeric,
               last_order_at = (e.data->>'completed_at')::timestamptz
         WHERE customer_id = e.data->>'customer_id';
        INSERT INTO shop.customer_order_history
        VALUES (e.data->>'customer_id', e.data->>'order_id', (e.data->>'total_amount')::numeric,
                (e.data->>'completed_at')::timestamptz);
    END IF;
END $$;
SELECT projection.create('customer_activity', 'shop.customer_activity_apply',
                         '{CustomerRegistered,OrderCompleted}', mode => 'inline',
                         tables => '{shop.customer_activity_summary,shop.customer_order_history}',
                         start_from => 'end');

--
-- 4. product search: a weighted tsvector with a GIN index
--
CREATE TABLE shop.product_search (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    price       numeric NOT NULL,
    document    tsvector NOT NULL
);
CREATE INDEX product_search_document_idx ON shop.product_search USING gin (document);
CREATE FUNCTION shop.product_search_apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'ProductDeleted' THEN
        DELETE FROM shop.product_search WHERE sku = e.data->>'sku';
        RETURN;
    END IF;
    IF (e.data->>'price')::numeric < 0 THEN
        RAISE EXCEPTION 'price of product % must not be negative', e.data->>'sku'
              USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO shop.product_search AS p (sku, name, description, price, document)
    VALUES (e.data->>'sku', e.data->>'name', e.data->>'description', (e.data->>'price')::numeric,
            setweight(to_tsvector('english', e.data->>'name'), 'A') ||
            setweight(to_tsvector('english', e.data->>'description'), 'B'))
    ON CONFLICT (sku) DO UPDATE
       SET name = excluded.name, description = excluded.description, price = excluded.price,
           document = excluded.document;
END $$;
SELECT projection.create('product_search', 'shop.product_search_apply',
                         '{ProductCreated,ProductUpdated,ProductDeleted}', mode => 'inline',
                         tables => '{shop.product_search}', start_from => 'end');

SELECT name, mode, state, lag_events FROM projection.status ORDER BY name COLLATE "C";

--
-- a small shop's history: appends, a multi-row INSERT, and COPY
--
SELECT projection.append('customer-1', 'CustomerRegistered', '{"customer_id": "c1", "name": "Ann"}') > 0 AS appended;
SELECT projection.append('customer-2', 'CustomerRegistered', '{"customer_id": "c2", "name": "Bob"}') > 0 AS appended;
COPY projection.events (stream_id, event_type, data) FROM STDIN;
product-1	ProductCreated	{"sku": "p1", "name": "Wireless Headphones", "description": "Noise cancelling over-ear headphones", "price": 199}
product-2	ProductCreated	{"sku": "p2", "name": "Wireless Speaker", "description": "Portable bluetooth speaker", "price": 59}
product-3	ProductCreated	{"sku": "p3", "name": "USB Cable", "description": "Braided cable for wireless chargers", "price": 9}
product-4	ProductCreated	{"sku": "p4", "name": "Desk Lamp", "description": "LED lamp", "price": 25}
\.
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('order-101', 'OrderCreated',   '{"order_id": "101", "customer_id": "c1", "created_at": "2024-03-01T10:00:00Z"}'),
    ('order-101', 'OrderItemAdded', '{"order_id": "101", "sku": "p1", "qty": 1, "price": 199}'),
    ('order-101', 'OrderItemAdded', '{"order_id": "101", "sku": "p3", "qty": 2, "price": 9}'),
    ('order-102', 'OrderCreated',   '{"order_id": "102", "customer_id": "c2", "created_at": "2024-03-01T11:00:00Z"}'),
    ('order-102', 'OrderItemAdded', '{"order_id": "102", "sku": "p2", "qty": 1, "price": 59}'),
    ('order-101', 'OrderItemRemoved', '{"order_id": "101", "sku": "p3", "qty": 1, "price": 9}'),
    ('order-101', 'OrderShipped',   '{"order_id": "101", "shipped_at": "2024-03-02T09:00:00Z"}'),
    ('order-101', 'OrderCompleted', '{"order_id": "101", "customer_id": "c1", "total_amount": 208, "completed_at": "2024-03-03T12:00:00Z"}');
SELECT projection.append('order-103', 'OrderCreated', '{"order_id": "103", "customer_id": "c1", "created_at": "2024-03-03T08:00:00Z"}') > 0 AS appended;
SELECT projection.append('order-103', 'OrderItemAdded', '{"order_id": "103", "sku": "p4", "qty": 4, "price": 25}') > 0 AS appended;
SELECT projection.append('order-103', 'OrderCompleted', '{"order_id": "103", "customer_id": "c1", "total_amount": 100, "completed_at": "2024-03-03T18:00:00Z"}') > 0 AS appended;
SELECT projection.append('order-102', 'OrderCancelled', '{"order_id": "102"}') > 0 AS appended;
SELECT projection.append('order-101', 'OrderRefunded', '{"order_id": "101", "amount": 9, "completed_at": "2024-03-03T12:00:00Z"}') > 0 AS appended;
SELECT projection.append('product-2', 'ProductUpdated', '{"sku": "p2", "name": "Wireless Speaker Mini", "description": "Small portable speaker", "price": 49}') > 0 AS appended;
SELECT projection.append('product-4', 'ProductDeleted', '{"sku": "p4"}') > 0 AS appended;

-- the read models, consistent with the events at every commit
SELECT order_id, customer_id, status, total, item_count, created_at, shipped_at
  FROM shop.order_summaries ORDER BY order_id COLLATE "C";
SELECT * FROM shop.daily_sales ORDER BY date;
SELECT * FROM shop.customer_activity_summary ORDER BY customer_id COLLATE "C";
SELECT * FROM shop.customer_order_history ORDER BY customer_id COLLATE "C", order_id COLLATE "C";
SELECT sku, name, price FROM shop.product_search ORDER BY sku COLLATE "C";
SELECT sku, name, round(ts_rank_cd(document, q)::numeric, 3) AS rank
  FROM shop.product_search, websearch_to_tsquery('english', 'wireless -speaker') AS q
 WHERE document @@ q
 ORDER BY rank DESC, sku COLLATE "C";
-- the GIN index answers the search
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT sku FROM shop.product_search WHERE document @@ websearch_to_tsquery('english', 'wireless -speaker');
RESET enable_seqscan;

--
-- a handler error aborts the append: nothing is appended, no read model
-- changes, and the CONTEXT names the projection and the event
--
SELECT count(*) AS events FROM projection.events \gset
SELECT projection.append('product-5', 'ProductCreated', '{"sku": "p5", "name": "Broken", "description": "x", "price": -1}');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('customer-3', 'CustomerRegistered', '{"customer_id": "c3", "name": "Cy"}'),
    ('product-6', 'ProductCreated', '{"sku": "p6", "name": "Fine", "description": "x", "price": 1}'),
    ('product-7', 'ProductCreated', '{"sku": "p7", "name": "Broken", "description": "x", "price": -7}');
\echo :LAST_ERROR_SQLSTATE
-- a statement handler's error, too
SELECT projection.append('order-104', 'OrderCompleted', '{"order_id": "104", "customer_id": "c2", "total_amount": "lots", "completed_at": "2024-03-04T10:00:00Z"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :events AS nothing_appended FROM projection.events;
SELECT count(*) AS customers FROM shop.customer_activity_summary;
SELECT count(*) AS products FROM shop.product_search;
SELECT count(*) AS days FROM shop.daily_sales;
-- inside a transaction, the failed append aborts it
BEGIN;
SELECT projection.append('customer-3', 'CustomerRegistered', '{"customer_id": "c3", "name": "Cy"}') > 0 AS appended;
SELECT projection.append('product-5', 'ProductCreated', '{"sku": "p5", "name": "Broken", "description": "x", "price": -1}');
COMMIT;
SELECT count(*) = :events AS nothing_appended FROM projection.events;
SELECT count(*) AS customers FROM shop.customer_activity_summary;
-- a savepoint catches the error; later appends of the transaction are
-- still applied
BEGIN;
SAVEPOINT s;
SELECT projection.append('product-5', 'ProductCreated', '{"sku": "p5", "name": "Broken", "description": "x", "price": -1}');
ROLLBACK TO SAVEPOINT s;
SELECT projection.append('customer-3', 'CustomerRegistered', '{"customer_id": "c3", "name": "Cy"}') > 0 AS appended;
COMMIT;
SELECT customer_id, name FROM shop.customer_activity_summary WHERE customer_id = 'c3';
-- and so does a PL/pgSQL exception block
DO $$
BEGIN
    BEGIN
        PERFORM projection.append('product-5', 'ProductCreated', '{"sku": "p5", "name": "Broken", "description": "x", "price": -1}');
    EXCEPTION WHEN check_violation THEN
        RAISE NOTICE 'caught: %', SQLERRM;
    END;
    PERFORM projection.append('customer-4', 'CustomerRegistered', '{"customer_id": "c4", "name": "Di"}');
END $$;
SELECT customer_id, name FROM shop.customer_activity_summary WHERE customer_id = 'c4';
SELECT count(*) - :events AS appended FROM projection.events;

--
-- events of one statement are applied in position order
--
CREATE TABLE inline_log (
    seq      serial PRIMARY KEY,
    position bigint NOT NULL UNIQUE,
    stream_id text NOT NULL,
    event_type text NOT NULL
);
CREATE FUNCTION inline_log_apply(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.inline_log (position, stream_id, event_type)
    VALUES (e.global_position, e.stream_id, e.event_type)
$$;
SELECT projection.create('inline_log', 'inline_log_apply', '{Step,Ping,Pong}', mode => 'inline',
                         tables => '{inline_log}', start_from => 'end');
INSERT INTO projection.events (stream_id, event_type, data)
SELECT 'steps-' || (i % 3), 'Step', jsonb_build_object('i', i) FROM generate_series(1, 9) AS i;
SELECT seq, stream_id, event_type FROM inline_log ORDER BY seq;
SELECT bool_and(position > prev) AS in_position_order
  FROM (SELECT position, lag(position, 1, 0::bigint) OVER (ORDER BY seq) AS prev FROM inline_log) AS l;

--
-- re-entrancy: a handler that appends events; every projection still sees
-- them in position order, after the events of the statement that caused them
--
CREATE FUNCTION inline_pong(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM projection.append(e.stream_id, 'Pong', jsonb_build_object('ping', e.global_position));
END $$;
SELECT projection.create('inline_pinger', 'inline_pong', '{Ping}', mode => 'inline',
                         start_from => 'end');
TRUNCATE inline_log RESTART IDENTITY;
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('ping-1', 'Ping', '{}'), ('ping-2', 'Ping', '{}');
SELECT projection.append('ping-1', 'Ping', '{}') > 0 AS appended;
SELECT seq, stream_id, event_type FROM inline_log ORDER BY seq;
SELECT bool_and(position > prev) AS in_position_order
  FROM (SELECT position, lag(position, 1, 0::bigint) OVER (ORDER BY seq) AS prev FROM inline_log) AS l;
SELECT e.stream_id, e.stream_version, e.event_type
  FROM projection.events e WHERE e.stream_id LIKE 'ping-%' ORDER BY e.global_position;
-- each Pong answers the Ping before it in its stream
SELECT bool_and((p.data->>'ping')::bigint = (SELECT max(q.global_position) FROM projection.events q
                                              WHERE q.stream_id = p.stream_id AND q.event_type = 'Ping'
                                                AND q.global_position < p.global_position))
       AS answers_ping
  FROM projection.events p WHERE p.event_type = 'Pong';
SELECT projection.drop('inline_pinger');

--
-- pause, append, resume: resume applies exactly the missed events
--
TRUNCATE inline_log RESTART IDENTITY;
SELECT projection.append('pause-1', 'Step', '{}') > 0 AS appended;
SELECT projection.pause('inline_log');
SELECT projection.append('pause-1', 'Step', '{}') > 0 AS appended;
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('pause-2', 'Step', '{}'), ('pause-2', 'Other', '{}'), ('pause-2', 'Step', '{}');
SELECT name, state, lag_events FROM projection.status WHERE name = 'inline_log';
SELECT seq, stream_id, event_type FROM inline_log ORDER BY seq;
SELECT projection.resume('inline_log');
SELECT name, state, lag_events FROM projection.status WHERE name = 'inline_log';
SELECT seq, stream_id, event_type FROM inline_log ORDER BY seq;
SELECT projection.append('pause-1', 'Step', '{}') > 0 AS appended;
SELECT stream_id, event_type, count(*) FROM inline_log GROUP BY 1, 2
 ORDER BY stream_id COLLATE "C", event_type COLLATE "C";
-- all of them, each once
SELECT (SELECT array_agg(position ORDER BY position) FROM inline_log) =
       (SELECT array_agg(global_position ORDER BY global_position) FROM projection.events
         WHERE stream_id LIKE 'pause-%' AND event_type = 'Step') AS exactly_the_missed_events;

--
-- start_from: 'beginning' catches up every existing event before create
-- returns; 'end' ignores them
--
CREATE TABLE inline_counts (event_type text PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION inline_count(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.inline_counts AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
CREATE TABLE inline_counts_end (LIKE inline_counts INCLUDING ALL);
CREATE FUNCTION inline_count_end(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.inline_counts_end AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
SELECT count(*) AS events FROM projection.events;
SELECT projection.create('inline_counts', 'inline_count', mode => 'inline',
                         tables => '{inline_counts}', start_from => 'beginning');
SELECT projection.create('inline_counts_end', 'inline_count_end', mode => 'inline',
                         tables => '{inline_counts_end}', start_from => 'end');
SELECT (SELECT sum(n) FROM inline_counts) AS counted,
       (SELECT count(*) FROM inline_counts_end) AS counted_from_end;
SELECT projection.append('late', 'Late', '{}') > 0 AS appended;
-- both now count every event of the store (inline_counts) or only the
-- new one (inline_counts_end)
SELECT c.event_type, c.n FROM inline_counts c
  FULL JOIN (SELECT event_type, count(*) AS n FROM projection.events GROUP BY 1) e USING (event_type)
 WHERE c.n IS DISTINCT FROM e.n;
SELECT * FROM inline_counts_end;
-- catch-up needs a READ COMMITTED transaction (a REPEATABLE READ snapshot
-- could miss events committed after it was taken)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT projection.create('inline_counts_rr', 'inline_count', mode => 'inline',
                         start_from => 'beginning');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

--
-- event_types: a handler only receives the listed types; statements add theirs
--
CREATE TABLE inline_typed (
    seq        serial PRIMARY KEY,
    position   bigint NOT NULL,
    event_type text NOT NULL,
    via        text NOT NULL
);
CREATE FUNCTION inline_typed_apply(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.inline_typed (position, event_type, via)
    VALUES (e.global_position, e.event_type, 'handler')
$$;
SELECT projection.create('inline_typed', 'inline_typed_apply', '{TypeA,TypeB}', mode => 'inline',
                         tables => '{inline_typed}', start_from => 'end');
SELECT projection.on('inline_typed', 'TypeC', $$
    INSERT INTO public.inline_typed (position, event_type, via)
    VALUES (($1).global_position, ($1).event_type, 'statement 1')
$$);
-- statements for a type the handler also takes run after it, in the
-- order they were added
SELECT projection.on('inline_typed', 'TypeA', $$
    INSERT INTO public.inline_typed (position, event_type, via)
    VALUES (($1).global_position, ($1).event_type, 'statement 2')
$$);
SELECT projection.on('inline_typed', 'TypeA', $$
    INSERT INTO public.inline_typed (position, event_type, via)
    VALUES (($1).global_position, ($1).event_type, 'statement 3')
$$);
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('typed', 'TypeA', '{}'), ('typed', 'TypeX', '{}'), ('typed', 'TypeB', '{}'),
    ('typed', 'TypeC', '{}'), ('typed', 'typea', '{}');
SELECT event_type, via FROM inline_typed ORDER BY seq;
SELECT name, event_types, lag_events FROM projection.status WHERE name = 'inline_typed';

-- clean up the projections of this file (their tables stay)
SELECT projection.drop(name) FROM projection.projections ORDER BY name COLLATE "C";
SELECT count(*) FROM projection.status;
