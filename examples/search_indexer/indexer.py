#!/usr/bin/python3
"""examples/search_indexer/indexer.py -- the seed's product search, fed from a
projection feed into Sphinx's real-time index "products" (SphinxQL).

    indexer.py --pg "dbname=shop" --sphinx 127.0.0.1:9306 [--feed product_search]

Debian packages: python3-psycopg, python3-pymysql (and sphinxsearch for the
index, see sphinx.sh).  The loop, per poll of the feed:

  1. poll: lease one partition of the feed and get its next events, in
     position order (projection.poll, long-polling: woken at commit); the
     poll carries the ack of the previous batch (step 4);
  2. build the whole document of every product the events touch, by folding
     the product's stream up to the last event of this poll (one query), so
     a document never depends on what the index held before;
  3. write the documents to Sphinx in one transaction: REPLACE INTO, each
     with "version" = the global_position of the last event folded into it,
     skipping every document whose stored version is already as new (so a
     redelivered batch, or an older one, never moves a document backwards);
     a deleted product stays as a tombstone (deleted = 1) keeping its
     version;
  4. ack: the next poll carries the batch's token (poll's ack argument,
     1.5): it moves the partition's checkpoint first, fenced by the lease
     token (a consumer whose lease expired is refused and gives up the
     batch, which the new lease holder redoes), in the poll's own
     transaction, committed without waiting for the WAL flush.  One round
     trip per batch, and no flush between an event's commit and its
     delivery; an ack lost in a server crash means the batch comes again,
     which writing it changes nothing.  With --once, the poll that finds the
     feed drained carries the last batch's ack.

A crash anywhere repeats at most the batch not yet acknowledged, and writing
it again changes nothing: the index stays equal to the read model of the
events up to the checkpoint, and is never corrupted.  Several copies of this
program share the feed's partitions: each stream is in one partition, and a
partition has one lease holder at a time.

Also: --dump (print the index), --search QUERY (print the matching products).
Options: --once (stop once the feed is drained), --create (create the feed if
it does not exist), --lease, --wait, --max-events, --partition.  For the
tests: PJ_INDEXER_KILL_AFTER_WRITE=N makes the process kill itself (SIGKILL)
after writing its N-th batch, before acknowledging it.
"""

import argparse
import decimal
import functools
import json
import os
import signal
import sys
import time

import psycopg
import psycopg.types.json
import pymysql

PRODUCT_TYPES = ["ProductCreated", "ProductUpdated", "ProductPriceChanged", "ProductDeleted"]

# jsonb numbers as Decimal: prices stay exact ("9.50", not 9.5)
psycopg.types.json.set_json_loads(functools.partial(json.loads, parse_float=decimal.Decimal))


def doc_id(product_id):
    """Sphinx needs a positive 64-bit document id: FNV-1a (64 bit) of the
    product id, its top bit cleared, never 0 (the product id itself is kept
    as an attribute and checked)."""
    h = 0xCBF29CE484222325
    for b in product_id.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (h & 0x7FFFFFFFFFFFFFFF) or 1


def text(value):
    """A payload value as the document keeps it: text, or None."""
    return None if value is None else str(value)


def fold(events):
    """The product-search document of one product stream, from its events in
    version order: (document or None if deleted, version, product_id).  A
    malformed event (a payload that is no object, a missing field) never
    stops the indexer: missing fields stay empty, as in the read model."""
    doc, deleted, version = None, False, 0
    for position, event_type, data in events:
        version = position
        if not isinstance(data, dict):
            continue
        if event_type == "ProductCreated":
            doc = {
                "product_id": text(data.get("product_id")),
                "name": text(data.get("name")),
                "description": text(data.get("description")),
                "category": text(data.get("category")),
                "price": text(data.get("price")),
                "tags": [str(t) for t in (data.get("tags") or [])],
                "created_at": text(data.get("created_at")),
                "updated_at": None,
                "price_updated_at": None,
            }
            deleted = False
        elif doc is None:
            continue
        elif event_type == "ProductUpdated":
            doc.update(name=text(data.get("name")), description=text(data.get("description")),
                       category=text(data.get("category")),
                       tags=[str(t) for t in (data.get("tags") or [])],
                       updated_at=text(data.get("updated_at")))
        elif event_type == "ProductPriceChanged":
            doc.update(price=text(data.get("new_price")), price_updated_at=text(data.get("changed_at")))
        elif event_type == "ProductDeleted":
            deleted = True
    return (None if deleted else doc), version, (doc or {}).get("product_id")


def cents(price):
    try:
        return int(decimal.Decimal(price) * 100)
    except (TypeError, ValueError, ArithmeticError):
        return 0


class Indexer:
    def __init__(self, args):
        self.a = args
        self.pg = psycopg.connect(args.pg, autocommit=True)
        host, _, port = args.sphinx.rpartition(":")
        self.sx = pymysql.connect(host=host or "127.0.0.1", port=int(port), autocommit=True)
        self.batches = 0
        self.kill_after = int(os.environ.get("PJ_INDEXER_KILL_AFTER_WRITE", "0"))

    def ensure_feed(self):
        if self.a.create:
            self.pg.execute(
                "SELECT projection.create_feed(%s, event_types => %s, partitions => %s) "
                "WHERE NOT EXISTS (SELECT 1 FROM projection.feed_status WHERE feed = %s)",
                (self.a.feed, PRODUCT_TYPES, self.a.partitions, self.a.feed))

    def poll(self, ack):
        """The next batch; ack: the previous batch's token (acked first), or None."""
        try:
            return self.pg.execute(
                "SELECT token, global_position, stream_id FROM projection.poll(%s, "
                "max_events => %s, wait => %s::interval, lease => %s::interval, partition => %s, "
                "ack => %s)",
                (self.a.feed, self.a.max_events, "%g s" % self.a.wait, "%g s" % self.a.lease,
                 self.a.partition, ack)).fetchall()
        except psycopg.Error as e:
            if ack is None or getattr(e, "sqlstate", None) != "PJF01":
                raise
            # the lease expired and another consumer may hold it: the batch
            # is theirs to redo (writing it again is harmless)
            print("lease lost, batch given up: %s" % e, file=sys.stderr)
            return []

    def build(self, upto):
        """Whole documents of the streams in upto {stream_id: last position}."""
        streams = sorted(upto)
        rows = self.pg.execute(
            "SELECT e.stream_id, e.global_position, e.event_type, e.data "
            "  FROM projection.events e "
            "  JOIN unnest(%s::text[], %s::bigint[]) AS b(stream_id, upto) "
            "    ON e.stream_id = b.stream_id AND e.global_position <= b.upto "
            " WHERE e.event_type = ANY(%s) "
            " ORDER BY e.stream_id, e.stream_version",
            (streams, [upto[s] for s in streams], PRODUCT_TYPES)).fetchall()
        per_stream = {}
        for stream_id, position, event_type, data in rows:
            per_stream.setdefault(stream_id, []).append((position, event_type, data))
        return [fold(evs) for evs in per_stream.values()]

    def write(self, docs):
        """One Sphinx transaction: every document newer than the stored one."""
        docs = [(d, v, p) for d, v, p in docs if p is not None]
        if not docs:
            return 0
        cur = self.sx.cursor()
        ids = [doc_id(p) for _, _, p in docs]
        cur.execute("SELECT id, version FROM %s WHERE id IN (%s) LIMIT %d "
                    "OPTION max_matches = %d" % (self.a.index, ",".join(str(i) for i in ids), len(ids), len(ids)))
        stored = dict(cur.fetchall())
        written = 0
        cur.execute("BEGIN")
        for (doc, version, product_id), i in zip(docs, ids):
            if stored.get(i, 0) >= version:
                continue        # already as new (a redelivery): never go backwards
            d = doc or {}
            cur.execute(
                "REPLACE INTO " + self.a.index + " (id, name, description, category, tags, product_id, "
                "category_name, price_cents, version, deleted, doc) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (i, d.get("name") or "", d.get("description") or "", d.get("category") or "",
                 " ".join(d.get("tags") or []), product_id, d.get("category") or "",
                 cents(d.get("price")), version,
                 0 if doc else 1, json.dumps(doc, sort_keys=True) if doc else ""))
            written += 1
        cur.execute("COMMIT")
        return written

    def run(self):
        self.ensure_feed()
        pending = None          # the token of the batch written, acked by the next poll
        while True:
            rows = self.poll(pending)
            pending = None
            if not rows:
                if self.a.once and self.drained():
                    return
                continue
            polled_at = time.monotonic()
            token = rows[0][0]
            upto = {}
            for _, position, stream_id in rows:
                upto[stream_id] = position
            docs = self.build(upto)
            if time.monotonic() - polled_at > self.a.lease * 0.8:
                continue        # too close to the lease's end: leave it to the next holder
            self.write(docs)
            self.batches += 1
            if self.batches == self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)    # test hook: between write and ack
            pending = token

    def dump(self):
        """Prints the index, one document a line: product_id, version,
        deleted, the document's JSON (empty for a tombstone), by id."""
        cur = self.sx.cursor()
        last = 0
        while True:
            cur.execute("SELECT id, product_id, version, deleted, doc FROM %s WHERE id > %d "
                        "ORDER BY id ASC LIMIT 1000 OPTION max_matches = 1000" % (self.a.index, last))
            rows = cur.fetchall()
            if not rows:
                return
            for i, product_id, version, deleted, doc in rows:
                print("%s\t%d\t%d\t%s" % (product_id, version, deleted, doc))
            last = rows[-1][0]

    def search(self, query):
        """Prints the product ids of the live documents matching query."""
        cur = self.sx.cursor()
        cur.execute("SELECT product_id FROM " + self.a.index + " WHERE MATCH(%s) AND deleted = 0 "
                    "LIMIT 100000 OPTION max_matches = 100000", (query,))
        for (product_id,) in cur.fetchall():
            print(product_id)

    def drained(self):
        """True once no partition has events left (and none is leased)."""
        return self.pg.execute(
            "SELECT coalesce(sum(lag_events), 0) = 0 AND NOT bool_or(leased) "
            "  FROM projection.feed_status WHERE feed = %s", (self.a.feed,)).fetchone()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg", default="", help="libpq connection string (default: libpq's defaults)")
    p.add_argument("--sphinx", default="127.0.0.1:9306", help="SphinxQL host:port")
    p.add_argument("--feed", default="product_search")
    p.add_argument("--index", default="products", help="the Sphinx RT index to write")
    p.add_argument("--create", action="store_true", help="create the feed if it does not exist")
    p.add_argument("--partitions", type=int, default=4, help="partitions of a feed made by --create")
    p.add_argument("--partition", type=int, default=None, help="poll only this partition")
    p.add_argument("--max-events", type=int, default=500)
    p.add_argument("--wait", type=float, default=5.0, help="long-poll seconds")
    p.add_argument("--lease", type=float, default=30.0, help="lease seconds")
    p.add_argument("--once", action="store_true", help="exit once the feed is drained")
    p.add_argument("--dump", action="store_true", help="print the index and exit")
    p.add_argument("--search", metavar="QUERY", help="print the products matching QUERY and exit")
    a = p.parse_args()
    ix = Indexer(a)
    if a.dump:
        ix.dump()
    elif a.search is not None:
        ix.search(a.search)
    else:
        ix.run()


if __name__ == "__main__":
    main()
