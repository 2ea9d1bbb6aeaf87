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
 * The bytes counted are those of the copied rows as they are held: the
 * whole-row value of an event carries its data as stored inline, compressed
 * or not (out-of-line values are fetched into the row), which is what the
 * batch costs until the caller frees it.
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

#include "access/htup_details.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/memutils.h"

#include "eventread.h"

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
