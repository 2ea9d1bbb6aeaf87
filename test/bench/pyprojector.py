"""The client-side alternative: a projector in the seed's own style.

This is the seed's "Template 1: Basic Projector" with its order summary, daily
sales, customer activity and product search projections, run with Debian's
python3-asyncpg against the same projection.events table:

  * the projector reads events in global_position order in batches of 100,
    calls each projection's handler with one round trip per statement
    (autocommit, or the seed's transaction for customer activity), and saves
    the projection's checkpoint after every event, handled or not, as the
    seed's _run_projection does;
  * it polls: when a round over all projections finds no new event it sleeps
    100 ms (the seed sleeps after every round, which would cap it at 1,000
    events/s per projection; sleeping only when idle is the fairer reading).

Adaptations, all needed to run the seed's code against PostgreSQL and none
making it slower: payload timestamps and dates are parsed to datetime/date
(asyncpg refuses strings for timestamptz/date parameters), JSON numbers are
read as Decimal (exact, as numeric is), the Elasticsearch projection writes
the product_search table instead, and every table is named with its schema.

Run by bench.py as a separate process, so that its client-side work does not
share a Python event loop with the benchmark's appender:

  pyprojector.py --host H --port P --db D --schema S --projections a,b
                 (--catch-up --cap SECONDS | --live --duration SECONDS)
                 [--latency-file F]

It prints one JSON line: elapsed time, each projection's checkpoint and the
number of events each handled.  With --latency-file it writes, for every
handled event, "projection,global_position,epoch" where epoch is the
wall-clock time at which the handler's commit had returned (visible).
"""

import argparse
import asyncio
import datetime
import json
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import List

import asyncpg


def ts(s):
    return datetime.datetime.fromisoformat(s)


def day(s):
    return datetime.date.fromisoformat(s[:10])


@dataclass
class Event:
    stream_id: str
    event_type: str
    data: dict
    version: int
    global_position: int


class EventStore:
    def __init__(self, pool):
        self.pool = pool

    async def read_all(self, position, batch_size):
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT global_position, stream_id, stream_version, event_type, data::text AS data
                  FROM projection.events
                 WHERE global_position > $1
                 ORDER BY global_position
                 LIMIT $2
                """, position, batch_size)
        return [Event(r["stream_id"], r["event_type"],
                      json.loads(r["data"], parse_float=Decimal),
                      r["stream_version"], r["global_position"]) for r in rows]

    async def max_position(self):
        async with self.pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT coalesce(max(global_position), 0) FROM projection.events")


class CheckpointStore:
    def __init__(self, pool, schema):
        self.pool = pool
        self.schema = schema

    async def get(self, name):
        async with self.pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT position FROM %s.checkpoints WHERE name = $1" % self.schema, name)

    async def save(self, name, position):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                INSERT INTO %s.checkpoints (name, position) VALUES ($1, $2)
                ON CONFLICT (name) DO UPDATE SET position = excluded.position
                """ % self.schema, name, position)

    async def delete(self, name):
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM %s.checkpoints WHERE name = $1" % self.schema, name)


class Projection(ABC):
    """Base class for projections."""

    @property
    @abstractmethod
    def name(self) -> str:
        pass

    @abstractmethod
    def handles(self) -> List[str]:
        pass

    @abstractmethod
    async def apply(self, event: Event) -> None:
        pass


class OrderSummaryProjection(Projection):
    def __init__(self, pool, schema):
        self.pool = pool
        self.t = schema + ".order_summaries"

    @property
    def name(self):
        return "order_summary"

    def handles(self):
        return ["OrderCreated", "OrderItemAdded", "OrderItemRemoved",
                "OrderShipped", "OrderCompleted", "OrderCancelled"]

    async def apply(self, event):
        handlers = {
            "OrderCreated": self._handle_created,
            "OrderItemAdded": self._handle_item_added,
            "OrderItemRemoved": self._handle_item_removed,
            "OrderShipped": self._handle_shipped,
            "OrderCompleted": self._handle_completed,
            "OrderCancelled": self._handle_cancelled,
        }
        handler = handlers.get(event.event_type)
        if handler:
            await handler(event)

    async def _handle_created(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                INSERT INTO %s (order_id, customer_id, status, total_amount, item_count, created_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                """ % self.t,
                event.data["order_id"], event.data["customer_id"], "pending", 0, 0,
                ts(event.data["created_at"]))

    async def _handle_item_added(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s
                   SET total_amount = total_amount + $2, item_count = item_count + 1, updated_at = NOW()
                 WHERE order_id = $1
                """ % self.t,
                event.data["order_id"], event.data["price"] * event.data["quantity"])

    async def _handle_item_removed(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s
                   SET total_amount = total_amount - $2, item_count = item_count - 1, updated_at = NOW()
                 WHERE order_id = $1
                """ % self.t,
                event.data["order_id"], event.data["price"] * event.data["quantity"])

    async def _handle_shipped(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s SET status = 'shipped', shipped_at = $2, updated_at = NOW()
                 WHERE order_id = $1
                """ % self.t,
                event.data["order_id"], ts(event.data["shipped_at"]))

    async def _handle_completed(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s SET status = 'completed', completed_at = $2, updated_at = NOW()
                 WHERE order_id = $1
                """ % self.t,
                event.data["order_id"], ts(event.data["completed_at"]))

    async def _handle_cancelled(self, event):
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s
                   SET status = 'cancelled', cancelled_at = $2, cancellation_reason = $3,
                       updated_at = NOW()
                 WHERE order_id = $1
                """ % self.t,
                event.data["order_id"], ts(event.data["cancelled_at"]), event.data.get("reason"))


class DailySalesProjection(Projection):
    def __init__(self, pool, schema):
        self.pool = pool
        self.t = schema + ".daily_sales"

    @property
    def name(self):
        return "daily_sales"

    def handles(self):
        return ["OrderCompleted", "OrderRefunded"]

    async def apply(self, event):
        if event.event_type == "OrderCompleted":
            await self._increment_sales(event)
        elif event.event_type == "OrderRefunded":
            await self._decrement_sales(event)

    async def _increment_sales(self, event):
        date = day(event.data["completed_at"])
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                INSERT INTO %s AS d (date, total_orders, total_revenue, total_items)
                VALUES ($1, 1, $2, $3)
                ON CONFLICT (date) DO UPDATE SET
                    total_orders = d.total_orders + 1,
                    total_revenue = d.total_revenue + $2,
                    total_items = d.total_items + $3,
                    updated_at = NOW()
                """ % self.t,
                date, event.data["total_amount"], event.data["item_count"])

    async def _decrement_sales(self, event):
        date = day(event.data["original_completed_at"])
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE %s SET
                    total_orders = total_orders - 1,
                    total_revenue = total_revenue - $2,
                    total_refunds = total_refunds + $2,
                    updated_at = NOW()
                WHERE date = $1
                """ % self.t,
                date, event.data["refund_amount"])


class CustomerActivityProjection(Projection):
    def __init__(self, pool, schema):
        self.pool = pool
        self.s = schema

    @property
    def name(self):
        return "customer_activity"

    def handles(self):
        return ["CustomerCreated", "OrderCompleted", "ReviewSubmitted", "CustomerTierChanged"]

    async def apply(self, event):
        s = self.s
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if event.event_type == "CustomerCreated":
                    await conn.execute(
                        """
                        INSERT INTO %s.customers (customer_id, email, name, tier, created_at)
                        VALUES ($1, $2, $3, 'bronze', $4)
                        """ % s,
                        event.data["customer_id"], event.data["email"], event.data["name"],
                        ts(event.data["created_at"]))
                    await conn.execute(
                        """
                        INSERT INTO %s.customer_activity_summary
                            (customer_id, total_orders, total_spent, total_reviews)
                        VALUES ($1, 0, 0, 0)
                        """ % s,
                        event.data["customer_id"])
                elif event.event_type == "OrderCompleted":
                    await conn.execute(
                        """
                        UPDATE %s.customer_activity_summary SET
                            total_orders = total_orders + 1,
                            total_spent = total_spent + $2,
                            last_order_at = $3
                        WHERE customer_id = $1
                        """ % s,
                        event.data["customer_id"], event.data["total_amount"],
                        ts(event.data["completed_at"]))
                    await conn.execute(
                        """
                        INSERT INTO %s.customer_order_history
                            (customer_id, order_id, amount, completed_at)
                        VALUES ($1, $2, $3, $4)
                        """ % s,
                        event.data["customer_id"], event.data["order_id"],
                        event.data["total_amount"], ts(event.data["completed_at"]))
                elif event.event_type == "ReviewSubmitted":
                    await conn.execute(
                        """
                        UPDATE %s.customer_activity_summary SET
                            total_reviews = total_reviews + 1,
                            last_review_at = $2
                        WHERE customer_id = $1
                        """ % s,
                        event.data["customer_id"], ts(event.data["submitted_at"]))
                elif event.event_type == "CustomerTierChanged":
                    await conn.execute(
                        """
                        UPDATE %s.customers SET tier = $2, updated_at = NOW()
                        WHERE customer_id = $1
                        """ % s,
                        event.data["customer_id"], event.data["new_tier"])


class ProductSearchProjection(Projection):
    def __init__(self, pool, schema):
        self.pool = pool
        self.t = schema + ".product_search"

    @property
    def name(self):
        return "product_search"

    def handles(self):
        return ["ProductCreated", "ProductUpdated", "ProductPriceChanged", "ProductDeleted"]

    async def apply(self, event):
        async with self.pool.acquire() as conn:
            if event.event_type == "ProductCreated":
                await conn.execute(
                    """
                    INSERT INTO %s (product_id, name, description, category, price, tags, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    """ % self.t,
                    event.data["product_id"], event.data["name"], event.data["description"],
                    event.data["category"], event.data["price"], event.data.get("tags", []),
                    ts(event.data["created_at"]))
            elif event.event_type == "ProductUpdated":
                await conn.execute(
                    """
                    UPDATE %s SET name = $2, description = $3, category = $4, tags = $5,
                                  updated_at = $6
                     WHERE product_id = $1
                    """ % self.t,
                    event.data["product_id"], event.data["name"], event.data["description"],
                    event.data["category"], event.data.get("tags", []),
                    ts(event.data["updated_at"]))
            elif event.event_type == "ProductPriceChanged":
                await conn.execute(
                    "UPDATE %s SET price = $2, price_updated_at = $3 WHERE product_id = $1" % self.t,
                    event.data["product_id"], event.data["new_price"],
                    ts(event.data["changed_at"]))
            elif event.event_type == "ProductDeleted":
                await conn.execute("DELETE FROM %s WHERE product_id = $1" % self.t,
                                   event.data["product_id"])


CLASSES = {
    "order_summary": OrderSummaryProjection,
    "daily_sales": DailySalesProjection,
    "customer_activity": CustomerActivityProjection,
    "product_search": ProductSearchProjection,
}


class Projector:
    """Runs projections from the event store (the seed's Template 1)."""

    def __init__(self, event_store, checkpoint_store, latency=None):
        self.event_store = event_store
        self.checkpoint_store = checkpoint_store
        self.projections: List[Projection] = []
        self.positions = {}
        self.handled = {}
        self.latency = latency

    def register(self, projection):
        self.projections.append(projection)
        self.handled[projection.name] = 0

    async def run_round(self, batch_size):
        """One pass over every projection; returns the number of events read."""
        n = 0
        for projection in self.projections:
            n += await self._run_projection(projection, batch_size)
        return n

    async def _run_projection(self, projection, batch_size):
        checkpoint = await self.checkpoint_store.get(projection.name)
        position = checkpoint or 0
        events = await self.event_store.read_all(position, batch_size)
        handles = projection.handles()
        for event in events:
            if event.event_type in handles:
                await projection.apply(event)
                self.handled[projection.name] += 1
                if self.latency is not None:
                    self.latency.append((projection.name, event.global_position, time.time()))
            await self.checkpoint_store.save(projection.name, event.global_position)
            position = event.global_position
        self.positions[projection.name] = position
        return len(events)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--schema", required=True)
    ap.add_argument("--projections", required=True)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--catch-up", action="store_true",
                    help="process the events present at start, for at most --cap seconds")
    ap.add_argument("--cap", type=float, default=10.0)
    ap.add_argument("--live", action="store_true",
                    help="follow new events for --duration seconds, then drain and exit")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--latency-file")
    a = ap.parse_args()

    pool = await asyncpg.create_pool(host=a.host, port=a.port, user=a.user, database=a.db,
                                     min_size=1, max_size=2)
    latency = [] if a.latency_file else None
    projector = Projector(EventStore(pool), CheckpointStore(pool, a.schema), latency)
    for name in a.projections.split(","):
        projector.register(CLASSES[name](pool, a.schema))

    target = await projector.event_store.max_position()
    print("ready", flush=True)
    t0 = time.time()
    if a.catch_up:
        while time.time() - t0 < a.cap:
            n = await projector.run_round(a.batch)
            if all(projector.positions.get(p.name, 0) >= target for p in projector.projections):
                break
            if n == 0:
                await asyncio.sleep(a.poll)
    else:
        while True:
            n = await projector.run_round(a.batch)
            if n == 0:
                if time.time() - t0 >= a.duration:
                    break
                await asyncio.sleep(a.poll)
    elapsed = time.time() - t0
    await pool.close()
    if latency is not None:
        with open(a.latency_file, "w") as f:
            for name, pos, when in latency:
                f.write("%s,%d,%.6f\n" % (name, pos, when))
    print(json.dumps({"elapsed": elapsed, "positions": projector.positions,
                      "handled": projector.handled, "target": target}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
