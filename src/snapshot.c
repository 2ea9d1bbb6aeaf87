/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  Snapshot projections: one state per stream, folded by a function of
 *	  the shape of aggregate()'s fold and stored by the extension.
 *
 * A snapshot projection is an ordinary projection (registry row, mode,
 * checkpoint, on_error, rebuild) whose only handler is a batch statement
 * (projection.on_batch) of the form
 *
 *		SELECT projection._snapshot_apply('name', array_agg(b)) FROM batch b
 *
 * so it is applied wherever and however batch statements are: in the
 * worker's transaction before its checkpoint, in the appending statement
 * (inline), over large batches in catch-up and rebuild, and event by event
 * when a batch fails (on_error then applies to the one failing event).
 * _snapshot_apply does, per batch: group the events by stream (sorted by
 * stream, then position), load the stored states with one query (locking
 * them, in stream order), fold each stream's events through fmgr (no SPI
 * per event), and write the changed states with one upsert (those that
 * existed) and one INSERT (the new ones).
 * Each state remembers the position and stream version of the last event
 * folded into it: events at or below that position are skipped, so
 * replaying events already applied changes nothing (a state is written
 * only when a later event was folded in, and the rows it replaces are
 * locked from the load to the write).
 *
 * snapshot(name, stream) reads the stored state and folds it forward with
 * the stream's events after its position (of the projection's types, less
 * its dead letters), so it is current however far the worker lags.
 *
 * Privileges: the tables are the extension's (not readable by PUBLIC) and
 * are read and written here as the bootstrap superuser, with fixed
 * statements only.  The fold always runs as the projection's owner, with
 * the projection's search_path, as every handler does.  Reading states
 * needs membership in the owner role or SELECT on projection.events (the
 * rule of status.last_error).
 *
 * IDENTIFICATION
 *	  src/snapshot.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "compat.h"
#include "eventread.h"
#include "handler.h"
#include "horizon.h"
#include "projection.h"
#include "snapshot.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_create_snapshot);
PG_FUNCTION_INFO_V1(projection_snapshot_apply);
PG_FUNCTION_INFO_V1(projection_snapshot);

/* a snapshot projection, as read from the registry */
typedef struct SnapshotDef
{
	int32		id;
	char	   *name;
	Oid			owner;
	char	   *search_path;
	Oid			fold;
	Datum		initial;		/* jsonb */
	bool		all_types;
	Datum		event_types;	/* text[], unless all_types */
	bool		fold_strict;
} SnapshotDef;

/* one event of a batch, for grouping */
typedef struct SnapshotEvent
{
	const char *stream_id;
	int64		position;
	int64		version;
	Datum		row;			/* the projection.events composite */
} SnapshotEvent;

/* the fold's call state: the FmgrInfo and contexts of one state's fold */
typedef struct SnapshotFold
{
	FmgrInfo	flinfo;
	bool		strict;
	MemoryContext event_cxt;	/* reset after every event */
	MemoryContext state_cxt;	/* holds the current state */
	MemoryContext spare_cxt;	/* the previous state's, swapped */
} SnapshotFold;

static SPIPlanPtr def_plan = NULL;
static SPIPlanPtr load_plan = NULL;
static SPIPlanPtr upsert_plan = NULL;
static SPIPlanPtr insert_plan = NULL;

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

/*
 * Prepare (once per backend) and keep one of our fixed statements.  The
 * statements name every object with its schema, so a kept plan re-planned
 * after DROP and CREATE EXTENSION finds the new tables.
 */
static SPIPlanPtr
snapshot_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*cache = plan;
	return plan;
}

/* Run a kept plan as the bootstrap superuser; the caller is connected to SPI. */
static void
snapshot_exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected,
				   const char *what)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, what);
}

/* The same for a one-off statement. */
static void
snapshot_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
			  int expected)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, sql);
}

static char *
snapshot_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *s;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", argname)));
	return s;
}

/*
 * Load the snapshot projection "name" into *def (in the caller's context
 * "cxt", saved before SPI_connect).  Raises UNDEFINED_OBJECT if there is no
 * such projection and WRONG_OBJECT_TYPE if it is not a snapshot projection.
 * The caller is connected to SPI.
 */
static void
snapshot_def_load(const char *name, SnapshotDef *def, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext oldcxt;

	values[0] = CStringGetTextDatum(name);
	snapshot_exec_plan(snapshot_plan(&def_plan,
									 "SELECT p.id, p.owner::pg_catalog.oid, p.search_path, "
									 "d.fold::pg_catalog.oid, d.initial, p.event_types "
									 "FROM projection.projections p "
									 "LEFT JOIN projection.snapshot_defs d "
									 "ON d.projection_id OPERATOR(pg_catalog.=) p.id "
									 "WHERE p.name OPERATOR(pg_catalog.=) $1",
									 1, types),
					   values, NULL, SPI_OK_SELECT, "reading a snapshot projection");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	(void) SPI_getbinval(tup, desc, 4, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("projection \"%s\" is not a snapshot projection", name),
				 errhint("Snapshot projections are created with projection.create_snapshot().")));

	oldcxt = MemoryContextSwitchTo(cxt);
	def->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	def->name = pstrdup(name);
	def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	def->search_path = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	def->fold = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	def->initial = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tup, desc, 5, &isnull)));
	def->event_types = SPI_getbinval(tup, desc, 6, &def->all_types);
	if (!def->all_types)
		def->event_types = PointerGetDatum(PG_DETOAST_DATUM_COPY(def->event_types));
	def->fold_strict = func_strict(def->fold);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * A fold must be f(state jsonb, e projection.events) RETURNS jsonb, not
 * temporary (it is stored), and executable by the caller.  The same errors
 * as aggregate() and create() give.
 */
static void
snapshot_check_fold(Oid fold)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;
	bool		is_temp;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fold)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 2 && proc->proargtypes.values[0] == JSONBOID &&
		proc->proargtypes.values[1] == projection_oids()->events_type &&
		proc->prorettype == JSONBOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	is_temp = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a fold function", format_procedure(fold)),
				 errdetail("A fold function must take (state jsonb, e projection.events) and return jsonb."),
				 errhint("Declare it as CREATE FUNCTION f(state jsonb, e projection.events) RETURNS jsonb.")));
	if (is_temp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("temporary function \"%s\" cannot be a fold function", get_func_name(fold)),
				 errdetail("A temporary function is dropped at the end of its session, and other sessions cannot call it.")));
	if (pg_proc_aclcheck(fold, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fold));
}

/* ---------------------------------------------------------------------
 * Folding
 * ---------------------------------------------------------------------
 */

static void
snapshot_fold_init(SnapshotFold *f, SnapshotDef *def)
{
	fmgr_info(def->fold, &f->flinfo);
	f->strict = def->fold_strict;
	f->event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot event",
										 ALLOCSET_DEFAULT_SIZES);
	f->state_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot state",
										 ALLOCSET_DEFAULT_SIZES);
	f->spare_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot state",
										 ALLOCSET_DEFAULT_SIZES);
}

/*
 * Fold one event into (*state, *state_null).  Memory stays flat whatever the
 * number of events, as in aggregate(): the call runs in a context reset
 * after it, and the new state is copied (detoasted) into one of two state
 * contexts, the previous one's being reset.  The result lives in
 * f->state_cxt until the next call (or snapshot_fold_reset).
 */
static void
snapshot_fold_event(SnapshotFold *f, Datum *state, bool *state_null, Datum event)
{
	Datum		result;
	MemoryContext oldcxt;

	LOCAL_FCINFO(call, 2);

	CHECK_FOR_INTERRUPTS();
	if (f->strict && *state_null)
		return;
	InitFunctionCallInfoData(*call, &f->flinfo, 2, InvalidOid, NULL, NULL);
	call->args[0].value = *state;
	call->args[0].isnull = *state_null;
	call->args[1].value = event;
	call->args[1].isnull = false;
	oldcxt = MemoryContextSwitchTo(f->event_cxt);
	result = FunctionCallInvoke(call);
	*state_null = call->isnull;
	if (!*state_null)
	{
		MemoryContext swap;

		MemoryContextSwitchTo(f->spare_cxt);
		*state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		swap = f->state_cxt;
		f->state_cxt = f->spare_cxt;
		f->spare_cxt = swap;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(f->spare_cxt);	/* the previous state */
	MemoryContextReset(f->event_cxt);
}

/* Forget the state contexts' contents (after the state was copied out). */
static void
snapshot_fold_reset(SnapshotFold *f)
{
	MemoryContextReset(f->state_cxt);
	MemoryContextReset(f->spare_cxt);
}

/* Enter the projection's owner scope (its role, SECURITY_RESTRICTED_OPERATION, its search_path). */
static void
snapshot_owner_enter(ProjectionOwnerScope *scope, SnapshotDef *def)
{
	ProjectionDef pdef;

	memset(&pdef, 0, sizeof(pdef));
	pdef.owner = def->owner;
	pdef.search_path = def->search_path;
	memset(scope, 0, sizeof(*scope));
	projection_owner_enter(scope, &pdef);
}

static int
snapshot_event_cmp(const void *a, const void *b)
{
	const SnapshotEvent *x = (const SnapshotEvent *) a;
	const SnapshotEvent *y = (const SnapshotEvent *) b;
	int			c = strcmp(x->stream_id, y->stream_id);

	if (c != 0)
		return c;
	return x->position < y->position ? -1 : (x->position > y->position ? 1 : 0);
}

/*
 * Write the states whose loaded position is non-zero (existing: upsert) or
 * zero (new: insert), as one statement; nothing if there are none.
 */
static void
snapshot_write(SPIPlanPtr *cache, int32 projection_id, Datum *ids, Datum *states,
			   bool *state_nulls, Datum *versions, Datum *positions, Datum *loaded,
			   int n, bool existing)
{
	Oid			types[5] = {INT4OID, TEXTARRAYOID, JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[5];
	Datum	   *w_ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *w_states = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *w_nulls = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *w_ver = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *w_pos = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1];
	int			lbs[1] = {1};
	int			m = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if ((DatumGetInt64(loaded[i]) != 0) != existing)
			continue;
		w_ids[m] = ids[i];
		w_states[m] = states[i];
		w_nulls[m] = state_nulls[i];
		w_ver[m] = versions[i];
		w_pos[m] = positions[i];
		m++;
	}
	if (m == 0)
		return;
	dims[0] = m;
	values[0] = Int32GetDatum(projection_id);
	values[1] = PointerGetDatum(construct_array(w_ids, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_md_array(w_states, w_nulls, 1, dims, lbs,
												   JSONBOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(w_ver, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(w_pos, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	snapshot_exec_plan(snapshot_plan(cache, existing ?
									 "INSERT INTO projection.snapshot_states AS s "
									 "(projection_id, stream_id, state, version, global_position) "
									 "SELECT $1, u.stream_id, u.state, u.version, u.global_position "
									 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
									 "pg_catalog.unnest($4), pg_catalog.unnest($5)) "
									 "AS u(stream_id, state, version, global_position) "
									 "ON CONFLICT (projection_id, stream_id) DO UPDATE "
									 "SET state = excluded.state, version = excluded.version, "
									 "global_position = excluded.global_position" :
									 "INSERT INTO projection.snapshot_states "
									 "(projection_id, stream_id, state, version, global_position) "
									 "SELECT $1, u.stream_id, u.state, u.version, u.global_position "
									 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
									 "pg_catalog.unnest($4), pg_catalog.unnest($5)) "
									 "AS u(stream_id, state, version, global_position)",
									 5, types),
					   values, NULL, SPI_OK_INSERT, "writing snapshot states");
}

/*
 * Events at or below their stream's stored position are skipped as folded in
 * already.  A dead letter of the projection never was: it is one only
 * retry_dead_letters hands over, after later events of its stream were
 * folded.  Skipping it would report it applied and delete the dead letter,
 * so that nothing would say any more what the states lack: refuse it
 * (55000), which leaves it a dead letter.  "skipped" holds the positions.
 */
static void
snapshot_check_skipped(SnapshotDef *def, Datum *skipped, int nskipped)
{
	static SPIPlanPtr dead_plan = NULL;
	Oid			types[2] = {TEXTOID, INT8ARRAYOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(def->name);
	values[1] = PointerGetDatum(construct_array(skipped, nskipped, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	snapshot_exec_plan(snapshot_plan(&dead_plan,
									 "SELECT pg_catalog.min(d.global_position) "
									 "FROM projection.dead_letters d "
									 "WHERE d.name OPERATOR(pg_catalog.=) $1 "
									 "AND d.global_position OPERATOR(pg_catalog.=) ANY ($2)",
									 2, types),
					   values, NULL, SPI_OK_SELECT, "reading dead letters");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot fold the event at position %lld into snapshot projection \"%s\"",
						(long long) DatumGetInt64(d), def->name),
				 errdetail("The stored state of its stream already includes later events."),
				 errhint("Rebuild the projection to fold every event in order.")));
}

/* ---------------------------------------------------------------------
 * projection._snapshot_apply
 * ---------------------------------------------------------------------
 */

/*
 * _snapshot_apply(name, events projection.events[]) RETURNS bigint: fold a
 * batch of events into the stored states of snapshot projection "name";
 * returns the number of states written.  Called by the projection's batch
 * statement, as its owner; refused (42501) for anyone not a member of the
 * owner role.  Events are taken in (stream, position) order whatever the
 * array's order; an event at or below its stream's stored position is
 * skipped.  The fold's errors propagate (the batch machinery then retries
 * event by event and applies on_error).
 */
Datum
projection_snapshot_apply(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	MemoryContext cxt = CurrentMemoryContext;
	Oid			events_type = projection_oids()->events_type;
	SnapshotDef def;
	TupleDesc	rowdesc;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	SnapshotEvent *events;
	int			nevents = 0;
	int			nstreams = 0;
	Datum	   *stream_ids;
	int			i;
	int			g;
	SnapshotFold fold;
	ProjectionOwnerScope scope;
	bool		in_scope;
	/* loaded states, in stream order */
	int			nloaded;
	char	  **loaded_ids;
	Datum	   *loaded_states;
	bool	   *loaded_null;
	int64	   *loaded_pos;
	int64	   *loaded_ver;
	int			li;
	/* changed states */
	int			nout = 0;
	Datum	   *out_ids;
	Datum	   *out_states;
	bool	   *out_null;
	Datum	   *out_ver;
	Datum	   *out_pos;
	Datum	   *out_loaded;		/* the position each was loaded at (0: none) */
	Datum	   *skipped;		/* events at or below their stored state */
	int			nskipped = 0;

	if (ARR_ELEMTYPE(arr) != events_type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("events must be an array of projection.events")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	snapshot_def_load(name, &def, cxt);
	if (!has_privs_of_role(GetUserId(), def.owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", name),
				 errdetail("Only the projection's own batch statement writes its states.")));

	/* the events, sorted by stream and position */
	deconstruct_array(arr, events_type, -1, false, TYPALIGN_DOUBLE, &elems, &elem_nulls, &nelems);
	rowdesc = lookup_rowtype_tupdesc_copy(events_type, -1);
	events = palloc(sizeof(SnapshotEvent) * Max(nelems, 1));
	for (i = 0; i < nelems; i++)
	{
		HeapTupleHeader th;
		HeapTupleData tmp;
		bool		isnull;
		Datum		d;

		if (elem_nulls[i])
			continue;
		th = DatumGetHeapTupleHeader(elems[i]);
		tmp.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tmp.t_self);
		tmp.t_tableOid = InvalidOid;
		tmp.t_data = th;
		d = heap_getattr(&tmp, Anum_events_global_position, rowdesc, &isnull);
		if (isnull)
			continue;
		events[nevents].position = DatumGetInt64(d);
		d = heap_getattr(&tmp, Anum_events_stream_id, rowdesc, &isnull);
		if (isnull)
			continue;
		events[nevents].stream_id = TextDatumGetCString(d);
		d = heap_getattr(&tmp, Anum_events_stream_version, rowdesc, &isnull);
		events[nevents].version = isnull ? 0 : DatumGetInt64(d);
		events[nevents].row = PointerGetDatum(th);
		nevents++;
	}
	if (nevents == 0)
	{
		if (SPI_finish() != SPI_OK_FINISH)
			elog(ERROR, "SPI_finish failed");
		PG_RETURN_INT64(0);
	}
	qsort(events, nevents, sizeof(SnapshotEvent), snapshot_event_cmp);
	stream_ids = palloc(sizeof(Datum) * nevents);
	for (i = 0; i < nevents; i++)
		if (i == 0 || strcmp(events[i].stream_id, events[i - 1].stream_id) != 0)
			stream_ids[nstreams++] = CStringGetTextDatum(events[i].stream_id);

	/*
	 * Load (and lock, in stream order, so that concurrent inline batches
	 * take the locks in one order) the stored states of these streams.
	 */
	{
		Oid			types[2] = {INT4OID, TEXTARRAYOID};
		Datum		values[2];
		MemoryContext oldcxt;

		values[0] = Int32GetDatum(def.id);
		values[1] = PointerGetDatum(construct_array(stream_ids, nstreams, TEXTOID, -1, false,
													TYPALIGN_INT));
		snapshot_exec_plan(snapshot_plan(&load_plan,
										 "SELECT s.stream_id, s.state, s.global_position, s.version "
										 "FROM projection.snapshot_states s "
										 "WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
										 "AND s.stream_id OPERATOR(pg_catalog.=) ANY ($2) "
										 "ORDER BY s.stream_id COLLATE \"C\" FOR UPDATE",
										 2, types),
						   values, NULL, SPI_OK_SELECT, "loading snapshot states");
		nloaded = (int) SPI_processed;
		oldcxt = MemoryContextSwitchTo(cxt);
		loaded_ids = palloc(sizeof(char *) * Max(nloaded, 1));
		loaded_states = palloc(sizeof(Datum) * Max(nloaded, 1));
		loaded_null = palloc(sizeof(bool) * Max(nloaded, 1));
		loaded_pos = palloc(sizeof(int64) * Max(nloaded, 1));
		loaded_ver = palloc(sizeof(int64) * Max(nloaded, 1));
		for (i = 0; i < nloaded; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		st;

			loaded_ids[i] = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
			st = SPI_getbinval(tup, desc, 2, &loaded_null[i]);
			loaded_states[i] = loaded_null[i] ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
			loaded_pos[i] = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			loaded_ver[i] = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		}
		MemoryContextSwitchTo(oldcxt);
		SPI_freetuptable(SPI_tuptable);
	}

	/* fold each stream's new events, as the owner */
	out_ids = palloc(sizeof(Datum) * nstreams);
	out_states = palloc(sizeof(Datum) * nstreams);
	out_null = palloc(sizeof(bool) * nstreams);
	out_ver = palloc(sizeof(Datum) * nstreams);
	out_pos = palloc(sizeof(Datum) * nstreams);
	out_loaded = palloc(sizeof(Datum) * nstreams);
	skipped = palloc(sizeof(Datum) * nevents);
	in_scope = !(GetUserId() == def.owner && InSecurityRestrictedOperation());
	if (in_scope)
		snapshot_owner_enter(&scope, &def);
	snapshot_fold_init(&fold, &def);
	li = 0;
	for (g = 0, i = 0; g < nstreams; g++)
	{
		const char *sid = events[i].stream_id;
		Datum		state = def.initial;
		bool		state_null = false;
		int64		pos = 0;
		int64		ver = 0;
		bool		changed = false;
		int64		loaded = 0;

		while (li < nloaded && strcmp(loaded_ids[li], sid) < 0)
			li++;
		if (li < nloaded && strcmp(loaded_ids[li], sid) == 0)
		{
			state = loaded_states[li];
			state_null = loaded_null[li];
			pos = loaded_pos[li];
			ver = loaded_ver[li];
			loaded = pos;
		}
		for (; i < nevents && strcmp(events[i].stream_id, sid) == 0; i++)
		{
			if (events[i].position <= pos)
			{
				/* folded in already (a replay), unless it is a dead letter */
				if (events[i].position <= loaded)
					skipped[nskipped++] = Int64GetDatum(events[i].position);
				continue;
			}
			snapshot_fold_event(&fold, &state, &state_null, events[i].row);
			pos = events[i].position;
			ver = events[i].version;
			changed = true;
		}
		if (changed)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

			out_ids[nout] = CStringGetTextDatum(sid);
			out_null[nout] = state_null;
			out_states[nout] = state_null ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(state));
			out_ver[nout] = Int64GetDatum(ver);
			out_pos[nout] = Int64GetDatum(pos);
			out_loaded[nout] = Int64GetDatum(loaded);
			nout++;
			MemoryContextSwitchTo(oldcxt);
		}
		snapshot_fold_reset(&fold);
	}
	if (in_scope)
		projection_owner_leave(&scope);
	if (nskipped > 0)
		snapshot_check_skipped(&def, skipped, nskipped);

	/*
	 * Write the changed states: the ones loaded (and locked) with one
	 * upsert, which always updates them (through the primary key, whatever
	 * the number of states); the new ones with one plain INSERT.  A stream
	 * whose first state another transaction is creating at the same time
	 * (possible only inline, with explicit stream versions in concurrent
	 * INSERTs) then fails with a unique violation, to be retried, instead
	 * of overwriting the other's state.
	 */
	snapshot_write(&upsert_plan, def.id, out_ids, out_states, out_null, out_ver, out_pos,
				   out_loaded, nout, true);
	snapshot_write(&insert_plan, def.id, out_ids, out_states, out_null, out_ver, out_pos,
				   out_loaded, nout, false);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(nout);
}

/* ---------------------------------------------------------------------
 * projection.snapshot
 * ---------------------------------------------------------------------
 */

/* events read per batch by snapshot() */
#define SNAPSHOT_READ_ROWS 1000

/*
 * snapshot(name, stream_id) RETURNS jsonb: the stream's current state in
 * snapshot projection "name": its stored state (or the initial state)
 * folded forward, as the owner, with the stream's events after the stored
 * position, of the projection's event types, less its dead letters (the
 * events the projection skipped).  Needs membership in the owner role or
 * SELECT on projection.events (42501).
 */
Datum
projection_snapshot(PG_FUNCTION_ARGS)
{
	char	   *name = snapshot_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	SnapshotDef def;
	text	   *stream_id;
	Datum		state;
	bool		state_null = false;
	int64		pos = 0;
	SnapshotFold fold;
	ProjectionOwnerScope scope;
	MemoryContext batch_cxt;
	SPIPlanPtr	plan;
	Oid			types[5] = {TEXTOID, INT8OID, TEXTARRAYOID, TEXTOID, INT8OID};
	Datum		values[5];

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "stream_id")));
	stream_id = PG_GETARG_TEXT_PP(1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	snapshot_def_load(name, &def, cxt);
	if (!has_privs_of_role(GetUserId(), def.owner) &&
		pg_class_aclcheck(projection_oids()->events, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for snapshot projection \"%s\"", name),
				 errdetail("Reading a snapshot needs the SELECT privilege on projection.events, or membership in the projection's owner role."),
				 errhint("Grant it with GRANT SELECT ON projection.events TO %s.",
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));

	/* the stored state */
	{
		Oid			stypes[2] = {INT4OID, TEXTOID};
		Datum		svalues[2];

		svalues[0] = Int32GetDatum(def.id);
		svalues[1] = PointerGetDatum(stream_id);
		snapshot_exec("SELECT s.state, s.global_position FROM projection.snapshot_states s "
					  "WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
					  "AND s.stream_id OPERATOR(pg_catalog.=) $2",
					  2, stypes, svalues, NULL, SPI_OK_SELECT);
	}
	state = def.initial;
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		st = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &state_null);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		if (!state_null)
			state = PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
		MemoryContextSwitchTo(oldcxt);
		pos = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}

	/* the events after it, in batches, as the extension (the caller's right was checked) */
	plan = SPI_prepare(psprintf("SELECT e, e.global_position FROM projection.events e "
					   "WHERE e.stream_id OPERATOR(pg_catalog.=) $1 "
					   "AND e.global_position OPERATOR(pg_catalog.>) $2 "
					   "AND (%s) "
					   "AND NOT EXISTS (SELECT 1 FROM projection.dead_letters d "
					   "WHERE d.name OPERATOR(pg_catalog.=) $4 "
					   "AND d.global_position OPERATOR(pg_catalog.=) e.global_position) "
					   "ORDER BY e.global_position LIMIT $5",
					   def.all_types ? "$3 IS NOT NULL" : "e.event_type OPERATOR(pg_catalog.=) ANY ($3)"),
					   5, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = PointerGetDatum(stream_id);
	/* every type: an empty array, which the query does not read */
	values[2] = def.all_types ? PointerGetDatum(construct_empty_array(TEXTOID)) : def.event_types;
	values[3] = CStringGetTextDatum(def.name);
	values[4] = Int64GetDatum(SNAPSHOT_READ_ROWS);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot batch",
									  ALLOCSET_DEFAULT_SIZES);
	snapshot_fold_init(&fold, &def);
	for (;;)
	{
		ProjectionEventRows rows;
		Oid			save_userid;
		int			save_sec_context;
		int			i;

		values[1] = Int64GetDatum(pos);
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		projection_read_events(plan, 5, types, values, SNAPSHOT_READ_ROWS,
							   PROJECTION_BATCH_BYTES, batch_cxt, &rows);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		if (rows.ntuples > 0)
		{
			snapshot_owner_enter(&scope, &def);
			for (i = 0; i < rows.ntuples; i++)
			{
				bool		isnull;
				Datum		event = SPI_getbinval(rows.tuples[i], rows.tupdesc, 1, &isnull);

				pos = DatumGetInt64(SPI_getbinval(rows.tuples[i], rows.tupdesc, 2, &isnull));
				snapshot_fold_event(&fold, &state, &state_null, event);
			}
			projection_owner_leave(&scope);
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

/* ---------------------------------------------------------------------
 * projection.create_snapshot
 * ---------------------------------------------------------------------
 */

/*
 * create_snapshot(name, fold, initial, event_types, mode, on_error): check
 * the fold, then create() the projection without a handler (as the caller,
 * so create's own checks and errors apply: privileges, mode, on_error,
 * event types, duplicate name), record its fold and initial state, and add
 * its batch statement with on_batch().  An async projection starts from the
 * beginning and catches up in the worker; an inline one is created at the
 * end and rebuilt at once (create()'s own inline catch-up would run before
 * the batch statement exists).  Everything in the caller's transaction:
 * an error leaves nothing behind.
 */
Datum
projection_create_snapshot(PG_FUNCTION_ARGS)
{
	char	   *name = snapshot_text_arg(fcinfo, 0, "name");
	char	   *mode;
	char	   *on_error;
	Oid			fold;
	bool		is_inline;
	StringInfoData stmt;
	int			rc;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "fold")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "initial")));
	mode = snapshot_text_arg(fcinfo, 4, "mode");
	on_error = snapshot_text_arg(fcinfo, 5, "on_error");
	fold = PG_GETARG_OID(1);
	is_inline = strcmp(mode, "inline") == 0;
	snapshot_check_fold(fold);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[5] = {TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(name);
		if (PG_ARGISNULL(3))
			nulls[1] = 'n';
		else
			values[1] = PG_GETARG_DATUM(3);
		values[2] = CStringGetTextDatum(mode);
		values[3] = CStringGetTextDatum(is_inline ? "end" : "beginning");
		values[4] = CStringGetTextDatum(on_error);
		rc = SPI_execute_with_args("SELECT projection.create($1, NULL::pg_catalog.regproc, $2, $3, "
								   "'{}'::pg_catalog.regclass[], $4, $5)",
								   5, types, values, nulls, false, 0);
		projection_spi_check(rc, SPI_OK_SELECT, "creating a snapshot projection");
	}
	{
		Oid			types[3] = {TEXTOID, OIDOID, JSONBOID};
		Datum		values[3];

		values[0] = CStringGetTextDatum(name);
		values[1] = ObjectIdGetDatum(fold);
		values[2] = PG_GETARG_DATUM(2);
		snapshot_exec("INSERT INTO projection.snapshot_defs (projection_id, fold, initial) "
					  "SELECT p.id, $2::pg_catalog.regprocedure, $3 FROM projection.projections p "
					  "WHERE p.name OPERATOR(pg_catalog.=) $1",
					  3, types, values, NULL, SPI_OK_INSERT);
		if (SPI_processed != 1)
			elog(ERROR, "projection \"%s\" was not created", name);
	}
	initStringInfo(&stmt);
	appendStringInfo(&stmt,
					 "SELECT projection._snapshot_apply(%s, pg_catalog.array_agg(b::projection.events)) FROM batch b",
					 quote_literal_cstr(name));
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2];

		values[0] = CStringGetTextDatum(name);
		values[1] = CStringGetTextDatum(stmt.data);
		rc = SPI_execute_with_args("SELECT projection.on_batch($1, $2)",
								   2, types, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_SELECT, "adding the batch statement of a snapshot projection");
	}
	if (is_inline && projection_sequence_last_value() > 0)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		rc = SPI_execute_with_args("SELECT projection.rebuild($1)",
								   1, types, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_SELECT, "catching up an inline snapshot projection");
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Rebuild
 * ---------------------------------------------------------------------
 */

/*
 * A rebuild (or create with if_not_empty => 'empty') empties a projection's
 * read model: for a snapshot projection, its states.  DELETE, so readers see
 * the old states until the rebuild commits.  Nothing for other projections,
 * or in a database whose extension predates version 1.3.
 */
void
projection_snapshot_forget(int32 projection_id)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("snapshot_states", nsp)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(projection_id);
	snapshot_exec("DELETE FROM projection.snapshot_states "
				  "WHERE projection_id OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, SPI_OK_DELETE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}
