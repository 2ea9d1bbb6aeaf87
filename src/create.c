/*-------------------------------------------------------------------------
 *
 * create.c
 *	  projection.create(): its arguments and the caller's rights, the
 *	  registry row, and what follows it (emptying the tables, the inline
 *	  catch-up, a worker for an async projection).
 *
 * Every argument is checked before the first write, so bad input changes
 * nothing.  The registry row is written through registry.c as the
 * bootstrap superuser, owned by the caller; the emptiness check reads the
 * tables as the caller.  User code runs as the new projection's owner
 * (replay.c, handler.c).
 *
 * Locking: a projection name taken is seen by the plain SELECT before the
 * insert, a concurrent create of the same name by the registry's unique
 * index.  An inline projection locks appenders out (ShareLock on
 * projection.events, inline.c) before the emptiness check and holds it to
 * the end of the transaction, so that its catch-up sees every event and no
 * append runs its handler on a half-built read model.
 *
 * IDENTIFICATION
 *	  src/create.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "events.h"
#include "horizon.h"
#include "inline.h"
#include "lifecycle.h"
#include "pool.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_create);

/* ---------------------------------------------------------------------
 * projection.create
 * ---------------------------------------------------------------------
 */

/* The fixed search_path handlers run with: pg_catalog, the creator's schemas, pg_temp last. */
static char *
creator_search_path(void)
{
	List	   *schemas = fetch_search_path(false);
	ListCell   *lc;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "pg_catalog");
	foreach(lc, schemas)
	{
		Oid			nsp = lfirst_oid(lc);
		char	   *nspname;

		if (nsp == PG_CATALOG_NAMESPACE || isAnyTempNamespace(nsp))
			continue;
		nspname = get_namespace_name(nsp);
		if (nspname == NULL)
			continue;
		appendStringInfo(&buf, ", %s", quote_identifier(nspname));
	}
	appendStringInfoString(&buf, ", pg_temp");
	return buf.data;
}

/* A handler must be f(projection.events) RETURNS void, executable by the caller. */
static void
check_handler(Oid handler)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			events_type = projection_oids()->events_type;
	bool		ok;
	bool		is_temp;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 1 && proc->proargtypes.values[0] == events_type &&
		proc->prorettype == VOIDOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	is_temp = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(tup);
	/* it would go at the end of the session, and other sessions cannot call it */
	if (is_temp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("temporary function \"%s\" cannot be a projection handler",
						get_func_name(handler)),
				 errdetail("A temporary function is dropped at the end of its session, and other sessions cannot call it.")));
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a projection handler",
						format_procedure(handler)),
				 errdetail("A handler must take one argument of type projection.events and return void."),
				 errhint("Declare it as CREATE FUNCTION f(e projection.events) RETURNS void.")));
	if (pg_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(handler));
}

/*
 * WARNING when no worker can run async projections in this database: the
 * library is not preloaded, max_worker_processes cannot hold the launcher,
 * the logical replication launcher and this database's workers, or the
 * launcher could not start them (no slot, or no background worker left).
 */
static void
warn_if_no_worker(void)
{
	const char *reason;
	char	   *hint;

	if (!projection_preloaded)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections will not run: the projection library is not preloaded"),
				 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
		return;
	}
	if (max_worker_processes < 2 + projection_workers_per_database)
	{
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections may not run: max_worker_processes is %d", max_worker_processes),
				 errhint("Raise max_worker_processes to at least %d (the launcher, the logical replication launcher and the projection.workers_per_database workers of one busy database), and restart the server.",
						 2 + projection_workers_per_database)));
		return;
	}

	/* workers come from the shared pool on demand (pool.c) */
	reason = projection_pool_unavailable(MyDatabaseId, &hint);
	if (reason != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async projections will not run yet: %s", reason),
				 errhint("%s", hint)));
}

/*
 * The first of "tables" that holds a row, as a qualified name, or NULL.
 * Looked at as the caller, who must be allowed to read the tables (even
 * whether a table holds a row is not told to a role that may not read
 * it; row-level security applies as to any read).  Caller is connected to
 * SPI.
 */
static char *
first_nonempty_table(ArrayType *tables)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	deconstruct_array(tables, ARR_ELEMTYPE(tables), sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Oid			relid = DatumGetObjectId(elems[i]);
		char	   *qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
														   get_rel_name(relid));

		int			rc;

		if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(relid)),
					 errdetail("Creating a projection from the beginning checks that its tables are empty, which needs the SELECT privilege on table %s.", qualified),
					 errhint("Grant SELECT on the table, or pass if_not_empty => 'keep' or if_not_empty => 'empty'.")));
		rc = SPI_execute(psprintf("SELECT FROM %s LIMIT 1", qualified), true, 1);
		projection_spi_check(rc, SPI_OK_SELECT, "checking that a table is empty");
		if (SPI_processed > 0)
			return qualified;
	}
	return NULL;
}

/* The arguments of create(), read and checked by create_read_args. */
typedef struct CreateArgs
{
	char	   *name;
	Oid			handler;		/* InvalidOid: statements only */
	ArrayType  *event_types;	/* NULL: every type */
	ArrayType  *tables;
	char	   *mode;
	char	   *on_error;
	char	   *if_not_empty;	/* "error", "keep" or "empty" */
	bool		if_not_exists;
	bool		is_inline;
	bool		from_beginning;
} CreateArgs;

/*
 * Read create()'s arguments and check their values (no lookups yet).  A
 * 1.1 definition of create() (before ALTER EXTENSION UPDATE) passes no
 * if_not_empty and no if_not_exists.
 */
static void
create_read_args(FunctionCallInfo fcinfo, CreateArgs *args)
{
	char	   *start_from;

	args->name = projection_text_arg(fcinfo, 0, "name");
	args->handler = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	args->if_not_empty = "error";
	args->if_not_exists = false;
	args->mode = projection_text_arg(fcinfo, 3, "mode");
	start_from = projection_text_arg(fcinfo, 5, "start_from");
	args->on_error = projection_text_arg(fcinfo, 6, "on_error");
	if (PG_NARGS() > 7)
		args->if_not_empty = projection_text_arg(fcinfo, 7, "if_not_empty");
	if (PG_NARGS() > 8)
	{
		projection_require_arg(fcinfo, 8, "if_not_exists");
		args->if_not_exists = PG_GETARG_BOOL(8);
	}
	projection_require_arg(fcinfo, 4, "tables");
	args->event_types = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	args->tables = PG_GETARG_ARRAYTYPE_P(4);

	if (strcmp(args->mode, "inline") == 0)
		args->is_inline = true;
	else if (strcmp(args->mode, "async") == 0)
		args->is_inline = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", args->mode),
				 errhint("Valid modes are \"inline\" and \"async\".")));
	if (strcmp(start_from, "beginning") == 0)
		args->from_beginning = true;
	else if (strcmp(start_from, "end") == 0)
		args->from_beginning = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid start_from \"%s\"", start_from),
				 errhint("Valid values are \"beginning\" and \"end\".")));
	if (strcmp(args->on_error, "stop") != 0 && strcmp(args->on_error, "skip") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid on_error \"%s\"", args->on_error),
				 errhint("Valid values are \"stop\" and \"skip\".")));
	if (strcmp(args->if_not_empty, "error") != 0 && strcmp(args->if_not_empty, "keep") != 0 &&
		strcmp(args->if_not_empty, "empty") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid if_not_empty \"%s\"", args->if_not_empty),
				 errhint("Valid values are \"error\", \"keep\" and \"empty\".")));
}

/*
 * The caller's rights: SELECT on the events (a projection receives them),
 * TRIGGER for an inline projection, EXECUTE on the handler, the right to
 * write the tables; and the handler's signature and the event types.
 */
static void
create_check_rights(const CreateArgs *args)
{
	projection_check_events_privilege(ACL_SELECT, "Creating a projection");
	if (args->is_inline)
		projection_check_events_privilege(ACL_TRIGGER, "Creating an inline projection");
	if (OidIsValid(args->handler))
		check_handler(args->handler);
	if (args->event_types != NULL)
		projection_check_event_types(args->event_types, "Pass NULL to handle every event type.");
	projection_check_tables(args->tables);
}

/*
 * Does a projection of this name exist?  With if_not_exists, an identical
 * one gets a NOTICE (lifecycle.c) and true, a different one an error;
 * without, a name taken is DUPLICATE_OBJECT.  Connected to SPI.
 */
static bool
create_exists(const CreateArgs *args)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(args->name);
	projection_registry_exec("SELECT 1 FROM projection.projections WHERE name OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0 && args->if_not_exists)
	{
		/* identical: NOTICE and nothing else; different: an error */
		projection_create_existing(args->name, args->handler, args->event_types,
								   args->is_inline, args->tables, args->on_error);
		return true;
	}
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("projection \"%s\" already exists", args->name)));
	return false;
}

/*
 * From the beginning, with if_not_empty 'error': refuse tables that hold
 * rows (every existing event would be counted twice).  Connected to SPI.
 */
static void
create_check_empty(const CreateArgs *args)
{
	char	   *table;

	if (!args->from_beginning || strcmp(args->if_not_empty, "error") != 0 ||
		projection_sequence_last_value() <= 0)
		return;
	table = first_nonempty_table(args->tables);
	if (table != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot create projection \"%s\" from the beginning: table %s is not empty", args->name, table),
				 errdetail("Table %s already holds rows, and start_from => 'beginning' applies every existing event to it, so they would be counted twice.", table),
				 errhint("Empty the table first, pass if_not_empty => 'empty' to have create() empty the projection's tables as rebuild() does, or if_not_empty => 'keep' if the rows may stay (idempotent handlers).")));
}

/*
 * Insert the registry row, owned by the caller, with the creator's
 * search_path: at the end of the store (start_from 'end'), or at 0, in
 * state catching_up for an async projection with events to catch up.
 * Connected to SPI.
 */
static void
create_insert_row(const CreateArgs *args, const char *search_path)
{
	Oid			types[10] = {TEXTOID, OIDOID, TEXTARRAYOID, TEXTOID, OIDARRAYOID,
	TEXTOID, OIDOID, TEXTOID, INT8OID, TEXTOID};
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64		start_position = 0;
	const char *state = "running";

	if (!args->from_beginning)
		start_position = projection_sequence_last_value();
	else if (!args->is_inline && projection_sequence_last_value() > 0)
		state = "catching_up";

	values[0] = CStringGetTextDatum(args->name);
	values[1] = ObjectIdGetDatum(args->handler);
	if (!OidIsValid(args->handler))
		nulls[1] = 'n';
	if (args->event_types == NULL)
		nulls[2] = 'n';
	else
		values[2] = PointerGetDatum(args->event_types);
	values[3] = CStringGetTextDatum(args->mode);
	values[4] = PointerGetDatum(args->tables);
	values[5] = CStringGetTextDatum(args->on_error);
	values[6] = ObjectIdGetDatum(GetUserId());
	values[7] = CStringGetTextDatum(search_path);
	values[8] = Int64GetDatum(start_position);
	values[9] = CStringGetTextDatum(state);
	projection_creating = true; /* not a restore; reset at abort too */
	projection_registry_exec("INSERT INTO projection.projections "
							 "(name, handler, event_types, mode, tables, on_error, owner, search_path, position, state) "
							 "VALUES ($1, $2::pg_catalog.regprocedure, $3, $4, $5::pg_catalog.regclass[], $6, "
							 "$7::pg_catalog.regrole, $8, $9, $10)",
							 10, types, values, nulls, SPI_OK_INSERT);
	projection_creating = false;
	CommandCounterIncrement();
}

/*
 * The new projection's definition from a reloaded registry cache (the row
 * was inserted by this transaction); release it with
 * projection_registry_release(*registry).
 */
static ProjectionDef *
create_new_def(const char *name, MemoryContext cxt, ProjectionRegistry **registry)
{
	ProjectionRow *row = projection_registry_lookup(name, cxt);

	projection_registry_invalidate();
	*registry = projection_registry_acquire();
	return projection_registry_def(*registry, row->id);
}

/*
 * What follows the insert: emptying the tables (if_not_empty 'empty'), the
 * inline catch-up (before create returns), the worker for an async one.
 * Connected to SPI.
 */
static void
create_start(const CreateArgs *args, MemoryContext cxt)
{
	ProjectionRegistry *registry;
	ProjectionDef *def;

	if (args->from_beginning && strcmp(args->if_not_empty, "empty") == 0)
	{
		def = create_new_def(args->name, cxt, &registry);
		projection_empty_tables(def);
		projection_registry_release(registry);
		CommandCounterIncrement();
	}

	if (args->is_inline && args->from_beginning && !OidIsValid(args->handler) &&
		projection_sequence_last_value() > 0)
		ereport(NOTICE,
				(errmsg("inline projection \"%s\" has no handler function yet, so existing events are not applied to it", args->name),
				 errhint("Add its statements with projection.on(), then call projection.rebuild('%s').", args->name)));
	if (args->is_inline && args->from_beginning)
	{
		int64		replayed;
		int64		last;

		def = create_new_def(args->name, cxt, &registry);
		replayed = projection_replay_inline(def, 0, &last);
		projection_registry_release(registry);
		if (projection_replay_skipped() > 0)	/* on_error 'skip', as rebuild says */
			ereport(NOTICE,
					(errmsg_plural("projection \"%s\" caught up with %lld event, %lld skipped",
								   "projection \"%s\" caught up with %lld events, %lld skipped",
								   replayed, args->name, (long long) replayed,
								   (long long) projection_replay_skipped()),
					 errdetail("The skipped events and their errors are in projection.dead_letters.")));
		else if (replayed > 0)
			ereport(NOTICE,
					(errmsg_plural("projection \"%s\" caught up with %lld event",
								   "projection \"%s\" caught up with %lld events",
								   replayed, args->name, (long long) replayed)));
	}
	if (args->is_inline && strcmp(args->on_error, "skip") == 0)
		ereport(NOTICE,
				(errmsg("on_error applies to the catch-up and rebuild of inline projection \"%s\" only", args->name),
				 errdetail("An error in an inline projection's handler aborts the appending transaction.")));
	if (!args->is_inline)
	{
		warn_if_no_worker();
		projection_request_launcher_at_commit();
	}
}

/*
 * create(name, handler regproc, event_types text[], mode, tables regclass[],
 *		  start_from, on_error, if_not_empty, if_not_exists)
 *
 * With start_from 'beginning', every existing event is applied to the
 * tables; rows already in them would be counted twice, so a table that is
 * not empty is refused unless if_not_empty is 'keep' (leave the rows: the
 * handlers are idempotent, or the rows are not derived from events) or
 * 'empty' (empty the tables first, as rebuild() does, in this transaction).
 * Every argument is checked before the first write; an inline projection
 * locks appenders out before the emptiness check (inline.c).
 */
Datum
projection_create(PG_FUNCTION_ARGS)
{
	CreateArgs	args;
	char	   *search_path;
	MemoryContext cxt = CurrentMemoryContext;

	create_read_args(fcinfo, &args);
	create_check_rights(&args);
	search_path = creator_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!create_exists(&args))
	{
		if (args.is_inline)
			projection_lock_out_appenders("create");
		create_check_empty(&args);
		create_insert_row(&args, search_path);
		create_start(&args, cxt);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}
