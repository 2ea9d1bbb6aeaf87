/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  Workers on demand: the demand table through which backends get their
 *	  database a worker from the shared pool, asking for worker groups, and
 *	  stopping the pool for database commands.
 *
 * The pool is ProjectionShared->dbslots[] (projection.max_workers slots).
 * A slot belongs to a database, and to one of its worker groups
 * (projection id modulo projection.workers_per_database), only while a
 * worker runs there; a worker with nothing to do for
 * projection.worker_idle_timeout leaves and frees its slot (worker.c).
 *
 * The demand table (ProjectionPool->dbs[], one entry per database that has
 * asked for a worker since the server started) is what backends post to:
 *	- a backend that has work for some groups of its database (a commit,
 *	  poolcommit.c; the end of a session that restored registry rows,
 *	  below) calls projection_pool_ask: it sets the latch of every
 *	  worker of those groups that takes wake-ups (slot->pgprocno), and
 *	  or-s each group that has none into its entry's "pending" and sets the
 *	  launcher's latch.  That is plain atomic operations and SetLatch, as
 *	  commit callbacks require, plus a spinlock the first time a backend
 *	  looks for its entry;
 *	- the launcher (launcher.c, assign.c) moves "pending" into "wanted"
 *	  under ProjectionShared->lock and starts a worker for each wanted group
 *	  when a slot is free, or asks the longest-idle worker to leave.
 *
 * No wake-up is lost when a worker leaves (worker.c, worker_leave): it first
 * stops taking wake-ups (pgprocno = -1, under the lock, then a full memory
 * barrier), then runs one more round.  An asking backend reads pgprocno
 * after its work became visible (and a full barrier): if it read the old
 * value, the work is visible to that last round; if it read -1, it posts
 * to the launcher.  The last round leaves only when every projection of the
 * group has reached the sequence's last value, so no appender still in
 * flight can hold a position the round had to wait for; such an appender
 * commits later, reads -1 and posts.  If the last round did find work, the
 * worker takes wake-ups again and stays; the launcher keeps a group wanted
 * while its worker is leaving, and the worker wakes the launcher either way.
 *
 * Askers read a slot's dboid, index and pgprocno without the lock, and read
 * dboid and index again after pgprocno: a slot given to another database in
 * between is noticed, and a stale pgprocno costs at most one spurious
 * wake-up.
 *
 * IDENTIFICATION
 *	  src/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "pool.h"
#include "projection.h"
#include "shmem.h"

ProjectionPoolState *ProjectionPool = NULL;

/* this backend's entry in the demand table (its database never changes) */
static ProjectionDbDemand *pool_my_entry = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* shmem_request_hook: the demand table's space. */
static void
pool_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(ProjectionPoolState));
}

/* shmem_startup_hook: attach to (or create and initialise) the demand table. */
static void
pool_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ProjectionPool = ShmemInitStruct("projection pool", sizeof(ProjectionPoolState), &found);
	if (found)
	{
		LWLockRelease(AddinShmemInitLock);
		return;
	}
	SpinLockInit(&ProjectionPool->mutex);
	pg_atomic_init_u32(&ProjectionPool->nused, 0);
	pg_atomic_init_u32(&ProjectionPool->overflow, 0);
	pg_atomic_init_u32(&ProjectionPool->nwaiting, 0);
	ProjectionPool->probed = false;
	for (i = 0; i < PROJECTION_POOL_DATABASES; i++)
	{
		ProjectionDbDemand *e = &ProjectionPool->dbs[i];

		memset(e, 0, sizeof(ProjectionDbDemand));
		pg_atomic_init_u32(&e->dboid, InvalidOid);
		pg_atomic_init_u32(&e->pending, 0);
		pg_atomic_init_u32(&e->waiting, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Chain the demand table's shared memory hooks (from _PG_init, while
 * preloading): the table is pool.c's own, so shmem.c needs nothing from
 * this file.
 */
void
projection_pool_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pool_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pool_shmem_startup;
}

/* Every worker group of a database, as a bit mask. */
uint32
projection_pool_all_groups(void)
{
	int			n = Min(projection_workers_per_database, 32);

	return n >= 32 ? PG_UINT32_MAX : ((uint32) 1 << n) - 1;
}

/* The group of a projection, as a bit. */
uint32
projection_pool_group_bit(int32 projection_id)
{
	return (uint32) 1 << ((uint32) projection_id % (uint32) Min(projection_workers_per_database, 32));
}

/*
 * A database's entry in the demand table, taken if "create" and missing.
 * NULL if it has none (or the table is full).  Safe in commit callbacks: no
 * error, no allocation; the spinlock is held for a scan of the used part of
 * the table only when the entry must be taken.
 */
ProjectionDbDemand *
projection_pool_demand(Oid dboid, bool create)
{
	uint32		nused;
	uint32		i;
	ProjectionDbDemand *result = NULL;

	if (ProjectionPool == NULL || !OidIsValid(dboid))
		return NULL;
	nused = pg_atomic_read_u32(&ProjectionPool->nused);
	for (i = 0; i < nused; i++)
		if (pg_atomic_read_u32(&ProjectionPool->dbs[i].dboid) == dboid)
			return &ProjectionPool->dbs[i];
	if (!create)
		return NULL;

	SpinLockAcquire(&ProjectionPool->mutex);
	nused = pg_atomic_read_u32(&ProjectionPool->nused);
	for (i = 0; i < nused && result == NULL; i++)
		if (pg_atomic_read_u32(&ProjectionPool->dbs[i].dboid) == dboid)
			result = &ProjectionPool->dbs[i];
	for (i = 0; i < nused && result == NULL; i++)
		if (pg_atomic_read_u32(&ProjectionPool->dbs[i].dboid) == InvalidOid)
		{
			result = &ProjectionPool->dbs[i];
			pg_atomic_write_u32(&result->dboid, dboid);
		}
	if (result == NULL && nused < PROJECTION_POOL_DATABASES)
	{
		result = &ProjectionPool->dbs[nused];
		pg_atomic_write_u32(&result->dboid, dboid);
		pg_atomic_write_u32(&ProjectionPool->nused, nused + 1);
	}
	SpinLockRelease(&ProjectionPool->mutex);
	return result;
}

/*
 * Ask for workers of the given groups of this database (pool.c's header):
 * wake the groups' workers that take wake-ups, and ask the launcher for a
 * worker for each group that has none; the workers of other groups are
 * left alone.  The caller's work must be visible to others already.  No
 * locks but the spinlock of projection_pool_demand, no allocation, no
 * errors: commit callbacks call this.
 */
void
projection_pool_ask(uint32 groups)
{
	uint32		covered = 0;
	int			i;

	if (ProjectionShared == NULL || groups == 0)
		return;

	/* our work is visible: now look at the slots (pool.c's header) */
	pg_memory_barrier();
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];
		int			index;
		int			procno;

		if (slot->dboid != MyDatabaseId)
			continue;
		index = slot->index;
		procno = slot->pgprocno;
		pg_read_barrier();
		if (procno < 0 || slot->dboid != MyDatabaseId || slot->index != index ||
			index >= 32 || (groups & ((uint32) 1 << index)) == 0)
			continue;
		projection_set_latch(procno);
		covered |= (uint32) 1 << index;
	}

	groups &= ~covered;
	if (groups == 0)
		return;
	if (pool_my_entry == NULL ||
		pg_atomic_read_u32(&pool_my_entry->dboid) != MyDatabaseId)
		pool_my_entry = projection_pool_demand(MyDatabaseId, true);
	if (pool_my_entry != NULL)
		pg_atomic_fetch_or_u32(&pool_my_entry->pending, groups);
	else
		pg_atomic_write_u32(&ProjectionPool->overflow, 1);
	projection_wake_launcher();
}

/*
 * The worker groups of the registry rows this session restored (registry.c,
 * the _restored trigger, marks them with the session): while the session
 * lives the worker leaves those projections alone without holding its pool
 * slot for them (its round counts it caught up without them: workerround.c,
 * workerstep.c), so the session's end asks for their groups
 * (pool_restoring_session_exit).
 */
static uint32 pool_restored_groups = 0;

/*
 * on_proc_exit callback of a session that restored registry rows: the
 * restore is over, ask for the groups of its projections.  It runs after
 * shmem_exit, whose on_shmem_exit callbacks took the session out of the
 * backend status array (pgstat_beshutdown_hook), which the worker's lock
 * reads to tell whether the restoring session lives (pg_stat_get_activity,
 * checkpoint.c).  So, as for a commit (pool.c's header): a worker whose
 * pgprocno we read as set is woken, and its next round no longer finds the
 * session; one we read as leaving (-1) looks at the array after it stopped
 * taking wake-ups, so either its last round saw the session gone and took
 * the projections, or it exits and the launcher, which we post to, starts
 * one that will.  Our PGPROC is gone by now: projection_pool_ask takes no
 * LWLock, only atomics, the demand table's spinlock and other processes'
 * latches, all in the main shared memory segment, which stays mapped until
 * the process exits.  A session that crashes takes the server through a
 * crash restart, after which the launcher looks at every database anyway.
 */
static void
pool_restoring_session_exit(int code, Datum arg)
{
	projection_pool_ask(pool_restored_groups);
}

/*
 * A registry row of this projection was restored by this session (the
 * _restored trigger): ask for its group when the session ends, whatever
 * happens to the row meanwhile (an aborted or changed restore costs at most
 * a worker that finds nothing to do).
 */
void
projection_pool_note_restored(int32 projection_id)
{
	static bool registered = false;

	if (ProjectionShared == NULL)
		return;
	if (!registered)
	{
		on_proc_exit(pool_restoring_session_exit, (Datum) 0);
		registered = true;
	}
	pool_restored_groups |= projection_pool_group_bit(projection_id);
}

/*
 * A database command needs the database to itself (utility.c): with
 * "stop", keep the launcher from starting its workers until "until" (or
 * projection_pool_release_database).  Ask each running worker to leave (it
 * does so quietly, at the end of its batch); with "terminate", send it
 * SIGTERM, for a worker that did not leave within a moment.  Returns
 * whether a worker of the database still runs, or is starting.
 */
bool
projection_pool_stop_database(Oid dboid, bool stop, bool terminate, TimestampTz until)
{
	ProjectionDbDemand *e = stop ? projection_pool_demand(dboid, true) : NULL;
	bool		found = false;
	int			i;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	if (e != NULL)
	{
		e->stop++;
		e->stop_until = until;
	}
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->dboid != dboid || slot->pid == 0)
			continue;
		found = true;
		slot->exit_requested = true;
		if (slot->pid > 0 && terminate)
			(void) kill(slot->pid, SIGTERM);
		else if (slot->pid > 0)
			projection_set_latch(slot->latchno);
	}
	LWLockRelease(ProjectionShared->lock);
	return found;
}

/* The database command is over: the launcher may start workers there again. */
void
projection_pool_release_database(Oid dboid)
{
	ProjectionDbDemand *e = projection_pool_demand(dboid, false);

	if (e == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	if (e->stop > 0 && --e->stop == 0)
		e->next_start = 0;
	LWLockRelease(ProjectionShared->lock);
	projection_wake_launcher();
}

/*
 * Why no worker can apply a database's async projections, with a hint in
 * *hint (palloc'd), or NULL if one can (or will, once a pool slot is free).
 */
const char *
projection_pool_unavailable(Oid dboid, char **hint)
{
	ProjectionDbDemand *e;
	bool		start_failed = false;
	bool		any_running = false;
	int			i;

	if (ProjectionShared == NULL)
	{
		*hint = pstrdup("Add \"projection\" to shared_preload_libraries and restart the server.");
		return "the projection library is not preloaded";
	}
	e = projection_pool_demand(dboid, false);
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	if (e != NULL)
		start_failed = e->start_failed;
	for (i = 0; i < ProjectionShared->ndbslots; i++)
		if (ProjectionShared->dbslots[i].pid != 0)
			any_running = true;
	LWLockRelease(ProjectionShared->lock);

	/* no projection worker runs anywhere, so no slot will be given back */
	if (start_failed && !any_running)
	{
		*hint = psprintf("Raise max_worker_processes (now %d) and restart the server.",
						 max_worker_processes);
		return "no background worker could be started for this database";
	}
	return NULL;
}

/* Does a worker group of the database wait for a free pool slot? */
bool
projection_pool_waiting(Oid dboid)
{
	ProjectionDbDemand *e = projection_pool_demand(dboid, false);
	bool		waiting;

	if (e == NULL)
		return false;
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	waiting = e->waiting_since != 0;
	LWLockRelease(ProjectionShared->lock);
	return waiting;
}

/*
 * Does the worker group of one projection of the database wait for a free
 * pool slot?  Reads the launcher's last word without a lock.
 */
bool
projection_pool_group_waiting(Oid dboid, int32 projection_id)
{
	ProjectionDbDemand *e = projection_pool_demand(dboid, false);

	return e != NULL && (pg_atomic_read_u32(&e->waiting) & projection_pool_group_bit(projection_id)) != 0;
}

/*
 * The wait event to report while one of our processes waits.  On 17 and
 * later each has its own name (pg_stat_activity.wait_event), registered on
 * first use in this process; before, they are all "Extension".
 */
uint32
projection_wait_event(ProjectionWaitEvent which)
{
	static uint32 ids[PROJECTION_WAIT_COUNT];
	static const char *const names[PROJECTION_WAIT_COUNT] = {
		"ProjectionWorkerIdle",
		"ProjectionWorkerBackoff",
		"ProjectionLauncherMain",
		"ProjectionWorkerStop"
	};

	if (ids[which] == 0)
		ids[which] = projection_wait_event_new(names[which]);
	return ids[which];
}

PG_FUNCTION_INFO_V1(projection_waiting_for_worker);
PG_FUNCTION_INFO_V1(projection_waiting_for_worker_of);

/*
 * _waiting_for_worker() of version 1.3: does a worker group of this
 * database wait for a pool slot?  Kept for databases not yet updated to 1.4.
 */
Datum
projection_waiting_for_worker(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ProjectionShared != NULL && projection_pool_waiting(MyDatabaseId));
}

/*
 * _waiting_for_worker(name) (1.4): does this async projection's own worker
 * group wait for a pool slot?  False for an unknown or inline projection.
 * The registry is read only while some group of the database waits, so the
 * status view stays cheap.
 */
Datum
projection_waiting_for_worker_of(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ProjectionDbDemand *e;
	ProjectionRegistry *registry;
	bool		result = false;
	int			i;

	if (ProjectionShared == NULL)
		PG_RETURN_BOOL(false);
	e = projection_pool_demand(MyDatabaseId, false);
	if (e == NULL || pg_atomic_read_u32(&e->waiting) == 0)
		PG_RETURN_BOOL(false);
	registry = projection_registry_acquire();
	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (strcmp(def->name, name) == 0)
		{
			result = !def->is_inline && projection_pool_group_waiting(MyDatabaseId, def->id);
			break;
		}
	}
	projection_registry_release(registry);
	PG_RETURN_BOOL(result);
}
