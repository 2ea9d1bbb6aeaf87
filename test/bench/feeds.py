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
            crash only means redelivery).
  drain     one consumer draining a backlog through poll/ack in batches of
            500 (events/s), 4 consumers on a feed of 4 partitions, each polling
            its own partition, one consumer whose session has synchronous_commit
            off, and the seed-style client reading batches of 500 with its
            checkpoint in a table, as fast as it can.

Every consumer checks what it got: each event once, in position order within
a stream, nothing missing at the end; any difference fails the run.
"""

import asyncio
import datetime
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


async def _consumer(b, feed, partition, stop, got, lat, wait=1.0, batch=500, sync_ack=True):
    conn = await b.connect(DB)
    if not sync_ack:
        await conn.execute("SET synchronous_commit = off")
    poll = await conn.prepare(
        "SELECT token, global_position, stream_id, stream_version "
        "FROM projection.poll($1, $2, wait => $3::interval, partition => $4)")
    ack = await conn.prepare("SELECT projection.ack($1, $2)")
    try:
        while True:
            rows = await poll.fetch(feed, batch, datetime.timedelta(seconds=wait), partition)
            t = time.time()
            if not rows:
                if stop.is_set():
                    break
                continue
            for r in rows:
                got.append((r[1], r[2], r[3]))
                if lat is not None:
                    lat[r[1]] = t
            await ack.fetchval(feed, rows[0][0])
    finally:
        await conn.close()


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
    for variant in ("feed", "feed-async-ack", "seed"):
        first = await conn.fetchval("SELECT COALESCE(max(global_position), 0) FROM projection.events")
        if variant != "seed":
            await conn.execute("SELECT projection.drop_feed(name) FROM projection.feeds WHERE name = 'lat'")
            await conn.execute("SELECT projection.create_feed('lat', start_from => 'end')")
        stop = asyncio.Event()
        got, lat, returned = [], {}, {}
        task = asyncio.ensure_future(
            _seed_style(b, stop, got, lat) if variant == "seed"
            else _consumer(b, "lat", None, stop, got, lat, sync_ack=(variant == "feed")))
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
        label = {"feed": "long-polling feed consumer",
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

    async def run(label, feed, partitions, consumers, sync_ack=True):
        if feed is not None:
            await conn.execute("SELECT projection.create_feed($1, start_from => $2, partitions => $3)",
                               feed, str(first), partitions)
        stop = asyncio.Event()
        stop.set()          # stop at the first empty poll: the backlog is all there
        got = []
        t0 = time.time()
        if feed is None:
            await _seed_style(b, stop, got, None)
        else:
            await asyncio.gather(*[_consumer(b, feed, p, stop, got, None, wait=0.0, sync_ack=sync_ack)
                                   for p in consumers])
        secs = time.time() - t0
        await _check(b, conn, "drain (%s)" % label, [g for g in got if g[0] > first], first, last)
        b.record("feeds", "drain %d events, %s" % (events, label), events / secs, "events/s",
                 "batches of 500")

    await run("1 consumer, poll/ack", "drain1", 1, [None])
    await run("4 consumers on 4 partitions", "drain4", 4, [0, 1, 2, 3])
    # the same consumer whose acks do not wait for the WAL flush (a lost ack: redelivery)
    await run("1 consumer, poll/ack, synchronous_commit off", "drain1a", 1, [None], sync_ack=False)
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


async def sec_feeds(b):
    conn = await b.fresh_db(DB)
    try:
        await latency(b, conn, b.p["rate"], b.p["lat_secs"])
        await drain(b, conn, 10000 if b.a.quick else 200000)
    finally:
        await conn.close()
    if not b.a.keep_dbs:
        await b.drop_db(DB)
