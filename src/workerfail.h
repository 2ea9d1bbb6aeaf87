/*-------------------------------------------------------------------------
 *
 * workerfail.h
 *	  What the worker does about errors (workerfail.c): their kinds,
 *	  transient retries, back-off, and on_error's records.
 *
 * IDENTIFICATION
 *	  src/workerfail.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_WORKERFAIL_H
#define PROJECTION_WORKERFAIL_H

#include "utils/elog.h"

#include "workerstep.h"

/* attempts of one handler call failing with transient errors before on_error decides */
#define PROJECTION_WORKER_TRANSIENT_ATTEMPTS 5

/*
 * What a round does about an error, decided in one place
 * (projection_worker_error_kind) for the fast round, the careful replay and
 * the retry after it.
 */
typedef enum ProjectionWorkerErrorKind
{
	/* a handler failed: the careful replay finds the event, on_error decides */
	PROJECTION_WORKER_ERROR_HANDLER,

	/*
	 * May succeed if retried (serialization failure, deadlock, lock
	 * time-out, ...): back off and retry.  Raised by a handler call, it
	 * counts against that call (projection_worker_charge_transient): after
	 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS in a row, on_error decides after
	 * all.
	 */
	PROJECTION_WORKER_ERROR_TRANSIENT,

	/*
	 * This worker was asked to cancel what it was doing (pg_cancel_backend,
	 * or one of our management calls): nobody's fault; retry at once,
	 * charge nothing.  Termination (SIGTERM, shutdown) never gets here: it
	 * is FATAL and exits.
	 */
	PROJECTION_WORKER_ERROR_CANCELLED
} ProjectionWorkerErrorKind;

extern ProjectionWorkerErrorKind projection_worker_error_kind(ErrorData *edata);
extern int projection_worker_charge_transient(int32 id, int64 position);
extern bool projection_worker_transient_spent(int32 id, int64 position);
extern void projection_worker_forget_transient(void);
extern long projection_worker_backoff_delay(int failures);
extern void projection_worker_backoff(long delay);
extern void projection_worker_record_failure(ProjectionRoundMember *rp, ProjectionRoundEvent *ev,
											 ErrorData *edata);
extern void projection_worker_record_dead_letter(ProjectionRoundMember *rp,
												 ProjectionRoundEvent *ev, ErrorData *edata);

#endif							/* PROJECTION_WORKERFAIL_H */
