/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory of the projection extension.
 *
 * What lives here and who may touch it:
 *
 * - ProjectionAppenders[MaxBackends]: each backend writes only its own entry
 *   (MyBackendId - 1), with plain atomic stores and memory barriers, from the
 *   position trigger and from its (sub)transaction callbacks; workers read
 *   every entry without a lock.  trigger.c and worker.c state the ordering
 *   rules.
 *
 * - ProjectionShared->dbslots[]: per-database worker slots.  Read and written
 *   only while holding ProjectionShared->lock (exclusive to write, shared to
 *   read), except launcher_pgprocno and a slot's pgprocno, which committing
 *   backends read without the lock to set a latch: a stale value only causes
 *   a spurious wake-up, which latches tolerate.
 *
 * - The progress hash (ProjectionProgressHash): per-projection checkpoints
 *   published after commit by workers, read by projection.wait() and the
 *   status view.  Protected by ProjectionShared->lock.  Waiters sleep on
 *   progress_cvs[dboid % PROJECTION_REGISTRY_GEN_SLOTS], so a worker's
 *   commit wakes the waiters of its own database (and of the few databases
 *   sharing the slot), not every waiter of the cluster.
 *
 * - Cancel requests (management calls against a slow batch): a worker
 *   publishes batch_xid in its slot while it applies a batch (between
 *   locking its projections' rows and committing), under ->lock.  A backend
 *   that finds a registry row locked by that xid sets cancel_requested and
 *   sends SIGINT while holding ->lock exclusively, so the worker, which
 *   clears batch_xid under the same lock before it commits, either sees the
 *   cancel inside the batch or is never sent one.  ProjectionHolds[] (one
 *   entry per backend, lock-free) name the projections (or databases) that
 *   such a backend is waiting for; workers leave them out of their rounds.
 *
 * Nothing here is held across anything that can raise an error.
 *
 * IDENTIFICATION
 *	  src/shmem.c
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
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"

#include "projection.h"
#include "shmem.h"

ProjectionSharedState *ProjectionShared = NULL;
ProjectionAppender *ProjectionAppenders = NULL;
int			ProjectionNumAppenders = 0;
static ProjectionHold *ProjectionHolds = NULL;
static bool hold_exit_registered = false;
static HTAB *ProjectionProgressHash = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shmem_state_size(void)
{
	return add_size(offsetof(ProjectionSharedState, dbslots),
					mul_size(sizeof(ProjectionDbSlot), projection_max_workers));
}

static Size
shmem_appenders_size(void)
{
	return mul_size(sizeof(ProjectionAppender), MaxBackends);
}

static Size
shmem_holds_size(void)
{
	return mul_size(sizeof(ProjectionHold), MaxBackends);
}

/*
 * shmem_request_hook: reserve our space and LWLock tranche.  MaxBackends is
 * known here (PostgreSQL 15).
 */
static void
projection_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(shmem_state_size());
	RequestAddinShmemSpace(shmem_appenders_size());
	RequestAddinShmemSpace(shmem_holds_size());
	RequestAddinShmemSpace(hash_estimate_size(projection_max_projections,
											  sizeof(ProjectionProgress)));
	RequestNamedLWLockTranche("projection", 1);
}

/*
 * shmem_startup_hook: attach to (or create and initialise) our state, under
 * AddinShmemInitLock.
 */
static void
projection_shmem_startup(void)
{
	bool		found;
	bool		found_appenders;
	bool		found_holds;
	HASHCTL		info;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	ProjectionShared = ShmemInitStruct("projection", shmem_state_size(), &found);
	ProjectionAppenders = ShmemInitStruct("projection appenders",
										  shmem_appenders_size(), &found_appenders);
	ProjectionNumAppenders = MaxBackends;
	ProjectionHolds = ShmemInitStruct("projection holds", shmem_holds_size(), &found_holds);

	if (!found)
	{
		ProjectionShared->lock = &(GetNamedLWLockTranche("projection"))->lock;
		pg_atomic_init_u32(&ProjectionShared->rescan, 0);
		pg_atomic_init_u32(&ProjectionShared->rescan_gen, 0);
		for (i = 0; i < PROJECTION_REGISTRY_GEN_SLOTS; i++)
		{
			pg_atomic_init_u64(&ProjectionShared->registry_gens[i].gen, 1);
			pg_atomic_init_u32(&ProjectionShared->registry_gens[i].changing, 0);
		}
		ProjectionShared->launcher_pgprocno = -1;
		ProjectionShared->launcher_pid = 0;
		for (i = 0; i < PROJECTION_REGISTRY_GEN_SLOTS; i++)
			ConditionVariableInit(&ProjectionShared->progress_cvs[i]);
		for (i = 0; i < PROJECTION_REGISTRY_GEN_SLOTS; i++)
			ConditionVariableInit(&ProjectionShared->feed_cvs[i]);
		ProjectionShared->ndbslots = projection_max_workers;
		for (i = 0; i < projection_max_workers; i++)
		{
			ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

			memset(slot, 0, sizeof(ProjectionDbSlot));
			slot->dboid = InvalidOid;
			slot->pgprocno = -1;
			slot->batch_xid = InvalidTransactionId;
		}
	}
	if (!found_holds)
	{
		for (i = 0; i < MaxBackends; i++)
		{
			pg_atomic_init_u32(&ProjectionHolds[i].dboid, InvalidOid);
			pg_atomic_init_u32(&ProjectionHolds[i].projection_id, 0);
		}
	}
	if (!found_appenders)
	{
		for (i = 0; i < MaxBackends; i++)
		{
			pg_atomic_init_u32(&ProjectionAppenders[i].xid, InvalidTransactionId);
			pg_atomic_init_u32(&ProjectionAppenders[i].dboid, InvalidOid);
			pg_atomic_init_u64(&ProjectionAppenders[i].min_pos, 0);
		}
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ProjectionProgressKey);
	info.entrysize = sizeof(ProjectionProgress);
	ProjectionProgressHash = ShmemInitHash("projection progress",
										   projection_max_projections,
										   projection_max_projections,
										   &info, HASH_ELEM | HASH_BLOBS);

	LWLockRelease(AddinShmemInitLock);
}

void
projection_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = projection_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = projection_shmem_startup;
}

/*
 * Set a process's latch given its PGPROC number.  Safe to call without locks
 * and from commit callbacks: it cannot fail, and a stale number only wakes
 * an unrelated process once.
 */
static void
set_latch_by_procno(int procno)
{
	if (procno >= 0 && procno < (int) ProcGlobal->allProcCount)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

void
projection_wake_launcher(void)
{
	if (ProjectionShared == NULL)
		return;
	set_latch_by_procno(ProjectionShared->launcher_pgprocno);
}

/*
 * Registry generations.  A relcache invalidation alone is not enough to keep
 * a registry cache in step with the snapshots it is used with: a committing
 * transaction leaves the proc array before it sends its invalidations, so a
 * snapshot can already see a new projection (and its events) while the
 * cache still lacks it; and our commit callback wakes the worker in exactly
 * that window.  So a transaction that changed the registry calls
 * projection_registry_change_begin() before its commit becomes visible
 * (changing++, then gen++) and projection_registry_change_end() after
 * (gen++, then changing--).  A cache is loaded after reading gen and then
 * changing, before its snapshot; it is trusted only if changing was 0, and
 * only while gen stays the same, read after the snapshot it is used with.
 * If that snapshot sees a change the cache's does not, either the first
 * bump came after the cache's read of gen, or the change was still
 * "changing" when the cache was loaded.
 */
static ProjectionRegistryGen *
registry_gen_slot(Oid dboid)
{
	if (ProjectionShared == NULL)
		return NULL;
	return &ProjectionShared->registry_gens[dboid % PROJECTION_REGISTRY_GEN_SLOTS];
}

void
projection_registry_change_begin(Oid dboid)
{
	ProjectionRegistryGen *slot = registry_gen_slot(dboid);

	if (slot == NULL)
		return;
	pg_atomic_fetch_add_u32(&slot->changing, 1);
	pg_atomic_fetch_add_u64(&slot->gen, 1);
}

/* Called from commit and abort callbacks: no locks, no errors. */
void
projection_registry_change_end(Oid dboid)
{
	ProjectionRegistryGen *slot = registry_gen_slot(dboid);

	if (slot == NULL)
		return;
	pg_atomic_fetch_add_u64(&slot->gen, 1);
	pg_atomic_fetch_sub_u32(&slot->changing, 1);
}

/*
 * The database's registry generation in *gen.  Returns false if a registry
 * change is committing right now (a cache loaded now must not be trusted).
 * Without shared memory (not preloaded) the generation is always 0.
 */
bool
projection_registry_generation(Oid dboid, uint64 *gen)
{
	ProjectionRegistryGen *slot = registry_gen_slot(dboid);
	bool		stable;

	if (slot == NULL)
	{
		*gen = 0;
		return true;
	}
	pg_memory_barrier();
	*gen = pg_atomic_read_u64(&slot->gen);
	pg_memory_barrier();
	stable = pg_atomic_read_u32(&slot->changing) == 0;
	pg_memory_barrier();
	return stable;
}

/*
 * Wake every worker of a database.  Called from commit and abort callbacks:
 * no locks, no allocation, no errors.  A stale pgprocno only costs a
 * spurious wake-up.
 */
void
projection_wake_database_worker(Oid dboid)
{
	int			i;

	if (ProjectionShared == NULL)
		return;
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid == dboid)
			set_latch_by_procno(slot->pgprocno);
	}
}

/*
 * Find the slot of one of a database's workers (with InvalidOid: a free
 * slot); caller holds ProjectionShared->lock.
 */
ProjectionDbSlot *
projection_find_dbslot(Oid dboid, int index)
{
	int			i;

	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid == dboid && (!OidIsValid(dboid) || slot->index == index))
			return slot;
	}
	return NULL;
}

/*
 * The progress entry of a projection, created if missing (applied = -1,
 * nothing published yet).  Caller holds ProjectionShared->lock exclusively.
 * NULL if the hash is full (projection.max_projections): progress is then
 * simply not published.
 */
static ProjectionProgress *
progress_entry(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;
	ProjectionProgress *entry;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;
	entry = hash_search(ProjectionProgressHash, &key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		entry->applied = -1;
		entry->rebuild_done = 0;
		entry->rebuild_total = 0;
	}
	return entry;
}

/*
 * Publish a projection's committed checkpoint and wake every waiter.  Call
 * only after the checkpoint's transaction has committed.
 */
void
projection_publish_progress(Oid dboid, int32 projection_id, int64 applied)
{
	ProjectionProgress *entry;

	if (ProjectionShared == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	entry = progress_entry(dboid, projection_id);
	if (entry != NULL)
		entry->applied = applied;
	LWLockRelease(ProjectionShared->lock);

	ConditionVariableBroadcast(projection_progress_cv(dboid));
}

/* The condition variable projection.wait() sleeps on in a database. */
ConditionVariable *
projection_progress_cv(Oid dboid)
{
	return &ProjectionShared->progress_cvs[dboid % PROJECTION_REGISTRY_GEN_SLOTS];
}

/* The condition variable feed long-polls sleep on in a database (feed.c). */
ConditionVariable *
projection_feed_cv(Oid dboid)
{
	return &ProjectionShared->feed_cvs[dboid % PROJECTION_REGISTRY_GEN_SLOTS];
}

/*
 * Wake every feed long-poll of a database: called where appending
 * transactions end (commit, abort, a subtransaction abort that changes the
 * lowest position held) and by feed.c after commits that free partitions.
 * A broadcast cannot fail.
 */
void
projection_feed_wake(Oid dboid)
{
	if (ProjectionShared == NULL)
		return;
	ConditionVariableBroadcast(projection_feed_cv(dboid));
}

/*
 * A projection's published checkpoint, or -1 if none is published (or no
 * shared memory).  A cheap test for waiters woken by another projection's
 * commit: they look at the registry only when this (or the registry
 * generation) moved.
 */
int64
projection_progress_applied(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;
	ProjectionProgress *entry;
	int64		applied = -1;

	if (ProjectionShared == NULL)
		return -1;
	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	entry = hash_search(ProjectionProgressHash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		applied = entry->applied;
	LWLockRelease(ProjectionShared->lock);
	return applied;
}

/* Publish the progress of a running rebuild (0/0 when none runs). */
void
projection_publish_rebuild(Oid dboid, int32 projection_id, int64 done, int64 total)
{
	ProjectionProgress *entry;

	if (ProjectionShared == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	entry = progress_entry(dboid, projection_id);
	if (entry != NULL)
	{
		entry->rebuild_done = done;
		entry->rebuild_total = total;
	}
	LWLockRelease(ProjectionShared->lock);
}

/* Forget a dropped projection's entry, so that the hash does not fill up. */
void
projection_forget_progress(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;

	if (ProjectionShared == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	hash_search(ProjectionProgressHash, &key, HASH_REMOVE, NULL);
	LWLockRelease(ProjectionShared->lock);
}

/*
 * Emit (projection_id, applied, rebuild_done, rebuild_total) rows for one
 * database into a materialized SRF tuplestore.  Copies the entries under the
 * lock, then builds tuples without it.
 */
void
projection_progress_report(Oid dboid, Tuplestorestate *store, TupleDesc desc)
{
	HASH_SEQ_STATUS status;
	ProjectionProgress *entry;
	ProjectionProgress *copies;
	int			n = 0;
	int			i;

	copies = palloc(sizeof(ProjectionProgress) * projection_max_projections);
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	hash_seq_init(&status, ProjectionProgressHash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dboid == dboid && n < projection_max_projections)
			copies[n++] = *entry;
	}
	LWLockRelease(ProjectionShared->lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = Int32GetDatum(copies[i].key.projection_id);
		values[1] = Int64GetDatum(copies[i].applied);
		nulls[1] = copies[i].applied < 0;
		values[2] = Int64GetDatum(copies[i].rebuild_done);
		values[3] = Int64GetDatum(copies[i].rebuild_total);
		tuplestore_putvalues(store, desc, values, nulls);
	}
	pfree(copies);
}

/*
 * The appending transactions of one database, right now (step 2 of the
 * safe-horizon rule in worker.c: call after reading the sequence's
 * last_value, before taking the snapshot).  Reads without locks; the
 * barriers pair with those in trigger.c.  Result palloc'd.
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
}

/*
 * Ask this database's workers to leave a projection (0: every projection)
 * alone until projection_release_hold().  Cannot fail once registered.
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
		ProjectionHold *h = &ProjectionHolds[i];

		if (pg_atomic_read_u32(&h->dboid) != dboid)
			continue;
		pg_read_barrier();
		if (pg_atomic_read_u32(&h->projection_id) == 0)
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
