/*-------------------------------------------------------------------------
 *
 * wait.c
 *	  projection.wait(): read-your-writes for async projections.
 *
 * wait() reads the projection's committed registry row (its checkpoint,
 * checkpoint.c) with a fresh snapshot for each look, and sleeps between
 * looks on its database's progress condition variable (progress.c), which
 * workers broadcast after each commit.
 *
 * Locking: no row lock is kept (the projection is found by a plain
 * SELECT), no LWLock is held across anything that can raise (the progress
 * hash is read through progress.c), and while it sleeps wait() advertises
 * no xmin where it may (wait_may_release_snapshot), so it does not hold
 * back vacuum or the worker's pruning.  This transaction's own
 * appender entry is read through horizon.c.
 *
 * IDENTIFICATION
 *	  src/wait.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "checkpoint.h"
#include "horizon.h"
#include "pool.h"
#include "progress.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_wait);

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
	const char *reason;
	char	   *pool_hint;

	if (ProjectionShared == NULL)
	{
		*hint = "Add \"projection\" to shared_preload_libraries and restart the server.";
		return "the projection library is not preloaded";
	}
	if (RecoveryInProgress())
		return NULL;
	/* waiting for a pool slot is not "cannot run": one frees up (pool.c) */
	reason = projection_pool_unavailable(MyDatabaseId, &pool_hint);
	if (reason != NULL)
		*hint = pool_hint;
	return reason;
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

/* what one call of wait() is waiting for, and what it saw last */
typedef struct WaitState
{
	const char *name;
	int32		id;
	bool		is_inline;
	int64		up_to;
	SPIPlanPtr	plan;			/* wait_read's statement */
	ConditionVariable *cv;		/* NULL without shared memory */
	bool		first;			/* no read yet */
	int64		seen_applied;	/* published checkpoint at the last read */
	uint64		seen_gen;		/* registry generation at the last read */
	TimestampTz last_read;
} WaitState;

/* The timeout in milliseconds (a month counts 30 days); raises if negative. */
static int64
wait_timeout_ms(Interval *timeout)
{
	int64		timeout_ms = (int64) (timeout->time / 1000) +
		(int64) timeout->day * 86400000 + (int64) timeout->month * 30 * 86400000;

	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	return timeout_ms;
}

/*
 * Find the projection (its id and mode) without keeping its row locked
 * while we sleep, and prepare wait_read's statement as the bootstrap
 * superuser.  Raises UNDEFINED_OBJECT.  Connected to SPI.
 */
static void
wait_begin(WaitState *w)
{
	Oid			ntypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	Oid			types[2] = {INT4OID, INT8OID};
	Oid			save_userid;
	int			save_sec_context;

	values[0] = CStringGetTextDatum(w->name);
	projection_registry_exec("SELECT id, mode OPERATOR(pg_catalog.=) 'inline' FROM projection.projections "
							 "WHERE name OPERATOR(pg_catalog.=) $1",
							 1, ntypes, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", w->name)));
	w->id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	w->is_inline = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	w->plan = SPI_prepare(psprintf("SELECT %s OPERATOR(pg_catalog.>=) $2 OR "
								   "(mode OPERATOR(pg_catalog.=) 'inline' AND state OPERATOR(pg_catalog.=) 'running'), "
								   "state OPERATOR(pg_catalog.=) 'failed', %s, last_error_position, "
								   "last_error, owner::pg_catalog.oid "
								   "FROM projection.projections p WHERE id OPERATOR(pg_catalog.=) $1",
								   projection_checkpoint_sql(), projection_checkpoint_sql()),
						  2, types);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (w->plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	w->cv = ProjectionShared != NULL ? projection_progress_cv(MyDatabaseId) : NULL;
	w->first = true;
	w->seen_applied = -2;
	w->seen_gen = 0;
	w->last_read = 0;
}

/* what one look at the projection found */
typedef enum WaitOutcome
{
	WAIT_GO_ON,					/* sleep, and look again */
	WAIT_REACHED,				/* it has applied every event up to up_to */
	WAIT_OWN_EVENTS				/* it cannot before this transaction commits */
} WaitOutcome;

/*
 * Look at the projection (wait_read).  What cannot move raises 55000: the
 * projection failed, or no worker can run it.  The first look inside a
 * transaction that appended up to up_to gives up with a WARNING.
 */
static WaitOutcome
wait_check(WaitState *w)
{
	WaitSeen	seen;
	int64		own;

	wait_read(w->plan, w->id, w->name, w->up_to, &seen);
	if (seen.reached)
		return WAIT_REACHED;
	if (seen.failed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" failed at event %lld and cannot reach position %lld",
						w->name, (long long) seen.error_position, (long long) w->up_to),
				 seen.last_error ? errdetail("The error was: %s", seen.last_error) : 0,
				 errhint("Fix the cause, then call projection.resume('%s').", w->name)));
	if (!w->is_inline)
	{
		const char *hint = NULL;
		const char *reason = wait_no_worker_reason(&hint);

		if (reason != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no worker can run async projection \"%s\": %s", w->name, reason),
					 errhint("%s", hint)));
	}
	/* our own events: the worker cannot apply them before we commit (horizon.c) */
	if (w->first && !w->is_inline && projection_appender_own(&own) &&
		(own == 0 || (uint64) w->up_to >= (uint64) own))
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("waiting for projection \"%s\" inside a transaction that appended events", w->name),
				 errdetail("The worker cannot apply this transaction's events before it commits."),
				 errhint("Commit first, then call projection.wait().")));
		return WAIT_OWN_EVENTS;
	}
	w->first = false;
	return WAIT_GO_ON;
}

/*
 * Sleep until a broadcast, at most "remaining" ms (and a second), holding
 * no snapshot if "release" (our reads use fresh ones).  Without a
 * condition variable (no shared memory, or a standby, where nothing is
 * broadcast) it naps 100 ms and has the next look read.
 */
static void
wait_sleep(WaitState *w, long remaining, bool release)
{
	if (release)
	{
		InvalidateCatalogSnapshot();
		MyProc->xmin = InvalidTransactionId;
	}
	if (w->cv != NULL && !RecoveryInProgress())
		(void) ConditionVariableTimedSleep(w->cv, Min(remaining, 1000), PG_WAIT_EXTENSION);
	else
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(remaining, 100), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		w->last_read = 0;		/* nothing is broadcast: read every time */
	}
	CHECK_FOR_INTERRUPTS();
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
	WaitState	w;
	TimestampTz deadline;
	bool		result = false;
	bool		release;

	memset(&w, 0, sizeof(w));
	w.name = projection_text_arg(fcinfo, 0, "name");
	projection_require_arg(fcinfo, 1, "up_to");
	projection_require_arg(fcinfo, 2, "timeout");
	w.up_to = PG_GETARG_INT64(1);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   wait_timeout_ms(PG_GETARG_INTERVAL_P(2)));
	release = wait_may_release_snapshot(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wait_begin(&w);
	for (;;)
	{
		long		remaining;
		TimestampTz now;
		int64		applied = projection_progress_applied(MyDatabaseId, w.id);
		uint64		gen = 0;

		(void) projection_registry_generation(MyDatabaseId, &gen);
		if (w.cv != NULL)
			ConditionVariablePrepareToSleep(w.cv);
		now = GetCurrentTimestamp();
		if (w.first || applied != w.seen_applied || gen != w.seen_gen ||
			TimestampDifferenceExceeds(w.last_read, now, 1000))
		{
			WaitOutcome outcome = wait_check(&w);

			w.seen_applied = applied;
			w.seen_gen = gen;
			w.last_read = now;
			if (outcome != WAIT_GO_ON)
			{
				result = outcome == WAIT_REACHED;
				break;
			}
		}
		remaining = (long) ((deadline - now) / 1000);
		if (remaining <= 0)
			break;
		wait_sleep(&w, remaining, release);
	}
	if (w.cv != NULL)
		ConditionVariableCancelSleep();
	SPI_freeplan(w.plan);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(result);
}
