/*-------------------------------------------------------------------------
 *
 * batchapply.c
 *	  Set-based handlers: the batches of their callers' loops (batch.c runs
 *	  them): one event, a replay's rows, an appending statement's events
 *	  (inline) and an event a handler appended.
 *
 * A batch keeps its rows as they are (no copy) when they stay valid until
 * it has run: a replay's rows, the worker's, a single event.  The rows of a
 * transition table are read through a slot, so they are copied: into the
 * batch's tuplestore for batch statements run as SQL (which spills to disk
 * beyond its memory bound, as before), or into memory for a snapshot
 * projection, whose fold needs the whole batch grouped by stream anyway.
 *
 * Locking: none of its own; as batch.c.
 *
 * IDENTIFICATION
 *	  src/batchapply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "batch.h"
#include "catalog.h"
#include "eventread.h"
#include "handler.h"
#include "projection.h"

/*
 * Does this event row (a projection.events row described by "desc") go
 * into the projection's batches?  projection_wants_batch, without a copy
 * of its event type.
 */
static bool
batch_row_wanted(ProjectionDef *def, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	text	   *type;
	const char *p;
	size_t		len;
	int			i;

	if (def->nbatch_statements == 0)
		return false;
	if (def->types == NULL)
		return true;
	type = DatumGetTextPP(heap_getattr(tup, Anum_events_event_type, desc, &isnull));
	p = VARDATA_ANY(type);
	len = VARSIZE_ANY_EXHDR(type);
	for (i = 0; i < def->ntypes; i++)
		if (strncmp(def->types[i], p, len) == 0 && def->types[i][len] == '\0')
			return true;
	return false;
}

/*
 * One event through the batch statements, as a one-row batch (if the
 * projection has any and the event is of its types): the event-by-event
 * path, after a batch failed or for a single event.  As for
 * projection_batch_run.
 */
void
projection_batch_apply_one(ProjectionDef *def, Datum event, const char *event_type,
						   int64 position)
{
	ProjectionBatch batch;

	if (!projection_wants_batch(def, event_type))
		return;
	projection_batch_begin(&batch);
	projection_batch_put(&batch, event, position);
	projection_batch_run(def, &batch);
	projection_batch_end(&batch);
}

/*
 * Rows [from, to) of a replay's read (rows that are events,
 * PROJECTION_EVENT_COLUMNS) through the batch statements, as one batch of
 * the events of the projection's types: each row goes into the batch as it
 * is, with no event datum built.  "filtered": the read took only the types
 * of projection_type_filter(def), which are the batch statements' unless
 * the projection has on() statements.  Returns the number of events in the
 * batch.  As for projection_batch_run.
 */
int64
projection_batch_apply_rows(ProjectionDef *def, ProjectionEventRows *rows, int from, int to,
							bool filtered)
{
	ProjectionBatch batch;
	bool		all = filtered && def->nstatements == 0;
	int64		count;
	int			i;

	if (def->nbatch_statements == 0)
		return 0;
	projection_batch_begin(&batch);
	for (i = from; i < to; i++)
	{
		HeapTuple	tup = rows->tuples[i];

		if (all || batch_row_wanted(def, tup, rows->tupdesc))
			projection_batch_put_tuple(&batch, tup,
									   projection_event_row_position(tup, rows->tupdesc));
	}
	projection_batch_run(def, &batch);
	count = batch.count;
	projection_batch_end(&batch);
	return count;
}

/*
 * Inline: the events of one appending statement ("store", rows of
 * projection.events described by "desc") through the batch statements of
 * every running inline projection that has some, one batch per projection,
 * in registry order.  The caller has run the per-event handlers of these
 * events, is connected to SPI and holds "scope" for the owners.
 */
void
projection_batch_apply_inline(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
							  Tuplestorestate *store, TupleDesc desc)
{
	TupleTableSlot *slot = NULL;
	MemoryContext rows_cxt = NULL;
	int			i;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];
		ProjectionBatch batch;
		bool		snapshot;

		if (!def->is_inline || def->state != PROJECTION_RUNNING || def->nbatch_statements == 0)
			continue;
		if (slot == NULL)
		{
			slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
			rows_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection inline batch rows",
											 ALLOCSET_DEFAULT_SIZES);
		}
		/* a snapshot's fold takes the rows as they are: copies, in rows_cxt */
		snapshot = projection_batch_is_snapshot(def);
		if (snapshot)
			projection_batch_begin(&batch);
		else
			projection_batch_begin_stored(&batch);
		batch.fresh = true;
		tuplestore_rescan(store);
		while (tuplestore_gettupleslot(store, true, false, slot))
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(snapshot ? rows_cxt : CurrentMemoryContext);
			bool		should_free;
			HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
			bool		isnull;

			MemoryContextSwitchTo(oldcxt);
			if (batch_row_wanted(def, tup, desc))
			{
				int64		position = DatumGetInt64(heap_getattr(tup, Anum_events_global_position,
																  desc, &isnull));

				if (snapshot && !should_free)
				{
					MemoryContextSwitchTo(rows_cxt);
					tup = heap_copytuple(tup);
					MemoryContextSwitchTo(oldcxt);
				}
				projection_batch_put_tuple(&batch, tup, position);
				if (snapshot)
					continue;	/* kept in rows_cxt until the batch has run */
			}
			if (should_free)
				heap_freetuple(tup);
		}
		if (batch.count > 0)
		{
			projection_owner_enter(scope, def);
			projection_batch_run(def, &batch);
			CommandCounterIncrement();
		}
		projection_batch_end(&batch);
		MemoryContextReset(rows_cxt);
	}
	if (slot != NULL)
	{
		ExecDropSingleTupleTableSlot(slot);
		MemoryContextDelete(rows_cxt);
	}
}

/*
 * Inline: one event appended by a handler (queued for the outermost inline
 * trigger), through the batch statements of the running inline projections
 * that have some, as a one-row batch each.
 */
void
projection_batch_apply_inline_one(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
								  HeapTuple tuple, TupleDesc desc)
{
	bool		isnull;
	int64		position;
	int			i;

	position = DatumGetInt64(heap_getattr(tuple, Anum_events_global_position, desc, &isnull));
	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];
		ProjectionBatch batch;

		if (!def->is_inline || def->state != PROJECTION_RUNNING ||
			!batch_row_wanted(def, tuple, desc))
			continue;
		projection_batch_begin(&batch);
		batch.fresh = true;
		projection_batch_put_tuple(&batch, tuple, position);
		projection_owner_enter(scope, def);
		projection_batch_run(def, &batch);
		CommandCounterIncrement();
		projection_batch_end(&batch);
	}
}
