/*-------------------------------------------------------------------------
 *
 * feedpoll.c
 *	  projection.poll: lease a feed partition and hand out its next events,
 *	  never past the safe horizon, long-polling woken at commit.
 *
 * poll, in one READ COMMITTED statement:
 *	1. compute the safe horizon H (projection_feed_horizon in feed.c, the
 *	   rule the worker follows): read the sequence's last_value, then the appending
 *	   transactions, then take a snapshot S; every position <= H is visible
 *	   in S or dead for ever.  Positions this transaction appended itself
 *	   (not yet committed) are excluded too;
 *	2. with S, read the feed's partitions and pick a free one (no live
 *	   lease, no nack back-off) that has events in (position, H]: the given
 *	   one, or the free one with the lowest checkpoint; read its next events
 *	   there (for a feed with park => 'stream', 1.6: leaving out the
 *	   partition's parked streams, and a released stream's held events
 *	   first, feedpark.c);
 *	3. take the lease (feedlease.c) with one UPDATE that succeeds only if the row is
 *	   unchanged since step 2 (same lease_epoch, still free): a concurrent
 *	   poll, ack, nack or seek makes it fail, and poll starts over.  No row
 *	   lock is held by a poll that returns nothing, so a long-poll blocks
 *	   no one.  The ack a poll carries (1.5) locks its partition's row
 *	   before step 1; when step 3 leases that partition, one UPDATE writes
 *	   both (1.7), otherwise the ack is written on its own after the look.
 * A poll that finds nothing returns no rows and holds no lease.  With wait,
 * it sleeps on the database's feed condition variable (broadcast by every
 * appending transaction's commit or abort, and by ack, nack, seek, resume
 * and drop at commit) and tries again, until events come or wait passes.
 * A lease's end and a back-off's end wake it too (it sleeps no longer than
 * that), and projection.naptime bounds every sleep as the worker's safety
 * net.  While it sleeps it advertises no xmin when the statement is a plain
 * "SELECT ... FROM projection.poll(...)" in READ COMMITTED (the rule of
 * projection.wait, feed_may_release_snapshot): every read after a sleep
 * uses a new snapshot.
 *
 * Locking: the lease UPDATE's row lock, held to the end of the poll's
 * transaction; no LWLock.  The appenders' registry is read lock-free.
 *
 * IDENTIFICATION
 *	  src/feedpoll.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "feed.h"
#include "feedlease.h"
#include "feedread.h"
#include "horizon.h"
#include "projection.h"
#include "spiutil.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(projection_poll);

/* a partition as poll saw it */
typedef struct FeedPartition
{
	int			partition;
	int64		position;
	int64		epoch;
	bool		leased;			/* an unexpired lease */
	TimestampTz expires;		/* its end (0 if none) */
	bool		backing_off;	/* a nack's retry_after has not passed */
	TimestampTz retry_at;		/* its end (0 if none) */
	Datum		held;			/* text[] of its parked streams (1.6), or 0 if none */
	char	   *replay;			/* a released stream whose held events come first, or NULL */
} FeedPartition;

/* ---------------------------------------------------------------------
 * poll
 * ---------------------------------------------------------------------
 */

/*
 * May poll stop advertising an xmin while it sleeps?  Only if nothing will
 * read with this backend's older snapshots after it returns: the statement
 * is a plain "SELECT ... FROM projection.poll(...)" (a function scan of
 * poll alone, constant or parameter arguments, no subqueries), at the top
 * level, with no other portal open, in READ COMMITTED (poll refuses the
 * other levels).  Anywhere else poll keeps the statement's snapshot while
 * it sleeps, as any function does.  The rule of projection.wait.
 */
static bool
feed_may_release_snapshot(FunctionCallInfo fcinfo)
{
	Portal		portal = ActivePortal;
	PlannedStmt *stmt;
	FunctionScan *scan;
	RangeTblFunction *rtf;
	FuncExpr   *call;
	ListCell   *arg;

	if (IsolationUsesXactSnapshot() || portal == NULL || list_length(portal->stmts) != 1 ||
		!ThereAreNoReadyPortals())
		return false;
	stmt = linitial_node(PlannedStmt, portal->stmts);
	if (stmt->commandType != CMD_SELECT || stmt->utilityStmt != NULL ||
		stmt->subplans != NIL || stmt->planTree == NULL ||
		!IsA(stmt->planTree, FunctionScan) || stmt->planTree->lefttree != NULL ||
		stmt->planTree->initPlan != NIL)
		return false;
	scan = (FunctionScan *) stmt->planTree;
	if (list_length(scan->functions) != 1)
		return false;
	rtf = linitial_node(RangeTblFunction, scan->functions);
	call = (FuncExpr *) rtf->funcexpr;
	if (call == NULL || !IsA(call, FuncExpr) || call->funcid != fcinfo->flinfo->fn_oid)
		return false;
	foreach(arg, call->args)
		if (!IsA(lfirst(arg), Const) && !IsA(lfirst(arg), Param))
			return false;
	return true;
}

/* partitions in the order of feed_read_partitions: checkpoint, then number */
static int
feed_partition_cmp(const void *a, const void *b)
{
	const FeedPartition *pa = (const FeedPartition *) a;
	const FeedPartition *pb = (const FeedPartition *) b;

	if (pa->position != pb->position)
		return pa->position < pb->position ? -1 : 1;
	return pa->partition < pb->partition ? -1 : pa->partition > pb->partition ? 1 : 0;
}

/*
 * The feed's partitions as the active snapshot sees them (ordered by
 * checkpoint, then number), or only "partition" if >= 0, and whether the
 * feed is paused (row->paused): after a sleep the feed may have been
 * paused, resumed or dropped, and one statement tells all (UNDEFINED_OBJECT
 * if it was dropped).  Sets *next_expiry to the soonest end of a lease or
 * of a nack's back-off (0 if none).  With "ack" (the ack the poll carries,
 * prepared but not written, 1.7), its partition is as the ack will leave
 * it: its row is locked by this transaction, so the snapshot sees it as the
 * ack read it, and the ack ends its lease and back-off, moves its
 * checkpoint and bumps its epoch (the lease's UPDATE writes both,
 * feedlease.c).  Result palloc'd.
 */
static FeedPartition *
feed_read_partitions(ProjectionFeedRow *row, int partition, const ProjectionFeedAck *ack,
					 int *count, TimestampTz *next_expiry)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];
	FeedPartition *parts;
	uint64		i;
	bool		moved = false;	/* the ack moved its partition's checkpoint */

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	/* the parked streams (1.6) only for feeds that park streams */
#define FEED_PARTITIONS_SQL(holds, from) \
	"SELECT p.partition, p.position, p.lease_epoch, " \
	"COALESCE(p.lease_expires OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), false), " \
	"p.lease_expires, " \
	"COALESCE(p.retry_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), false), " \
	"p.retry_at, f.paused, " holds " FROM projection.feed_partitions p " \
	"JOIN projection.feeds f ON f.id OPERATOR(pg_catalog.=) p.feed_id " from \
	"WHERE p.feed_id OPERATOR(pg_catalog.=) $1 " \
	"AND ($2 OPERATOR(pg_catalog.<) 0 OR p.partition OPERATOR(pg_catalog.=) $2) " \
	"ORDER BY p.position, p.partition"
	projection_feed_run(row->park_stream ?
						FEED_PARTITIONS_SQL("h.held, h.replay",
											"CROSS JOIN LATERAL (SELECT pg_catalog.array_agg(h.stream_id) AS held, "
											"pg_catalog.min(h.stream_id) FILTER (WHERE h.released_at IS NOT NULL) AS replay "
											"FROM projection.feed_holds h WHERE h.feed_id OPERATOR(pg_catalog.=) p.feed_id "
											"AND h.partition OPERATOR(pg_catalog.=) p.partition) h ") :
						FEED_PARTITIONS_SQL("NULL::text[], NULL::text", ""),
						2, types, values, NULL, true, SPI_OK_SELECT);
#undef FEED_PARTITIONS_SQL
	/* a feed has at least one partition, and the given one exists (checked) */
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feed \"%s\" was dropped while polling", row->name)));

	*next_expiry = 0;
	parts = palloc(sizeof(FeedPartition) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		parts[i].partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		parts[i].position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		parts[i].epoch = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		parts[i].leased = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		parts[i].expires = isnull ? 0 : DatumGetTimestampTz(d);
		parts[i].backing_off = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		d = SPI_getbinval(tup, desc, 7, &isnull);
		parts[i].retry_at = isnull ? 0 : DatumGetTimestampTz(d);
		row->paused = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		d = SPI_getbinval(tup, desc, 9, &isnull);
		parts[i].held = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
		parts[i].replay = SPI_getvalue(tup, desc, 10);
		if (ack != NULL && !ack->written && parts[i].partition == ack->partition)
		{
			if (parts[i].epoch != ack->epoch)
				elog(ERROR, "the acked partition %d of feed \"%s\" changed under its lock",
					 ack->partition, row->name);
			moved = parts[i].position != ack->position;
			parts[i].position = ack->position;
			parts[i].epoch = ack->epoch + 1;
			parts[i].leased = false;
			parts[i].expires = 0;
			parts[i].backing_off = false;
			parts[i].retry_at = 0;
		}
		if (parts[i].leased && (*next_expiry == 0 || parts[i].expires < *next_expiry))
			*next_expiry = parts[i].expires;
		if (parts[i].backing_off && (*next_expiry == 0 || parts[i].retry_at < *next_expiry))
			*next_expiry = parts[i].retry_at;
	}
	*count = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	if (moved && *count > 1)
		qsort(parts, *count, sizeof(FeedPartition), feed_partition_cmp);
	return parts;
}

/* what one look at the feed found */
typedef enum FeedLook
{
	FEED_LOOK_GOT,				/* leased a partition, its events in batch->store */
	FEED_LOOK_EMPTY,			/* nothing to hand out now */
	FEED_LOOK_RACE				/* lost a lease to a concurrent poll: look again */
} FeedLook;

/*
 * One look: horizon, partitions, events, lease (steps 1-3 of the file
 * header).  The events of a candidate go straight into a new tuplestore of
 * poll's result type (in the query's memory, as InitMaterializedSRF makes
 * them); it becomes batch->store if the lease is taken, and is freed
 * otherwise.  With a given partition whose lease is held, raises
 * OBJECT_IN_USE.  Sets *next_expiry for the long-poll's sleep.
 */
static FeedLook
feed_look(ProjectionFeedRow *row, int partition, int64 after, int max_events, Size max_bytes,
		  Interval *lease, ProjectionFeedAck *ack, ReturnSetInfo *rsinfo,
		  ProjectionFeedBatch *batch, TimestampTz *next_expiry)
{
	int64		horizon;
	FeedPartition *parts;
	int			nparts;
	int			i;
	FeedLook	result = FEED_LOOK_EMPTY;
	char	   *token;
	MemoryContext oldcxt;
	bool		random_access = (rsinfo->allowedModes & SFRM_Materialize_Random) != 0;

	*next_expiry = 0;
	horizon = projection_feed_horizon();
	{
		parts = feed_read_partitions(row, partition, ack, &nparts, next_expiry);
		if (partition >= 0 && nparts == 1 && parts[0].leased)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("partition %d of feed \"%s\" is leased", partition, row->name),
					 errdetail("The lease ends at %s.", timestamptz_to_str(parts[0].expires)),
					 errhint("Ack the events of the lease first, or poll another partition.")));
		for (i = 0; i < nparts && !row->paused; i++)
		{
			FeedPartition *p = &parts[i];

			/* a released stream's held events come first, up to the checkpoint (feedpark.c) */
			if (p->replay == NULL && after >= 0)
				p->position = after;	/* the client's checkpoint */
			if (p->leased || p->backing_off || (p->replay == NULL && p->position >= horizon))
				continue;
			token = projection_feed_new_token(row, p->partition, p->epoch);
			oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			batch->store = tuplestore_begin_heap(random_access, false, work_mem);
			MemoryContextSwitchTo(oldcxt);
			if (p->replay != NULL)
				projection_feed_read_events(row, p->partition,
											projection_feed_hold_replayed_to(row, p->partition, p->replay),
											p->position,
											max_events, max_bytes, p->replay, (Datum) 0,
											cstring_to_text(token), rsinfo->setDesc, batch);
			else
				projection_feed_read_events(row, p->partition, p->position, horizon, max_events,
											max_bytes, NULL, p->held, cstring_to_text(token),
											rsinfo->setDesc, batch);
			if (batch->ntuples == 0)
			{
				tuplestore_end(batch->store);
				batch->store = NULL;
				if (p->replay == NULL)
					continue;
				/*
				 * Every held event is acked: the stream goes on with the
				 * partition.  If this poll's own ack ended the partition's
				 * lease, it is written first: the hold's check reads the
				 * partition's row, which has it only then (p->epoch is the
				 * epoch the ack leaves).
				 */
				if (ack != NULL && !ack->written && ack->partition == p->partition)
					projection_feed_ack_write(row, ack);
				(void) projection_feed_hold_done(row, p->partition, p->replay, p->epoch);
				result = FEED_LOOK_RACE;
				break;
			}
			if (projection_feed_take_lease(row, p->partition, p->epoch, token, lease, batch->last,
										   p->replay != NULL ? -1 : after, ack))
			{
				if (p->replay != NULL)
					projection_feed_hold_lease(row, p->partition, p->replay, token);
				result = FEED_LOOK_GOT;
			}
			else
			{
				tuplestore_end(batch->store);
				batch->store = NULL;
				result = FEED_LOOK_RACE;
			}
			break;
		}
	}
	PopActiveSnapshot();
	return result;
}

/*
 * poll(feed, max_events, wait, lease, partition, max_bytes, after): lease
 * one partition (the given one, or any free one with events) and return its
 * next events after its checkpoint, in position order, up to the safe
 * horizon, each row with the lease token and the partition.  With after
 * (1.4, the client-owned checkpoint: a consumer that stores its position
 * with its own writes), the events after that position instead, and the
 * lease moves the partition's checkpoint there; after needs a partition
 * unless the feed has one.  With ack (1.5), the previous poll's token:
 * that lease is acked (as ack(feed, token) does) in this poll's
 * transaction first, and the poll does not sleep.  Nothing to
 * return: no rows, no lease.  With wait, an empty poll sleeps until events
 * come or wait passes (see the file header).  Owner only; the owner must
 * still be allowed to read projection.events.
 */
/* poll's arguments, read and checked (poll_read_args) */
typedef struct PollArgs
{
	char	   *name;
	int32		max_events;
	int64		wait_ms;
	Interval   *lease;
	int32		partition;		/* -1: any */
	int64		after;			/* -1: the stored checkpoint */
	Size		max_bytes;
	char	   *ack;			/* the previous poll's token to ack, or NULL */
	ProjectionFeedAck ack_prepared;	/* that ack, checked, its row locked */
} PollArgs;

/* Read and check poll's arguments; nothing is read from the catalogs. */
static void
poll_read_args(FunctionCallInfo fcinfo, PollArgs *args)
{
	args->name = projection_text_arg(fcinfo, 0, "feed");
	args->partition = -1;
	args->after = -1;
	args->max_bytes = SIZE_MAX;
	args->ack = NULL;
	projection_require_arg(fcinfo, 1, "max_events");
	projection_require_arg(fcinfo, 2, "wait");
	projection_require_arg(fcinfo, 3, "lease");
	args->max_events = PG_GETARG_INT32(1);
	args->wait_ms = projection_feed_interval_ms(PG_GETARG_INTERVAL_P(2));
	args->lease = PG_GETARG_INTERVAL_P(3);
	if (args->max_events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be at least 1")));
	if (args->wait_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative")));
	if (projection_feed_interval_ms(args->lease) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be positive")));
	if (!PG_ARGISNULL(4))
	{
		args->partition = PG_GETARG_INT32(4);
		if (args->partition < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("partition must not be negative")));
	}
	if (!PG_ARGISNULL(5))
	{
		if (PG_GETARG_INT32(5) < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_bytes must be at least 1")));
		args->max_bytes = (Size) PG_GETARG_INT32(5);
	}
	/* after (1.4): the 1.3 signature has six arguments */
	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
	{
		args->after = PG_GETARG_INT64(6);
		if (args->after < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("after must not be negative"),
					 errhint("Pass the position of the last event the consumer stored, or 0 for the beginning.")));
	}
	/* ack (1.5): the 1.4 signature has seven arguments */
	if (PG_NARGS() > 7 && !PG_ARGISNULL(7))
		args->ack = text_to_cstring(PG_GETARG_TEXT_PP(7));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot poll a feed in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("The safe horizon needs a snapshot taken after the appending transactions are read."),
				 errhint("Run it in a READ COMMITTED transaction.")));
}

/*
 * Check the arguments against the feed: its owner's right to read the
 * events, the partition, and after (which picks partition 0 of a feed of
 * one partition).  Connected to SPI.
 */
static void
poll_check_feed(ProjectionFeedRow *row, PollArgs *args)
{
	projection_feed_check_events_privilege(row->owner,
								psprintf("The owner of feed \"%s\" needs the SELECT privilege on projection.events for polls.",
										 args->name));
	if (args->partition >= row->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("feed \"%s\" has no partition %d", args->name, args->partition),
				 errdetail("Its partitions are 0 to %d.", row->partitions - 1)));
	if (args->after >= 0 && args->partition < 0)
	{
		if (row->partitions > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("after needs a partition for feed \"%s\", which has %d partitions",
							args->name, row->partitions),
					 errdetail("A position kept by the consumer belongs to one partition."),
					 errhint("Pass the partition whose position it is (partition => ...).")));
		args->partition = 0;
	}
	if (args->after > projection_sequence_last_value())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("after %lld is past the last event", (long long) args->after),
				 errdetail("The last position drawn is %lld.", (long long) projection_sequence_last_value())));
}

/*
 * Look for events until a look leases a partition (true, the events in
 * *batch) or the wait passes (false).  Between looks, sleep on the
 * database's feed condition variable holding no snapshot where "release"
 * allows it (see the file header).
 */
static bool
poll_until(ProjectionFeedRow *row, PollArgs *args, bool release, ReturnSetInfo *rsinfo,
		   ProjectionFeedBatch *batch)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), args->wait_ms);
	ConditionVariable *cv = projection_feed_cv(MyDatabaseId);
	MemoryContext look_cxt;
	MemoryContext oldcxt;
	bool		found = false;

	/*
	 * Each look allocates (partitions, appenders): a long-poll woken by
	 * many commits of other partitions or types must not pile them up.  The
	 * events go into a tuplestore of their own (feed_look).
	 */
	look_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection poll",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		TimestampTz next_expiry;
		TimestampTz now;
		long		sleep_ms;
		FeedLook	look;

		if (args->wait_ms > 0)
			ConditionVariablePrepareToSleep(cv);
		MemoryContextReset(look_cxt);
		oldcxt = MemoryContextSwitchTo(look_cxt);
		look = feed_look(row, args->partition, args->after, args->max_events, args->max_bytes,
						 args->lease, args->ack != NULL ? &args->ack_prepared : NULL, rsinfo,
						 batch, &next_expiry);
		MemoryContextSwitchTo(oldcxt);
		if (look == FEED_LOOK_GOT)
		{
			found = true;
			break;
		}
		if (look == FEED_LOOK_RACE)
			continue;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		/* projection.naptime is the safety net, as for the worker */
		sleep_ms = (long) Min((deadline - now) / 1000, projection_naptime);
		if (next_expiry != 0 && next_expiry > now)
			sleep_ms = Min(sleep_ms, (long) ((next_expiry - now) / 1000) + 1);
		/* sleep holding no snapshot (every look uses a new one) */
		if (release)
		{
			InvalidateCatalogSnapshot();
			MyProc->xmin = InvalidTransactionId;
		}
		(void) ConditionVariableTimedSleep(cv, Max(sleep_ms, 1), PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		/* the next look sees whether the feed was paused, resumed or dropped */
	}
	if (args->wait_ms > 0)
		ConditionVariableCancelSleep();
	return found;
}

Datum
projection_poll(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt = CurrentMemoryContext;
	PollArgs	args;
	ProjectionFeedRow *row;
	bool		release;
	/* read before the ack this poll may carry: the ack is the poll's own write */
	bool		wrote_before = TransactionIdIsValid(GetTopTransactionIdIfAny());
	ProjectionFeedBatch batch;
	bool		found;

	poll_read_args(fcinfo, &args);
	projection_feed_require_preloaded("poll a feed");
	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(args.name, false, cxt);
	poll_check_feed(row, &args);

	release = feed_may_release_snapshot(fcinfo);
	if (args.ack != NULL)
	{
		/*
		 * The ack carried by this poll (1.5): the previous lease ends here,
		 * in this transaction, before the look, which sees its partition as
		 * the ack leaves it.  Since 1.7 the ack is checked and its row
		 * locked first, and written by the UPDATE of the poll's lease when
		 * the look leases the same partition, on its own after the look
		 * otherwise (feed_read_partitions, feedlease.c); a released
		 * stream's replayed_to moves at once (the command counter moves, so
		 * the look sees it).  The poll then must not sleep, or the ack
		 * would stay uncommitted and its row locked for the whole wait: it
		 * looks once, and the consumer's next poll (without an ack) waits.
		 */
		projection_feed_ack_prepare(row, args.ack, false, 0, &args.ack_prepared);
		CommandCounterIncrement();
		args.wait_ms = 0;
	}
	found = poll_until(row, &args, release, rsinfo, &batch);
	if (args.ack != NULL && !args.ack_prepared.written)
		projection_feed_ack_write(row, &args.ack_prepared);	/* not the partition leased */
	if (found)
	{
		/* the look's tuplestore is the result (InitMaterializedSRF's is empty) */
		tuplestore_end(rsinfo->setResult);
		rsinfo->setResult = batch.store;
		projection_feed_lease_commit_async(release, wrote_before);
	}
	else if (args.ack != NULL)
		projection_feed_lease_commit_async(release, wrote_before);	/* the ack is the only write */
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return (Datum) 0;
}
