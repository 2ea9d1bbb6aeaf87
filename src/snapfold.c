/*-------------------------------------------------------------------------
 *
 * snapfold.c
 *	  Snapshot projections: reading a snapshot projection's definition and
 *	  calling its fold, shared by _snapshot_apply (snapapply.c) and
 *	  snapshot() (snapshot.c).
 *
 * The fold is user code: it always runs as the projection's owner, with
 * the projection's search_path and SECURITY_RESTRICTED_OPERATION.  Our own
 * fixed statements on the extension's tables run as the bootstrap
 * superuser (kept plans).
 *
 * Locking: none of its own; the definition is read with the caller's
 * snapshot.
 *
 * IDENTIFICATION
 *	  src/snapfold.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/md5.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/expandedrecord.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "foldexpr.h"
#include "handler.h"
#include "projection.h"
#include "snapfold.h"
#include "spiutil.h"

static SPIPlanPtr def_plan = NULL;

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

/* Run a kept plan as the bootstrap superuser; the caller is connected to SPI. */
void
projection_snapshot_exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected,
				   const char *what)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, what);
}

/*
 * Load the snapshot projection "name" into *def (in the caller's context
 * "cxt", saved before SPI_connect).  Raises UNDEFINED_OBJECT if there is no
 * such projection and WRONG_OBJECT_TYPE if it is not a snapshot projection.
 * The caller is connected to SPI.
 */
void
projection_snapshot_def_load(const char *name, SnapshotDef *def, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext oldcxt;

	values[0] = CStringGetTextDatum(name);
	projection_snapshot_exec_plan(projection_kept_plan(&def_plan,
									 "SELECT p.id, p.owner::pg_catalog.oid, p.search_path, "
									 "d.fold::pg_catalog.oid, d.initial, p.event_types "
									 "FROM projection.projections p "
									 "LEFT JOIN projection.snapshot_defs d "
									 "ON d.projection_id OPERATOR(pg_catalog.=) p.id "
									 "WHERE p.name OPERATOR(pg_catalog.=) $1",
									 1, types),
					   values, NULL, SPI_OK_SELECT, "reading a snapshot projection");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	(void) SPI_getbinval(tup, desc, 4, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("projection \"%s\" is not a snapshot projection", name),
				 errhint("Snapshot projections are created with projection.create_snapshot().")));

	oldcxt = MemoryContextSwitchTo(cxt);
	def->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	def->name = pstrdup(name);
	def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	def->search_path = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	def->fold = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	def->initial = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tup, desc, 5, &isnull)));
	def->event_types = SPI_getbinval(tup, desc, 6, &def->all_types);
	if (!def->all_types)
		def->event_types = PointerGetDatum(PG_DETOAST_DATUM_COPY(def->event_types));
	def->fold_strict = func_strict(def->fold);
	MemoryContextSwitchTo(oldcxt);
}
/* ---------------------------------------------------------------------
 * Folding
 * ---------------------------------------------------------------------
 */

/*
 * Does the fold's language hand back its result as a fresh copy in the
 * caller's memory context, and take a read/write expanded record as its
 * own?  PL/pgSQL does both (plpgsql_exec_function: SPI_datumTransfer of the
 * result; exec_move_row_from_datum: a R/W expanded record argument of the
 * variable's type is taken over, not copied).
 */
static bool
fold_is_plpgsql(Oid fold)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	char	   *lang;
	bool		result;

	if (!HeapTupleIsValid(tup))
		return false;
	lang = get_language_name(((Form_pg_proc) GETSTRUCT(tup))->prolang, true);
	ReleaseSysCache(tup);
	result = lang != NULL && strcmp(lang, "plpgsql") == 0;
	if (lang != NULL)
		pfree(lang);
	return result;
}

void
projection_snapshot_fold_init(SnapshotFold *f, SnapshotDef *def)
{
	fmgr_info(def->fold, &f->flinfo);
	f->strict = def->fold_strict;
	f->plpgsql = fold_is_plpgsql(def->fold);
	memset(&f->expr, 0, sizeof(f->expr));
	f->use_expr = !f->plpgsql && projection_fold_expr_begin(&f->expr, def->fold);
	f->cxt[0] = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot fold",
									  ALLOCSET_DEFAULT_SIZES);
	f->cxt[1] = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot fold",
									  ALLOCSET_DEFAULT_SIZES);
	f->cur = 0;
}

/*
 * The next call's context: the one not holding the current state, emptied
 * (of the state before it and of the call that made it), made current.
 * Returns the context to switch back to.
 */
static MemoryContext
fold_call_begin(SnapshotFold *f)
{
	MemoryContext next = f->cxt[1 - f->cur];

	CHECK_FOR_INTERRUPTS();
	MemoryContextReset(next);
	return MemoryContextSwitchTo(next);
}

/*
 * Call the fold on (*state, *state_null) and the event datum "event", in
 * the context fold_call_begin made current, and make its result the state.
 * Memory stays flat whatever the number of events, as in aggregate(): the
 * call and its result live in one of two contexts, the other (the state
 * before, which was its argument) is emptied at the next call.  A result
 * that is not a fresh flat value in that context (any fold but PL/pgSQL's
 * may return its argument, or a part of the event) is copied into it.  A
 * fold with an SQL-standard body is evaluated as an expression instead of
 * being called (foldexpr.c), over the event row "row" if not NULL (rather
 * than a datum of it).
 */
static void
fold_call(SnapshotFold *f, Datum *state, bool *state_null, HeapTuple row, Datum event,
		  MemoryContext oldcxt)
{
	Datum		result;

	LOCAL_FCINFO(call, 2);

	if (f->use_expr)
		result = projection_fold_expr_eval(&f->expr, *state, *state_null, row, event, state_null);
	else
	{
		InitFunctionCallInfoData(*call, &f->flinfo, 2, InvalidOid, NULL, NULL);
		call->args[0].value = *state;
		call->args[0].isnull = *state_null;
		call->args[1].value = event;
		call->args[1].isnull = false;
		result = FunctionCallInvoke(call);
		*state_null = call->isnull;
	}
	if (!*state_null)
	{
		if (!f->plpgsql || VARATT_IS_EXTENDED(DatumGetPointer(result)))
			result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		*state = result;
	}
	f->cur = 1 - f->cur;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Fold one event, a projection.events composite datum, into (*state,
 * *state_null).  The result lives in the fold's contexts until the next
 * call (or projection_snapshot_fold_reset).
 */
void
projection_snapshot_fold_event(SnapshotFold *f, Datum *state, bool *state_null, Datum event)
{
	MemoryContext oldcxt;

	if (f->strict && *state_null)
		return;
	oldcxt = fold_call_begin(f);
	fold_call(f, state, state_null, NULL, event, oldcxt);
}

/*
 * The same for an event given as a row of projection.events ("desc"), not
 * a datum.  A PL/pgSQL fold gets it as a read/write expanded record over
 * the row, which it takes over without a copy; other folds (and rows with
 * values kept out of line, TOAST, which a composite datum cannot hold) get
 * a composite datum copied from it, as a whole-row reference gives; a
 * fold evaluated as an expression reads the row's columns (foldexpr.c).
 * The row must stay valid during the call.
 */
void
projection_snapshot_fold_row(SnapshotFold *f, Datum *state, bool *state_null, HeapTuple row,
							 TupleDesc desc)
{
	MemoryContext oldcxt;
	Datum		event;

	if (f->strict && *state_null)
		return;
	oldcxt = fold_call_begin(f);
	if (f->use_expr)
		event = (Datum) 0;		/* the expression reads the row's columns */
	else if (f->plpgsql && !HeapTupleHasExternal(row))
	{
		ExpandedRecordHeader *erh = make_expanded_record_from_tupdesc(desc, CurrentMemoryContext);

		expanded_record_set_tuple(erh, row, false, false);
		event = ExpandedRecordGetDatum(erh);	/* read/write */
	}
	else
		event = heap_copy_tuple_as_datum(row, desc);
	fold_call(f, state, state_null, row, event, oldcxt);
}

/* Forget the fold's contexts' contents (after the state was copied out). */
void
projection_snapshot_fold_reset(SnapshotFold *f)
{
	MemoryContextReset(f->cxt[0]);
	MemoryContextReset(f->cxt[1]);
}

/*
 * After the last event: free the fold's expression (its contexts, which
 * may hold the last state, go with their parent).
 */
void
projection_snapshot_fold_end(SnapshotFold *f)
{
	projection_fold_expr_end(&f->expr);
}

/* Enter the projection's owner scope (its role, SECURITY_RESTRICTED_OPERATION, its search_path). */
void
projection_snapshot_owner_enter(ProjectionOwnerScope *scope, SnapshotDef *def)
{
	ProjectionDef pdef;

	memset(&pdef, 0, sizeof(pdef));
	pdef.owner = def->owner;
	pdef.search_path = def->search_path;
	memset(scope, 0, sizeof(*scope));
	projection_owner_enter(scope, &pdef);
}

/* ---------------------------------------------------------------------
 * The fold's definition
 * ---------------------------------------------------------------------
 */

/* Append "label=len:value" (NULL: "label=-") to buf, unambiguously. */
static void
fold_definition_add(StringInfo buf, const char *label, const char *value)
{
	if (value == NULL)
		appendStringInfo(buf, "%s=-;", label);
	else
		appendStringInfo(buf, "%s=%zu:%s;", label, strlen(value), value);
}

/*
 * A digest (md5, hex, palloc'd) of what decides a fold's results: its body
 * (prosrc, probin, and since 1.7 prosqlbody), language, settings (proconfig: search_path and the
 * like), volatility, strictness, security and owner, read from the syscache
 * (the definition fmgr calls).  create_snapshot and rebuild record it when
 * the states start; aggregate() uses the states only while the fold's digest
 * is the same, so that a CREATE OR REPLACE FUNCTION or ALTER FUNCTION of the
 * fold after the states began folding (states then mix both definitions)
 * stops them being used until a rebuild.  NULL if the function is gone.
 * Functions the fold calls are not covered: as for an expression index, a
 * change to them needs a rebuild (README).
 */
char *
projection_snapshot_fold_definition(Oid fold)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	StringInfoData buf;
	Datum		d;
	bool		isnull;
	char		hex[33];
	const char *errstr = NULL;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		return NULL;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	initStringInfo(&buf);
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);
	fold_definition_add(&buf, "src", isnull ? NULL : TextDatumGetCString(d));
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_probin, &isnull);
	fold_definition_add(&buf, "bin", isnull ? NULL : TextDatumGetCString(d));
	/* an SQL-standard body (prosrc is then empty); absent from older digests, so added only if set */
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosqlbody, &isnull);
	if (!isnull)
		fold_definition_add(&buf, "sqlbody", TextDatumGetCString(d));
	d = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &isnull);
	fold_definition_add(&buf, "config", isnull ? NULL : OidOutputFunctionCall(F_ARRAY_OUT, d));
	fold_definition_add(&buf, "lang", get_language_name(proc->prolang, true));
	fold_definition_add(&buf, "owner", GetUserNameFromId(proc->proowner, true));
	appendStringInfo(&buf, "volatile=%c;strict=%d;secdef=%d;", proc->provolatile,
					 (int) proc->proisstrict, (int) proc->prosecdef);
	ReleaseSysCache(tup);
	if (!pg_md5_hash(buf.data, buf.len, hex, &errstr))
		elog(ERROR, "could not compute the digest of a fold: %s", errstr ? errstr : "unknown error");
	pfree(buf.data);
	return pstrdup(hex);
}

/*
 * Record the digest of the fold of snapshot projection "projection_id" as
 * the definition its states start from (create_snapshot, rebuild).  Nothing
 * in a database whose catalog predates 1.5 (no column to record it in:
 * aggregate() then never uses the states).  The caller is connected to SPI.
 */
void
projection_snapshot_record_fold(int32 projection_id)
{
	static SPIPlanPtr fold_plan = NULL;
	static SPIPlanPtr record_plan = NULL;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	bool		isnull;
	char	   *digest;

	if (!projection_snapshot_has_fold_definition())
		return;
	values[0] = Int32GetDatum(projection_id);
	projection_snapshot_exec_plan(projection_kept_plan(&fold_plan,
													   "SELECT d.fold::pg_catalog.oid FROM projection.snapshot_defs d "
													   "WHERE d.projection_id OPERATOR(pg_catalog.=) $1",
													   1, types),
								  values, NULL, SPI_OK_SELECT, "reading a snapshot projection's fold");
	if (SPI_processed == 0)
		return;
	digest = projection_snapshot_fold_definition(DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																			  SPI_tuptable->tupdesc,
																			  1, &isnull)));
	if (digest == NULL)
		nulls[1] = 'n';
	else
		values[1] = CStringGetTextDatum(digest);
	projection_snapshot_exec_plan(projection_kept_plan(&record_plan,
													   "UPDATE projection.snapshot_defs SET fold_definition = $2 "
													   "WHERE projection_id OPERATOR(pg_catalog.=) $1",
													   2, types),
								  values, nulls, SPI_OK_UPDATE, "recording a snapshot projection's fold");
}

/*
 * After a batch of snapshot projection "def" was folded: if the fold's
 * definition is no longer the one its states started from, forget that
 * definition (aggregate() then stops using the states until a rebuild
 * records it again).  Comparing at aggregate() time alone is not enough: a
 * fold replaced and then put back (a CREATE OR REPLACE undone by another)
 * has the digest the states started from, yet the states hold events
 * folded by the other body.  Read after the fold, so that a definition the
 * batch's calls saw is at least as old as the one compared.  The caller is
 * connected to SPI.
 */
void
projection_snapshot_check_fold(SnapshotDef *def)
{
	static SPIPlanPtr check_plan = NULL;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	char	   *digest;

	if (!projection_snapshot_has_fold_definition())
		return;
	digest = projection_snapshot_fold_definition(def->fold);
	values[0] = Int32GetDatum(def->id);
	values[1] = CStringGetTextDatum(digest == NULL ? "" : digest);
	projection_snapshot_exec_plan(projection_kept_plan(&check_plan,
													   "UPDATE projection.snapshot_defs SET fold_definition = NULL "
													   "WHERE projection_id OPERATOR(pg_catalog.=) $1 "
													   "AND fold_definition OPERATOR(pg_catalog.<>) $2",
													   2, types),
								  values, NULL, SPI_OK_UPDATE, "forgetting a snapshot projection's fold");
}

/* Whether this database's catalog has snapshot_defs.fold_definition (1.5). */
bool
projection_snapshot_has_fold_definition(void)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	Oid			rel;

	if (!OidIsValid(nsp))
		return false;
	rel = get_relname_relid("snapshot_defs", nsp);
	return OidIsValid(rel) && get_attnum(rel, "fold_definition") != InvalidAttrNumber;
}
