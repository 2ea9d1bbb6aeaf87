/*-------------------------------------------------------------------------
 *
 * aggregate.c
 *	  projection.aggregate(): fold one stream's events into a state with a
 *	  user function, live, in the caller's transaction.
 *
 * The fold runs as the caller (it is the caller's function); reading the
 * events needs SELECT on projection.events.  Takes no locks beyond the
 * snapshot's.
 *
 * IDENTIFICATION
 *	  src/aggregate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "eventread.h"
#include "events.h"
#include "projection.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_aggregate);

/* ---------------------------------------------------------------------
 * projection.aggregate
 * ---------------------------------------------------------------------
 */

/* events per batch of aggregate() */
#define AGGREGATE_BATCH_ROWS 1000

/*
 * The fold of aggregate() and the state it carries.  Memory stays flat
 * whatever the stream's length, as for an aggregate's transition value: the
 * fold runs in event_cxt, reset after every event, and only the current
 * state survives it, copied (detoasted, so it points into neither the event
 * rows nor a table) into one of two state contexts, the previous state's
 * being reset then.
 */
typedef struct AggregateFold
{
	FmgrInfo	flinfo;
	bool		strict;
	Datum		state;
	bool		state_null;
	MemoryContext event_cxt;
	MemoryContext state_cxt;
	MemoryContext spare_cxt;
} AggregateFold;

/*
 * A fold must be fold(state jsonb, e projection.events) RETURNS jsonb,
 * executable by the caller; sets up f->flinfo and f->strict.
 */
static void
aggregate_check_fold(Oid fold, AggregateFold *f)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fold)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 2 && proc->proargtypes.values[0] == JSONBOID &&
		proc->proargtypes.values[1] == projection_oids()->events_type &&
		proc->prorettype == JSONBOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	f->strict = proc->proisstrict;
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a fold function", format_procedure(fold)),
				 errdetail("A fold function must take (state jsonb, e projection.events) and return jsonb.")));
	if (pg_proc_aclcheck(fold, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fold));
	fmgr_info(fold, &f->flinfo);
}

/* Fold one event into f->state (see AggregateFold for the memory). */
static void
aggregate_fold_event(AggregateFold *f, Datum event)
{
	Datum		result;
	MemoryContext oldcxt;

	LOCAL_FCINFO(call, 2);

	if (f->strict && f->state_null)
		return;
	InitFunctionCallInfoData(*call, &f->flinfo, 2, InvalidOid, NULL, NULL);
	call->args[0].value = f->state;
	call->args[0].isnull = f->state_null;
	call->args[1].value = event;
	call->args[1].isnull = false;
	oldcxt = MemoryContextSwitchTo(f->event_cxt);
	result = FunctionCallInvoke(call);
	f->state_null = call->isnull;
	if (!f->state_null)
	{
		MemoryContext swap;

		MemoryContextSwitchTo(f->spare_cxt);
		f->state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		swap = f->state_cxt;
		f->state_cxt = f->spare_cxt;
		f->spare_cxt = swap;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(f->spare_cxt);	/* the previous state */
	MemoryContextReset(f->event_cxt);
}

/*
 * aggregate(stream_id, fold regproc, initial jsonb) RETURNS jsonb: fold one
 * stream's events in version order through fold(state jsonb, e
 * projection.events) RETURNS jsonb.  Runs as the caller, who needs SELECT on
 * projection.events and EXECUTE on the fold.
 */
Datum
projection_aggregate(PG_FUNCTION_ARGS)
{
	text	   *stream_id;
	Oid			fold;
	AggregateFold f;
	Oid			types[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext batch_cxt;

	projection_require_arg(fcinfo, 0, "stream_id");
	projection_require_arg(fcinfo, 1, "fold");
	projection_require_arg(fcinfo, 2, "initial");
	stream_id = PG_GETARG_TEXT_PP(0);
	fold = PG_GETARG_OID(1);
	f.state = PG_GETARG_DATUM(2);
	f.state_null = false;
	(void) projection_oids();
	/* the events are read as the caller anyway: say what to grant */
	projection_check_events_privilege(ACL_SELECT, "Aggregating a stream");
	aggregate_check_fold(fold, &f);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare("SELECT e, e.stream_version FROM projection.events e "
					   "WHERE e.stream_id OPERATOR(pg_catalog.=) $1 "
					   "AND e.stream_version OPERATOR(pg_catalog.>) $2 "
					   "ORDER BY e.stream_version LIMIT $3", 3, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = PointerGetDatum(stream_id);
	values[1] = Int64GetDatum(0);
	values[2] = Int64GetDatum(AGGREGATE_BATCH_ROWS);

	/*
	 * The events come in batches bounded by rows and by
	 * projection.batch_bytes, each after the last version of the one before
	 * and read with the same active snapshot (so together they see what one
	 * query would), freed after each: a cursor's fetch would hold a whole
	 * fetch of events of any size.
	 */
	f.event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate event",
										ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate batch",
									  ALLOCSET_DEFAULT_SIZES);
	f.state_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate state",
										ALLOCSET_DEFAULT_SIZES);
	f.spare_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate state",
										ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		int			i;
		ProjectionEventRows rows;

		projection_read_events(plan, 3, types, values, AGGREGATE_BATCH_ROWS,
							   PROJECTION_BATCH_BYTES, batch_cxt, &rows);
		for (i = 0; i < rows.ntuples; i++)
		{
			bool		isnull;
			Datum		event = SPI_getbinval(rows.tuples[i], rows.tupdesc, 1, &isnull);

			values[1] = SPI_getbinval(rows.tuples[i], rows.tupdesc, 2, &isnull);
			CHECK_FOR_INTERRUPTS();
			aggregate_fold_event(&f, event);
		}
		MemoryContextReset(batch_cxt);
		if (!rows.full)
			break;
	}
	SPI_freeplan(plan);

	/* the state lives in SPI memory: copy it out before SPI_finish */
	if (!f.state_null)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		f.state = PointerGetDatum(PG_DETOAST_DATUM_COPY(f.state));
		MemoryContextSwitchTo(oldcxt);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (f.state_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(f.state);
}
