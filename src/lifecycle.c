/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  Changing a projection after create(): off() removes statements,
 *	  alter() changes on_error, event_types and tables, create(...,
 *	  if_not_exists => true) is a no-op for an identical projection, and
 *	  on() says when an event type has statements already.  (The way out of
 *	  poison events, skip() and retry_dead_letters(), is in deadletter.c.)
 *
 * Locking.  Every call here locks the projection's registry row FOR UPDATE
 * through projection_registry_lookup() (which cancels a worker batch that
 * holds it, as pause() does), so it serializes with the other management
 * calls, with rebuild() and with the worker's batches of this projection.
 * The registry writes fire the registry-change triggers: inline appenders
 * and the worker reload their registry cache from the next event after the
 * commit (the generation rule of shmem.c), so a statement removed or
 * replaced in one transaction is never half seen.
 *
 * Every call validates its arguments and checks ownership before its first
 * write.  The registry is written as the bootstrap superuser
 * (projection_registry_exec) with our own fixed statements.
 *
 * IDENTIFICATION
 *	  src/lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/regproc.h"

#include "catalog.h"
#include "horizon.h"
#include "lifecycle.h"
#include "projection.h"
#include "registry.h"
#include "snapshot.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_off);
PG_FUNCTION_INFO_V1(projection_alter);

static void
lifecycle_check_on_error(const char *on_error)
{
	if (strcmp(on_error, "stop") != 0 && strcmp(on_error, "skip") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid on_error \"%s\"", on_error),
				 errhint("Valid values are \"stop\" and \"skip\".")));
}

static void
lifecycle_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
lifecycle_finish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/* column "col" of the first row of SPI_tuptable as a C string, or NULL */
static char *
lifecycle_getcstring(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

/* ---------------------------------------------------------------------
 * A projection's settings, compared in a normal form
 * ---------------------------------------------------------------------
 */

/*
 * The stored settings of projection "name" and, in the same normal form
 * (event types and tables as sorted sets, printed), the candidate values
 * "types" (NULL: every type) and "tables".  Equality and ordering come from
 * the types' default operator classes, never from a search_path.  Caller is
 * connected to SPI; the values are palloc'd in the SPI procedure context.
 */
typedef struct LifecycleSettings
{
	bool		found;
	Oid			handler;		/* InvalidOid: none */
	char	   *mode;
	char	   *on_error;
	char	   *types_shown;	/* as stored, NULL: every type */
	char	   *tables_shown;
	char	   *types_norm;		/* sorted distinct, NULL: every type */
	char	   *tables_norm;
	char	   *new_types_norm;
	char	   *new_tables_norm;
	char	   *new_types_shown;
	char	   *new_tables_shown;
} LifecycleSettings;

static void
lifecycle_read_settings(const char *name, ArrayType *types, ArrayType *tables,
						LifecycleSettings *s)
{
	Oid			argtypes[3] = {TEXTOID, TEXTARRAYOID, OIDARRAYOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(name);
	if (types == NULL)
		nulls[1] = 'n';
	else
		values[1] = PointerGetDatum(types);
	if (tables == NULL)
		nulls[2] = 'n';
	else
		values[2] = PointerGetDatum(tables);

#define NORM_TYPES(a) \
	"CASE WHEN " a " IS NULL THEN NULL ELSE ARRAY(SELECT DISTINCT t COLLATE \"C\" " \
	"FROM pg_catalog.unnest(" a ") t ORDER BY 1)::pg_catalog.text END"
#define NORM_TABLES(a) \
	"ARRAY(SELECT DISTINCT r FROM pg_catalog.unnest(" a ") r ORDER BY 1)::pg_catalog.text"
	projection_registry_exec("SELECT p.handler::pg_catalog.oid, p.mode, p.on_error, "
							 "p.event_types::pg_catalog.text, p.tables::pg_catalog.text, "
							 NORM_TYPES("p.event_types") ", "
							 NORM_TABLES("p.tables::pg_catalog.oid[]") ", "
							 NORM_TYPES("$2") ", "
							 NORM_TABLES("$3") ", "
							 "$2::pg_catalog.text, $3::pg_catalog.regclass[]::pg_catalog.text "
							 "FROM projection.projections p WHERE p.name OPERATOR(pg_catalog.=) $1",
							 3, argtypes, values, nulls, SPI_OK_SELECT);
#undef NORM_TYPES
#undef NORM_TABLES
	memset(s, 0, sizeof(*s));
	if (SPI_processed == 0)
		return;
	s->found = true;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	s->handler = isnull ? InvalidOid : DatumGetObjectId(d);
	s->mode = lifecycle_getcstring(2);
	s->on_error = lifecycle_getcstring(3);
	s->types_shown = lifecycle_getcstring(4);
	s->tables_shown = lifecycle_getcstring(5);
	s->types_norm = lifecycle_getcstring(6);
	s->tables_norm = lifecycle_getcstring(7);
	s->new_types_norm = lifecycle_getcstring(8);
	s->new_tables_norm = lifecycle_getcstring(9);
	s->new_types_shown = lifecycle_getcstring(10);
	s->new_tables_shown = lifecycle_getcstring(11);
}

/* NULL-aware string equality */
static bool
lifecycle_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static const char *
lifecycle_types_text(const char *types)
{
	return types ? psprintf("event types %s", types) : "every event type";
}

static const char *
lifecycle_handler_text(Oid handler)
{
	return OidIsValid(handler) ? format_procedure(handler) : "none";
}

/* ---------------------------------------------------------------------
 * create(..., if_not_exists => true)
 * ---------------------------------------------------------------------
 */

/*
 * create() found projection "name" already there and was told
 * if_not_exists: a NOTICE if the existing projection has this definition
 * (handler, event types as a set, mode, tables as a set, on_error), else
 * DUPLICATE_OBJECT with a DETAIL naming each difference.  start_from and
 * if_not_empty concern only the first load and are not compared, nor are
 * statements added with on() (create takes none).  The caller's arguments
 * were validated and its privileges checked, as for a new projection.
 * Caller is connected to SPI.
 */
void
projection_create_existing(const char *name, Oid handler, ArrayType *event_types,
						   bool is_inline, ArrayType *tables, const char *on_error)
{
	LifecycleSettings s;
	StringInfoData diff;
	const char *mode = is_inline ? "inline" : "async";
	bool		alterable_only = true;

	lifecycle_read_settings(name, event_types, tables, &s);
	if (!s.found)
		elog(ERROR, "projection \"%s\" disappeared", name);	/* we saw it */

	initStringInfo(&diff);
	if (s.handler != handler)
	{
		appendStringInfo(&diff, "Its handler is %s, not %s. ",
						 lifecycle_handler_text(s.handler), lifecycle_handler_text(handler));
		alterable_only = false;
	}
	if (strcmp(s.mode, mode) != 0)
	{
		appendStringInfo(&diff, "Its mode is \"%s\", not \"%s\". ", s.mode, mode);
		alterable_only = false;
	}
	if (!lifecycle_same(s.types_norm, s.new_types_norm))
		appendStringInfo(&diff, "It handles %s, not %s. ",
						 lifecycle_types_text(s.types_shown),
						 lifecycle_types_text(s.new_types_shown));
	if (!lifecycle_same(s.tables_norm, s.new_tables_norm))
		appendStringInfo(&diff, "Its tables are %s, not %s. ",
						 s.tables_shown, s.new_tables_shown);
	if (strcmp(s.on_error, on_error) != 0)
		appendStringInfo(&diff, "Its on_error is \"%s\", not \"%s\". ", s.on_error, on_error);

	if (diff.len == 0)
	{
		ereport(NOTICE,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("projection \"%s\" already exists, skipping", name)));
		return;
	}
	diff.data[--diff.len] = '\0';	/* the last space */
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 errmsg("projection \"%s\" already exists with a different definition", name),
			 errdetail_internal("%s", diff.data),
			 alterable_only ?
			 errhint("Change it with projection.alter(), or drop it with projection.drop() and create it again.") :
			 errhint("Drop it with projection.drop() and create it again.")));
}

/* ---------------------------------------------------------------------
 * on(): a NOTICE when the event type has statements already
 * ---------------------------------------------------------------------
 */

/*
 * on() adds a statement after those the event type has; calling it again
 * to "correct" a statement runs both.  Say so.  Caller is connected to SPI
 * and holds the projection's row lock.
 */
void
projection_on_notice_existing(int32 id, const char *name, const char *event_type)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	bool		isnull;
	int64		n;

	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(event_type);
	projection_registry_exec("SELECT pg_catalog.count(*) FROM projection.handlers "
							 "WHERE projection_id OPERATOR(pg_catalog.=) $1 "
							 "AND event_type OPERATOR(pg_catalog.=) $2",
							 2, types, values, NULL, SPI_OK_SELECT);
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (n > 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" already has %lld %s for event type \"%s\"",
						name, (long long) n, n == 1 ? "statement" : "statements", event_type),
				 errdetail("The new statement runs after the existing ones, for every such event."),
				 errhint("To replace them, call projection.off('%s', '%s') before projection.on(), in the same transaction.",
						 name, event_type)));
}

/* ---------------------------------------------------------------------
 * projection.off
 * ---------------------------------------------------------------------
 */

/*
 * off(name, event_type, if_exists): remove every statement added with on()
 * for that event type.  As DROP does, a missing object is an error
 * (UNDEFINED_OBJECT) unless if_exists, which makes it a NOTICE.  Owner only.
 */
Datum
projection_off(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *event_type = projection_text_arg(fcinfo, 1, "event_type");
	bool		if_exists = false;
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (PG_NARGS() > 2)
	{
		projection_require_arg(fcinfo, 2, "if_exists");
		if_exists = PG_GETARG_BOOL(2);
	}

	lifecycle_connect();
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(event_type);
	projection_registry_exec("DELETE FROM projection.handlers "
							 "WHERE projection_id OPERATOR(pg_catalog.=) $1 "
							 "AND event_type OPERATOR(pg_catalog.=) $2",
							 2, types, values, NULL, SPI_OK_DELETE);
	if (SPI_processed == 0)
	{
		if (!if_exists)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("projection \"%s\" has no statements for event type \"%s\"",
							name, event_type),
					 errhint("Its statements are listed in projection.statements.")));
		ereport(NOTICE,
				(errmsg("projection \"%s\" has no statements for event type \"%s\", skipping",
						name, event_type)));
	}
	lifecycle_finish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.alter
 * ---------------------------------------------------------------------
 */

/*
 * alter(name, on_error, event_types, tables, reset_event_types): change the
 * settings given (NULL: unchanged; reset_event_types: back to NULL, every
 * event type).  Changes apply from the next event; nothing already applied
 * is replayed or undone, and a NOTICE says so when the event types change
 * over a non-empty store (rebuild() applies every event with the new
 * types).  New tables are checked as create() checks them; a rebuild
 * empties the new set.  Owner only.
 */
Datum
projection_alter(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *on_error = NULL;
	ArrayType  *event_types = NULL;
	ArrayType  *tables = NULL;
	bool		reset_types;
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	LifecycleSettings s;
	bool		types_change;

	if (!PG_ARGISNULL(1))
	{
		on_error = projection_text_arg(fcinfo, 1, "on_error");
		lifecycle_check_on_error(on_error);
	}
	if (!PG_ARGISNULL(2))
	{
		event_types = PG_GETARG_ARRAYTYPE_P(2);
		projection_check_event_types(event_types, "Pass NULL to handle every event type.");
	}
	if (!PG_ARGISNULL(3))
	{
		tables = PG_GETARG_ARRAYTYPE_P(3);
		projection_check_tables(tables);
	}
	projection_require_arg(fcinfo, 4, "reset_event_types");
	reset_types = PG_GETARG_BOOL(4);
	if (reset_types && event_types != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot pass both event_types and reset_event_types"),
				 errhint("Pass event_types to handle those types, or reset_event_types => true to handle every type.")));
	if (on_error == NULL && event_types == NULL && tables == NULL && !reset_types)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no change given for projection \"%s\"", name),
				 errhint("Pass on_error, event_types, tables or reset_event_types.")));

	lifecycle_connect();
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);

	lifecycle_read_settings(name, event_types, NULL, &s);
	types_change = reset_types ? s.types_norm != NULL :
		(event_types != NULL && !lifecycle_same(s.types_norm, s.new_types_norm));

	{
		Oid			types[5] = {INT4OID, TEXTOID, TEXTARRAYOID, OIDARRAYOID, BOOLOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		values[0] = Int32GetDatum(row->id);
		if (on_error)
			values[1] = CStringGetTextDatum(on_error);
		else
			nulls[1] = 'n';
		if (event_types)
			values[2] = PointerGetDatum(event_types);
		else
			nulls[2] = 'n';
		if (tables)
			values[3] = PointerGetDatum(tables);
		else
			nulls[3] = 'n';
		values[4] = BoolGetDatum(reset_types);
		projection_registry_exec("UPDATE projection.projections SET "
								 "on_error = COALESCE($2, on_error), "
								 "event_types = CASE WHEN $5 THEN NULL ELSE COALESCE($3, event_types) END, "
								 "tables = COALESCE($4::pg_catalog.regclass[], tables), "
								 "updated_at = pg_catalog.now() "
								 "WHERE id OPERATOR(pg_catalog.=) $1",
								 5, types, values, nulls, SPI_OK_UPDATE);
	}

	/* a snapshot projection's states no longer hold every event of its types */
	if (types_change)
		projection_snapshot_types_changed(row->id);
	if (types_change && projection_sequence_last_value() > 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" handles its new event types from the next event on", name),
				 errdetail("Events already passed were handled with the old event types, and the rows they made stay."),
				 errhint("Call projection.rebuild('%s') to apply every event with the new event types.", name)));
	if (on_error != NULL && row->is_inline && strcmp(on_error, "skip") == 0)
		ereport(NOTICE,
				(errmsg("on_error applies to the catch-up and rebuild of inline projection \"%s\" only", name),
				 errdetail("An error in an inline projection's handler aborts the appending transaction.")));
	lifecycle_finish();
	PG_RETURN_VOID();
}
