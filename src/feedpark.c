/*-------------------------------------------------------------------------
 *
 * feedpark.c
 *	  Parked streams (1.6): a feed created with park => 'stream' parks, when
 *	  an event reaches max_attempts nacks, the event and its stream.  The
 *	  stream's events from the parked one on are held back (poll's read
 *	  leaves the partition's parked streams out, feedread.c) while the
 *	  partition goes on with the other streams; release_stream lets them
 *	  out again, in position order, before the partition goes on.
 *
 * A parked stream is one row of projection.feed_holds (feed, partition,
 * stream, parked_from, ...); the held events are not copied, they stay
 * where they are in projection.events.  The partition's checkpoint passes
 * them as it passes the other streams' events, so after release_stream
 * the held events are those of the stream in (replayed_to, checkpoint]
 * (replayed_to starts just before parked_from, or at it with skip); the
 * stream's later events are still left out of the partition's reads.  A
 * poll of the partition hands those held events out first, under a lease
 * of the partition whose token the row records (lease_token), and their
 * ack moves replayed_to instead of the checkpoint; a nack retries them as
 * any event, and max_attempts parks the stream again from the failing
 * event.  A poll that finds no held event left removes the row (once an
 * ack of the partition's lease still in flight, which may move the
 * checkpoint past more of them, has committed): the stream's events after
 * the checkpoint then come as the others do.  So a
 * stream's events reach the consumer in position order, and no other
 * stream's event is passed over or handed out twice for it.
 *
 * seek forgets the parked streams of the partitions it moves.  The rows
 * go with their feed (ON DELETE CASCADE: drop_feed, DROP OWNED).
 *
 * Locking: row locks on feed_holds, taken by the UPDATEs here; the
 * partition's lease orders the writers of one row (a poll, ack or nack of
 * the partition holds its row lock), release_stream locks the hold FOR
 * UPDATE.  A poll that removes a hold first waits, in a subtransaction
 * rolled back at once, for the partition row's pending writer
 * (projection_feed_hold_done).
 *
 * IDENTIFICATION
 *	  src/feedpark.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "feed.h"
#include "spiutil.h"
#include "subxact.h"

PG_FUNCTION_INFO_V1(projection_release_stream);

/*
 * Park the stream of the event at "failed" in partition "partition": a new
 * hold from that event on, or, while its held events are being replayed
 * ("replaying": the lease was the hold's), the hold parked again from it.
 */
void
projection_feed_hold_park(ProjectionFeedRow *row, int partition, int64 failed, int attempts,
						  Datum error, bool error_null, bool replaying)
{
	Oid			types[5] = {INT4OID, INT4OID, INT8OID, INT4OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	values[2] = Int64GetDatum(failed);
	values[3] = Int32GetDatum(attempts);
	values[4] = error;
	if (error_null)
		nulls[4] = 'n';
	projection_feed_exec(replaying ?
						 "UPDATE projection.feed_holds h SET parked_from = $3, attempts = $4, error = $5, "
						 "parked_at = pg_catalog.now(), released_at = NULL, replayed_to = NULL, lease_token = NULL "
						 "FROM projection.events e WHERE e.global_position OPERATOR(pg_catalog.=) $3 "
						 "AND h.feed_id OPERATOR(pg_catalog.=) $1 AND h.partition OPERATOR(pg_catalog.=) $2 "
						 "AND h.stream_id OPERATOR(pg_catalog.=) e.stream_id" :
						 "INSERT INTO projection.feed_holds (feed_id, partition, stream_id, parked_from, attempts, error) "
						 "SELECT $1, $2, e.stream_id, $3, $4, $5 FROM projection.events e "
						 "WHERE e.global_position OPERATOR(pg_catalog.=) $3",
						 5, types, values, nulls, replaying ? SPI_OK_UPDATE : SPI_OK_INSERT);
	if (SPI_processed != 1)
		elog(ERROR, "the event at position %lld of feed \"%s\" vanished", (long long) failed, row->name);
}

/* statements on one hold: $1 feed, $2 partition, $3 stream, $4 the value */
static void
feed_hold_exec(const char *sql, ProjectionFeedRow *row, int partition, const char *stream,
			   Oid type, Datum value, int expected)
{
	Oid			types[4] = {INT4OID, INT4OID, TEXTOID, type};
	Datum		values[4];

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	values[2] = CStringGetTextDatum(stream);
	values[3] = value;
	projection_feed_exec(sql, type == InvalidOid ? 3 : 4, types, values, NULL, expected);
}

#define FEED_HOLD_WHERE \
	" WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2" \
	" AND stream_id OPERATOR(pg_catalog.=) $3"

/* the held events of "stream" up to "up_to" are acked */
void
projection_feed_hold_replayed(ProjectionFeedRow *row, int partition, const char *stream, int64 up_to)
{
	feed_hold_exec("UPDATE projection.feed_holds SET replayed_to = $4" FEED_HOLD_WHERE,
				   row, partition, stream, INT8OID, Int64GetDatum(up_to), SPI_OK_UPDATE);
}

/* the arguments of feed_hold_wait_body, and what it found */
typedef struct FeedHoldWaitArgs
{
	Datum		values[3];		/* feed, partition, lease epoch */
	bool		unchanged;		/* the partition is still at "epoch", free */
} FeedHoldWaitArgs;

/*
 * projection_feed_hold_done's wait for the partition row's pending writer
 * (FOR UPDATE), in a subtransaction always rolled back: the lock is not
 * wanted to the end (see there).
 */
static bool
feed_hold_wait_body(void *arg)
{
	FeedHoldWaitArgs *args = (FeedHoldWaitArgs *) arg;
	Oid			types[3] = {INT4OID, INT4OID, INT8OID};

	projection_feed_exec("SELECT 1 FROM projection.feed_partitions "
						 "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2 "
						 "AND lease_epoch OPERATOR(pg_catalog.=) $3 "
						 "AND (lease_expires IS NULL OR lease_expires OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()) "
						 "FOR UPDATE",
						 3, types, args->values, NULL, SPI_OK_SELECT);
	args->unchanged = SPI_processed == 1;
	return false;
}

/*
 * The held events of "stream" are all acked, as poll saw partition
 * "partition" free at lease epoch "epoch": it is no longer parked, unless
 * the partition changed since.  A lease of the partition's own events,
 * taken while the stream was parked, leaves the stream's events out; an
 * ack of it that checked the lease while it was live and has not
 * committed yet (its lease expired meanwhile, so poll found the partition
 * free) moves the checkpoint past them.  Removing the hold then would lose
 * them: so first wait for any such writer of the partition's row (FOR
 * UPDATE), and remove the hold only if the row is still at "epoch" with no
 * live lease.  The lock is taken in a subtransaction rolled back at once: a
 * writer coming later finds its lease expired (poll saw it so) and is
 * refused, so the lock is not needed to the end, and a long-poll that goes
 * on to sleep holds none.  Returns false (nothing done: look again) if the
 * partition changed.  Connected to SPI.
 */
bool
projection_feed_hold_done(ProjectionFeedRow *row, int partition, const char *stream, int64 epoch)
{
	FeedHoldWaitArgs args;

	args.values[0] = Int32GetDatum(row->id);
	args.values[1] = Int32GetDatum(partition);
	args.values[2] = Int64GetDatum(epoch);
	args.unchanged = false;
	(void) projection_subxact_run(feed_hold_wait_body, &args, NULL, NULL);
	if (!args.unchanged)
		return false;
	feed_hold_exec("DELETE FROM projection.feed_holds" FEED_HOLD_WHERE,
				   row, partition, stream, InvalidOid, (Datum) 0, SPI_OK_DELETE);
	return true;
}

/* a lease of the partition hands out the held events of "stream" */
void
projection_feed_hold_lease(ProjectionFeedRow *row, int partition, const char *stream, const char *token)
{
	feed_hold_exec("UPDATE projection.feed_holds SET lease_token = $4" FEED_HOLD_WHERE,
				   row, partition, stream, TEXTOID, CStringGetTextDatum(token), SPI_OK_UPDATE);
}

/* seek: the parked streams of the partition (of every one if < 0) are forgotten */
void
projection_feed_hold_forget(ProjectionFeedRow *row, int partition)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];

	if (!row->park_stream)
		return;
	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	projection_feed_exec("DELETE FROM projection.feed_holds WHERE feed_id OPERATOR(pg_catalog.=) $1 "
						 "AND ($2 OPERATOR(pg_catalog.<) 0 OR partition OPERATOR(pg_catalog.=) $2)",
						 2, types, values, NULL, SPI_OK_DELETE);
}

/* a hold row as feed_hold_row reads it */
typedef struct FeedHold
{
	char	   *stream;			/* in the current (SPI) context */
	bool		released;
	int64		replayed_to;	/* 0 if not released */
} FeedHold;

/* how feed_hold_row finds the hold and reads it */
typedef enum FeedHoldLookup
{
	FEED_HOLD_SNAPSHOT,			/* of (partition, stream), with the active snapshot */
	FEED_HOLD_LOCK,				/* of (partition or -1: any, stream), locked FOR UPDATE */
	FEED_HOLD_LEASE				/* released, whose lease is "key" (a token) in the partition */
} FeedHoldLookup;

/*
 * The hold row of feed "row" in "partition" whose stream (or, for
 * FEED_HOLD_LEASE, lease token) is "key", read into *hold; false if there
 * is none.  Connected to SPI.
 */
static bool
feed_hold_row(ProjectionFeedRow *row, FeedHoldLookup lookup, int partition, const char *key,
			  FeedHold *hold)
{
	static const char *const sql[3] = {
#define FEED_HOLD_SELECT \
	"SELECT stream_id, released_at IS NOT NULL, replayed_to FROM projection.feed_holds " \
	"WHERE feed_id OPERATOR(pg_catalog.=) $1 " \
	"AND ($2 OPERATOR(pg_catalog.<) 0 OR partition OPERATOR(pg_catalog.=) $2) "
		FEED_HOLD_SELECT "AND stream_id OPERATOR(pg_catalog.=) $3",
		FEED_HOLD_SELECT "AND stream_id OPERATOR(pg_catalog.=) $3 FOR UPDATE",
		FEED_HOLD_SELECT "AND lease_token OPERATOR(pg_catalog.=) $3 AND released_at IS NOT NULL"
#undef FEED_HOLD_SELECT
	};
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	values[2] = CStringGetTextDatum(key);
	projection_feed_run(sql[lookup], 3, types, values, NULL, lookup == FEED_HOLD_SNAPSHOT,
						SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	hold->stream = SPI_getvalue(tup, desc, 1);
	hold->released = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
	d = SPI_getbinval(tup, desc, 3, &isnull);
	hold->replayed_to = isnull ? 0 : DatumGetInt64(d);
	return true;
}

/*
 * Up to where the held events of the released "stream" were acked, as the
 * active snapshot sees it (poll, feedpoll.c: read only after the partition
 * was found free; an ack since makes its lease fail).
 */
int64
projection_feed_hold_replayed_to(ProjectionFeedRow *row, int partition, const char *stream)
{
	FeedHold	hold;

	if (!feed_hold_row(row, FEED_HOLD_SNAPSHOT, partition, stream, &hold))
		elog(ERROR, "the parked stream \"%s\" of feed \"%s\" vanished", stream, row->name);
	return hold.replayed_to;
}

/*
 * The stream whose held events the lease "token" of the partition hands
 * out, and up to where they were acked before (*replayed_to), or NULL for
 * a lease of the partition's own events.  Connected to SPI.
 */
char *
projection_feed_hold_of_lease(ProjectionFeedRow *row, int partition, const char *token,
							  int64 *replayed_to)
{
	FeedHold	hold;

	if (!row->park_stream || !feed_hold_row(row, FEED_HOLD_LEASE, partition, token, &hold))
		return NULL;
	*replayed_to = hold.replayed_to;
	return hold.stream;
}

/*
 * release_stream(feed, stream_id, skip): the next polls of the parked
 * stream's partition hand out its parked event and its held events, in
 * position order, before the partition goes on (with skip, the parked
 * event stays parked, in feed_parked_events, and the held events after it
 * come).  Owner only.  A stream that is not parked, or already released,
 * is refused (22023, 55000) and nothing changes.
 */
Datum
projection_release_stream(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "feed");
	char	   *stream = projection_text_arg(fcinfo, 1, "stream_id");
	bool		skip;
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow *row;
	Oid			types[3] = {INT4OID, TEXTOID, BOOLOID};
	Datum		values[3];
	FeedHold	hold;

	projection_require_arg(fcinfo, 2, "skip");
	skip = PG_GETARG_BOOL(2);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(name, true, cxt);
	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(stream);
	values[2] = BoolGetDatum(skip);
	if (!feed_hold_row(row, FEED_HOLD_LOCK, -1, stream, &hold))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" is not parked in feed \"%s\"", stream, name),
				 errhint("The parked streams are listed in projection.feed_parked_streams.")));
	if (hold.released)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" of feed \"%s\" is already released", stream, name),
				 errdetail("Its held events are being delivered.")));
	projection_feed_exec("UPDATE projection.feed_holds SET released_at = pg_catalog.clock_timestamp(), "
						 "replayed_to = parked_from OPERATOR(pg_catalog.-) CASE WHEN $3 THEN 0 ELSE 1 END, "
						 "lease_token = NULL "
						 "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND stream_id OPERATOR(pg_catalog.=) $2",
						 3, types, values, NULL, SPI_OK_UPDATE);
	/* the parked event is delivered again: no longer parked (unless skipped) */
	if (!skip)
		projection_feed_exec("DELETE FROM projection.feed_parked k USING projection.feed_holds h "
							 "WHERE h.feed_id OPERATOR(pg_catalog.=) $1 AND h.stream_id OPERATOR(pg_catalog.=) $2 "
							 "AND k.feed_id OPERATOR(pg_catalog.=) $1 "
							 "AND k.global_position OPERATOR(pg_catalog.=) h.parked_from",
							 2, types, values, NULL, SPI_OK_DELETE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	projection_feed_wake_on_commit();
	PG_RETURN_VOID();
}
