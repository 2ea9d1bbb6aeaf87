/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The projection launcher: one static background worker that gives
 *	  workers from the shared pool to the databases that have async work.
 *
 * The launcher connects to shared catalogs only.  It sleeps until its latch
 * is set: by a commit that has async work for a database group without a
 * worker (pool.c), by a worker that stops or stays after all, by the
 * utility hook releasing a database, or by the end of a back-off.  Each
 * time it reads pg_database, has assign.c decide for every wanted group of
 * the demand table (pool.c) whether to wake its worker, wait, give it a
 * free pool slot, or ask an idle worker to leave for it, and then registers
 * the workers to start.  The entries of databases that are gone are
 * forgotten, so no worker is ever started for a dropped database.  After a
 * server start (shared
 * memory is new) the launcher probes every database once: a probe worker
 * applies what is pending and leaves when caught up, or at once, quietly,
 * where the extension is not installed.  Workers are BGW_NEVER_RESTART
 * with bgw_notify_pid set to the launcher; one that exits abnormally asks
 * for its group again, and the launcher restarts it after a back-off.  See
 * src/README.md for the state machine.
 *
 * Locking: slots and the launcher's fields of demand entries are read and
 * written under ProjectionShared->lock; the launcher never holds it across
 * anything that can fail.
 *
 * IDENTIFICATION
 *	  src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "assign.h"
#include "launcher.h"
#include "pool.h"
#include "projection.h"
#include "shmem.h"

/* retry interval after a background worker could not be registered, ms */
#define LAUNCHER_RETRY_MS 1000
/* safety-net wake-up when nothing is pending, ms */
#define LAUNCHER_NAPTIME_MS 60000
/* longest back-off after repeated worker failures, ms */
#define LAUNCHER_MAX_BACKOFF_MS 30000
/* at most one "could not start" WARNING this often, ms */
#define LAUNCHER_WARN_INTERVAL_MS 300000

/* the launcher's handles of the workers it started, by slot index */
static BackgroundWorkerHandle **worker_handles = NULL;
static TimestampTz last_start_warning = 0;
static bool warned_overflow = false;

/* Register the static launcher; called from _PG_init while preloading. */
void
projection_launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "projection");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "projection_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "projection launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "projection launcher");
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	if (ProjectionShared->launcher_pid == MyProcPid)
	{
		ProjectionShared->launcher_pgprocno = -1;
		ProjectionShared->launcher_pid = 0;
	}
	LWLockRelease(ProjectionShared->lock);
}

/*
 * The pool cannot be as large as projection.max_workers says when
 * max_worker_processes, which every background worker of the server shares,
 * is smaller: say so once, at start.
 */
static void
launcher_check_sizing(void)
{
	int			needed = projection_max_workers + 2;

	if (max_worker_processes < needed)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("max_worker_processes (%d) is too small for projection.max_workers (%d)",
						max_worker_processes, projection_max_workers),
				 errdetail("The projection launcher, the logical replication launcher and up to projection.max_workers projection workers share max_worker_processes with parallel query."),
				 errhint("Raise max_worker_processes to at least %d (plus max_parallel_workers if parallel query must never wait), or lower projection.max_workers, and restart the server.",
						 needed)));
}

/*
 * Free the pool slots of workers the postmaster has seen exit: those that
 * left (pid -2) and those that stopped before claiming their slot (for
 * example, because their database was dropped meanwhile, or is being
 * stopped).
 */
static void
launcher_reap(void)
{
	int			i;

	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		pid_t		pid;

		if (worker_handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(worker_handles[i], &pid) == BGWH_STOPPED)
		{
			pfree(worker_handles[i]);
			worker_handles[i] = NULL;
			LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
			if (ProjectionShared->dbslots[i].pid == -1 || ProjectionShared->dbslots[i].pid == -2)
				projection_slot_clear(&ProjectionShared->dbslots[i]);
			LWLockRelease(ProjectionShared->lock);
		}
	}
}

/* pg_database, in the caller's memory context */
static LauncherDb *
launcher_read_databases(int *ndbs)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	LauncherDb *dbs;
	int			maxdbs = 64;
	MemoryContext cxt = CurrentMemoryContext;

	*ndbs = 0;
	dbs = palloc(sizeof(LauncherDb) * maxdbs);
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		if (*ndbs == maxdbs)
		{
			maxdbs *= 2;
			dbs = repalloc(dbs, sizeof(LauncherDb) * maxdbs);
		}
		dbs[*ndbs].oid = db->oid;
		dbs[*ndbs].connectable = !db->datistemplate && db->datallowconn;
		strlcpy(dbs[*ndbs].name, NameStr(db->datname), NAMEDATALEN);
		(*ndbs)++;
		MemoryContextSwitchTo(oldcxt);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return dbs;
}

/* After a server start: every connectable database gets a probe of each group. */
static void
launcher_probe_all(LauncherDb *dbs, int ndbs)
{
	int			i;
	int			n = 0;

	for (i = 0; i < ndbs; i++)
	{
		ProjectionDbDemand *e;

		if (!dbs[i].connectable)
			continue;
		n++;
		e = projection_pool_demand(dbs[i].oid, true);
		if (e == NULL)
			continue;
		LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
		if (e->wanted == 0)
			e->probe = true;
		e->wanted |= projection_pool_all_groups();
		LWLockRelease(ProjectionShared->lock);
	}
	ProjectionPool->probed = true;
	ereport(LOG,
			(errmsg("projection: looking for pending async work in %d databases after the server start", n),
			 errdetail("Each database gets a short-lived worker, projection.max_workers at a time; those without the extension or without pending work leave at once.")));
}

/* Register one worker; caller holds no lock. */
static void
launcher_start_worker(LauncherStart *start)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	ProjectionDbDemand *e = projection_pool_demand(start->dboid, false);
	TimestampTz now = GetCurrentTimestamp();
	int			count = projection_workers_per_database;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "projection");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "projection_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "projection worker %d for database \"%s\"",
			 start->index, start->name);
	memcpy(worker.bgw_extra, &start->index, sizeof(int));
	memcpy(worker.bgw_extra + sizeof(int), &count, sizeof(int));
	memcpy(worker.bgw_extra + 2 * sizeof(int), &start->probe, sizeof(bool));
	snprintf(worker.bgw_type, BGW_MAXLEN, "projection worker");
	worker.bgw_main_arg = ObjectIdGetDatum(start->dboid);
	worker.bgw_notify_pid = MyProcPid;

	/* the handle outlives this pass's scratch context */
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		ok = RegisterDynamicBackgroundWorker(&worker, &handle);
		MemoryContextSwitchTo(oldcxt);
	}

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	if (!ok)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[start->slotno];

		if (slot->pid == -1 && slot->dboid == start->dboid)
			projection_slot_clear(slot);
	}
	if (e != NULL && ok)
	{
		e->start_failed = false;
		e->starts++;
	}
	else if (e != NULL)
	{
		/* ask again after a while: other background workers may end */
		e->wanted |= (uint32) 1 << start->index;
		e->start_failed = true;
		e->next_start = TimestampTzPlusMilliseconds(now, LAUNCHER_RETRY_MS);
	}
	LWLockRelease(ProjectionShared->lock);

	if (ok)
	{
		worker_handles[start->slotno] = handle;
		ereport(start->probe ? DEBUG1 : LOG,
				(errmsg("projection: starting worker %d for database \"%s\": %s",
						start->index, start->name,
						start->probe ? "looking for pending work after the server start" : "async work to apply")));
	}
	else if (TimestampDifferenceExceeds(last_start_warning, now, LAUNCHER_WARN_INTERVAL_MS))
	{
		last_start_warning = now;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a projection worker for database \"%s\": no background worker slot is free",
						start->name),
				 errdetail("Its async projections wait until a background worker of the server ends; the launcher retries every second."),
				 errhint("Raise max_worker_processes (now %d) to at least projection.max_workers (%d) plus 2, plus the parallel and other background workers the server runs.",
						 max_worker_processes, projection_max_workers)));
	}
}

/* Say once that the demand table overflowed (a commit found no entry). */
static void
launcher_note_overflow(void)
{
	if (pg_atomic_exchange_u32(&ProjectionPool->overflow, 0) != 0 && !warned_overflow)
	{
		warned_overflow = true;
		ereport(LOG,
				(errmsg("projection: more than %d databases asked for workers since the server started; the others are served after the next append, or after a restart",
						PROJECTION_POOL_DATABASES)));
	}
}

/*
 * One pass: read pg_database, move requests into the demand table's
 * "wanted", start workers for them, free entries of databases that are
 * gone.  Returns the time until the next pass is due (ms).
 */
static long
launcher_pass(void)
{
	LauncherDb *dbs;
	int			ndbs;
	LauncherStart *starts;
	int			nstarts = 0;
	int			nwaiting = 0;
	int			i;
	TimestampTz now;
	TimestampTz next;
	long		timeout;

	dbs = launcher_read_databases(&ndbs);
	if (!ProjectionPool->probed)
		launcher_probe_all(dbs, ndbs);
	launcher_note_overflow();

	starts = palloc(sizeof(LauncherStart) * ProjectionShared->ndbslots);
	now = GetCurrentTimestamp();
	next = projection_assign_slots(dbs, ndbs, now, TimestampTzPlusMilliseconds(now, LAUNCHER_NAPTIME_MS),
							  starts, &nstarts, &nwaiting);

	/* workers that go idle wake us while groups wait (worker.c, worker_set_idle) */
	pg_atomic_write_u32(&ProjectionPool->nwaiting, nwaiting);
	if (nwaiting > 0)
	{
		LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
		projection_assign_evict(nwaiting);
		LWLockRelease(ProjectionShared->lock);
	}

	for (i = 0; i < nstarts; i++)
		launcher_start_worker(&starts[i]);
	next = projection_assign_next_retry(now, next);

	now = GetCurrentTimestamp();
	timeout = (long) Max(10, (next - now) / 1000 + 1);
	pfree(starts);
	pfree(dbs);
	return timeout;
}

/*
 * At the launcher's start: workers started by a previous launcher keep
 * running and keep their slots; a slot still marked "starting" belongs to a
 * launcher that is gone, and we have no handle for it: give its group back
 * to the demand table, so that it is started again.  Caller holds
 * ProjectionShared->lock exclusively.
 */
static void
launcher_adopt_slots(void)
{
	int			i;

	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (slot->pid == -2)
			projection_slot_clear(slot);	/* left; no handle to see it go */
		else if (slot->pid == -1)
		{
			ProjectionDbDemand *e = projection_pool_demand(slot->dboid, false);

			if (e != NULL && slot->index < 32)
				pg_atomic_fetch_or_u32(&e->pending, (uint32) 1 << slot->index);
			projection_slot_clear(slot);
		}
	}
}

void
projection_launcher_main(Datum main_arg)
{
	MemoryContext scratch;
	long		timeout;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("projection launcher");

	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(BackgroundWorkerHandle *) * ProjectionShared->ndbslots);

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	ProjectionShared->launcher_pgprocno = PROJECTION_MY_PGPROCNO;
	ProjectionShared->launcher_pid = MyProcPid;

	launcher_adopt_slots();
	LWLockRelease(ProjectionShared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	scratch = AllocSetContextCreate(TopMemoryContext, "projection launcher scratch",
									ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("projection launcher started")));
	launcher_check_sizing();

	for (;;)
	{
		MemoryContext oldcxt;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		oldcxt = MemoryContextSwitchTo(scratch);
		pgstat_report_activity(STATE_RUNNING, "projection launcher: starting workers");
		launcher_reap();
		timeout = launcher_pass();
		pgstat_report_activity(STATE_IDLE, "projection launcher: waiting for requests");
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(scratch);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, projection_wait_event(PROJECTION_WAIT_LAUNCHER));
	}
}
