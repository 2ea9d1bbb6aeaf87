/*-------------------------------------------------------------------------
 *
 * horizon.c
 *	  The safe horizon: how far an async reader may apply events without
 *	  ever skipping one that commits later.  The writer side (what an
 *	  appending transaction publishes) and the reader side.
 *
 * Ordering rules of the writer side (the readers rely on them):
 *
 * 1. Xid first.  Before an appending transaction draws its first position,
 *    it takes its top-level xid and publishes it in its own entry of
 *    ProjectionAppenders (then a full memory barrier); only then does it call
 *    nextval on projection.events_global_position_seq (CACHE 1).  After the
 *    draw it publishes the lowest position it holds (min_pos).  So any
 *    transaction holding a position <= L, where L is a last_value read by a
 *    worker, was visible in ProjectionAppenders when the worker looked after
 *    reading L, unless it had already ended.
 *
 * 2. The entry is cleared in the COMMIT/ABORT transaction callbacks, which
 *    run after ProcArrayEndTransaction(): once a worker sees it cleared, a
 *    snapshot taken afterwards sees the transaction's commit.  Those callbacks
 *    must not fail: they only store to shared memory and set latches.
 *
 * 3. A transaction that appended cannot be prepared (two-phase commit): its
 *    entry would be cleared at PREPARE while it could still commit (xact.c
 *    refuses it).
 *
 * 4. Rolled-back subtransactions.  Positions are tracked per subtransaction
 *    (events.c, AppendLevel).  When one aborts, its positions are dead for
 *    good (no snapshot ever sees its rows), so min_pos is raised to the
 *    lowest position that survives, or the entry is cleared if none does: a
 *    transaction whose appends all rolled back holds no projection back
 *    while it stays open.  A later append publishes the xid again (rule 1).
 *    projection_appender_forget() gives the argument in full.
 *
 * The reader side (the async worker, a rebuild, and any reader that must
 * not skip an event committed later).  Which events are safe to apply:
 *	1. read L, the sequence's last_value;
 *	2. then read W, the appending transactions of this database published in
 *	   ProjectionAppenders, with the lowest position each holds (rule 1: an
 *	   appender publishes its xid before drawing a position);
 *	3. then take the snapshot S the events are read with
 * (projection_horizon_read does the three, in this order).  Every position
 * <= L was drawn by a transaction that is in W or had ended before step 2
 * (then S sees its commit, rule 2), or in a subtransaction that had rolled
 * back (then its row is dead, rule 4).  Events are applied in order while
 * positions are contiguous (the walk, projection_horizon_walk_*).  A
 * missing position g <= L is dead (rolled back) unless some member of W
 * that S still sees running could hold it, that is, its lowest position is
 * unknown or <= g; so every gap at or below the gap bound
 * min(L, min_pos - 1 of every member of W running in S) is dead
 * (projection_gap_bound), and the walk stops at the first gap above it.
 * The reader then waits for that transaction, which wakes it at its commit
 * or abort (xact.c).  No time-out, and transactions that appended nothing
 * are never waited for.  A reader that needs the bound itself (a rebuild)
 * reads again while an appender is caught between publishing its xid and
 * drawing its position (projection_horizon_read_settled).
 *
 * Events inserted without the position trigger (session_replication_role =
 * replica, logical replication) have positions the sequence never handed
 * out, above L: readers never apply them (events.c warns about them).
 *
 * This argument is stated here only; the other files point here.
 *
 * Locking: none.  Each backend writes only its own entry of
 * ProjectionAppenders (shmem.c), with atomics and the barriers named above;
 * readers read every entry without a lock.
 *
 * IDENTIFICATION
 *	  src/horizon.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "horizon.h"
#include "projection.h"
#include "shmem.h"

static bool appended_in_xact = false;	/* our appender entry is published */

static void
appender_clear(void)
{
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		pg_atomic_write_u32(&a->xid, InvalidTransactionId);
		pg_atomic_write_u64(&a->min_pos, 0);
		pg_memory_barrier();
	}
}

/*
 * First append of the transaction (or the first since every earlier one was
 * rolled back): take the xid and publish it before any position is drawn
 * (rule 1).
 */
void
projection_appender_begin(void)
{
	TransactionId xid;

	if (appended_in_xact)
		return;
	xid = GetTopTransactionId();
	appended_in_xact = true;
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		pg_atomic_write_u64(&a->min_pos, 0);
		pg_atomic_write_u32(&a->dboid, MyDatabaseId);
		pg_write_barrier();
		pg_atomic_write_u32(&a->xid, xid);
		pg_memory_barrier();
	}
}

/* Publish the lowest position this transaction holds. */
void
projection_appender_note_position(int64 position)
{
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];
		uint64		cur = pg_atomic_read_u64(&a->min_pos);

		if (cur == 0 || (uint64) position < cur)
		{
			pg_atomic_write_u64(&a->min_pos, (uint64) position);
			pg_write_barrier();
		}
	}
}

/*
 * A subtransaction that drew positions has aborted: its positions are dead.
 * Publish min_pos, the lowest position the transaction still holds (events.c
 * keeps them per subtransaction), or clear our entry if it holds none (0), so that a transaction whose appends were all
 * rolled back holds back no projection while it stays open.
 *
 * Why this is safe for a worker (the reader side above): a
 * position the aborted subtransaction drew belongs to a row whose xmin is
 * that subtransaction (or one of its children), which no snapshot taken
 * before or after now will ever see: the worker may treat it as dead, as it
 * treats the positions of an aborted transaction.  A worker that read the
 * old, lower value (or the xid just before we cleared it) only stops
 * earlier, which is conservative; one that reads the value between the two
 * stores of appender_clear sees a published xid with no position yet, which
 * lets no gap pass.  Every surviving position is still covered: it is at
 * least the new value.  If the transaction appends again, projection_appender_begin
 * publishes the xid again before it draws (rule 1 holds anew).  A worker
 * that saw no entry between the two can only have read an L below the new
 * position, drawn after the xid was published again.
 *
 * Called from the subtransaction callback: plain shared-memory stores and
 * SetLatch only.
 */
void
projection_appender_forget(int64 min_pos)
{
	if (!appended_in_xact)
		return;
	if (min_pos == 0)
	{
		appender_clear();
		appended_in_xact = false;
		/* a worker may be waiting for our positions: they are dead now */
		projection_wake_database_worker(MyDatabaseId);
		projection_feed_wake(MyDatabaseId);
	}
	else if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
			 MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		if (pg_atomic_read_u64(&a->min_pos) < (uint64) min_pos)
		{
			pg_atomic_write_u64(&a->min_pos, (uint64) min_pos);
			pg_memory_barrier();
			projection_wake_database_worker(MyDatabaseId);
			projection_feed_wake(MyDatabaseId);
		}
	}
}

/* Has this transaction published an appender entry (PREPARE refuses it)? */
bool
projection_appended_in_xact(void)
{
	return appended_in_xact;
}

/*
 * Has this transaction a published appender entry?  If so, *min_pos gets
 * the lowest position it holds, as published (0: none drawn yet).  For
 * readers inside an appending transaction (wait()): no reader applies this
 * transaction's events before it ends, so they are not to be waited for.
 */
bool
projection_appender_own(int64 *min_pos)
{
	if (!appended_in_xact || ProjectionAppenders == NULL || MyBackendId == InvalidBackendId ||
		MyBackendId > ProjectionNumAppenders)
		return false;
	*min_pos = (int64) pg_atomic_read_u64(&ProjectionAppenders[MyBackendId - 1].min_pos);
	return true;
}

/*
 * Transaction end (commit or abort, from xact.c), after the transaction has
 * left the proc array (rule 2): clear our entry and wake the worker, which
 * may be waiting for our positions.  Plain shared-memory stores and SetLatch
 * only.  At PREPARE there is nothing to clear: PREPARE refuses a
 * transaction that appended (rule 3).
 */
void
projection_appender_at_eoxact(void)
{
	if (appended_in_xact)
	{
		appender_clear();
		projection_wake_database_worker(MyDatabaseId);
		projection_feed_wake(MyDatabaseId);
	}
	appended_in_xact = false;
}

/* ---------------------------------------------------------------------
 * The reader side
 * ---------------------------------------------------------------------
 */

/*
 * Read the sequence's last_value without raising on a fresh sequence, as
 * the bootstrap superuser (callers need no right on the sequence).
 */
int64
projection_sequence_last_value(void)
{
	Datum		last;
	Oid			save_userid;
	int			save_sec_context;

	LOCAL_FCINFO(lfc, 1);

	InitFunctionCallInfoData(*lfc, NULL, 1, InvalidOid, NULL, NULL);
	lfc->args[0].value = ObjectIdGetDatum(projection_oids()->sequence);
	lfc->args[0].isnull = false;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	last = pg_sequence_last_value(lfc);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return lfc->isnull ? 0 : DatumGetInt64(last);
}

/*
 * The appending transactions of one database, right now (step 2: call
 * after reading the sequence's last_value, before taking the snapshot).
 * Reads without locks; the barriers pair with those of the writer side
 * above.  Result palloc'd.
 */
ProjectionAppenderSeen *
projection_read_appenders(Oid dboid, int *count)
{
	ProjectionAppenderSeen *result = palloc(sizeof(ProjectionAppenderSeen) * Max(ProjectionNumAppenders, 1));
	int			n = 0;
	int			i;

	pg_memory_barrier();
	for (i = 0; i < ProjectionNumAppenders; i++)
	{
		ProjectionAppender *a = &ProjectionAppenders[i];
		TransactionId xid = pg_atomic_read_u32(&a->xid);

		if (!TransactionIdIsValid(xid))
			continue;
		pg_read_barrier();
		if (pg_atomic_read_u32(&a->dboid) != dboid)
			continue;
		result[n].xid = xid;
		result[n].min_pos = pg_atomic_read_u64(&a->min_pos);
		n++;
	}
	*count = n;
	return result;
}

/*
 * The highest position below which every missing position is dead: min(L,
 * lowest position - 1 of every appender still running in the snapshot).
 * An appender whose lowest position is not yet known blocks every gap.
 */
int64
projection_gap_bound(int64 last_value, ProjectionAppenderSeen *appenders, int nappenders, Snapshot snapshot)
{
	int64		bound = last_value;
	int			i;

	for (i = 0; i < nappenders; i++)
	{
		if (!XidInMVCCSnapshot(appenders[i].xid, snapshot))
			continue;			/* ended before the snapshot: its rows are visible or dead */
		if (appenders[i].min_pos == 0)
			return 0;
		bound = Min(bound, (int64) appenders[i].min_pos - 1);
	}
	return bound;
}

/*
 * Is an appender still running in the snapshot without a position yet?  It
 * is between publishing its xid and drawing from the sequence, a matter of
 * microseconds, and meanwhile projection_gap_bound() lets no gap pass.  A
 * caller that needs the bound itself (a rebuild stops there) takes a new
 * snapshot and asks again.
 */
bool
projection_appender_pending(ProjectionAppenderSeen *appenders, int nappenders, Snapshot snapshot)
{
	int			i;

	for (i = 0; i < nappenders; i++)
		if (appenders[i].min_pos == 0 && XidInMVCCSnapshot(appenders[i].xid, snapshot))
			return true;
	return false;
}

/*
 * Steps 1 to 3, in this order: L, then W, then the snapshot S, pushed as the
 * active snapshot (the caller pops it).  Call in a transaction; h->appenders
 * is palloc'd in the current context.
 */
void
projection_horizon_read(ProjectionHorizon *h, Oid dboid)
{
	h->last_value = projection_sequence_last_value();	/* step 1 */
	h->appenders = projection_read_appenders(dboid, &h->nappenders);	/* step 2 */
	PushActiveSnapshot(GetTransactionSnapshot());	/* step 3 */
}

/*
 * The same, for a reader that needs the gap bound itself (a rebuild stops
 * there): read again, after a short sleep, while an appender is caught
 * between publishing its xid and drawing its position (which would hold the
 * bound at 0).  That lasts microseconds.
 */
void
projection_horizon_read_settled(ProjectionHorizon *h, Oid dboid)
{
	for (;;)
	{
		projection_horizon_read(h, dboid);
		if (!projection_appender_pending(h->appenders, h->nappenders, GetActiveSnapshot()))
			break;
		PopActiveSnapshot();
		pg_usleep(1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

/* The gap bound of h, with its snapshot (the active one). */
int64
projection_horizon_gap_bound(const ProjectionHorizon *h)
{
	return projection_gap_bound(h->last_value, h->appenders, h->nappenders, GetActiveSnapshot());
}

/*
 * The contiguous walk.  Walk the positions read (in order, all above
 * "from"): contiguous positions are always safe; a gap is safe to pass only
 * if it lies at or below gap_bound.  projection_horizon_walk_step() returns
 * false at the first position the reader may not pass (walk->reached is
 * then the position every event before it reaches); once every position is
 * passed, projection_horizon_walk_end() gives the position reached: the
 * last one read if the read stopped at a bound ("full": more may follow),
 * else up to min(L, gap bound).
 */
void
projection_horizon_walk_begin(ProjectionHorizonWalk *walk, int64 from, int64 gap_bound)
{
	walk->expected = from + 1;
	walk->gap_bound = gap_bound;
	walk->reached = from;
}

bool
projection_horizon_walk_step(ProjectionHorizonWalk *walk, int64 position)
{
	if (position > walk->expected && position - 1 > walk->gap_bound)
	{
		walk->reached = walk->expected - 1;
		return false;
	}
	walk->expected = position + 1;
	walk->reached = position;
	return true;
}

int64
projection_horizon_walk_end(ProjectionHorizonWalk *walk, bool full, int64 last_value)
{
	if (full)
		return walk->expected - 1;	/* more may follow: stop at the last one */
	return Max(walk->expected - 1, Min(last_value, walk->gap_bound));
}
