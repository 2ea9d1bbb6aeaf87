/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database worker: applies async projections, in global_position
 *	  order, once, with the checkpoint in the same transaction as the
 *	  handlers' writes.
 *
 * The loop (worker_spi's): WaitLatch, ResetLatch, CHECK_FOR_INTERRUPTS,
 * reload the configuration if asked, then rounds of one short transaction
 * each until nothing is left.  Committing appenders set our latch from their
 * commit callback (xact.c, horizon.c), so a commit is applied without any
 * polling interval; projection.naptime is only a safety net.
 *
 * Which events are safe to apply (no skipped events): the safe-horizon
 * rule, stated and implemented in horizon.c.  Each round reads the horizon
 * at its start (projection_worker_begin) and walks its batch with it (projection_worker_horizon).
 *
 * Exactly once: each round locks the registry rows of the projections it
 * applies (FOR UPDATE SKIP LOCKED: a projection being paused, resumed or
 * dropped right now is left for the next round), re-reads their positions,
 * applies the events and updates the positions in the same transaction.
 *
 * Errors: a round is first applied without subtransactions.  If it fails,
 * projection_worker_error_kind() says what to do: after a cancel of this worker, retry
 * at once; after a transient error (serialization failure, deadlock, lock
 * time-out, ...), back off and retry, but a handler call that fails so
 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS times in a row is treated as failing; after a
 * handler error, replay the same range with one subtransaction per handler
 * call, at most WORKER_CAREFUL_CHUNK events per transaction, reading only
 * the event types concerned, to find the poison event: on_error 'stop'
 * marks that projection failed at the position before it, 'skip' records a
 * dead letter and goes on.  Other projections keep going.  Back-off sleeps
 * end at once on SIGTERM.
 *
 * Memory: the loop's round_cxt is reset after every round.  A round's
 * transaction allocates under SPI (freed by SPI_finish in projection_worker_end); what
 * a round reads after its commit (the projections' ids and positions) is
 * allocated in round_cxt, saved before SPI_connect.  A batch's events are
 * bounded by projection.batch_size and projection.batch_bytes (eventread.c).
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "lib/stringinfo.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "batch.h"
#include "catalog.h"
#include "checkpoint.h"
#include "depend.h"
#include "eventread.h"
#include "events.h"
#include "handler.h"
#include "horizon.h"
#include "pool.h"
#include "progress.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "worker.h"

/* events per transaction while looking for a poison event (< 64 subxacts) */
#define WORKER_CAREFUL_CHUNK 32
/* longest back-off after transient errors, ms */
#define WORKER_MAX_BACKOFF_MS 10000
/* attempts of one handler call failing with transient errors before on_error decides */
#define PROJECTION_WORKER_TRANSIENT_ATTEMPTS 5

/* a projection taking part in a round */
typedef struct ProjectionRoundMember
{
	ProjectionDef *def;			/* registry cache: valid until projection_worker_end() */
	int32		id;				/* def->id, for after projection_worker_end() */
	char	   *name;			/* def->name, copied, for after projection_worker_end() */
	int64		position;		/* checkpoint, locked and re-read this round */
	bool		catching_up;
	bool		failed;			/* failed during this round (careful mode) */
	bool		skipped_any;	/* wrote dead letters this round */
	bool		just_caught_up; /* finished its catch-up this round */
} ProjectionRoundMember;

/* an event of the batch */
typedef struct ProjectionRoundEvent
{
	int64		position;
	char	   *event_type;
	char	   *stream_id;
	Datum		event;
} ProjectionRoundEvent;

/*
 * This worker (set at start) and what its last round found.
 */
typedef struct ProjectionWorkerState
{
	Oid			dboid;
	int			index;
	int			count;
	bool		probe;			/* started after a server start: leave once caught up */
	char	   *dbname;			/* for log lines, read once at start */

	/*
	 * What the last round found (projection_worker_round): every projection
	 * of this worker's group at or past the sequence's last value read in
	 * that round (nothing drawn is left to apply), and whether the group has
	 * no running async projection at all.
	 */
	bool		caught_up;
	bool		group_empty;
	/* leaving with nothing left to do: the group need not be started again */
	bool		exit_clean;
	/* checkpoints saved by this worker: moves whenever a round did work */
	uint64		saves;

	/*
	 * The handler call running now (applying_id 0: none), so that an error
	 * can be charged to it.
	 */
	int32		applying_id;
	int64		applying_position;
} ProjectionWorkerState;

static ProjectionWorkerState projection_worker = {InvalidOid, 0, 1, false, "?", false, false, false, 0, 0, 0};

/* catch-ups this worker follows, for the "caught up" LOG line's rate */
#define WORKER_TRACKED_CATCH_UPS 64
typedef struct WorkerCatchUp
{
	int32		id;
	int64		from;
	TimestampTz since;
} WorkerCatchUp;
static WorkerCatchUp catch_ups[WORKER_TRACKED_CATCH_UPS];
static int	ncatch_ups = 0;
static MemoryContext round_cxt = NULL;
static int	transient_failures = 0; /* in a row, not charged to a handler call */

/*
 * The handler call that last failed with a transient error, with how many
 * times in a row it did.
 */
static int32 transient_id = 0;
static int64 transient_position = 0;
static int	transient_attempts = 0;

static SPIPlanPtr batch_plan = NULL;
static SPIPlanPtr filtered_batch_plan = NULL;

/* ---------------------------------------------------------------------
 * Slot bookkeeping
 * ---------------------------------------------------------------------
 */

/*
 * before_shmem_exit: give the pool slot back and wake the launcher.  A
 * worker that leaves with work left (an error, SIGTERM, a database command)
 * asks for its group again, so that the launcher starts it anew (after a
 * back-off if it failed); one that leaves caught up asks for nothing.
 */
static void
worker_release_slot(int code, Datum arg)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		/*
		 * Our background worker slot is free only once the postmaster has
		 * seen us exit: the launcher reuses the pool slot after that
		 * (launcher_reap), so that its next start does not fail for want
		 * of a background worker slot.
		 */
		memset(slot, 0, sizeof(ProjectionDbSlot));
		slot->dboid = InvalidOid;
		slot->pid = -2;
		slot->pgprocno = -1;
		slot->latchno = -1;
		slot->batch_xid = InvalidTransactionId;
	}
	if (e != NULL)
	{
		if (code != 0)
		{
			e->failures++;
			e->next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Min(30000, 500 << Min(e->failures, 10)));
		}
		else if (projection_worker.exit_clean)
			e->failures = 0;
		if (!projection_worker.exit_clean && projection_worker.index < 32)
			pg_atomic_fetch_or_u32(&e->pending, (uint32) 1 << projection_worker.index);
	}
	LWLockRelease(ProjectionShared->lock);
	projection_wake_launcher();
}

/*
 * Claim the pool slot the launcher took for us.  Returns false if there is
 * none (the launcher forgot it), another live worker holds it, or the
 * database is being stopped by a database command.
 */
static bool
worker_claim_slot(void)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);
	bool		ok = false;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid <= 0 && !slot->exit_requested &&
		(e == NULL || e->stop == 0))
	{
		slot->pid = MyProcPid;
		slot->pgprocno = PROJECTION_MY_PGPROCNO;
		slot->latchno = PROJECTION_MY_PGPROCNO;
		slot->idle_since = 0;
		ok = true;
	}
	LWLockRelease(ProjectionShared->lock);
	return ok;
}

/* A round has run cleanly: the database's workers are healthy again. */
static void
worker_mark_healthy(void)
{
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

	if (e == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	e->failures = 0;
	LWLockRelease(ProjectionShared->lock);
}

/* Is the extension installed (and committed) here?  Inside a transaction. */
static bool
worker_extension_exists(void)
{
	return OidIsValid(get_extension_oid(PROJECTION_EXTENSION_NAME, true));
}

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

/*
 * What a round does about an error, decided in one place (projection_worker_error_kind)
 * for the fast round, the careful replay and the retry after it.
 */
typedef enum ProjectionWorkerErrorKind
{
	/* a handler failed: the careful replay finds the event, on_error decides */
	PROJECTION_WORKER_ERROR_HANDLER,

	/*
	 * May succeed if retried (serialization failure, deadlock, lock
	 * time-out, ...): back off and retry.  Raised by a handler call, it
	 * counts against that call (projection_worker_charge_transient): after
	 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS in a row, on_error decides after all.
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

static ProjectionWorkerErrorKind
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
 * Charge a transient failure in a fast round to the handler call
 * (projection id, event position) that raised it.  Returns how many times
 * in a row it has failed so: a failure of another call starts again at 1,
 * and so does any round that commits in fast mode (projection_worker_round).  Once it
 * reaches PROJECTION_WORKER_TRANSIENT_ATTEMPTS, the careful replay records the call's
 * next failure at once (projection_worker_transient_spent).
 */
static int
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
static bool
projection_worker_transient_spent(int32 id, int64 position)
{
	return transient_id == id && transient_position == position &&
		transient_attempts >= PROJECTION_WORKER_TRANSIENT_ATTEMPTS;
}

static void
projection_worker_forget_transient(void)
{
	transient_id = 0;
	transient_position = 0;
	transient_attempts = 0;
}

/* the back-off before the attempt after the given number of failures: 100 ms, doubling */
static long
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
static void
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

/* ---------------------------------------------------------------------
 * One round
 * ---------------------------------------------------------------------
 */

/*
 * Lock and re-read the rows of the async projections that may run now.
 * Returns them in *rps, allocated in "cxt": the round's context, saved
 * before SPI_connect, because the round reads them after projection_worker_end()
 * (SPI_finish frees everything allocated while connected).  Their defs
 * point into the registry cache and are only used before projection_worker_end().
 */
static int
projection_worker_lock_projections(ProjectionRegistry *registry, MemoryContext cxt,
						ProjectionRoundMember **rps)
{
	SPIPlanPtr	plan;
	int			rc;
	int			n = 0;
	uint64		i;
	ProjectionRoundMember *result;
	int32	   *restored;
	int			nrestored = 0;
	Datum		values[3];
	List	   *ownerless = NIL;
	ListCell   *lc;

	plan = projection_checkpoint_lock_plan();
	values[0] = Int32GetDatum(projection_worker.count);
	values[1] = Int32GetDatum(projection_worker.index);
	/* projections a management call is waiting for (manage's cancel requests) */
	values[2] = projection_held_projections(projection_worker.dboid);
	rc = SPI_execute_plan(plan, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "locking async projections");
	/* the rows are locked: a management call may cancel the batch from here */
	projection_worker_batch_begin(projection_worker.dboid, projection_worker.index);

	result = MemoryContextAllocZero(cxt, sizeof(ProjectionRoundMember) * Max(SPI_processed, 1));
	restored = palloc(sizeof(int32) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int			j;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull)))
			restored[nrestored++] = id;

		for (j = 0; j < registry->nprojections; j++)
		{
			/*
			 * A projection with neither a handler nor statements is not
			 * ready (its statements are still to be added with on() or
			 * on_batch()): it
			 * must not consume events yet.
			 */
			if (registry->projections[j].id == id &&
				(OidIsValid(registry->projections[j].handler) ||
				 registry->projections[j].nstatements > 0 ||
				 registry->projections[j].nbatch_statements > 0))
			{
				/* nothing runs as a dropped role: stop it (depend.c) */
				if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(registry->projections[j].owner)))
				{
					ownerless = lappend(ownerless, &registry->projections[j]);
					break;
				}
				result[n].def = &registry->projections[j];
				result[n].id = id;
				result[n].name = MemoryContextStrdup(cxt, registry->projections[j].name);
				result[n].position = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
				result[n].catching_up = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
				n++;
				break;
			}
		}
	}
	SPI_freetuptable(SPI_tuptable);
	foreach(lc, ownerless)
	{
		ProjectionDef *def = lfirst(lc);

		projection_depend_fail_ownerless(def->id, def->name, def->owner);
	}

	/* the restoring session has ended: forget it */
	for (i = 0; i < (uint64) nrestored; i++)
	{
		Datum		id = Int32GetDatum(restored[i]);
		Oid			idtype = INT4OID;

		rc = SPI_execute_with_args("UPDATE projection.projections SET restored_pid = NULL, restored_at = NULL "
								   "WHERE id OPERATOR(pg_catalog.=) $1",
								   1, &idtype, &id, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_UPDATE, "ending a restore");
	}
	*rps = result;
	return n;
}

/*
 * Read up to max_rows events after "from", no further than "upto", and no
 * more once they hold projection.batch_bytes (at least one), with the active
 * snapshot (read_only SPI uses it).  *full says whether a bound stopped the
 * read, so that more events may follow the last one read.  With a filter
 * (a text[] of event types, see projection_type_filter()), only events of
 * those types: the caller must then have made sure that no event up to
 * "upto" can still appear, because the gaps cannot be seen.  The events are
 * in the current memory context (the SPI procedure's: they die at
 * projection_worker_end()).
 */
static int
projection_worker_read_batch(int64 from, int64 upto, Datum filter, int max_rows,
				  ProjectionRoundEvent **events, bool *full)
{
	Oid			types[4] = {INT8OID, INT8OID, INT8OID, TEXTARRAYOID};
	Datum		values[4];
	SPIPlanPtr	plan;
	int			i;
	ProjectionRoundEvent *result;
	ProjectionEventRows rows;

#define BATCH_SQL(filter) \
	"SELECT e, e.global_position, e.event_type, e.stream_id FROM projection.events e " \
	"WHERE e.global_position OPERATOR(pg_catalog.>) $1 " \
	"AND e.global_position OPERATOR(pg_catalog.<=) $2 " filter \
	"ORDER BY e.global_position LIMIT $3"

	if (filter == (Datum) 0)
		plan = projection_kept_plan(&batch_plan, BATCH_SQL(""), 3, types);
	else
		plan = projection_kept_plan(&filtered_batch_plan,
									BATCH_SQL("AND e.event_type OPERATOR(pg_catalog.=) ANY ($4) "),
									4, types);
	values[0] = Int64GetDatum(from);
	values[1] = Int64GetDatum(upto);
	values[2] = Int64GetDatum(max_rows);
	values[3] = filter;
	projection_read_events(plan, filter == (Datum) 0 ? 3 : 4, types, values,
						   max_rows, PROJECTION_BATCH_BYTES, CurrentMemoryContext, &rows);

	/* the event datums point into the copied rows, which live as long */
	result = palloc(sizeof(ProjectionRoundEvent) * Max(rows.ntuples, 1));
	for (i = 0; i < rows.ntuples; i++)
	{
		HeapTuple	tup = rows.tuples[i];
		TupleDesc	desc = rows.tupdesc;
		bool		isnull;

		result[i].event = SPI_getbinval(tup, desc, 1, &isnull);
		result[i].position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		result[i].event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		result[i].stream_id = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	}
	*events = result;
	*full = rows.full;
	return rows.ntuples;
}

/*
 * How far may this round go?  The contiguous walk of horizon.c over the
 * batch.  Returns the number of batch events to apply and sets *horizon,
 * the position every participating projection will have reached.  "full":
 * the read stopped at a bound (projection_worker_read_batch).
 */
static int
projection_worker_horizon(ProjectionRoundEvent *events, int nevents, bool full, int64 from, int64 last_value,
			   int64 gap_bound, int64 *horizon)
{
	ProjectionHorizonWalk walk;
	int			i;

	projection_horizon_walk_begin(&walk, from, gap_bound);
	for (i = 0; i < nevents; i++)
	{
		if (!projection_horizon_walk_step(&walk, events[i].position))
		{
			*horizon = walk.reached;
			return i;
		}
	}
	*horizon = projection_horizon_walk_end(&walk, full, last_value);
	return nevents;
}

/*
 * Move a projection's checkpoint to "position" in this round's transaction,
 * and mark it running if it was catching up and has caught up
 * (checkpoint.c).
 */
static void
projection_worker_save_checkpoint(ProjectionRoundMember *rp, int64 position, bool caught_up)
{
	bool		was_catching_up = rp->catching_up;

	projection_worker.saves++;
	projection_checkpoint_save(rp->def->id, &rp->position, &rp->catching_up, position, caught_up);
	if (caught_up && was_catching_up)
		rp->just_caught_up = true;
}

/* on_error 'stop': the projection fails at this event, keeping its position before it */
static void
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

/* on_error 'skip': record the event and its error, and go on */
static void
projection_worker_record_dead_letter(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, ErrorData *edata)
{
	Oid			types[8] = {TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	values[0] = CStringGetTextDatum(rp->def->name);
	values[1] = Int64GetDatum(ev->position);
	values[2] = CStringGetTextDatum(ev->event_type);
	values[3] = CStringGetTextDatum(ev->stream_id);
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
	rc = SPI_execute_with_args("INSERT INTO projection.dead_letters "
							   "(name, global_position, event_type, stream_id, sqlstate, error, detail, context) "
							   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
							   8, types, values, nulls, false, 0);
	projection_spi_check(rc, SPI_OK_INSERT, "recording a dead letter");
	rp->skipped_any = true;
	ereport(LOG,
			(errmsg("projection \"%s\" skipped event %lld (%s): %s",
					rp->def->name, (long long) ev->position, ev->event_type,
					edata->message ? edata->message : "unknown error"),
			 errdetail("SQLSTATE %s.  The event is in projection.dead_letters.",
					   unpack_sql_state(edata->sqlerrcode))));
}

/*
 * The batch statements (batch.c) of every participating projection that has
 * some, each over its events of events[0..n): those of its types after its
 * checkpoint.  After the per-event handlers of the same events.
 */
static void
worker_apply_batches(ProjectionRoundMember *rps, int nrps, ProjectionRoundEvent *events, int n,
					 ProjectionOwnerScope *scope)
{
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		ProjectionRoundMember *rp = &rps[j];
		ProjectionBatch batch;

		if (rp->def->nbatch_statements == 0)
			continue;
		projection_batch_begin(&batch);
		for (i = 0; i < n; i++)
			if (events[i].position > rp->position &&
				projection_wants_batch(rp->def, events[i].event_type))
				projection_batch_put(&batch, events[i].event, events[i].position);
		if (batch.count > 0)
		{
			CHECK_FOR_INTERRUPTS();
			projection_owner_enter(scope, rp->def);
			projection_worker.applying_id = rp->id;
			projection_worker.applying_position = batch.first;
			projection_batch_run(rp->def, &batch);
			projection_worker.applying_id = 0;
			CommandCounterIncrement();
		}
		projection_batch_end(&batch);
	}
}

/* events per batch of a catch-up: larger for batch statements, which run once per batch */
static int
worker_catch_up_rows(ProjectionDef *def)
{
	if (def->nbatch_statements > 0)
		return Max(projection_batch_size, projection_replay_batch_size);
	return projection_batch_size;
}

/*
 * Apply events[0..n) to every participating projection, without
 * subtransactions: the per-event handlers event by event, then the batch
 * statements.  Errors propagate.
 */
static void
worker_apply_fast(ProjectionRoundMember *rps, int nrps, ProjectionRoundEvent *events, int n)
{
	ProjectionOwnerScope scope;
	int			i,
				j;

	memset(&scope, 0, sizeof(scope));
	for (i = 0; i < n; i++)
	{
		ProjectionRoundEvent *ev = &events[i];

		CHECK_FOR_INTERRUPTS();
		for (j = 0; j < nrps; j++)
		{
			ProjectionRoundMember *rp = &rps[j];

			if (rp->position >= ev->position || !projection_wants(rp->def, ev->event_type))
				continue;
			projection_owner_enter(&scope, rp->def);
			projection_worker.applying_id = rp->id;
			projection_worker.applying_position = ev->position;
			projection_apply(rp->def, ev->event, ev->event_type, ev->position);
			projection_worker.applying_id = 0;
		}
		CommandCounterIncrement();
	}
	worker_apply_batches(rps, nrps, events, n, &scope);
	projection_owner_leave(&scope);
}

/*
 * Apply one event to one projection in a subtransaction.  Returns NULL on
 * success, or the error (copied into "errcxt"; the caller frees it) after
 * rolling the subtransaction back.
 */
static ErrorData *
worker_apply_careful(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, MemoryContext errcxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		ProjectionOwnerScope scope;

		memset(&scope, 0, sizeof(scope));
		projection_owner_enter(&scope, rp->def);
		projection_worker.applying_id = rp->id;
		projection_worker.applying_position = ev->position;
		projection_apply(rp->def, ev->event, ev->event_type, ev->position);
		projection_batch_apply_one(rp->def, ev->event, ev->event_type, ev->position);
		projection_worker.applying_id = 0;
		projection_owner_leave(&scope);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		projection_worker.applying_id = 0;
		MemoryContextSwitchTo(errcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	return edata;
}

/*
 * Start a round's transaction: snapshot-free start, then the horizon read
 * (L, W, then the snapshot; horizon.c).  Returns false if the extension is
 * gone.
 */
static bool
projection_worker_begin(ProjectionHorizon *hz)
{
	Oid			sequence;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!worker_extension_exists())
	{
		CommitTransactionCommand();
		return false;
	}

	/*
	 * A DROP EXTENSION may be committing right now: it holds the sequence
	 * with AccessExclusiveLock, and this worker, outside any batch, cannot
	 * be cancelled by it.  Lock the sequence first and look again once we
	 * have it (the lock acquisition processes the drop's invalidations), so
	 * that the worker leaves cleanly instead of failing to open a relation
	 * that is gone.
	 */
	sequence = projection_oids()->sequence;
	LockRelationOid(sequence, AccessShareLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(sequence)) ||
		!worker_extension_exists())
	{
		CommitTransactionCommand();
		return false;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_horizon_read(hz, projection_worker.dboid);
	return true;
}

/*
 * The first worker of the database checks the registry's owners
 * (depend.c) each time its registry cache was reloaded; the check counts
 * as done once the round's transaction commits (projection_worker_end).
 */
static uint64 owners_checked_serial = 0;
static uint64 owners_checking_serial = 0;

static void
projection_worker_check_owners(ProjectionRegistry *registry)
{
	if (projection_worker.index != 0 || registry->serial == owners_checked_serial)
		return;
	(void) projection_depend_check_owners();
	owners_checking_serial = registry->serial;
}

static void
projection_worker_end(bool commit)
{
	if (commit)
	{
		projection_worker_batch_end(projection_worker.dboid, projection_worker.index);
		if (owners_checking_serial != 0)
			owners_checked_serial = owners_checking_serial;
	}
	owners_checking_serial = 0;
	PopActiveSnapshot();
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (commit)
		CommitTransactionCommand();
	else
		AbortCurrentTransaction();
}

/*
 * Remember when and where this worker saw each catching-up projection first,
 * for the rate of its "caught up" LOG line.  The table is small; a
 * projection that finds no room simply gets no rate.
 */
static void
projection_worker_track_catch_ups(ProjectionRoundMember *rps, int nrps)
{
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		bool		known = false;

		if (!rps[j].catching_up)
			continue;
		for (i = 0; i < ncatch_ups; i++)
			if (catch_ups[i].id == rps[j].id)
				known = true;
		if (!known && ncatch_ups < WORKER_TRACKED_CATCH_UPS)
		{
			catch_ups[ncatch_ups].id = rps[j].id;
			catch_ups[ncatch_ups].from = rps[j].position;
			catch_ups[ncatch_ups].since = GetCurrentTimestamp();
			ncatch_ups++;
		}
	}
}

/* After the commit that ended a catch-up: say so, with its rate. */
static void
worker_log_caught_up(ProjectionRoundMember *rp)
{
	int			i;

	for (i = 0; i < ncatch_ups; i++)
	{
		if (catch_ups[i].id == rp->id)
		{
			long		secs;
			int			usecs;
			double		elapsed;
			int64		events = rp->position - catch_ups[i].from;

			TimestampDifference(catch_ups[i].since, GetCurrentTimestamp(), &secs, &usecs);
			elapsed = secs + usecs / 1000000.0;
			ereport(LOG,
					(errmsg("projection \"%s\" caught up at position %lld: %lld positions in %.1f s (%.0f per second)",
							rp->name, (long long) rp->position, (long long) events, elapsed,
							elapsed > 0 ? events / elapsed : (double) events)));
			catch_ups[i] = catch_ups[--ncatch_ups];
			return;
		}
	}
	ereport(LOG,
			(errmsg("projection \"%s\" caught up at position %lld",
					rp->name, (long long) rp->position)));
}

/*
 * After the commit of a round: publish the positions reached (from rps,
 * which must live in the round's context, and never through rps[].def: the
 * registry may be reloaded by then) and flush our table statistics, which
 * a background worker must do itself, or autovacuum never learns of the
 * checkpoints and read-model rows we write.  pgstat_report_stat(false)
 * flushes at most once a second or so (PGSTAT_MIN_INTERVAL).
 */
static void
projection_worker_publish(ProjectionRoundMember *rps, int nrps)
{
	int			j;

	for (j = 0; j < nrps; j++)
	{
		projection_publish_progress(projection_worker.dboid, rps[j].id, rps[j].position);
		if (rps[j].just_caught_up)
			worker_log_caught_up(&rps[j]);
	}
	pgstat_report_stat(false);
}

/*
 * The event types the careful replay needs to read: those of the
 * projections that take part and have something left to apply below
 * "limit" (those already at or past it need nothing), as a text[] datum,
 * or (Datum) 0 if one of them handles every type.  After a laggard's
 * failed batch that is the laggard alone, and its range may span millions
 * of positions of other types; the replay's range is fixed (see
 * projection_worker_round_careful), so the gaps need no watching and a filter is safe.
 */
static Datum
worker_careful_filter(ProjectionRoundMember *rps, int nrps, int64 cursor, int64 limit)
{
	Datum	   *elems;
	int			nelems = 0;
	int			allocated = 0;
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		ProjectionDef *def = rps[j].def;

		if (rps[j].failed || rps[j].position < cursor || rps[j].position >= limit)
			continue;
		if ((OidIsValid(def->handler) || def->nbatch_statements > 0) && def->types == NULL)
			return (Datum) 0;
		allocated += def->ntypes + def->nstatements;
	}
	elems = palloc(sizeof(Datum) * Max(allocated, 1));
	for (j = 0; j < nrps; j++)
	{
		ProjectionDef *def = rps[j].def;

		if (rps[j].failed || rps[j].position < cursor || rps[j].position >= limit)
			continue;
		if (OidIsValid(def->handler) || def->nbatch_statements > 0)
			for (i = 0; i < def->ntypes; i++)
				elems[nelems++] = CStringGetTextDatum(def->types[i]);
		for (i = 0; i < def->nstatements; i++)
			elems[nelems++] = CStringGetTextDatum(def->statements[i].event_type);
	}
	return PointerGetDatum(construct_array(elems, nelems, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Apply one event to one projection in the careful replay, and record its
 * error as on_error says.  A transient error is retried here, in a new
 * subtransaction after a back-off, until the call has failed
 * PROJECTION_WORKER_TRANSIENT_ATTEMPTS times (counting the fast rounds' attempts):
 * aborting the chunk instead would also undo what the chunk recorded for
 * other projections.  A cancel propagates (projection_worker_round retries at once).
 */
static void
worker_apply_recorded(ProjectionRoundMember *rp, ProjectionRoundEvent *ev, MemoryContext errcxt)
{
	int			attempt;

	for (attempt = 1;; attempt++)
	{
		ErrorData  *edata = worker_apply_careful(rp, ev, errcxt);
		ProjectionWorkerErrorKind kind;

		if (edata == NULL)
			return;
		kind = projection_worker_error_kind(edata);
		if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
			ReThrowError(edata);
		if (kind == PROJECTION_WORKER_ERROR_TRANSIENT && attempt < PROJECTION_WORKER_TRANSIENT_ATTEMPTS &&
			!projection_worker_transient_spent(rp->id, ev->position))
		{
			ereport(LOG,
					(errmsg("projection worker: retrying event %lld of projection \"%s\" in %ld ms after error: %s",
							(long long) ev->position, rp->def->name,
							projection_worker_backoff_delay(attempt), edata->message)));
			FreeErrorData(edata);
			projection_worker_backoff(projection_worker_backoff_delay(attempt));
			continue;
		}
		if (rp->def->skip_errors)
			projection_worker_record_dead_letter(rp, ev, edata);
		else
			projection_worker_record_failure(rp, ev, edata);
		FreeErrorData(edata);
		return;
	}
}

/*
 * Careful replay of events (from, horizon_limit] after a failed fast
 * round, WORKER_CAREFUL_CHUNK events per transaction, one subtransaction
 * per handler call.  The range is safe to read again with later snapshots:
 * every position in it was visible or dead at the failed round's snapshot,
 * and stays so.  A handler error is recorded as on_error says
 * (worker_apply_recorded); a cancel propagates (projection_worker_round retries at
 * once), and so does any other error (projection_worker_round backs off and retries).
 *
 * Memory: each chunk's transaction allocates in a context of its own
 * (errors included), reset after the chunk; what outlives a chunk's
 * commit (rps, for projection_worker_publish) is allocated there before SPI_connect.
 */
static void
projection_worker_round_careful(int64 from, int64 horizon_limit)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	int64		cursor = from;

	chunk_cxt = AllocSetContextCreate(cxt, "projection worker careful chunk",
									  ALLOCSET_DEFAULT_SIZES);

	/*
	 * A projection whose checkpoint is below the cursor (one resumed since
	 * the failed round) takes no part: it would miss the events before the
	 * cursor.  Later rounds catch it up.
	 */
	while (cursor < horizon_limit)
	{
		ProjectionHorizon hz;
		ProjectionRegistry *registry;
		ProjectionRoundMember *rps;
		int			nrps;
		ProjectionRoundEvent *events;
		int			nevents;
		bool		full;
		int			i,
					j;
		int64		chunk_end;

		if (projection_database_held(projection_worker.dboid))
		{
			/* DROP EXTENSION is waiting: leave it be */
			MemoryContextSwitchTo(cxt);
			MemoryContextDelete(chunk_cxt);
			return;
		}
		MemoryContextSwitchTo(chunk_cxt);
		if (!projection_worker_begin(&hz))
		{
			MemoryContextSwitchTo(cxt);
			MemoryContextDelete(chunk_cxt);
			return;
		}
		registry = projection_registry_acquire();
		nrps = projection_worker_lock_projections(registry, chunk_cxt, &rps);
		nevents = projection_worker_read_batch(cursor, horizon_limit,
									worker_careful_filter(rps, nrps, cursor, horizon_limit),
									WORKER_CAREFUL_CHUNK, &events, &full);
		chunk_end = full ? events[nevents - 1].position : horizon_limit;
		elog(DEBUG1, "projection worker: careful replay of events %lld..%lld (%d read)",
			 (long long) cursor + 1, (long long) chunk_end, nevents);

		pgstat_report_activity(STATE_RUNNING,
							   psprintf("projection worker: isolating a failing event in %lld..%lld",
										(long long) cursor + 1, (long long) chunk_end));
		for (i = 0; i < nevents; i++)
		{
			ProjectionRoundEvent *ev = &events[i];

			CHECK_FOR_INTERRUPTS();
			for (j = 0; j < nrps; j++)
			{
				ProjectionRoundMember *rp = &rps[j];

				if (rp->failed || rp->position < cursor || rp->position >= ev->position ||
					!(projection_wants(rp->def, ev->event_type) ||
					  projection_wants_batch(rp->def, ev->event_type)))
					continue;
				worker_apply_recorded(rp, ev, chunk_cxt);
			}
			CommandCounterIncrement();
		}
		for (j = 0; j < nrps; j++)
		{
			if (!rps[j].failed && rps[j].position >= cursor && rps[j].position < chunk_end)
				projection_worker_save_checkpoint(&rps[j], chunk_end, rps[j].catching_up && chunk_end >= hz.last_value);
		}
		projection_registry_release(registry);
		projection_worker_end(true);
		MemoryContextSwitchTo(cxt);
		projection_worker_publish(rps, nrps);
		MemoryContextReset(chunk_cxt);
		cursor = chunk_end;
	}
	MemoryContextDelete(chunk_cxt);
}

/*
 * The projection that gets a batch of its own this round, or -1: the one
 * furthest behind, if it is below the gap bound and either catching up or
 * at least a batch behind the next one (or, alone, behind the gap bound).
 */
static int
worker_pick_laggard(ProjectionRoundMember *rps, int nrps, int64 gap_bound)
{
	int			lowest = 0;
	int64		next = gap_bound;
	int			j;

	for (j = 1; j < nrps; j++)
		if (rps[j].position < rps[lowest].position)
			lowest = j;
	for (j = 0; j < nrps; j++)
		if (j != lowest)
			next = Min(next, rps[j].position);
	if (rps[lowest].position >= gap_bound)
		return -1;
	if (rps[lowest].catching_up || rps[lowest].position + projection_batch_size <= next)
		return lowest;
	return -1;
}

/*
 * The running async projections of this worker's group, as the round's
 * registry says: with "ready", only those with a handler or statements
 * (the ones a round takes).  A round that locked fewer left some out,
 * because a management call or a restore holds them.
 */
static int
worker_group_count(ProjectionRegistry *registry, bool ready)
{
	int			i;
	int			n = 0;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (!def->is_inline && def->id % projection_worker.count == projection_worker.index &&
			(def->state == PROJECTION_RUNNING || def->state == PROJECTION_CATCHING_UP) &&
			(!ready || OidIsValid(def->handler) || def->nstatements > 0))
			n++;
	}
	return n;
}

/* The projections of a batch, for pg_stat_activity: a few names and the count. */
static char *
worker_describe(ProjectionRoundMember *rps, int nrps)
{
	StringInfoData buf;
	int			j;

	initStringInfo(&buf);
	for (j = 0; j < nrps && j < 3; j++)
		appendStringInfo(&buf, "%s\"%s\"", j > 0 ? ", " : "", rps[j].def->name);
	if (nrps > 3)
		appendStringInfo(&buf, " and %d more", nrps - 3);
	return buf.data;
}

/*
 * One round: apply the next batch to every running async projection.
 * Returns true if more work may be waiting.
 */
static bool
projection_worker_round(void)
{
	ProjectionHorizon hz;
	ProjectionRegistry *registry;
	ProjectionRoundMember *rps;
	int			nrps;
	int64		from;
	int64		horizon;
	int64		gap_bound;
	ProjectionRoundEvent *events;
	int			nevents;
	bool		full;
	int			napply;
	int			j;
	volatile bool more = false;
	volatile bool all_locked = false;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;
	volatile int64 failed_from = -1;
	volatile int64 failed_to = -1;
	volatile int32 failed_id = 0;
	volatile int64 failed_position = 0;
	ProjectionWorkerErrorKind kind;

	projection_worker.caught_up = false;
	projection_worker.group_empty = false;

	/* DROP EXTENSION of this database is waiting: start nothing */
	if (projection_database_held(projection_worker.dboid))
		return false;

	if (!projection_worker_begin(&hz))
	{
		/*
		 * Quietly for a probe after a server start (most databases have no
		 * extension); else the extension has just been dropped.
		 */
		projection_worker.exit_clean = true;
		ereport(projection_worker.probe ? DEBUG1 : LOG,
				(errmsg("projection worker %d for database \"%s\" stopping: extension \"%s\" is not installed there",
						projection_worker.index, projection_worker.dbname, PROJECTION_EXTENSION_NAME)));
		proc_exit(0);
	}

	PG_TRY();
	{
		registry = projection_registry_acquire();
		projection_worker_check_owners(registry);
		nrps = projection_worker_lock_projections(registry, cxt, &rps);
		if (nrps == 0)
		{
			/* nothing left out by a lock or a hold: nothing to do at all */
			projection_worker.group_empty = worker_group_count(registry, false) == 0;
			projection_worker.caught_up = worker_group_count(registry, true) == 0;
			projection_registry_release(registry);
			projection_worker_end(true);
			MemoryContextSwitchTo(cxt);
			more = false;
		}
		else
		{
			int			nothers = nrps;

			/* all of the group locked: "caught up" below can speak for the group */
			all_locked = worker_group_count(registry, true) == nrps;
			projection_worker_track_catch_ups(rps, nrps);
			projection_warn_untracked_events();
			gap_bound = projection_horizon_gap_bound(&hz);

			/*
			 * The projection furthest behind gets a batch of its own when it
			 * is catching up, or lags the others by a batch or more (resumed
			 * after a pause, or fixed after a failure): the event types it
			 * handles only, up to the gap bound (below which every event is
			 * visible or dead, so no gap needs watching).  The others go on
			 * from their own checkpoints meanwhile instead of waiting until it
			 * has caught up with them.
			 */
			j = worker_pick_laggard(rps, nrps, gap_bound);
			if (j >= 0)
			{
				ProjectionRoundMember swap = rps[j];
				ProjectionRoundMember *rp;

				rps[j] = rps[nrps - 1];
				rps[nrps - 1] = swap;
				rp = &rps[nrps - 1];
				nothers = nrps - 1;

				from = rp->position;
				nevents = projection_worker_read_batch(from, gap_bound, projection_type_filter(rp->def),
											worker_catch_up_rows(rp->def), &events, &full);
				horizon = full ? events[nevents - 1].position : gap_bound;
				more = full;
				pgstat_report_activity(STATE_RUNNING,
										psprintf("projection worker: catching up \"%s\": events %lld..%lld of %lld",
												 rp->def->name, (long long) from + 1, (long long) horizon,
												 (long long) hz.last_value));
				failed_from = from;
				failed_to = horizon;
				worker_apply_fast(rp, 1, events, nevents);
				projection_worker_save_checkpoint(rp, horizon, rp->catching_up && horizon >= hz.last_value);
			}

			/* the others: the next batch after the lowest of their checkpoints */
			if (nothers > 0)
			{
				from = rps[0].position;
				for (j = 1; j < nothers; j++)
					from = Min(from, rps[j].position);

				nevents = projection_worker_read_batch(from, hz.last_value, (Datum) 0, projection_batch_size,
											&events, &full);
				napply = projection_worker_horizon(events, nevents, full, from, hz.last_value, gap_bound, &horizon);
				more = more || (full && napply == nevents);

				if (horizon > from)
				{
					pgstat_report_activity(STATE_RUNNING,
											psprintf("projection worker: applying events %lld..%lld to %s",
													 (long long) from + 1, (long long) horizon,
													 worker_describe(rps, nothers)));
					/*
					 * From here a failure is in this batch: the careful
					 * replay takes only its range (the laggard's batch rolls
					 * back with it, and sits the replay out, being behind it).
					 */
					failed_from = from;
					failed_to = horizon;
					worker_apply_fast(rps, nothers, events, napply);
					for (j = 0; j < nothers; j++)
						if (rps[j].position < horizon)
							projection_worker_save_checkpoint(&rps[j], horizon,
												   rps[j].catching_up && horizon >= hz.last_value);
				}
				/* catching up, and nothing (more) to apply: caught up */
				for (j = 0; j < nothers; j++)
					if (rps[j].catching_up && rps[j].position >= hz.last_value)
						projection_worker_save_checkpoint(&rps[j], rps[j].position, true);
			}
			projection_registry_release(registry);
			projection_worker_end(true);
			MemoryContextSwitchTo(cxt);
			projection_worker_publish(rps, nrps);
			projection_worker.caught_up = !more && all_locked;
			for (j = 0; j < nrps; j++)
				if (rps[j].position < hz.last_value)
					projection_worker.caught_up = false;
		}
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		failed_id = projection_worker.applying_id;	/* the handler call that failed, if any */
		failed_position = projection_worker.applying_position;
		projection_worker.applying_id = 0;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		projection_registry_at_abort();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
	}
	PG_END_TRY();

	if (edata != NULL)
		projection_worker.caught_up = false;
	if (edata == NULL)
	{
		transient_failures = 0;
		projection_worker_forget_transient();
		return more;
	}

	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: batch cancelled by a management call");
		FreeErrorData(edata);
		return true;
	}

	/*
	 * What to do about the error (see ProjectionWorkerErrorKind): retry at once, back
	 * off and retry, or replay the range carefully so that on_error decides
	 * for the failing event.
	 */
	kind = projection_worker_error_kind(edata);
	if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
	{
		ereport(LOG,
				(errmsg("projection worker: retrying after a cancel: %s", edata->message)));
		return true;
	}
	if (kind == PROJECTION_WORKER_ERROR_TRANSIENT && failed_id != 0)
	{
		/* a handler call's: retried a few times, then on_error decides */
		int			attempts = projection_worker_charge_transient(failed_id, failed_position);

		if (attempts < PROJECTION_WORKER_TRANSIENT_ATTEMPTS)
		{
			ereport(LOG,
					(errmsg("projection worker: retrying in %ld ms after error: %s",
							projection_worker_backoff_delay(attempts), edata->message)));
			projection_worker_backoff(projection_worker_backoff_delay(attempts));
			return true;
		}
		ereport(LOG,
				(errmsg("projection worker: event %lld failed %d times in a row in projection %d with transient errors, applying on_error: %s",
						(long long) failed_position, attempts, failed_id, edata->message)));
	}
	else if (kind == PROJECTION_WORKER_ERROR_TRANSIENT || failed_from < 0)
	{
		/*
		 * Not a handler's (none was running), or not reproducible (nothing
		 * was applied yet): back off and retry for as long as it takes.
		 */
		transient_failures++;
		ereport(LOG,
				(errmsg("projection worker: retrying in %ld ms after error: %s",
						projection_worker_backoff_delay(transient_failures), edata->message)));
		projection_worker_backoff(projection_worker_backoff_delay(transient_failures));
		return true;
	}
	FreeErrorData(edata);
	edata = NULL;

	/* a handler failed: find the event and apply the rest carefully */
	PG_TRY();
	{
		projection_worker_round_careful(failed_from, failed_to);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		projection_worker.applying_id = 0;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		projection_registry_at_abort();
		RESUME_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
	}
	PG_END_TRY();

	/* pause/drop/DROP EXTENSION cancelled the batch: retry without it */
	if (edata != NULL && projection_worker_batch_aborted(projection_worker.dboid, projection_worker.index))
	{
		elog(DEBUG1, "projection worker: careful replay cancelled by a management call");
		FreeErrorData(edata);
	}
	else if (edata != NULL)
	{
		long		delay;

		kind = projection_worker_error_kind(edata);
		if (kind == PROJECTION_WORKER_ERROR_CANCELLED)
		{
			ereport(LOG,
					(errmsg("projection worker: retrying after a cancel: %s", edata->message)));
			return true;
		}
		/* not a handler's: those are recorded by the replay itself */
		delay = projection_worker_backoff_delay(++transient_failures);
		ereport(LOG,
				(errmsg("projection worker: retrying in %ld ms after error: %s",
						delay, edata->message)));
		projection_worker_backoff(delay);
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Entry point
 * ---------------------------------------------------------------------
 */

/* Run rounds until none says more work may be waiting. */
static void
worker_run_rounds(void)
{
	bool		more;

	do
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(round_cxt);

		more = projection_worker_round();
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(round_cxt);
		CHECK_FOR_INTERRUPTS();
	} while (more);
}

/* Publish when this worker went idle (0: busy), for the launcher's choice of whom to ask to leave. */
static void
worker_set_idle(TimestampTz since)
{
	ProjectionDbSlot *slot;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
		slot->idle_since = since;
	LWLockRelease(ProjectionShared->lock);
	/* a group waits for a slot: the launcher may now ask us to leave */
	if (since != 0 && pg_atomic_read_u32(&ProjectionPool->nwaiting) > 0)
		projection_wake_launcher();
}

/* Has a database command, or the launcher for another database, asked us to leave? */
static bool
worker_exit_requested(bool *for_command)
{
	ProjectionDbSlot *slot;
	ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);
	bool		requested = false;

	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
		requested = slot->exit_requested;
	*for_command = e != NULL && e->stop > 0;
	LWLockRelease(ProjectionShared->lock);
	return requested || *for_command;
}

/*
 * Leave the pool (pool.c's header says why no wake-up is lost): stop taking
 * wake-ups, look for work a last time, and exit if every projection is
 * still caught up.  If that round found work left, take wake-ups again and
 * return, unless a database command needs the database ("force"): then
 * exit anyway, asking for the group again (worker_release_slot).
 */
static void
worker_leave(const char *why, bool force)
{
	ProjectionDbSlot *slot;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		slot->pgprocno = -1;
		slot->leaving = true;
	}
	LWLockRelease(ProjectionShared->lock);
	pg_memory_barrier();

	pgstat_report_activity(STATE_RUNNING, psprintf("projection worker: leaving (%s)", why));
	if (!force)
		worker_run_rounds();
	if (projection_worker.caught_up || force)
	{
		projection_worker.exit_clean = projection_worker.caught_up;
		ereport(projection_worker.probe && projection_worker.caught_up ? DEBUG1 : LOG,
				(errmsg("projection worker %d for database \"%s\" stopping: %s",
						projection_worker.index, projection_worker.dbname, why)));
		proc_exit(0);
	}

	/* work came in: stay */
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	slot = projection_find_dbslot(projection_worker.dboid, projection_worker.index);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		slot->pgprocno = PROJECTION_MY_PGPROCNO;
		slot->leaving = false;
		slot->exit_requested = false;
		slot->idle_since = 0;
	}
	LWLockRelease(ProjectionShared->lock);
	projection_wake_launcher();
}

/* ---------------------------------------------------------------------
 * Entry point
 * ---------------------------------------------------------------------
 */

void
projection_worker_main(Datum main_arg)
{
	TimestampTz idle_since = 0;
	bool		for_command;
	uint64		saves;

	projection_worker.dboid = DatumGetObjectId(main_arg);
	memcpy(&projection_worker.index, MyBgworkerEntry->bgw_extra, sizeof(int));
	memcpy(&projection_worker.count, MyBgworkerEntry->bgw_extra + sizeof(int), sizeof(int));
	memcpy(&projection_worker.probe, MyBgworkerEntry->bgw_extra + 2 * sizeof(int), sizeof(bool));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* a cancel (SIGINT) may only interrupt a batch (shmem.c, cancel requests) */
	HOLD_CANCEL_INTERRUPTS();

	/*
	 * The launcher forgot us, another worker has the group, or a database
	 * command stops the database: leave unseen, but ask for the group
	 * again, so that the launcher decides once more (it starts nothing
	 * while the database is stopped, and forgets a dropped one).
	 */
	projection_worker.exit_clean = true;
	if (!worker_claim_slot())
	{
		ProjectionDbDemand *e = projection_pool_demand(projection_worker.dboid, false);

		if (e != NULL && projection_worker.index < 32)
			pg_atomic_fetch_or_u32(&e->pending, (uint32) 1 << projection_worker.index);
		projection_wake_launcher();
		proc_exit(0);
	}
	projection_worker.exit_clean = false;
	before_shmem_exit(worker_release_slot, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(projection_worker.dboid, InvalidOid, 0);
	pgstat_report_appname("projection worker");
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The read model and the checkpoint commit together, so a commit lost in
	 * a crash loses both and the events are applied again from the older
	 * checkpoint: waiting for the WAL flush buys nothing here but latency.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	StartTransactionCommand();
	{
		char	   *name = get_database_name(projection_worker.dboid);

		if (name != NULL)
			projection_worker.dbname = MemoryContextStrdup(TopMemoryContext, name);
	}
	CommitTransactionCommand();

	round_cxt = AllocSetContextCreate(TopMemoryContext, "projection worker round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		timeout;
		long		stats_timeout;
		TimestampTz now;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (worker_exit_requested(&for_command))
		{
			/* a database command waits: leave now, whatever is left */
			if (for_command)
				worker_leave("a database command needs the database", true);
			worker_leave("its pool slot is wanted by another database", false);
			idle_since = 0;
		}

		saves = projection_worker.saves;
		worker_run_rounds();
		worker_mark_healthy();
		now = GetCurrentTimestamp();
		if (projection_worker.saves != saves)
		{
			idle_since = 0;		/* it did work: idle from now on, if at all */
			projection_worker.probe = false;	/* a probe that found work is a worker like any other */
		}

		if (!projection_worker.caught_up)
		{
			/* blocked behind an appender still in flight: it wakes us */
			if (idle_since != 0)
				worker_set_idle(0);
			idle_since = 0;
		}
		else if (projection_worker.group_empty)
			worker_leave("no async projection to run", false);
		else if (projection_worker.probe)
			worker_leave("caught up after the server start", false);
		else if (idle_since == 0)
		{
			idle_since = now;
			worker_set_idle(now);
		}
		else if (TimestampDifferenceExceeds(idle_since, now, projection_worker_idle_timeout))
		{
			worker_leave(psprintf("idle for %d ms", projection_worker_idle_timeout), false);
			idle_since = 0;
		}

		pgstat_report_activity(STATE_IDLE,
							   projection_worker.caught_up ? "projection worker: caught up, waiting for events" :
							   "projection worker: waiting for appending transactions to end");

		/*
		 * Statistics not flushed after the last commit (flushes are at
		 * least PGSTAT_MIN_INTERVAL apart) are flushed when that interval
		 * has passed, as PostgresMain does before going idle.
		 */
		stats_timeout = pgstat_report_stat(false);
		timeout = stats_timeout > 0 ? Min(stats_timeout, projection_naptime) : projection_naptime;
		if (idle_since != 0)
		{
			long		left = projection_worker_idle_timeout -
				TimestampDifferenceMilliseconds(idle_since, now);

			timeout = Max(1, Min(timeout, left));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, projection_wait_event(PROJECTION_WAIT_WORKER_IDLE));
	}
}
