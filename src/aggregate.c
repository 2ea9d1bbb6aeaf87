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
	Datum		state;
	bool		state_null = false;
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;
	bool		strict;
	FmgrInfo	flinfo;
	Oid			types[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan;
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext event_cxt;
	MemoryContext batch_cxt;
	MemoryContext state_cxt;
	MemoryContext spare_cxt;
	const ProjectionOids *o;

	projection_require_arg(fcinfo, 0, "stream_id");
	projection_require_arg(fcinfo, 1, "fold");
	projection_require_arg(fcinfo, 2, "initial");
	stream_id = PG_GETARG_TEXT_PP(0);
	fold = PG_GETARG_OID(1);
	state = PG_GETARG_DATUM(2);
	o = projection_oids();
	/* the events are read as the caller anyway: say what to grant */
	projection_check_events_privilege(ACL_SELECT, "Aggregating a stream");

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fold)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 2 && proc->proargtypes.values[0] == JSONBOID &&
		proc->proargtypes.values[1] == o->events_type &&
		proc->prorettype == JSONBOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	strict = proc->proisstrict;
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a fold function", format_procedure(fold)),
				 errdetail("A fold function must take (state jsonb, e projection.events) and return jsonb.")));
	if (pg_proc_aclcheck(fold, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fold));
	fmgr_info(fold, &flinfo);

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
	 * Memory stays flat whatever the stream's length, as for an aggregate's
	 * transition value: the fold runs in a context reset after every event,
	 * and only the current state survives it, copied (detoasted, so it
	 * points into neither the event rows nor a table) into one of two state
	 * contexts, the previous state's being reset then.  The events come in
	 * batches bounded by rows and by projection.batch_bytes, each after the
	 * last version of the one before and read with the same active snapshot
	 * (so together they see what one query would), freed after each: a
	 * cursor's fetch would hold a whole fetch of events of any size.
	 */
	event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate event",
									  ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate batch",
									  ALLOCSET_DEFAULT_SIZES);
	state_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate state",
									  ALLOCSET_DEFAULT_SIZES);
	spare_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection aggregate state",
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
			Datum		result;
			MemoryContext oldcxt;

			LOCAL_FCINFO(call, 2);

			values[1] = SPI_getbinval(rows.tuples[i], rows.tupdesc, 2, &isnull);
			CHECK_FOR_INTERRUPTS();
			if (strict && state_null)
				continue;
			InitFunctionCallInfoData(*call, &flinfo, 2, InvalidOid, NULL, NULL);
			call->args[0].value = state;
			call->args[0].isnull = state_null;
			call->args[1].value = event;
			call->args[1].isnull = false;
			oldcxt = MemoryContextSwitchTo(event_cxt);
			result = FunctionCallInvoke(call);
			state_null = call->isnull;
			if (!state_null)
			{
				MemoryContext swap;

				MemoryContextSwitchTo(spare_cxt);
				state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
				swap = state_cxt;
				state_cxt = spare_cxt;
				spare_cxt = swap;
			}
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(spare_cxt);	/* the previous state */
			MemoryContextReset(event_cxt);
		}
		MemoryContextReset(batch_cxt);
		if (!rows.full)
			break;
	}
	SPI_freeplan(plan);

	/* the state lives in SPI memory: copy it out before SPI_finish */
	if (!state_null)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		state = PointerGetDatum(PG_DETOAST_DATUM_COPY(state));
		MemoryContextSwitchTo(oldcxt);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (state_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(state);
}
