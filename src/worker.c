/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: applies async projections, in global_position
 *	  order, once, with the checkpoint in the same transaction as the
 *	  handlers' writes.  This file is its process: start, the pool slot it
 *	  holds, the loop, leaving.
 *
 * The loop (worker_spi's): WaitLatch, ResetLatch, CHECK_FOR_INTERRUPTS,
 * reload the configuration if asked, then rounds of one short transaction
 * each until nothing is left.  Committing appenders set our latch from their
 * commit callback (xact.c, horizon.c), so a commit is applied without any
 * polling interval; projection.naptime is only a safety net.
 *
 * The worker's files, from the top down:
 *	worker.c		 the process and its loop (this file)
 *	workerround.c	 one round: the batch applied to every projection, and
 *					 what a failed round does next
 *	workercareful.c  the careful replay that finds a failing event
 *	workerfail.c	 error kinds, transient retries, back-off, on_error's
 *					 records (failed, dead letter)
 *	workerstep.c	 the steps a round's transaction is made of (begin with
 *					 the horizon, lock the projections, read and walk the
 *					 batch, checkpoint, end, publish) and the worker's state
 *
 * Locking: the pool slot (ProjectionShared->dbslots) and the database's
 * demand entry (pool.c) are read and written under the projection LWLock,
 * held only around plain memory accesses, never across anything that can
 * error; pool.c's header says why no wake-up is lost while leaving.
 *
 * Memory: the loop's round_cxt is reset after every round.
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pool.h"
#include "projection.h"
#include "shmem.h"
#include "worker.h"
#include "workerround.h"
#include "workerstep.h"

static MemoryContext round_cxt = NULL;

/* ---------------------------------------------------------------------
 * Slot bookkeeping
 * ---------------------------------------------------------------------
 */

/*
 * before_shmem_exit: give the pool slot back and wake the launcher.  A
 * worker that leaves with work left (an error, SIGTERM, a database command)
 * asks for its group again, so that the launcher starts it anew (after a
 * back-off if it failed); one that leaves caught up asks for nothing.
 */
static void
worker_release_slot(int code, Datum arg)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		/*
		 * Our background worker slot is free only once the postmaster has
		 * seen us exit: the launcher reuses the pool slot after that
		 * (launcher_reap), so that its next start does not fail for want
		 * of a background worker slot.
		 */
		memset(slot, 0, sizeof(ProjectionDbSlot));
		slot->dboid = InvalidOid;
		slot->pid = -2;
		slot->pgprocno = -1;
		slot->latchno = -1;
		slot->batch_xid = InvalidTransactionId;
	}
	if (e != NULL)
	{
		if (code != 0)
		{
			e->failures++;
			e->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Min(30000, 500 << Min(e->failures, 10)));
		}
		else if (projection_worker.exit_clean)
			e->failures = 0;
		if (!projection_worker.exit_clean && projection_worker.index < 32)
			pg_atomic_fetch_or_u32(&e->pending, (uint32) 1 << projection_worker.index);
	}
	LWLockRelease(ProjectionShared->lock);
	projection_wake_launcher();
}

/*
 * Claim the pool slot the launcher took for us.  Returns false if there is
 * none (the launcher forgot it), another live worker holds it, or the
 * database is being stopped by a database command.
 */
static bool
worker_claim_slot(void)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);
	bool		ok = false;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid <= 0 && !slot->exit_requested &&
		(e == NULL || e->stop == 0))
	{
		slot->pid = MyProcPid;
		slot->pgprocno = PROJECTION_MY_PGPROCNO;
		slot->latchno = PROJECTION_MY_PGPROCNO;
		slot->idle_since = 0;
		ok = true;
	}
	LWLockRelease(ProjectionShared->lock);
	return ok;
}

/* A round has run cleanly: the database's workers are healthy again. */
static void
worker_mark_healthy(void)
{
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

	if (e == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	e->failures = 0;
	LWLockRelease(ProjectionShared->lock);
}

/* ---------------------------------------------------------------------
 * Entry point
 * ---------------------------------------------------------------------
 */

/* Run rounds until none says more work may be waiting. */
static void
worker_run_rounds(void)
{
	bool		more;

	do
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(round_cxt);

		more = projection_worker_round();
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(round_cxt);
		CHECK_FOR_INTERRUPTS();
	} while (more);
}

/* Publish when this worker went idle (0: busy), for the launcher's choice of whom to ask to leave. */
static void
worker_set_idle(TimestampTz since)
{
	ProjectionDbSlot *slot;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
		slot->idle_since = since;
	LWLockRelease(ProjectionShared->lock);
	/* a group waits for a slot: the launcher may now ask us to leave */
	if (since != 0 && pg_atomic_read_u32(&ProjectionPool->nwaiting) > 0)
		projection_wake_launcher();
}

/* Has a database command, or the launcher for another database, asked us to leave? */
static bool
worker_exit_requested(bool *for_command)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);
	bool		requested = false;

	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
		requested = slot->exit_requested;
	*for_command = e != NULL && e->stop > 0;
	LWLockRelease(ProjectionShared->lock);
	return requested || *for_command;
}

/*
 * Leave the pool (pool.c's header says why no wake-up is lost): stop taking
 * wake-ups, look for work a last time, and exit if every projection is
 * still caught up.  If that round found work left, take wake-ups again and
 * return, unless a database command needs the database ("force"): then
 * exit anyway, asking for the group again (worker_release_slot).
 */
static void
worker_leave(const char *why, bool force)
{
	ProjectionDbSlot *slot;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		slot->pgprocno = -1;
		slot->leaving = true;
	}
	LWLockRelease(ProjectionShared->lock);
	pg_memory_barrier();

	pgstat_report_activity(STATE_RUNNING, psprintf("projection worker: leaving (%s)", why));
	if (!force)
		worker_run_rounds();
	if (projection_worker.caught_up || force)
	{
		projection_worker.exit_clean = projection_worker.caught_up;
		ereport(projection_worker.probe && projection_worker.caught_up ? DEBUG1 : LOG,
				(errmsg("projection worker %d for database \"%s\" stopping: %s",
						projection_worker.index, projection_worker.dbname, why)));
		proc_exit(0);
	}

	/* work came in: stay */
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		slot->pgprocno = PROJECTION_MY_PGPROCNO;
		slot->leaving = false;
		slot->exit_requested = false;
		slot->idle_since = 0;
	}
	LWLockRelease(ProjectionShared->lock);
	projection_wake_launcher();
}

/* ---------------------------------------------------------------------
 * Entry point
 * ---------------------------------------------------------------------
 */

/*
 * Start: who we are (database, group, probe), signals, the pool slot, the
 * connection and its settings.  Exits at once, asking for the group again,
 * if the slot cannot be claimed.
 */
static void
worker_start(Datum main_arg)
{
	projection_worker.dboid = DatumGetObjectId(main_arg);
	memcpy(&projection_worker.index, MyBgworkerEntry->bgw_extra, sizeof(int));
	memcpy(&projection_worker.count, MyBgworkerEntry->bgw_extra + sizeof(int), sizeof(int));
	memcpy(&projection_worker.probe, MyBgworkerEntry->bgw_extra + 2 * sizeof(int), sizeof(bool));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* a cancel (SIGINT) may only interrupt a batch (cancel.c) */
	HOLD_CANCEL_INTERRUPTS();

	/*
	 * The launcher forgot us, another worker has the group, or a database
	 * command stops the database: leave unseen, but ask for the group
	 * again, so that the launcher decides once more (it starts nothing
	 * while the database is stopped, and forgets a dropped one).
	 */
	projection_worker.exit_clean = true;
	if (!worker_claim_slot())
	{
		ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

		if (e != NULL && projection_worker.index < 32)
			pg_atomic_fetch_or_u32(&e->pending, (uint32) 1 << projection_worker.index);
		projection_wake_launcher();
		proc_exit(0);
	}
	projection_worker.exit_clean = false;
	before_shmem_exit(worker_release_slot, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(projection_worker.dboid, InvalidOid, 0);
	pgstat_report_appname("projection worker");
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The read model and the checkpoint commit together, so a commit lost in
	 * a crash loses both and the events are applied again from the older
	 * checkpoint: waiting for the WAL flush buys nothing here but latency.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	{
		char	   *name = get_database_name(projection_worker.dboid);

		if (name != NULL)
			projection_worker.dbname = MemoryContextStrdup(TopMemoryContext, name);
	}
	CommitTransactionCommand();

	round_cxt = AllocSetContextCreate(TopMemoryContext, "projection worker round",
									  ALLOCSET_DEFAULT_SIZES);
}

/*
 * After the rounds: caught up or not, idle since when, and whether to leave
 * (nothing to run, a probe done, idle too long).  Returns the new idle
 * start (0: not idle).
 */
static TimestampTz
worker_after_rounds(TimestampTz idle_since, TimestampTz now)
{
	if (!projection_worker.caught_up)
	{
		/* blocked behind an appender still in flight: it wakes us */
		if (idle_since != 0)
			worker_set_idle(0);
		return 0;
	}
	if (projection_worker.group_empty)
		worker_leave("no async projection to run", false);
	else if (projection_worker.probe)
		worker_leave("caught up after the server start", false);
	else if (idle_since == 0)
	{
		worker_set_idle(now);
		return now;
	}
	else if (TimestampDifferenceExceeds(idle_since, now, projection_worker_idle_timeout))
	{
		worker_leave(psprintf("idle for %d ms", projection_worker_idle_timeout), false);
		return 0;
	}
	return idle_since;
}

/*
 * Wait for the latch: a commit, a signal, projection.naptime, the rest of
 * the idle time, or sooner for pending statistics.
 */
static void
worker_wait(TimestampTz idle_since, TimestampTz now)
{
	long		timeout;
	long		stats_timeout;

	if (!projection_worker.caught_up)
		pgstat_report_activity(STATE_IDLE, "projection worker: waiting for appending transactions to end");
	else if (projection_worker.restoring > 0)
	{
		/* no palloc: the loop's memory context lives as long as the worker */
		char		activity[160];

		snprintf(activity, sizeof(activity),
				 "projection worker: caught up, waiting for events; %d restored projection%s for %s restoring session to end",
				 projection_worker.restoring,
				 projection_worker.restoring == 1 ? " waits" : "s wait",
				 projection_worker.restoring == 1 ? "its" : "their");
		pgstat_report_activity(STATE_IDLE, activity);
	}
	else
		pgstat_report_activity(STATE_IDLE, "projection worker: caught up, waiting for events");

	/*
	 * Statistics not flushed after the last commit (flushes are at least
	 * PGSTAT_MIN_INTERVAL apart) are flushed when that interval has passed,
	 * as PostgresMain does before going idle.
	 */
	stats_timeout = pgstat_report_stat(false);
	timeout = stats_timeout > 0 ? Min(stats_timeout, projection_naptime) : projection_naptime;
	if (idle_since != 0)
	{
		long		left = projection_worker_idle_timeout -
			TimestampDifferenceMilliseconds(idle_since, now);

		timeout = Max(1, Min(timeout, left));
	}
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout, projection_wait_event(PROJECTION_WAIT_WORKER_IDLE));
}

void
projection_worker_main(Datum main_arg)
{
	TimestampTz idle_since = 0;
	bool		for_command;
	uint64		saves;

	worker_start(main_arg);
	for (;;)
	{
		TimestampTz now;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (worker_exit_requested(&for_command))
		{
			/* a database command waits: leave now, whatever is left */
			if (for_command)
				worker_leave("a database command needs the database", true);
			worker_leave("its pool slot is wanted by another database", false);
			idle_since = 0;
		}

		saves = projection_worker.saves;
		worker_run_rounds();
		worker_mark_healthy();
		now = GetCurrentTimestamp();
		if (projection_worker.saves != saves)
		{
			idle_since = 0;		/* it did work: idle from now on, if at all */
			projection_worker.probe = false;	/* a probe that found work is a worker like any other */
		}
		idle_since = worker_after_rounds(idle_since, now);
		worker_wait(idle_since, now);
	}
}
