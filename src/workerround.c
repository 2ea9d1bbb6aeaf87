/*-------------------------------------------------------------------------
 *
 * workerround.c
 *	  One round of the worker: the next batch applied to every running async
 *	  projection of its group, in one transaction with their checkpoints,
 *	  and what a failed round does next.
 *
 * Exactly once: each round locks the registry rows of the projections it
 * applies (FOR UPDATE SKIP LOCKED: a projection being paused, resumed or
 * dropped right now is left for the next round), re-reads their positions
 * and, once locked, their statements (the registry cache as of the lock:
 * projection_worker_lock_projections), applies the events and updates the
 * positions in the same transaction.
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
#include "cancel.h"
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
				projection_batch_put_tuple(&batch, events[i].row, events[i].position);
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
			projection_apply(rp->def, projection_round_event_datum(ev), ev->event_type, ev->position);
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
 * The range a failure of this round is in, for the careful replay
 * (round_failed_from -1: nothing applied yet, so not reproducible).  File
 * statics, not locals: they are set inside the round's PG_TRY and read
 * after its PG_CATCH.
 */
static int64 round_failed_from = -1;
static int64 round_failed_to = -1;

/*
 * The laggard's batch of its own (worker_pick_laggard): its event types
 * only, up to the gap bound (below which every event is visible or dead, so
 * no gap needs watching).  Applied and checkpointed in the round's
 * transaction.  Returns true if more of its events may follow.
 */
static bool
worker_catch_up_laggard(ProjectionHorizon *hz, ProjectionRoundMember *rp, int64 gap_bound)
{
	int64		from = rp->position;
	int64		horizon;
	ProjectionRoundEvent *events;
	int			nevents;
	bool		full;

	nevents = projection_worker_read_batch(from, gap_bound, projection_type_filter(rp->def),
										   worker_catch_up_rows(rp->def), &events, &full);
	horizon = full ? events[nevents - 1].position : gap_bound;
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("projection worker: catching up \"%s\": events %lld..%lld of %lld",
									rp->def->name, (long long) from + 1, (long long) horizon,
									(long long) hz->last_value));
	round_failed_from = from;
	round_failed_to = horizon;
	worker_apply_fast(rp, 1, events, nevents);
	projection_worker_save_checkpoint(rp, horizon, rp->catching_up && horizon >= hz->last_value);
	return full;
}

/*
 * The other projections of the round: the next batch after the lowest of
 * their checkpoints, walked with the horizon (projection_worker_horizon),
 * applied to each after its own checkpoint, and their checkpoints moved to
 * the horizon; those catching up with nothing (more) to apply have caught
 * up.  Returns true if more events may follow the batch.
 */
static bool
worker_apply_next_batch(ProjectionHorizon *hz, ProjectionRoundMember *rps, int n, int64 gap_bound)
{
	int64		from = rps[0].position;
	int64		horizon;
	ProjectionRoundEvent *events;
	int			nevents;
	int			napply;
	bool		full;
	int			j;

	for (j = 1; j < n; j++)
		from = Min(from, rps[j].position);

	nevents = projection_worker_read_batch(from, hz->last_value, (Datum) 0, projection_batch_size,
										   &events, &full);
	napply = projection_worker_horizon(events, nevents, full, from, hz->last_value, gap_bound,
									   &horizon);
	if (horizon > from)
	{
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("projection worker: applying events %lld..%lld to %s",
										(long long) from + 1, (long long) horizon,
										worker_describe(rps, n)));

		/*
		 * From here a failure is in this batch: the careful replay takes only
		 * its range (the laggard's batch rolls back with it, and sits the
		 * replay out, being behind it).
		 */
		round_failed_from = from;
		round_failed_to = horizon;
		worker_apply_fast(rps, n, events, napply);
		for (j = 0; j < n; j++)
			if (rps[j].position < horizon)
				projection_worker_save_checkpoint(&rps[j], horizon,
												  rps[j].catching_up && horizon >= hz->last_value);
	}
	/* catching up, and nothing (more) to apply: caught up */
	for (j = 0; j < n; j++)
		if (rps[j].catching_up && rps[j].position >= hz->last_value)
			projection_worker_save_checkpoint(&rps[j], rps[j].position, true);
	return full && napply == nevents;
}

/*
 * The body of a round, after projection_worker_begin: lock the projections,
 * give the laggard a batch of its own, apply the next batch to the others,
 * commit with their checkpoints, publish.  Sets what the round found
 * (projection_worker.caught_up, .group_empty).  Returns true if more work
 * may be waiting.  Errors propagate (projection_worker_round catches them).
 * "cxt" is the round's context, which outlives the commit.
 */
static bool
worker_round_apply(ProjectionHorizon *hz, MemoryContext cxt)
{
	ProjectionRegistry *registry;
	ProjectionRoundMember *rps;
	int			nrps;
	int			nready;
	int			nothers;
	int64		gap_bound;
	bool		more = false;
	bool		all_locked;
	int			j;

	registry = projection_registry_acquire();
	projection_worker_check_owners(registry);
	nrps = projection_worker_lock_projections(&registry, cxt, &rps);
	/* the group's projections that the round did not lock, and why */
	nready = projection_worker_group_count(registry, true);
	projection_worker.restoring =
		nready > nrps ? projection_worker_restoring_count(registry, rps, nrps) : 0;
	if (nrps == 0)
	{
		/*
		 * Nothing locked: caught up unless a lock or a hold left some out
		 * (a live restore's are asked for again when it ends)
		 */
		projection_worker.group_empty = projection_worker_group_count(registry, false) == 0;
		projection_worker.caught_up = nready == projection_worker.restoring;
		projection_registry_release(registry);
		projection_worker_end(true);
		MemoryContextSwitchTo(cxt);
		return false;
	}

	/*
	 * All of the group locked, but what a live restore holds back: "caught
	 * up" below can speak for the group
	 */
	all_locked = nready == nrps + projection_worker.restoring;
	projection_worker_track_catch_ups(rps, nrps);
	projection_warn_untracked_events();
	gap_bound = projection_horizon_gap_bound(hz);

	/*
	 * The projection furthest behind gets a batch of its own when it is
	 * catching up, or lags the others by a batch or more (resumed after a
	 * pause, or fixed after a failure).  The others go on from their own
	 * checkpoints meanwhile instead of waiting until it has caught up with
	 * them.  It moves to the end of rps.
	 */
	nothers = nrps;
	j = worker_pick_laggard(rps, nrps, gap_bound);
	if (j >= 0)
	{
		ProjectionRoundMember swap = rps[j];

		rps[j] = rps[nrps - 1];
		rps[nrps - 1] = swap;
		nothers = nrps - 1;
		more = worker_catch_up_laggard(hz, &rps[nrps - 1], gap_bound);
	}
	if (nothers > 0)
	{
		bool		others_more = worker_apply_next_batch(hz, rps, nothers, gap_bound);

		more = more || others_more;
	}

	projection_registry_release(registry);
	projection_worker_end(true);
	MemoryContextSwitchTo(cxt);
	projection_worker_publish(rps, nrps);
	projection_worker.caught_up = !more && all_locked;
	for (j = 0; j < nrps; j++)
		if (rps[j].position < hz->last_value)
			projection_worker.caught_up = false;
	return more;
}

/*
 * In a PG_CATCH of a round: copy the error (into "cxt"), abort the
 * transaction, drop the registry cache's references.  Interrupts are held
 * meanwhile, so that a termination cannot cut the cleanup short.
 */
static ErrorData *
worker_abort(MemoryContext cxt)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	projection_worker.applying_id = 0;
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	projection_registry_at_abort();
	RESUME_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	return edata;
}

/* The extension is gone from this database: leave, asking for nothing. */
static void
worker_exit_extension_gone(void)
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

/* Back off after an error that is nobody's to charge, and retry. */
static void
worker_retry_later(ErrorData *edata)
{
	long		delay = projection_worker_backoff_delay(++transient_failures);

	ereport(LOG,
			(errmsg("projection worker: retrying in %ld ms after error: %s",
					delay, edata->message)));
	projection_worker_backoff(delay);
}

/*
 * A handler failed in the fast round: replay its range carefully
 * (workercareful.c), so that on_error decides for the failing event.  An
 * error the replay does not record itself (it records handlers' errors) is
 * retried: at once after a cancel, else after a back-off.
 */
static void
worker_replay_carefully(int64 from, int64 to)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		projection_worker_round_careful(from, to);
	}
	PG_CATCH();
	{
		edata = worker_abort(cxt);
	}
	PG_END_TRY();

	if (edata == NULL)
		return;
	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: careful replay cancelled by a management call");
		FreeErrorData(edata);
		return;
	}
	if (projection_worker_error_kind(edata) == PROJECTION_WORKER_ERROR_CANCELLED)
	{
		ereport(LOG,
				(errmsg("projection worker: retrying after a cancel: %s", edata->message)));
		return;
	}
	/* not a handler's: those are recorded by the replay itself */
	worker_retry_later(edata);
}

/*
 * After a failed fast round (rolled back): what to do about the error (see
 * ProjectionWorkerErrorKind): retry at once, back off and retry, or replay
 * the range carefully so that on_error decides for the failing event.
 * "failed_id" and "failed_position" name the handler call that raised it
 * (failed_id 0: none).  Returns true: the round is to be tried again.
 */
static bool
worker_round_failed(ErrorData *edata, int32 failed_id, int64 failed_position)
{
	ProjectionWorkerErrorKind kind;

	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: batch cancelled by a management call");
		FreeErrorData(edata);
		return true;
	}

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
	else if (kind == PROJECTION_WORKER_ERROR_TRANSIENT || round_failed_from < 0)
	{
		/*
		 * Not a handler's (none was running), or not reproducible (nothing
		 * was applied yet): back off and retry for as long as it takes.
		 */
		worker_retry_later(edata);
		return true;
	}
	FreeErrorData(edata);

	/* a handler failed: find the event and apply the rest carefully */
	worker_replay_carefully(round_failed_from, round_failed_to);
	return true;
}

/*
 * One round: apply the next batch to every running async projection of
 * this worker's group, in one transaction with their checkpoints.  Returns
 * true if more work may be waiting.  Exits the process if the extension is
 * gone.
 */
bool
projection_worker_round(void)
{
	ProjectionHorizon hz;
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool more = false;
	ErrorData  *volatile edata = NULL;
	volatile int32 failed_id = 0;
	volatile int64 failed_position = 0;

	projection_worker.caught_up = false;
	projection_worker.group_empty = false;

	/* DROP EXTENSION of this database is waiting: start nothing */
	if (projection_database_held(projection_worker.dboid))
		return false;
	if (!projection_worker_begin(&hz))
		worker_exit_extension_gone();

	round_failed_from = -1;
	round_failed_to = -1;
	PG_TRY();
	{
		more = worker_round_apply(&hz, cxt);
	}
	PG_CATCH();
	{
		/* the handler call that failed, if any */
		failed_id = projection_worker.applying_id;
		failed_position = projection_worker.applying_position;
		edata = worker_abort(cxt);
	}
	PG_END_TRY();

	if (edata == NULL)
	{
		transient_failures = 0;
		projection_worker_forget_transient();
		return more;
	}
	projection_worker.caught_up = false;
	return worker_round_failed(edata, failed_id, failed_position);
}
