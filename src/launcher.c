/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The projection launcher: one static background worker that starts a
 *	  per-database worker in every database that can run async projections.
 *
 * The launcher connects to shared catalogs only.  Each time it wakes (its
 * latch is set when a worker starts or stops, when CREATE EXTENSION or
 * create()/resume() commits, when the utility hook releases a database, and
 * at least every few seconds) it rescans pg_database, skipping templates and
 * databases that do not allow connections, and starts a worker for each
 * database whose slot has none, unless:
 *	- the slot is stopped by the utility hook (DROP/RENAME/... DATABASE);
 *	- the last worker found no extension there and no CREATE EXTENSION has
 *	  committed since (ProjectionShared->rescan);
 *	- the previous worker failed recently (back-off).
 * The launcher cannot see pg_extension of other databases: the worker checks
 * and exits with code 0 when the extension is absent.  Workers are
 * BGW_NEVER_RESTART with bgw_notify_pid set to the launcher: after any exit,
 * and after a crash-restart (which forgets them), the launcher starts them
 * again.  See src/README.md for the state machine.
 *
 * Locking: slots are read and written under ProjectionShared->lock; the
 * launcher never holds it across anything that can fail.
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

#include "launcher.h"
#include "projection.h"
#include "shmem.h"

/* launcher wake-up interval when nothing happens, ms */
#define LAUNCHER_NAPTIME_MS 5000
/* longest back-off after repeated worker failures, ms */
#define LAUNCHER_MAX_BACKOFF_MS 30000

/* the launcher's handles of the workers it started, by slot index */
static BackgroundWorkerHandle **worker_handles = NULL;

/*
 * Databases whose workers found no extension, until the next rescan request.
 * Kept here rather than in slots, so that they do not use up worker slots.
 */
static Oid *absent_dbs = NULL;
static int	nabsent = 0;
static TimestampTz last_no_slot_log = 0;

static bool
launcher_is_absent(Oid dboid)
{
	int			i;

	for (i = 0; i < nabsent; i++)
		if (absent_dbs[i] == dboid)
			return true;
	return false;
}

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

/* Start the worker of one database; caller holds no lock. */
static void
launcher_start_worker(int slotno, Oid dboid, int index, const char *datname)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	ProjectionDbSlot *slot = &ProjectionShared->dbslots[slotno];
	TimestampTz now = GetCurrentTimestamp();
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "projection");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "projection_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "projection worker %d for database \"%s\"", index, datname);
	memcpy(worker.bgw_extra, &index, sizeof(int));
	memcpy(worker.bgw_extra + sizeof(int), &projection_workers_per_database, sizeof(int));
	snprintf(worker.bgw_type, BGW_MAXLEN, "projection worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	/* the handle outlives this pass's scratch context */
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		ok = RegisterDynamicBackgroundWorker(&worker, &handle);
		MemoryContextSwitchTo(oldcxt);
	}

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	if (ok)
	{
		int			delay;

		/* -1: started, not yet claimed; the worker may have claimed it already */
		if (slot->pid == 0)
			slot->pid = -1;
		slot->start_failed = false;
		/* back-off for the next start, in case this one fails */
		delay = slot->failures == 0 ? 0 :
			Min(LAUNCHER_MAX_BACKOFF_MS, 500 << Min(slot->failures, 10));
		slot->next_start = TimestampTzPlusMilliseconds(now, delay);
		slot->failures++;
	}
	else
	{
		slot->next_start = TimestampTzPlusMilliseconds(now, LAUNCHER_NAPTIME_MS);
		slot->start_failed = true;
	}
	LWLockRelease(ProjectionShared->lock);

	if (ok)
		worker_handles[slotno] = handle;
	else
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start projection worker for database \"%s\"", datname),
				 errhint("Raise max_worker_processes (now %d): it must cover one projection worker per database plus the launcher.",
						 max_worker_processes)));
}

/*
 * Forget workers that stopped before claiming their slot (for example,
 * because their database was dropped meanwhile).
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
			if (ProjectionShared->dbslots[i].pid == -1)
				ProjectionShared->dbslots[i].pid = 0;
			LWLockRelease(ProjectionShared->lock);
		}
	}
}

typedef struct LauncherDb
{
	Oid			oid;
	char		name[NAMEDATALEN];
} LauncherDb;

/*
 * One pass: read pg_database, assign slots, start missing workers, free
 * slots of databases that are gone.
 */
static void
launcher_scan(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	LauncherDb *dbs;
	int			ndbs = 0;
	int			maxdbs = 64;
	int			i;
	bool		rescan;
	TimestampTz now;
	MemoryContext cxt = CurrentMemoryContext;

	dbs = palloc(sizeof(LauncherDb) * maxdbs);
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext oldcxt;

		if (db->datistemplate || !db->datallowconn)
			continue;
		oldcxt = MemoryContextSwitchTo(cxt);
		if (ndbs == maxdbs)
		{
			maxdbs *= 2;
			dbs = repalloc(dbs, sizeof(LauncherDb) * maxdbs);
		}
		dbs[ndbs].oid = db->oid;
		strlcpy(dbs[ndbs].name, NameStr(db->datname), NAMEDATALEN);
		ndbs++;
		MemoryContextSwitchTo(oldcxt);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	rescan = pg_atomic_exchange_u32(&ProjectionShared->rescan, 0) != 0;
	now = GetCurrentTimestamp();
	if (rescan)
		nabsent = 0;

	/* move databases without the extension out of their slots */
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (!OidIsValid(slot->dboid) || slot->pid != 0 || slot->stop)
			continue;
		if (rescan)
			slot->extension_absent = false;
		if (!slot->extension_absent)
			continue;
		if (!launcher_is_absent(slot->dboid) && nabsent < ProjectionShared->ndbslots * 64)
		{
			if (absent_dbs == NULL)
				absent_dbs = MemoryContextAlloc(TopMemoryContext,
												sizeof(Oid) * ProjectionShared->ndbslots * 64);
			absent_dbs[nabsent++] = slot->dboid;
		}
		memset(slot, 0, sizeof(ProjectionDbSlot));
		slot->dboid = InvalidOid;
		slot->pgprocno = -1;
	}
	LWLockRelease(ProjectionShared->lock);

	for (i = 0; i < ndbs * projection_workers_per_database; i++)
	{
		LauncherDb *db = &dbs[i / projection_workers_per_database];
		int			index = i % projection_workers_per_database;
		ProjectionDbSlot *slot;
		int			slotno = -1;
		bool		start = false;

		if (launcher_is_absent(db->oid))
			continue;

		LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
		slot = projection_find_dbslot(db->oid, index);
		if (slot == NULL)
		{
			slot = projection_find_dbslot(InvalidOid, 0);
			if (slot != NULL)
			{
				memset(slot, 0, sizeof(ProjectionDbSlot));
				slot->dboid = db->oid;
				slot->index = index;
				slot->pgprocno = -1;
			}
		}
		if (slot != NULL)
		{
			slotno = slot - ProjectionShared->dbslots;
			if (rescan)
				slot->extension_absent = false;
			if (slot->stop && slot->stop_until <= now)
				slot->stop = 0;
			start = slot->pid == 0 && !slot->stop && !slot->extension_absent &&
				slot->next_start <= now;
		}
		LWLockRelease(ProjectionShared->lock);

		if (slot == NULL)
		{
			/* at most once a minute: the launcher scans often */
			if (TimestampDifferenceExceeds(last_no_slot_log, now, 60000))
			{
				ereport(LOG,
						(errmsg("projection: no worker slot left for database \"%s\"", db->name),
						 errhint("Raise projection.max_workers (now %d) and restart the server.",
								 projection_max_workers)));
				last_no_slot_log = now;
			}
		}
		else if (start)
			launcher_start_worker(slotno, db->oid, index, db->name);
	}

	/* free the slots of databases that no longer exist */
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];
		bool		exists = false;
		int			j;

		if (!OidIsValid(slot->dboid) || slot->pid != 0)
			continue;
		for (j = 0; j < ndbs; j++)
			if (dbs[j].oid == slot->dboid)
				exists = true;
		if (!exists && !slot->stop)
		{
			memset(slot, 0, sizeof(ProjectionDbSlot));
			slot->dboid = InvalidOid;
			slot->pgprocno = -1;
		}
	}
	LWLockRelease(ProjectionShared->lock);
	pfree(dbs);
}

/* Milliseconds until the next back-off expires, or the default nap. */
static long
launcher_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = TimestampTzPlusMilliseconds(now, LAUNCHER_NAPTIME_MS);
	int			i;

	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (OidIsValid(slot->dboid) && slot->pid == 0 && !slot->extension_absent &&
			!slot->stop && slot->next_start > now && slot->next_start < next)
			next = slot->next_start;
		if (OidIsValid(slot->dboid) && slot->stop && slot->stop_until < next)
			next = Max(slot->stop_until, now);
	}
	LWLockRelease(ProjectionShared->lock);
	return (long) Max(10, (next - now) / 1000 + 1);
}

void
projection_launcher_main(Datum main_arg)
{
	MemoryContext scratch;

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
	/*
	 * Workers started by a previous launcher keep running and keep their
	 * slots; a slot still marked "starting" belongs to a launcher that is
	 * gone, and we have no handle for it: forget it.
	 */
	{
		int			i;

		for (i = 0; i < ProjectionShared->ndbslots; i++)
			if (ProjectionShared->dbslots[i].pid == -1)
				ProjectionShared->dbslots[i].pid = 0;
	}
	LWLockRelease(ProjectionShared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	scratch = AllocSetContextCreate(TopMemoryContext, "projection launcher scratch",
									ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("projection launcher started")));

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
		pgstat_report_activity(STATE_RUNNING, "scanning databases");
		launcher_reap();
		launcher_scan();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(scratch);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 launcher_timeout(), PG_WAIT_EXTENSION);
	}
}
