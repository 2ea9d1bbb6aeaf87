/*-------------------------------------------------------------------------
 *
 * manage.c
 *	  The SQL face of projection management: create, on, drop, pause,
 *	  resume.
 *
 * Every function validates all of its arguments before its first write, so
 * bad input changes nothing.  Ownership is checked here, the registry rows
 * are written through registry.c as the bootstrap superuser; user code
 * (handlers, statements) runs as the projection's owner, never as a
 * superuser on its behalf.  Locking: see registry.c (the row lock of each
 * management call) and inline.c (appenders locked out while an inline
 * projection catches up).
 *
 * IDENTIFICATION
 *	  src/manage.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "checkpoint.h"
#include "events.h"
#include "handler.h"
#include "horizon.h"
#include "inline.h"
#include "lifecycle.h"
#include "manage.h"
#include "progress.h"
#include "oplog.h"
#include "pool.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_create);
PG_FUNCTION_INFO_V1(projection_on);
PG_FUNCTION_INFO_V1(projection_drop);
PG_FUNCTION_INFO_V1(projection_pause);
PG_FUNCTION_INFO_V1(projection_resume);

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
				 errhint("Raise max_worker_processes to at least %d (the launcher, the logical replication launcher and projection.workers_per_database per database), and restart the server.",
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

/*
 * create(name, handler regproc, event_types text[], mode, tables regclass[],
 *		  start_from, on_error, if_not_empty)
 *
 * With start_from 'beginning', every existing event is applied to the
 * tables; rows already in them would be counted twice, so a table that is
 * not empty is refused unless if_not_empty is 'keep' (leave the rows: the
 * handlers are idempotent, or the rows are not derived from events) or
 * 'empty' (empty the tables first, as rebuild() does, in this transaction).
 * A 1.1 definition of create() (before ALTER EXTENSION UPDATE) passes no
 * if_not_empty: then 'error' too.
 */
Datum
projection_create(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	Oid			handler = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	char	   *mode;
	char	   *start_from;
	char	   *on_error;
	char	   *if_not_empty = "error";
	bool		if_not_exists = false;
	bool		is_inline;
	bool		from_beginning;
	char	   *search_path;
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	int64		start_position = 0;
	const char *state = "running";

	mode = projection_text_arg(fcinfo, 3, "mode");
	start_from = projection_text_arg(fcinfo, 5, "start_from");
	on_error = projection_text_arg(fcinfo, 6, "on_error");
	if (PG_NARGS() > 7)
		if_not_empty = projection_text_arg(fcinfo, 7, "if_not_empty");
	if (PG_NARGS() > 8)
	{
		projection_require_arg(fcinfo, 8, "if_not_exists");
		if_not_exists = PG_GETARG_BOOL(8);
	}
	projection_require_arg(fcinfo, 4, "tables");

	if (strcmp(mode, "inline") == 0)
		is_inline = true;
	else if (strcmp(mode, "async") == 0)
		is_inline = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", mode),
				 errhint("Valid modes are \"inline\" and \"async\".")));
	if (strcmp(start_from, "beginning") == 0)
		from_beginning = true;
	else if (strcmp(start_from, "end") == 0)
		from_beginning = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid start_from \"%s\"", start_from),
				 errhint("Valid values are \"beginning\" and \"end\".")));
	if (strcmp(on_error, "stop") != 0 && strcmp(on_error, "skip") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid on_error \"%s\"", on_error),
				 errhint("Valid values are \"stop\" and \"skip\".")));
	if (strcmp(if_not_empty, "error") != 0 && strcmp(if_not_empty, "keep") != 0 &&
		strcmp(if_not_empty, "empty") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid if_not_empty \"%s\"", if_not_empty),
				 errhint("Valid values are \"error\", \"keep\" and \"empty\".")));
	/* a projection receives events: only a role that may read them creates one */
	projection_check_events_privilege(ACL_SELECT, "Creating a projection");
	if (is_inline)
		projection_check_events_privilege(ACL_TRIGGER, "Creating an inline projection");
	if (OidIsValid(handler))
		check_handler(handler);
	if (!PG_ARGISNULL(2))
		projection_check_event_types(PG_GETARG_ARRAYTYPE_P(2));
	projection_check_tables(PG_GETARG_ARRAYTYPE_P(4));
	search_path = creator_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		projection_registry_exec("SELECT 1 FROM projection.projections WHERE name OPERATOR(pg_catalog.=) $1",
								 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0 && if_not_exists)
		{
			/* identical: NOTICE and nothing else; different: an error */
			projection_create_existing(name, handler,
									   PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2),
									   is_inline, PG_GETARG_ARRAYTYPE_P(4), on_error);
			if (SPI_finish() != SPI_OK_FINISH)
				elog(ERROR, "SPI_finish failed");
			PG_RETURN_VOID();
		}
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("projection \"%s\" already exists", name)));
	}

	if (is_inline)
		projection_lock_out_appenders("create");
	if (from_beginning && strcmp(if_not_empty, "error") == 0 &&
		projection_sequence_last_value() > 0)
	{
		char	   *table = first_nonempty_table(PG_GETARG_ARRAYTYPE_P(4));

		if (table != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot create projection \"%s\" from the beginning: table %s is not empty", name, table),
					 errdetail("Table %s already holds rows, and start_from => 'beginning' applies every existing event to it, so they would be counted twice.", table),
					 errhint("Empty the table first, pass if_not_empty => 'empty' to have create() empty the projection's tables as rebuild() does, or if_not_empty => 'keep' if the rows may stay (idempotent handlers).")));
	}
	if (!from_beginning)
		start_position = projection_sequence_last_value();
	else if (!is_inline && projection_sequence_last_value() > 0)
		state = "catching_up";

	{
		Oid			types[10] = {TEXTOID, OIDOID, TEXTARRAYOID, TEXTOID, OIDARRAYOID,
		TEXTOID, OIDOID, TEXTOID, INT8OID, TEXTOID};
		Datum		values[10];
		char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(name);
		values[1] = ObjectIdGetDatum(handler);
		if (!OidIsValid(handler))
			nulls[1] = 'n';
		if (PG_ARGISNULL(2))
			nulls[2] = 'n';
		else
			values[2] = PG_GETARG_DATUM(2);
		values[3] = CStringGetTextDatum(mode);
		values[4] = PG_GETARG_DATUM(4);
		values[5] = CStringGetTextDatum(on_error);
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
	}
	CommandCounterIncrement();

	if (from_beginning && strcmp(if_not_empty, "empty") == 0)
	{
		ProjectionRegistry *registry;

		row = projection_registry_lookup(name, cxt);
		projection_registry_invalidate();
		registry = projection_registry_acquire();
		projection_empty_tables(projection_registry_def(registry, row->id));
		projection_registry_release(registry);
		CommandCounterIncrement();
	}

	if (is_inline && from_beginning && !OidIsValid(handler) && projection_sequence_last_value() > 0)
		ereport(NOTICE,
				(errmsg("inline projection \"%s\" has no handler function yet, so existing events are not applied to it", name),
				 errhint("Add its statements with projection.on(), then call projection.rebuild('%s').", name)));
	if (is_inline && from_beginning)
	{
		ProjectionRegistry *registry;
		int64		replayed;
		int64		last;

		row = projection_registry_lookup(name, cxt);
		projection_registry_invalidate();
		registry = projection_registry_acquire();
		replayed = projection_replay_inline(projection_registry_def(registry, row->id), 0, &last);
		projection_registry_release(registry);
		if (replayed > 0)
			ereport(NOTICE,
					(errmsg("projection \"%s\" caught up with %lld events",
							name, (long long) replayed)));
	}
	if (!is_inline)
	{
		warn_if_no_worker();
		projection_request_launcher_at_commit();
	}

	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.on
 * ---------------------------------------------------------------------
 */

/*
 * on(name, event_type, statement): add a statement handler.  The statement
 * is prepared now, as the projection's owner with its search_path, so that
 * errors in it are reported here rather than at the first event.
 */
Datum
projection_on(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *event_type = projection_text_arg(fcinfo, 1, "event_type");
	char	   *statement = projection_text_arg(fcinfo, 2, "statement");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionOwnerScope scope;
	SPIPlanPtr	plan;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);

	registry = projection_registry_acquire();
	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, projection_registry_def(registry, row->id));
	plan = projection_prepare_statement(statement, projection_oids()->events_type);
	SPI_freeplan(plan);
	projection_owner_leave(&scope);
	projection_registry_release(registry);
	projection_on_notice_existing(row->id, name, event_type);

	{
		Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
		Datum		values[3];

		values[0] = Int32GetDatum(row->id);
		values[1] = CStringGetTextDatum(event_type);
		values[2] = CStringGetTextDatum(statement);
		projection_registry_exec("INSERT INTO projection.handlers (projection_id, seq, event_type, statement) "
								 "SELECT $1, COALESCE(pg_catalog.max(seq), 0) OPERATOR(pg_catalog.+) 1, $2, $3 "
								 "FROM projection.handlers WHERE projection_id OPERATOR(pg_catalog.=) $1",
								 3, types, values, NULL, SPI_OK_INSERT);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.drop / pause / resume
 * ---------------------------------------------------------------------
 */

/* drop(name): unregister; the read-model tables are left alone. */
Datum
projection_drop(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	if (row->is_inline)
		projection_lock_out_appenders("drop");

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(name);
	projection_registry_exec("DELETE FROM projection.dead_letters WHERE name OPERATOR(pg_catalog.=) $2 "
							 "AND $1 IS NOT NULL",
							 2, types, values, NULL, SPI_OK_DELETE);
	projection_registry_exec("DELETE FROM projection.projections WHERE id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_DELETE);
	projection_forget_checkpoints(row->id);
	/* harmless if the drop rolls back: the worker publishes again */
	projection_forget_progress(MyDatabaseId, row->id);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * pause(name): a paused projection applies nothing until resume().  For an
 * inline projection, in-flight appends finish first and the position where
 * it paused is kept, so resume() can catch up exactly the events it missed.
 */
Datum
projection_pause(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	if (strcmp(row->state, "paused") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already paused", name)));
	else if (row->is_inline)
	{
		projection_lock_out_appenders("pause");
		projection_registry_set_state(row->id, "paused", true, projection_sequence_last_value(), false);
	}
	else
		projection_registry_set_state(row->id, "paused", false, 0, false);
	if (strcmp(row->state, "paused") != 0)
		projection_log_at_commit(psprintf("projection \"%s\" paused", name));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * resume(name): run a paused projection again, or retry a failed one from
 * its failing event.  An inline projection first catches up the events
 * appended while it was paused.
 */
Datum
projection_resume(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	if (strcmp(row->state, "running") == 0 || strcmp(row->state, "catching_up") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already running", name)));
	else if (row->is_inline)
	{
		ProjectionRegistry *registry;
		int64		last;

		projection_lock_out_appenders("resume");
		registry = projection_registry_acquire();
		(void) projection_replay_inline(projection_registry_def(registry, row->id), row->position, &last);
		projection_registry_release(registry);
		projection_registry_set_state(row->id, "running", true, 0, true);
	}
	else
	{
		projection_registry_set_state(row->id, "running", false, 0, true);
		projection_request_launcher_at_commit();
	}
	if (strcmp(row->state, "running") != 0 && strcmp(row->state, "catching_up") != 0)
		projection_log_at_commit(psprintf("projection \"%s\" resumed (it was %s at position %lld)",
										  name, row->state, (long long) row->position));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}
