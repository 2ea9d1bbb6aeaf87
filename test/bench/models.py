"""The four seed read models, as SQL, for every variant of the benchmark.

Each seed projection (projection-patterns: order summary, daily sales,
customer activity, product search) is written once here:

  * tables: the read-model DDL;
  * statements: per event type, the SQL the seed's handler runs, with @E for
    the event row and @S for the schema.  They are read from test/demo.sql
    (seed_statements below), the one source of the seed's statements: the
    demo's projection.on() statements of order_summary and the CASE arms of
    its PL/pgSQL handlers shop.daily_sales_apply, shop.customer_activity_apply
    and shop.product_search_apply, for the event types listed here (the demo
    also handles OrderRefunded in order_summary; the seed does not).  Edit
    them there.  The same text becomes
      - a PL/pgSQL handler  @S.h_<name>(e projection.events)  (@E -> e), used
        by the extension's async and inline projections and by the PL/pgSQL
        loop, and
      - projection.on() statement handlers (@E -> ($1)), and
      - the hand-written "append + UPDATE" function of the inline benchmark;
  * oracle: the set-based rebuild, INSERT ... SELECT ... GROUP BY over
    projection.events up to a position (@UPTO).  It is the correctness oracle
    and the practical speed limit;
  * compare: the columns compared between variants.  updated_at (in
    order_summaries, daily_sales and customers) is the recorded_at of the
    event that wrote the row in the demo's statements and now() in the batch
    statements, so it is left out.

Every variant lives in its own schema, so names never collide; handlers name
every table with its schema, because the extension runs handlers with a
search_path of pg_catalog only.

The client-side projector (pyprojector.py) has its own copy of the same
statements in the seed's Python style.
"""

import os
import re
import textwrap

ORDER_TYPES = ["OrderCreated", "OrderItemAdded", "OrderItemRemoved",
               "OrderShipped", "OrderCompleted", "OrderCancelled"]

PROJECTIONS = {}

PROJECTIONS["order_summary"] = dict(
    types=ORDER_TYPES,
    tables=["order_summaries"],
    ddl="""
CREATE TABLE @S.order_summaries (
    order_id            text PRIMARY KEY,
    customer_id         text,
    status              text NOT NULL,
    total_amount        numeric NOT NULL DEFAULT 0,
    item_count          integer NOT NULL DEFAULT 0,
    created_at          timestamptz,
    shipped_at          timestamptz,
    completed_at        timestamptz,
    cancelled_at        timestamptz,
    cancellation_reason text,
    updated_at          timestamptz
);
""",
    oracle=["""
INSERT INTO @S.order_summaries (order_id, customer_id, status, total_amount, item_count,
                                created_at, shipped_at, completed_at, cancelled_at, cancellation_reason)
SELECT data->>'order_id',
       max(data->>'customer_id') FILTER (WHERE event_type = 'OrderCreated'),
       coalesce((array_agg(CASE event_type WHEN 'OrderShipped' THEN 'shipped'
                                           WHEN 'OrderCompleted' THEN 'completed'
                                           ELSE 'cancelled' END ORDER BY global_position DESC)
                 FILTER (WHERE event_type IN ('OrderShipped', 'OrderCompleted', 'OrderCancelled')))[1],
                'pending'),
       coalesce(sum((data->>'price')::numeric * (data->>'quantity')::numeric)
                FILTER (WHERE event_type = 'OrderItemAdded'), 0)
         - coalesce(sum((data->>'price')::numeric * (data->>'quantity')::numeric)
                FILTER (WHERE event_type = 'OrderItemRemoved'), 0),
       count(*) FILTER (WHERE event_type = 'OrderItemAdded')
         - count(*) FILTER (WHERE event_type = 'OrderItemRemoved'),
       min((data->>'created_at')::timestamptz) FILTER (WHERE event_type = 'OrderCreated'),
       (array_agg((data->>'shipped_at')::timestamptz ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'OrderShipped'))[1],
       (array_agg((data->>'completed_at')::timestamptz ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'OrderCompleted'))[1],
       (array_agg((data->>'cancelled_at')::timestamptz ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'OrderCancelled'))[1],
       (array_agg(data->>'reason' ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'OrderCancelled'))[1]
  FROM projection.events
 WHERE event_type IN ('OrderCreated', 'OrderItemAdded', 'OrderItemRemoved',
                      'OrderShipped', 'OrderCompleted', 'OrderCancelled')
   AND global_position <= @UPTO
 GROUP BY data->>'order_id'
HAVING bool_or(event_type = 'OrderCreated')
"""],
    compare={"order_summaries": "order_id, customer_id, status, total_amount, item_count, created_at, "
                                "shipped_at, completed_at, cancelled_at, cancellation_reason"},
)

PROJECTIONS["daily_sales"] = dict(
    types=["OrderCompleted", "OrderRefunded"],
    tables=["daily_sales"],
    ddl="""
CREATE TABLE @S.daily_sales (
    date          date PRIMARY KEY,
    total_orders  integer NOT NULL DEFAULT 0,
    total_revenue numeric NOT NULL DEFAULT 0,
    total_items   integer NOT NULL DEFAULT 0,
    total_refunds numeric NOT NULL DEFAULT 0,
    updated_at    timestamptz
);
""",
    oracle=["""
INSERT INTO @S.daily_sales (date, total_orders, total_revenue, total_items, total_refunds)
SELECT d, sum(o), sum(r), sum(i), sum(f)
  FROM (SELECT left(data->>'completed_at', 10)::date AS d, 1 AS o,
               (data->>'total_amount')::numeric AS r, (data->>'item_count')::integer AS i,
               0::numeric AS f
          FROM projection.events
         WHERE event_type = 'OrderCompleted' AND global_position <= @UPTO
        UNION ALL
        SELECT left(data->>'original_completed_at', 10)::date, -1,
               -(data->>'refund_amount')::numeric, 0, (data->>'refund_amount')::numeric
          FROM projection.events
         WHERE event_type = 'OrderRefunded' AND global_position <= @UPTO) x
 GROUP BY d
HAVING bool_or(o = 1)
"""],
    compare={"daily_sales": "date, total_orders, total_revenue, total_items, total_refunds"},
)

PROJECTIONS["customer_activity"] = dict(
    types=["CustomerCreated", "OrderCompleted", "ReviewSubmitted", "CustomerTierChanged"],
    tables=["customers", "customer_activity_summary", "customer_order_history"],
    ddl="""
CREATE TABLE @S.customers (
    customer_id text PRIMARY KEY,
    email       text,
    name        text,
    tier        text,
    created_at  timestamptz,
    updated_at  timestamptz
);
CREATE TABLE @S.customer_activity_summary (
    customer_id    text PRIMARY KEY,
    total_orders   integer NOT NULL DEFAULT 0,
    total_spent    numeric NOT NULL DEFAULT 0,
    total_reviews  integer NOT NULL DEFAULT 0,
    last_order_at  timestamptz,
    last_review_at timestamptz
);
CREATE TABLE @S.customer_order_history (
    customer_id  text NOT NULL,
    order_id     text NOT NULL,
    amount       numeric,
    completed_at timestamptz,
    PRIMARY KEY (customer_id, order_id)
);
""",
    oracle=["""
INSERT INTO @S.customers (customer_id, email, name, tier, created_at)
SELECT c.data->>'customer_id', c.data->>'email', c.data->>'name', coalesce(t.tier, 'bronze'),
       (c.data->>'created_at')::timestamptz
  FROM projection.events c
  LEFT JOIN (SELECT data->>'customer_id' AS id,
                    (array_agg(data->>'new_tier' ORDER BY global_position DESC))[1] AS tier
               FROM projection.events
              WHERE event_type = 'CustomerTierChanged' AND global_position <= @UPTO
              GROUP BY 1) t ON t.id = c.data->>'customer_id'
 WHERE c.event_type = 'CustomerCreated' AND c.global_position <= @UPTO
""", """
INSERT INTO @S.customer_activity_summary (customer_id, total_orders, total_spent, total_reviews,
                                          last_order_at, last_review_at)
SELECT data->>'customer_id',
       count(*) FILTER (WHERE event_type = 'OrderCompleted'),
       coalesce(sum((data->>'total_amount')::numeric) FILTER (WHERE event_type = 'OrderCompleted'), 0),
       count(*) FILTER (WHERE event_type = 'ReviewSubmitted'),
       (array_agg((data->>'completed_at')::timestamptz ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'OrderCompleted'))[1],
       (array_agg((data->>'submitted_at')::timestamptz ORDER BY global_position DESC)
            FILTER (WHERE event_type = 'ReviewSubmitted'))[1]
  FROM projection.events
 WHERE event_type IN ('CustomerCreated', 'OrderCompleted', 'ReviewSubmitted')
   AND global_position <= @UPTO
 GROUP BY data->>'customer_id'
HAVING bool_or(event_type = 'CustomerCreated')
""", """
INSERT INTO @S.customer_order_history (customer_id, order_id, amount, completed_at)
SELECT data->>'customer_id', data->>'order_id', (data->>'total_amount')::numeric,
       (data->>'completed_at')::timestamptz
  FROM projection.events
 WHERE event_type = 'OrderCompleted' AND global_position <= @UPTO
"""],
    compare={
        "customers": "customer_id, email, name, tier, created_at",
        "customer_activity_summary": "customer_id, total_orders, total_spent, total_reviews, "
                                     "last_order_at, last_review_at",
        "customer_order_history": "customer_id, order_id, amount, completed_at",
    },
)

PROJECTIONS["product_search"] = dict(
    types=["ProductCreated", "ProductUpdated", "ProductPriceChanged", "ProductDeleted"],
    tables=["product_search"],
    # the seed indexes products in Elasticsearch; here the search index is a
    # tsvector column with a GIN index, maintained by the same writes
    ddl="""
CREATE TABLE @S.product_search (
    product_id       text PRIMARY KEY,
    name             text,
    description      text,
    category         text,
    price            numeric,
    tags             text[],
    created_at       timestamptz,
    updated_at       timestamptz,
    price_updated_at timestamptz,
    search           tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
                    coalesce(name, '') || ' ' || coalesce(description, '') || ' ' ||
                    coalesce(category, ''))) STORED
);
CREATE INDEX ON @S.product_search USING gin (search);
""",
    oracle=["""
INSERT INTO @S.product_search (product_id, name, description, category, price, tags,
                               created_at, updated_at, price_updated_at)
SELECT id, d->>'name', d->>'description', d->>'category', p::numeric,
       ARRAY(SELECT jsonb_array_elements_text(d->'tags')), created, updated, price_updated
  FROM (SELECT data->>'product_id' AS id,
               (array_agg(data ORDER BY global_position DESC)
                    FILTER (WHERE event_type IN ('ProductCreated', 'ProductUpdated')))[1] AS d,
               (array_agg(coalesce(data->>'new_price', data->>'price') ORDER BY global_position DESC)
                    FILTER (WHERE event_type IN ('ProductCreated', 'ProductPriceChanged')))[1] AS p,
               min((data->>'created_at')::timestamptz)
                    FILTER (WHERE event_type = 'ProductCreated') AS created,
               (array_agg((data->>'updated_at')::timestamptz ORDER BY global_position DESC)
                    FILTER (WHERE event_type = 'ProductUpdated'))[1] AS updated,
               (array_agg((data->>'changed_at')::timestamptz ORDER BY global_position DESC)
                    FILTER (WHERE event_type = 'ProductPriceChanged'))[1] AS price_updated
          FROM projection.events
         WHERE event_type IN ('ProductCreated', 'ProductUpdated', 'ProductPriceChanged', 'ProductDeleted')
           AND global_position <= @UPTO
         GROUP BY 1
        HAVING bool_or(event_type = 'ProductCreated')
           AND NOT bool_or(event_type = 'ProductDeleted')) x
"""],
    compare={"product_search": "product_id, name, description, category, price, tags, created_at, "
                               "updated_at, price_updated_at"},
)

SEED = ["order_summary", "daily_sales", "customer_activity", "product_search"]

DEMO_SQL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo.sql")

# where test/demo.sql holds each seed projection's statements: the name of
# its projection.on() projection, or of its PL/pgSQL handler
DEMO_SOURCE = {
    "order_summary": ("on", "order_summary"),
    "daily_sales": ("handler", "shop.daily_sales_apply"),
    "customer_activity": ("handler", "shop.customer_activity_apply"),
    "product_search": ("handler", "shop.product_search_apply"),
}


def _demo_template(sql, event):
    """A statement of the demo as a template: shop. -> @S., the event
    (($1) in on() statements, e in handlers) -> @E."""
    sql = re.sub(r"\bshop\.", "@S.", textwrap.dedent(sql.strip("\n")).strip().rstrip(";"))
    if event == "($1)":
        return sql.replace("($1)", "@E")
    return re.sub(r"(?<![\w.])e\.", "@E.", sql)


def seed_statements(demo=DEMO_SQL):
    """{name: {event_type: [statement, ...]}} for the SEED projections, read
    from test/demo.sql; raises ValueError if an event type of a projection
    has no statement there, or a statement names a table of the schema that
    is not one of the projection's tables."""
    with open(demo) as f:
        text = f.read()
    result = {}
    for name, (kind, where) in DEMO_SOURCE.items():
        stmts = {}
        if kind == "on":
            for etype, sql in re.findall(
                    r"SELECT projection\.on\('%s', '(\w+)', \$sql\$(.*?)\$sql\$\);" % re.escape(where),
                    text, re.S):
                stmts.setdefault(etype, []).append(_demo_template(sql, "($1)"))
        else:
            m = re.search(r"CREATE FUNCTION %s\(e projection\.events\).*?\$\$(.*?)\$\$;" % re.escape(where),
                          text, re.S)
            if not m:
                raise ValueError("%s: no function %s in %s" % (name, where, demo))
            body = re.search(r"\n    CASE e\.event_type\n(.*?)\n    END CASE;", m.group(1), re.S)
            if not body:
                raise ValueError("%s: %s has no CASE e.event_type" % (name, where))
            for arm in re.split(r"^    WHEN ", body.group(1), flags=re.M)[1:]:
                head, _, code = arm.partition("\n")
                etype = re.fullmatch(r"'(\w+)' THEN", head.strip())
                if not etype:
                    raise ValueError("%s: unexpected arm %r in %s" % (name, head, where))
                stmts[etype.group(1)] = [_demo_template(sql, "e") for sql in re.split(r";[ \t]*\n", textwrap.dedent(code))
                                         if sql.strip()]
        p = PROJECTIONS[name]
        missing = [t for t in p["types"] if t not in stmts]
        if missing:
            raise ValueError("%s: no statement for %s in %s" % (name, ", ".join(missing), demo))
        result[name] = {}
        for t in p["types"]:
            for sql in stmts[t]:
                for table in re.findall(r"@S\.(\w+)", sql):
                    if table not in p["tables"]:
                        raise ValueError("%s: a statement for %s names @S.%s, not one of its tables"
                                         % (name, t, table))
            result[name][t] = stmts[t]
    return result


for _name, _stmts in seed_statements().items():
    PROJECTIONS[_name]["statements"] = _stmts


def sub(text, schema, event="e", upto=None):
    text = text.replace("@S", schema).replace("@E", event)
    if upto is not None:
        text = text.replace("@UPTO", str(int(upto)))
    return text


def sql_array(items):
    return "ARRAY[%s]::text[]" % ", ".join("'%s'" % i for i in items)


def handler_sql(name, schema, probe=None):
    """CREATE OR REPLACE FUNCTION @S.h_<name>(e projection.events): the
    seed handler as PL/pgSQL.  With probe (a variant label), the handler also
    records the event's position in bench.probe, in the same transaction as
    its read-model writes (used by the latency benchmark)."""
    p = PROJECTIONS[name]
    arms = []
    for etype, stmts in p["statements"].items():
        body = ";\n".join(sub(s, schema, "e").strip() for s in stmts) + ";"
        arms.append("    WHEN '%s' THEN\n%s" % (etype, body))
    probe_sql = ""
    if probe:
        probe_sql = ("\n    INSERT INTO bench.probe (variant, proj, global_position) "
                     "VALUES ('%s', '%s', e.global_position);" % (probe, name))
    return """
CREATE OR REPLACE FUNCTION %s.h_%s(e projection.events) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    CASE e.event_type
%s
    ELSE NULL;
    END CASE;%s
END
$fn$;
""" % (schema, name, "\n".join(arms), probe_sql)


def on_statements(name, schema):
    """(event_type, statement) pairs for projection.on(); $1 is the event."""
    out = []
    for etype, stmts in PROJECTIONS[name]["statements"].items():
        for s in stmts:
            out.append((etype, sub(s, schema, "($1)").strip()))
    return out


def schema_sql(schema, names, handlers=True, checkpoints=False):
    """DDL for a fresh schema holding the read models of the given projections."""
    out = ["DROP SCHEMA IF EXISTS %s CASCADE;" % schema, "CREATE SCHEMA %s;" % schema]
    for n in names:
        out.append(sub(PROJECTIONS[n]["ddl"], schema))
        if handlers:
            out.append(handler_sql(n, schema))
    if checkpoints:
        out.append("CREATE TABLE %s.checkpoints (name text PRIMARY KEY, position bigint NOT NULL);" % schema)
    return "\n".join(out)


def truncate_sql(schema, names):
    tabs = ["%s.%s" % (schema, t) for n in names for t in PROJECTIONS[n]["tables"]]
    return "TRUNCATE %s;" % ", ".join(tabs)


def oracle_sql(schema, names, upto):
    return [sub(s, schema, upto=upto) for n in names for s in PROJECTIONS[n]["oracle"]]


def table_list(schema, name):
    return ["%s.%s" % (schema, t) for t in PROJECTIONS[name]["tables"]]


def loop_sql(schema, names, batch=1000):
    """The PL/pgSQL alternative: a procedure that reads projection.events in
    position order, runs the same handler for each event and commits a
    checkpoint after every batch."""
    types = sorted({t for n in names for t in PROJECTIONS[n]["types"]})
    if len(names) == 1:
        dispatch = "PERFORM %s.h_%s(e);" % (schema, names[0])
    else:
        dispatch = "\n".join(
            "IF e.event_type = ANY (%s) THEN PERFORM %s.h_%s(e); END IF;"
            % (sql_array(PROJECTIONS[n]["types"]), schema, n) for n in names)
    return """
CREATE OR REPLACE PROCEDURE %(s)s.catch_up(upto bigint, batch integer DEFAULT %(batch)d)
LANGUAGE plpgsql AS $fn$
DECLARE
    e projection.events;
    pos bigint;
    n integer;
BEGIN
    SELECT position INTO pos FROM %(s)s.checkpoints WHERE name = 'loop';
    IF pos IS NULL THEN
        pos := 0;
        INSERT INTO %(s)s.checkpoints VALUES ('loop', 0);
    END IF;
    LOOP
        n := 0;
        FOR e IN SELECT * FROM projection.events
                  WHERE global_position > pos AND global_position <= upto
                    AND event_type = ANY (%(types)s)
                  ORDER BY global_position LIMIT batch
        LOOP
            %(dispatch)s
            pos := e.global_position;
            n := n + 1;
        END LOOP;
        EXIT WHEN n = 0;
        UPDATE %(s)s.checkpoints SET position = pos WHERE name = 'loop';
        COMMIT;
    END LOOP;
END
$fn$;
""" % dict(s=schema, batch=batch, types=sql_array(types), dispatch=dispatch)


def hand_append_sql(name, schema):
    """The inline benchmark's alternative: append, then the same statements
    written by hand, in the same transaction (one server round trip, like
    the inline projection)."""
    p = PROJECTIONS[name]
    arms = []
    for etype, stmts in p["statements"].items():
        body = ";\n".join(sub(s, schema, "e").strip() for s in stmts) + ";"
        arms.append("    WHEN '%s' THEN\n%s" % (etype, body))
    return """
CREATE OR REPLACE FUNCTION %s.append_by_hand(p_stream text, p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    e projection.events;
BEGIN
    e.global_position := projection.append(p_stream, p_type, p_data);
    e.event_type := p_type;
    e.data := p_data;
    e.recorded_at := clock_timestamp();   -- as projection.append records it
    CASE e.event_type
%s
    ELSE NULL;
    END CASE;
    RETURN e.global_position;
END
$fn$;
""" % (schema, "\n".join(arms))


def diff_sql(a, b, table, cols):
    """Rows of a.table not in b.table and vice versa (multiset difference)."""
    return """
SELECT 'only in %(a)s' AS side, * FROM (SELECT %(c)s FROM %(a)s.%(t)s EXCEPT ALL SELECT %(c)s FROM %(b)s.%(t)s) x
UNION ALL
SELECT 'only in %(b)s', * FROM (SELECT %(c)s FROM %(b)s.%(t)s EXCEPT ALL SELECT %(c)s FROM %(a)s.%(t)s) y
""" % dict(a=a, b=b, t=table, c=cols)


# ---------------------------------------------------------------------------
# The same read models as batch statements (projection.on_batch): each runs
# once per batch over the relation "batch" (the columns of projection.events,
# the batch's events of the projection's types in position order).  Sums and
# counts per key are order-free; order-dependent values take the batch's
# latest event (array_agg ... ORDER BY global_position DESC, DISTINCT ON);
# one row per key per statement; upserts in key order.  They must give the
# same read model as the per-event statements above, however the events are
# cut into batches (checked against the oracle like every variant).
# ---------------------------------------------------------------------------

BATCH = {}

# one MERGE per batch: an order created in the batch is inserted with its
# final values (one write), an existing one updated once
BATCH["order_summary"] = ["""
MERGE INTO @S.order_summaries AS s
USING (SELECT data->>'order_id' AS order_id,
              max(data->>'customer_id') FILTER (WHERE event_type = 'OrderCreated') AS customer_id,
              min((data->>'created_at')::timestamptz) FILTER (WHERE event_type = 'OrderCreated') AS created_at,
              bool_or(event_type = 'OrderCreated') AS created,
              coalesce(sum(CASE event_type
                           WHEN 'OrderItemAdded' THEN (data->>'price')::numeric * (data->>'quantity')::numeric
                           WHEN 'OrderItemRemoved' THEN -(data->>'price')::numeric * (data->>'quantity')::numeric
                           END), 0) AS amount,
              count(*) FILTER (WHERE event_type = 'OrderItemAdded')
                - count(*) FILTER (WHERE event_type = 'OrderItemRemoved') AS items,
              (array_agg(CASE event_type WHEN 'OrderShipped' THEN 'shipped'
                                         WHEN 'OrderCompleted' THEN 'completed'
                                         ELSE 'cancelled' END ORDER BY global_position DESC)
               FILTER (WHERE event_type IN ('OrderShipped', 'OrderCompleted', 'OrderCancelled')))[1] AS status,
              (array_agg((data->>'shipped_at')::timestamptz ORDER BY global_position DESC)
               FILTER (WHERE event_type = 'OrderShipped'))[1] AS shipped_at,
              (array_agg((data->>'completed_at')::timestamptz ORDER BY global_position DESC)
               FILTER (WHERE event_type = 'OrderCompleted'))[1] AS completed_at,
              (array_agg((data->>'cancelled_at')::timestamptz ORDER BY global_position DESC)
               FILTER (WHERE event_type = 'OrderCancelled'))[1] AS cancelled_at,
              (array_agg(data->>'reason' ORDER BY global_position DESC)
               FILTER (WHERE event_type = 'OrderCancelled'))[1] AS reason,
              bool_or(event_type <> 'OrderCreated') AS changed
         FROM batch
        GROUP BY 1) o
   ON s.order_id = o.order_id
 WHEN MATCHED THEN UPDATE
   SET status = coalesce(o.status, s.status),
       total_amount = s.total_amount + o.amount,
       item_count = s.item_count + o.items,
       shipped_at = coalesce(o.shipped_at, s.shipped_at),
       completed_at = coalesce(o.completed_at, s.completed_at),
       cancelled_at = coalesce(o.cancelled_at, s.cancelled_at),
       cancellation_reason = coalesce(o.reason, s.cancellation_reason),
       updated_at = now()
 WHEN NOT MATCHED AND o.created THEN INSERT
       (order_id, customer_id, status, total_amount, item_count, created_at, shipped_at,
        completed_at, cancelled_at, cancellation_reason, updated_at)
   VALUES (o.order_id, o.customer_id, coalesce(o.status, 'pending'), o.amount, o.items, o.created_at,
           o.shipped_at, o.completed_at, o.cancelled_at, o.reason, CASE WHEN o.changed THEN now() END)"""]

BATCH["daily_sales"] = ["""
INSERT INTO @S.daily_sales AS d (date, total_orders, total_revenue, total_items)
SELECT left(data->>'completed_at', 10)::date, count(*), sum((data->>'total_amount')::numeric),
       sum((data->>'item_count')::integer)
  FROM batch WHERE event_type = 'OrderCompleted'
 GROUP BY 1 ORDER BY 1
ON CONFLICT (date) DO UPDATE
   SET total_orders = d.total_orders + excluded.total_orders,
       total_revenue = d.total_revenue + excluded.total_revenue,
       total_items = d.total_items + excluded.total_items,
       updated_at = now()""", """
UPDATE @S.daily_sales AS d
   SET total_orders = d.total_orders - r.refunds,
       total_revenue = d.total_revenue - r.amount,
       total_refunds = d.total_refunds + r.amount,
       updated_at = now()
  FROM (SELECT left(data->>'original_completed_at', 10)::date AS date, count(*) AS refunds,
               sum((data->>'refund_amount')::numeric) AS amount
          FROM batch WHERE event_type = 'OrderRefunded'
         GROUP BY 1) r
 WHERE d.date = r.date"""]

BATCH["customer_activity"] = ["""
INSERT INTO @S.customers (customer_id, email, name, tier, created_at)
SELECT data->>'customer_id', data->>'email', data->>'name', 'bronze', (data->>'created_at')::timestamptz
  FROM batch WHERE event_type = 'CustomerCreated'
 ORDER BY 1""", """
INSERT INTO @S.customer_activity_summary (customer_id, total_orders, total_spent, total_reviews)
SELECT data->>'customer_id', 0, 0, 0
  FROM batch WHERE event_type = 'CustomerCreated'
 ORDER BY 1""", """
UPDATE @S.customer_activity_summary AS a
   SET total_orders = a.total_orders + c.orders,
       total_spent = a.total_spent + c.spent,
       total_reviews = a.total_reviews + c.reviews,
       last_order_at = coalesce(c.last_order_at, a.last_order_at),
       last_review_at = coalesce(c.last_review_at, a.last_review_at)
  FROM (SELECT data->>'customer_id' AS customer_id,
               count(*) FILTER (WHERE event_type = 'OrderCompleted') AS orders,
               coalesce(sum((data->>'total_amount')::numeric) FILTER (WHERE event_type = 'OrderCompleted'), 0) AS spent,
               count(*) FILTER (WHERE event_type = 'ReviewSubmitted') AS reviews,
               (array_agg((data->>'completed_at')::timestamptz ORDER BY global_position DESC)
                FILTER (WHERE event_type = 'OrderCompleted'))[1] AS last_order_at,
               (array_agg((data->>'submitted_at')::timestamptz ORDER BY global_position DESC)
                FILTER (WHERE event_type = 'ReviewSubmitted'))[1] AS last_review_at
          FROM batch WHERE event_type IN ('OrderCompleted', 'ReviewSubmitted')
         GROUP BY 1) c
 WHERE a.customer_id = c.customer_id""", """
INSERT INTO @S.customer_order_history (customer_id, order_id, amount, completed_at)
SELECT data->>'customer_id', data->>'order_id', (data->>'total_amount')::numeric,
       (data->>'completed_at')::timestamptz
  FROM batch WHERE event_type = 'OrderCompleted'
 ORDER BY 1, 2""", """
UPDATE @S.customers AS c
   SET tier = t.tier, updated_at = now()
  FROM (SELECT DISTINCT ON (data->>'customer_id') data->>'customer_id' AS customer_id,
               data->>'new_tier' AS tier
          FROM batch WHERE event_type = 'CustomerTierChanged'
         ORDER BY data->>'customer_id', global_position DESC) t
 WHERE c.customer_id = t.customer_id"""]

# a product's latest create or delete in the batch decides whether it exists;
# its latest update and price change count only after that
BATCH["product_search"] = ["""
INSERT INTO @S.product_search AS p (product_id, name, description, category, price, tags, created_at)
SELECT data->>'product_id', data->>'name', data->>'description', data->>'category',
       (data->>'price')::numeric, ARRAY(SELECT jsonb_array_elements_text(data->'tags')),
       (data->>'created_at')::timestamptz
  FROM (SELECT DISTINCT ON (data->>'product_id') data, event_type
          FROM batch WHERE event_type IN ('ProductCreated', 'ProductDeleted')
         ORDER BY data->>'product_id', global_position DESC) latest
 WHERE event_type = 'ProductCreated'
 ORDER BY 1
ON CONFLICT (product_id) DO UPDATE
   SET name = excluded.name, description = excluded.description, category = excluded.category,
       price = excluded.price, tags = excluded.tags, created_at = excluded.created_at,
       updated_at = NULL, price_updated_at = NULL""", """
UPDATE @S.product_search AS p
   SET name = u.data->>'name', description = u.data->>'description',
       category = u.data->>'category',
       tags = ARRAY(SELECT jsonb_array_elements_text(u.data->'tags')),
       updated_at = (u.data->>'updated_at')::timestamptz
  FROM (SELECT data->>'product_id' AS product_id,
                 (array_agg(data ORDER BY global_position DESC)
                  FILTER (WHERE event_type = 'ProductUpdated'))[1] AS data,
                 max(global_position) FILTER (WHERE event_type = 'ProductUpdated') AS last,
                 max(global_position) FILTER (WHERE event_type <> 'ProductUpdated') AS lifecycle
            FROM batch WHERE event_type IN ('ProductUpdated', 'ProductCreated', 'ProductDeleted')
           GROUP BY 1) u
 WHERE p.product_id = u.product_id AND u.last > coalesce(u.lifecycle, 0)""", """
UPDATE @S.product_search AS p
   SET price = (c.data->>'new_price')::numeric,
       price_updated_at = (c.data->>'changed_at')::timestamptz
  FROM (SELECT data->>'product_id' AS product_id,
                 (array_agg(data ORDER BY global_position DESC)
                  FILTER (WHERE event_type = 'ProductPriceChanged'))[1] AS data,
                 max(global_position) FILTER (WHERE event_type = 'ProductPriceChanged') AS last,
                 max(global_position) FILTER (WHERE event_type <> 'ProductPriceChanged') AS lifecycle
            FROM batch WHERE event_type IN ('ProductPriceChanged', 'ProductCreated', 'ProductDeleted')
           GROUP BY 1) c
 WHERE p.product_id = c.product_id AND c.last > coalesce(c.lifecycle, 0)""", """
DELETE FROM @S.product_search AS p
 USING (SELECT DISTINCT ON (data->>'product_id') data->>'product_id' AS product_id, event_type
          FROM batch WHERE event_type IN ('ProductCreated', 'ProductDeleted')
         ORDER BY data->>'product_id', global_position DESC) latest
 WHERE p.product_id = latest.product_id AND latest.event_type = 'ProductDeleted'"""]


def batch_statements(name, schema):
    """The projection.on_batch() statements of a read model, for schema."""
    return [sub(s, schema).strip() for s in BATCH[name]]
