"""The feeds section of the benchmarks (bench.py --only feeds).

  latency   commit-to-poll p50/p90/p99 of a consumer long-polling a feed
            (poll with wait, ack) while a client appends at a fixed rate (500/s
            by default), against the seed's style: a client polling
            "WHERE global_position > checkpoint" every 100 ms.  The commit time
            is pg_xact_commit_timestamp of the event's row, the receive time the
            consumer's clock when the rows arrived (the same machine's clock).
            The commit timestamp is taken before the appender's WAL flush, so
            that figure includes the flush, which no reader can beat; the
            "append returned" figures start when the appender's call returned
            (after its flush), and show what the feed itself adds.  The feed
            runs twice: acks waiting for the WAL flush (the default), and a
            consumer session with synchronous_commit off (an ack lost in a
            crash only means redelivery), and first with the loop the README
            recommends (1.5): each poll carries the previous poll's ack
            (poll(..., ack => token)), committed without a WAL flush.
  drain     one consumer draining a backlog through poll/ack in batches of
            500 (events/s), 4 consumers on a feed of 4 partitions, each polling
            its own partition, one consumer whose session has synchronous_commit
            off, one whose polls carry the previous poll's ack (the loop the
            README recommends, 1.5), and the seed-style client reading batches
            of 500 with its checkpoint in a table, as fast as it can.  Then
            scaling with the partition index: 1, 2 and 4 consumers on feeds of
            as many partitions, with the polling backends' CPU per delivered
            event (time on CPU from /proc/<pid>/schedstat) and the wall rate, as ratios to one
            consumer; and a poll of 1 of 64 partitions without and with the
            index (wall and the backend's time on CPU from schedstat).  The
            scaling rows also give the event rows the polling backends read
            per event delivered (pg_stat_user_tables.idx_tup_fetch): 1.0 when
            each poll reads only its partition's events.
  sink      1 consumer and 4 consumers on 4 partitions (partition index, ack
            in poll) whose sink costs a fixed delay per batch (sink_ms, 20 ms
            by default) between the poll and the ack: a model of a remote
            search engine's or broker's bulk write, a network round trip,
            not a real sink on this machine (see drain()).  The ratios of
            the wall rates and of the CPU per event, 4 vs 1, in the same run:
            4 consumers must not wait for each other.

Every consumer checks what it got: each event once, in position order within
a stream, nothing missing at the end; any difference fails the run.
"""

import asyncio
import datetime
import os
import time

DB = "bench_feeds"


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


async def _append_at_rate(conn, rate, secs, stream_count=50, returned=None):
    """Append one event per call at `rate` per second for `secs`; returns the count.
    returned: position -> the time the append returned."""
    stmt = await conn.prepare("SELECT projection.append($1, 'Tick', '{}')")
    n = 0
    t0 = time.time()
    while True:
        now = time.time()
        if now - t0 >= secs:
            break
        due = t0 + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        pos = await stmt.fetchval("tick-%d" % (n % stream_count))
        if returned is not None:
            returned[pos] = time.time()
        n += 1
    return n


async def _check(b, conn, what, got, first, last, feed_types=None):
    """got: list of (position, stream, version) in delivery order."""
    want = await conn.fetch("SELECT global_position FROM projection.events "
                            "WHERE global_position > $1 AND global_position <= $2 ORDER BY 1", first, last)
    positions = sorted(p for p, _, _ in got)
    if positions != [r[0] for r in want]:
        b.fail("feeds %s: %d events delivered, %d committed (or some twice)"
               % (what, len(positions), len(want)))
        return False
    last_v = {}
    for _, s, v in got:
        if s in last_v and v <= last_v[s]:
            b.fail("feeds %s: stream %s out of order (%d after %d)" % (what, s, v, last_v[s]))
            return False
        last_v[s] = v
    b.checks.append(("feeds " + what, True))
    return True


async def _consumer(b, feed, partition, stop, got, lat, wait=1.0, batch=500, sync_ack=True,
                    ack_in_poll=False, cpu=None, sink_secs=0.0, pids=None, batches=None):
    """ack_in_poll: the recommended loop (1.5): each poll carries the previous
    poll's ack (poll(..., ack => token)); otherwise poll, then ack.
    cpu: a list to which (the backend's time on CPU in seconds, the events it
    was spent on) is appended at the end: from /proc/<pid>/schedstat, in
    nanoseconds (utime+stime count 10 ms ticks, too coarse for a backend that
    works a few tenths of a second), counted from the end of the first poll
    that returned events, so a new backend's one-time work (catalog caches,
    plans) is not charged to the events of a short run.
    sink_secs: the time each batch's write to the sink takes, between the poll
    and the ack (a fixed delay modelling a remote sink's round trip).
    pids: a list to which the backend's pid is appended.
    batches: a list to which the number of polls that returned events is appended."""
    conn = await b.connect(DB)
    if not sync_ack:
        await conn.execute("SET synchronous_commit = off")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    if pids is not None:
        pids.append(pid)
    cpu0 = None
    counted = 0
    nbatches = 0
    poll = await conn.prepare(
        "SELECT token, global_position, stream_id, stream_version "
        "FROM projection.poll($1, $2, wait => $3::interval, partition => $4, ack => $5)")
    ack = await conn.prepare("SELECT projection.ack($1, $2)")
    token = None
    try:
        while True:
            rows = await poll.fetch(feed, batch, datetime.timedelta(seconds=wait), partition, token)
            t = time.time()
            token = None
            if not rows:
                if stop.is_set():
                    break
                continue
            for r in rows:
                got.append((r[1], r[2], r[3]))
                if lat is not None:
                    lat[r[1]] = t
            nbatches += 1
            if cpu0 is None:
                cpu0 = _cpu_ns(pid)
            else:
                counted += len(rows)
            if sink_secs > 0:
                await asyncio.sleep(sink_secs)      # the batch's write to the sink
            if ack_in_poll:
                token = rows[0][0]
            else:
                await ack.fetchval(feed, rows[0][0])
        if token is not None:
            await ack.fetchval(feed, token)
        if batches is not None:
            batches.append(nbatches)
        if cpu is not None and cpu0 is not None and counted > 0:
            cpu.append(((_cpu_ns(pid) - cpu0) / 1e9, counted))
    finally:
        await conn.close()


async def _events_fetched(conn, pids=()):
    """projection.events' rows fetched through its indexes so far (all backends),
    after the given backends have exited (a backend's counts reach the statistics
    when it exits); None if they do not exit within 10 s."""
    t_end = time.time() + 10
    while pids and await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                                       list(pids)):
        if time.time() > t_end:
            return None
        await asyncio.sleep(0.02)
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    # this session's own reads (the checks of earlier runs) reach the statistics
    # at the end of this statement, before the counts are read
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return await conn.fetchval("SELECT COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables "
                               "WHERE schemaname = 'projection' AND relname = 'events'")


def _cpu_ns(pid):
    """a backend's time on CPU in nanoseconds (/proc/<pid>/schedstat); None if unreadable."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def _seed_style(b, stop, got, lat, interval=0.1, batch=500):
    """The seed's client: its checkpoint in a table, a poll every 100 ms."""
    conn = await b.connect(DB)
    await conn.execute("CREATE TABLE IF NOT EXISTS seed_checkpoint (name text PRIMARY KEY, pos bigint)")
    await conn.execute("INSERT INTO seed_checkpoint VALUES ('c', $1) ON CONFLICT (name) DO UPDATE SET pos = $1",
                       await conn.fetchval("SELECT COALESCE(max(global_position), 0) FROM projection.events"))
    read = await conn.prepare(
        "SELECT global_position, stream_id, stream_version FROM projection.events "
        "WHERE global_position > $1 ORDER BY global_position LIMIT $2")
    save = await conn.prepare("UPDATE seed_checkpoint SET pos = $1 WHERE name = 'c'")
    pos = await conn.fetchval("SELECT pos FROM seed_checkpoint WHERE name = 'c'")
    try:
        while True:
            rows = await read.fetch(pos, batch)
            t = time.time()
            if rows:
                for r in rows:
                    got.append((r[0], r[1], r[2]))
                    if lat is not None:
                        lat[r[0]] = t
                pos = rows[-1][0]
                await save.fetch(pos)
                if len(rows) == batch:
                    continue
            elif stop.is_set():
                break
            await asyncio.sleep(interval)
    finally:
        await conn.close()


async def _latencies(conn, lat, first, last):
    rows = await conn.fetch(
        "SELECT global_position, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
        "FROM projection.events WHERE global_position > $1 AND global_position <= $2", first, last)
    return [(lat[p] - c) * 1000.0 for p, c in rows if p in lat and c is not None]


async def latency(b, conn, rate, secs):
    for variant in ("feed-ack-in-poll", "feed", "feed-async-ack", "seed"):
        first = await conn.fetchval("SELECT COALESCE(max(global_position), 0) FROM projection.events")
        if variant != "seed":
            await conn.execute("SELECT projection.drop_feed(name) FROM projection.feeds WHERE name = 'lat'")
            await conn.execute("SELECT projection.create_feed('lat', start_from => 'end')")
        stop = asyncio.Event()
        got, lat, returned = [], {}, {}
        task = asyncio.ensure_future(
            _seed_style(b, stop, got, lat) if variant == "seed"
            else _consumer(b, "lat", None, stop, got, lat, sync_ack=(variant != "feed-async-ack"),
                           ack_in_poll=(variant == "feed-ack-in-poll")))
        await asyncio.sleep(0.3)
        app = await b.connect(DB)
        try:
            n = await _append_at_rate(app, rate, secs, returned=returned)
        finally:
            await app.close()
        last = await conn.fetchval("SELECT max(global_position) FROM projection.events")
        # let the consumer get everything, then stop it
        t_end = time.time() + 30
        while len(got) < last - first and time.time() < t_end:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await _check(b, conn, "latency (%s)" % variant, got, first, last)
        ms = await _latencies(conn, lat, first, last)
        after_return = [(lat[p] - t) * 1000.0 for p, t in returned.items() if p in lat]
        label = {"feed-ack-in-poll": "long-polling feed consumer, ack carried by the next poll",
                 "feed": "long-polling feed consumer, poll then ack",
                 "feed-async-ack": "long-polling feed consumer, synchronous_commit off",
                 "seed": "seed-style client polling every 100 ms"}[variant]
        for p in (50, 90, 99):
            b.record("feeds", "commit to poll at %d appends/s, %s, p%d" % (rate, label, p),
                     pct(ms, p), "ms", "%d events" % n)
        for p in (50, 99):
            b.record("feeds", "append returned to poll at %d appends/s, %s, p%d" % (rate, label, p),
                     pct(after_return, p), "ms", "%d events" % n)


async def drain(b, conn, events):
    await conn.execute(
        "INSERT INTO projection.events (stream_id, event_type, data) "
        "SELECT 'd-' || (i % 1000), 'Drain', jsonb_build_object('i', i, 'pad', repeat('x', 100)) "
        "FROM generate_series(1, $1) i", events)
    last = await conn.fetchval("SELECT max(global_position) FROM projection.events")
    first = last - events

    async def run(label, feed, partitions, consumers, sync_ack=True, ack_in_poll=False,
                  sink_secs=0.0, read=False, first=first, last=last):
        """Returns (events/s, backend CPU µs per delivered event).  read: also record
        the events' rows the polling backends fetched per event delivered."""
        if feed is not None:
            await conn.execute("SET client_min_messages = warning")
            await conn.execute("SELECT projection.create_feed($1, start_from => $2, partitions => $3)",
                               feed, str(first), partitions)
            await conn.execute("RESET client_min_messages")
        stop = asyncio.Event()
        stop.set()          # stop at the first empty poll: the backlog is all there
        got = []
        cpu = []
        pids = []
        batches = []
        fetched0 = await _events_fetched(conn) if read else None
        t0 = time.time()
        if feed is None:
            await _seed_style(b, stop, got, None)
        else:
            await asyncio.gather(*[_consumer(b, feed, p, stop, got, None, wait=0.0, sync_ack=sync_ack,
                                             ack_in_poll=ack_in_poll, cpu=cpu, sink_secs=sink_secs,
                                             pids=pids, batches=batches)
                                   for p in consumers])
        secs = time.time() - t0
        n = last - first
        fetched = await _events_fetched(conn, pids) if read else None
        await _check(b, conn, "drain (%s)" % label, [g for g in got if g[0] > first], first, last)
        rate = n / secs
        b.record("feeds", "drain %d events, %s" % (n, label), rate, "events/s",
                 "batches of 500")
        us = (sum(c for c, _ in cpu) / sum(e for _, e in cpu) * 1e6
              if len(cpu) == len(consumers) else None)
        if us is not None:
            b.record("feeds", "drain %d events, %s: backends' CPU per event" % (n, label), us,
                     "us", "the polling backends' time on CPU after their first poll, schedstat")
        if sink_secs > 0 and batches:
            # what each batch took besides the sink: the poll, the client's handling
            # of its rows, the connection's start spread over the batches
            b.record("feeds", "drain %d events, %s: time per batch besides the sink" % (n, label),
                     (secs * len(consumers) / float(sum(batches)) - sink_secs) * 1000.0, "ms",
                     "wall x consumers / batches - sink")
        if read:
            if fetched is not None and fetched0 is not None:
                b.record("feeds", "drain %d events, %s: event rows read per event delivered" % (n, label),
                         (fetched - fetched0) / float(n), "rows", "pg_stat_user_tables.idx_tup_fetch")
        return rate, us

    await run("1 consumer, poll/ack", "drain1", 1, [None])
    await run("4 consumers on 4 partitions", "drain4", 4, [0, 1, 2, 3])
    # the same consumer whose acks do not wait for the WAL flush (a lost ack: redelivery)
    await run("1 consumer, poll/ack, synchronous_commit off", "drain1a", 1, [None], sync_ack=False)
    # the recommended loop (1.5): the ack carried by the next poll
    one, one_us = await run("1 consumer, ack carried by the next poll", "drain1p", 1, [None],
                            ack_in_poll=True)
    # scaling: partitions read through their index (README "Partitioned feeds"), the
    # recommended loop, 1, 2 and 4 consumers each on its own partition.  On a machine
    # with fewer cores than consumers the wall rate cannot scale; the backends' CPU
    # per delivered event shows whether the work per event stays flat.
    for n in (2, 4):
        await conn.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS bench_feed_partition_%d ON projection.events "
                           "(projection.feed_partition(stream_id, %d), global_position)" % (n, n))
    await conn.execute("ANALYZE projection.events")
    ncpu = os.cpu_count() or 1
    for n in (1, 2, 4):
        rate, us = await run("%d consumer(s) on %d partition(s), partition index, ack in poll" % (n, n),
                             "drainx%d" % n, n, list(range(n)) if n > 1 else [None], ack_in_poll=True,
                             read=True)
        if n == 1:
            base_rate, base_us = rate, us
            continue
        b.record("feeds", "scaling %d vs 1 consumer(s): wall events/s ratio (%d cores)" % (n, ncpu),
                 rate / base_rate, "x", "same run")
        if us is not None and base_us:
            b.record("feeds", "scaling %d vs 1 consumer(s): backend CPU per event ratio" % n,
                     us / base_us, "x", "1.0 = no extra work per event")
    # a poll of 1 of 64 partitions, without and with the partition index: wall time
    # and the backend's time on CPU (/proc/<pid>/schedstat) per poll of 500
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    per_poll = {}
    for with_index in (False, True):
        if with_index:
            await conn.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS bench_feed_partition_64 "
                               "ON projection.events (projection.feed_partition(stream_id, 64), global_position)")
            await conn.execute("ANALYZE projection.events")
        feed = "drain64" + ("i" if with_index else "")
        await conn.execute("SET client_min_messages = warning")
        await conn.execute("SELECT projection.create_feed($1, start_from => $2, partitions => 64)", feed, str(first))
        await conn.execute("RESET client_min_messages")
        polls = 5
        # --quick: a partition of 64 holds about 150 of the 10,000 events
        size = 20 if b.a.quick else 500
        cpu0 = _cpu_ns(pid)
        t0 = time.time()
        for _ in range(polls):
            tok = await conn.fetchval("SELECT token FROM projection.poll($1, $2, partition => 5) LIMIT 1",
                                      feed, size)
            if tok is None:
                b.fail("feeds: a poll of 1 of 64 partitions found no %d events" % size)
                return
            await conn.execute("SELECT projection.ack($1, $2)", feed, tok)
        ms = (time.time() - t0) / polls * 1000.0
        cpu_ms = (_cpu_ns(pid) - cpu0) / polls / 1e6 if cpu0 is not None else None
        what = "partition index" if with_index else "no index"
        per_poll[with_index] = cpu_ms
        b.record("feeds", "poll+ack of 1 of 64 partitions, %d events, %s, wall" % (size, what), ms, "ms",
                 "mean of %d" % polls)
        if cpu_ms is not None:
            b.record("feeds", "poll+ack of 1 of 64 partitions, %d events, %s, backend CPU" % (size, what), cpu_ms,
                     "ms", "mean of %d, schedstat" % polls)
    if per_poll.get(True) and per_poll.get(False):
        b.record("feeds", "poll of 1 of 64 partitions: backend CPU without / with the partition index",
                 per_poll[False] / per_poll[True], "x", "same run")
    for n in (2, 4, 64):
        await conn.execute("DROP INDEX IF EXISTS projection.bench_feed_partition_%d" % n)
    # the seed's client over the same backlog, its checkpoint in a table
    got = []
    conn2 = await b.connect(DB)
    await conn2.execute("CREATE TABLE IF NOT EXISTS seed_checkpoint (name text PRIMARY KEY, pos bigint)")
    read = await conn2.prepare(
        "SELECT global_position, stream_id, stream_version FROM projection.events "
        "WHERE global_position > $1 ORDER BY global_position LIMIT 500")
    save = await conn2.prepare("UPDATE seed_checkpoint SET pos = $1 WHERE name = 'c'")
    await conn2.execute("INSERT INTO seed_checkpoint VALUES ('c', $1) ON CONFLICT (name) DO UPDATE SET pos = $1",
                        first)
    pos = first
    t0 = time.time()
    while True:
        rows = await read.fetch(pos)
        if not rows:
            break
        got.extend((r[0], r[1], r[2]) for r in rows)
        pos = rows[-1][0]
        await save.fetch(pos)
    secs = time.time() - t0
    await conn2.close()
    await _check(b, conn, "drain (seed-style)", got, first, last)
    b.record("feeds", "drain %d events, seed-style client (checkpoint table, no horizon)" % events,
             events / secs, "events/s", "batches of 500")
    # consumers whose sink costs time per batch: the write of a batch to a search
    # engine or a broker is a network round trip of milliseconds, during which the
    # consumer's lease is held and its backend idle.  Modelled by a fixed delay per
    # batch (b.p sink_ms), not by a real sink on this machine: a local Sphinx or
    # Redis would take its CPU from the same 2 cores as the server and the client,
    # and Sphinx serializes the writes to one real-time index itself, so the figure
    # would measure them, not whether the feed lets consumers of different
    # partitions work at once.
    sink_ms = b.p.get("sink_ms", 20)
    sink_events = 10000 if b.a.quick else 100000
    await conn.execute(
        "INSERT INTO projection.events (stream_id, event_type, data) "
        "SELECT 'k-' || (i % 1000), 'Drain', jsonb_build_object('i', i, 'pad', repeat('x', 100)) "
        "FROM generate_series(1, $1) i", sink_events)
    sink_last = await conn.fetchval("SELECT max(global_position) FROM projection.events")
    await conn.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS bench_feed_partition_4 ON projection.events "
                       "(projection.feed_partition(stream_id, 4), global_position)")
    await conn.execute("ANALYZE projection.events")
    sink = {}
    for n in (1, 4):
        sink[n] = await run("%d consumer(s) on %d partition(s), sink of %d ms per batch (fixed delay), "
                            "partition index, ack in poll" % (n, n, sink_ms),
                            "drains%d" % n, n, list(range(n)) if n > 1 else [None], ack_in_poll=True,
                            sink_secs=sink_ms / 1000.0, first=sink_last - sink_events, last=sink_last)
    b.record("feeds", "sink of %d ms per batch, 4 vs 1 consumer(s): wall events/s ratio (%d cores)"
             % (sink_ms, ncpu), sink[4][0] / sink[1][0], "x", "same run; 4.0 = no serialization")
    # the bound the partitions' sizes set: the largest partition's consumer ends last
    sizes = await conn.fetch("SELECT projection.feed_partition(stream_id, 4) AS p, count(*) AS n "
                             "FROM projection.events WHERE global_position > $1 AND global_position <= $2 "
                             "GROUP BY 1", sink_last - sink_events, sink_last)
    b.record("feeds", "sink of %d ms per batch, 4 consumers: bound from the partitions' sizes" % sink_ms,
             sum(r["n"] for r in sizes) / float(max(r["n"] for r in sizes)), "x",
             "4 x mean / largest partition (%s events)" % "/".join(str(r["n"]) for r in sorted(sizes)))
    if sink[4][1] is not None and sink[1][1]:
        b.record("feeds", "sink of %d ms per batch, 4 vs 1 consumer(s): backend CPU per event ratio" % sink_ms,
                 sink[4][1] / sink[1][1], "x", "1.0 = no extra work per event")
    await conn.execute("DROP INDEX IF EXISTS projection.bench_feed_partition_4")


async def sec_feeds(b):
    conn = await b.fresh_db(DB)
    try:
        await latency(b, conn, b.p["rate"], b.p["lat_secs"])
        await drain(b, conn, 10000 if b.a.quick else 200000)
    finally:
        await conn.close()
    if not b.a.keep_dbs:
        await b.drop_db(DB)
