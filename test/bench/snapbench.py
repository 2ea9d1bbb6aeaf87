"""The snapshot section of the benchmark (bench.py --only snapshot).

Order summary as a snapshot projection (projection.create_snapshot): one
jsonb state per order stream, folded by a PL/pgSQL function through fmgr,
and again by the same expression as a LANGUAGE sql function with an
SQL-standard body (RETURN CASE ... END), which the extension evaluates as
an expression (1.7), loaded and written once per stream per batch, against
the same read model
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

import os
import time

import models
from models import PROJECTIONS

# The order fold's expression, shared by its PL/pgSQL and SQL-standard forms
ORDER_FOLD_EXPR = """CASE e.event_type
    WHEN 'OrderItemAdded' THEN
        jsonb_set(jsonb_set(s, '{total_amount}',
                            to_jsonb((s->'total_amount')::numeric
                                     + (e.data->'price')::numeric * (e.data->'quantity')::numeric)),
                  '{item_count}', to_jsonb((s->'item_count')::integer + 1))
    WHEN 'OrderItemRemoved' THEN
        jsonb_set(jsonb_set(s, '{total_amount}',
                            to_jsonb((s->'total_amount')::numeric
                                     - (e.data->'price')::numeric * (e.data->'quantity')::numeric)),
                  '{item_count}', to_jsonb((s->'item_count')::integer - 1))
    WHEN 'OrderCreated' THEN
        jsonb_build_object('order_id', e.data->'order_id', 'customer_id', e.data->'customer_id',
                           'status', 'pending', 'total_amount', 0, 'item_count', 0,
                           'created_at', e.data->'created_at')
    WHEN 'OrderShipped' THEN
        jsonb_set(s || '{"status": "shipped"}', '{shipped_at}', e.data->'shipped_at')
    WHEN 'OrderCompleted' THEN
        jsonb_set(s || '{"status": "completed"}', '{completed_at}', e.data->'completed_at')
    WHEN 'OrderCancelled' THEN
        jsonb_set(jsonb_set(s || '{"status": "cancelled"}', '{cancelled_at}', e.data->'cancelled_at'),
                  '{cancellation_reason}', e.data->'reason')
    ELSE s END"""

FOLD = """
CREATE SCHEMA snap;
-- The fold written for speed (README "Writing fast folds"): one expression
-- (RETURN CASE ... END, no PL/pgSQL statements), no variadic
-- jsonb_build_object after the first event (it looks up the type of every
-- argument at every call): constants merged with ||, jsonb_set with jsonb
-- values taken as they are from the event (e.data->'x', no text round
-- trip), numbers cast from jsonb directly ((s->'n')::numeric).  IMMUTABLE,
-- so that aggregate() may start from the projection's states.
CREATE FUNCTION snap.order_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN """ + ORDER_FOLD_EXPR + """;
END
$$;
-- The same expression as a LANGUAGE sql function with an SQL-standard body
-- (1.7): snapshot projections, snapshot() and aggregate() evaluate it as an
-- expression, with no function call per event.
CREATE FUNCTION snap.order_fold_sql(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN """ + ORDER_FOLD_EXPR + """;
-- The same fold written the first way that comes to mind (the seed
-- example of 1.3/1.4): PL/pgSQL CASE statements, s || jsonb_build_object(...)
-- and text round trips (->> then ::numeric).  Measured alone, against the
-- fold above.
CREATE FUNCTION snap.order_fold_naive(s jsonb, e projection.events) RETURNS jsonb
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
 WHERE name = '%s' AND state ? 'order_id'
"""


def backend_cpu(pid):
    """utime + stime of a backend on this machine, in seconds (None if not readable)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


LONG_FOLD = """
CREATE FUNCTION snap.tick_fold(s jsonb, e projection.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN jsonb_set(jsonb_set(s, '{n}', to_jsonb((s->'n')::bigint + 1)),
                     '{sum}', to_jsonb((s->'sum')::numeric + coalesce((e.data->'i')::numeric, 0)));
END
$$;
"""


async def aggregate_long_stream(b, conn, ratio, n=20000, tail=100, reps=5):
    """aggregate() of one stream of n events: folding every event, against
    starting from a fresh snapshot (a snapshot projection of every event
    type folded by the same IMMUTABLE fold, lagging by tail events)."""
    await conn.execute(LONG_FOLD)
    await conn.execute(
        "INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
        "SELECT 'bench-long', v, 'Tick', jsonb_build_object('i', v) FROM generate_series(1, $1::int) v", n)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    initial = '{"n": 0, "sum": 0}'

    async def timed():
        best_wall = best_cpu = None
        result = None
        for _ in range(reps):
            c0 = backend_cpu(pid)
            t0 = time.perf_counter()
            result = await conn.fetchval("SELECT projection.aggregate('bench-long', 'snap.tick_fold', $1::jsonb)::text",
                                         initial)
            w = time.perf_counter() - t0
            c = backend_cpu(pid) - c0
            best_wall = w if best_wall is None else min(best_wall, w)
            best_cpu = c if best_cpu is None else min(best_cpu, c)
        return result, best_wall, best_cpu

    full, full_wall, full_cpu = await timed()
    await conn.execute("SELECT projection.create_snapshot('snap_long', 'snap.tick_fold', $1::jsonb)", initial)
    last = await conn.fetchval("SELECT max(global_position) FROM projection.events")
    await conn.fetchval("SELECT projection.wait('snap_long', $1, '600 s')", last)
    await conn.execute("SELECT projection.pause('snap_long')")
    await conn.execute(
        "INSERT INTO projection.events (stream_id, stream_version, event_type, data) "
        "SELECT 'bench-long', v, 'Tick', jsonb_build_object('i', v) FROM generate_series($1::int + 1, $1::int + $2::int) v",
        n, tail)
    fresh, snap_wall, snap_cpu = await timed()
    await conn.execute("SELECT projection.drop('snap_long')")
    full2, full2_wall, full2_cpu = await timed()
    ok = fresh == full2 and full != full2
    b.checks.append(("aggregate() from a snapshot equals the full fold", ok, 1))
    if not ok:
        b.fail("aggregate() from a snapshot: %s, the full fold: %s" % (fresh, full2))
    b.record("snapshot", "aggregate() of a stream of %d events from a snapshot %d events behind: %.1f ms (backend CPU %.1f ms)"
             % (n + tail, tail, snap_wall * 1000, snap_cpu * 1000), (n + tail) / snap_wall, "ev/s",
             "%s folding every event (%.1f ms, CPU %.1f ms; %d events before: %.1f ms)"
             % (ratio(full2_wall, snap_wall), full2_wall * 1000, full2_cpu * 1000, n, full_wall * 1000))


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

    per_event = b.catchup.get(("ext", n))
    stmt = b.catchup.get(("ext-stmt", n))
    sb = b.catchup.get(("set-based", n))
    pid = await conn.fetchval("SELECT pg_backend_pid()")

    # a rebuild of the catchup section's per-event order summary (one UPDATE
    # per event), in this backend, before the snapshots': the like-for-like
    # figure for their rebuilds, in wall time and in backend CPU (a ratio
    # that the machine's load disturbs less)
    pe = "ext_all_order_summary"
    pe_wall = pe_cpu = None
    if await conn.fetchval("SELECT count(*) FROM projection.status WHERE name = $1", pe):
        c0 = backend_cpu(pid)
        t0 = time.perf_counter()
        await conn.fetchval("SELECT projection.rebuild($1)", pe)
        pe_cpu = backend_cpu(pid) - c0
        pe_wall = (await b.timed_catchup(conn, [pe], upto, t0))[0]

    async def catchup_and_rebuild(proj, fold, what):
        """Catch-up and rebuild of order summary as snapshot projection proj
        folded by fold; returns (catch-up rate, rebuild wall seconds,
        rebuild call's backend CPU seconds), or None on failure."""
        t0 = time.perf_counter()
        await conn.execute(
            "SELECT projection.create_snapshot($1, $2::regproc, event_types => $3)",
            proj, fold, PROJECTIONS[n]["types"])
        try:
            total, rate, delay = await b.timed_catchup(conn, [proj], upto, t0)
        except Exception as e:
            b.fail("async catch-up of the order summary snapshot (%s)" % what, str(e))
            return None
        await conn.execute(AS_TABLE % proj)
        await b.compare(conn, "snap", "oracle", [n], "snapshot order summary (%s) vs set-based oracle" % what)
        bad = await conn.fetchval("""
SELECT count(*) FROM projection.snapshots s
 WHERE s.name = $1
   AND s.state IS DISTINCT FROM projection.snapshot($1, s.stream_id)""", proj)
        b.checks.append(("snapshot() of every stored state equals the state (%s)" % what, bad == 0, 0))
        if bad:
            b.fail("snapshot() differs from the stored state for %d streams (%s)" % (bad, what))
        cmp = []
        if per_event:
            cmp.append("%s per-event handler" % ratio(rate, per_event))
        if stmt:
            cmp.append("%s projection.on statements" % ratio(rate, stmt))
        cmp.append("%s set-based" % ratio(rate, sb))
        b.record("snapshot", "async snapshot %s, %s (create to caught up: %.2f s, of which %.2f s before the worker started)"
                 % (LABEL[n], what, total, delay), rate, "ev/s", ", ".join(cmp))

        # rebuild
        t0 = time.perf_counter()
        c0 = backend_cpu(pid)
        await conn.fetchval("SELECT projection.rebuild($1)", proj)
        cpu = backend_cpu(pid) - c0
        t_call = time.perf_counter() - t0
        total, rrate, delay = await b.timed_catchup(conn, [proj], upto, t0)
        await conn.execute(AS_TABLE % proj)
        await b.compare(conn, "snap", "oracle", [n], "rebuilt snapshot order summary (%s) vs set-based oracle" % what)
        cmp = []
        if pe_wall:
            cmp.append("%s the per-event handler's rebuild (%.2f s)" % (ratio(pe_wall, total), pe_wall))
        if per_event:
            cmp.append("%s its catch-up" % ratio(upto / total, per_event))
        cmp.append("%s set-based (%.2f s)" % (ratio(upto / total, sb), b.setbased_secs[n]))
        b.record("snapshot", "projection.rebuild('%s'), %s: %.2f s to rebuilt (the call took %.2f s)"
                 % (proj, what, total, t_call), upto / total, "ev/s", ", ".join(cmp))
        return rate, total, cpu

    folds = [("snap_order_summary", "snap.order_fold", "PL/pgSQL fold"),
             ("snap_order_summary_sql", "snap.order_fold_sql", "SQL-standard fold")]
    got = {}
    for proj, fold, what in folds:
        r = await catchup_and_rebuild(proj, fold, what)
        if r is None:
            return
        got[proj] = r
        if proj != "snap_order_summary":
            await conn.execute("SELECT projection.drop($1)", proj)
    total = got["snap_order_summary"][1]

    # the same rebuilds' backend CPU against the per-event handler's
    if pe_cpu is not None:
        for proj, fold, what in folds:
            snap_cpu = got[proj][2]
            b.record("snapshot", "backend CPU of the rebuild call: snapshot (%s) %.2f s, per-event handler (%s) %.2f s"
                     % (what, snap_cpu, pe, pe_cpu), upto / snap_cpu if snap_cpu else 0, "ev/CPU-s",
                     "%s per-event handler rebuild" % ratio(pe_cpu, snap_cpu))

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
CREATE AGGREGATE snap.naive_agg(projection.events) (sfunc = snap.order_fold_naive, stype = jsonb, initcond = '{}');
CREATE AGGREGATE snap.noop_agg(projection.events) (sfunc = snap.noop_fold, stype = jsonb, initcond = '{}');
""")
    alone = {}
    cpu = {}
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    digests = {}
    for agg in ("fold_agg", "naive_agg", "noop_agg"):
        async with conn.transaction():
            await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            t0 = time.perf_counter()
            c0 = backend_cpu(pid)
            digests[agg] = await conn.fetchval(
                "SELECT md5(string_agg(f::text, ',' ORDER BY sid)) FROM (SELECT e.stream_id AS sid, "
                "snap.%s(e ORDER BY e.global_position) AS f "
                "FROM projection.events e WHERE e.event_type = ANY ($1) AND e.global_position <= $2 "
                "GROUP BY e.stream_id) x" % agg, PROJECTIONS[n]["types"], upto)
            cpu[agg] = backend_cpu(pid) - c0
            alone[agg] = time.perf_counter() - t0
    same = digests["fold_agg"] == digests["naive_agg"]
    b.checks.append(("the fast fold and the naive fold give the same states", same, 1))
    if not same:
        b.fail("the fast fold and the naive fold differ")
    cmp = ["the snapshot rebuild spends %.2f s" % total]
    if per_event:
        cmp.append("the per-event handler %.2f s" % (upto / per_event))
    cmp.append("the naive fold %.2f s (backend CPU %.2f s against %.2f s: %s)"
               % (alone["naive_agg"], cpu["naive_agg"], cpu["fold_agg"],
                  ratio(cpu["naive_agg"], cpu["fold_agg"]) if cpu["fold_agg"] else "n/a"))
    cmp.append("a fold that only returns its state %.2f s (CPU %.2f s)" % (alone["noop_agg"], cpu["noop_agg"]))
    b.record("snapshot", "the fold alone: the PL/pgSQL fold as an aggregate over the same events, grouped by stream: %.2f s"
             % alone["fold_agg"], upto / alone["fold_agg"], "ev/s", "; ".join(cmp))

    await aggregate_long_stream(b, conn, ratio)

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
