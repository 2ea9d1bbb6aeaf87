/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The projection registry as seen by one backend.
 *
 * Every backend that appends events (inline projections) and every async
 * worker keeps a cache of projection.projections and projection.handlers:
 * one ProjectionRegistry, allocated in its own child of CacheMemoryContext,
 * with the kept SPI plans of the statement handlers.  Writes to the registry tables fire a statement trigger that
 * sends a relcache invalidation for projection.projections
 * (projection_registry_changed_trigger), so every backend drops its cache at
 * the writer's commit, and the writer itself at its next command.  Those
 * invalidations are sent only after the writer's commit has become visible,
 * so a cache is also checked against the registry generation (shmem.c) each
 * time it is acquired: a snapshot that sees a new projection, or its events,
 * never meets a cache without it.
 *
 * A registry in use by a running trigger or worker batch is never freed
 * under it: invalidation only marks it stale; the stale registry is retired
 * and freed by the next acquire that finds no user.  Users are counted;
 * the count is reset when a transaction aborts (projection_registry_at_abort).
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
 * always runs the function's current definition.
 *
 * IDENTIFICATION
 *	  src/catalog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "trigger.h"

static ProjectionOids oids;
static bool oids_valid = false;
static bool callback_registered = false;

static ProjectionRegistry *current_registry = NULL;
static bool registry_valid = false;
static ProjectionRegistry *retired_registries = NULL;
static int	registry_users = 0;

/*
 * Relcache callback: any change to one of our relations (including DROP
 * EXTENSION, and a full reset with InvalidOid) drops the cached object ids;
 * a change to the registry tables (sent by the registry trigger) drops the
 * registry.  Runs inside invalidation processing: only flips flags.
 */
static void
catalog_relcache_callback(Datum arg, Oid relid)
{
	if (!oids_valid || relid == InvalidOid ||
		relid == oids.events || relid == oids.registry ||
		relid == oids.handlers || relid == oids.sequence ||
		(OidIsValid(oids.checkpoints) && relid == oids.checkpoints))
	{
		registry_valid = false;
		if (relid != oids.registry && relid != oids.handlers)
			oids_valid = false;
	}
}

static void handler_calls_proc_callback(Datum arg, int cacheid, uint32 hashvalue);
static void handler_calls_xact_callback(XactEvent event, void *arg);
static void handler_calls_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
										   SubTransactionId parentSubid, void *arg);

/*
 * Register this file's callbacks once per backend: the relcache callback for
 * the registry, and the syscache and transaction callbacks of the handler
 * calls (kept here rather than in trigger.c's transaction callbacks, so that
 * every caller of projection_apply has them: appenders, the worker, replays).
 */
static void
catalog_register_callback(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(catalog_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, handler_calls_proc_callback, (Datum) 0);
		RegisterXactCallback(handler_calls_xact_callback, NULL);
		RegisterSubXactCallback(handler_calls_subxact_callback, NULL);
		callback_registered = true;
	}
}

static Oid
catalog_relid(const char *relname, Oid schema)
{
	Oid			relid = get_relname_relid(relname, schema);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"%s.%s\" of extension \"%s\" does not exist",
						PROJECTION_SCHEMA_NAME, relname, PROJECTION_EXTENSION_NAME),
				 errhint("Reinstall the extension with DROP EXTENSION projection and CREATE EXTENSION projection.")));
	return relid;
}

/*
 * Object ids of the extension's relations in the current database, cached
 * until a relcache invalidation touches one of them.  Raises an error if the
 * extension's schema or tables are missing.
 */
const ProjectionOids *
projection_oids(void)
{
	if (oids_valid)
	{
		/* a database still at version 1.0 gets the table when it is updated */
		if (!OidIsValid(oids.checkpoints))
			oids.checkpoints = get_relname_relid(PROJECTION_CHECKPOINTS_TABLE, oids.schema);
		return &oids;
	}

	catalog_register_callback();
	oids.schema = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	if (!OidIsValid(oids.schema))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is not installed in this database",
						PROJECTION_EXTENSION_NAME),
				 errhint("Run CREATE EXTENSION projection.")));
	oids.events = catalog_relid(PROJECTION_EVENTS_TABLE, oids.schema);
	oids.events_type = get_rel_type_id(oids.events);
	oids.sequence = catalog_relid(PROJECTION_EVENTS_SEQUENCE, oids.schema);
	oids.stream_index = catalog_relid(PROJECTION_EVENTS_STREAM_INDEX, oids.schema);
	oids.registry = catalog_relid(PROJECTION_REGISTRY_TABLE, oids.schema);
	oids.handlers = catalog_relid(PROJECTION_HANDLERS_TABLE, oids.schema);
	oids.checkpoints = get_relname_relid(PROJECTION_CHECKPOINTS_TABLE, oids.schema);
	oids_valid = true;
	return &oids;
}

/*
 * Read the sequence's last_value without raising on a fresh sequence, as
 * the bootstrap superuser (callers need no right on the sequence).
 */
int64
projection_sequence_last_value(void)
{
	Datum		last;
	Oid			save_userid;
	int			save_sec_context;

	LOCAL_FCINFO(lfc, 1);

	InitFunctionCallInfoData(*lfc, NULL, 1, InvalidOid, NULL, NULL);
	lfc->args[0].value = ObjectIdGetDatum(projection_oids()->sequence);
	lfc->args[0].isnull = false;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	last = pg_sequence_last_value(lfc);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return lfc->isnull ? 0 : DatumGetInt64(last);
}

static ProjectionState
parse_state(const char *s)
{
	if (strcmp(s, "running") == 0)
		return PROJECTION_RUNNING;
	if (strcmp(s, "paused") == 0)
		return PROJECTION_PAUSED;
	if (strcmp(s, "failed") == 0)
		return PROJECTION_FAILED;
	if (strcmp(s, "rebuilding") == 0)
		return PROJECTION_REBUILDING;
	if (strcmp(s, "catching_up") == 0)
		return PROJECTION_CATCHING_UP;
	elog(ERROR, "unrecognized projection state \"%s\"", s);
	return PROJECTION_FAILED;	/* keep compiler quiet */
}

static void
registry_free(ProjectionRegistry *registry)
{
	int			i,
				j;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		for (j = 0; j < def->nstatements; j++)
		{
			if (def->statements[j].plan != NULL)
				SPI_freeplan(def->statements[j].plan);
		}
	}
	MemoryContextDelete(registry->cxt);
}

/* text[] datum to a palloc'd array of C strings in the current context */
static char **
text_array_to_cstrings(Datum array, int *count)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;
	char	  **result;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	result = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
		result[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	*count = n;
	return result;
}

static Oid *
oid_array(Datum array, int *count)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;
	Oid		   *result;
	ArrayType  *arr = DatumGetArrayTypeP(array);

	/* a regclass[] column: oid and regclass elements are laid out alike */
	deconstruct_array(arr, ARR_ELEMTYPE(arr), sizeof(Oid), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	result = palloc(sizeof(Oid) * Max(n, 1));
	for (i = 0; i < n; i++)
		result[i] = nulls[i] ? InvalidOid : DatumGetObjectId(elems[i]);
	*count = n;
	return result;
}

/*
 * Read the registry tables into a new ProjectionRegistry.
 *
 * Reads with the latest snapshot, whatever the caller's isolation level, so
 * that an appender under REPEATABLE READ still sees a projection created and
 * caught up after its snapshot was taken (create() locks out appends while it
 * runs, so everything committed after it is seen here).  The read runs as
 * the bootstrap superuser because appenders need no right on the registry;
 * no user code runs during it.
 */
static ProjectionRegistry *
registry_load(void)
{
	const ProjectionOids *o = projection_oids();
	MemoryContext cxt;
	MemoryContext oldcxt;
	ProjectionRegistry *registry;
	SPIPlanPtr	plan;
	Snapshot	snapshot;
	Oid			save_userid;
	int			save_sec_context;
	int			rc;
	uint64		i;

	(void) o;
	cxt = AllocSetContextCreate(CacheMemoryContext, "projection registry",
								ALLOCSET_SMALL_SIZES);
	registry = MemoryContextAllocZero(cxt, sizeof(ProjectionRegistry));
	registry->cxt = cxt;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the generation first, then the snapshot (shmem.c) */
	registry->trusted = projection_registry_generation(MyDatabaseId, &registry->generation);
	snapshot = RegisterSnapshot(GetLatestSnapshot());

	plan = SPI_prepare("SELECT p.id, p.name, p.handler::pg_catalog.oid, p.event_types, "
					   "p.mode OPERATOR(pg_catalog.=) 'inline', "
					   "p.tables::pg_catalog.oid[], p.on_error OPERATOR(pg_catalog.=) 'skip', "
					   "p.owner::pg_catalog.oid, p.search_path, p.state, p.position "
					   "FROM projection.projections p ORDER BY p.id",
					   0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare registry query: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, NULL, NULL, snapshot, InvalidSnapshot, true, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "reading projection.projections");

	oldcxt = MemoryContextSwitchTo(cxt);
	registry->nprojections = (int) SPI_processed;
	registry->projections = palloc0(sizeof(ProjectionDef) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ProjectionDef *def = &registry->projections[i];
		bool		isnull;
		Datum		d;

		def->cxt = cxt;
		def->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		def->name = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		def->handler = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		if (isnull)
		{
			def->ntypes = 0;
			def->types = NULL;
		}
		else
			def->types = text_array_to_cstrings(d, &def->ntypes);
		def->is_inline = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		def->tables = oid_array(SPI_getbinval(tup, desc, 6, &isnull), &def->ntables);
		def->skip_errors = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		def->search_path = TextDatumGetCString(SPI_getbinval(tup, desc, 9, &isnull));
		def->state = parse_state(TextDatumGetCString(SPI_getbinval(tup, desc, 10, &isnull)));
		def->position = DatumGetInt64(SPI_getbinval(tup, desc, 11, &isnull));

		/*
		 * An owner that no longer exists (dropped under version 1.1, or by a
		 * backend without the library: depend.c) must not make every append
		 * fail: nobody runs such a projection.
		 */
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(def->owner)))
			def->state = PROJECTION_FAILED;
		if (def->is_inline && def->state == PROJECTION_RUNNING)
			registry->ninline_running++;
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);
	SPI_freeplan(plan);

	plan = SPI_prepare("SELECT h.projection_id, h.event_type, h.statement "
					   "FROM projection.handlers h ORDER BY h.projection_id, h.seq",
					   0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare handler query: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, NULL, NULL, snapshot, InvalidSnapshot, true, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "reading projection.handlers");

	oldcxt = MemoryContextSwitchTo(cxt);
	{
		int			p = 0;

		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int32		projid = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			ProjectionDef *def;
			ProjectionStatement *stmt;

			/* both lists are sorted by projection id: merge them */
			while (p < registry->nprojections && registry->projections[p].id < projid)
				p++;
			if (p >= registry->nprojections || registry->projections[p].id != projid)
				continue;
			def = &registry->projections[p];
			if (def->statements == NULL)
				def->statements = palloc0(sizeof(ProjectionStatement) * (SPI_processed - i));
			stmt = &def->statements[def->nstatements++];
			stmt->event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
			stmt->sql = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
			stmt->plan = NULL;
		}
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_freeplan(plan);

	UnregisterSnapshot(snapshot);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	SetUserIdAndSecContext(save_userid, save_sec_context);
	return registry;
}

/*
 * Is the cached registry good for the active snapshot (taken before this
 * call)?  Relcache invalidations reach us only after a committing writer has
 * become visible; the registry generation closes that window (shmem.c).
 */
static bool
registry_current(ProjectionRegistry *registry)
{
	uint64		gen;

	if (!registry->trusted)
		return false;
	(void) projection_registry_generation(MyDatabaseId, &gen);
	return gen == registry->generation;
}

/*
 * Return the current registry, loading it if it is stale, and count the
 * caller as a user until projection_registry_release().  The result lives
 * in its own memory context under CacheMemoryContext.
 */
ProjectionRegistry *
projection_registry_acquire(void)
{
	catalog_register_callback();
	projection_register_xact_callbacks();	/* resets the user count at abort */
	if (registry_users == 0)
	{
		while (retired_registries != NULL)
		{
			ProjectionRegistry *next = retired_registries->next_retired;

			registry_free(retired_registries);
			retired_registries = next;
		}
	}
	if (!registry_valid || current_registry == NULL || !registry_current(current_registry))
	{
		ProjectionRegistry *fresh;

		/* mark valid first: an invalidation arriving during the load wins */
		registry_valid = true;
		PG_TRY();
		{
			fresh = registry_load();
		}
		PG_CATCH();
		{
			registry_valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (current_registry != NULL)
		{
			current_registry->next_retired = retired_registries;
			retired_registries = current_registry;
		}
		current_registry = fresh;
	}
	registry_users++;
	return current_registry;
}

void
projection_registry_release(ProjectionRegistry *registry)
{
	if (registry_users > 0)
		registry_users--;
}

/* Forget the cached registry; the next acquire reloads it. */
void
projection_registry_invalidate(void)
{
	registry_valid = false;
}

/* Transaction end: no trigger or batch is running any more. */
void
projection_registry_at_abort(void)
{
	registry_users = 0;
}

/*
 * Does this projection handle this event type?  Either its handler function
 * takes the type (event_types NULL: every type), or one of its statements
 * is for the type.
 */
bool
projection_wants(ProjectionDef *def, const char *event_type)
{
	int			i;

	if (OidIsValid(def->handler))
	{
		if (def->types == NULL)
			return true;
		for (i = 0; i < def->ntypes; i++)
			if (strcmp(def->types[i], event_type) == 0)
				return true;
	}
	for (i = 0; i < def->nstatements; i++)
		if (strcmp(def->statements[i].event_type, event_type) == 0)
			return true;
	return false;
}

/*
 * The event types this projection handles, as a text[] datum for a
 * "event_type = ANY ($n)" filter, or (Datum) 0 when it handles every type.
 * Replays that need no gap detection (a rebuild, a catch-up below the safe
 * horizon) read only these events.
 */
Datum
projection_type_filter(ProjectionDef *def)
{
	Datum	   *elems;
	int			n = 0;
	int			i;

	if (OidIsValid(def->handler) && def->types == NULL)
		return (Datum) 0;
	elems = palloc(sizeof(Datum) * Max(def->ntypes + def->nstatements, 1));
	if (OidIsValid(def->handler))
		for (i = 0; i < def->ntypes; i++)
			elems[n++] = CStringGetTextDatum(def->types[i]);
	for (i = 0; i < def->nstatements; i++)
		elems[n++] = CStringGetTextDatum(def->statements[i].event_type);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

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

/* Transaction end: the entries' memory goes with the transaction. */
static void
handler_calls_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			handler_calls_forget(true, 0, InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

/*
 * Subtransaction abort: the entries it (or a subtransaction inside it) built
 * lose their memory now.  Subtransaction ids grow within a transaction, so
 * those are exactly the entries whose subid is not below mySubid.
 */
static void
handler_calls_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		handler_calls_forget(false, 0, mySubid);
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

	catalog_register_callback();
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
