/*-------------------------------------------------------------------------
 *
 * feedack.c
 *	  The end of a feed lease: ack (the checkpoint moves), nack (the events
 *	  before a failed one are acked, the failed one is retried after a
 *	  back-off or parked), seek (the checkpoints move, their leases end),
 *	  and extend_lease (a slow consumer keeps its lease longer).
 *
 * ack and nack find the partition by its lease token (FOR UPDATE) and
 * refuse with PJF01, changing nothing, unless that lease is still live:
 * one that expired, was taken over by another poll, or ended with an ack,
 * a nack or a seek belongs to its next holder; extend_lease too.  Every
 * write here but extend_lease bumps lease_epoch, so a poll that read the
 * row before fails to take its lease and looks again (feedpoll.c).
 * extend_lease needs no bump: it only moves a live lease's end later, and a
 * poll takes a lease only where it has ended (its UPDATE re-checks that
 * on the row as extend_lease left it).  Row locks only.
 *
 * IDENTIFICATION
 *	  src/feedack.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "feed.h"
#include "horizon.h"
#include "catalog.h"
#include "projection.h"
#include "spiutil.h"

/*
 * The SET items that end a partition's lease: its token is void from now
 * on, and the bumped lease_epoch makes a poll that read the row before
 * look again (the file header).
 */
#define FEED_LEASE_END_SQL \
	"lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = NULL, " \
	"lease_holder = NULL, lease_expires = NULL, lease_last = NULL, "

PG_FUNCTION_INFO_V1(projection_ack);
PG_FUNCTION_INFO_V1(projection_nack);
PG_FUNCTION_INFO_V1(projection_seek);
PG_FUNCTION_INFO_V1(projection_extend_lease);

/* ---------------------------------------------------------------------
 * seek, ack
 * ---------------------------------------------------------------------
 */

/*
 * seek(feed, position, partition): every partition's checkpoint (or only
 * the given partition's, 1.4) to position, their leases ended (their acks
 * are refused).  Back to replay, ahead to skip; not past the last position
 * drawn.  The partitions' parked streams (feedpark.c) are forgotten: their
 * events after the new checkpoint come as any other.
 */
Datum
projection_seek(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "feed");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow    *row;
	int64		position;
	int64		last;
	int32		partition = -1;
	Oid			types[3] = {INT4OID, INT8OID, INT4OID};
	Datum		values[3];

	projection_require_arg(fcinfo, 1, "position");
	position = PG_GETARG_INT64(1);
	/* the 1.3 signature has no partition argument */
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
	{
		partition = PG_GETARG_INT32(2);
		if (partition < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("partition must not be negative")));
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(name, true, cxt);
	if (partition >= row->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("feed \"%s\" has no partition %d", name, partition),
				 errdetail("Its partitions are 0 to %d.", row->partitions - 1)));
	last = projection_sequence_last_value();
	if (position < 0 || position > last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("position %lld is out of range", (long long) position),
				 errdetail("Positions go from 0 (before the first event) to %lld (the last event).",
						   (long long) last)));
	values[0] = Int32GetDatum(row->id);
	values[1] = Int64GetDatum(position);
	values[2] = Int32GetDatum(partition);
	projection_feed_exec("UPDATE projection.feed_partitions SET position = $2, "
			  FEED_LEASE_END_SQL
			  "failed_position = NULL, attempts = 0, last_error = NULL, retry_at = NULL "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 "
			  "AND ($3 OPERATOR(pg_catalog.<) 0 OR partition OPERATOR(pg_catalog.=) $3)",
			  3, types, values, NULL, SPI_OK_UPDATE);
	projection_feed_hold_forget(row, partition);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	projection_feed_wake_on_commit();
	PG_RETURN_VOID();
}

/* the partition a live lease token holds, locked (lease_row) */
typedef struct FeedLease
{
	int			partition;
	int64		position;		/* the partition's checkpoint */
	int64		epoch;			/* its lease_epoch */
	int64		from;			/* the events of the lease are after this (position, or
								 * the hold's replayed_to) */
	int64		last;			/* the last event the poll returned */
	char	   *stream;			/* a parked stream whose held events the lease has, or NULL */
	int64		failed_position;	/* 0 if none */
	int			attempts;
} FeedLease;

/*
 * Find and lock the partition that "token" leases; raise PJF01 if that lease
 * expired, was taken over, or ended with an ack, a nack or a seek.
 */
static void
feed_lease_row(ProjectionFeedRow *row, const char *token, FeedLease *lease)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	bool		active = false;
	bool		isnull;

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(token);
	projection_feed_exec("SELECT partition, position, lease_last, "
			  "lease_expires OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), "
			  "COALESCE(failed_position, 0), attempts, lease_epoch "
			  "FROM projection.feed_partitions "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND lease_token OPERATOR(pg_catalog.=) $2 FOR UPDATE",
			  2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		lease->partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		lease->position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		lease->last = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		active = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)) && !isnull;
		lease->failed_position = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		lease->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		lease->epoch = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
	}
	lease->from = lease->position;
	lease->stream = NULL;
	if (active)
		lease->stream = projection_feed_hold_of_lease(row, lease->partition, token, &lease->from);
	if (!active)
		ereport(ERROR,
				(errcode(ERRCODE_PROJECTION_LEASE_LOST),
				 errmsg("lease of feed \"%s\" is no longer held", row->name),
				 errdetail("The lease expired, or was taken over by another poll, or ended with an ack, a nack or a seek; its unacknowledged events are delivered again."),
				 errhint("Poll again, and ack before the lease passes (the lease argument of projection.poll).")));
}

/*
 * The start of ack, nack and extend_lease: connect to SPI and find feed
 * "name" (42704 if there is none).  With "lease", also find and lock the
 * partition its lease "token" holds (PJF01 if that lease is gone,
 * feed_lease_row).  The row is allocated in "cxt".
 */
static ProjectionFeedRow *
feed_lease_begin(const char *name, const char *token, FeedLease *lease, MemoryContext cxt)
{
	ProjectionFeedRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(name, false, cxt);
	if (lease != NULL)
		feed_lease_row(row, token, lease);
	return row;
}

/* errdetail for a position outside the events of "lease" (ack, nack) */
static int
feed_lease_range_detail(const ProjectionFeedRow *row, const FeedLease *lease)
{
	if (lease->stream != NULL)
		return errdetail("The lease has the held events of stream \"%s\" after %lld; the poll returned events up to %lld.",
						 lease->stream, (long long) lease->from, (long long) lease->last);
	return errdetail("Partition %d of feed \"%s\" is at %lld; the poll returned events up to %lld.",
					 lease->partition, row->name, (long long) lease->position,
					 (long long) lease->last);
}

/*
 * Check an ack of the lease "token" of feed "row" up to "up_to" (has_up_to
 * false: the last event its poll returned) and lock its partition's row;
 * *ack says what the ack will write (projection_feed_ack_write, or, for the
 * ack a poll carries, the UPDATE of the poll's lease, feedlease.c, 1.7).
 * For a lease of a released stream's held events (feedpark.c), the
 * stream's replayed_to moves to up_to now and the partition's checkpoint
 * stays.  The feed's long-polls are woken at commit.  PJF01 for a lost
 * lease, 22023 for an up_to outside the leased events; nothing written
 * then.  Connected to SPI.
 */
void
projection_feed_ack_prepare(ProjectionFeedRow *row, const char *token, bool has_up_to, int64 up_to,
							ProjectionFeedAck *ack)
{
	FeedLease	lease;

	feed_lease_row(row, token, &lease);
	if (!has_up_to)
		up_to = lease.last;
	if (up_to < lease.from || up_to > lease.last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("up_to %lld is outside the leased events", (long long) up_to),
				 feed_lease_range_detail(row, &lease)));
	ack->partition = lease.partition;
	ack->epoch = lease.epoch;
	ack->up_to = up_to;
	ack->position = up_to;
	ack->written = false;
	if (lease.stream != NULL)
	{
		/* held events of a released stream: the checkpoint stays (feedpark.c) */
		projection_feed_hold_replayed(row, lease.partition, lease.stream, up_to);
		ack->position = lease.position;
	}
	projection_feed_wake_on_commit();		/* a partial ack leaves events for others */
}

/*
 * The UPDATE of a prepared ack on its own: the partition's checkpoint to
 * ack->position, the lease ended.  Connected to SPI.
 */
void
projection_feed_ack_write(ProjectionFeedRow *row, ProjectionFeedAck *ack)
{
	Oid			types[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
	Datum		values[4];

	Assert(!ack->written);
	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(ack->partition);
	values[2] = Int64GetDatum(ack->up_to);
	values[3] = Int64GetDatum(ack->position);
	projection_feed_exec("UPDATE projection.feed_partitions SET position = $4, "
			  FEED_LEASE_END_SQL
			  FEED_ACK_SET_SQL("$3")
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
			  4, types, values, NULL, SPI_OK_UPDATE);
	ack->written = true;
}

/*
 * End the lease "token" of feed "row" with an ack up to "up_to" (has_up_to
 * false: the last event its poll returned): the partition's checkpoint
 * moves there, the lease ends, and the feed's long-polls are woken at
 * commit.  Returns the new checkpoint (for a lease of a released stream's
 * held events, feedpark.c: up_to, the stream's replayed_to, while the
 * partition's checkpoint stays).  PJF01 for a lost lease, 22023 for
 * an up_to outside the leased events; nothing written then.  Connected to
 * SPI.
 */
int64
projection_feed_ack_lease(ProjectionFeedRow *row, const char *token, bool has_up_to, int64 up_to)
{
	ProjectionFeedAck ack;

	projection_feed_ack_prepare(row, token, has_up_to, up_to, &ack);
	projection_feed_ack_write(row, &ack);
	return ack.up_to;
}

/*
 * ack(feed, token, up_to): the leased partition's checkpoint to up_to
 * (default: the last event the poll returned), the lease ended; returns the
 * new checkpoint.  up_to lies between the checkpoint (ack nothing, just end
 * the lease) and the poll's last event.  A lease that expired or was taken
 * over is refused with PJF01 and nothing changes: its events go out again.
 */
Datum
projection_ack(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "feed");
	char	   *token = projection_text_arg(fcinfo, 1, "token");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow    *row;
	int64		up_to;

	row = feed_lease_begin(name, token, NULL, cxt);
	up_to = projection_feed_ack_lease(row, token, !PG_ARGISNULL(2),
									  PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(up_to);
}

/*
 * nack(feed, token, failed_position, error, retry_after): the consumer
 * could not handle the event at failed_position (one the poll returned).
 * The events before it are acked (the checkpoint moves to just before it),
 * the lease ends, and the partition is not handed out again before
 * retry_after has passed; then the failed event comes first.  The number of
 * nacks of that event in a row is counted (feed_status.attempts); when it
 * reaches the feed's max_attempts, the event is parked instead: recorded in
 * projection.feed_parked_events, passed over, and the partition goes on
 * with the next event at once (the stream's later events are delivered:
 * as on_error => 'skip' for projections, parking trades that stream's
 * completeness for the feed's progress).  A feed created with park =>
 * 'stream' (1.6) parks the stream too: its later events are held back
 * until release_stream (feedpark.c).  For a lease of a released stream's
 * held events, the stream's replayed_to moves instead of the checkpoint,
 * and max_attempts parks the stream again from the failing event.  Returns
 * the new checkpoint (replayed_to).  PJF01 for a lost lease, as ack.
 */
Datum
projection_nack(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "feed");
	char	   *token = projection_text_arg(fcinfo, 1, "token");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow    *row;
	FeedLease	lease;
	int64		failed;
	Interval   *retry_after;
	int			attempts;
	bool		park;
	Oid			types[7] = {INT4OID, INT4OID, INT8OID, INT4OID, TEXTOID, INTERVALOID, INT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64		result;

	projection_require_arg(fcinfo, 2, "failed_position");
	projection_require_arg(fcinfo, 4, "retry_after");
	failed = PG_GETARG_INT64(2);
	retry_after = PG_GETARG_INTERVAL_P(4);
	if (projection_feed_interval_ms(retry_after) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_after must not be negative")));
	row = feed_lease_begin(name, token, &lease, cxt);
	if (failed <= lease.from || failed > lease.last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("failed_position %lld is not an event of the lease", (long long) failed),
				 feed_lease_range_detail(row, &lease)));
	attempts = (lease.failed_position == failed ? lease.attempts : 0) + 1;
	park = row->max_attempts > 0 && attempts >= row->max_attempts;

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(lease.partition);
	values[2] = Int64GetDatum(failed);
	values[3] = Int32GetDatum(attempts);
	if (PG_ARGISNULL(3))
		nulls[4] = 'n';
	else
		values[4] = PG_GETARG_DATUM(3);
	values[5] = IntervalPGetDatum(retry_after);
	/*
	 * $7: the new checkpoint: just before the failed event, or (parked) at
	 * it; a lease of a released stream's held events leaves it (feedpark.c)
	 */
	values[6] = Int64GetDatum(lease.stream != NULL ? lease.position : park ? failed : failed - 1);
	if (park)
	{
		if (row->park_stream)
			projection_feed_hold_park(row, lease.partition, failed, attempts, values[4],
									  nulls[4] == 'n', lease.stream != NULL);
		projection_feed_exec("INSERT INTO projection.feed_parked (feed_id, global_position, stream_id, event_type, attempts, error) "
				  "SELECT $1, e.global_position, e.stream_id, e.event_type, $4, $5 "
				  "FROM projection.events e WHERE e.global_position OPERATOR(pg_catalog.=) $3 "
				  "ON CONFLICT (feed_id, global_position) DO UPDATE SET attempts = EXCLUDED.attempts, "
				  "error = EXCLUDED.error, parked_at = EXCLUDED.parked_at",
				  5, types, values, nulls, SPI_OK_INSERT);
		projection_feed_exec("UPDATE projection.feed_partitions SET position = $7, "
				  FEED_LEASE_END_SQL
				  "acked_at = pg_catalog.clock_timestamp(), retry_at = NULL, "
				  "failed_position = NULL, attempts = 0, last_error = $5 "
				  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
				  7, types, values, nulls, SPI_OK_UPDATE);
		result = lease.stream != NULL ? lease.position : failed;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 row->park_stream ?
				 errmsg_plural("feed \"%s\" parked a stream after %d failed attempt",
							   "feed \"%s\" parked a stream after %d failed attempts",
							   attempts, name, attempts) :
				 errmsg_plural("feed \"%s\" parked an event after %d failed attempt",
							   "feed \"%s\" parked an event after %d failed attempts",
							   attempts, name, attempts),
				 row->park_stream ?
				 errdetail("The event at position %lld and the later events of its stream are held back; the partition goes on with the other streams.",
						   (long long) failed) :
				 errdetail("The event at position %lld is passed over; the partition goes on after it.",
						   (long long) failed),
				 row->park_stream ?
				 errhint("The stream is listed in projection.feed_parked_streams; projection.release_stream delivers its events again.") :
				 errhint("The event is listed in projection.feed_parked_events.")));
	}
	else
	{
		if (lease.stream != NULL)
			projection_feed_hold_replayed(row, lease.partition, lease.stream, failed - 1);
		projection_feed_exec("UPDATE projection.feed_partitions SET "
				  "position = $7, "
				  FEED_LEASE_END_SQL
				  "acked_at = pg_catalog.clock_timestamp(), "
				  "failed_position = $3, attempts = $4, last_error = $5, "
				  "retry_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $6 "
				  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
				  7, types, values, nulls, SPI_OK_UPDATE);
		result = failed - 1;
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	projection_feed_wake_on_commit();
	PG_RETURN_INT64(result);
}


/*
 * extend_lease(feed, token, lease) (1.4): a consumer that needs longer than
 * its lease for the events of a poll keeps the lease: it now ends "lease"
 * from now (earlier or later than before).  Returns the new end.  Only a
 * live lease can be extended: one that expired, was taken over or ended is
 * refused with PJF01 (its events are another holder's now), so the token
 * fences a consumer that woke up too late, as ack does.
 */
Datum
projection_extend_lease(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "feed");
	char	   *token = projection_text_arg(fcinfo, 1, "token");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow *row;
	FeedLease	lease;
	Interval   *length;
	Oid			types[3] = {INT4OID, INT4OID, INTERVALOID};
	Datum		values[3];
	bool		isnull;
	TimestampTz expires;

	projection_require_arg(fcinfo, 2, "lease");
	length = PG_GETARG_INTERVAL_P(2);
	if (projection_feed_interval_ms(length) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be positive")));
	row = feed_lease_begin(name, token, &lease, cxt);
	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(lease.partition);
	values[2] = IntervalPGetDatum(length);
	projection_feed_exec("UPDATE projection.feed_partitions SET "
						 "lease_expires = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $3 "
						 "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2 "
						 "RETURNING lease_expires",
						 3, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "the leased partition of feed \"%s\" vanished", name);
	expires = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												&isnull));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	/* a shorter lease ends sooner: a long-poll waiting for it must wake then */
	projection_feed_wake_on_commit();
	PG_RETURN_TIMESTAMPTZ(expires);
}
