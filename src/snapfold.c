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

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

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

void
projection_snapshot_fold_init(SnapshotFold *f, SnapshotDef *def)
{
	fmgr_info(def->fold, &f->flinfo);
	f->strict = def->fold_strict;
	f->event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot event",
										 ALLOCSET_DEFAULT_SIZES);
	f->state_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot state",
										 ALLOCSET_DEFAULT_SIZES);
	f->spare_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot state",
										 ALLOCSET_DEFAULT_SIZES);
}

/*
 * Fold one event into (*state, *state_null).  Memory stays flat whatever the
 * number of events, as in aggregate(): the call runs in a context reset
 * after it, and the new state is copied (detoasted) into one of two state
 * contexts, the previous one's being reset.  The result lives in
 * f->state_cxt until the next call (or snapshot_fold_reset).
 */
void
projection_snapshot_fold_event(SnapshotFold *f, Datum *state, bool *state_null, Datum event)
{
	Datum		result;
	MemoryContext oldcxt;

	LOCAL_FCINFO(call, 2);

	CHECK_FOR_INTERRUPTS();
	if (f->strict && *state_null)
		return;
	InitFunctionCallInfoData(*call, &f->flinfo, 2, InvalidOid, NULL, NULL);
	call->args[0].value = *state;
	call->args[0].isnull = *state_null;
	call->args[1].value = event;
	call->args[1].isnull = false;
	oldcxt = MemoryContextSwitchTo(f->event_cxt);
	result = FunctionCallInvoke(call);
	*state_null = call->isnull;
	if (!*state_null)
	{
		MemoryContext swap;

		MemoryContextSwitchTo(f->spare_cxt);
		*state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		swap = f->state_cxt;
		f->state_cxt = f->spare_cxt;
		f->spare_cxt = swap;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(f->spare_cxt);	/* the previous state */
	MemoryContextReset(f->event_cxt);
}

/* Forget the state contexts' contents (after the state was copied out). */
void
projection_snapshot_fold_reset(SnapshotFold *f)
{
	MemoryContextReset(f->state_cxt);
	MemoryContextReset(f->spare_cxt);
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
