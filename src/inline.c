/*-------------------------------------------------------------------------
 *
 * inline.c
 *	  Inline projections: applied in the appending transaction.
 *
 * Inline projections run in the AFTER INSERT statement trigger, row by row in
 * position order.  A handler that appends events re-enters the trigger; the
 * nested call only queues its events, tagged with their subtransaction (a
 * rollback takes them out again, projection_inline_at_subxact_abort), and
 * the outermost call applies them after its own, so every projection still
 * sees global_position order and never an event that was rolled back.  The
 * queue lives in TopTransactionContext and is cleared by xact.c.  Each
 * queued event carries its depth (1 for an event a handler appended while
 * applying the statement's events, n + 1 for one appended while applying an
 * event of depth n); a chain deeper than PROJECTION_MAX_INLINE_DEPTH (a
 * handler that appends what its own projection handles, say) fails the
 * append, as PostgreSQL's own recursive triggers stop at max_stack_depth.
 *
 * Locking: an inline projection that catches up or rebuilds locks
 * appenders out (ShareLock on projection.events,
 * projection_lock_out_appenders) until its transaction ends, so that no
 * append runs its handlers on a half-built read model.  The trigger takes
 * no lock of its own (a registry reload reads as catalog.c says): it runs
 * in the appender's transaction, which holds RowExclusiveLock on
 * projection.events; the handlers take whatever locks their writes need.
 *
 * IDENTIFICATION
 *	  src/inline.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "batch.h"
#include "events.h"
#include "handler.h"
#include "inline.h"
#include "poolcommit.h"
#include "projection.h"

PG_FUNCTION_INFO_V1(projection_inline_trigger);

/*
 * Inline re-entrancy: events appended while inline handlers run are queued
 * for the outermost inline trigger, tagged with the subtransaction that
 * inserted them, so that a rolled-back subtransaction takes its events out
 * of the queue again.
 */
typedef struct PendingEvent
{
	SubTransactionId subid;
	int			depth;			/* of nested appends, from 1 */
	HeapTuple	tuple;
} PendingEvent;

/*
 * The deepest chain of nested appends the outermost trigger applies: far
 * more than any legitimate chain of projections, few enough that a handler
 * that appends what its own projection handles fails in well under a second
 * instead of running until it is cancelled.
 */
#define PROJECTION_MAX_INLINE_DEPTH	1000

static int	inline_depth = 0;
static List *inline_pending = NIL;	/* of PendingEvent, in TopTransactionContext */
static int	inline_event_depth = 0; /* depth of the event being applied */
static ProjectionOwnerScope *inline_scope = NULL;	/* the outermost call's */

/*
 * Block appends until the end of the transaction and wait for in-flight
 * appenders: inline projections run inside appending transactions, so a
 * catch-up, pause or rebuild of one must not race them.  Under REPEATABLE
 * READ the transaction snapshot predates the lock and the catch-up could
 * miss events, so refuse it.
 */
void
projection_lock_out_appenders(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s an inline projection in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errhint("Run it in a READ COMMITTED transaction.")));
	LockRelationOid(projection_oids()->events, ShareLock);
}

/*
 * Apply one event to every running inline projection that wants it.
 * "event" is a projection.events composite datum.
 */
static void
inline_apply_event(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
				   Datum event, int64 position, const char *event_type)
{
	int			i;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (!def->is_inline || def->state != PROJECTION_RUNNING)
			continue;
		if (!projection_wants(def, event_type))
			continue;
		projection_owner_enter(scope, def);
		projection_apply(def, event, event_type, position);
		CommandCounterIncrement();
	}
}

static void
inline_apply_tuple(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
				   HeapTuple tuple, TupleDesc desc)
{
	bool		isnull;
	int64		position;
	char	   *event_type;
	Datum		event;

	position = DatumGetInt64(heap_getattr(tuple, Anum_events_global_position, desc, &isnull));
	event_type = TextDatumGetCString(heap_getattr(tuple, Anum_events_event_type, desc, &isnull));
	event = heap_copy_tuple_as_datum(tuple, desc);
	inline_apply_event(registry, scope, event, position, event_type);
}

/* The trigger protocol: AFTER INSERT FOR EACH STATEMENT, with new rows. */
static void
inline_check_call(FunctionCallInfo fcinfo)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired AFTER INSERT FOR EACH STATEMENT with a transition table",
						"projection._inline")));
}

/*
 * A handler appended events nested deeper than the limit: raise
 * statement_too_complex (54001, as max_stack_depth does), naming the
 * projection whose handler appended them.  The error aborts the appending
 * statement, so nothing of the chain is applied or appended.
 */
static void
inline_check_depth(int depth, Tuplestorestate *ts, TupleDesc desc)
{
	TupleTableSlot *slot;
	char	   *event_type = NULL;

	if (depth <= PROJECTION_MAX_INLINE_DEPTH)
		return;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(ts);
	if (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, Anum_events_event_type, &isnull);

		event_type = isnull ? NULL : TextDatumGetCString(d);
	}
	ExecDropSingleTupleTableSlot(slot);
	ereport(ERROR,
			(errcode(ERRCODE_STATEMENT_TOO_COMPLEX),
			 errmsg("inline projection \"%s\" appended events nested more than %d levels deep",
					inline_scope && inline_scope->projection ? inline_scope->projection : "?",
					PROJECTION_MAX_INLINE_DEPTH),
			 event_type ? errdetail("Its handler appended an event of type \"%s\" while applying an event appended %d levels deep by inline handlers.",
									event_type, depth - 1) : 0,
			 errhint("An inline handler probably appends events that its own projection, or a projection it feeds, handles again: append another event type, or filter the projection's event_types.")));
}

/*
 * A handler appended (the trigger is re-entered): queue the statement's
 * events for the outermost call, tagged with this subtransaction, which
 * inserted them (the statement ran in it), so that the subtransaction
 * callback can drop them if it rolls back, and with their depth, checked
 * against the limit.  The queue is in TopTransactionContext.
 */
static void
inline_queue_nested(Tuplestorestate *ts, TupleDesc desc)
{
	MemoryContext oldcxt;
	TupleTableSlot *slot;
	SubTransactionId subid = GetCurrentSubTransactionId();
	int			depth = inline_event_depth + 1;

	inline_check_depth(depth, ts, desc);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool		should_free;
		HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		PendingEvent *pe;

		oldcxt = MemoryContextSwitchTo(TopTransactionContext);
		pe = palloc(sizeof(PendingEvent));
		pe->subid = subid;
		pe->depth = depth;
		pe->tuple = heap_copytuple(tup);
		inline_pending = lappend(inline_pending, pe);
		MemoryContextSwitchTo(oldcxt);
		if (should_free)
			heap_freetuple(tup);
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * Events appended by handlers, in the order they were appended.  Those of
 * subtransactions that rolled back are gone from the queue; the others'
 * subtransactions have all ended (a handler cannot return inside one),
 * committed into ours.  Each event in event_cxt, reset after it, at its
 * depth, which the events its handlers append exceed by one.  The loop
 * checks for interrupts: it is where a runaway chain spends its time.
 */
static void
inline_apply_pending(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
					 TupleDesc desc, MemoryContext event_cxt)
{
	MemoryContext oldcxt;

	while (inline_pending != NIL)
	{
		PendingEvent *pe = linitial(inline_pending);

		CHECK_FOR_INTERRUPTS();
		Assert(pe->subid == GetCurrentSubTransactionId());
		inline_pending = list_delete_first(inline_pending);
		inline_event_depth = pe->depth;
		oldcxt = MemoryContextSwitchTo(event_cxt);
		inline_apply_tuple(registry, scope, pe->tuple, desc);
		projection_batch_apply_inline_one(registry, scope, pe->tuple, desc);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(event_cxt);
		heap_freetuple(pe->tuple);
		pfree(pe);
	}
	inline_event_depth = 0;
}

/*
 * The outermost call: the statement's events one by one in position order
 * (each in a context reset after it), then as one batch (batch.c), then
 * the events handlers appended meanwhile.  Handlers run as their owners
 * (handler.c), inside this SPI connection.
 */
static void
inline_apply_statement(ProjectionRegistry *registry, Tuplestorestate *ts, TupleDesc desc)
{
	ProjectionOwnerScope scope;
	MemoryContext event_cxt;
	MemoryContext oldcxt;
	TupleTableSlot *slot;

	memset(&scope, 0, sizeof(scope));
	inline_scope = &scope;
	event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection inline event",
									  ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool		should_free;
		HeapTuple	tup;

		oldcxt = MemoryContextSwitchTo(event_cxt);
		tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		inline_apply_tuple(registry, &scope, tup, desc);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(event_cxt);
	}
	ExecDropSingleTupleTableSlot(slot);
	/* then the statement's events as one batch (batch.c) */
	projection_batch_apply_inline(registry, &scope, ts, desc);
	inline_apply_pending(registry, &scope, desc, event_cxt);

	projection_owner_leave(&scope);
	inline_scope = NULL;
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	MemoryContextDelete(event_cxt);
}

/* After an error in the outermost call: free what is left in the queue. */
static void
inline_clear_pending(void)
{
	ListCell   *lc;

	foreach(lc, inline_pending)
	{
		PendingEvent *pe = lfirst(lc);

		heap_freetuple(pe->tuple);
		pfree(pe);
	}
	list_free(inline_pending);
	inline_pending = NIL;
	inline_event_depth = 0;
	inline_scope = NULL;
}

/*
 * AFTER INSERT FOR EACH STATEMENT on projection.events, with the inserted
 * rows as transition table: runs the inline projections, event by event in
 * position order, inside the appending transaction.  A handler error aborts
 * the append.
 */
Datum
projection_inline_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ProjectionRegistry *registry;

	inline_check_call(fcinfo);
	if (projection_statement_imported())
		return PointerGetDatum(NULL);

	registry = projection_registry_acquire();
	/* the groups with a running async projection get a worker at commit (poolcommit.c) */
	projection_pool_note_append(registry);
	if (registry->ninline_running == 0)
	{
		projection_registry_release(registry);
		return PointerGetDatum(NULL);
	}

	if (inline_depth > 0)
	{
		inline_queue_nested(td->tg_newtable, RelationGetDescr(td->tg_relation));
		projection_registry_release(registry);
		return PointerGetDatum(NULL);
	}

	/*
	 * If a handler fails, the error may be caught by a savepoint and the
	 * transaction go on: the depth and the queue must not stay behind.
	 */
	inline_depth++;
	PG_TRY();
	{
		inline_apply_statement(registry, td->tg_newtable, RelationGetDescr(td->tg_relation));
	}
	PG_FINALLY();
	{
		inline_depth--;
		if (inline_depth == 0)
			inline_clear_pending();	/* left over only after an error */
		projection_registry_release(registry);
	}
	PG_END_TRY();
	return PointerGetDatum(NULL);
}

/*
 * Whether an appending statement's inline projections are being applied:
 * batch statements called now fold new events of this transaction, not a
 * replay (snapapply.c).
 */
bool
projection_inline_applying(void)
{
	return inline_depth > 0;
}

/* Transaction end: the queue lived in TopTransactionContext, now gone. */
void
projection_inline_at_eoxact(void)
{
	inline_depth = 0;
	inline_pending = NIL;
	inline_event_depth = 0;
	inline_scope = NULL;
}

/* Subtransaction abort: the events it queued are gone. */
void
projection_inline_at_subxact_abort(SubTransactionId mySubid)
{
	ListCell   *lc;

	foreach(lc, inline_pending)
	{
		PendingEvent *pe = lfirst(lc);

		if (pe->subid == mySubid)
		{
			heap_freetuple(pe->tuple);
			pfree(pe);
			inline_pending = foreach_delete_current(inline_pending, lc);
		}
	}
}

/* Subtransaction commit: its queued events now belong to its parent. */
void
projection_inline_at_subxact_commit(SubTransactionId mySubid, SubTransactionId parentSubid)
{
	ListCell   *lc;

	foreach(lc, inline_pending)
	{
		PendingEvent *pe = lfirst(lc);

		if (pe->subid == mySubid)
			pe->subid = parentSubid;
	}
}
