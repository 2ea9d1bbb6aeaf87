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
 * of them on one projection serialize.  The async worker locks the rows of
 * its projections for the length of a batch (FOR UPDATE SKIP LOCKED, so it
 * never waits for a management call); a management call does not wait for
 * the worker either: it cancels the batch (wait_out_worker_batch), which
 * rolls back and is retried without the projection.
 *
 * IDENTIFICATION
 *	  src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
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
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/pquery.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "eventread.h"
#include "lifecycle.h"
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
PG_FUNCTION_INFO_V1(projection_status);

/*
 * The projection whose replay this backend is running, and the
 * (sub)transaction running it, for abort cleanup.
 */
static int32 replaying_projection = 0;
static SubTransactionId replaying_subid = InvalidSubTransactionId;

/* seconds between progress NOTICEs of long replays */
#define PROJECTION_PROGRESS_INTERVAL_MS 5000

static void empty_tables(ProjectionDef *def);

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
/*
 * Before a management call waits for a projection's row lock: if a worker's
 * batch holds it, cancel that batch instead of waiting for it (a handler may
 * run for minutes; an operator must be able to pause or drop the projection
 * at once).  Loops: try the lock with SKIP LOCKED; if another transaction
 * holds it, read the locker (xmax) and, if it is one of this database's
 * workers in a batch, post a hold (the worker leaves the projection out of
 * its next rounds), cancel the batch and wait for it to roll back.  Any
 * other holder (a rebuild, another management call) is waited for as usual
 * by the caller's FOR UPDATE.  Sets *held when a hold was posted; the
 * caller releases it once it has the lock (or on error).
 */
static void
wait_out_worker_batch(const char *name, bool *held)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int			attempt;

	if (ProjectionShared == NULL)
		return;					/* no workers */
	values[0] = CStringGetTextDatum(name);
	for (attempt = 0; attempt < 10000; attempt++)
	{
		bool		isnull;
		int32		id;
		TransactionId xmax;

		registry_exec("SELECT 1 FROM projection.projections p WHERE name OPERATOR(pg_catalog.=) $1 "
					  "FOR UPDATE OF p SKIP LOCKED",
					  1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			return;				/* locked */
		registry_exec("SELECT id, xmax, owner::pg_catalog.oid FROM projection.projections "
					  "WHERE name OPERATOR(pg_catalog.=) $1",
					  1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			return;				/* the caller reports it */
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		xmax = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		/*
		 * Only the owner (or a superuser) may interrupt the worker: anyone
		 * else waits like any locker and then gets the caller's ownership
		 * error, so a role cannot stall other owners' projections by calling
		 * pause() in a loop.
		 */
		if (!has_privs_of_role(GetUserId(),
							   DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 3, &isnull))))
			return;
		if (!*held)
		{
			projection_hold(MyDatabaseId, id);
			*held = true;
		}
		switch (projection_cancel_batch(MyDatabaseId, xmax))
		{
			case PROJECTION_CANCEL_SENT:
				XactLockTableWait(xmax, NULL, NULL, XLTW_None);
				continue;
			case PROJECTION_CANCEL_NOT_YET:
				break;			/* the worker is about to publish its batch */
			case PROJECTION_CANCEL_NOT_WORKER:
				if (TransactionIdIsInProgress(xmax))
					return;		/* another session: wait for it */
				break;			/* it just ended: try again */
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

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
	volatile bool held = false;

	values[0] = CStringGetTextDatum(name);
	PG_TRY();
	{
		wait_out_worker_batch(name, (bool *) &held);
		registry_exec(psprintf("SELECT id, owner::pg_catalog.oid, mode OPERATOR(pg_catalog.=) 'inline', state, %s "
						   "FROM projection.projections p WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE OF p",
						   checkpoint_sql()),
				  1, types, values, NULL, SPI_OK_SELECT);
	}
	PG_FINALLY();
	{
		if (held)
			projection_release_hold();
	}
	PG_END_TRY();
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

/* events a replay under on_error 'skip' recorded as dead letters */
static int64 replay_skipped = 0;

/* Record an event a replay skipped (on_error 'skip'), as the worker does. */
static void
replay_dead_letter(ProjectionDef *def, HeapTuple tup, TupleDesc desc, ErrorData *edata)
{
	Oid			types[8] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	values[0] = CStringGetTextDatum(def->name);
	values[1] = SPI_getbinval(tup, desc, 2, &isnull);
	values[2] = SPI_getbinval(tup, desc, 3, &isnull);
	values[3] = SPI_getbinval(tup, desc, 4, &isnull);
	values[4] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[5] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
	if (edata->detail)
		values[6] = CStringGetTextDatum(edata->detail);
	else
		nulls[6] = 'n';
	if (edata->context)
		values[7] = CStringGetTextDatum(edata->context);
	else
		nulls[7] = 'n';
	registry_exec("INSERT INTO projection.dead_letters "
				  "(name, global_position, event_type, stream_id, sqlstate, error, detail, context) "
				  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
				  8, types, values, nulls, SPI_OK_INSERT);
	replay_skipped++;
}

/*
 * Errors a replay under on_error 'skip' must not turn into dead letters: a
 * cancel, a shutdown, a serialization failure or deadlock, a lock time-out,
 * resources or the system failing.  They say nothing about the event, so
 * they abort the replay as they would any statement.
 */
static bool
replay_error_is_fatal(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_TO_CATEGORY(ERRCODE_QUERY_CANCELED) ||	/* 57 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_T_R_SERIALIZATION_FAILURE) ||	/* 40 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) ||	/* 53 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) ||	/* 58 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_INTERNAL_ERROR) ||	/* XX */
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/*
 * Apply events [from, to) of a fetched chunk to a projection, inside one
 * subtransaction (one per event with "each"), as its owner.  Returns the
 * number applied, or -1 after rolling the subtransaction back if one
 * failed; with "each", a failing event is recorded in dead_letters instead
 * (as the worker does) and the rest go on.  Fatal errors are re-thrown.
 */
static int64
replay_guarded(ProjectionDef *def, ProjectionEventRows *rows, int from, int to,
			   bool each, MemoryContext event_cxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			i = from;
	volatile int64 applied = 0;

	while (i < to)
	{
		ErrorData  *volatile edata = NULL;
		volatile int cur = i;
		volatile int64 done = 0;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			ProjectionOwnerScope scope;
			int			stop = each ? cur + 1 : to;

			memset(&scope, 0, sizeof(scope));
			for (; cur < stop; cur++)
			{
				HeapTuple	tup = rows->tuples[cur];
				bool		isnull;
				Datum		event = SPI_getbinval(tup, rows->tupdesc, 1, &isnull);
				int64		position = DatumGetInt64(SPI_getbinval(tup, rows->tupdesc, 2, &isnull));
				char	   *event_type;

				CHECK_FOR_INTERRUPTS();
				MemoryContextSwitchTo(event_cxt);
				event_type = TextDatumGetCString(SPI_getbinval(tup, rows->tupdesc, 3, &isnull));
				if (projection_wants(def, event_type))
				{
					projection_owner_enter(&scope, def);
					projection_apply(def, event, event_type, position);
					CommandCounterIncrement();
					done++;
				}
				MemoryContextSwitchTo(oldcxt);
				MemoryContextReset(event_cxt);
			}
			projection_owner_leave(&scope);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_END_TRY();

		if (edata != NULL)
		{
			HeapTuple	tup = rows->tuples[cur];

			if (replay_error_is_fatal(edata))
				ReThrowError(edata);
			if (!each)
			{
				FreeErrorData(edata);
				return -1;
			}
			replay_dead_letter(def, tup, rows->tupdesc, edata);
			FreeErrorData(edata);
			cur++;
		}
		else
			applied += done;
		i = cur;
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
					  MemoryContext event_cxt)
{
	int64		applied = replay_guarded(def, rows, 0, rows->ntuples, false, event_cxt);

	if (applied >= 0)
		return applied;
	return replay_guarded(def, rows, 0, rows->ntuples, true, event_cxt);
}

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
	plan = SPI_prepare(psprintf("SELECT e, e.global_position, e.event_type, e.stream_id FROM projection.events e "
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
		if (def->skip_errors)
			replayed += replay_chunk_skipping(def, &rows, event_cxt);
		else
		{
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
			}
			projection_owner_leave(&scope);
		}
		*last = DatumGetInt64(SPI_getbinval(rows.tuples[rows.ntuples - 1], rows.tupdesc, 2, &isnull));
		MemoryContextReset(batch_cxt);

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

	/* regclass[] from SQL; oid and regclass elements are laid out alike */
	deconstruct_array(tables, ARR_ELEMTYPE(tables), sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
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
 * The first of "tables" that holds a row, as a qualified name, or NULL.
 * Looked at as the bootstrap superuser: the creator may write the tables
 * without being allowed to read them, and learns only that a row exists.
 * Caller is connected to SPI.
 */
static char *
first_nonempty_table(ArrayType *tables)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	deconstruct_array(tables, ARR_ELEMTYPE(tables), sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Oid			relid = DatumGetObjectId(elems[i]);
		char	   *qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
														   get_rel_name(relid));

		extension_exec(psprintf("SELECT FROM %s LIMIT 1", qualified),
					   0, NULL, NULL, NULL, false, SPI_OK_SELECT);
		if (SPI_processed > 0)
			return qualified;
	}
	return NULL;
}

/*
 * create(name, handler regproc, event_types text[], mode, tables regclass[],
 *		  start_from, on_error, if_not_empty)
 *
 * With start_from 'beginning', every existing event is applied to the
 * tables; rows already in them would be counted twice, so a table that is
 * not empty is refused unless if_not_empty is 'keep' (leave the rows: the
 * handlers are idempotent, or the rows are not derived from events) or
 * 'empty' (empty the tables first, as rebuild() does, in this transaction).
 * A 1.1 definition of create() (before ALTER EXTENSION UPDATE) passes no
 * if_not_empty: then 'error' too.
 */
Datum
projection_create(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name");
	Oid			handler = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	char	   *mode;
	char	   *start_from;
	char	   *on_error;
	char	   *if_not_empty = "error";
	bool		if_not_exists = false;
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
	if (PG_NARGS() > 7)
		if_not_empty = text_arg(fcinfo, 7, "if_not_empty");
	if (PG_NARGS() > 8)
	{
		require_arg(fcinfo, 8, "if_not_exists");
		if_not_exists = PG_GETARG_BOOL(8);
	}
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
	if (strcmp(if_not_empty, "error") != 0 && strcmp(if_not_empty, "keep") != 0 &&
		strcmp(if_not_empty, "empty") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid if_not_empty \"%s\"", if_not_empty),
				 errhint("Valid values are \"error\", \"keep\" and \"empty\".")));
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
		if (SPI_processed > 0 && if_not_exists)
		{
			/* identical: NOTICE and nothing else; different: an error */
			projection_create_existing(name, handler,
									   PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
									   is_inline, PG_GETARG_ARRAYTYPE_P(4), on_error);
			if (SPI_finish() != SPI_OK_FINISH)
				elog(ERROR, "SPI_finish failed");
			PG_RETURN_VOID();
		}
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("projection \"%s\" already exists", name)));
	}

	if (is_inline)
		lock_out_appenders("create");
	if (from_beginning && strcmp(if_not_empty, "error") == 0 &&
		projection_sequence_last_value() > 0)
	{
		char	   *table = first_nonempty_table(PG_GETARG_ARRAYTYPE_P(4));

		if (table != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot create projection \"%s\" from the beginning: table %s is not empty", name, table),
					 errdetail("Table %s already holds rows, and start_from => 'beginning' applies every existing event to it, so they would be counted twice.", table),
					 errhint("Empty the table first, pass if_not_empty => 'empty' to have create() empty the projection's tables as rebuild() does, or if_not_empty => 'keep' if the rows may stay (idempotent handlers).")));
	}
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

	if (from_beginning && strcmp(if_not_empty, "empty") == 0)
	{
		ProjectionRegistry *registry;

		row = registry_lookup(name, cxt);
		projection_registry_invalidate();
		registry = projection_registry_acquire();
		empty_tables(registry_def(registry, row->id));
		projection_registry_release(registry);
		CommandCounterIncrement();
	}

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
	projection_on_notice_existing(row->id, name, event_type);

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

	/*
	 * The rebuild replays every event again: its dead letters are those of
	 * the events that fail now (on_error 'skip'), so the old ones go, in
	 * this transaction.  Afterwards dead_letters lists exactly the events
	 * the new read model lacks.
	 */
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		registry_exec("DELETE FROM projection.dead_letters WHERE name OPERATOR(pg_catalog.=) $1",
					  1, types, values, NULL, SPI_OK_DELETE);
	}
	replay_skipped = 0;
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

	if (replay_skipped > 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" rebuilt from %lld events, %lld skipped", name,
						(long long) replayed, (long long) replay_skipped),
				 errdetail("The skipped events and their errors are in projection.dead_letters.")));
	else
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
 * Why no worker can apply this database's async projections, or NULL if
 * one can (or may soon: the launcher has not given the database a slot
 * yet).  *hint gets what to do.  On a standby no worker runs, but replay
 * brings the primary's progress, so that is not a reason.
 */
static const char *
wait_no_worker_reason(const char **hint)
{
	bool		slot_for_db = false;
	bool		all_failed = true;
	bool		free_slot = false;
	int			i;

	if (ProjectionShared == NULL)
	{
		*hint = "Add \"projection\" to shared_preload_libraries and restart the server.";
		return "the projection library is not preloaded";
	}
	if (RecoveryInProgress())
		return NULL;
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
	{
		*hint = psprintf("Raise max_worker_processes (now %d) and restart the server.", max_worker_processes);
		return "no background worker could be started for this database";
	}
	if (!slot_for_db && !free_slot)
	{
		*hint = psprintf("Raise projection.max_workers (now %d) and restart the server.", projection_max_workers);
		return "every projection worker slot is in use";
	}
	return NULL;
}

/*
 * May wait() stop advertising an xmin while it sleeps?  Only if nothing
 * will read with this backend's older snapshots after it returns: the
 * statement is a plain "SELECT projection.wait(...)" (a Result node whose
 * targets are calls of wait with constant or parameter arguments, no
 * subqueries), at the top level, no other portal of the transaction is
 * open (a cursor keeps its snapshot), and the isolation level is READ
 * COMMITTED (in REPEATABLE READ the transaction's snapshot serves every
 * later statement).  Anywhere else wait() keeps the statement's snapshot,
 * as any function does.
 */
static bool
wait_may_release_snapshot(FunctionCallInfo fcinfo)
{
	Portal		portal = ActivePortal;
	PlannedStmt *stmt;
	ListCell   *lc;

	if (IsolationUsesXactSnapshot() || portal == NULL || list_length(portal->stmts) != 1 ||
		!ThereAreNoReadyPortals())
		return false;
	stmt = linitial_node(PlannedStmt, portal->stmts);
	if (stmt->commandType != CMD_SELECT || stmt->utilityStmt != NULL ||
		stmt->subplans != NIL || stmt->planTree == NULL ||
		!IsA(stmt->planTree, Result) || stmt->planTree->lefttree != NULL ||
		stmt->planTree->initPlan != NIL ||
		((Result *) stmt->planTree)->resconstantqual != NULL)
		return false;
	foreach(lc, stmt->planTree->targetlist)
	{
		TargetEntry *te = lfirst_node(TargetEntry, lc);
		FuncExpr   *call = (FuncExpr *) te->expr;
		ListCell   *arg;

		if (!IsA(call, FuncExpr) || call->funcid != fcinfo->flinfo->fn_oid)
			return false;
		foreach(arg, call->args)
			if (!IsA(lfirst(arg), Const) && !IsA(lfirst(arg), Param))
				return false;
	}
	return true;
}

/* what wait() reads of its projection */
typedef struct WaitSeen
{
	bool		reached;
	bool		failed;
	int64		position;
	int64		error_position;
	char	   *last_error;		/* NULL unless the caller may see it */
} WaitSeen;

/*
 * Read the projection's committed registry row with a fresh snapshot (so
 * it works in any isolation level, and so that, once wait() has stopped
 * advertising the statement's xmin, only a recent one is advertised, and
 * only for this read).  A running inline projection has applied every
 * committed event.  Raises UNDEFINED_OBJECT if it was dropped.
 */
static void
wait_read(SPIPlanPtr plan, int32 id, const char *name, int64 up_to, WaitSeen *seen)
{
	Datum		values[2];
	Oid			save_userid;
	int			save_sec_context;
	Snapshot	snapshot;
	int			rc;
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	values[0] = Int32GetDatum(id);
	values[1] = Int64GetDatum(up_to);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rc = SPI_execute_snapshot(plan, values, NULL, snapshot, InvalidSnapshot, true, false, 1);
	UnregisterSnapshot(snapshot);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, SPI_OK_SELECT, "reading a checkpoint");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" was dropped while waiting", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	seen->reached = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull));
	seen->failed = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
	seen->position = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	seen->error_position = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	if (isnull)
		seen->error_position = seen->position + 1;
	seen->last_error = NULL;
	if (seen->failed)
	{
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));

		/* event data: only for the owner and readers of the events (D9) */
		if (has_privs_of_role(GetUserId(), owner) ||
			pg_class_aclcheck(projection_oids()->events, GetUserId(), ACL_SELECT) == ACLCHECK_OK)
			seen->last_error = SPI_getvalue(tup, desc, 5);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * wait(name, up_to, timeout) RETURNS boolean: true once the projection has
 * applied every event up to position up_to, false when the timeout passes.
 *
 * What cannot move is an error at once (55000), not a silent time-out: a
 * projection failed before up_to, or an async projection that no worker
 * can run.  A paused projection is waited for (pausing is an operator's
 * deliberate, temporary act; resume() wakes the wait).  Inside a
 * transaction that appended an event at or below up_to, the worker cannot
 * get there before this transaction commits: a WARNING, and false at once.
 *
 * Sleeps on its database's condition variable, which workers broadcast
 * after each commit (prepared before each check, so that no broadcast is
 * missed).  A wake-up reads the registry only when the projection's
 * published checkpoint or the registry generation moved (or once a second,
 * as a safety net), so other projections' commits cost a hash lookup.
 * While it sleeps it advertises no xmin, where it may (see
 * wait_may_release_snapshot), so it does not hold back vacuum or the
 * worker's pruning.
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
	bool		release;
	SPIPlanPtr	plan;
	Oid			types[2] = {INT4OID, INT8OID};
	ConditionVariable *cv = NULL;
	int64		seen_applied = -2;
	uint64		seen_gen = 0;
	TimestampTz last_read = 0;
	bool		first = true;

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
	release = wait_may_release_snapshot(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* check existence without keeping the row locked while we sleep */
	{
		Oid			ntypes[1] = {TEXTOID};
		Datum		values[1];
		bool		isnull;

		values[0] = CStringGetTextDatum(name);
		registry_exec("SELECT id, mode OPERATOR(pg_catalog.=) 'inline' FROM projection.projections "
					  "WHERE name OPERATOR(pg_catalog.=) $1",
					  1, ntypes, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("projection \"%s\" does not exist", name)));
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		is_inline = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}

	{
		Oid			save_userid;
		int			save_sec_context;

		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		plan = SPI_prepare(psprintf("SELECT %s OPERATOR(pg_catalog.>=) $2 OR "
									"(mode OPERATOR(pg_catalog.=) 'inline' AND state OPERATOR(pg_catalog.=) 'running'), "
									"state OPERATOR(pg_catalog.=) 'failed', %s, last_error_position, "
									"last_error, owner::pg_catalog.oid "
									"FROM projection.projections p WHERE id OPERATOR(pg_catalog.=) $1",
									checkpoint_sql(), checkpoint_sql()),
						   2, types);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	}
	if (ProjectionShared != NULL)
		cv = projection_progress_cv(MyDatabaseId);

	for (;;)
	{
		long		remaining;
		TimestampTz now;
		int64		applied = projection_progress_applied(MyDatabaseId, id);
		uint64		gen = 0;

		(void) projection_registry_generation(MyDatabaseId, &gen);
		if (cv != NULL)
			ConditionVariablePrepareToSleep(cv);
		now = GetCurrentTimestamp();
		if (first || applied != seen_applied || gen != seen_gen ||
			TimestampDifferenceExceeds(last_read, now, 1000))
		{
			WaitSeen	seen;

			wait_read(plan, id, name, up_to, &seen);
			seen_applied = applied;
			seen_gen = gen;
			last_read = now;
			if (seen.reached)
			{
				result = true;
				break;
			}
			if (seen.failed)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("projection \"%s\" failed at event %lld and cannot reach position %lld",
								name, (long long) seen.error_position, (long long) up_to),
						 seen.last_error ? errdetail("The error was: %s", seen.last_error) : 0,
						 errhint("Fix the cause, then call projection.resume('%s').", name)));
			if (!is_inline)
			{
				const char *hint = NULL;
				const char *reason = wait_no_worker_reason(&hint);

				if (reason != NULL)
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("no worker can run async projection \"%s\": %s", name, reason),
							 errhint("%s", hint)));
			}
			if (first && !is_inline && projection_appended_in_xact() &&
				ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
				MyBackendId <= ProjectionNumAppenders)
			{
				uint64		own = pg_atomic_read_u64(&ProjectionAppenders[MyBackendId - 1].min_pos);

				if (own == 0 || (uint64) up_to >= own)
				{
					ereport(WARNING,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("waiting for projection \"%s\" inside a transaction that appended events", name),
							 errdetail("The worker cannot apply this transaction's events before it commits."),
							 errhint("Commit first, then call projection.wait().")));
					break;
				}
			}
			first = false;
		}
		remaining = (long) ((deadline - now) / 1000);
		if (remaining <= 0)
			break;

		/* sleep holding no snapshot (our reads use fresh ones) */
		if (release)
		{
			InvalidateCatalogSnapshot();
			MyProc->xmin = InvalidTransactionId;
		}
		if (cv != NULL && !RecoveryInProgress())
			(void) ConditionVariableTimedSleep(cv, Min(remaining, 1000), PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 100), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			last_read = 0;		/* nothing is broadcast: read every time */
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (cv != NULL)
		ConditionVariableCancelSleep();
	SPI_freeplan(plan);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(result);
}

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

/* ---------------------------------------------------------------------
 * projection.status
 * ---------------------------------------------------------------------
 */

/*
 * Positions after the checkpoint that the status view reads to count a
 * projection's lag exactly.  A projection further behind gets an estimate
 * from that window (lag_exact false), so that reading the view costs at
 * most this many index entries per lagging projection, however long the
 * store or the lag.
 */
#define PROJECTION_STATUS_LAG_WINDOW 100

/*
 * One row per projection (the columns of projection.status), in one query
 * as the bootstrap superuser, with jit off: the view is read by monitoring
 * every few seconds, and an LLVM compile costs more than the query (with
 * thousands of projections the planner's estimate passes jit_above_cost).
 *
 * lag_events counts the events after the checkpoint that the projection
 * handles (its handler's event_types, or every type, plus the types of its
 * statements), exactly within PROJECTION_STATUS_LAG_WINDOW positions; past
 * that, the window's count is extrapolated to the last visible event.
 * lag_seconds is the age of the oldest of them (of the first event after
 * the checkpoint when the window holds none it handles).
 *
 * last_error quotes event data: it is NULL unless the caller is a member of
 * the owner's role or may SELECT projection.events.  This function masks it
 * itself (as the caller: a view runs functions as its user), so calling it
 * directly shows no more than the view.
 */
Datum
projection_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		reads_events;
	int			nest;
	uint64		i;
	Oid			save_userid;
	int			save_sec_context;
	int			rc;
	const char *ck = checkpoint_sql();

	InitMaterializedSRF(fcinfo, 0);
	reads_events = pg_class_aclcheck(projection_oids()->events, GetUserId(), ACL_SELECT) == ACLCHECK_OK;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute(psprintf(
							  "SELECT p.name, p.mode, "
							  "CASE WHEN w.rebuild_total OPERATOR(pg_catalog.>) 0 THEN 'rebuilding' ELSE p.state END, "
							  "CASE WHEN f.live THEN t.top ELSE f.ck END, "
							  "CASE WHEN f.live OR f.ck OPERATOR(pg_catalog.>=) t.top THEN 0::bigint "
							  "     WHEN t.top OPERATOR(pg_catalog.<=) (f.ck OPERATOR(pg_catalog.+) %d) THEN l.n "
							  "     WHEN f.all_types THEN l.n OPERATOR(pg_catalog.+) ((t.top OPERATOR(pg_catalog.-) f.ck) OPERATOR(pg_catalog.-) %d) "
							  "     ELSE pg_catalog.round((l.n::numeric OPERATOR(pg_catalog.*) (t.top OPERATOR(pg_catalog.-) f.ck)) OPERATOR(pg_catalog./) %d)::bigint END, "
							  "CASE WHEN f.live OR f.ck OPERATOR(pg_catalog.>=) t.top THEN 0::double precision "
							  "     ELSE COALESCE(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) "
							  "          COALESCE(l.first_at, CASE WHEN t.top OPERATOR(pg_catalog.>) (f.ck OPERATOR(pg_catalog.+) %d) THEN l.any_first_at END)), 0) END, "
							  "p.last_error, p.last_error_sqlstate, p.last_error_position, p.handler, p.event_types, "
							  "p.tables, p.on_error, p.owner, w.rebuild_done, w.rebuild_total, "
							  "%s, "
							  "f.live OR t.top OPERATOR(pg_catalog.<=) (f.ck OPERATOR(pg_catalog.+) %d) "
							  "FROM projection.projections p "
							  "CROSS JOIN (SELECT COALESCE(pg_catalog.max(global_position), 0) AS top FROM projection.events) t "
							  "LEFT JOIN projection._worker_info() w ON w.projection_id OPERATOR(pg_catalog.=) p.id "
							  "CROSS JOIN LATERAL (SELECT %s AS ck, "
							  "  p.mode OPERATOR(pg_catalog.=) 'inline' AND p.state OPERATOR(pg_catalog.=) 'running' AS live, "
							  "  p.handler IS NOT NULL AND p.event_types IS NULL AS all_types, "
							  "  COALESCE(CASE WHEN p.handler IS NOT NULL THEN p.event_types END, '{}'::text[]) OPERATOR(pg_catalog.||) "
							  "  ARRAY(SELECT h.event_type FROM projection.handlers h WHERE h.projection_id OPERATOR(pg_catalog.=) p.id) AS types) f "
							  "LEFT JOIN LATERAL (SELECT "
							  "  pg_catalog.count(*) FILTER (WHERE f.all_types OR e.event_type OPERATOR(pg_catalog.=) ANY (f.types)) AS n, "
							  "  pg_catalog.min(e.recorded_at) FILTER (WHERE f.all_types OR e.event_type OPERATOR(pg_catalog.=) ANY (f.types)) AS first_at, "
							  "  pg_catalog.min(e.recorded_at) AS any_first_at "
							  "  FROM projection.events e "
							  "  WHERE NOT f.live AND f.ck OPERATOR(pg_catalog.<) t.top "
							  "  AND e.global_position OPERATOR(pg_catalog.>) f.ck "
							  "  AND e.global_position OPERATOR(pg_catalog.<=) LEAST(f.ck OPERATOR(pg_catalog.+) %d, t.top)) l ON true",
							  PROJECTION_STATUS_LAG_WINDOW, PROJECTION_STATUS_LAG_WINDOW,
							  PROJECTION_STATUS_LAG_WINDOW, PROJECTION_STATUS_LAG_WINDOW,
							  OidIsValid(projection_oids()->checkpoints) ?
							  "GREATEST(p.updated_at, (SELECT c.saved_at FROM projection.checkpoints c "
							  "WHERE c.projection_id OPERATOR(pg_catalog.=) p.id ORDER BY c.position DESC LIMIT 1))" :
							  "p.updated_at",
							  PROJECTION_STATUS_LAG_WINDOW, ck, PROJECTION_STATUS_LAG_WINDOW),
					 true, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, SPI_OK_SELECT, "reading the status");

	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[18];
		bool		nulls[18];
		int			k;
		bool		isnull;
		Oid			owner;

		for (k = 0; k < 18; k++)
			values[k] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 1, &nulls[k]);
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 14, &isnull));
		/* column 7, last_error, can quote event data (review D9) */
		if (!reads_events && !has_privs_of_role(GetUserId(), owner))
			nulls[6] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	AtEOXact_GUC(true, nest);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Management helpers shared with lifecycle.c (off, alter, skip, retry of
 * dead letters, create's if_not_exists); see lifecycle.h
 * ---------------------------------------------------------------------
 */

void
projection_registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
						 const char *nulls, int expected)
{
	registry_exec(sql, nargs, types, values, nulls, expected);
}

ProjectionRow *
projection_registry_lookup(const char *name, MemoryContext cxt)
{
	return registry_lookup(name, cxt);
}

void
projection_check_owner(ProjectionRow *row)
{
	check_owner(row);
}

void
projection_registry_set_state(int32 id, const char *state, bool set_position,
							  int64 position, bool clear_error)
{
	registry_set_state(id, state, set_position, position, clear_error);
}

ProjectionDef *
projection_registry_def(ProjectionRegistry *registry, int32 id)
{
	return registry_def(registry, id);
}

void
projection_check_tables(ArrayType *tables)
{
	check_tables(tables);
}

void
projection_check_event_types(ArrayType *types)
{
	check_event_types(types);
}
