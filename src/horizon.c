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
 * The reader side is described in worker.c ("Which events are safe").
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

#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/backendid.h"

#include "horizon.h"
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
 * Why this is safe for a worker (worker.c, "Which events are safe"): a
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
	}
	appended_in_xact = false;
}
