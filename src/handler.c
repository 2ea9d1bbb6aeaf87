/*-------------------------------------------------------------------------
 *
 * handler.c
 *	  Running user code as the projection's owner: the owner scope, the
 *	  preparation of statement handlers, the per-transaction FmgrInfo of
 *	  handler functions, and applying one event (projection_apply).
 *
 * Handlers run as the projection's owner with SECURITY_RESTRICTED_OPERATION
 * and the projection's fixed search_path (projection_owner_enter), whoever
 * appends and whichever process applies the event.  Each call starts from
 * those settings: what a handler changes with SET, SET LOCAL or
 * set_config() is undone when it returns (projection_apply).
 *
 * A handler function's FmgrInfo is not part of the registry: it lives for
 * one transaction at most, and is dropped at the abort of the
 * subtransaction that built it, after an error through it, and when its
 * pg_proc row changes (see "Handler calls" below), so that the next event
 * always runs the function's current definition.  This file keeps no
 * shared state and takes no locks of its own; a statement handler's kept
 * plan belongs to the registry (catalog.c), which prepares it through
 * projection_prepare_statement on first use.
 *
 * IDENTIFICATION
 *	  src/handler.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "handler.h"
#include "projection.h"

/*
 * Switch to the projection's owner, with SECURITY_RESTRICTED_OPERATION and
 * its fixed search_path, unless the scope is already in that identity.
 * The switch is undone by projection_owner_leave(), or by transaction or
 * subtransaction abort (which restore the user and unwind the GUC nest
 * level), so callers need no PG_TRY.
 */
void
projection_owner_enter(ProjectionOwnerScope *scope, ProjectionDef *def)
{
	scope->projection = def->name;
	if (scope->active)
	{
		if (scope->owner == def->owner && strcmp(scope->search_path, def->search_path) == 0)
			return;
		projection_owner_leave(scope);
	}
	GetUserIdAndSecContext(&scope->save_userid, &scope->save_sec_context);
	SetUserIdAndSecContext(def->owner,
						   scope->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	scope->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", def->search_path,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	scope->owner = def->owner;
	scope->search_path = def->search_path;
	scope->active = true;
}

void
projection_owner_leave(ProjectionOwnerScope *scope)
{
	if (!scope->active)
		return;
	AtEOXact_GUC(false, scope->save_nestlevel);
	SetUserIdAndSecContext(scope->save_userid, scope->save_sec_context);
	scope->active = false;
}

/*
 * Prepare a statement handler: one statement, $1 of type projection.events,
 * a generic plan (the parameter is a whole row, custom plans gain nothing).
 * The plan is not kept; the caller decides.  Raises the parser's errors.
 */
SPIPlanPtr
projection_prepare_statement(const char *sql, Oid events_type)
{
	Oid			argtypes[1];
	SPIPlanPtr	plan;
	List	   *sources;

	argtypes[0] = events_type;
	plan = SPI_prepare_cursor(sql, 1, argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare_cursor failed: %s", SPI_result_code_string(SPI_result));

	sources = SPI_plan_get_plan_sources(plan);
	if (list_length(sources) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a statement handler must be exactly one SQL statement")));
	{
		CachedPlanSource *src = linitial(sources);

		if (src->commandTag != CMDTAG_INSERT && src->commandTag != CMDTAG_UPDATE &&
			src->commandTag != CMDTAG_DELETE && src->commandTag != CMDTAG_SELECT &&
			src->commandTag != CMDTAG_MERGE)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a statement handler must be INSERT, UPDATE, DELETE, MERGE or SELECT, not %s",
							GetCommandTagName(src->commandTag))));
	}
	return plan;
}

/* ---------------------------------------------------------------------
 * Handler calls
 *
 * A call handler (PL/pgSQL, SQL, fmgr_security_definer) keeps state in the
 * FmgrInfo it is called through: the language handler itself (fn_addr),
 * the compiled function or the SQL function's plans, the owner and SET
 * options of a SECURITY DEFINER function (fn_extra).  It expects that state
 * to live for one query, and nobody to call through it again after an
 * error: PL/pgSQL stamps a function struct as current before compiling the
 * body, so a failed compile leaves a stamped, empty struct behind, and the
 * next call through the same FmgrInfo executes it (a crash).
 *
 * So a handler's FmgrInfo lives for one transaction at most, in
 * handler_calls, keyed by projection and function (not by function alone:
 * an SQL function is parsed with the projection's search_path), with its
 * fn_extra in a context of its own under the CurTransactionContext of the
 * (sub)transaction that built it.  An entry is forgotten
 *  - at the end of the transaction (all of them);
 *  - at the abort of the subtransaction that built it, which frees its
 *    memory (entries built by an outer level stay: nothing of theirs failed);
 *  - after an error raised through it (projection_apply's PG_CATCH);
 *  - when the function's pg_proc row changes (CREATE OR REPLACE FUNCTION,
 *    ALTER FUNCTION ... OWNER TO / SET / SECURITY DEFINER), through a
 *    syscache callback: the change is seen from the next event on, in this
 *    transaction after the changing command, elsewhere after its commit.
 * A forgotten entry's FmgrInfo is not freed (a call through it may still be
 * running, e.g. a handler that redefined itself); its memory goes with its
 * transaction.  ProjectionDef caches a pointer to its entry's FmgrInfo,
 * valid while def->flinfo_epoch equals handler_calls_epoch, which every
 * removal advances; the registry itself holds no call state.
 * ---------------------------------------------------------------------
 */
typedef struct HandlerCallKey
{
	int32		projection_id;
	Oid			handler;
} HandlerCallKey;

typedef struct HandlerCall
{
	HandlerCallKey key;
	FmgrInfo   *flinfo;			/* with its fn_mcxt, a child of the
								 * CurTransactionContext of subid */
	SubTransactionId subid;		/* the subtransaction that built it */
	uint32		hashvalue;		/* PROCOID syscache hash of the function */
} HandlerCall;

static HTAB *handler_calls = NULL;	/* in TopMemoryContext, emptied at xact end */
static long handler_calls_count = 0;
static uint64 handler_calls_epoch = 1;

/*
 * Forget the entries that match: every one (all), those of one function
 * (hashvalue), or those built in a subtransaction at or below subid.
 */
static void
handler_calls_forget(bool all, uint32 hashvalue, SubTransactionId subid)
{
	HASH_SEQ_STATUS status;
	HandlerCall *call;

	if (handler_calls == NULL || handler_calls_count == 0)
		return;
	hash_seq_init(&status, handler_calls);
	while ((call = hash_seq_search(&status)) != NULL)
	{
		if (all ||
			(hashvalue != 0 && call->hashvalue == hashvalue) ||
			(subid != InvalidSubTransactionId && call->subid >= subid))
		{
			(void) hash_search(handler_calls, &call->key, HASH_REMOVE, NULL);
			handler_calls_count--;
		}
	}
	handler_calls_epoch++;
}

/*
 * pg_proc changed: forget the function's entries (hashvalue 0, after a
 * cache reset: every entry).  Runs inside invalidation processing, maybe in
 * the middle of a call through one of them: only unlinks entries.
 */
static void
handler_calls_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	handler_calls_forget(hashvalue == 0, hashvalue, InvalidSubTransactionId);
}

/* Transaction end (from xact.c): the entries' memory goes with the transaction. */
void
projection_handler_at_eoxact(void)
{
	handler_calls_forget(true, 0, InvalidSubTransactionId);
}

/*
 * Subtransaction abort (from xact.c): the entries it (or a subtransaction
 * inside it) built lose their memory now.  Subtransaction ids grow within
 * a transaction, so those are exactly the entries whose subid is not below
 * mySubid.
 */
void
projection_handler_at_subxact_abort(SubTransactionId mySubid)
{
	handler_calls_forget(false, 0, mySubid);
}

/*
 * Register the syscache callback of the handler calls, once per backend,
 * before the first entry is made.  (Their transaction-end cleanup is called
 * by xact.c, for every caller of projection_apply: appenders, the worker,
 * replays.)
 */
static void
handler_register_callbacks(void)
{
	static bool registered = false;

	if (!registered)
	{
		CacheRegisterSyscacheCallback(PROCOID, handler_calls_proc_callback, (Datum) 0);
		registered = true;
	}
}

/*
 * The FmgrInfo to call def's handler through in this transaction: the one
 * def cached, if still current, else the transaction's entry, else a new
 * one.  Raises an error if the function no longer exists.
 */
static FmgrInfo *
handler_call_get(ProjectionDef *def)
{
	HandlerCallKey key;
	HandlerCall *call;
	bool		found;

	if (def->flinfo != NULL && def->flinfo_epoch == handler_calls_epoch)
		return def->flinfo;

	handler_register_callbacks();
	if (handler_calls == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(HandlerCallKey);
		ctl.entrysize = sizeof(HandlerCall);
		ctl.hcxt = TopMemoryContext;
		handler_calls = hash_create("projection handler calls", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.projection_id = def->id;
	key.handler = def->handler;
	call = hash_search(handler_calls, &key, HASH_FIND, NULL);
	if (call == NULL)
	{
		MemoryContext cxt;
		FmgrInfo   *flinfo;

		if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(def->handler)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("handler function %u of projection \"%s\" does not exist",
							def->handler, def->name),
					 errhint("Drop the projection with projection.drop() and create it again.")));

		/*
		 * Build it before entering it: catalog reads may process
		 * invalidations, whose callback changes the table.
		 */
		cxt = AllocSetContextCreate(CurTransactionContext, "projection handler call",
									ALLOCSET_SMALL_SIZES);
		flinfo = MemoryContextAllocZero(cxt, sizeof(FmgrInfo));
		fmgr_info_cxt(def->handler, flinfo, cxt);

		call = hash_search(handler_calls, &key, HASH_ENTER, &found);
		handler_calls_count++;
		call->flinfo = flinfo;
		call->subid = GetCurrentSubTransactionId();
		call->hashvalue = GetSysCacheHashValue1(PROCOID, ObjectIdGetDatum(def->handler));
	}
	def->flinfo = call->flinfo;
	def->flinfo_epoch = handler_calls_epoch;
	return call->flinfo;
}

/* An error went through this FmgrInfo: never call through it again. */
static void
handler_call_failed(ProjectionDef *def, FmgrInfo *flinfo)
{
	HandlerCallKey key;
	HandlerCall *call;

	if (handler_calls == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.projection_id = def->id;
	key.handler = def->handler;
	call = hash_search(handler_calls, &key, HASH_FIND, NULL);
	if (call != NULL && call->flinfo == flinfo)
	{
		(void) hash_search(handler_calls, &key, HASH_REMOVE, NULL);
		handler_calls_count--;
	}
	handler_calls_epoch++;
}

/*
 * Call def's handler function with the event.  An error forgets the
 * FmgrInfo it went through (the call handler's state in it may be half
 * made) before it propagates.
 */
static void
handler_call_invoke(ProjectionDef *def, Datum event)
{
	FmgrInfo   *flinfo = handler_call_get(def);

	LOCAL_FCINFO(fcinfo, 1);

	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = event;
	fcinfo->args[0].isnull = false;
	PG_TRY();
	{
		/* a void SQL function returns NULL: ignore the result entirely */
		(void) FunctionCallInvoke(fcinfo);
	}
	PG_CATCH();
	{
		handler_call_failed(def, flinfo);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* error context for handler calls: which projection, which event */
typedef struct ApplyContext
{
	ProjectionDef *def;
	int64		position;
	const char *event_type;
} ApplyContext;

static void
apply_error_callback(void *arg)
{
	ApplyContext *ctx = (ApplyContext *) arg;

	errcontext("projection \"%s\", event %lld (%s)",
			   ctx->def->name, (long long) ctx->position, ctx->event_type);
}

/*
 * Apply one event to one projection: its handler function (if it takes the
 * type), then its statements for the type, in the order they were added.
 *
 * The caller has entered the owner's scope (projection_owner_enter), is
 * connected to SPI, and pushed an active snapshot.  Errors propagate, with
 * a context line naming the projection and the event.
 */
void
projection_apply(ProjectionDef *def, Datum event, const char *event_type, int64 position)
{
	ErrorContextCallback errcallback;
	ApplyContext ctx;
	int			i;
	int			nestlevel;
	bool		handler_wants = false;

	ctx.def = def;
	ctx.position = position;
	ctx.event_type = event_type;
	errcallback.callback = apply_error_callback;
	errcallback.arg = &ctx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	if (OidIsValid(def->handler))
	{
		if (def->types == NULL)
			handler_wants = true;
		else
		{
			for (i = 0; i < def->ntypes; i++)
			{
				if (strcmp(def->types[i], event_type) == 0)
				{
					handler_wants = true;
					break;
				}
			}
		}
	}

	/*
	 * Settings: the call starts from the scope's (the projection's
	 * search_path, the session's or worker's others), and whatever the
	 * handler sets, even with SET or set_config(..., false), is undone when
	 * it returns, as for a function with a SET clause; otherwise the next
	 * projection of the same owner, or the next event, would run with it.
	 * On error, the (sub)transaction abort unwinds the nest level.
	 */
	nestlevel = NewGUCNestLevel();

	if (handler_wants)
		handler_call_invoke(def, event);

	for (i = 0; i < def->nstatements; i++)
	{
		ProjectionStatement *stmt = &def->statements[i];
		int			rc;

		if (strcmp(stmt->event_type, event_type) != 0)
			continue;
		if (stmt->plan == NULL)
		{
			SPIPlanPtr	plan = projection_prepare_statement(stmt->sql,
															projection_oids()->events_type);

			if (SPI_keepplan(plan) != 0)
				elog(ERROR, "SPI_keepplan failed");
			stmt->plan = plan;
		}
		rc = SPI_execute_plan(stmt->plan, &event, NULL, false, 0);
		if (rc < 0)
			elog(ERROR, "statement handler failed: %s", SPI_result_code_string(rc));
		if (SPI_tuptable != NULL)
			SPI_freetuptable(SPI_tuptable);
	}

	AtEOXact_GUC(false, nestlevel);
	error_context_stack = errcallback.previous;
}
