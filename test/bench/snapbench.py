"""The snapshot section of the benchmark (bench.py --only snapshot).

Order summary as a snapshot projection (projection.create_snapshot): one
jsonb state per order stream, folded by a PL/pgSQL function through fmgr,
loaded and written once per stream per batch, against the same read model
with per-event handlers (the catchup section's async order_summary, a
PL/pgSQL handler running one UPDATE per event, and its projection.on
variant) and the set-based INSERT ... SELECT ... GROUP BY.  Then the fold
alone: the same fold as an SQL aggregate over the same events, grouped by
stream in position order, in one process (the bound of any snapshot
projection using this fold), and a fold that only returns its state.

Measured the same way as the catchup section: async catch-up from the
beginning over the run's events (the worker's steady rate), then
projection.rebuild() of the snapshot projection.  The states are turned
into the order_summaries table and compared with the set-based oracle, and
snapshot() of every order is compared with aggregate() of its stream.
"""

import time

import models
from models import PROJECTIONS

FOLD = """
CREATE SCHEMA snap;
CREATE FUNCTION snap.order_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    CASE e.event_type
    WHEN 'OrderCreated' THEN
        RETURN jsonb_build_object('order_id', e.data->>'order_id', 'customer_id', e.data->>'customer_id',
                                  'status', 'pending', 'total_amount', 0, 'item_count', 0,
                                  'created_at', e.data->>'created_at');
    WHEN 'OrderItemAdded' THEN
        RETURN s || jsonb_build_object(
            'total_amount', (s->>'total_amount')::numeric
                            + (e.data->>'price')::numeric * (e.data->>'quantity')::numeric,
            'item_count', (s->>'item_count')::integer + 1);
    WHEN 'OrderItemRemoved' THEN
        RETURN s || jsonb_build_object(
            'total_amount', (s->>'total_amount')::numeric
                            - (e.data->>'price')::numeric * (e.data->>'quantity')::numeric,
            'item_count', (s->>'item_count')::integer - 1);
    WHEN 'OrderShipped' THEN
        RETURN s || jsonb_build_object('status', 'shipped', 'shipped_at', e.data->>'shipped_at');
    WHEN 'OrderCompleted' THEN
        RETURN s || jsonb_build_object('status', 'completed', 'completed_at', e.data->>'completed_at');
    WHEN 'OrderCancelled' THEN
        RETURN s || jsonb_build_object('status', 'cancelled', 'cancelled_at', e.data->>'cancelled_at',
                                       'cancellation_reason', e.data->>'reason');
    ELSE
        RETURN s;
    END CASE;
END
$$;
"""

# the states as the order_summaries table (orders whose OrderCreated was seen)
AS_TABLE = """
DROP TABLE IF EXISTS snap.order_summaries;
CREATE TABLE snap.order_summaries AS
SELECT state->>'order_id' AS order_id, state->>'customer_id' AS customer_id,
       state->>'status' AS status, (state->>'total_amount')::numeric AS total_amount,
       (state->>'item_count')::integer AS item_count,
       (state->>'created_at')::timestamptz AS created_at,
       (state->>'shipped_at')::timestamptz AS shipped_at,
       (state->>'completed_at')::timestamptz AS completed_at,
       (state->>'cancelled_at')::timestamptz AS cancelled_at,
       state->>'cancellation_reason' AS cancellation_reason
  FROM projection.snapshots
 WHERE name = 'snap_order_summary' AND state ? 'order_id'
"""


async def sec_snapshot(b, conn, label, ratio):
    """b: the Bench (its helpers, figures and records); label and ratio:
    bench.py's LABEL and ratio()."""
    LABEL = label

    n = "order_summary"
    upto = b.maxpos
    if ("set-based", n) not in b.catchup:
        # the oracle and the set-based figure, when catchup did not run
        await conn.execute(models.schema_sql("oracle", [n], handlers=False))
        t0 = time.perf_counter()
        async with conn.transaction():
            for s in models.oracle_sql("oracle", [n], upto):
                await conn.execute(s)
        b.setbased_secs[n] = time.perf_counter() - t0
        b.catchup[("set-based", n)] = upto / b.setbased_secs[n]
    await conn.execute("DROP SCHEMA IF EXISTS snap CASCADE")
    await conn.execute(FOLD)

    t0 = time.perf_counter()
    await conn.execute(
        "SELECT projection.create_snapshot('snap_order_summary', 'snap.order_fold', "
        "event_types => $1)", PROJECTIONS[n]["types"])
    try:
        total, rate, delay = await b.timed_catchup(conn, ["snap_order_summary"], upto, t0)
    except Exception as e:
        b.fail("async catch-up of the order summary snapshot", str(e))
        return
    await conn.execute(AS_TABLE)
    await b.compare(conn, "snap", "oracle", [n], "snapshot order summary vs set-based oracle")
    bad = await conn.fetchval("""
SELECT count(*) FROM projection.snapshots s
 WHERE s.name = 'snap_order_summary'
   AND s.state IS DISTINCT FROM projection.snapshot('snap_order_summary', s.stream_id)""")
    b.checks.append(("snapshot() of every stored state equals the state", bad == 0, 0))
    if bad:
        b.fail("snapshot() differs from the stored state for %d streams" % bad)

    per_event = b.catchup.get(("ext", n))
    stmt = b.catchup.get(("ext-stmt", n))
    sb = b.catchup.get(("set-based", n))
    cmp = []
    if per_event:
        cmp.append("%s per-event handler" % ratio(rate, per_event))
    if stmt:
        cmp.append("%s projection.on statements" % ratio(rate, stmt))
    cmp.append("%s set-based" % ratio(rate, sb))
    b.record("snapshot", "async snapshot %s (create to caught up: %.2f s, of which %.2f s before the worker started)"
             % (LABEL[n], total, delay), rate, "ev/s", ", ".join(cmp))

    # rebuild
    t0 = time.perf_counter()
    await conn.fetchval("SELECT projection.rebuild('snap_order_summary')")
    t_call = time.perf_counter() - t0
    total, rrate, delay = await b.timed_catchup(conn, ["snap_order_summary"], upto, t0)
    await conn.execute(AS_TABLE)
    await b.compare(conn, "snap", "oracle", [n], "rebuilt snapshot order summary vs set-based oracle")
    cmp = []
    if per_event:
        cmp.append("%s per-event handler catch-up" % ratio(upto / total, per_event))
    cmp.append("%s set-based (%.2f s)" % (ratio(upto / total, sb), b.setbased_secs[n]))
    b.record("snapshot", "projection.rebuild('snap_order_summary'): %.2f s to rebuilt (the call took %.2f s)"
             % (total, t_call), upto / total, "ev/s", ", ".join(cmp))

    # the fold alone: the same PL/pgSQL fold as an aggregate over the same
    # events (grouped by stream, in position order), in one process, with
    # nothing read or written by the extension; and a fold that only
    # returns its state (the cost of calling a PL/pgSQL function per event)
    await conn.execute("""
CREATE FUNCTION snap.noop_fold(s jsonb, e projection.events) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN s;
END
$$;
CREATE AGGREGATE snap.fold_agg(projection.events) (sfunc = snap.order_fold, stype = jsonb, initcond = '{}');
CREATE AGGREGATE snap.noop_agg(projection.events) (sfunc = snap.noop_fold, stype = jsonb, initcond = '{}');
""")
    alone = {}
    for agg in ("fold_agg", "noop_agg"):
        async with conn.transaction():
            await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            t0 = time.perf_counter()
            await conn.fetchval(
                "SELECT count(f) FROM (SELECT e.stream_id, snap.%s(e ORDER BY e.global_position) AS f "
                "FROM projection.events e WHERE e.event_type = ANY ($1) AND e.global_position <= $2 "
                "GROUP BY e.stream_id) x" % agg, PROJECTIONS[n]["types"], upto)
            alone[agg] = time.perf_counter() - t0
    cmp = ["the snapshot rebuild spends %.2f s" % total]
    if per_event:
        cmp.append("the per-event handler %.2f s" % (upto / per_event))
    cmp.append("a fold that only returns its state %.2f s" % alone["noop_agg"])
    b.record("snapshot", "the fold alone: the PL/pgSQL fold as an aggregate over the same events, grouped by stream: %.2f s"
             % alone["fold_agg"], upto / alone["fold_agg"], "ev/s", "; ".join(cmp))

    # snapshot() of a stream the projection has not applied yet: an append
    # in an open transaction (rolled back, so no later section sees it)
    sid, oid = await conn.fetchrow(
        "SELECT stream_id, state->>'order_id' FROM projection.snapshots "
        "WHERE name = 'snap_order_summary' AND state->>'status' = 'pending' "
        "ORDER BY stream_id LIMIT 1") or (None, None)
    if sid is not None:
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute("SELECT projection.append($1, 'OrderShipped', jsonb_build_object("
                               "'order_id', $2::text, 'shipped_at', '2030-01-01T00:00:00Z'))", sid, oid)
            fresh = await conn.fetchval("SELECT projection.snapshot('snap_order_summary', $1)->>'status'", sid)
            stored = await conn.fetchval("SELECT state->>'status' FROM projection.snapshots "
                                         "WHERE name = 'snap_order_summary' AND stream_id = $1", sid)
        finally:
            await tr.rollback()
        ok = fresh == "shipped" and stored == "pending"
        b.checks.append(("snapshot() of a stream with an unapplied event is current", ok, 1))
        if not ok:
            b.fail("snapshot() of a lagging stream: %s (stored %s), expected shipped" % (fresh, stored))
        else:
            b.say("check     snapshot() of a stream with an unapplied event: current (stored state still pending)")
    await conn.execute("SELECT projection.drop('snap_order_summary')")
