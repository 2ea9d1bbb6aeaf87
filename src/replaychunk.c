/*-------------------------------------------------------------------------
 *
 * replaychunk.c
 *	  One chunk of a replay (replay.c) applied to its projection, the way
 *	  on_error and batch statements say: set-based in one subtransaction,
 *	  then event by event with dead letters (on_error 'skip'); set-based
 *	  with an event-by-event fallback without subtransactions (batch
 *	  statements, on_error 'stop'); or plainly, event by event.
 *
 * User code runs as the projection's owner (handler.c, apply.c).  No locks
 * of its own: the replay's caller holds the projection's registry row (and,
 * inline, the appenders' lock).  Memory: each event's work is in event_cxt,
 * reset after it; errors are copied into the caller's context.
 *
 * IDENTIFICATION
 *	  src/replaychunk.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "apply.h"
#include "batch.h"
#include "catalog.h"
#include "deadletter.h"
#include "eventread.h"
#include "handler.h"
#include "replaychunk.h"
#include "subxact.h"

/* the arguments of replay_chunk_body, and the number of events it applied */
typedef struct ReplayChunkArgs
{
	ProjectionDef *def;
	ProjectionEventRows *rows;
	MemoryContext event_cxt;
	int64		applied;
} ReplayChunkArgs;

/*
 * The work of replay_chunk_guarded, inside its subtransaction, in the
 * caller's memory context: the per-event handlers event by event, then the
 * batch statements over the whole chunk, in an owner scope left here on
 * success (on error the subtransaction's abort restores the user).
 */
static bool
replay_chunk_body(void *arg)
{
	ReplayChunkArgs *args = (ReplayChunkArgs *) arg;
	ProjectionDef *def = args->def;
	ProjectionEventRows *rows = args->rows;
	MemoryContext oldcxt = CurrentMemoryContext;
	ProjectionOwnerScope scope;
	int64		applied = 0;
	int			i;

	memset(&scope, 0, sizeof(scope));

	/*
	 * Only batch statements: nothing to do event by event (a GUC nest level
	 * and a command counter per event, for nothing), the chunk goes through
	 * them below.
	 */
	i = (!OidIsValid(def->handler) && def->nstatements == 0) ? rows->ntuples : 0;
	for (; i < rows->ntuples; i++)
	{
		HeapTuple	tup = rows->tuples[i];
		int64		position = projection_event_row_position(tup, rows->tupdesc);
		char	   *event_type;
		bool		per_event;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(args->event_cxt);
		event_type = projection_event_row_type(tup, rows->tupdesc);
		per_event = projection_wants(def, event_type);
		if (per_event)
		{
			/* the per-event handlers only for the events they take */
			projection_owner_enter(&scope, def);
			projection_apply(def, projection_event_row_datum(tup), event_type, position);
			CommandCounterIncrement();
		}
		if (per_event || projection_wants_batch(def, event_type))
			applied++;
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(args->event_cxt);
	}
	/* set-based: the chunk's batch statements after its per-event handlers */
	if (def->nbatch_statements > 0)
	{
		int64		batched;

		projection_owner_enter(&scope, def);
		/* the replay read the projection's types only (replay.c) */
		batched = projection_batch_apply_rows(def, rows, 0, rows->ntuples, true);
		CommandCounterIncrement();
		if (!OidIsValid(def->handler) && def->nstatements == 0)
			applied = batched;
	}
	projection_owner_leave(&scope);
	args->applied = applied;
	return true;
}

/*
 * A fetched chunk of events applied to a projection inside one
 * subtransaction, as its owner: the per-event handlers event by event, then
 * the batch statements over the whole chunk.  Returns the number of events
 * applied, or -1 after rolling the subtransaction back if one failed.
 * Fatal errors (projection_error_is_fatal) are re-thrown.
 */
static int64
replay_chunk_guarded(ProjectionDef *def, ProjectionEventRows *rows, MemoryContext event_cxt)
{
	ReplayChunkArgs args;
	ErrorData  *edata;

	args.def = def;
	args.rows = rows;
	args.event_cxt = event_cxt;
	args.applied = 0;
	if (projection_subxact_run(replay_chunk_body, &args, CurrentMemoryContext, &edata))
		return args.applied;
	if (projection_error_is_fatal(edata))
		ReThrowError(edata);
	FreeErrorData(edata);
	return -1;
}

/*
 * A fetched chunk of events applied to a projection event by event, each in
 * a subtransaction of its own (apply.c), as its owner; a failing event is
 * recorded in dead_letters instead (as the worker does; counted in
 * *skipped) and the rest go on.  Returns the number applied.  Fatal errors
 * are re-thrown.
 */
static int64
replay_chunk_each(ProjectionDef *def, ProjectionEventRows *rows, MemoryContext event_cxt,
				  int64 *skipped)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	int64		applied = 0;
	int			i;

	for (i = 0; i < rows->ntuples; i++)
	{
		HeapTuple	tup = rows->tuples[i];
		int64		position = projection_event_row_position(tup, rows->tupdesc);
		char	   *event_type;
		ErrorData  *edata = NULL;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(event_cxt);
		event_type = projection_event_row_type(tup, rows->tupdesc);
		if (projection_wants(def, event_type) || projection_wants_batch(def, event_type))
		{
			/* the handlers run in event_cxt, the error is copied out of it */
			edata = projection_apply_one_guarded(def, projection_event_row_datum(tup), event_type,
												 position, oldcxt);
			if (edata == NULL)
				applied++;
		}
		MemoryContextSwitchTo(oldcxt);
		if (edata != NULL)
		{
			char	   *stream_id = projection_event_row_stream(tup, rows->tupdesc);

			if (projection_error_is_fatal(edata))
				ReThrowError(edata);
			projection_dead_letter_record(def->name, position, event_type, stream_id, edata);
			(*skipped)++;
			FreeErrorData(edata);
		}
		MemoryContextReset(event_cxt);
	}
	return applied;
}

/*
 * A chunk of a replay under on_error 'skip': first in one subtransaction;
 * if an event fails, again with one subtransaction per event, recording the
 * failing ones as dead letters.  Returns the number of events applied.
 */
static int64
replay_chunk_skipping(ProjectionDef *def, ProjectionEventRows *rows,
					  MemoryContext event_cxt, int64 *skipped)
{
	int64		applied = replay_chunk_guarded(def, rows, event_cxt);

	if (applied >= 0)
		return applied;
	return replay_chunk_each(def, rows, event_cxt, skipped);
}

/*
 * A chunk of a replay under on_error 'stop' for a projection with batch
 * statements: set-based, in one subtransaction; if that fails, event by
 * event (per-event handlers, then the batch statements over a one-row
 * batch), without subtransactions, so that a batch statement that meets
 * one key twice still applies, and an event that fails on its own fails
 * the replay, as it would without batch statements.  Returns the number of
 * events applied.
 */
static int64
replay_chunk_batch(ProjectionDef *def, ProjectionEventRows *rows, MemoryContext event_cxt)
{
	int64		applied = replay_chunk_guarded(def, rows, event_cxt);
	ProjectionOwnerScope scope;
	int			i;

	if (applied >= 0)
		return applied;
	applied = 0;
	memset(&scope, 0, sizeof(scope));
	for (i = 0; i < rows->ntuples; i++)
	{
		HeapTuple	tup = rows->tuples[i];
		int64		position = projection_event_row_position(tup, rows->tupdesc);
		MemoryContext oldcxt = MemoryContextSwitchTo(event_cxt);
		char	   *event_type = projection_event_row_type(tup, rows->tupdesc);

		CHECK_FOR_INTERRUPTS();
		if (projection_wants(def, event_type) || projection_wants_batch(def, event_type))
		{
			projection_apply_one(&scope, def, projection_event_row_datum(tup), event_type, position);
			applied++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(event_cxt);
	}
	projection_owner_leave(&scope);
	return applied;
}

/*
 * A chunk of a replay under on_error 'stop' without batch statements: the
 * handlers event by event, as the owner, without subtransactions (an error
 * fails the replay).  Returns the number of events applied.
 */
static int64
replay_chunk_plain(ProjectionDef *def, ProjectionEventRows *rows, MemoryContext event_cxt)
{
	ProjectionOwnerScope scope;
	int64		applied = 0;
	int			i;

	memset(&scope, 0, sizeof(scope));
	for (i = 0; i < rows->ntuples; i++)
	{
		HeapTuple	tup = rows->tuples[i];
		int64		position = projection_event_row_position(tup, rows->tupdesc);
		MemoryContext oldcxt = MemoryContextSwitchTo(event_cxt);
		char	   *event_type = projection_event_row_type(tup, rows->tupdesc);

		CHECK_FOR_INTERRUPTS();
		if (projection_wants(def, event_type))
		{
			projection_owner_enter(&scope, def);
			projection_apply(def, projection_event_row_datum(tup), event_type, position);
			CommandCounterIncrement();
			applied++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(event_cxt);
	}
	projection_owner_leave(&scope);
	return applied;
}

/*
 * Apply a chunk of a replay's events (rows of PROJECTION_EVENT_COLUMNS) to the projection, as its owner, the way on_error
 * and its batch statements say: under 'skip' guarded, with the failing
 * events dead-lettered (counted in *skipped); with batch statements
 * set-based, with an event-by-event fallback; else plainly.  Returns the
 * number of events applied.  The caller is connected to SPI with the
 * replay's snapshot active.
 */
int64
projection_replay_chunk(ProjectionDef *def, ProjectionEventRows *rows, MemoryContext event_cxt,
						int64 *skipped)
{
	if (def->skip_errors)
		return replay_chunk_skipping(def, rows, event_cxt, skipped);
	if (def->nbatch_statements > 0)
		return replay_chunk_batch(def, rows, event_cxt);
	return replay_chunk_plain(def, rows, event_cxt);
}
