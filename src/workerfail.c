/*-------------------------------------------------------------------------
 *
 * workerfail.c
 *	  What the worker does about errors: their kinds (one place decides for
 *	  the fast round, the careful replay and the retry after it), the
 *	  accounting of transient failures per handler call, the back-off
 *	  between retries, and on_error's records (the projection failed, or a
 *	  dead letter).
 *
 * The records are written in the round's transaction (the caller is
 * connected to SPI), next to the checkpoints.  Back-off sleeps happen
 * outside any transaction, on the latch, and end at once on SIGTERM.  This
 * file takes no locks; its state is this process's.
 *
 * IDENTIFICATION
 *	  src/workerfail.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "checkpoint.h"
#include "deadletter.h"
#include "pool.h"
#include "projection.h"
#include "spiutil.h"
#include "workerfail.h"
#include "workerstep.h"

/* longest back-off after transient errors, ms */
#define WORKER_MAX_BACKOFF_MS 10000

/*
 * The handler call that last failed with a transient error, with how many
 * times in a row it did.
 */
static int32 transient_id = 0;
static int64 transient_position = 0;
static int	transient_attempts = 0;

ProjectionWorkerErrorKind
projection_worker_error_kind(ErrorData *edata)
{
	switch (edata->sqlerrcode)
	{
		case ERRCODE_QUERY_CANCELED:

			/*
			 * Raised by ProcessInterrupts() for a cancel signal to this
			 * process (statement_timeout is never armed in a background
			 * worker), as opposed to a handler raising 57014 itself or
			 * passing on a remote server's.  A cancel requested by a
			 * management call through shared memory is to be recognised
			 * here too.
			 */
			if (edata->funcname != NULL && strcmp(edata->funcname, "ProcessInterrupts") == 0)
				return PROJECTION_WORKER_ERROR_CANCELLED;
			return PROJECTION_WORKER_ERROR_TRANSIENT;
		case ERRCODE_T_R_SERIALIZATION_FAILURE:
		case ERRCODE_T_R_DEADLOCK_DETECTED:
		case ERRCODE_LOCK_NOT_AVAILABLE:
		case ERRCODE_ADMIN_SHUTDOWN:
			return PROJECTION_WORKER_ERROR_TRANSIENT;
		default:
			return PROJECTION_WORKER_ERROR_HANDLER;
	}
}

/*
 * Charge a transient failure in a fast round to the handler call (projection
 * id, event position) that raised it.  Returns how many times in a row it has
 * failed so: a failure of another call starts again at 1, and so does any
 * round that commits in fast mode (projection_worker_round).  Once it reaches
 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS, the careful replay records the call's
 * next failure at once (projection_worker_transient_spent).
 */
int
projection_worker_charge_transient(int32 id, int64 position)
{
	if (transient_id != id || transient_position != position)
	{
		transient_id = id;
		transient_position = position;
		transient_attempts = 0;
	}
	return ++transient_attempts;
}

/* Has this handler call used up its transient retries? */
bool
projection_worker_transient_spent(int32 id, int64 position)
{
	return transient_id == id && transient_position == position &&
		transient_attempts >= PROJECTION_WORKER_TRANSIENT_ATTEMPTS;
}

void
projection_worker_forget_transient(void)
{
	transient_id = 0;
	transient_position = 0;
	transient_attempts = 0;
}

/* the back-off before the attempt after the given number of failures: 100 ms, doubling */
long
projection_worker_backoff_delay(int failures)
{
	return Min(WORKER_MAX_BACKOFF_MS, 100L << Min(Max(failures - 1, 0), 10));
}

/*
 * Sleep "delay" ms before retrying, outside any transaction.  Our latch is
 * set by appenders' commits and by die() (SIGTERM, shutdown, DROP DATABASE):
 * the former must not cut the back-off short, the latter must end it at
 * once, so wait on the latch too and check for interrupts at each wake-up.
 */
void
projection_worker_backoff(long delay)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);

	/*
	 * A cancel stays pending until the next round, whose error handling
	 * knows what it means; here, outside any PG_TRY, it would be FATAL.
	 */
	HOLD_CANCEL_INTERRUPTS();
	for (;;)
	{
		long		left;

		CHECK_FOR_INTERRUPTS();
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, projection_wait_event(PROJECTION_WAIT_WORKER_BACKOFF));
		ResetLatch(MyLatch);
	}
	RESUME_CANCEL_INTERRUPTS();
}

/* on_error 'stop': the projection fails at this event, keeping its position before it */
void
projection_worker_record_failure(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, ErrorData *edata)
{
	Oid			types[5] = {INT4OID, INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[5];
	int			rc;

	values[0] = Int32GetDatum(rp->def->id);
	values[1] = Int64GetDatum(ev->position - 1);
	values[2] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
	values[3] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[4] = Int64GetDatum(ev->position);
	rc = SPI_execute_with_args("UPDATE projection.projections SET state = 'failed', position = $2, "
							   "last_error = $3, last_error_sqlstate = $4, last_error_position = $5, "
							   "updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
							   5, types, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_UPDATE, "recording a failure");
	/* the registry's position is the checkpoint again */
	projection_checkpoint_reset(rp->def->id);
	rp->failed = true;
	rp->position = ev->position - 1;
	ereport(LOG,
			(errmsg("projection \"%s\" failed at event %lld: %s",
					rp->def->name, (long long) ev->position, edata->message),
			 errdetail("SQLSTATE %s.  The projection stays failed until it is resumed.",
					   unpack_sql_state(edata->sqlerrcode)),
			 edata->context ? errcontext("%s", edata->context) : 0));
}

/* on_error 'skip': record the event and its error (deadletter.c), and go on */
void
projection_worker_record_dead_letter(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, ErrorData *edata)
{
	projection_dead_letter_record(rp->def->name, ev->position, ev->event_type, ev->stream_id,
								  edata);
	rp->skipped_any = true;
	ereport(LOG,
			(errmsg("projection \"%s\" skipped event %lld (%s): %s",
					rp->def->name, (long long) ev->position, ev->event_type,
					edata->message ? edata->message : "unknown error"),
			 errdetail("SQLSTATE %s.  The event is in projection.dead_letters.",
					   unpack_sql_state(edata->sqlerrcode))));
}
