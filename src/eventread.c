/*-------------------------------------------------------------------------
 *
 * eventread.c
 *	  Reading a batch of events into memory, bounded by a number of rows
 *	  and by bytes (projection.batch_bytes).
 *
 * A count alone does not bound memory: a backlog of events of a few MB each
 * would cost the worker (or a rebuild) batch_size times that.  SPI's own
 * result (SPI_tuptable) materialises every row of the query before the
 * caller sees the first, so the rows go instead to a DestReceiver of ours,
 * which copies each row and stops the executor (receiveSlot returns false)
 * once the count or the byte bound is reached.  A batch always takes at
 * least one row, so an event larger than the bound is still applied.
 *
 * The bytes counted are those of the copied rows as they are held, plus,
 * for values stored out of line (TOAST), their stored size: a row that is
 * an event keeps the pointer, and the event datum a per-event handler gets
 * fetches the value into it (a whole-row value of an event carries its data
 * as stored, compressed or not), so the bound holds for that too.
 *
 * Rows that are events (the select list PROJECTION_EVENT_COLUMNS): the
 * copied row is a projection.events tuple (the table has no dropped columns,
 * so its columns are its row type's, in order), which a batch statement's
 * tuplestore takes as it is; projection_event_row_datum() makes the event
 * datum a handler gets from it, only for the events that go to one.  A
 * whole-row reference (SELECT e, ...) would build that composite for every
 * event read, and the row around it copy it once more: 17% of a rebuild
 * with batch statements went there.
 *
 * No locks and no shared state: the caller runs the query (connected to
 * SPI) and owns the rows.
 *
 * IDENTIFICATION
 *	  src/eventread.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "eventread.h"
#include "projection.h"

/* the receiver: the rows collected so far and the bounds */
typedef struct EventReadReceiver
{
	DestReceiver pub;
	ProjectionEventRows *rows;
	MemoryContext cxt;
	int			max_rows;
	Size		max_bytes;
	int			allocated;
} EventReadReceiver;

static void
eventread_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	EventReadReceiver *r = (EventReadReceiver *) self;
	MemoryContext oldcxt = MemoryContextSwitchTo(r->cxt);

	r->rows->tupdesc = CreateTupleDescCopy(typeinfo);
	MemoryContextSwitchTo(oldcxt);
}

/* The stored size of the row's values kept out of line (TOAST). */
static Size
eventread_external_bytes(TupleTableSlot *slot)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	Size		bytes = 0;
	int			i;

	slot_getallattrs(slot);
	for (i = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attlen != -1 || slot->tts_isnull[i])
			continue;
		if (VARATT_IS_EXTERNAL(DatumGetPointer(slot->tts_values[i])))
			bytes += toast_datum_size(slot->tts_values[i]);
	}
	return bytes;
}

/* Copy one row; false (stop the executor) once a bound is reached. */
static bool
eventread_receive(TupleTableSlot *slot, DestReceiver *self)
{
	EventReadReceiver *r = (EventReadReceiver *) self;
	ProjectionEventRows *rows = r->rows;
	MemoryContext oldcxt = MemoryContextSwitchTo(r->cxt);
	HeapTuple	tuple;

	if (rows->ntuples >= r->allocated)
	{
		r->allocated = Max(r->allocated * 2, 16);
		if (rows->tuples == NULL)
			rows->tuples = palloc(sizeof(HeapTuple) * r->allocated);
		else
			rows->tuples = repalloc(rows->tuples, sizeof(HeapTuple) * r->allocated);
	}
	tuple = ExecCopySlotHeapTuple(slot);
	rows->tuples[rows->ntuples++] = tuple;
	rows->bytes += HEAPTUPLESIZE + tuple->t_len;
	if (HeapTupleHasExternal(tuple))
		rows->bytes += eventread_external_bytes(slot);
	MemoryContextSwitchTo(oldcxt);

	if (rows->ntuples >= r->max_rows || rows->bytes >= r->max_bytes)
	{
		rows->full = true;
		return false;
	}
	return true;
}

static void
eventread_shutdown(DestReceiver *self)
{
}

static void
eventread_destroy(DestReceiver *self)
{
}

/*
 * Run a kept or unkept SELECT plan with the given parameters (nargs values
 * of the given types, none NULL) and the active snapshot (read_only), and
 * collect its rows into *rows, at most max_rows of them and, after the
 * first, no more once max_bytes are held.  rows->full says whether a bound
 * stopped the read (more rows may follow); the plan should carry a LIMIT
 * of max_rows too, for the planner's sake.  The rows and their descriptor
 * are allocated in "cxt".  Caller is connected to SPI; errors propagate.
 */
void
projection_read_events(SPIPlanPtr plan, int nargs, Oid *types, Datum *values,
					   int max_rows, Size max_bytes, MemoryContext cxt,
					   ProjectionEventRows *rows)
{
	EventReadReceiver receiver;
	SPIExecuteOptions options;
	ParamListInfo params = makeParamList(nargs);
	int			i;
	int			rc;

	for (i = 0; i < nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}

	memset(rows, 0, sizeof(*rows));
	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = eventread_receive;
	receiver.pub.rStartup = eventread_startup;
	receiver.pub.rShutdown = eventread_shutdown;
	receiver.pub.rDestroy = eventread_destroy;
	receiver.pub.mydest = DestNone;
	receiver.rows = rows;
	receiver.cxt = cxt;
	receiver.max_rows = Max(max_rows, 1);
	receiver.max_bytes = max_bytes;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.tcount = receiver.max_rows;
	options.dest = (DestReceiver *) &receiver;

	rc = SPI_execute_plan_extended(plan, &options);

	/*
	 * SPI reports a SELECT whose receiver is DestNone as a utility command;
	 * either way, no error means the rows are ours.
	 */
	if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute_plan_extended failed while reading events: %s",
			 SPI_result_code_string(rc));
}

/* ---------------------------------------------------------------------
 * Rows that are events (PROJECTION_EVENT_COLUMNS)
 * ---------------------------------------------------------------------
 */

/*
 * An event row's global_position, event_type and stream_id ("desc" is the
 * read's row descriptor, rows->tupdesc); the strings are palloc'd in the
 * current context.
 */
int64
projection_event_row_position(HeapTuple row, TupleDesc desc)
{
	bool		isnull;

	return DatumGetInt64(heap_getattr(row, Anum_events_global_position, desc, &isnull));
}

char *
projection_event_row_type(HeapTuple row, TupleDesc desc)
{
	bool		isnull;

	return TextDatumGetCString(heap_getattr(row, Anum_events_event_type, desc, &isnull));
}

char *
projection_event_row_stream(HeapTuple row, TupleDesc desc)
{
	bool		isnull;

	return TextDatumGetCString(heap_getattr(row, Anum_events_stream_id, desc, &isnull));
}

/*
 * The event as a projection.events composite datum, what a whole-row
 * reference gives (out-of-line values fetched into it), palloc'd in the
 * current context.
 */
Datum
projection_event_row_datum(HeapTuple row)
{
	TupleDesc	desc = lookup_rowtype_tupdesc(projection_oids()->events_type, -1);
	Datum		result;

	if (desc->natts != HeapTupleHeaderGetNatts(row->t_data))
		elog(ERROR, "an event row has %d columns, projection.events %d",
			 HeapTupleHeaderGetNatts(row->t_data), desc->natts);
	result = heap_copy_tuple_as_datum(row, desc);
	ReleaseTupleDesc(desc);
	return result;
}
