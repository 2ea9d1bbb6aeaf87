/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  One event applied to one projection on its own: its per-event handlers
 *	  (handler.c's projection_apply), then its batch statements over a
 *	  one-row batch (batch.c), as its owner, optionally in a subtransaction
 *	  of its own.  This is the event-by-event path of every caller that must
 *	  find, or retry, the one failing event: the worker's careful replay
 *	  (workercareful.c), a replay under on_error 'skip' and the fallback of
 *	  a failed set-based chunk (replay.c), retry_dead_letters()
 *	  (deadletter.c).
 *
 * It sits above handler.c and batch.c, not inside handler.c: batch.c runs
 * its statements in handler.c's owner scope, so handler.c calling batch.c
 * would close a cycle.
 *
 * Locks: none of its own; the caller holds the projection's registry row
 * (FOR UPDATE) and is connected to SPI with an active snapshot.  A guarded
 * call follows the PL/pgSQL exception-block pattern (subxact.c): on error
 * the error is copied, the subtransaction rolled back, and the caller's
 * memory context and resource owner restored.
 *
 * IDENTIFICATION
 *	  src/apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "apply.h"
#include "batch.h"
#include "handler.h"
#include "subxact.h"

/*
 * Apply one event to one projection: its handler function and statements
 * for the type (projection_apply: each call in a GUC nest level of its
 * own), then its batch statements over a batch of this one event, in the
 * owner's identity ("scope", entered here and left by the caller, who may
 * keep it across events of the same owner), then CommandCounterIncrement.
 * The caller has checked that the projection takes the event's type
 * (projection_wants or projection_wants_batch).  Errors propagate, with a
 * context line naming the projection and the event.
 */
void
projection_apply_one(ProjectionOwnerScope *scope, ProjectionDef *def, Datum event,
					 const char *event_type, int64 position)
{
	projection_owner_enter(scope, def);
	projection_apply(def, event, event_type, position);
	projection_batch_apply_one(def, event, event_type, position);
	CommandCounterIncrement();
}

/* the arguments of apply_one_body */
typedef struct ApplyOneArgs
{
	ProjectionDef *def;
	Datum		event;
	const char *event_type;
	int64		position;
} ApplyOneArgs;

/*
 * projection_apply_one in an owner scope of its own, left here, inside the
 * subtransaction, on success; on error the subtransaction's abort restores
 * the user and unwinds the GUC nest level (subxact.c).
 */
static bool
apply_one_body(void *arg)
{
	ApplyOneArgs *args = (ApplyOneArgs *) arg;
	ProjectionOwnerScope scope;

	memset(&scope, 0, sizeof(scope));
	projection_apply_one(&scope, args->def, args->event, args->event_type, args->position);
	projection_owner_leave(&scope);
	return true;
}

/*
 * The same, in a subtransaction of its own, in an owner scope of its own
 * (left before the subtransaction ends).  Returns NULL on success, or the
 * error, copied into "errcxt", after rolling the subtransaction back; the
 * caller decides (on_error, a retry, re-throwing it) and frees it.  The
 * handlers run in the caller's memory context.
 */
ErrorData *
projection_apply_one_guarded(ProjectionDef *def, Datum event, const char *event_type,
							 int64 position, MemoryContext errcxt)
{
	ApplyOneArgs args;
	ErrorData  *edata;

	args.def = def;
	args.event = event;
	args.event_type = event_type;
	args.position = position;
	(void) projection_subxact_run(apply_one_body, &args, errcxt, &edata);
	return edata;
}

/*
 * Errors that say nothing about the event, so that a replay under on_error
 * 'skip' must not turn them into dead letters, nor a retry record them as
 * a new failure of the event: a cancel, a shutdown, a serialization
 * failure or deadlock, a lock time-out, resources or the system failing.
 * They abort the call, as they would any statement.  (The worker decides
 * its own way, workerfail.c: it retries them.)
 */
bool
projection_error_is_fatal(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_TO_CATEGORY(ERRCODE_QUERY_CANCELED) ||	/* 57 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_T_R_SERIALIZATION_FAILURE) ||	/* 40 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES) ||	/* 53 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR) ||	/* 58 */
		class == ERRCODE_TO_CATEGORY(ERRCODE_INTERNAL_ERROR) ||	/* XX */
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}
