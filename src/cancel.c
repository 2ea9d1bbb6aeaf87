/*-------------------------------------------------------------------------
 *
 * cancel.c
 *	  Cancel requests: a management call (pause, drop, resume, rebuild, on,
 *	  DROP EXTENSION ...) must not wait behind a worker's batch, whatever
 *	  its handlers do.
 *
 * Locking rules: a worker publishes batch_xid in its pool slot while it
 * applies a batch (between locking its projections' rows and committing),
 * under ProjectionShared->lock.  A backend that finds a registry row locked
 * by that xid sets cancel_requested and sends SIGINT while holding ->lock
 * exclusively, so the worker, which clears batch_xid under the same lock
 * before it commits, either sees the cancel inside the batch or is never
 * sent one.  ProjectionHolds[] (shmem.c allocates it; one entry per
 * backend, written only by its backend with atomic stores, read by workers
 * without a lock) name the projections (or databases) that such a backend
 * is waiting for; workers leave them out of their rounds.  Nothing here is
 * held across anything that can raise an error.
 *
 * IDENTIFICATION
 *	  src/cancel.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/procarray.h"
#include "utils/array.h"

#include "cancel.h"
#include "projection.h"
#include "shmem.h"

static bool hold_exit_registered = false;

/* ---------------------------------------------------------------------
 * Cancel requests: a management call must not wait behind a worker's
 * batch, whatever its handlers do (a handler may sleep for minutes).
 *
 * The backend side: projection_hold() names the projection (or, with 0,
 * the whole database) the backend waits for; projection_cancel_batch()
 * cancels the worker batch that holds a row.  The worker side:
 * projection_worker_batch_begin/end() bracket the part of a round that
 * holds row locks, and projection_worker_batch_aborted() tells the error
 * path whether the round ended because we asked.  Outside a batch the
 * worker holds cancel interrupts (QueryCancelHoldoffCount), so a cancel that
 * arrives late never interrupts anything but a batch, as postgres.c ignores
 * a cancel that arrives while it reads a command.
 * ---------------------------------------------------------------------
 */

static void
hold_at_exit(int code, Datum arg)
{
	projection_release_hold();
	projection_release_database_hold();
}

/*
 * Ask this database's workers to leave a projection alone until
 * projection_release_hold(), or (projection_id 0) every projection until
 * projection_release_database_hold().  The two holds of a backend are
 * independent.  Cannot fail once registered.
 */
void
projection_hold(Oid dboid, int32 projection_id)
{
	ProjectionHold *h;

	if (ProjectionHolds == NULL || MyBackendId == InvalidBackendId ||
		MyBackendId > ProjectionNumAppenders)
		return;
	if (!hold_exit_registered)
	{
		before_shmem_exit(hold_at_exit, (Datum) 0);
		hold_exit_registered = true;
	}
	h = &ProjectionHolds[MyBackendId - 1];
	if (projection_id == 0)
	{
		pg_atomic_write_u32(&h->database, dboid);
		pg_memory_barrier();
		return;
	}
	pg_atomic_write_u32(&h->projection_id, (uint32) projection_id);
	pg_write_barrier();
	pg_atomic_write_u32(&h->dboid, dboid);
	pg_memory_barrier();
}

void
projection_release_hold(void)
{
	if (ProjectionHolds == NULL || MyBackendId == InvalidBackendId ||
		MyBackendId > ProjectionNumAppenders)
		return;
	pg_atomic_write_u32(&ProjectionHolds[MyBackendId - 1].dboid, InvalidOid);
	pg_memory_barrier();
}

/* Release this backend's database hold (DROP EXTENSION's transaction ended) */
void
projection_release_database_hold(void)
{
	if (ProjectionHolds == NULL || MyBackendId == InvalidBackendId ||
		MyBackendId > ProjectionNumAppenders)
		return;
	pg_atomic_write_u32(&ProjectionHolds[MyBackendId - 1].database, InvalidOid);
	pg_memory_barrier();
}

/*
 * The projections of a database that management calls wait for, as an
 * int4[] datum (palloc'd) for the worker's lock query.  Lock-free: a torn
 * read only leaves a projection out of one round.
 */
Datum
projection_held_projections(Oid dboid)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(ProjectionNumAppenders, 1));
	int			n = 0;
	int			i;

	pg_memory_barrier();
	for (i = 0; ProjectionHolds != NULL && i < ProjectionNumAppenders; i++)
	{
		ProjectionHold *h = &ProjectionHolds[i];
		uint32		id;

		if (pg_atomic_read_u32(&h->dboid) != dboid)
			continue;
		pg_read_barrier();
		id = pg_atomic_read_u32(&h->projection_id);
		if (id != 0)
			elems[n++] = Int32GetDatum((int32) id);
	}
	return PointerGetDatum(construct_array(elems, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

/* Is a DROP EXTENSION of this database waiting for its workers? */
bool
projection_database_held(Oid dboid)
{
	int			i;

	pg_memory_barrier();
	for (i = 0; ProjectionHolds != NULL && i < ProjectionNumAppenders; i++)
	{
		if (pg_atomic_read_u32(&ProjectionHolds[i].database) == dboid)
			return true;
	}
	return false;
}

/*
 * A registry row of this database is locked by transaction "xid": if that
 * is a worker's batch, cancel it (SIGINT, the statement-cancel path, which
 * also interrupts a handler in pg_sleep or a lock wait).  The signal is sent
 * under the lock exclusively; see the file header.
 */
ProjectionCancelResult
projection_cancel_batch(Oid dboid, TransactionId xid)
{
	ProjectionCancelResult result = PROJECTION_CANCEL_NOT_WORKER;
	int			holder;
	int			i;

	if (ProjectionShared == NULL || !TransactionIdIsValid(xid))
		return result;
	holder = BackendXidGetPid(xid);
	if (holder == 0)
		return result;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid != dboid || slot->pid != holder)
			continue;
		if (TransactionIdEquals(slot->batch_xid, xid))
		{
			slot->cancel_requested = true;
			(void) kill(slot->pid, SIGINT);
			result = PROJECTION_CANCEL_SENT;
		}
		else
			result = PROJECTION_CANCEL_NOT_YET;
		break;
	}
	LWLockRelease(ProjectionShared->lock);
	return result;
}

/*
 * Cancel the batch of every worker of a database (DROP EXTENSION).  Returns
 * how many workers are still in a batch (cancelled now or before).
 */
int
projection_cancel_database_batches(Oid dboid)
{
	int			busy = 0;
	int			i;

	if (ProjectionShared == NULL)
		return 0;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid != dboid || slot->pid <= 0 || !TransactionIdIsValid(slot->batch_xid))
			continue;
		busy++;
		if (!slot->cancel_requested)
		{
			slot->cancel_requested = true;
			(void) kill(slot->pid, SIGINT);
		}
	}
	LWLockRelease(ProjectionShared->lock);
	return busy;
}

/* the worker holds cancel interrupts outside its batches (exactly once) */
static void
worker_hold_cancel(void)
{
	if (QueryCancelHoldoffCount == 0)
		HOLD_CANCEL_INTERRUPTS();
}

/*
 * Worker: the round's rows are locked (its xid, if any, assigned); from here
 * to projection_worker_batch_end() a management call may cancel it.  A
 * cancel still pending from before (a late signal) is dropped.
 */
void
projection_worker_batch_begin(Oid dboid, int index)
{
	ProjectionDbSlot *slot;

	QueryCancelPending = false;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(dboid, index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		slot->batch_xid = GetTopTransactionIdIfAny();
		slot->cancel_requested = false;
	}
	LWLockRelease(ProjectionShared->lock);
	if (QueryCancelHoldoffCount > 0)
		RESUME_CANCEL_INTERRUPTS();
}

/*
 * Worker, before committing a batch: no cancel can be sent any more; one
 * sent before raises its error here, inside the batch, which then rolls
 * back like any cancelled batch.
 */
void
projection_worker_batch_end(Oid dboid, int index)
{
	ProjectionDbSlot *slot;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(dboid, index);
	if (slot != NULL && slot->pid == MyProcPid)
		slot->batch_xid = InvalidTransactionId;
	LWLockRelease(ProjectionShared->lock);
	CHECK_FOR_INTERRUPTS();
	worker_hold_cancel();
}

/*
 * Worker, after a round ended in an error and its transaction was aborted:
 * was this a cancel a management call requested?  Then it is no handler's
 * fault: the caller retries at once (the held projection is left out), and
 * counts no failure.  Whatever the error was, a requested cancel's signal is
 * absorbed here, so it cannot hit the next batch.  Cannot fail.
 */
bool
projection_worker_batch_aborted(Oid dboid, int index)
{
	ProjectionDbSlot *slot;
	bool		requested = false;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(dboid, index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		requested = slot->cancel_requested;
		slot->cancel_requested = false;
		slot->batch_xid = InvalidTransactionId;
	}
	LWLockRelease(ProjectionShared->lock);
	if (requested)
		QueryCancelPending = false;
	worker_hold_cancel();
	return requested;
}
