#!/usr/bin/env python3
"""Benchmarks of the projection extension against the alternatives.

Run through test/bench/run.sh, which starts a throwaway cluster and calls

    bench.py --host SOCKETDIR --port PORT --out DIR [--quick] [--events N] [--seed S]

Sections (all in one run, each figure printed with its ratio to the
alternatives; see README.md "Performance" and test/bench/README.md):

  append    projection.append and a bulk INSERT into projection.events vs a
            plain INSERT into a table of the same shape; 1 event per
            transaction and 100 per statement; 1 and 8 clients;
            synchronous_commit on and off (pgbench).
  inline    append with the inline order-summary projection (PL/pgSQL handler
            and projection.on statements) vs append plus the same statements
            written by hand in the same transaction, and vs append alone.
  catchup   async catch-up of each seed projection and of all four, vs the
            client-side projector in the seed's style (pyprojector.py), a
            PL/pgSQL loop with a checkpoint per batch, and the set-based
            INSERT ... SELECT ... GROUP BY rebuild.
  snapshot  order summary as a snapshot projection (create_snapshot: one
            state per stream, folded in memory, written once per batch) vs
            the per-event handlers of catchup and the set-based rebuild;
            its rebuild (snapbench.py).
  rebuild   projection.rebuild vs the set-based rebuild.
  latency   commit-to-visible p50/p90/p99 at a fixed append rate, extension
            and client-side projector.
  bystander the same latency while an unrelated transaction stays open.
  growth    1, 10 and 50 async projections; N and --big-events events.
  batch     the four read models as batch statements (projection.on_batch):
            async catch-up and rebuild vs the set-based limit, per-event
            handlers and the PL/pgSQL loop; a hot-key rebuild (one row
            updated by every event) per-event vs batch; inline appends of
            100 events per statement, per-event handler vs batch statements.
  feeds     commit-to-poll latency of a long-polling feed consumer and backlog
            drains through poll/ack, vs a client polling every 100 ms
            (feeds.py).

Every read model is compared with the set-based oracle (and the extension's
with the PL/pgSQL loop's); any difference fails the run (exit status 1) and is
printed with sample rows.  --quick shrinks everything for CI and asserts no
timing.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import sys
import time
import traceback
import zlib

import asyncpg

import feeds
import gen
import models
import snapbench
from models import PROJECTIONS, SEED

HERE = os.path.dirname(os.path.abspath(__file__))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")

DEFAULT = dict(events=100000, append_secs=4, append_tx=None, inline_secs=3,
               inline_tx=None, append_clients=[1, 8], append_sync=["on", "off"],
               append_batches=[1, 100], inline_clients=[1, 8], py_cap=8.0,
               rate=500, lat_rates=[500, 100], lat_secs=10.0, warmup_secs=2.0, bystander_secs=30.0, growth=[1, 10, 50],
               big_events=1000000, stall=120.0, stmt_variant=True,
               hot_per_event=[25000, 50000], hot_batch=[25000, 50000, 200000], inline_batch_secs=3,
               inline_batch_tx=None, cold_n=100)
QUICK = dict(events=5000, append_secs=None, append_tx={1: 300, 100: 10}, inline_secs=None,
             inline_tx=300, append_clients=[1, 8], append_sync=["on", "off"],
             append_batches=[1, 100], inline_clients=[1], py_cap=1.0,
             rate=500, lat_rates=[500], lat_secs=1.5, warmup_secs=0.3, bystander_secs=3.0, growth=[1, 10],
             big_events=20000, stall=60.0, stmt_variant=False,
             hot_per_event=[2000, 4000], hot_batch=[2000, 4000, 16000], inline_batch_secs=None,
             inline_batch_tx=20, cold_n=10)

SECTIONS = ["append", "inline", "catchup", "snapshot", "rebuild", "batch", "latency", "bystander", "growth", "feeds", "pool"]

LABEL = {"order_summary": "order_summary", "daily_sales": "daily_sales",
         "customer_activity": "customer_activity", "product_search": "product_search",
         "all": "all four"}


class Failure(Exception):
    pass


def fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def ratio(a, b):
    if not a or not b:
        return "n/a"
    r = a / b
    if r >= 10:
        return "%.0fx" % r
    if r >= 1:
        return "%.1fx" % r
    return "%.2gx" % r


class Bench:
    def __init__(self, a):
        self.a = a
        p = dict(QUICK if a.quick else DEFAULT)
        if a.events:
            p["events"] = a.events
        if a.big_events:
            p["big_events"] = a.big_events
        if a.rate:
            p["rate"] = a.rate
            p["lat_rates"] = [a.rate] + [r for r in p["lat_rates"][1:] if r != a.rate]
        self.p = p
        self.n = p["events"]
        self.results = []
        self.checks = []
        self.failures = []
        self.plot = {"append": [], "catchup": {}, "latency": []}
        self.catchup = {}          # (variant, proj) -> ev/s
        self.setbased_secs = {}    # proj -> seconds
        self.rebuild_rates = {}    # proj -> ev/s of projection.rebuild with per-event handlers
        self.hot = {}              # (variant, events) -> seconds of the hot-key rebuild
        self.catchup_wall = {}     # (variant, proj) -> (create-to-done seconds, start delay)
        self.t_start = time.time()
        os.makedirs(a.out, exist_ok=True)
        self.work = os.path.join(a.out, "work")
        os.makedirs(self.work, exist_ok=True)
        self.only = set(a.only.split(",")) if a.only else set(SECTIONS)

    # ------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------
    async def connect(self, db="bench"):
        conn = await asyncpg.connect(host=self.a.host, port=self.a.port, user="postgres",
                                     database=db, command_timeout=3600)
        # asyncpg has no built-in codec for regclass[] (projection.create's
        # tables): the first statement of a connection with such a parameter
        # first runs asyncpg's type introspection query, which the server
        # JIT-compiles (0.4 to 6 s on this machine, the more the busier).
        # That was inside the first timed catch-up of every run ("before the
        # worker started"), so introspect here, once per connection, without JIT.
        await conn.execute("SET jit = off")
        await conn.fetchval("SELECT pg_catalog.cardinality($1::pg_catalog.regclass[])", [])
        await conn.execute("RESET jit")
        return conn

    def say(self, msg):
        print("[%6.1fs] %s" % (time.time() - self.t_start, msg), flush=True)

    def record(self, section, name, value, unit, compare=""):
        self.results.append(dict(section=section, name=name, value=value, unit=unit,
                                 compare=compare))
        self.say("%-9s %s: %s %s%s" % (section, name, fmt(value), unit,
                                       (" = " + compare) if compare else ""))

    def fail(self, what, detail=""):
        self.failures.append((what, detail))
        print("\n" + "!" * 78, file=sys.stderr)
        print("FAIL: %s" % what, file=sys.stderr)
        if detail:
            print(detail, file=sys.stderr)
        print("!" * 78 + "\n", file=sys.stderr, flush=True)

    async def fresh_db(self, name):
        c = await self.connect("postgres")
        try:
            await c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
            await c.execute("CREATE DATABASE %s" % name)
        finally:
            await c.close()
        conn = await self.connect(name)
        await self.install(conn)
        return conn

    async def drop_db(self, name):
        c = await self.connect("postgres")
        try:
            await c.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        finally:
            await c.close()

    async def install(self, conn):
        if not self.a.no_extension:
            await conn.execute("CREATE EXTENSION projection")
            return
        # Development stand-in (--no-extension): a plain table of the same
        # shape and a SQL append(), so the harness and the alternatives can be
        # exercised before the extension is installed.
        await conn.execute("""
CREATE SCHEMA projection;
CREATE TABLE projection.events (
    global_position bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL,
    data jsonb NOT NULL, metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, stream_version));
CREATE FUNCTION projection.append(p_stream text, p_type text, p_data jsonb,
                                  p_meta jsonb DEFAULT '{}', p_expected bigint DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO projection.events (stream_id, stream_version, event_type, data, metadata)
    SELECT p_stream, coalesce(max(stream_version), 0) + 1, p_type, p_data, p_meta
      FROM projection.events WHERE stream_id = p_stream
    RETURNING global_position $$;
""")

    async def load_stage(self, conn, events, table="bench.stage", start=1):
        recs = [(start + i, s, v, t, d) for i, (s, v, t, d) in enumerate(events)]
        schema, name = table.split(".")
        await conn.copy_records_to_table(
            name, schema_name=schema, records=recs,
            columns=["seq", "stream_id", "stream_version", "event_type", "data"])

    async def create_stage(self, conn):
        await conn.execute("""
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE bench.stage (seq bigint PRIMARY KEY, stream_id text NOT NULL,
                          stream_version bigint NOT NULL, event_type text NOT NULL,
                          data jsonb NOT NULL);
""")

    async def bulk_insert_events(self, conn, first, last, chunk=50000):
        """Moves stage rows first..last into projection.events with the
        contract's plain multi-row INSERT, in chunks."""
        t0 = time.perf_counter()
        lo = first
        while lo <= last:
            hi = min(last, lo + chunk - 1)
            await conn.execute("""
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT stream_id, stream_version, event_type, data FROM bench.stage
 WHERE seq BETWEEN $1 AND $2 ORDER BY seq""", lo, hi)
            lo = hi + 1
        return time.perf_counter() - t0

    async def max_pos(self, conn):
        return await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM projection.events")

    async def wait_projections(self, conn, names, upto, stall=None):
        """Blocks until every named async projection has applied all events
        up to upto, using projection.wait() (which returns as soon as the
        position is reached).  Fails when a projection is failed, or when no
        projection's position moved for `stall` seconds."""
        stall = stall or self.p["stall"]
        pending = list(names)
        last_sum, last_move = None, time.time()
        while pending:
            ok = await conn.fetchval("SELECT projection.wait($1, $2, '1 s')", pending[0], upto)
            if ok:
                pending.pop(0)
                continue
            rows = await conn.fetch(
                "SELECT name, state, position, last_error FROM projection.status WHERE name = ANY($1)",
                pending)
            for r in rows:
                if r["state"] == "failed":
                    raise Failure("projection %s failed at position %s: %s"
                                  % (r["name"], r["position"], r["last_error"]))
            s = sum(r["position"] or 0 for r in rows)
            if s != last_sum:
                last_sum, last_move = s, time.time()
            elif time.time() - last_move > stall:
                raise Failure("async projections made no progress for %.0f s (target position %d): %s"
                              % (stall, upto, ", ".join("%s state=%s position=%s error=%s"
                                                        % (r["name"], r["state"], r["position"],
                                                           r["last_error"]) for r in rows)))

    async def timed_catchup(self, conn, names, upto, t0):
        """Times async projections (created or reset at t0, a perf_counter
        value) until they have applied every event up to upto.

        Returns (total, rate, delay): total is the wall time from t0 (what a
        user waits); rate is the worker's steady throughput in stream
        events/s, measured from the first checkpoint we see move to the end,
        so that it does not depend on how soon the worker notices a new
        projection; delay is the estimated time before the worker started
        (total - upto / rate).  The first move is found by polling
        projection.status every 5 ms; the end by projection.wait()."""
        stall = self.p["stall"]
        init = None
        first = None
        while True:
            rows = await conn.fetch(
                "SELECT name, state, position, last_error FROM projection.status WHERE name = ANY($1)", names)
            now = time.perf_counter()
            for r in rows:
                if r["state"] == "failed":
                    raise Failure("projection %s failed at position %s: %s"
                                  % (r["name"], r["position"], r["last_error"]))
            if len(rows) != len(names):
                raise Failure("projections missing from projection.status: %s" % names)
            pos = {r["name"]: r["position"] or 0 for r in rows}
            if init is None:
                init = pos
            if any(pos[n] != init[n] for n in names) or all(pos[n] >= upto for n in names):
                first = (now, min(pos.values()))
                break
            if now - t0 > stall:
                raise Failure("async projections did not start within %.0f s: %s" % (stall, pos))
            await asyncio.sleep(0.005)
        await self.wait_projections(conn, names, upto)
        t_end = time.perf_counter()
        total = t_end - t0
        todo = upto - first[1]
        if todo >= 0.25 * upto and t_end > first[0]:
            rate = todo / (t_end - first[0])
            delay = max(0.0, total - upto / rate)
        else:
            # (almost) everything was applied before we first looked
            rate = upto / total
            delay = 0.0
        return total, rate, delay

    async def oracle_into(self, conn, schema, names, upto, timed=False):
        """(Re)creates schema with the read models of `names` computed
        set-based from the events up to upto.  Returns seconds."""
        await conn.execute(models.schema_sql(schema, names, handlers=False))
        t0 = time.perf_counter()
        async with conn.transaction():
            for s in models.oracle_sql(schema, names, upto):
                await conn.execute(s)
        return time.perf_counter() - t0

    async def compare(self, conn, a, b, names, what):
        """Compares the read models of `names` in schemas a and b; a
        difference is a failure of the run, printed with sample rows."""
        bad = []
        rows_total = 0
        for n in names:
            for table, cols in PROJECTIONS[n]["compare"].items():
                diff = await conn.fetch(models.diff_sql(a, b, table, cols) + " LIMIT 6")
                cnt = await conn.fetchval("SELECT count(*) FROM %s.%s" % (a, table))
                rows_total += cnt
                if diff:
                    ndiff = await conn.fetchval("SELECT count(*) FROM (%s) d" % models.diff_sql(a, b, table, cols))
                    sample = "\n".join("    " + ", ".join("%s=%s" % (k, r[k]) for k in r.keys())
                                       for r in diff)
                    bad.append("  %s.%s vs %s.%s: %d differing rows, e.g.\n%s"
                               % (a, table, b, table, ndiff, sample))
        self.checks.append((what, not bad, rows_total))
        if bad:
            self.fail("read models differ: %s" % what, "\n".join(bad))
        else:
            self.say("check     %s: identical (%d rows)" % (what, rows_total))
        return not bad

    async def pgbench(self, db, script, clients, secs=None, tx=None, sync="on", defs=None):
        path = os.path.join(self.work, "pgbench_%s.sql" % abs(hash(script)))
        with open(path, "w") as f:
            f.write(script)
        cmd = [os.path.join(PGBIN, "pgbench"), "-n", "-M", "prepared", "-h", self.a.host,
               "-p", str(self.a.port), "-U", "postgres", "-c", str(clients),
               "-j", str(min(clients, 2)), "-f", path]
        cmd += ["-T", str(secs)] if secs else ["-t", str(tx)]
        for k, v in (defs or {}).items():
            cmd += ["-D", "%s=%s" % (k, v)]
        cmd.append(db)
        # every cell starts right after a checkpoint, so that none pays more
        # full-page writes than another
        c = await self.connect(db)
        try:
            await c.execute("CHECKPOINT")
        finally:
            await c.close()
        env = dict(os.environ, PGOPTIONS="-c synchronous_commit=%s" % sync)
        proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        out, err = out.decode(), err.decode()
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        failed = re.search(r"number of failed transactions: (\d+)", out)
        if proc.returncode != 0 or not m or (failed and int(failed.group(1)) > 0):
            raise Failure("pgbench failed (%s):\n%s\n%s\nscript:\n%s" % (" ".join(cmd), out, err, script))
        return float(m.group(1))

    # ------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------
    async def setup(self):
        p = self.p
        tail = int((sum(p["lat_rates"]) * 2 * (p["lat_secs"] + p["warmup_secs"])
                    + p["rate"] * p["bystander_secs"]) * 1.2) + 1000
        t0 = time.perf_counter()
        evs = list(gen.events(self.a.seed, self.n + tail))
        self.base, self.tail = evs[:self.n], evs[self.n:]
        self.say("setup     generated %d + %d events (seed %d) in %.1f s"
                 % (len(self.base), len(self.tail), self.a.seed, time.perf_counter() - t0))
        conn = await self.fresh_db("bench")
        await self.create_stage(conn)
        await conn.execute("""
CREATE TABLE bench.probe (variant text NOT NULL, proj text NOT NULL, global_position bigint NOT NULL,
                          visible_at timestamptz);
""")
        await self.load_stage(conn, self.base)
        secs = await self.bulk_insert_events(conn, 1, self.n)
        await conn.execute("VACUUM (ANALYZE) projection.events")
        await conn.execute("CHECKPOINT")
        self.maxpos = await self.max_pos(conn)
        if self.maxpos != self.n:
            self.say("setup     note: %d events loaded, max global_position %d" % (self.n, self.maxpos))
        self.record("setup", "bulk load: INSERT INTO projection.events ... SELECT (%s events)"
                    % "{:,}".format(self.n), self.n / secs, "ev/s")
        self.handled_counts = {}
        for name in SEED:
            self.handled_counts[name] = await conn.fetchval(
                "SELECT count(*) FROM projection.events WHERE event_type = ANY($1)",
                PROJECTIONS[name]["types"])
        self.tail_next = 0
        return conn

    def take_tail(self, k):
        out = self.tail[self.tail_next:self.tail_next + k]
        self.tail_next += len(out)
        if len(out) < k:
            raise Failure("internal: the generated tail is too short")
        return out

    # ------------------------------------------------------------------
    # 1. append
    # ------------------------------------------------------------------
    def partitions(self, events, ncs, orders_only=False):
        """Rows (nc, client, n, stream_id, stream_version, event_type, data)
        that give each of nc pgbench clients its own streams, in stream
        order.  Stream and order ids get an "@nc" suffix so that the runs
        with different client counts never share a stream."""
        rows, counts = [], {}
        for nc in ncs:
            idx = {}
            for (s, v, t, d) in events:
                if orders_only and not s.startswith("order-"):
                    continue
                cl = zlib.crc32(s.encode()) % nc
                k = idx.get(cl, 0)
                idx[cl] = k + 1
                if s.startswith("order-"):
                    dd = json.loads(d)
                    dd["order_id"] = "%s@%d" % (dd["order_id"], nc)
                    d = json.dumps(dd, separators=(",", ":"))
                rows.append((nc, cl, k, "%s@%d" % (s, nc), v, t, d))
            for cl, k in idx.items():
                counts[(nc, cl)] = k
        return rows, counts

    async def load_partitions(self, conn, rows, counts):
        await conn.execute("""
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE bench.pstage (nc int, client int, n bigint, stream_id text, stream_version bigint,
                           event_type text, data jsonb, PRIMARY KEY (nc, client, n));
CREATE TABLE bench.pcount (nc int, client int, cnt bigint, PRIMARY KEY (nc, client));
""")
        await conn.copy_records_to_table("pstage", schema_name="bench", records=rows)
        await conn.copy_records_to_table("pcount", schema_name="bench",
                                         records=[(a, b, c) for (a, b), c in counts.items()])
        for (nc, cl) in counts:
            await conn.execute("CREATE SEQUENCE bench.cur_%d_%d" % (nc, cl))
        await conn.execute("VACUUM ANALYZE bench.pstage, bench.pcount")

    # the next :batch events of this client's partition; after a full pass
    # the stream ids get a new "~pass" suffix, so (stream, version) pairs are
    # never reused, by any method, in any run
    PART_SRC = """  FROM (SELECT nextval(('bench.cur_' || :nc || '_' || :client_id)::regclass) - 1 AS n
          FROM generate_series(1, :batch)) c
  JOIN bench.pcount m ON m.nc = :nc AND m.client = :client_id
  JOIN bench.pstage s ON s.nc = :nc AND s.client = :client_id AND s.n = c.n % m.cnt
 ORDER BY c.n;
"""

    # ------------------------------------------------------------------
    # 1. append
    # ------------------------------------------------------------------
    async def sec_append(self):
        """pgbench, each client appending to its own streams (as writers of
        different aggregates do; concurrent batches over shared streams would
        measure deadlocks on the per-stream locks instead)."""
        p = self.p
        db = "bench_append"
        conn = await self.fresh_db(db)
        try:
            rows, counts = self.partitions(self.base, sorted(set(p["append_clients"])))
            await self.load_partitions(conn, rows, counts)
            await conn.execute("""
CREATE TABLE bench.plain_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL,
    data jsonb NOT NULL, metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version));
""")
        finally:
            await conn.close()
        stream = "s.stream_id || '~' || (c.n / m.cnt)"
        scripts = {
            "plain INSERT": "INSERT INTO bench.plain_events (stream_id, stream_version, event_type, data)\n"
                            "SELECT %s, s.stream_version, s.event_type, s.data\n" % stream + self.PART_SRC,
            "projection.append": "SELECT projection.append(%s, s.event_type, s.data)\n" % stream + self.PART_SRC,
            "INSERT INTO projection.events": "INSERT INTO projection.events (stream_id, stream_version, event_type, data)\n"
                            "SELECT %s, s.stream_version, s.event_type, s.data\n" % stream + self.PART_SRC,
        }
        for batch in p["append_batches"]:
            for clients in p["append_clients"]:
                for sync in p["append_sync"]:
                    rates = {}
                    for method, script in scripts.items():
                        tps = await self.pgbench(
                            db, script, clients, secs=p["append_secs"],
                            tx=(p["append_tx"] or {}).get(batch), sync=sync,
                            defs={"batch": batch, "nc": clients})
                        rates[method] = tps * batch
                    what = "%s, %d client%s, synchronous_commit %s" % (
                        "1 event/tx" if batch == 1 else "%d events/statement" % batch, clients,
                        "s" if clients > 1 else "", sync)
                    base = rates["plain INSERT"]
                    self.record("append", "plain INSERT, " + what, base, "ev/s")
                    for method in ("projection.append", "INSERT INTO projection.events"):
                        self.record("append", method + ", " + what, rates[method], "ev/s",
                                    "%s plain INSERT" % ratio(rates[method], base))
                    self.plot["append"].append(("%s %dc %s" % ("1/tx" if batch == 1 else "%d/tx" % batch,
                                                              clients, sync),
                                                base, rates["projection.append"],
                                                rates["INSERT INTO projection.events"]))
        if not self.a.keep_dbs:
            await self.drop_db(db)

    # ------------------------------------------------------------------
    # pool: workers on demand
    # ------------------------------------------------------------------
    async def sec_pool(self):
        """Commit-to-visible latency of a database whose worker must be
        started (projection.worker_idle_timeout = 0: the worker leaves as
        soon as it is caught up, and each append waits until it has left, so
        every event finds no worker), against the same with the worker kept
        running.  The handler records the event's position in the same
        transaction as its write, so the latency is the difference of the
        two commit timestamps, as in the latency section.  The append
        section's database has the library preloaded and no async
        projection: its plain-INSERT ratios are the cost of an append where
        nothing is async."""
        p = self.p
        db = "bench_pool"
        conn = await self.fresh_db(db)
        admin = await self.connect("postgres")
        try:
            await conn.execute("""
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE bench.cold_probe (pos bigint PRIMARY KEY);
CREATE FUNCTION bench.cold_h(e projection.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO bench.cold_probe VALUES (e.global_position) $$;
SELECT projection.create('cold', 'bench.cold_h', mode => 'async');
""")
            results = {}
            for variant, timeout in (("warm", "1h"), ("cold", "0")):
                await admin.execute("ALTER SYSTEM SET projection.worker_idle_timeout = '%s'" % timeout)
                await admin.execute("SELECT pg_reload_conf()")
                await asyncio.sleep(0.2)
                first = None
                for i in range(p["cold_n"]):
                    if variant == "cold":
                        # wait (bounded) until the database holds no worker
                        for _ in range(2000):
                            if await admin.fetchval(
                                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                                    "AND backend_type = 'projection worker'", db) == 0:
                                break
                            await asyncio.sleep(0.005)
                        else:
                            raise Failure("the worker of %s does not leave" % db)
                    pos = await conn.fetchval("SELECT projection.append('cold', 'Tick', '{}')")
                    first = first or pos
                    if not await conn.fetchval("SELECT projection.wait('cold', $1, '30 s')", pos):
                        raise Failure("event %d not applied within 30 s (%s)" % (pos, variant))
                row = await conn.fetchrow("""
SELECT count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
       max(ms) AS max
  FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(c.xmin)
                                - pg_xact_commit_timestamp(e.xmin)) * 1000 AS ms
          FROM bench.cold_probe c JOIN projection.events e ON e.global_position = c.pos
         WHERE c.pos >= $1) x""", first)
                if row["n"] != p["cold_n"]:
                    self.fail("pool %s: %d of %d events applied" % (variant, row["n"], p["cold_n"]))
                results[variant] = row
            cold, warm = results["cold"], results["warm"]
            for q in ("p50", "p99"):
                self.record("pool", "commit to visible, worker running (warm), " + q,
                            float(warm[q]), "ms")
                self.record("pool", "commit to visible, worker started on demand (cold), " + q,
                            float(cold[q]), "ms", "%s the warm %s; %d cold starts, max %s ms" % (
                                ratio(float(cold[q]), float(warm[q])), q, cold["n"],
                                fmt(float(cold["max"]))))
            total = await conn.fetchval("SELECT count(*) FROM bench.cold_probe")
            events = await conn.fetchval("SELECT count(*) FROM projection.events")
            if total != events:
                self.fail("pool: %d events applied of %d" % (total, events))
        finally:
            await admin.execute("ALTER SYSTEM RESET projection.worker_idle_timeout")
            await admin.execute("SELECT pg_reload_conf()")
            await admin.close()
            await conn.close()
        if not self.a.keep_dbs:
            await self.drop_db(db)

    # ------------------------------------------------------------------
    # 2. inline overhead
    # ------------------------------------------------------------------
    async def create_inline_summary(self, conn, name, types, v):
        """The inline projection inline_order_summary over rm.order_summaries
        of variant v (sec_inline, batch_inline): "fn" its PL/pgSQL handler,
        "stmt" projection.on statements, "batch" batch statements; none for
        any other variant."""
        if v == "fn":
            await conn.execute(
                "SELECT projection.create('inline_order_summary', 'rm.h_order_summary', $1, 'inline', "
                "ARRAY['rm.order_summaries']::regclass[])", types)
        elif v == "stmt":
            await conn.execute(
                "SELECT projection.create('inline_order_summary', NULL, $1, 'inline', "
                "ARRAY['rm.order_summaries']::regclass[])", types)
            for etype, stmt in models.on_statements(name, "rm"):
                await conn.execute("SELECT projection.on('inline_order_summary', $1, $2)", etype, stmt)
        elif v == "batch":
            await conn.execute(
                "SELECT projection.create('inline_order_summary', NULL, $1, 'inline', "
                "ARRAY['rm.order_summaries']::regclass[])", types)
            for stmt in models.batch_statements(name, "rm"):
                await conn.execute("SELECT projection.on_batch('inline_order_summary', $1)", stmt)

    async def sec_inline(self):
        """pgbench appending order-stream events, each client to its own
        orders: append alone, append plus the order-summary statements
        written by hand in the same transaction (one PL/pgSQL function, one
        round trip), and append with the inline projection (PL/pgSQL handler;
        projection.on statements).  Each variant gets its own database; each
        read model is then compared with the set-based oracle."""
        p = self.p
        name = "order_summary"
        types = PROJECTIONS[name]["types"]
        rows, counts = self.partitions(self.base, sorted(set(p["inline_clients"])), orders_only=True)
        variants = [("append only", "none"), ("append + same statements by hand", "hand"),
                    ("inline projection, PL/pgSQL handler", "fn")]
        if p["stmt_variant"]:
            variants.append(("inline projection, projection.on statements", "stmt"))
        variants.append(("inline projection, batch statements (a batch of one per append)", "batch"))
        if self.a.no_extension:
            variants = [v for v in variants if v[1] in ("none", "hand")]
        rates = {}
        for label, v in variants:
            db = "bench_inline_" + v
            conn = await self.fresh_db(db)
            try:
                await self.load_partitions(conn, rows, counts)
                await conn.execute(models.schema_sql("rm", [name], handlers=(v == "fn")))
                fn = "projection.append"
                if v == "hand":
                    await conn.execute(models.hand_append_sql(name, "rm"))
                    fn = "rm.append_by_hand"
                else:
                    await self.create_inline_summary(conn, name, types, v)
            finally:
                await conn.close()
            # payloads are only rewritten after a full pass over the partition
            script = """SELECT FN(
    CASE WHEN c.n < m.cnt THEN s.stream_id ELSE s.stream_id || '~' || (c.n / m.cnt) END,
    s.event_type,
    CASE WHEN c.n < m.cnt THEN s.data
         ELSE jsonb_set(s.data, '{order_id}', to_jsonb((s.data->>'order_id') || '~' || (c.n / m.cnt))) END)
""".replace("FN", fn) + self.PART_SRC
            for nc in p["inline_clients"]:
                tps = await self.pgbench(db, script, nc, secs=p["inline_secs"], tx=p["inline_tx"],
                                         defs={"nc": nc, "batch": 1})
                rates[(v, nc)] = tps
            if v != "none":
                conn = await self.connect(db)
                try:
                    upto = await self.max_pos(conn)
                    await self.oracle_into(conn, "orc", [name], upto)
                    await self.compare(conn, "rm", "orc", [name], "inline %s vs set-based oracle" % label)
                finally:
                    await conn.close()
            if not self.a.keep_dbs:
                await self.drop_db(db)
        for nc in p["inline_clients"]:
            w = "%d client%s" % (nc, "s" if nc > 1 else "")
            base = rates[("none", nc)]
            hand = rates[("hand", nc)]
            self.record("inline", "append only (no read model), " + w, base, "ev/s")
            self.record("inline", "append + same statements by hand, same tx, " + w, hand, "ev/s",
                        "%s append only" % ratio(hand, base))
            for label, v in variants:
                if v in ("fn", "stmt", "batch"):
                    r = rates[(v, nc)]
                    self.record("inline", "%s, %s" % (label, w), r, "ev/s",
                                "%s hand-written, %s append only" % (ratio(r, hand), ratio(r, base)))

    # ------------------------------------------------------------------
    # 3. async catch-up
    # ------------------------------------------------------------------
    async def run_pyprojector(self, schema, names, mode_args, latency_file=None):
        cmd = [sys.executable, os.path.join(HERE, "pyprojector.py"), "--host", self.a.host,
               "--port", str(self.a.port), "--db", "bench", "--schema", schema,
               "--projections", ",".join(names)] + mode_args
        if latency_file:
            cmd += ["--latency-file", latency_file]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            err = await proc.stderr.read()
            raise Failure("pyprojector did not start: %s %s" % (line.decode(), err.decode()))
        return proc

    async def finish_pyprojector(self, proc):
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise Failure("pyprojector failed:\n%s\n%s" % (out.decode(), err.decode()))
        return json.loads(out.decode().strip().splitlines()[-1])

    async def sec_catchup(self, conn):
        p = self.p
        upto = self.maxpos
        groups = [[n] for n in SEED] + [SEED]
        key = lambda names: "all" if len(names) > 1 else names[0]

        # (c) set-based: the oracle and the practical limit
        await conn.execute(models.schema_sql("oracle", SEED, handlers=False))
        for names in groups:
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(models.truncate_sql("oracle", names))
                for s in models.oracle_sql("oracle", names, upto):
                    await conn.execute(s)
            secs = time.perf_counter() - t0
            self.setbased_secs[key(names)] = secs
            self.catchup[("set-based", key(names))] = upto / secs

        # (b) PL/pgSQL loop, checkpoint per batch
        for names in groups:
            s = "plp_" + key(names)
            await conn.execute(models.schema_sql(s, names, checkpoints=True))
            await conn.execute(models.loop_sql(s, names))
            t0 = time.perf_counter()
            await conn.execute("CALL %s.catch_up(%d)" % (s, upto))
            secs = time.perf_counter() - t0
            self.catchup[("plpgsql", key(names))] = upto / secs
            await self.compare(conn, s, "oracle", names, "PL/pgSQL loop %s vs set-based oracle" % LABEL[key(names)])

        # the extension
        if not self.a.no_extension:
            for names in groups:
                k = key(names)
                s = "ext_" + k
                await conn.execute(models.schema_sql(s, names))
                pnames = ["ext_%s" % n if k != "all" else "ext_all_%s" % n for n in names]
                t0 = time.perf_counter()
                async with conn.transaction():
                    for pn, n in zip(pnames, names):
                        await conn.execute(
                            "SELECT projection.create($1, $2::regproc, $3, 'async', $4::regclass[], 'beginning')",
                            pn, "%s.h_%s" % (s, n), PROJECTIONS[n]["types"], models.table_list(s, n))
                try:
                    total, rate, delay = await self.timed_catchup(conn, pnames, upto, t0)
                except Failure as e:
                    self.fail("async catch-up of %s" % LABEL[k], str(e))
                    continue
                self.catchup[("ext", k)] = rate
                self.catchup_wall[("ext", k)] = (total, delay)
                await self.compare(conn, s, "oracle", names, "async %s vs set-based oracle" % LABEL[k])
                await self.compare(conn, s, "plp_" + k, names, "async %s vs PL/pgSQL loop" % LABEL[k])
                if k != "all":
                    await conn.execute("SELECT projection.drop($1)", pnames[0])
            if p["stmt_variant"]:
                # order summary again, with projection.on statement handlers
                n = "order_summary"
                s = "ext_stmt"
                await conn.execute(models.schema_sql(s, [n], handlers=False))
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(
                        "SELECT projection.create('ext_stmt_order_summary', NULL, $1, 'async', $2::regclass[], 'beginning')",
                        PROJECTIONS[n]["types"], models.table_list(s, n))
                    for etype, stmt in models.on_statements(n, s):
                        await conn.execute("SELECT projection.on('ext_stmt_order_summary', $1, $2)", etype, stmt)
                try:
                    total, rate, delay = await self.timed_catchup(conn, ["ext_stmt_order_summary"], upto, t0)
                    self.catchup[("ext-stmt", n)] = rate
                    self.catchup_wall[("ext-stmt", n)] = (total, delay)
                    await self.compare(conn, s, "oracle", [n], "async order_summary (projection.on) vs set-based oracle")
                except Failure as e:
                    self.fail("async catch-up of order_summary (projection.on)", str(e))
                await conn.execute("SELECT projection.drop('ext_stmt_order_summary')")

        # (a) the client-side projector, capped in time; compared with the
        # oracle at the position it reached
        for names in groups:
            k = key(names)
            s = "py_" + k
            await conn.execute(models.schema_sql(s, names, handlers=False, checkpoints=True))
            proc = await self.run_pyprojector(s, names, ["--catch-up", "--cap", str(p["py_cap"])])
            res = await self.finish_pyprojector(proc)
            reached = min(res["positions"].get(n, 0) for n in names)
            self.catchup[("python", k)] = reached / res["elapsed"]
            for n in names:
                pos = res["positions"].get(n, 0)
                await self.oracle_into(conn, "oracle_at", [n], pos)
                await self.compare(conn, s, "oracle_at", [n],
                                   "python projector %s (up to position %d) vs set-based oracle"
                                   % (LABEL[n] if k == "all" else LABEL[k], pos))

        for names in groups:
            k = key(names)
            ext = self.catchup.get(("ext", k))
            plp = self.catchup.get(("plpgsql", k))
            sb = self.catchup.get(("set-based", k))
            py = self.catchup.get(("python", k))
            for variant, label in (("ext", "async %s" % LABEL[k]),
                                   ("ext-stmt", "async %s (projection.on statements)" % LABEL[k])):
                r = self.catchup.get((variant, k))
                if not r:
                    continue
                total, delay = self.catchup_wall[(variant, k)]
                self.record("catchup", "%s (create to caught up: %.2f s, of which %.2f s before the worker started)"
                            % (label, total, delay), r, "ev/s",
                            "%s plpgsql loop, %s set-based, %s python projector"
                            % (ratio(r, plp), ratio(r, sb), ratio(r, py)))
            self.record("catchup", "PL/pgSQL loop %s" % LABEL[k], plp, "ev/s",
                        "%s set-based, %s python projector" % (ratio(plp, sb), ratio(plp, py)))
            self.record("catchup", "set-based INSERT..SELECT..GROUP BY %s" % LABEL[k], sb, "ev/s",
                        "%.2f s for %s events" % (self.setbased_secs[k], "{:,}".format(upto)))
            self.record("catchup", "python projector (seed style) %s" % LABEL[k], py, "ev/s",
                        "capped at %.0f s" % p["py_cap"] if p["py_cap"] >= 1 else "")
            self.plot["catchup"][LABEL[k]] = (ext, plp, sb, py)

    # ------------------------------------------------------------------
    # snapshot projections (snapbench.py)
    # ------------------------------------------------------------------
    async def sec_snapshot(self, conn):
        if not self.a.no_extension:
            await snapbench.sec_snapshot(self, conn, LABEL, ratio)

    # ------------------------------------------------------------------
    # 5. rebuild
    # ------------------------------------------------------------------
    async def sec_rebuild(self, conn):
        upto = await self.max_pos(conn)
        for n in SEED:
            pn = "ext_all_%s" % n
            t0 = time.perf_counter()
            await conn.fetchval("SELECT projection.rebuild($1)", pn)
            t_call = time.perf_counter() - t0
            total, rate, delay = await self.timed_catchup(conn, [pn], upto, t0)
            st = await conn.fetchval("SELECT state FROM projection.status WHERE name = $1", pn)
            if st != "running":
                self.fail("after rebuild of %s the state is %s, not running" % (pn, st))
            sb = self.setbased_secs.get(n)
            plp = self.catchup.get(("plpgsql", n))
            cmp = []
            if sb:
                cmp.append("%s set-based (%.2f s)" % (ratio(upto / total, upto / sb), sb))
            if plp:
                # the same per-event SQL, one event at a time, committed every 1,000
                cmp.append("%s PL/pgSQL loop" % ratio(upto / total, plp))
            self.record("rebuild", "projection.rebuild('%s'): %.2f s to rebuilt (the call took %.2f s)"
                        % (pn, total, t_call), upto / total, "ev/s", ", ".join(cmp))
            self.rebuild_rates[n] = upto / total
            await self.oracle_into(conn, "oracle_at", [n], upto)
            await self.compare(conn, "ext_all", "oracle_at", [n], "rebuilt %s vs set-based oracle" % n)

    # ------------------------------------------------------------------
    # batch statements (projection.on_batch)
    # ------------------------------------------------------------------
    async def sec_batch(self, conn):
        """The four read models as batch statements: async catch-up and
        rebuild of each and of all four, against the set-based limit, the
        per-event handlers and the PL/pgSQL loop of the same run; then the
        hot-key rebuild and inline appends of 100 events per statement."""
        upto = await self.max_pos(conn)
        await self.oracle_into(conn, "oracle_b", SEED, upto)
        groups = [[n] for n in SEED] + [SEED]
        key = lambda names: "all" if len(names) > 1 else names[0]
        for names in groups:
            k = key(names)
            s = "bat_" + k
            await conn.execute(models.schema_sql(s, names, handlers=False))
            pnames = ["bat_%s" % n if k != "all" else "bat_all_%s" % n for n in names]
            t0 = time.perf_counter()
            async with conn.transaction():
                for pn, n in zip(pnames, names):
                    await conn.execute(
                        "SELECT projection.create($1, NULL, $2, 'async', $3::regclass[], 'beginning')",
                        pn, PROJECTIONS[n]["types"], models.table_list(s, n))
                    for stmt in models.batch_statements(n, s):
                        await conn.execute("SELECT projection.on_batch($1, $2)", pn, stmt)
            try:
                total, rate, delay = await self.timed_catchup(conn, pnames, upto, t0)
            except Failure as e:
                self.fail("async catch-up of %s with batch statements" % LABEL[k], str(e))
                continue
            sb = self.catchup.get(("set-based", k))
            ext = self.catchup.get(("ext", k))
            plp = self.catchup.get(("plpgsql", k))
            self.record("batch", "async catch-up %s, batch statements (create to caught up: %.2f s)"
                        % (LABEL[k], total), rate, "ev/s",
                        "%s set-based, %s per-event handlers, %s PL/pgSQL loop"
                        % (ratio(rate, sb), ratio(rate, ext), ratio(rate, plp)))
            await self.compare(conn, s, "oracle_b", names, "async %s (batch statements) vs set-based oracle" % LABEL[k])
            if k == "all":
                continue
            # rebuild: the same statements over batches of projection.replay_batch_size
            pn = pnames[0]
            t0 = time.perf_counter()
            await conn.fetchval("SELECT projection.rebuild($1)", pn)
            t_call = time.perf_counter() - t0
            total, rate, delay = await self.timed_catchup(conn, [pn], upto, t0)
            sbs = self.setbased_secs.get(k)
            pe = self.rebuild_rates.get(k)
            self.record("batch", "projection.rebuild('%s'), batch statements: %.2f s (the call took %.2f s)"
                        % (pn, total, t_call), upto / total, "ev/s",
                        "%s set-based, %s per-event rebuild"
                        % (ratio(upto / total, upto / sbs if sbs else None), ratio(upto / total, pe)))
            await self.compare(conn, s, "oracle_b", [k], "rebuilt %s (batch statements) vs set-based oracle" % k)
            await conn.execute("SELECT projection.drop($1)", pn)
        for n in SEED:
            await conn.execute("SELECT projection.drop($1)", "bat_all_%s" % n)
        await self.batch_hot_key()
        await self.batch_inline()

    async def batch_hot_key(self):
        """One counter row updated by every event, rebuilt in one
        transaction: per-event handler (an upsert per event: the row's
        version chain grows with every update, so each costs more than the
        last) against a batch statement (one upsert per batch)."""
        p = self.p
        db = "bench_hotkey"
        conn = await self.fresh_db(db)
        try:
            await conn.execute("""
CREATE TABLE hot_pe (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE hot_b (id int PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION h_hot(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.hot_pe AS h VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = h.n + 1;
END $$;
""")
            have = 0
            sizes = sorted(set(p["hot_per_event"]) | set(p["hot_batch"]))
            for size in sizes:
                await conn.execute("""
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'tick-' || (i / 1000), i % 1000 + 1, 'Tick', '{}' FROM generate_series($1::bigint, $2::bigint - 1) i
""", have, size)
                have = size
                await conn.execute("VACUUM ANALYZE projection.events")
                for variant in ("per-event", "batch"):
                    if size not in p["hot_per_event" if variant == "per-event" else "hot_batch"]:
                        continue
                    table = "hot_pe" if variant == "per-event" else "hot_b"
                    await conn.execute("""
SELECT projection.create('hot', %s, '{Tick}', 'inline', ARRAY['%s']::regclass[], 'end')
""" % ("'h_hot'" if variant == "per-event" else "NULL", table))
                    if variant == "batch":
                        await conn.execute("""SELECT projection.on_batch('hot', $$
    INSERT INTO public.hot_b AS h SELECT 1, count(*) FROM batch
    ON CONFLICT (id) DO UPDATE SET n = h.n + excluded.n $$)""")
                    await conn.execute("CHECKPOINT")
                    t0 = time.perf_counter()
                    await conn.fetchval("SELECT projection.rebuild('hot')")
                    secs = time.perf_counter() - t0
                    got = await conn.fetchval("SELECT n FROM %s WHERE id = 1" % table)
                    if got != size:
                        self.fail("hot-key rebuild (%s, %d events): the counter is %s, not %d"
                                  % (variant, size, got, size))
                    self.checks.append(("hot-key rebuild %s %d events" % (variant, size), got == size, 1))
                    self.hot[(variant, size)] = secs
                    await conn.execute("SELECT projection.drop('hot')")
        finally:
            await conn.close()
        if not self.a.keep_dbs:
            await self.drop_db(db)
        base_pe = min(p["hot_per_event"])
        base_b = min(p["hot_batch"])
        for (variant, size), secs in sorted(self.hot.items(), key=lambda x: (x[0][0], x[0][1])):
            base = self.hot[(variant, base_pe if variant == "per-event" else base_b)]
            grow = "%.1fx the time of %s events for %.0fx the events" % (
                secs / base, "{:,}".format(base_pe if variant == "per-event" else base_b),
                size / (base_pe if variant == "per-event" else base_b))
            other = ""
            if variant == "batch" and ("per-event", size) in self.hot:
                other = ", %s the per-event rebuild" % ratio(self.hot[("per-event", size)], secs)
            self.record("batch", "hot-key rebuild (one row updated by each of %s events), %s: %.2f s"
                        % ("{:,}".format(size), variant, secs), size / secs, "ev/s", grow + other)

    async def batch_inline(self):
        """Inline order summary with appends of 100 events per statement
        (a multi-row INSERT INTO projection.events, one batch per
        statement): no projection, a per-event PL/pgSQL handler, batch
        statements."""
        p = self.p
        name = "order_summary"
        types = PROJECTIONS[name]["types"]
        rows, counts = self.partitions(self.base, [1], orders_only=True)
        rates = {}
        for v in ("none", "fn", "batch"):
            db = "bench_inline_b_" + v
            conn = await self.fresh_db(db)
            try:
                await self.load_partitions(conn, rows, counts)
                await conn.execute(models.schema_sql("rm", [name], handlers=(v == "fn")))
                await self.create_inline_summary(conn, name, types, v)
            finally:
                await conn.close()
            script = """INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT CASE WHEN c.n < m.cnt THEN s.stream_id ELSE s.stream_id || '~' || (c.n / m.cnt) END,
       s.stream_version, s.event_type,
       CASE WHEN c.n < m.cnt THEN s.data
            ELSE jsonb_set(s.data, '{order_id}', to_jsonb((s.data->>'order_id') || '~' || (c.n / m.cnt))) END
""" + self.PART_SRC
            tps = await self.pgbench(db, script, 1, secs=p["inline_batch_secs"], tx=p["inline_batch_tx"],
                                     defs={"nc": 1, "batch": 100})
            rates[v] = tps * 100
            if v != "none":
                conn = await self.connect(db)
                try:
                    upto = await self.max_pos(conn)
                    await self.oracle_into(conn, "orc", [name], upto)
                    await self.compare(conn, "rm", "orc", [name],
                                       "inline order_summary, 100 events/statement, %s vs set-based oracle"
                                       % ("per-event handler" if v == "fn" else "batch statements"))
                finally:
                    await conn.close()
            if not self.a.keep_dbs:
                await self.drop_db(db)
        base = rates["none"]
        self.record("batch", "inline: INSERT of 100 events/statement, no projection, 1 client", base, "ev/s")
        self.record("batch", "inline order summary, 100 events/statement, per-event PL/pgSQL handler",
                    rates["fn"], "ev/s", "%s no projection" % ratio(rates["fn"], base))
        self.record("batch", "inline order summary, 100 events/statement, batch statements",
                    rates["batch"], "ev/s", "%s per-event handler, %s no projection"
                    % (ratio(rates["batch"], rates["fn"]), ratio(rates["batch"], base)))

    # ------------------------------------------------------------------
    # 4 and 7. latency
    # ------------------------------------------------------------------
    async def append_at_rate(self, conn, evs, rate):
        """Appends evs one per transaction at a fixed rate (absolute
        schedule, so a slow call does not shift the later ones)."""
        first = last = None
        t0 = time.perf_counter()
        for i, (s, v, t, d) in enumerate(evs):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pos = await conn.fetchval("SELECT projection.append($1, $2, $3::jsonb)", s, t, d)
            first = pos if first is None else first
            last = pos
        achieved = len(evs) / (time.perf_counter() - t0)
        return first, last, achieved

    async def latency_stats(self, conn, variant, first, last, check=True):
        """Latency = (commit time of the read-model write) - (commit time of
        the append), both from track_commit_timestamp, i.e. the server's
        clock at each commit record: no polling, no client clock.  The
        extension's handlers insert the event's position into bench.probe in
        the same transaction as their read-model writes, so the probe row's
        xmin commits exactly when the write becomes visible.  The client-side
        projector's writes are autocommitted statements; it notes the wall
        clock when the handler's commit has returned (same host clock), which
        is stored in visible_at."""
        rows = await conn.fetch("""
WITH l AS (
    SELECT p.proj,
           extract(epoch FROM coalesce(p.visible_at, pg_xact_commit_timestamp(p.xmin))
                              - pg_xact_commit_timestamp(e.xmin)) * 1000 AS ms
      FROM bench.probe p JOIN projection.events e ON e.global_position = p.global_position
     WHERE p.variant = $1 AND p.global_position BETWEEN $2 AND $3)
SELECT coalesce(proj, 'all') AS proj, count(*) AS n, count(ms) AS n_ts,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ms) AS p90,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
       max(ms) AS max
  FROM l GROUP BY ROLLUP (proj) ORDER BY proj NULLS FIRST""", variant, first, last)
        stats = {r["proj"]: dict(r) for r in rows}
        for r in rows:
            if r["n"] != r["n_ts"]:
                raise Failure("no commit timestamps: is track_commit_timestamp on?")
        # every handled event must have been seen exactly once
        for n in (SEED if check else []):
            want = await conn.fetchval(
                "SELECT count(*) FROM projection.events WHERE global_position BETWEEN $1 AND $2 "
                "AND event_type = ANY($3)", first, last, PROJECTIONS[n]["types"])
            got = stats.get(n, {}).get("n", 0)
            if want != got:
                self.fail("latency run %s: projection %s applied %d events of positions %d..%d, expected %d"
                          % (variant, n, got, first, last, want))
        return stats

    async def set_probe(self, conn, on):
        for n in SEED:
            await conn.execute(models.handler_sql(n, "ext_all", probe="ext" if on else None))

    async def sec_latency(self, conn):
        for i, rate in enumerate(self.p["lat_rates"]):
            await self.latency_at(conn, rate, main=(i == 0))

    @staticmethod
    def lat_compare(st, pst):
        if not pst:
            return ""
        a, b = st["p99"], pst["p99"]
        if a <= b:
            return "%s lower than the python projector's p99 (%s ms)" % (ratio(b, a), fmt(b))
        return "%s HIGHER than the python projector's p99 (%s ms)" % (ratio(a, b), fmt(b))

    async def latency_at(self, conn, rate, main):
        p = self.p
        k = int(rate * p["lat_secs"])
        ext_stats = None
        pnames = ["ext_all_%s" % n for n in SEED]
        warm = max(1, int(rate * p["warmup_secs"]))
        if not self.a.no_extension:
            await self.set_probe(conn, True)
            await conn.execute("CHECKPOINT")
            aconn = await self.connect()
            try:
                # a warm-up (caches, plans, autovacuum of the previous run's
                # garbage) that the statistics leave out
                await self.append_at_rate(aconn, self.take_tail(warm), rate)
                first, last, achieved = await self.append_at_rate(aconn, self.take_tail(k), rate)
            finally:
                await aconn.close()
            await self.wait_projections(conn, pnames, last)
            ext_stats = await self.latency_stats(conn, "ext", first, last)
            if main:
                self.ext_lat = ext_stats["all"]

        # the client-side projector, on copies of the read models brought to
        # the current position by the set-based oracle; the extension's
        # projections are paused meanwhile, so that each runs alone
        if not self.a.no_extension:
            for pn in pnames:
                await conn.execute("SELECT projection.pause($1)", pn)
        start = await self.max_pos(conn)
        await self.oracle_into(conn, "py_lat", SEED, start)
        await conn.execute("CREATE TABLE py_lat.checkpoints (name text PRIMARY KEY, position bigint NOT NULL)")
        await conn.executemany("INSERT INTO py_lat.checkpoints VALUES ($1, $2)", [(n, start) for n in SEED])
        await conn.execute("ANALYZE %s" % ", ".join(t for n in SEED for t in models.table_list("py_lat", n)))
        await conn.execute("CHECKPOINT")
        latfile = os.path.join(self.work, "python_latency_%d.csv" % rate)
        proc = await self.run_pyprojector("py_lat", SEED, ["--live", "--duration",
                                                           str(p["warmup_secs"] + p["lat_secs"] + 0.5)],
                                          latency_file=latfile)
        aconn = await self.connect()
        try:
            await self.append_at_rate(aconn, self.take_tail(warm), rate)
            first, last, py_achieved = await self.append_at_rate(aconn, self.take_tail(k), rate)
        finally:
            await aconn.close()
        res = await self.finish_pyprojector(proc)
        recs = []
        with open(latfile) as f:
            for line in f:
                n, pos, when = line.strip().split(",")
                recs.append(("python", n, int(pos),
                             datetime.datetime.fromtimestamp(float(when), datetime.timezone.utc)))
        await conn.copy_records_to_table("probe", schema_name="bench", records=recs)
        py_stats = await self.latency_stats(conn, "python", first, last)
        for n in SEED:
            await self.oracle_into(conn, "oracle_at", [n], res["positions"][n])
            await self.compare(conn, "py_lat", "oracle_at", [n],
                               "python projector (live, %d/s) %s vs set-based oracle" % (rate, n))
        if not self.a.no_extension:
            for pn in pnames:
                await conn.execute("SELECT projection.resume($1)", pn)
            await self.wait_projections(conn, pnames, last)

        def line(st):
            return "p50 %s / p90 %s / p99 %s ms, n=%d" % (fmt(st["p50"]), fmt(st["p90"]), fmt(st["p99"]), st["n"])
        if ext_stats:
            a = ext_stats["all"]
            naptime = None
            try:
                naptime = float(await conn.fetchval(
                    "SELECT setting FROM pg_settings WHERE name = 'projection.naptime' AND unit = 'ms'"))
            except Exception:
                pass
            for n in ["all"] + (SEED if main else []):
                st = ext_stats[n]
                pst = py_stats.get(n)
                note = self.lat_compare(st, pst)
                if n == "all" and naptime and st["p50"] > 0.25 * naptime:
                    note += ("; WARNING: p50 is close to projection.naptime/2 (naptime %.0f ms): "
                             "commits do not seem to wake the worker" % naptime)
                self.record("latency", "extension at %d/s, %s, p99 (%s)" % (rate, LABEL.get(n, n), line(st)),
                            st["p99"], "ms", note)
            self.plot["latency"].append(("extension %d/s" % rate, a["p50"], a["p90"], a["p99"]))
        st = py_stats["all"]
        note = "appended at %s ev/s" % fmt(py_achieved)
        cap = self.catchup.get(("python", "all"))
        if cap and cap < rate * 1.1:
            note += "; saturated: it processes at most ~%s ev/s for all four, so its lag grows with the run" % fmt(cap)
        self.record("latency", "python projector (100 ms polling) at %d/s, all four, p99 (%s)" % (rate, line(st)),
                    st["p99"], "ms", note)
        self.plot["latency"].append(("python %d/s" % rate, st["p50"], st["p90"], st["p99"]))

    async def sec_bystander(self, conn):
        p = self.p
        rate = p["rate"]
        pnames = ["ext_all_%s" % n for n in SEED]
        await self.set_probe(conn, True)
        by = await self.connect()
        aconn = await self.connect()
        try:
            # an unrelated transaction with an xid and a snapshot, idle for the
            # whole run (it holds back the xmin horizon of the cluster)
            await by.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await by.fetchval("SELECT txid_current()")
            await by.fetchval("SELECT count(*) FROM bench.stage")
            t_open = time.perf_counter()
            first, last, achieved = await self.append_at_rate(
                aconn, self.take_tail(int(rate * p["bystander_secs"])), rate)
            try:
                await self.wait_projections(conn, pnames, last, stall=30)
            except Failure as e:
                self.fail("async projections held back by an idle transaction", str(e))
                raise
            held = time.perf_counter() - t_open
            await by.execute("ROLLBACK")
        finally:
            await by.close()
            await aconn.close()
        st = (await self.latency_stats(conn, "ext", first, last))["all"]
        # the trend: p50 over the first and the last fifth of the run
        fifth = (last - first) // 5
        head = (await self.latency_stats(conn, "ext", first, first + fifth, check=False))["all"]
        tail = (await self.latency_stats(conn, "ext", last - fifth, last, check=False))["all"]
        base = getattr(self, "ext_lat", None)
        self.record("bystander", "extension, all four, p99 with a transaction open %.0f s "
                    "(p50 %s / p90 %s / p99 %s ms, n=%d; p50 %s ms in the first fifth, %s ms in the last)"
                    % (held, fmt(st["p50"]), fmt(st["p90"]), fmt(st["p99"]), st["n"],
                       fmt(head["p50"]), fmt(tail["p50"])),
                    st["p99"], "ms",
                    ("%s the p99 without it (%s ms)" % (ratio(st["p99"], base["p99"]), fmt(base["p99"])))
                    if base else "")
        self.plot["latency"].append(("extension %d/s + idle tx %.0fs" % (rate, held), st["p50"], st["p90"], st["p99"]))

    async def final_check(self, conn):
        await self.set_probe(conn, False)
        upto = await self.max_pos(conn)
        pnames = ["ext_all_%s" % n for n in SEED]
        await self.wait_projections(conn, pnames, upto)
        await self.oracle_into(conn, "oracle_at", SEED, upto)
        await self.compare(conn, "ext_all", "oracle_at", SEED,
                           "async all four after the live runs (up to position %d) vs set-based oracle" % upto)

    # ------------------------------------------------------------------
    # 6. growth
    # ------------------------------------------------------------------
    async def sec_growth(self, conn):
        p = self.p
        for pn in ["ext_all_%s" % n for n in SEED]:
            if await conn.fetchval("SELECT count(*) FROM projection.status WHERE name = $1", pn):
                await conn.execute("SELECT projection.drop($1)", pn)
        upto = await self.max_pos(conn)
        await self.oracle_into(conn, "truth", SEED, upto)
        counts = {}
        for n in SEED:
            counts[n] = await conn.fetchval("SELECT count(*) FROM projection.events WHERE event_type = ANY($1)",
                                            PROJECTIONS[n]["types"])
        times = {}
        for k in p["growth"]:
            names = [SEED[i % len(SEED)] for i in range(k)]
            specs = []
            for i, n in enumerate(names):
                s = "g%d_%d" % (k, i)
                await conn.execute(models.schema_sql(s, [n]))
                specs.append(("grow_%d_%d" % (k, i), s, n))
            t0 = time.perf_counter()
            async with conn.transaction():
                for pn, s, n in specs:
                    await conn.execute(
                        "SELECT projection.create($1, $2::regproc, $3, 'async', $4::regclass[], 'beginning')",
                        pn, "%s.h_%s" % (s, n), PROJECTIONS[n]["types"], models.table_list(s, n))
            try:
                total, rate, delay = await self.timed_catchup(conn, [x[0] for x in specs], upto, t0)
            except Failure as e:
                self.fail("growth: %d projections" % k, str(e))
                continue
            secs = upto / rate      # the worker's time, without the start delay
            handled = sum(counts[n] for n in names)
            times[k] = (secs, handled)
            bad = 0
            for pn, s, n in specs:
                if not await self.compare(conn, s, "truth", [n], "growth %s (%d projections) vs set-based oracle" % (pn, k)):
                    bad += 1
            for pn, s, n in specs:
                await conn.execute("SELECT projection.drop($1)", pn)
                await conn.execute("DROP SCHEMA %s CASCADE" % s)
            first = times.get(p["growth"][0])
            self.record("growth", "%d async projection%s over %s events: %.2f s (create to caught up %.2f s)"
                        % (k, "s" if k > 1 else "", "{:,}".format(upto), secs, total),
                        handled / secs, "handler calls/s",
                        ("%s stream events/s; %.1fx the time of %d projection%s, for %.1fx the handler calls"
                         % (fmt(upto / secs), secs / first[0], p["growth"][0], "s" if p["growth"][0] > 1 else "",
                            handled / first[1])) if first and k != p["growth"][0] else
                        "%s stream events/s" % fmt(upto / secs))
        await self.sec_growth_big(times.get(1))

    async def sec_growth_big(self, small):
        p = self.p
        nbig = p["big_events"]
        db = "bench_big"
        conn = await self.fresh_db(db)
        try:
            await self.create_stage(conn)
            t0 = time.perf_counter()
            chunk, buf, seq = 100000, [], 1
            for ev in gen.events(self.a.seed, nbig):
                buf.append(ev)
                if len(buf) == chunk:
                    await self.load_stage(conn, buf, start=seq)
                    seq += len(buf)
                    buf = []
            if buf:
                await self.load_stage(conn, buf, start=seq)
            self.say("growth    generated and staged %s events in %.1f s" % ("{:,}".format(nbig), time.perf_counter() - t0))
            secs = await self.bulk_insert_events(conn, 1, nbig, chunk=100000)
            self.record("growth", "bulk load of %s events (INSERT INTO projection.events ... SELECT)" % "{:,}".format(nbig),
                        nbig / secs, "ev/s", "%.1f s" % secs)
            await conn.execute("VACUUM (ANALYZE) projection.events")
            await conn.execute("CHECKPOINT")
            upto = await self.max_pos(conn)
            n = "order_summary"
            sb = await self.oracle_into(conn, "oracle", [n], upto)
            await conn.execute(models.schema_sql("big", [n]))
            t0 = time.perf_counter()
            await conn.execute("SELECT projection.create('big_order_summary', 'big.h_order_summary', $1, 'async', "
                               "ARRAY['big.order_summaries']::regclass[], 'beginning')", PROJECTIONS[n]["types"])
            total, rate, delay = await self.timed_catchup(conn, ["big_order_summary"], upto, t0)
            secs = upto / rate
            await self.compare(conn, "big", "oracle", [n], "growth: order_summary over %d events vs set-based oracle" % upto)
            cmp = "%s set-based (%.1f s)" % (ratio(upto / secs, upto / sb), sb)
            if small:
                # the 1-projection run over the main stream is order_summary too
                cmp += "; per handled event %.2fx the cost at %s events" % (
                    (secs / (await conn.fetchval("SELECT count(*) FROM projection.events WHERE event_type = ANY($1)",
                                                 PROJECTIONS[n]["types"]))) / (small[0] / small[1]), "{:,}".format(self.n))
            self.record("growth", "1 async projection (order_summary) over %s events: %.1f s (create to caught up %.1f s)"
                        % ("{:,}".format(upto), secs, total), upto / secs, "ev/s", cmp)
        finally:
            await conn.close()
            if not self.a.keep_dbs:
                await self.drop_db(db)

    # ------------------------------------------------------------------
    # output
    # ------------------------------------------------------------------
    def machine(self):
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                for l in f:
                    if l.startswith("model name"):
                        cpu = l.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return "%s, %d cores, %s %s" % (cpu or platform.processor(), os.cpu_count() or 0,
                                         platform.system(), platform.release())

    def write_outputs(self, server_version):
        out = self.a.out
        with open(os.path.join(out, "results.csv"), "w") as f:
            f.write("section,measurement,value,unit,compared_with\n")
            for r in self.results:
                f.write('%s,"%s",%s,%s,"%s"\n' % (r["section"], r["name"].replace('"', '""'),
                                                  "" if r["value"] is None else "%.6g" % r["value"],
                                                  r["unit"], r["compare"].replace('"', '""')))
        lines = []
        lines.append("# projection benchmark")
        lines.append("")
        lines.append("%s; PostgreSQL %s; %s events (seed %d)%s; %s; %.0f s."
                     % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        server_version, "{:,}".format(self.n), self.a.seed,
                        " --quick" if self.a.quick else "", self.machine(),
                        time.time() - self.t_start))
        lines.append("")
        lines.append("| section | measurement | result | compared with |")
        lines.append("|---|---|---:|---|")
        for r in self.results:
            lines.append("| %s | %s | %s %s | %s |" % (r["section"], r["name"].replace("|", "\\|"),
                                                      fmt(r["value"]), r["unit"],
                                                      r["compare"].replace("|", "\\|")))
        lines.append("")
        ok = sum(1 for c in self.checks if c[1])
        lines.append("Correctness: %d of %d read-model comparisons identical." % (ok, len(self.checks)))
        if self.failures:
            lines.append("")
            lines.append("**FAILED** (%d):" % len(self.failures))
            for what, detail in self.failures:
                lines.append("")
                lines.append("- %s" % what)
                if detail:
                    lines.append("")
                    lines.append("```")
                    lines.append(detail)
                    lines.append("```")
        text = "\n".join(lines) + "\n"
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(text)
        return text

    def write_plot(self):
        out = self.a.out
        w = self.work

        def num(v):
            return "?" if v is None else "%.6g" % v
        panels = []
        if self.plot["append"]:
            with open(os.path.join(w, "append.dat"), "w") as f:
                for label, a, b, c in self.plot["append"]:
                    f.write('"%s" %s %s %s\n' % (label, num(a), num(b), num(c)))
            panels.append("""
set title "Append throughput (events/s, pgbench)"
set ylabel "events/s"
plot '%s' using 2:xtic(1) title "plain INSERT", '' using 3 title "projection.append", '' using 4 title "INSERT INTO projection.events"
""" % os.path.join(w, "append.dat"))
        if self.plot["catchup"]:
            with open(os.path.join(w, "catchup.dat"), "w") as f:
                for label, (a, b, c, d) in self.plot["catchup"].items():
                    f.write('"%s" %s %s %s %s\n' % (label, num(a), num(b), num(c), num(d)))
            panels.append("""
set title "Async catch-up (events/s over the stream)"
set ylabel "events/s"
plot '%s' using 2:xtic(1) title "extension (async)", '' using 3 title "PL/pgSQL loop", '' using 4 title "set-based", '' using 5 title "python projector"
""" % os.path.join(w, "catchup.dat"))
        if self.plot["latency"]:
            with open(os.path.join(w, "latency.dat"), "w") as f:
                for label, a, b, c in self.plot["latency"]:
                    f.write('"%s" %s %s %s\n' % (label, num(a), num(b), num(c)))
            panels.append("""
set title "Commit-to-visible latency at a fixed append rate (ms; all four projections)"
set ylabel "ms"
plot '%s' using 2:xtic(1) title "p50", '' using 3 title "p90", '' using 4 title "p99"
""" % os.path.join(w, "latency.dat"))
        if not panels:
            return
        gp = os.path.join(w, "bench.gp")
        with open(gp, "w") as f:
            f.write("""set terminal pngcairo noenhanced size 1400,%d font "sans,10"
set output '%s'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set key top right
set xtics rotate by -25
set multiplot layout %d,1 title "projection benchmark: %s events, seed %d%s"
""" % (420 * len(panels), os.path.join(out, "bench.png"), len(panels), "{:,}".format(self.n),
       self.a.seed, " (quick)" if self.a.quick else ""))
            for p in panels:
                f.write(p)
            f.write("unset multiplot\n")
        r = os.system("gnuplot %s" % gp)
        if r != 0:
            self.fail("gnuplot failed (%s)" % gp)

    # ------------------------------------------------------------------
    async def run(self):
        self.say("projection benchmark: %s events, seed %d%s" % ("{:,}".format(self.n), self.a.seed,
                                                              ", quick" if self.a.quick else ""))
        c = await self.connect("postgres")
        server_version = await c.fetchval("SHOW server_version")
        tcs = await c.fetchval("SHOW track_commit_timestamp")
        await c.close()
        if tcs != "on":
            self.fail("track_commit_timestamp is off: the latency benchmarks need it on")
        conn = await self.setup()
        try:
            steps = [("append", self.sec_append, False), ("inline", self.sec_inline, False),
                     ("catchup", self.sec_catchup, True), ("snapshot", self.sec_snapshot, True)]
            for name, fn, withconn in steps:
                if name not in self.only:
                    continue
                self.say("=== %s" % name)
                try:
                    await (fn(conn) if withconn else fn())
                except Exception as e:
                    self.fail("section %s: %s" % (name, e), traceback.format_exc())
            have_all = (not self.a.no_extension and "catchup" in self.only and
                        await conn.fetchval("SELECT count(*) FROM projection.status WHERE name LIKE 'ext_all_%%'") == 4)
            later = [("rebuild", self.sec_rebuild, True), ("batch", self.sec_batch, True),
                     ("latency", self.sec_latency, False),
                     ("bystander", self.sec_bystander, True), ("final", self.final_check, True)]
            for name, fn, need_ext in later:
                if name != "final" and name not in self.only:
                    continue
                if need_ext and not have_all:
                    if name != "final":
                        self.say("=== %s skipped (%s)" % (name, "no extension" if self.a.no_extension
                                                            else "the async all-four projections are missing"))
                    continue
                self.say("=== %s" % name)
                try:
                    await fn(conn)
                except Exception as e:
                    self.fail("section %s: %s" % (name, e), traceback.format_exc())
            if "feeds" in self.only and not self.a.no_extension:
                self.say("=== feeds")
                try:
                    await feeds.sec_feeds(self)
                except Exception as e:
                    self.fail("section feeds: %s" % e, traceback.format_exc())
            if "pool" in self.only and not self.a.no_extension:
                self.say("=== pool")
                try:
                    await self.sec_pool()
                except Exception as e:
                    self.fail("section pool: %s" % e, traceback.format_exc())
            if "growth" in self.only and not self.a.no_extension:
                self.say("=== growth")
                try:
                    await self.sec_growth(conn)
                except Exception as e:
                    self.fail("section growth: %s" % e, traceback.format_exc())
        finally:
            await conn.close()
        self.write_plot()
        text = self.write_outputs(server_version)
        print()
        print(text)
        print("results: %s/results.md, results.csv, bench.png" % self.a.out)
        if self.failures:
            print("FAILED: %d problem(s), see above" % len(self.failures), file=sys.stderr)
            return 1
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="server socket directory")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer variants (< 1 minute)")
    ap.add_argument("--events", type=int, help="events in the stream (default 100000, quick 5000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--big-events", type=int, help="events of the growth run (default 1000000)")
    ap.add_argument("--rate", type=int, help="append rate of the latency runs (default 500/s)")
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--keep-dbs", action="store_true", help="keep the per-section databases")
    ap.add_argument("--no-extension", action="store_true",
                    help="develop the harness without the extension: a stand-in events table, "
                         "alternatives only")
    a = ap.parse_args()
    return asyncio.run(Bench(a).run())


if __name__ == "__main__":
    sys.exit(main())
