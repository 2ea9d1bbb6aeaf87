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

#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "eventread.h"
#include "events.h"
#include "foldexpr.h"
#include "projection.h"
#include "snapfold.h"
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
 * being reset then.  A fold with an SQL-standard body is evaluated as an
 * expression (foldexpr.c) instead of being called.
 */
typedef struct AggregateFold
{
	FmgrInfo	flinfo;
	bool		strict;
	bool		immutable;
	bool		use_expr;
	FoldExpr	expr;
	Datum		state;
	bool		state_null;
	MemoryContext event_cxt;
	MemoryContext state_cxt;
	MemoryContext spare_cxt;
} AggregateFold;

/*
 * A fold must be fold(state jsonb, e projection.events) RETURNS jsonb,
 * executable by the caller; sets up f->flinfo, f->strict and how it is
 * called (f->use_expr, f->expr, in the current context).
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
	f->immutable = proc->provolatile == PROVOLATILE_IMMUTABLE;
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a fold function", format_procedure(fold)),
				 errdetail("A fold function must take (state jsonb, e projection.events) and return jsonb.")));
	if (pg_proc_aclcheck(fold, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fold));
	fmgr_info(fold, &f->flinfo);
	f->use_expr = projection_fold_expr_begin(&f->expr, fold);
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
	oldcxt = MemoryContextSwitchTo(f->event_cxt);
	if (f->use_expr)
		result = projection_fold_expr_eval(&f->expr, f->state, f->state_null, NULL, event,
										   &f->state_null);
	else
	{
		InitFunctionCallInfoData(*call, &f->flinfo, 2, InvalidOid, NULL, NULL);
		call->args[0].value = f->state;
		call->args[0].isnull = f->state_null;
		call->args[1].value = event;
		call->args[1].isnull = false;
		result = FunctionCallInvoke(call);
		f->state_null = call->isnull;
	}
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
 * Run a fixed SELECT on the extension's tables as the bootstrap superuser
 * (the caller may read events, which is what reading snapshot states needs),
 * with the active snapshot (read_only): the state and the events after it
 * are read in one snapshot, as one query would read them.
 */
static void
aggregate_exec_read(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, Datum *values)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	SPIPlanPtr	kept = projection_kept_plan(plan, sql, nargs, types);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(kept, values, NULL, true, 1);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, SPI_OK_SELECT, "reading snapshot states for aggregate()");
}

/*
 * Start the fold from a stored snapshot state when one gives exactly what
 * folding every event gives: returns true and sets f->state (copied into
 * f->state_cxt) and *after_version (the stream version folded in) if so.
 * A state of a snapshot projection is used only if all of these hold:
 *  - the fold is IMMUTABLE (its result depends on its arguments only, so
 *    folding as the projection's owner, with its search_path, gave what
 *    folding as the caller gives), and still has the definition the
 *    projection's states started from (snapshot_defs.fold_definition, set by
 *    create_snapshot and rebuild: a state folded partly by an older body of
 *    the fold is not used);
 *  - the projection's initial state is the same jsonb value, byte for byte
 *    (its text: '{"n": 1.0}' and '{"n": 1}' are equal jsonb but a fold can
 *    tell them apart);
 *  - it folds every event type (event_types NULL), and has since its states
 *    began (alter() of its event types clears fold_definition, see
 *    projection_snapshot_types_changed), and is async (an inline
 *    state of a stream can lack an event of that stream inserted with an
 *    explicit stream_version by a concurrent transaction that committed
 *    after a later one folded);
 *  - it has no dead letter of this stream (a skipped event is not in the
 *    state);
 *  - the stream's events are in the same order by version (aggregate()'s
 *    order) as by position (the projection's): plain INSERTs with explicit
 *    versions can make them differ;
 *  - projection.events has no row-level security in force for the caller
 *    (the state folded events the caller might not see).
 * A paused, failed or lagging projection's state is fine (the events after
 * it are folded here); a rebuild in progress elsewhere leaves the old states
 * and the old definition visible until it commits.  The freshest matching
 * state wins.  Caller is connected to SPI.
 */
static bool
aggregate_from_snapshot(text *stream_id, Oid fold, Datum initial, AggregateFold *f,
						int64 *after_version)
{
	static SPIPlanPtr state_plan = NULL;
	static SPIPlanPtr order_plan = NULL;
	Oid			types[4] = {TEXTOID, OIDOID, JSONBOID, TEXTOID};
	Datum		values[4];
	char	   *digest;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		st;
	bool		st_null;
	char	   *name;
	MemoryContext oldcxt;

	if (!f->immutable || !projection_snapshot_has_fold_definition())
		return false;
	if (check_enable_rls(projection_oids()->events, InvalidOid, true) != RLS_NONE)
		return false;
	digest = projection_snapshot_fold_definition(fold);
	if (digest == NULL)
		return false;
	values[0] = PointerGetDatum(stream_id);
	values[1] = ObjectIdGetDatum(fold);
	values[2] = initial;
	values[3] = CStringGetTextDatum(digest);
	aggregate_exec_read(&state_plan,
						"SELECT s.state, s.version, p.name FROM projection.snapshot_defs d "
						"JOIN projection.projections p ON p.id OPERATOR(pg_catalog.=) d.projection_id "
						"JOIN projection.snapshot_states s "
						"ON s.projection_id OPERATOR(pg_catalog.=) d.projection_id "
						"AND s.stream_id OPERATOR(pg_catalog.=) $1 "
						"WHERE d.fold::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
						"AND d.initial::pg_catalog.text OPERATOR(pg_catalog.=) $3::pg_catalog.text "
						"AND d.fold_definition OPERATOR(pg_catalog.=) $4 "
						"AND p.event_types IS NULL AND p.mode OPERATOR(pg_catalog.=) 'async' "
						"AND NOT EXISTS (SELECT 1 FROM projection.dead_letters l "
						"WHERE l.name OPERATOR(pg_catalog.=) p.name "
						"AND l.stream_id OPERATOR(pg_catalog.=) $1) "
						"ORDER BY s.global_position DESC LIMIT 1",
						4, types, values);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	st = SPI_getbinval(tup, desc, 1, &st_null);
	*after_version = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	oldcxt = MemoryContextSwitchTo(f->state_cxt);
	f->state_null = st_null;
	if (!st_null)
		f->state = PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
	name = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);

	/* one order for the stream, by version and by position */
	aggregate_exec_read(&order_plan,
						"SELECT EXISTS (SELECT 1 FROM (SELECT e.global_position OPERATOR(pg_catalog.<) "
						"pg_catalog.lag(e.global_position) OVER (ORDER BY e.stream_version) AS back "
						"FROM projection.events e WHERE e.stream_id OPERATOR(pg_catalog.=) $1) x "
						"WHERE x.back)",
						1, types, values);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		elog(DEBUG1, "aggregate() of stream \"%s\" folds every event: its versions are not in position order",
			 text_to_cstring(stream_id));
		SPI_freetuptable(SPI_tuptable);
		f->state = initial;
		f->state_null = false;
		MemoryContextReset(f->state_cxt);
		*after_version = 0;
		return false;
	}
	SPI_freetuptable(SPI_tuptable);
	elog(DEBUG1, "aggregate() of stream \"%s\" starts from snapshot projection \"%s\" at version %lld",
		 text_to_cstring(stream_id), name, (long long) *after_version);
	return true;
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
	{
		int64		after = 0;

		if (aggregate_from_snapshot(stream_id, fold, f.state, &f, &after))
			values[1] = Int64GetDatum(after);
	}
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
	projection_fold_expr_end(&f.expr);

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
