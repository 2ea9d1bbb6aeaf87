/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions of the projection extension: append, create,
 *	  on, drop, pause, resume, rebuild, wait, aggregate, and internal helpers.
 *
 * Every function validates all of its arguments before its first write, so
 * bad input changes nothing.  The registry tables are not writable by users:
 * these functions check ownership themselves and then write the registry as
 * the bootstrap superuser (registry_exec), running no user code meanwhile.
 * User code (handlers, statements, folds) always runs as the projection's
 * owner or the caller, never as a superuser on its behalf.
 *
 * Management calls lock the projection's registry row (FOR UPDATE), so two
 * of them on one projection serialize, and the async worker, which updates
 * the row's checkpoint in each batch, waits for at most one of them.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "eventread.h"
#include "projection.h"
#include "shmem.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(projection_append);
PG_FUNCTION_INFO_V1(projection_create);
PG_FUNCTION_INFO_V1(projection_on);
PG_FUNCTION_INFO_V1(projection_drop);
PG_FUNCTION_INFO_V1(projection_pause);
PG_FUNCTION_INFO_V1(projection_resume);
PG_FUNCTION_INFO_V1(projection_rebuild);
PG_FUNCTION_INFO_V1(projection_wait);
PG_FUNCTION_INFO_V1(projection_aggregate);
PG_FUNCTION_INFO_V1(projection_notify_launcher);
PG_FUNCTION_INFO_V1(projection_worker_info);

/*
 * The projection whose replay this backend is running, and the
 * (sub)transaction running it, for abort cleanup.
 */
static int32 replaying_projection = 0;
static SubTransactionId replaying_subid = InvalidSubTransactionId;

/* seconds between progress NOTICEs of long replays */
#define PROJECTION_PROGRESS_INTERVAL_MS 5000

/* the registry row of one projection, as management calls need it */
typedef struct ProjectionRow
{
	int32		id;
	char	   *name;
	Oid			owner;
	bool		is_inline;
	char	   *state;
	int64		position;
} ProjectionRow;

/* ---------------------------------------------------------------------
 * Argument checks
 * ---------------------------------------------------------------------
 */

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

static char *
text_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *s;

	require_arg(fcinfo, argno, argname);
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", argname)));
	return s;
}

/* ---------------------------------------------------------------------
 * Registry access as the bootstrap superuser
 * ---------------------------------------------------------------------
 */

/*
 * Run one statement on the extension's tables as the bootstrap superuser
 * (read_only: with the active snapshot).  The caller is connected to SPI;
 * results are left in SPI_tuptable.  Only our own fixed statements go
 * through here, with values as parameters.
 */
static void
extension_exec(const char *sql, int nargs, Oid *types, Datum *values,
			   const char *nulls, bool read_only, int expected)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, sql);
}

/* the same, read-write (a new snapshot for each statement) */
static void
registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
			  const char *nulls, int expected)
{
	extension_exec(sql, nargs, types, values, nulls, false, expected);
}

/* the checkpoint of registry row "p" in this database's version of the schema */
static const char *
checkpoint_sql(void)
{
	return OidIsValid(projection_oids()->checkpoints) ?
		PROJECTION_CHECKPOINT_SQL("p") : PROJECTION_CHECKPOINT_SQL_1_0("p");
}

/* Delete the worker's checkpoints of a projection (version 1.1). */
static void
forget_checkpoints(int32 id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!OidIsValid(projection_oids()->checkpoints))
		return;
	values[0] = Int32GetDatum(id);
	registry_exec("DELETE FROM projection.checkpoints WHERE projection_id OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, SPI_OK_DELETE);
}

/*
 * Look up a projection by name and lock its registry row.  Raises
 * UNDEFINED_OBJECT if it does not exist.  Result in the caller's context
 * (saved before SPI_connect), given as "cxt".
 */
static ProjectionRow *
registry_lookup(const char *name, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	ProjectionRow *row;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext oldcxt;

	values[0] = CStringGetTextDatum(name);
	registry_exec(psprintf("SELECT id, owner::pg_catalog.oid, mode OPERATOR(pg_catalog.=) 'inline', state, %s "
						   "FROM projection.projections p WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE OF p",
						   checkpoint_sql()),
				  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	oldcxt = MemoryContextSwitchTo(cxt);
	row = palloc0(sizeof(ProjectionRow));
	row->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	row->name = pstrdup(name);
	row->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	row->is_inline = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	row->state = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	row->position = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	MemoryContextSwitchTo(oldcxt);
	return row;
}

static void
check_owner(ProjectionRow *row)
{
	if (!has_privs_of_role(GetUserId(), row->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", row->name)));
}

static void
registry_set_state(int32 id, const char *state, bool set_position, int64 position,
				   bool clear_error)
{
	Oid			types[4] = {INT4OID, TEXTOID, INT8OID, BOOLOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(state);
	values[2] = Int64GetDatum(position);
	if (!set_position)
		nulls[2] = 'n';
	values[3] = BoolGetDatum(clear_error);
	registry_exec("UPDATE projection.projections SET state = $2, "
				  "position = COALESCE($3, position), "
				  "last_error = CASE WHEN $4 THEN NULL ELSE last_error END, "
				  "last_error_sqlstate = CASE WHEN $4 THEN NULL ELSE last_error_sqlstate END, "
				  "last_error_position = CASE WHEN $4 THEN NULL ELSE last_error_position END, "
				  "updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
				  4, types, values, nulls, SPI_OK_UPDATE);
	/* a position set here replaces the worker's checkpoints */
	if (set_position)
		forget_checkpoints(id);
}

/* the registry entry of a projection, from the (reloaded) cache */
static ProjectionDef *
registry_def(ProjectionRegistry *registry, int32 id)
{
	int			i;

	for (i = 0; i < registry->nprojections; i++)
		if (registry->projections[i].id == id)
			return &registry->projections[i];
	elog(ERROR, "projection %d not found in the registry cache", id);
	return NULL;				/* keep compiler quiet */
}


/*
 * Block appends until the end of the transaction and wait for in-flight
 * appenders: inline projections run inside appending transactions, so a
 * catch-up, pause or rebuild of one must not race them.  Under REPEATABLE
 * READ the transaction snapshot predates the lock and the catch-up could
 * miss events, so refuse it.
 */
static void
lock_out_appenders(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s an inline projection in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errhint("Run it in a READ COMMITTED transaction.")));
	LockRelationOid(projection_oids()->events, ShareLock);
}


/* ---------------------------------------------------------------------
 * Replay (inline catch-up and rebuild)
 * ---------------------------------------------------------------------
 */

/*
 * Apply every event in (from, upto] that the projection handles to it, in
 * position order, in this transaction, as the projection's owner, reading
 * events with the active snapshot (the caller pushes one taken after it made
 * sure no event in that range can still appear, so no gap needs watching and
 * only the handled event types are read).  Reports progress with NOTICEs
 * every few seconds and in shared memory.  Returns the number of events
 * replayed (applied) and sets *last to the last position read (from if none).
 * Caller is connected to SPI.
 *
 * The events are read in batches of at most 1000 that hold at most
 * projection.batch_bytes (at least one event each), each batch after the
 * last position of the one before: a cursor's fetch would hold a whole
 * fetch of events of any size.  Every batch reads with the same active
 * snapshot, so they see exactly what one cursor would.
 */
/* events per batch of a replay */
#define REPLAY_BATCH_ROWS 1000

static int64
replay_events(ProjectionDef *def, int64 from, int64 upto, int64 *last)
{
	Oid			types[4] = {INT8OID, INT8OID, INT8OID, TEXTARRAYOID};
	Datum		values[4];
	Datum		filter = projection_type_filter(def);
	int			nargs = filter == (Datum) 0 ? 3 : 4;
	Oid			save_userid;
	int			save_sec_context;
	SPIPlanPtr	plan;
	MemoryContext batch_cxt;
	int64		total = upto - from;
	int64		replayed = 0;
	bool		isnull;
	ProjectionOwnerScope scope;
	MemoryContext event_cxt;
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz last_report = start;

	*last = from;
	values[0] = Int64GetDatum(from);
	values[1] = Int64GetDatum(upto);
	values[2] = Int64GetDatum(REPLAY_BATCH_ROWS);
	values[3] = filter;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	plan = SPI_prepare(psprintf("SELECT e, e.global_position, e.event_type FROM projection.events e "
								"WHERE e.global_position OPERATOR(pg_catalog.>) $1 "
								"AND e.global_position OPERATOR(pg_catalog.<=) $2 %s"
								"ORDER BY e.global_position LIMIT $3",
								nargs == 3 ? "" : "AND e.event_type OPERATOR(pg_catalog.=) ANY ($4) "),
					   nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SetUserIdAndSecContext(save_userid, save_sec_context);

	memset(&scope, 0, sizeof(scope));
	event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection replay event",
									  ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection replay batch",
									  ALLOCSET_DEFAULT_SIZES);
	replaying_projection = def->id;
	replaying_subid = GetCurrentSubTransactionId();
	projection_publish_rebuild(MyDatabaseId, def->id, 0, total);

	for (;;)
	{
		int			i;
		ProjectionEventRows rows;

		/* the next batch, read as the superuser (the caller may lack SELECT) */
		values[0] = Int64GetDatum(*last);
		SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		projection_read_events(plan, nargs, types, values, REPLAY_BATCH_ROWS,
							   PROJECTION_BATCH_BYTES, batch_cxt, &rows);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		if (rows.ntuples == 0)
			break;
		for (i = 0; i < rows.ntuples; i++)
		{
			HeapTuple	tup = rows.tuples[i];
			Datum		event = SPI_getbinval(tup, rows.tupdesc, 1, &isnull);
			int64		position = DatumGetInt64(SPI_getbinval(tup, rows.tupdesc, 2, &isnull));
			MemoryContext oldcxt = MemoryContextSwitchTo(event_cxt);
			char	   *event_type = TextDatumGetCString(SPI_getbinval(tup, rows.tupdesc, 3, &isnull));

			CHECK_FOR_INTERRUPTS();
			if (projection_wants(def, event_type))
			{
				projection_owner_enter(&scope, def);
				projection_apply(def, event, event_type, position);
				CommandCounterIncrement();
				replayed++;
			}
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(event_cxt);
			*last = position;
		}
		MemoryContextReset(batch_cxt);
		projection_owner_leave(&scope);

		/* progress in positions: the events of other types count as passed */
		if (TimestampDifferenceExceeds(last_report, GetCurrentTimestamp(),
									   PROJECTION_PROGRESS_INTERVAL_MS))
		{
			TimestampTz now = GetCurrentTimestamp();
			double		secs = (double) (now - start) / 1000000.0;
			int64		done = *last - from;
			double		rate = secs > 0 ? done / secs : 0;

			ereport(NOTICE,
					(errmsg("projection \"%s\": %lld of %lld events replayed (%.0f events/s, about %.0f s left)",
							def->name, (long long) done, (long long) total, rate,
							rate > 0 ? (total - done) / rate : 0)));
			last_report = now;
		}
		projection_publish_rebuild(MyDatabaseId, def->id, *last - from, total);
	}
	projection_owner_leave(&scope);
	SPI_freeplan(plan);
	MemoryContextDelete(batch_cxt);
	MemoryContextDelete(event_cxt);
	projection_publish_rebuild(MyDatabaseId, def->id, 0, 0);
	replaying_projection = 0;
	return replayed;
}

/*
 * Replay events for an inline projection after lock_out_appenders(): with a
 * snapshot taken after the lock, so that it sees every committed event, up
 * to the last one in the store, which *last is set to (from if none is
 * after it).
 */
static int64
replay_inline(ProjectionDef *def, int64 from, int64 *last)
{
	int64		replayed;
	bool		isnull;
	Datum		max;
	int64		upto;

	PushActiveSnapshot(GetTransactionSnapshot());
	extension_exec("SELECT pg_catalog.max(global_position) FROM projection.events",
				   0, NULL, NULL, NULL, true, SPI_OK_SELECT);
	max = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	upto = isnull ? from : Max(from, DatumGetInt64(max));
	replayed = replay_events(def, from, upto, last);
	*last = upto;
	PopActiveSnapshot();
	return replayed;
}

/*
 * Abort of the transaction, or of the subtransaction "subid" (a cancelled or
 * failed rebuild or catch-up, maybe inside a savepoint or an EXCEPTION
 * block): the projection is no longer rebuilding.  A subtransaction that
 * aborts inside a handler while the replay goes on is not the replay's.
 * Called from the abort callbacks, after LWLocks were released; takes our
 * LWLock briefly and cannot fail.
 */
void
projection_replay_at_abort(SubTransactionId subid)
{
	if (replaying_projection != 0 &&
		(subid == InvalidSubTransactionId || subid == replaying_subid))
	{
		projection_publish_rebuild(MyDatabaseId, replaying_projection, 0, 0);
		replaying_projection = 0;
		replaying_subid = InvalidSubTransactionId;
	}
}

/* ---------------------------------------------------------------------
 * projection.append
 * ---------------------------------------------------------------------
 */

static SPIPlanPtr append_plan = NULL;

/*
 * append(stream_id, event_type, data, metadata DEFAULT '{}',
 *		  expected_version DEFAULT NULL) RETURNS bigint
 *
 * Appends one event at the stream's next version, under the stream's lock,
 * and returns its global_position.  The insert runs as the caller (who needs
 * INSERT on projection.events) and fires the same triggers as any INSERT.
 */
Datum
projection_append(PG_FUNCTION_ARGS)
{
	text	   *stream_id;
	text	   *event_type;
	Datum		data;
	Datum		metadata;
	int64		current;
	Datum		values[5];
	Oid			types[5] = {TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID};
	int			rc;
	int64		position;
	ProjectionAppendCapture capture;
	const ProjectionOids *o;

	require_arg(fcinfo, 0, "stream_id");
	require_arg(fcinfo, 1, "event_type");
	require_arg(fcinfo, 2, "data");
	stream_id = PG_GETARG_TEXT_PP(0);
	event_type = PG_GETARG_TEXT_PP(1);
	data = PG_GETARG_DATUM(2);
	if (VARSIZE_ANY_EXHDR(stream_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "stream_id")));
	if (VARSIZE_ANY_EXHDR(event_type) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_type")));
	metadata = PG_ARGISNULL(3) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))
		: PG_GETARG_DATUM(3);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_version must be 0 or greater"),
				 errhint("Use 0 for \"the stream must not exist yet\", or NULL for no check.")));

	o = projection_oids();
	/* refuse before taking any lock */
	if (pg_class_aclcheck(o->events, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "events");

	current = projection_stream_version(stream_id);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) != current)
		ereport(ERROR,
				(errcode(ERRCODE_PROJECTION_VERSION_CONFLICT),
				 errmsg("version conflict on stream \"%s\": expected version %lld, current version %lld",
						text_to_cstring(stream_id), (long long) PG_GETARG_INT64(4),
						(long long) current),
				 errhint("Reload the stream and retry the command.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (append_plan == NULL || !SPI_plan_is_valid(append_plan))
	{
		SPIPlanPtr	plan;

		if (append_plan != NULL)
		{
			SPI_freeplan(append_plan);
			append_plan = NULL;
		}
		plan = SPI_prepare("INSERT INTO projection.events "
						   "(stream_id, stream_version, event_type, data, metadata) "
						   "VALUES ($1, $2, $3, $4, $5)", 5, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		append_plan = plan;
	}
	values[0] = PointerGetDatum(stream_id);
	values[1] = Int64GetDatum(current + 1);
	values[2] = PointerGetDatum(event_type);
	values[3] = data;
	values[4] = metadata;

	/*
	 * Return the position the trigger gave our row, not that of the last
	 * event this backend inserted: inline handlers may append more events in
	 * this statement's AFTER trigger, or append and roll back.  (Not
	 * INSERT ... RETURNING: that would need SELECT on projection.events,
	 * which an appender need not have.)
	 */
	projection_append_capture_begin(&capture);
	PG_TRY();
	{
		rc = SPI_execute_plan(append_plan, values, NULL, false, 0);
	}
	PG_CATCH();
	{
		(void) projection_append_capture_end(&capture);
		PG_RE_THROW();
	}
	PG_END_TRY();
	position = projection_append_capture_end(&capture);
	projection_spi_check(rc, SPI_OK_INSERT, "appending an event");
	if (position <= 0)
		elog(ERROR, "appended event got no global_position");
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	PG_RETURN_INT64(position);
}

/* ---------------------------------------------------------------------
 * projection.create
 * ---------------------------------------------------------------------
 */

/* The fixed search_path handlers run with: pg_catalog, the creator's schemas, pg_temp last. */
static char *
creator_search_path(void)
{
	List	   *schemas = fetch_search_path(false);
	ListCell   *lc;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "pg_catalog");
	foreach(lc, schemas)
	{
		Oid			nsp = lfirst_oid(lc);
		char	   *nspname;

		if (nsp == PG_CATALOG_NAMESPACE || isAnyTempNamespace(nsp))
			continue;
		nspname = get_namespace_name(nsp);
		if (nspname == NULL)
			continue;
		appendStringInfo(&buf, ", %s", quote_identifier(nspname));
	}
	appendStringInfoString(&buf, ", pg_temp");
	return buf.data;
}

/*
 * Privileges on projection.events the calling role needs: "what" is
 * ACL_SELECT (reading events: creating any projection, aggregate) or
 * ACL_TRIGGER (an inline projection's code runs in every appender's
 * transaction, as a trigger's does).  Raises INSUFFICIENT_PRIVILEGE with
 * the GRANT to run.
 */
static void
check_events_privilege(AclMode what, const char *action)
{
	const char *priv = what == ACL_SELECT ? "SELECT" : "TRIGGER";

	if (pg_class_aclcheck(projection_oids()->events, GetUserId(), what) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("%s needs the %s privilege on projection.events.", action, priv),
				 errhint("Grant it with GRANT %s ON projection.events TO %s.", priv,
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

/* A handler must be f(projection.events) RETURNS void, executable by the caller. */
static void
check_handler(Oid handler)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			events_type = projection_oids()->events_type;
	bool		ok;
	bool		is_temp;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 1 && proc->proargtypes.values[0] == events_type &&
		proc->prorettype == VOIDOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	is_temp = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(tup);
	/* it would go at the end of the session, and other sessions cannot call it */
	if (is_temp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("temporary function \"%s\" cannot be a projection handler",
						get_func_name(handler)),
				 errdetail("A temporary function is dropped at the end of its session, and other sessions cannot call it.")));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a projection handler",
						format_procedure(handler)),
				 errdetail("A handler must take one argument of type projection.events and return void."),
				 errhint("Declare it as CREATE FUNCTION f(e projection.events) RETURNS void.")));
	if (pg_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(handler));
}

static void
check_tables(ArrayType *tables)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	deconstruct_array(tables, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Oid			relid;
		char		relkind;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", "tables")));
		relid = DatumGetObjectId(elems[i]);
		relkind = get_rel_relkind(relid);
		if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" is not a table", get_rel_name(relid)),
					 errdetail("A projection's tables must be ordinary or partitioned tables.")));
		if (relid == projection_oids()->events || get_rel_namespace(relid) == projection_oids()->schema)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s\" belongs to the extension and cannot be a read model",
							get_rel_name(relid))));
		if (IsCatalogRelationOid(relid) || get_rel_namespace(relid) == PG_CATALOG_NAMESPACE ||
			isAnyTempNamespace(get_rel_namespace(relid)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s\" cannot be a read model", get_rel_name(relid)),
					 errdetail("System catalogs and temporary tables cannot be a projection's tables.")));
		/* each right is needed: aclcheck with several bits passes if any one is held */
		if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
			pg_class_aclcheck(relid, GetUserId(), ACL_UPDATE) != ACLCHECK_OK ||
			pg_class_aclcheck(relid, GetUserId(), ACL_DELETE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(relid)),
					 errdetail("A projection's owner needs INSERT, UPDATE and DELETE on its tables.")));
	}
}

static void
check_event_types(ArrayType *types)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	if (ARR_NDIM(types) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a one-dimensional array", "event_types")));
	deconstruct_array(types, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_types"),
				 errhint("Pass NULL to handle every event type.")));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", "event_types")));
		if (VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("argument \"%s\" must not contain empty strings", "event_types")));
	}
}

/*
 * WARNING when no worker can run async projections in this database: the
 * library is not preloaded, max_worker_processes cannot hold the launcher,
 * the logical replication launcher and this database's workers, or the
 * launcher could not start them (no slot, or no background worker left).
 */
static void
warn_if_no_worker(void)
{
	bool		slot_for_db = false;
	bool		all_failed = true;
	bool		free_slot = false;
	int			i;

	if (!projection_preloaded)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections will not run: the projection library is not preloaded"),
				 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
		return;
	}
	if (max_worker_processes < 2 + projection_workers_per_database)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections may not run: max_worker_processes is %d", max_worker_processes),
				 errhint("Raise max_worker_processes to at least %d (the launcher, the logical replication launcher and projection.workers_per_database per database), and restart the server.",
						 2 + projection_workers_per_database)));
		return;
	}

	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
	{
		ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

		if (!OidIsValid(slot->dboid))
			free_slot = true;
		else if (slot->dboid == MyDatabaseId)
		{
			slot_for_db = true;
			if (!slot->start_failed)
				all_failed = false;
		}
	}
	LWLockRelease(ProjectionShared->lock);

	if (slot_for_db && all_failed)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections will not run yet: no background worker could be started for this database"),
				 errhint("Raise max_worker_processes (now %d) and restart the server.", max_worker_processes)));
	else if (!slot_for_db && !free_slot)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections will not run yet: every projection worker slot is in use"),
				 errhint("Raise projection.max_workers (now %d) and restart the server.", projection_max_workers)));
}

/*
 * create(name, handler regproc, event_types text[], mode, tables regclass[],
 *		  start_from, on_error)
 */
Datum
projection_create(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	Oid			handler = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	char	   *mode;
	char	   *start_from;
	char	   *on_error;
	bool		is_inline;
	bool		from_beginning;
	char	   *search_path;
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	int64		start_position = 0;
	const char *state = "running";

	mode = text_arg(fcinfo, 3, "mode");
	start_from = text_arg(fcinfo, 5, "start_from");
	on_error = text_arg(fcinfo, 6, "on_error");
	require_arg(fcinfo, 4, "tables");

	if (strcmp(mode, "inline") == 0)
		is_inline = true;
	else if (strcmp(mode, "async") == 0)
		is_inline = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", mode),
				 errhint("Valid modes are \"inline\" and \"async\".")));
	if (strcmp(start_from, "beginning") == 0)
		from_beginning = true;
	else if (strcmp(start_from, "end") == 0)
		from_beginning = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid start_from \"%s\"", start_from),
				 errhint("Valid values are \"beginning\" and \"end\".")));
	if (strcmp(on_error, "stop") != 0 && strcmp(on_error, "skip") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid on_error \"%s\"", on_error),
				 errhint("Valid values are \"stop\" and \"skip\".")));
	/* a projection receives events: only a role that may read them creates one */
	check_events_privilege(ACL_SELECT, "Creating a projection");
	if (is_inline)
		check_events_privilege(ACL_TRIGGER, "Creating an inline projection");
	if (OidIsValid(handler))
		check_handler(handler);
	if (!PG_ARGISNULL(2))
		check_event_types(PG_GETARG_ARRAYTYPE_P(2));
	check_tables(PG_GETARG_ARRAYTYPE_P(4));
	search_path = creator_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		registry_exec("SELECT 1 FROM projection.projections WHERE name OPERATOR(pg_catalog.=) $1",
					  1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("projection \"%s\" already exists", name)));
	}

	if (is_inline)
		lock_out_appenders("create");
	if (!from_beginning)
		start_position = projection_sequence_last_value();
	else if (!is_inline && projection_sequence_last_value() > 0)
		state = "catching_up";

	{
		Oid			types[10] = {TEXTOID, OIDOID, TEXTARRAYOID, TEXTOID, OIDARRAYOID,
		TEXTOID, OIDOID, TEXTOID, INT8OID, TEXTOID};
		Datum		values[10];
		char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(name);
		values[1] = ObjectIdGetDatum(handler);
		if (!OidIsValid(handler))
			nulls[1] = 'n';
		if (PG_ARGISNULL(2))
			nulls[2] = 'n';
		else
			values[2] = PG_GETARG_DATUM(2);
		values[3] = CStringGetTextDatum(mode);
		values[4] = PG_GETARG_DATUM(4);
		values[5] = CStringGetTextDatum(on_error);
		values[6] = ObjectIdGetDatum(GetUserId());
		values[7] = CStringGetTextDatum(search_path);
		values[8] = Int64GetDatum(start_position);
		values[9] = CStringGetTextDatum(state);
		projection_creating = true; /* not a restore; reset at abort too */
		registry_exec("INSERT INTO projection.projections "
					  "(name, handler, event_types, mode, tables, on_error, owner, search_path, position, state) "
					  "VALUES ($1, $2::pg_catalog.regprocedure, $3, $4, $5::pg_catalog.regclass[], $6, "
					  "$7::pg_catalog.regrole, $8, $9, $10)",
					  10, types, values, nulls, SPI_OK_INSERT);
		projection_creating = false;
	}
	CommandCounterIncrement();

	if (is_inline && from_beginning && !OidIsValid(handler) && projection_sequence_last_value() > 0)
		ereport(NOTICE,
				(errmsg("inline projection \"%s\" has no handler function yet, so existing events are not applied to it", name),
				 errhint("Add its statements with projection.on(), then call projection.rebuild('%s').", name)));
	if (is_inline && from_beginning)
	{
		ProjectionRegistry *registry;
		int64		replayed;
		int64		last;

		row = registry_lookup(name, cxt);
		projection_registry_invalidate();
		registry = projection_registry_acquire();
		replayed = replay_inline(registry_def(registry, row->id), 0, &last);
		projection_registry_release(registry);
		if (replayed > 0)
			ereport(NOTICE,
					(errmsg("projection \"%s\" caught up with %lld events",
							name, (long long) replayed)));
	}
	if (!is_inline)
	{
		warn_if_no_worker();
		projection_request_launcher_at_commit();
	}

	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.on
 * ---------------------------------------------------------------------
 */

/*
 * on(name, event_type, statement): add a statement handler.  The statement
 * is prepared now, as the projection's owner with its search_path, so that
 * errors in it are reported here rather than at the first event.
 */
Datum
projection_on(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	char	   *event_type = text_arg(fcinfo, 1, "event_type");
	char	   *statement = text_arg(fcinfo, 2, "statement");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionOwnerScope scope;
	SPIPlanPtr	plan;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = registry_lookup(name, cxt);
	check_owner(row);

	registry = projection_registry_acquire();
	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, registry_def(registry, row->id));
	plan = projection_prepare_statement(statement, projection_oids()->events_type);
	SPI_freeplan(plan);
	projection_owner_leave(&scope);
	projection_registry_release(registry);

	{
		Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
		Datum		values[3];

		values[0] = Int32GetDatum(row->id);
		values[1] = CStringGetTextDatum(event_type);
		values[2] = CStringGetTextDatum(statement);
		registry_exec("INSERT INTO projection.handlers (projection_id, seq, event_type, statement) "
					  "SELECT $1, COALESCE(pg_catalog.max(seq), 0) OPERATOR(pg_catalog.+) 1, $2, $3 "
					  "FROM projection.handlers WHERE projection_id OPERATOR(pg_catalog.=) $1",
					  3, types, values, NULL, SPI_OK_INSERT);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.drop / pause / resume
 * ---------------------------------------------------------------------
 */

/* drop(name): unregister; the read-model tables are left alone. */
Datum
projection_drop(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = registry_lookup(name, cxt);
	check_owner(row);
	if (row->is_inline)
		lock_out_appenders("drop");

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(name);
	registry_exec("DELETE FROM projection.dead_letters WHERE name OPERATOR(pg_catalog.=) $2 "
				  "AND $1 IS NOT NULL",
				  2, types, values, NULL, SPI_OK_DELETE);
	registry_exec("DELETE FROM projection.projections WHERE id OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, SPI_OK_DELETE);
	forget_checkpoints(row->id);
	/* harmless if the drop rolls back: the worker publishes again */
	projection_forget_progress(MyDatabaseId, row->id);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * pause(name): a paused projection applies nothing until resume().  For an
 * inline projection, in-flight appends finish first and the position where
 * it paused is kept, so resume() can catch up exactly the events it missed.
 */
Datum
projection_pause(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = registry_lookup(name, cxt);
	check_owner(row);
	if (strcmp(row->state, "paused") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already paused", name)));
	else if (row->is_inline)
	{
		lock_out_appenders("pause");
		registry_set_state(row->id, "paused", true, projection_sequence_last_value(), false);
	}
	else
		registry_set_state(row->id, "paused", false, 0, false);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * resume(name): run a paused projection again, or retry a failed one from
 * its failing event.  An inline projection first catches up the events
 * appended while it was paused.
 */
Datum
projection_resume(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = registry_lookup(name, cxt);
	check_owner(row);
	if (strcmp(row->state, "running") == 0 || strcmp(row->state, "catching_up") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already running", name)));
	else if (row->is_inline)
	{
		ProjectionRegistry *registry;
		int64		last;

		lock_out_appenders("resume");
		registry = projection_registry_acquire();
		(void) replay_inline(registry_def(registry, row->id), row->position, &last);
		projection_registry_release(registry);
		registry_set_state(row->id, "running", true, 0, true);
	}
	else
	{
		registry_set_state(row->id, "running", false, 0, true);
		projection_request_launcher_at_commit();
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.rebuild
 * ---------------------------------------------------------------------
 */

/*
 * The projection's tables as an oid[] datum.
 */
static Datum
tables_array(ProjectionDef *def)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(def->ntables, 1));
	int			i;

	for (i = 0; i < def->ntables; i++)
		elems[i] = ObjectIdGetDatum(def->tables[i]);
	return PointerGetDatum(construct_array(elems, def->ntables, OIDOID,
										   sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * Empty a projection's tables with DELETE, as its owner.  DELETE, not
 * TRUNCATE: readers keep seeing the old rows (MVCC) until this transaction
 * commits, and are never blocked.  A table is emptied after the tables of
 * the projection that reference it with a foreign key (in reverse order of
 * "tables" otherwise, and for cycles).
 */
static void
empty_tables(ProjectionDef *def)
{
	ProjectionOwnerScope scope;
	Datum		tables = tables_array(def);
	Oid			types[1] = {OIDARRAYOID};
	Datum		values[1];
	Oid		   *from;			/* edge i: from[i] references to[i] */
	Oid		   *to;
	int			nedges;
	bool	   *done = palloc0(sizeof(bool) * Max(def->ntables, 1));
	int			ndone = 0;
	int			i,
				k;
	int			rc;

	/*
	 * The foreign keys that reference the tables.  One from a table the
	 * projection does not own refuses the rebuild before anything is emptied:
	 * emptying would cascade to that table (ON DELETE CASCADE or SET NULL),
	 * or fail half-way.  Those among the tables order the DELETEs.
	 */
	values[0] = tables;
	rc = SPI_execute_with_args("SELECT c.conrelid, c.confrelid, c.conrelid OPERATOR(pg_catalog.=) ANY ($1), "
							   "c.conname::pg_catalog.text, "
							   "c.confrelid::pg_catalog.regclass::pg_catalog.text, "
							   "c.conrelid::pg_catalog.regclass::pg_catalog.text "
							   "FROM pg_catalog.pg_constraint c "
							   "WHERE c.contype OPERATOR(pg_catalog.=) 'f' "
							   "AND c.conparentid OPERATOR(pg_catalog.=) 0 "
							   "AND c.conrelid OPERATOR(pg_catalog.<>) c.confrelid "
							   "AND c.confrelid OPERATOR(pg_catalog.=) ANY ($1) "
							   "ORDER BY c.oid",
							   1, types, values, NULL, true, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "looking for foreign keys");
	from = palloc(sizeof(Oid) * Max(SPI_processed, 1));
	to = palloc(sizeof(Oid) * Max(SPI_processed, 1));
	for (nedges = 0; nedges < (int) SPI_processed; nedges++)
	{
		HeapTuple	tup = SPI_tuptable->vals[nedges];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot rebuild projection \"%s\": its table %s is referenced by foreign key \"%s\" of table %s",
							def->name, SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 4),
							SPI_getvalue(tup, desc, 6)),
					 errdetail("A rebuild empties the projection's tables, which would delete from or fail on a table the projection does not own."),
					 errhint("Drop the constraint, or create the projection again with table %s among its tables.",
							 SPI_getvalue(tup, desc, 6))));
		from[nedges] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		to[nedges] = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	}

	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, def);
	while (ndone < def->ntables)
	{
		int			pick = -1;
		char	   *relname;
		char	   *nspname;

		/* the last table not referenced by a table still to be emptied */
		for (i = def->ntables - 1; i >= 0 && pick < 0; i--)
		{
			bool		referenced = false;

			if (done[i])
				continue;
			for (k = 0; k < nedges && !referenced; k++)
			{
				int			j;

				if (to[k] != def->tables[i])
					continue;
				for (j = 0; j < def->ntables; j++)
					if (!done[j] && j != i && def->tables[j] == from[k])
						referenced = true;
			}
			if (!referenced)
				pick = i;
		}
		if (pick < 0)			/* a cycle: reverse order */
			for (i = def->ntables - 1; i >= 0 && pick < 0; i--)
				if (!done[i])
					pick = i;

		relname = get_rel_name(def->tables[pick]);
		if (relname == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("table %u of projection \"%s\" does not exist",
							def->tables[pick], def->name)));
		nspname = get_namespace_name(get_rel_namespace(def->tables[pick]));
		rc = SPI_execute(psprintf("DELETE FROM %s",
								  quote_qualified_identifier(nspname, relname)),
						 false, 0);
		projection_spi_check(rc, SPI_OK_DELETE, "emptying a read-model table");
		done[pick] = true;
		ndone++;
	}
	projection_owner_leave(&scope);
}

/*
 * rebuild(name) RETURNS bigint: empty the projection's tables and replay
 * every event, in one transaction.  Readers see the old, complete read
 * model until the transaction commits, then the new one; a cancel or error
 * leaves everything as it was.
 *
 * Inline: appends wait until the rebuild commits (they would run the
 * projection's handlers on a half-built read model otherwise).
 *
 * Async: appends are not blocked and other projections keep running.  The
 * projection's registry row stays locked until commit, so the worker leaves
 * this projection alone meanwhile.  The replay stops at the safe horizon
 * (the rule of worker.c: every position up to it is visible or dead) and
 * the checkpoint is set there; the worker applies what came after, once.
 */
Datum
projection_rebuild(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionDef *def;
	int64		replayed;
	int64		last;
	int64		horizon;
	const char *state;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = registry_lookup(name, cxt);
	check_owner(row);
	if (row->is_inline)
		lock_out_appenders("rebuild");
	else
	{
		if (ProjectionAppenders == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rebuild async projection \"%s\": the projection library is not preloaded", name),
					 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rebuild a projection in a REPEATABLE READ or SERIALIZABLE transaction"),
					 errhint("Run it in a READ COMMITTED transaction.")));
	}

	registry = projection_registry_acquire();
	def = registry_def(registry, row->id);
	empty_tables(def);
	if (row->is_inline)
	{
		replayed = replay_inline(def, 0, &last);
		horizon = last;
	}
	else
	{
		int64		last_value;
		ProjectionAppenderSeen *appenders;
		int			nappenders;

		/*
		 * The safe horizon: last_value, then appenders, then the snapshot.
		 * The replay stops there, so an appender caught before it drew its
		 * position (which would hold the bound at 0) is waited out.
		 */
		for (;;)
		{
			last_value = projection_sequence_last_value();
			appenders = projection_read_appenders(MyDatabaseId, &nappenders);
			PushActiveSnapshot(GetTransactionSnapshot());
			if (!projection_appender_pending(appenders, nappenders, GetActiveSnapshot()))
				break;
			PopActiveSnapshot();
			pg_usleep(1000L);
			CHECK_FOR_INTERRUPTS();
		}
		horizon = projection_gap_bound(last_value, appenders, nappenders, GetActiveSnapshot());
		replayed = replay_events(def, 0, horizon, &last);
		PopActiveSnapshot();
	}
	projection_registry_release(registry);

	state = strcmp(row->state, "paused") == 0 ? "paused" : "running";
	registry_set_state(row->id, state, true, horizon, true);
	if (!row->is_inline && strcmp(state, "running") == 0)
		projection_request_launcher_at_commit();

	ereport(NOTICE,
			(errmsg("projection \"%s\" rebuilt from %lld events", name, (long long) replayed)));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(replayed);
}

/* ---------------------------------------------------------------------
 * projection.wait
 * ---------------------------------------------------------------------
 */

/*
 * Has the projection applied every event up to "up_to"?  Reads its
 * committed registry row with the latest snapshot (so it works in any
 * isolation level).  A running inline projection has applied every
 * committed event.  Raises UNDEFINED_OBJECT if it was dropped.
 */
static bool
projection_reached(int32 id, const char *name, int64 up_to)
{
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		values[2];
	Oid			save_userid;
	int			save_sec_context;
	SPIPlanPtr	plan;
	Snapshot	snapshot;
	int			rc;
	bool		isnull;
	bool		reached;

	values[0] = Int32GetDatum(id);
	values[1] = Int64GetDatum(up_to);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	plan = SPI_prepare(psprintf("SELECT %s OPERATOR(pg_catalog.>=) $2 OR "
								"(mode OPERATOR(pg_catalog.=) 'inline' AND state OPERATOR(pg_catalog.=) 'running') "
								"FROM projection.projections p WHERE id OPERATOR(pg_catalog.=) $1",
								checkpoint_sql()),
					   2, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rc = SPI_execute_snapshot(plan, values, NULL, snapshot, InvalidSnapshot, true, false, 1);
	UnregisterSnapshot(snapshot);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, SPI_OK_SELECT, "reading a checkpoint");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" was dropped while waiting", name)));
	reached = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freeplan(plan);
	return reached;
}

/*
 * wait(name, up_to, timeout) RETURNS boolean: true once the projection has
 * applied every event up to position up_to, false when the timeout passes.
 * Sleeps on the condition variable the workers broadcast after each commit
 * (prepared before each check, so that no broadcast is missed).
 */
Datum
projection_wait(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	int64		up_to;
	Interval   *timeout;
	int32		id;
	bool		is_inline;
	TimestampTz deadline;
	bool		result = false;
	int64		timeout_ms;

	require_arg(fcinfo, 1, "up_to");
	require_arg(fcinfo, 2, "timeout");
	up_to = PG_GETARG_INT64(1);
	timeout = PG_GETARG_INTERVAL_P(2);
	timeout_ms = (int64) (timeout->time / 1000) +
		(int64) timeout->day * 86400000 + (int64) timeout->month * 30 * 86400000;
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* check existence without keeping the row locked while we sleep */
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];
		bool		isnull;

		values[0] = CStringGetTextDatum(name);
		registry_exec("SELECT id, mode OPERATOR(pg_catalog.=) 'inline' FROM projection.projections "
					  "WHERE name OPERATOR(pg_catalog.=) $1",
					  1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("projection \"%s\" does not exist", name)));
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		is_inline = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}

	if (!is_inline && projection_appended_in_xact())
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("waiting for projection \"%s\" inside a transaction that appended events", name),
				 errdetail("The worker cannot apply this transaction's events before it commits."),
				 errhint("Commit first, then call projection.wait().")));

	for (;;)
	{
		long		remaining;

		if (ProjectionShared != NULL)
			ConditionVariablePrepareToSleep(&ProjectionShared->progress_cv);
		if (projection_reached(id, name, up_to))
		{
			result = true;
			break;
		}
		remaining = (long) ((deadline - GetCurrentTimestamp()) / 1000);
		if (remaining <= 0)
			break;
		if (ProjectionShared != NULL)
			(void) ConditionVariableTimedSleep(&ProjectionShared->progress_cv,
											   Min(remaining, 1000), PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 100), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (ProjectionShared != NULL)
		ConditionVariableCancelSleep();
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(result);
}

/* ---------------------------------------------------------------------
 * projection.aggregate
 * ---------------------------------------------------------------------
 */

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
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext cxt = CurrentMemoryContext;
	const ProjectionOids *o;

	require_arg(fcinfo, 0, "stream_id");
	require_arg(fcinfo, 1, "fold");
	require_arg(fcinfo, 2, "initial");
	stream_id = PG_GETARG_TEXT_PP(0);
	fold = PG_GETARG_OID(1);
	state = PG_GETARG_DATUM(2);
	o = projection_oids();
	/* the events are read as the caller anyway: say what to grant */
	check_events_privilege(ACL_SELECT, "Aggregating a stream");

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
	plan = SPI_prepare("SELECT e FROM projection.events e WHERE e.stream_id OPERATOR(pg_catalog.=) $1 "
					   "ORDER BY e.stream_version", 1, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = PointerGetDatum(stream_id);
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		event = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			LOCAL_FCINFO(call, 2);

			CHECK_FOR_INTERRUPTS();
			if (strict && state_null)
				continue;
			InitFunctionCallInfoData(*call, &flinfo, 2, InvalidOid, NULL, NULL);
			call->args[0].value = state;
			call->args[0].isnull = state_null;
			call->args[1].value = event;
			call->args[1].isnull = false;
			state = FunctionCallInvoke(call);
			state_null = call->isnull;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);

	/* the state may live in SPI memory: copy it out before SPI_finish */
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
 * Internal helpers
 * ---------------------------------------------------------------------
 */

/* _notify_launcher(): at commit, ask the launcher to start this database's worker */
Datum
projection_notify_launcher(PG_FUNCTION_ARGS)
{
	projection_request_launcher_at_commit();
	PG_RETURN_VOID();
}

/* _worker_info(): progress of this database's projections from shared memory */
Datum
projection_worker_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (ProjectionShared != NULL)
		projection_progress_report(MyDatabaseId, rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}
