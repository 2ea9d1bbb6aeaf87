/*-------------------------------------------------------------------------
 *
 * workercareful.c
 *	  The worker's careful replay: after a handler error in a round, the same
 *	  range again with one subtransaction per handler call, at most
 *	  WORKER_CAREFUL_CHUNK events per transaction, reading only the event
 *	  types concerned, to find the poison event: on_error 'stop' marks that
 *	  projection failed at the position before it, 'skip' records a dead
 *	  letter and goes on (workerfail.c).  Other projections keep going.
 *
 * Locking: each chunk is a round's transaction (workerstep.c): the
 * projections' registry rows locked FOR UPDATE SKIP LOCKED, checkpoints
 * saved in the same transaction.  It takes no locks of its own.
 *
 * IDENTIFICATION
 *	  src/workercareful.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "apply.h"
#include "batch.h"
#include "cancel.h"
#include "catalog.h"
#include "handler.h"
#include "horizon.h"
#include "projection.h"
#include "shmem.h"
#include "workercareful.h"
#include "workerfail.h"
#include "workerstep.h"

/* events per transaction while looking for a poison event (< 64 subxacts) */
#define WORKER_CAREFUL_CHUNK 32

/*
 * The event types the careful replay needs to read: those of the projections
 * that take part and have something left to apply below "limit" (those already
 * at or past it need nothing), as a text[] datum, or (Datum) 0 if one of them
 * handles every type.  After a laggard's failed batch that is the laggard
 * alone, and its range may span millions of positions of other types; the
 * replay's range is fixed (see projection_worker_round_careful), so the gaps
 * need no watching and a filter is safe.
 */
static Datum
worker_careful_filter(ProjectionRoundMember *rps, int nrps, int64 cursor, int64 limit)
{
	Datum	   *elems;
	int			nelems = 0;
	int			allocated = 0;
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		ProjectionDef *def = rps[j].def;

		if (rps[j].failed || rps[j].position < cursor || rps[j].position >= limit)
			continue;
		if ((OidIsValid(def->handler) || def->nbatch_statements > 0) && def->types == NULL)
			return (Datum) 0;
		allocated += def->ntypes + def->nstatements;
	}
	elems = palloc(sizeof(Datum) * Max(allocated, 1));
	for (j = 0; j < nrps; j++)
	{
		ProjectionDef *def = rps[j].def;

		if (rps[j].failed || rps[j].position < cursor || rps[j].position >= limit)
			continue;
		if (OidIsValid(def->handler) || def->nbatch_statements > 0)
			for (i = 0; i < def->ntypes; i++)
				elems[nelems++] = CStringGetTextDatum(def->types[i]);
		for (i = 0; i < def->nstatements; i++)
			elems[nelems++] = CStringGetTextDatum(def->statements[i].event_type);
	}
	return PointerGetDatum(construct_array(elems, nelems, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Apply one event to one projection in the careful replay, and record its
 * error as on_error says.  A transient error is retried here, in a new
 * subtransaction after a back-off, until the call has failed
 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS times (counting the fast rounds'
 * attempts): aborting the chunk instead would also undo what the chunk
 * recorded for other projections.  A cancel propagates (projection_worker_round
 * retries at once).
 */
static void
worker_apply_recorded(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, MemoryContext errcxt)
{
	int			attempt;

	for (attempt = 1;; attempt++)
	{
		ErrorData  *edata = projection_apply_one_guarded(rp->def, projection_round_event_datum(ev),
														 ev->event_type,
														 ev->position, errcxt);
		ProjectionWorkerErrorKind kind;

		if (edata == NULL)
			return;
		kind = projection_worker_error_kind(edata);
		if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
			ReThrowError(edata);
		if (kind == PROJECTION_WORKER_ERROR_TRANSIENT && attempt < PROJECTION_WORKER_TRANSIENT_ATTEMPTS &&
			!projection_worker_transient_spent(rp->id, ev->position))
		{
			ereport(LOG,
					(errmsg("projection worker: retrying event %lld of projection \"%s\" in %ld ms after error: %s",
							(long long) ev->position, rp->def->name,
							projection_worker_backoff_delay(attempt), edata->message)));
			FreeErrorData(edata);
			projection_worker_backoff(projection_worker_backoff_delay(attempt));
			continue;
		}
		if (rp->def->skip_errors)
			projection_worker_record_dead_letter(rp, ev, edata);
		else
			projection_worker_record_failure(rp, ev, edata);
		FreeErrorData(edata);
		return;
	}
}

/*
 * Careful replay of events (from, horizon_limit] after a failed fast round,
 * WORKER_CAREFUL_CHUNK events per transaction, one subtransaction per handler
 * call.  The range is safe to read again with later snapshots: every position
 * in it was visible or dead at the failed round's snapshot, and stays so.  A
 * handler error is recorded as on_error says (worker_apply_recorded); a cancel
 * propagates (projection_worker_round retries at once), and so does any other
 * error (projection_worker_round backs off and retries).
 *
 * Memory: each chunk's transaction allocates in a context of its own (errors
 * included), reset after the chunk; what outlives a chunk's commit (rps, for
 * projection_worker_publish) is allocated there before SPI_connect.
 */
void
projection_worker_round_careful(int64 from, int64 horizon_limit)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	int64		cursor = from;

	chunk_cxt = AllocSetContextCreate(cxt, "projection worker careful chunk",
									  ALLOCSET_DEFAULT_SIZES);

	/*
	 * A projection whose checkpoint is below the cursor (one resumed since
	 * the failed round) takes no part: it would miss the events before the
	 * cursor.  Later rounds catch it up.
	 */
	while (cursor < horizon_limit)
	{
		ProjectionHorizon hz;
		ProjectionRegistry *registry;
		ProjectionRoundMember *rps;
		int			nrps;
		ProjectionRoundEvent *events;
		int			nevents;
		bool		full;
		int			i,
					j;
		int64		chunk_end;

		if (projection_database_held(projection_worker.dboid))
		{
			/* DROP EXTENSION is waiting: leave it be */
			MemoryContextSwitchTo(cxt);
			MemoryContextDelete(chunk_cxt);
			return;
		}
		MemoryContextSwitchTo(chunk_cxt);
		if (!projection_worker_begin(&hz))
		{
			MemoryContextSwitchTo(cxt);
			MemoryContextDelete(chunk_cxt);
			return;
		}
		registry = projection_registry_acquire();
		nrps = projection_worker_lock_projections(&registry, chunk_cxt, &rps);
		nevents = projection_worker_read_batch(cursor, horizon_limit,
									worker_careful_filter(rps, nrps, cursor, horizon_limit),
									WORKER_CAREFUL_CHUNK, &events, &full);
		chunk_end = full ? events[nevents - 1].position : horizon_limit;
		elog(DEBUG1, "projection worker: careful replay of events %lld..%lld (%d read)",
			 (long long) cursor + 1, (long long) chunk_end, nevents);

		pgstat_report_activity(STATE_RUNNING,
							   psprintf("projection worker: isolating a failing event in %lld..%lld",
										(long long) cursor + 1, (long long) chunk_end));
		for (i = 0; i < nevents; i++)
		{
			ProjectionRoundEvent *ev = &events[i];

			CHECK_FOR_INTERRUPTS();
			for (j = 0; j < nrps; j++)
			{
				ProjectionRoundMember *rp = &rps[j];

				if (rp->failed || rp->position < cursor || rp->position >= ev->position ||
					!(projection_wants(rp->def, ev->event_type) ||
					  projection_wants_batch(rp->def, ev->event_type)))
					continue;
				worker_apply_recorded(rp, ev, chunk_cxt);
			}
			CommandCounterIncrement();
		}
		for (j = 0; j < nrps; j++)
		{
			if (!rps[j].failed && rps[j].position >= cursor && rps[j].position < chunk_end)
				projection_worker_save_checkpoint(&rps[j], chunk_end, rps[j].catching_up && chunk_end >= hz.last_value);
		}
		projection_registry_release(registry);
		projection_worker_end(true);
		MemoryContextSwitchTo(cxt);
		projection_worker_publish(rps, nrps);
		MemoryContextReset(chunk_cxt);
		cursor = chunk_end;
	}
	MemoryContextDelete(chunk_cxt);
}
