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
 *   every entry without a lock.  horizon.c states the ordering rules.
 *
 * - ProjectionShared->dbslots[]: per-database worker slots.  Read and written
 *   only while holding ProjectionShared->lock (exclusive to write, shared to
 *   read), except launcher_pgprocno and a slot's pgprocno, which committing
 *   backends read without the lock to set a latch: a stale value only causes
 *   a spurious wake-up, which latches tolerate.
 *
 * - The progress hash (ProjectionProgressHash): per-projection checkpoints
 *   published after commit by workers, read by projection.wait() and the
 *   status view (allocated here, used by progress.c).  Protected by
 *   ProjectionShared->lock.  Waiters sleep on
 *   progress_cvs[dboid % PROJECTION_REGISTRY_GEN_SLOTS], so a worker's
 *   commit wakes the waiters of its own database (and of the few databases
 *   sharing the slot), not every waiter of the cluster.
 *
 * - ProjectionHolds[MaxBackends] and the slots' batch_xid and
 *   cancel_requested: the cancel requests of management calls against a
 *   slow batch, allocated here and used by cancel.c, whose header states
 *   their rules.
 *
 * Nothing here is held across anything that can raise an error.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "projection.h"
#include "shmem.h"

ProjectionSharedState *ProjectionShared = NULL;
ProjectionAppender *ProjectionAppenders = NULL;
int			ProjectionNumAppenders = 0;
ProjectionHold *ProjectionHolds = NULL;	/* cancel.c reads and writes it */
HTAB	   *ProjectionProgressHash = NULL;	/* progress.c reads and writes it */

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
		for (i = 0; i < PROJECTION_REGISTRY_GEN_SLOTS; i++)
		{
			pg_atomic_init_u64(&ProjectionShared->registry_gens[i].gen, 1);
			pg_atomic_init_u32(&ProjectionShared->registry_gens[i].changing, 0);
			pg_atomic_init_u64(&ProjectionShared->registry_gens[i].untrusted_loads, 0);
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
			slot->latchno = -1;
			slot->batch_xid = InvalidTransactionId;
		}
	}
	if (!found_holds)
	{
		for (i = 0; i < MaxBackends; i++)
		{
			pg_atomic_init_u32(&ProjectionHolds[i].dboid, InvalidOid);
			pg_atomic_init_u32(&ProjectionHolds[i].projection_id, 0);
			pg_atomic_init_u32(&ProjectionHolds[i].database, InvalidOid);
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
void
projection_set_latch(int procno)
{
	if (procno >= 0 && procno < (int) ProcGlobal->allProcCount)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

void
projection_wake_launcher(void)
{
	if (ProjectionShared == NULL)
		return;
	projection_set_latch(ProjectionShared->launcher_pgprocno);
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
 * A registry cache is being loaded while a change is committing (its
 * generation was not stable): counted before the load takes its snapshot,
 * so that the committing transaction, which reads the count after it became
 * visible, knows a reader may have missed its change (poolcommit.c).
 */
void
projection_registry_note_untrusted(Oid dboid)
{
	ProjectionRegistryGen *slot = registry_gen_slot(dboid);

	if (slot == NULL)
		return;
	pg_atomic_fetch_add_u64(&slot->untrusted_loads, 1);
	pg_memory_barrier();
}

/* The count of projection_registry_note_untrusted; 0 without shared memory. */
uint64
projection_registry_untrusted_loads(Oid dboid)
{
	ProjectionRegistryGen *slot = registry_gen_slot(dboid);

	if (slot == NULL)
		return 0;
	pg_memory_barrier();
	return pg_atomic_read_u64(&slot->untrusted_loads);
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
			projection_set_latch(slot->pgprocno);
	}
}

/* this transaction asks the launcher to look at its database at commit */
static bool launcher_request_pending = false;

/* Ask the launcher, at commit, to look for this database's worker again. */
void
projection_request_launcher_at_commit(void)
{
	launcher_request_pending = true;
}

/*
 * Did this transaction ask for the launcher?  poolcommit.c's pre-commit
 * step then finds the groups that have async work, and its commit step asks
 * for them.
 */
bool
projection_launcher_requested(void)
{
	return launcher_request_pending;
}

/* Transaction end (from xact.c): the request is over.  Cannot fail. */
void
projection_launcher_request_at_eoxact(bool commit)
{
	launcher_request_pending = false;
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
 * lowest position held: horizon.c) and by feed.c after commits that free
 * partitions.  A broadcast cannot fail.
 */
void
projection_feed_wake(Oid dboid)
{
	if (ProjectionShared == NULL)
		return;
	ConditionVariableBroadcast(projection_feed_cv(dboid));
}

/* Empty a pool slot; caller holds ProjectionShared->lock exclusively. */
void
projection_slot_clear(ProjectionDbSlot *slot)
{
	memset(slot, 0, sizeof(ProjectionDbSlot));
	slot->dboid = InvalidOid;
	slot->pgprocno = -1;
	slot->latchno = -1;
	slot->batch_xid = InvalidTransactionId;
}

/*
 * Find the slot of one of a database's workers (with InvalidOid: a free
 * slot, not one whose worker is still exiting); caller holds
 * ProjectionShared->lock.
 */
ProjectionDbSlot *
projection_find_dbslot(Oid dboid, int index)
{
	int			i;

	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid == dboid && (OidIsValid(dboid) ? slot->index == index : slot->pid == 0))
			return slot;
	}
	return NULL;
}
