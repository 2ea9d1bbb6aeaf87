/*-------------------------------------------------------------------------
 *
 * deadletter.c
 *	  Dead letters: the one statement that records an event a projection
 *	  skipped under on_error 'skip' (the worker's careful replay and a
 *	  replay write them through it), and the way out of poison events:
 *	  skip() dead-letters the event a failed projection stopped at and
 *	  resumes after it; retry_dead_letters() applies dead letters again
 *	  through the current handlers.
 *
 * Locking.  projection_dead_letter_record writes in the caller's
 * transaction and takes no lock of its own.  skip() and
 * retry_dead_letters() lock the projection's registry row FOR UPDATE
 * through projection_registry_lookup() (which cancels a worker batch that
 * holds it, as pause() does), so they serialize with the other management
 * calls, with rebuild() and with the worker's batches of this projection.
 *
 * Every call validates its arguments and checks ownership before its first
 * write.  Registry and dead letters are written as the bootstrap superuser
 * (projection_registry_exec) with our own fixed statements; user code (the
 * handlers a retry runs) runs as the projection's owner.
 *
 * IDENTIFICATION
 *	  src/deadletter.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "apply.h"
#include "batch.h"
#include "catalog.h"
#include "deadletter.h"
#include "handler.h"
#include "oplog.h"
#include "projection.h"
#include "registry.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_skip);
PG_FUNCTION_INFO_V1(projection_retry_dead_letters);

/* dead letters read per round of a retry */
#define RETRY_BATCH_ROWS 100

/* ---------------------------------------------------------------------
 * Recording a dead letter
 * ---------------------------------------------------------------------
 */

/*
 * The four dead-letter columns of an error, in values[0..3] and nulls[0..3]
 * (SPI's ' ' and 'n'): SQLSTATE, message, detail and context.
 */
static void
deadletter_error_values(ErrorData *edata, Datum *values, char *nulls)
{
	values[0] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[1] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
	if (edata->detail)
		values[2] = CStringGetTextDatum(edata->detail);
	else
		nulls[2] = 'n';
	if (edata->context)
		values[3] = CStringGetTextDatum(edata->context);
	else
		nulls[3] = 'n';
}

/*
 * Record that projection "name" skipped the event at "position" (on_error
 * 'skip'), with the error it failed with: SQLSTATE, message, detail and
 * context.  In the caller's transaction, as the bootstrap superuser (the
 * table takes no direct writes); the caller is connected to SPI.
 */
void
projection_dead_letter_record(const char *name, int64 position, const char *event_type,
							  const char *stream_id, ErrorData *edata)
{
	Oid			types[8] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(position);
	values[2] = CStringGetTextDatum(event_type);
	values[3] = CStringGetTextDatum(stream_id);
	deadletter_error_values(edata, &values[4], &nulls[4]);
	projection_registry_exec("INSERT INTO projection.dead_letters "
							 "(name, global_position, event_type, stream_id, sqlstate, error, detail, context) "
							 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
							 8, types, values, nulls, SPI_OK_INSERT);
}

/* ---------------------------------------------------------------------
 * projection.skip
 * ---------------------------------------------------------------------
 */

/*
 * skip(name): a failed projection records the event it failed at in
 * projection.dead_letters, with the error it failed with, and resumes
 * after it.  Returns the event's position.  An inline projection is never
 * failed (an error in its handler aborts the append, so no failing event is
 * stored), and neither is any other state: OBJECT_NOT_IN_PREREQUISITE_STATE.
 * Owner only.  LOG line.
 */
Datum
projection_skip(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	int64		position;
	char	   *sqlstate;
	char	   *error;
	bool		isnull;
	Datum		d;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	if (strcmp(row->state, "failed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" is not failed", name),
				 row->is_inline ?
				 errdetail("An inline projection never fails: an error in its handler aborts the appending transaction, so the failing event is not stored.") :
				 errdetail("Its state is \"%s\".", row->state),
				 errhint("skip() passes the event a failed projection stopped at; projection.status shows its state.")));

	{
		Oid			types[1] = {INT4OID};
		Datum		values[1];

		values[0] = Int32GetDatum(row->id);
		projection_registry_exec("SELECT last_error_position, COALESCE(last_error_sqlstate, 'XX000'), "
								 "COALESCE(last_error, 'unknown error') "
								 "FROM projection.projections WHERE id OPERATOR(pg_catalog.=) $1",
								 1, types, values, NULL, SPI_OK_SELECT);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("failed projection \"%s\" records no failing event", name),
					 errhint("Call projection.resume('%s') to retry it.", name)));
		position = DatumGetInt64(d);
		sqlstate = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		error = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	}

	{
		Oid			types[4] = {TEXTOID, INT8OID, TEXTOID, TEXTOID};
		Datum		values[4];

		values[0] = CStringGetTextDatum(name);
		values[1] = Int64GetDatum(position);
		values[2] = CStringGetTextDatum(sqlstate);
		values[3] = CStringGetTextDatum(error);
		projection_registry_exec("INSERT INTO projection.dead_letters "
								 "(name, global_position, event_type, stream_id, sqlstate, error) "
								 "SELECT $1, e.global_position, e.event_type, e.stream_id, $3, $4 "
								 "FROM projection.events e WHERE e.global_position OPERATOR(pg_catalog.=) $2",
								 4, types, values, NULL, SPI_OK_INSERT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("event %lld, where projection \"%s\" failed, is not in the store",
							(long long) position, name)));
	}
	projection_registry_set_state(row->id, "running", true, position, true);
	projection_request_launcher_at_commit();
	projection_log_detail_at_commit(psprintf("projection \"%s\" skipped event %lld with projection.skip(); it is in projection.dead_letters",
											 name, (long long) position),
									psprintf("The event had failed with SQLSTATE %s.", sqlstate));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(position);
}

/* ---------------------------------------------------------------------
 * projection.retry_dead_letters
 * ---------------------------------------------------------------------
 */

/* one dead-lettered event, copied out of SPI */
typedef struct RetryEvent
{
	int64		position;
	char	   *event_type;
	Datum		event;
} RetryEvent;

/*
 * The next dead-lettered events of projection "name" after position
 * "after", one per position (a position dead-lettered twice is applied
 * once), in position order, copied into "cxt".  Read as the bootstrap
 * superuser.  Returns the number read.
 */
static int
retry_fetch(const char *name, int64 after, MemoryContext cxt, RetryEvent *out)
{
	Oid			types[3] = {TEXTOID, INT8OID, INT4OID};
	Datum		values[3];
	MemoryContext oldcxt;
	uint64		i;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(after);
	values[2] = Int32GetDatum(RETRY_BATCH_ROWS);
	projection_registry_exec("SELECT e, e.global_position, e.event_type FROM projection.events e "
							 "WHERE e.global_position IN (SELECT d.global_position FROM projection.dead_letters d "
							 "WHERE d.name OPERATOR(pg_catalog.=) $1 AND d.global_position OPERATOR(pg_catalog.>) $2) "
							 "ORDER BY e.global_position LIMIT $3",
							 3, types, values, NULL, SPI_OK_SELECT);
	oldcxt = MemoryContextSwitchTo(cxt);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		out[i].event = datumCopy(SPI_getbinval(tup, desc, 1, &isnull), false, -1);
		out[i].position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		out[i].event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	}
	MemoryContextSwitchTo(oldcxt);
	return (int) SPI_processed;
}

/*
 * Apply one event through the projection's current handlers as its owner,
 * in a subtransaction, as the worker's event-by-event path does (apply.c):
 * handlers, then the batch statements.  Returns NULL on success (also for
 * an event of a type it no longer handles: nothing to do), else the error
 * (in the caller's context) after rolling the subtransaction back; fatal
 * errors are re-thrown.
 */
static ErrorData *
retry_one(ProjectionDef *def, RetryEvent *ev)
{
	ErrorData  *edata;

	if (!projection_wants(def, ev->event_type) &&
		!projection_wants_batch(def, ev->event_type))
		return NULL;
	edata = projection_apply_one_guarded(def, ev->event, ev->event_type, ev->position,
										 CurrentMemoryContext);
	if (edata != NULL && projection_error_is_fatal(edata))
		ReThrowError(edata);
	return edata;
}

/* After a retry: the dead letters of an event are removed, or get its new error. */
static void
retry_record(const char *name, RetryEvent *ev, ErrorData *edata)
{
	Oid			types[6] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(ev->position);
	if (edata == NULL)
	{
		projection_registry_exec("DELETE FROM projection.dead_letters "
								 "WHERE name OPERATOR(pg_catalog.=) $1 "
								 "AND global_position OPERATOR(pg_catalog.=) $2",
								 2, types, values, NULL, SPI_OK_DELETE);
		return;
	}
	deadletter_error_values(edata, &values[2], &nulls[2]);
	projection_registry_exec("UPDATE projection.dead_letters SET sqlstate = $3, error = $4, "
							 "detail = $5, context = $6, failed_at = pg_catalog.now() "
							 "WHERE name OPERATOR(pg_catalog.=) $1 "
							 "AND global_position OPERATOR(pg_catalog.=) $2",
							 6, types, values, nulls, SPI_OK_UPDATE);
}

/*
 * retry_dead_letters(name, OUT retried, OUT applied, OUT failed): apply the
 * projection's dead-lettered events again, in position order, through its
 * current handlers (an event of a type it no longer handles passes: its
 * handlers have nothing to do), as its owner, each in a subtransaction.
 * Those applied leave projection.dead_letters; those that fail again stay,
 * with their new error.  Runs in the caller's transaction, holding the
 * projection's row lock (the worker applies nothing of it meanwhile).
 * Owner only.  NOTICE and LOG with the counts.
 */
Datum
projection_retry_dead_letters(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext batch_cxt;
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionDef *def;
	TupleDesc	tupdesc;
	Datum		result[3];
	bool		result_nulls[3] = {false, false, false};
	int64		applied = 0;
	int64		failed = 0;
	int64		after = 0;
	RetryEvent *events;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);

	registry = projection_registry_acquire();
	def = projection_registry_def(registry, row->id);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection retry batch",
									  ALLOCSET_DEFAULT_SIZES);
	events = palloc(sizeof(RetryEvent) * RETRY_BATCH_ROWS);
	PushActiveSnapshot(GetTransactionSnapshot());
	for (;;)
	{
		int			n = retry_fetch(name, after, batch_cxt, events);
		int			i;

		if (n == 0)
			break;
		for (i = 0; i < n; i++)
		{
			ErrorData  *edata;

			CHECK_FOR_INTERRUPTS();
			edata = retry_one(def, &events[i]);
			retry_record(name, &events[i], edata);
			if (edata == NULL)
				applied++;
			else
			{
				failed++;
				FreeErrorData(edata);
			}
			after = events[i].position;
		}
		MemoryContextReset(batch_cxt);
	}
	PopActiveSnapshot();
	MemoryContextDelete(batch_cxt);
	projection_registry_release(registry);

	ereport(NOTICE,
			(errmsg_plural("projection \"%s\": %lld dead letter retried, %lld applied, %lld still failing",
						   "projection \"%s\": %lld dead letters retried, %lld applied, %lld still failing",
						   applied + failed, name, (long long) (applied + failed), (long long) applied,
						   (long long) failed)));
	if (applied + failed > 0)
		projection_log_at_commit(psprintf("projection \"%s\": %lld dead letters retried with projection.retry_dead_letters(), %lld applied, %lld still failing",
										  name, (long long) (applied + failed), (long long) applied, (long long) failed));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	result[0] = Int64GetDatum(applied + failed);
	result[1] = Int64GetDatum(applied);
	result[2] = Int64GetDatum(failed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}
