"""Deterministic e-commerce event stream for the projection benchmarks.

The stream has the shape of the seed's examples (projection-patterns): orders,
customers and products, 14 event types, payload field names as the seed's
templates read them.  It is a simulation, so every event is consistent with
what came before it:

  * an order is created for an existing customer, gets 1-5 items of live
    products at the product's current price, may lose one item, and is then
    either cancelled or shipped and completed; OrderCompleted carries the
    total_amount and item_count of the items still in the order;
  * a refund only follows a completion, carries original_completed_at and
    refunds at most the order's total, at most once per order;
  * reviews, tier changes and product changes only touch existing, live
    customers and products; a deleted product gets no further events.

Money is generated in integer cents and written as a JSON number with at most
two decimals, so PostgreSQL's numeric and Python's Decimal read the same exact
value.  Timestamps are UTC ISO-8601 strings ("2024-01-01T00:00:20Z") that grow
with the stream, so "last" by position and "latest" by time agree.

The population does not depend on the stream length: the first N events of a
1M-event stream are the N-event stream with the same seed.

Usage from Python:  for stream_id, version, event_type, data in events(seed, n)
(data is the payload as JSON text).  As a script it prints a summary.
"""

import json
import random
import sys
import time

EVENT_TYPES = (
    "OrderCreated", "OrderItemAdded", "OrderItemRemoved", "OrderShipped",
    "OrderCompleted", "OrderCancelled", "OrderRefunded",
    "CustomerCreated", "CustomerTierChanged", "ReviewSubmitted",
    "ProductCreated", "ProductUpdated", "ProductPriceChanged", "ProductDeleted",
)

_ADJ = ("red", "blue", "quiet", "smart", "tiny", "giant", "eco", "classic",
        "rapid", "soft", "steel", "wooden", "solar", "vintage", "pro", "ultra")
_NOUN = ("lamp", "kettle", "chair", "backpack", "headphones", "desk", "mug",
         "jacket", "router", "blender", "camera", "notebook", "bicycle",
         "speaker", "watch", "pillow")
_WORDS = ("durable", "lightweight", "waterproof", "handmade", "compact",
          "wireless", "organic", "ergonomic", "rechargeable", "stylish",
          "portable", "premium", "recycled", "adjustable", "foldable", "quiet")
_CATEGORIES = ("home", "kitchen", "outdoor", "electronics", "office",
               "fashion", "sports", "toys")
_TAGS = ("new", "sale", "bestseller", "gift", "eco", "limited", "bundle",
         "clearance", "premium", "refurbished")
_TIERS = ("bronze", "silver", "gold", "platinum")
_FIRST = ("Ada", "Linus", "Grace", "Ken", "Barbara", "Edsger", "Frances",
          "Donald", "Margaret", "Tim", "Radia", "Guido")
_LAST = ("Lovelace", "Torvalds", "Hopper", "Thompson", "Liskov", "Dijkstra",
         "Allen", "Knuth", "Hamilton", "Berners-Lee", "Perlman", "van Rossum")
_CANCEL = ("customer request", "payment failed", "out of stock", "duplicate")
_REFUND = ("damaged", "late delivery", "not as described", "changed mind")
_CARRIERS = ("ups", "dhl", "fedex", "post")

START = 1704067200  # 2024-01-01T00:00:00Z


def _ts(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _money(cents):
    # repr of cents/100 is the shortest round-tripping decimal: at most two
    # decimals, exact for numeric and Decimal
    return cents / 100


def _dump(d):
    return json.dumps(d, separators=(",", ":"))


class _Order:
    __slots__ = ("oid", "cid", "target", "items", "removed", "shipped")

    def __init__(self, oid, cid, target):
        self.oid = oid
        self.cid = cid
        self.target = target
        self.items = []          # [product_id, price_cents, quantity]
        self.removed = False
        self.shipped = False


def events(seed, n):
    """Yield n events as (stream_id, stream_version, event_type, data_json)."""
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    choice = rng.choice
    versions = {}
    t = START
    out = 0

    products = {}            # product_id -> price in cents (live products)
    live_products = []       # list of live product ids (for random choice)
    customers = []           # customer ids
    tiers = {}
    open_orders = []         # _Order
    refundable = []          # (oid, cid, total_cents, completed_at)
    next_id = {"prd": 0, "cus": 0, "ord": 0}

    def new_id(kind):
        next_id[kind] += 1
        return "%s-%d" % (kind, next_id[kind])

    def emit(stream, etype, data):
        nonlocal out
        v = versions.get(stream, 0) + 1
        versions[stream] = v
        out += 1
        return (stream, v, etype, _dump(data))

    def product_created():
        pid = new_id("prd")
        price = randint(199, 49999)
        products[pid] = price
        live_products.append(pid)
        noun = choice(_NOUN)
        return emit("product-" + pid[4:], "ProductCreated", {
            "product_id": pid,
            "name": "%s %s" % (choice(_ADJ), noun),
            "description": "%s %s %s %s" % (choice(_WORDS), choice(_WORDS), choice(_WORDS), noun),
            "category": choice(_CATEGORIES),
            "price": _money(price),
            "tags": rng.sample(_TAGS, randint(0, 3)),
            "created_at": _ts(t),
        })

    def customer_created():
        cid = new_id("cus")
        customers.append(cid)
        tiers[cid] = "bronze"
        first, last = choice(_FIRST), choice(_LAST)
        return emit("customer-" + cid[4:], "CustomerCreated", {
            "customer_id": cid,
            "email": "%s.%s.%s@example.com" % (first.lower(), last.lower().replace(" ", ""), cid[4:]),
            "name": "%s %s" % (first, last),
            "created_at": _ts(t),
        })

    # the opening catalogue and customer base, independent of n
    pending = [product_created for _ in range(40)] + [customer_created for _ in range(60)]
    for make in pending:
        if out >= n:
            return
        t += randint(1, 5)
        yield make()

    while out < n:
        t += randint(1, 39)
        r = rand()
        if r < 0.60 and open_orders:
            # advance a random open order by one step
            i = randint(0, len(open_orders) - 1)
            o = open_orders[i]
            stream = "order-" + o.oid[4:]
            if not o.shipped and len(o.items) < o.target:
                pid = choice(live_products)
                qty = randint(1, 3)
                o.items.append([pid, products[pid], qty])
                yield emit(stream, "OrderItemAdded", {
                    "order_id": o.oid, "product_id": pid,
                    "price": _money(products[pid]), "quantity": qty,
                })
            elif not o.shipped and not o.removed and len(o.items) >= 2 and rand() < 0.25:
                o.removed = True
                pid, price, qty = o.items.pop(randint(0, len(o.items) - 1))
                yield emit(stream, "OrderItemRemoved", {
                    "order_id": o.oid, "product_id": pid,
                    "price": _money(price), "quantity": qty,
                })
            elif not o.shipped and rand() < 0.08:
                open_orders[i] = open_orders[-1]
                open_orders.pop()
                yield emit(stream, "OrderCancelled", {
                    "order_id": o.oid, "customer_id": o.cid,
                    "reason": choice(_CANCEL), "cancelled_at": _ts(t),
                })
            elif not o.shipped:
                o.shipped = True
                yield emit(stream, "OrderShipped", {
                    "order_id": o.oid, "shipped_at": _ts(t),
                    "carrier": choice(_CARRIERS),
                })
            else:
                open_orders[i] = open_orders[-1]
                open_orders.pop()
                total = sum(p * q for _, p, q in o.items)
                done = _ts(t)
                if rand() < 0.12:
                    refundable.append((o.oid, o.cid, total, done))
                yield emit(stream, "OrderCompleted", {
                    "order_id": o.oid, "customer_id": o.cid,
                    "total_amount": _money(total), "item_count": len(o.items),
                    "completed_at": done,
                })
        elif r < 0.705 or not open_orders:
            oid = new_id("ord")
            o = _Order(oid, choice(customers), randint(1, 5))
            open_orders.append(o)
            yield emit("order-" + oid[4:], "OrderCreated", {
                "order_id": oid, "customer_id": o.cid, "created_at": _ts(t),
            })
        elif r < 0.725 and refundable:
            j = randint(0, len(refundable) - 1)
            oid, cid, total, done = refundable[j]
            refundable[j] = refundable[-1]
            refundable.pop()
            amount = total if rand() < 0.5 else max(1, total * randint(10, 90) // 100)
            yield emit("order-" + oid[4:], "OrderRefunded", {
                "order_id": oid, "customer_id": cid,
                "refund_amount": _money(amount), "original_completed_at": done,
                "reason": choice(_REFUND), "refunded_at": _ts(t),
            })
        elif r < 0.765:
            yield customer_created()
        elif r < 0.785:
            cid = choice(customers)
            old = tiers[cid]
            new = choice([x for x in _TIERS if x != old])
            tiers[cid] = new
            yield emit("customer-" + cid[4:], "CustomerTierChanged", {
                "customer_id": cid, "old_tier": old, "new_tier": new,
                "changed_at": _ts(t),
            })
        elif r < 0.875:
            cid = choice(customers)
            yield emit("customer-" + cid[4:], "ReviewSubmitted", {
                "customer_id": cid, "product_id": choice(live_products),
                "rating": randint(1, 5), "submitted_at": _ts(t),
            })
        elif r < 0.89:
            yield product_created()
        elif r < 0.93:
            pid = choice(live_products)
            noun = choice(_NOUN)
            yield emit("product-" + pid[4:], "ProductUpdated", {
                "product_id": pid,
                "name": "%s %s" % (choice(_ADJ), noun),
                "description": "%s %s %s %s" % (choice(_WORDS), choice(_WORDS), choice(_WORDS), noun),
                "category": choice(_CATEGORIES),
                "tags": rng.sample(_TAGS, randint(0, 3)),
                "updated_at": _ts(t),
            })
        elif r < 0.995 or len(live_products) <= 20:
            pid = choice(live_products)
            old = products[pid]
            new = max(99, old + randint(-old // 5, old // 5))
            products[pid] = new
            yield emit("product-" + pid[4:], "ProductPriceChanged", {
                "product_id": pid, "old_price": _money(old),
                "new_price": _money(new), "changed_at": _ts(t),
            })
        else:
            j = randint(0, len(live_products) - 1)
            pid = live_products[j]
            live_products[j] = live_products[-1]
            live_products.pop()
            del products[pid]
            yield emit("product-" + pid[4:], "ProductDeleted", {
                "product_id": pid, "deleted_at": _ts(t),
            })


if __name__ == "__main__":
    import collections
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    t0 = time.time()
    counts = collections.Counter()
    last = None
    for ev in events(seed, n):
        counts[ev[2]] += 1
        last = ev
    print("%d events in %.2f s" % (sum(counts.values()), time.time() - t0))
    for k in EVENT_TYPES:
        print("  %-20s %8d" % (k, counts[k]))
    print("last:", last)
