/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The projection registry as seen by one backend.
 *
 * Every backend that appends events (inline projections) and every async
 * worker keeps a cache of projection.projections and projection.handlers:
 * one ProjectionRegistry, allocated in its own child of CacheMemoryContext,
 * with the kept SPI plans of the statement handlers.  Writes to the
 * registry tables fire a statement trigger that sends a relcache
 * invalidation for projection.projections
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
 * Running handlers as their owner is handler.c's.
 *
 * Locking: none.  The registry is read with the latest snapshot, as the
 * bootstrap superuser, taking only the AccessShareLocks of the read; the
 * invalidation callbacks run inside invalidation processing and only flip
 * this backend's flags; everything else here is backend-local.
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

static ProjectionOids oids;
static bool oids_valid = false;
static bool callback_registered = false;

static ProjectionRegistry *current_registry = NULL;
static bool registry_valid = false;
static ProjectionRegistry *retired_registries = NULL;
static int	registry_users = 0;
static uint64 registry_loads = 0;

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

/* a role was changed or dropped: its projections may have lost their owner */
static void
catalog_authid_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	registry_valid = false;
}

/* Register the relcache callback of the registry cache, once per backend. */
static void
catalog_register_callback(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(catalog_relcache_callback, (Datum) 0);
		/* a dropped owner makes its projections stop (owners.c) */
		CacheRegisterSyscacheCallback(AUTHOID, catalog_authid_callback, (Datum) 0);
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
		for (j = 0; j < def->nbatch_statements; j++)
		{
			if (def->batch_statements[j].plan != NULL)
				SPI_freeplan(def->batch_statements[j].plan);
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
 * One row of the registry query of registry_load_projections into "def",
 * in the registry's context (the current one).
 */
static void
registry_read_def(ProjectionDef *def, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;

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
}

/*
 * Read projection.projections into the registry's projections, in id
 * order.  Called by registry_load, connected to SPI as the bootstrap
 * superuser, with the registry's snapshot.
 */
static void
registry_load_projections(ProjectionRegistry *registry, Snapshot snapshot)
{
	SPIPlanPtr	plan;
	MemoryContext oldcxt;
	int			rc;
	uint64		i;

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

	oldcxt = MemoryContextSwitchTo(registry->cxt);
	registry->nprojections = (int) SPI_processed;
	registry->projections = palloc0(sizeof(ProjectionDef) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		def->cxt = registry->cxt;
		registry_read_def(def, SPI_tuptable->vals[i], SPI_tuptable->tupdesc);

		/*
		 * An owner that no longer exists (dropped under version 1.1, or by a
		 * backend without the library: owners.c) must not make every append
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
}

/*
 * How registry_attach_rows gives one row to its projection "def": the
 * query's columns after the projection id, and how many rows (this one
 * included) are still to come, at most, for the first allocation.  Runs in
 * the registry's context.
 */
typedef void (*RegistryAttachRow) (ProjectionDef *def, HeapTuple tup, TupleDesc desc,
								   uint64 remaining);

/*
 * Run "sql" (no parameters; first column the projection id, rows sorted by
 * it) with the registry's snapshot and give each row to its projection
 * through "attach": both lists are sorted by projection id, so one merge
 * walks them; rows of projections the registry does not hold are passed
 * over.  Called by registry_load after registry_load_projections,
 * connected to SPI as the bootstrap superuser; "what" says what is read,
 * in internal errors.
 */
static void
registry_attach_rows(ProjectionRegistry *registry, Snapshot snapshot, const char *sql,
					 const char *what, RegistryAttachRow attach)
{
	SPIPlanPtr	plan;
	MemoryContext oldcxt;
	int			rc;
	int			p = 0;
	uint64		i;

	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare the query %s: %s", what,
			 SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, NULL, NULL, snapshot, InvalidSnapshot, true, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, what);

	oldcxt = MemoryContextSwitchTo(registry->cxt);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int32		projid = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));

		while (p < registry->nprojections && registry->projections[p].id < projid)
			p++;
		if (p < registry->nprojections && registry->projections[p].id == projid)
			attach(&registry->projections[p], tup, SPI_tuptable->tupdesc, SPI_processed - i);
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);
	SPI_freeplan(plan);
}

/* A statement of projection.on (projection.handlers), in seq order */
static void
registry_attach_statement(ProjectionDef *def, HeapTuple tup, TupleDesc desc, uint64 remaining)
{
	ProjectionStatement *stmt;
	bool		isnull;

	if (def->statements == NULL)
		def->statements = palloc0(sizeof(ProjectionStatement) * remaining);
	stmt = &def->statements[def->nstatements++];
	stmt->event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	stmt->sql = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	stmt->plan = NULL;
}

/* A batch statement (projection.on_batch, run by batch.c), in seq order */
static void
registry_attach_batch_statement(ProjectionDef *def, HeapTuple tup, TupleDesc desc,
								uint64 remaining)
{
	ProjectionBatchStatement *stmt;
	bool		isnull;

	if (def->batch_statements == NULL)
		def->batch_statements = palloc0(sizeof(ProjectionBatchStatement) * remaining);
	stmt = &def->batch_statements[def->nbatch_statements++];
	stmt->sql = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	stmt->plan = NULL;
}

/*
 * Attach the statements of projection.on and the batch statements to the
 * registry's projections.  A database still at version 1.2 has no
 * batch_handlers table: no batch statements.
 */
static void
registry_load_statements(ProjectionRegistry *registry, Snapshot snapshot)
{
	registry_attach_rows(registry, snapshot,
						 "SELECT h.projection_id, h.event_type, h.statement "
						 "FROM projection.handlers h ORDER BY h.projection_id, h.seq",
						 "reading projection.handlers", registry_attach_statement);
	if (OidIsValid(get_relname_relid("batch_handlers", projection_oids()->schema)))
		registry_attach_rows(registry, snapshot,
							 "SELECT b.projection_id, b.statement FROM projection.batch_handlers b "
							 "ORDER BY b.projection_id, b.seq",
							 "reading projection.batch_handlers",
							 registry_attach_batch_statement);
}

/*
 * Read the registry tables into a new ProjectionRegistry: the projections,
 * then their statements and batch statements.
 *
 * Reads with the latest snapshot, whatever the caller's isolation level, so
 * that an appender under REPEATABLE READ still sees a projection created and
 * caught up after its snapshot was taken (create() locks out appends while it
 * runs, so everything committed after it is seen here).  The read runs as
 * the bootstrap superuser because appenders need no right on the registry;
 * no user code runs during it.  The registry generation is read before the
 * snapshot (shmem.c).  The result lives in its own context under
 * CacheMemoryContext.
 */
static ProjectionRegistry *
registry_load(void)
{
	MemoryContext cxt;
	ProjectionRegistry *registry;
	Snapshot	snapshot;
	Oid			save_userid;
	int			save_sec_context;

	(void) projection_oids();
	cxt = AllocSetContextCreate(CacheMemoryContext, "projection registry",
								ALLOCSET_SMALL_SIZES);
	registry = MemoryContextAllocZero(cxt, sizeof(ProjectionRegistry));
	registry->cxt = cxt;
	registry->serial = ++registry_loads;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the generation first, then the snapshot (shmem.c) */
	registry->trusted = projection_registry_generation(MyDatabaseId, &registry->generation);
	if (!registry->trusted)
		projection_registry_note_untrusted(MyDatabaseId);	/* poolcommit.c */
	snapshot = RegisterSnapshot(GetLatestSnapshot());

	registry_load_projections(registry, snapshot);
	registry_load_statements(registry, snapshot);

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

	if ((OidIsValid(def->handler) || def->nbatch_statements > 0) && def->types == NULL)
		return (Datum) 0;
	elems = palloc(sizeof(Datum) * Max(def->ntypes + def->nstatements, 1));
	if (OidIsValid(def->handler) || def->nbatch_statements > 0)
		for (i = 0; i < def->ntypes; i++)
			elems[n++] = CStringGetTextDatum(def->types[i]);
	for (i = 0; i < def->nstatements; i++)
		elems[n++] = CStringGetTextDatum(def->statements[i].event_type);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}
