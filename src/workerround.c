/*-------------------------------------------------------------------------
 *
 * workerround.c
 *	  One round of the worker: the next batch applied to every running async
 *	  projection of its group, in one transaction with their checkpoints,
 *	  and what a failed round does next.
 *
 * Exactly once: each round locks the registry rows of the projections it
 * applies (FOR UPDATE SKIP LOCKED: a projection being paused, resumed or
 * dropped right now is left for the next round), re-reads their positions,
 * applies the events and updates the positions in the same transaction.
 * Which events are safe to apply (no skipped events): the safe-horizon
 * rule, stated and implemented in horizon.c; each round reads the horizon
 * at its start (projection_worker_begin) and walks its batch with it
 * (projection_worker_horizon).
 *
 * Errors: a round is first applied without subtransactions.  If it fails,
 * projection_worker_error_kind() says what to do: after a cancel of this
 * worker, retry at once; after a transient error (serialization failure,
 * deadlock, lock time-out, ...), back off and retry, but a handler call that
 * fails so PROJECTION_WORKER_TRANSIENT_ATTEMPTS times in a row is treated as
 * failing; after a handler error, replay the same range carefully
 * (workercareful.c) to find the poison event.  Other projections keep going.
 *
 * Memory: a round's transaction allocates under SPI (freed by SPI_finish in
 * projection_worker_end); what a round reads after its commit (the
 * projections' ids and positions) is allocated in the caller's context (the
 * loop's round_cxt), saved before SPI_connect.  A batch's events are bounded
 * by projection.batch_size and projection.batch_bytes (eventread.c).
 *
 * IDENTIFICATION
 *	  src/workerround.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/memutils.h"

#include "batch.h"
#include "catalog.h"
#include "events.h"
#include "handler.h"
#include "horizon.h"
#include "projection.h"
#include "shmem.h"
#include "workercareful.h"
#include "workerfail.h"
#include "workerround.h"
#include "workerstep.h"

static int	transient_failures = 0; /* in a row, not charged to a handler call */

/*
 * The batch statements (batch.c) of every participating projection that has
 * some, each over its events of events[0..n): those of its types after its
 * checkpoint.  After the per-event handlers of the same events.
 */
static void
worker_apply_batches(ProjectionRoundMember *rps, int nrps, ProjectionRoundEvent *events, int n,
					 ProjectionOwnerScope *scope)
{
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		ProjectionRoundMember *rp = &rps[j];
		ProjectionBatch batch;

		if (rp->def->nbatch_statements == 0)
			continue;
		projection_batch_begin(&batch);
		for (i = 0; i < n; i++)
			if (events[i].position > rp->position &&
				projection_wants_batch(rp->def, events[i].event_type))
				projection_batch_put(&batch, events[i].event, events[i].position);
		if (batch.count > 0)
		{
			CHECK_FOR_INTERRUPTS();
			projection_owner_enter(scope, rp->def);
			projection_worker.applying_id = rp->id;
			projection_worker.applying_position = batch.first;
			projection_batch_run(rp->def, &batch);
			projection_worker.applying_id = 0;
			CommandCounterIncrement();
		}
		projection_batch_end(&batch);
	}
}

/* events per batch of a catch-up: larger for batch statements, which run once per batch */
static int
worker_catch_up_rows(ProjectionDef *def)
{
	if (def->nbatch_statements > 0)
		return Max(projection_batch_size, projection_replay_batch_size);
	return projection_batch_size;
}

/*
 * Apply events[0..n) to every participating projection, without
 * subtransactions: the per-event handlers event by event, then the batch
 * statements.  Errors propagate.
 */
static void
worker_apply_fast(ProjectionRoundMember *rps, int nrps, ProjectionRoundEvent *events, int n)
{
	ProjectionOwnerScope scope;
	int			i,
				j;

	memset(&scope, 0, sizeof(scope));
	for (i = 0; i < n; i++)
	{
		ProjectionRoundEvent *ev = &events[i];

		CHECK_FOR_INTERRUPTS();
		for (j = 0; j < nrps; j++)
		{
			ProjectionRoundMember *rp = &rps[j];

			if (rp->position >= ev->position || !projection_wants(rp->def, ev->event_type))
				continue;
			projection_owner_enter(&scope, rp->def);
			projection_worker.applying_id = rp->id;
			projection_worker.applying_position = ev->position;
			projection_apply(rp->def, ev->event, ev->event_type, ev->position);
			projection_worker.applying_id = 0;
		}
		CommandCounterIncrement();
	}
	worker_apply_batches(rps, nrps, events, n, &scope);
	projection_owner_leave(&scope);
}

/*
 * The projection that gets a batch of its own this round, or -1: the one
 * furthest behind, if it is below the gap bound and either catching up or
 * at least a batch behind the next one (or, alone, behind the gap bound).
 */
static int
worker_pick_laggard(ProjectionRoundMember *rps, int nrps, int64 gap_bound)
{
	int			lowest = 0;
	int64		next = gap_bound;
	int			j;

	for (j = 1; j < nrps; j++)
		if (rps[j].position < rps[lowest].position)
			lowest = j;
	for (j = 0; j < nrps; j++)
		if (j != lowest)
			next = Min(next, rps[j].position);
	if (rps[lowest].position >= gap_bound)
		return -1;
	if (rps[lowest].catching_up || rps[lowest].position + projection_batch_size <= next)
		return lowest;
	return -1;
}

/*
 * The running async projections of this worker's group, as the round's
 * registry says: with "ready", only those with a handler or statements
 * (the ones a round takes).  A round that locked fewer left some out,
 * because a management call or a restore holds them.
 */
static int
worker_group_count(ProjectionRegistry *registry, bool ready)
{
	int			i;
	int			n = 0;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (!def->is_inline && def->id % projection_worker.count == projection_worker.index &&
			(def->state == PROJECTION_RUNNING || def->state == PROJECTION_CATCHING_UP) &&
			(!ready || OidIsValid(def->handler) || def->nstatements > 0))
			n++;
	}
	return n;
}

/* The projections of a batch, for pg_stat_activity: a few names and the count. */
static char *
worker_describe(ProjectionRoundMember *rps, int nrps)
{
	StringInfoData buf;
	int			j;

	initStringInfo(&buf);
	for (j = 0; j < nrps && j < 3; j++)
		appendStringInfo(&buf, "%s\"%s\"", j > 0 ? ", " : "", rps[j].def->name);
	if (nrps > 3)
		appendStringInfo(&buf, " and %d more", nrps - 3);
	return buf.data;
}

/*
 * One round: apply the next batch to every running async projection.
 * Returns true if more work may be waiting.
 */
bool
projection_worker_round(void)
{
	ProjectionHorizon hz;
	ProjectionRegistry *registry;
	ProjectionRoundMember *rps;
	int			nrps;
	int64		from;
	int64		horizon;
	int64		gap_bound;
	ProjectionRoundEvent *events;
	int			nevents;
	bool		full;
	int			napply;
	int			j;
	volatile bool more = false;
	volatile bool all_locked = false;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;
	volatile int64 failed_from = -1;
	volatile int64 failed_to = -1;
	volatile int32 failed_id = 0;
	volatile int64 failed_position = 0;
	ProjectionWorkerErrorKind kind;

	projection_worker.caught_up = false;
	projection_worker.group_empty = false;

	/* DROP EXTENSION of this database is waiting: start nothing */
	if (projection_database_held(projection_worker.dboid))
		return false;

	if (!projection_worker_begin(&hz))
	{
		/*
		 * Quietly for a probe after a server start (most databases have no
		 * extension); else the extension has just been dropped.
		 */
		projection_worker.exit_clean = true;
		ereport(projection_worker.probe ? DEBUG1 : LOG,
				(errmsg("projection worker %d for database \"%s\" stopping: extension \"%s\" is not installed there",
						projection_worker.index, projection_worker.dbname, PROJECTION_EXTENSION_NAME)));
		proc_exit(0);
	}

	PG_TRY();
	{
		registry = projection_registry_acquire();
		projection_worker_check_owners(registry);
		nrps = projection_worker_lock_projections(registry, cxt, &rps);
		if (nrps == 0)
		{
			/* nothing left out by a lock or a hold: nothing to do at all */
			projection_worker.group_empty = worker_group_count(registry, false) == 0;
			projection_worker.caught_up = worker_group_count(registry, true) == 0;
			projection_registry_release(registry);
			projection_worker_end(true);
			MemoryContextSwitchTo(cxt);
			more = false;
		}
		else
		{
			int			nothers = nrps;

			/* all of the group locked: "caught up" below can speak for the group */
			all_locked = worker_group_count(registry, true) == nrps;
			projection_worker_track_catch_ups(rps, nrps);
			projection_warn_untracked_events();
			gap_bound = projection_horizon_gap_bound(&hz);

			/*
			 * The projection furthest behind gets a batch of its own when it
			 * is catching up, or lags the others by a batch or more (resumed
			 * after a pause, or fixed after a failure): the event types it
			 * handles only, up to the gap bound (below which every event is
			 * visible or dead, so no gap needs watching).  The others go on
			 * from their own checkpoints meanwhile instead of waiting until it
			 * has caught up with them.
			 */
			j = worker_pick_laggard(rps, nrps, gap_bound);
			if (j >= 0)
			{
				ProjectionRoundMember swap = rps[j];
				ProjectionRoundMember *rp;

				rps[j] = rps[nrps - 1];
				rps[nrps - 1] = swap;
				rp = &rps[nrps - 1];
				nothers = nrps - 1;

				from = rp->position;
				nevents = projection_worker_read_batch(from, gap_bound, projection_type_filter(rp->def),
											worker_catch_up_rows(rp->def), &events, &full);
				horizon = full ? events[nevents - 1].position : gap_bound;
				more = full;
				pgstat_report_activity(STATE_RUNNING,
										psprintf("projection worker: catching up \"%s\": events %lld..%lld of %lld",
												 rp->def->name, (long long) from + 1, (long long) horizon,
												 (long long) hz.last_value));
				failed_from = from;
				failed_to = horizon;
				worker_apply_fast(rp, 1, events, nevents);
				projection_worker_save_checkpoint(rp, horizon, rp->catching_up && horizon >= hz.last_value);
			}

			/* the others: the next batch after the lowest of their checkpoints */
			if (nothers > 0)
			{
				from = rps[0].position;
				for (j = 1; j < nothers; j++)
					from = Min(from, rps[j].position);

				nevents = projection_worker_read_batch(from, hz.last_value, (Datum) 0, projection_batch_size,
											&events, &full);
				napply = projection_worker_horizon(events, nevents, full, from, hz.last_value, gap_bound, &horizon);
				more = more || (full && napply == nevents);

				if (horizon > from)
				{
					pgstat_report_activity(STATE_RUNNING,
											psprintf("projection worker: applying events %lld..%lld to %s",
													 (long long) from + 1, (long long) horizon,
													 worker_describe(rps, nothers)));
					/*
					 * From here a failure is in this batch: the careful
					 * replay takes only its range (the laggard's batch rolls
					 * back with it, and sits the replay out, being behind it).
					 */
					failed_from = from;
					failed_to = horizon;
					worker_apply_fast(rps, nothers, events, napply);
					for (j = 0; j < nothers; j++)
						if (rps[j].position < horizon)
							projection_worker_save_checkpoint(&rps[j], horizon,
												   rps[j].catching_up && horizon >= hz.last_value);
				}
				/* catching up, and nothing (more) to apply: caught up */
				for (j = 0; j < nothers; j++)
					if (rps[j].catching_up && rps[j].position >= hz.last_value)
						projection_worker_save_checkpoint(&rps[j], rps[j].position, true);
			}
			projection_registry_release(registry);
			projection_worker_end(true);
			MemoryContextSwitchTo(cxt);
			projection_worker_publish(rps, nrps);
			projection_worker.caught_up = !more && all_locked;
			for (j = 0; j < nrps; j++)
				if (rps[j].position < hz.last_value)
					projection_worker.caught_up = false;
		}
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		failed_id = projection_worker.applying_id;	/* the handler call that failed, if any */
		failed_position = projection_worker.applying_position;
		projection_worker.applying_id = 0;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		projection_registry_at_abort();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
	}
	PG_END_TRY();

	if (edata != NULL)
		projection_worker.caught_up = false;
	if (edata == NULL)
	{
		transient_failures = 0;
		projection_worker_forget_transient();
		return more;
	}

	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: batch cancelled by a management call");
		FreeErrorData(edata);
		return true;
	}

	/*
	 * What to do about the error (see ProjectionWorkerErrorKind): retry at once, back
	 * off and retry, or replay the range carefully so that on_error decides
	 * for the failing event.
	 */
	kind = projection_worker_error_kind(edata);
	if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
	{
		ereport(LOG,
				(errmsg("projection worker: retrying after a cancel: %s", edata->message)));
		return true;
	}
	if (kind == PROJECTION_WORKER_ERROR_TRANSIENT && failed_id != 0)
	{
		/* a handler call's: retried a few times, then on_error decides */
		int			attempts = projection_worker_charge_transient(failed_id, failed_position);

		if (attempts < PROJECTION_WORKER_TRANSIENT_ATTEMPTS)
		{
			ereport(LOG,
					(errmsg("projection worker: retrying in %ld ms after error: %s",
							projection_worker_backoff_delay(attempts), edata->message)));
			projection_worker_backoff(projection_worker_backoff_delay(attempts));
			return true;
		}
		ereport(LOG,
				(errmsg("projection worker: event %lld failed %d times in a row in projection %d with transient errors, applying on_error: %s",
						(long long) failed_position, attempts, failed_id, edata->message)));
	}
	else if (kind == PROJECTION_WORKER_ERROR_TRANSIENT || failed_from < 0)
	{
		/*
		 * Not a handler's (none was running), or not reproducible (nothing
		 * was applied yet): back off and retry for as long as it takes.
		 */
		transient_failures++;
		ereport(LOG,
				(errmsg("projection worker: retrying in %ld ms after error: %s",
						projection_worker_backoff_delay(transient_failures), edata->message)));
		projection_worker_backoff(projection_worker_backoff_delay(transient_failures));
		return true;
	}
	FreeErrorData(edata);
	edata = NULL;

	/* a handler failed: find the event and apply the rest carefully */
	PG_TRY();
	{
		projection_worker_round_careful(failed_from, failed_to);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		projection_worker.applying_id = 0;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		projection_registry_at_abort();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
	}
	PG_END_TRY();

	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (edata != NULL && projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: careful replay cancelled by a management call");
		FreeErrorData(edata);
	}
	else if (edata != NULL)
	{
		long		delay;

		kind = projection_worker_error_kind(edata);
		if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
		{
			ereport(LOG,
					(errmsg("projection worker: retrying after a cancel: %s", edata->message)));
			return true;
		}
		/* not a handler's: those are recorded by the replay itself */
		delay = projection_worker_backoff_delay(++transient_failures);
		ereport(LOG,
				(errmsg("projection worker: retrying in %ld ms after error: %s",
						delay, edata->message)));
		projection_worker_backoff(delay);
	}
	return true;
}
