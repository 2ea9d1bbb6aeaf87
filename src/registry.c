/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  Registry rows as management calls and rebuilds need them: lookup with
 *	  the row lock, the ownership check, state changes.  The rows are
 *	  written as the bootstrap superuser (projection_registry_exec): the
 *	  registry tables are not writable by users, so these functions check
 *	  ownership themselves and run no user code meanwhile.
 *
 * Locking: a management call locks the projection's registry row (FOR
 * UPDATE, projection_registry_lookup), so two of them on one projection
 * serialize.  The async worker locks the rows of its projections for the
 * length of a batch (FOR UPDATE SKIP LOCKED, so it never waits for a
 * management call); a management call does not wait for the worker either:
 * it cancels the batch (wait_out_worker_batch), which rolls back and is
 * retried without the projection.
 *
 * IDENTIFICATION
 *	  src/registry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

#include "cancel.h"
#include "checkpoint.h"
#include "pool.h"
#include "projection.h"
#include "registry.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_registry_changed_trigger);
PG_FUNCTION_INFO_V1(projection_restored_trigger);

/* ---- per-transaction state of this backend, reset at its end ---- */
static bool registry_changed_in_xact = false;	/* the registry trigger fired */
static bool registry_change_committing = false;	/* counted in the generation */

/* projection.create() is inserting its registry row (not a restore) */
bool		projection_creating = false;

/* ---------------------------------------------------------------------
 * Registry access as the bootstrap superuser
 * ---------------------------------------------------------------------
 */

/*
 * Before a management call waits for a projection's row lock: if a worker's
 * batch holds it, cancel that batch instead of waiting for it (a handler may
 * run for minutes; an operator must be able to pause or drop the projection
 * at once).  Loops: try the lock with SKIP LOCKED; if another transaction
 * holds it, read the locker (xmax) and, if it is one of this database's
 * workers in a batch, post a hold (the worker leaves the projection out of
 * its next rounds), cancel the batch and wait for it to roll back.  Any
 * other holder (a rebuild, another management call) is waited for as usual
 * by the caller's FOR UPDATE.  Sets *held when a hold was posted; the
 * caller releases it once it has the lock (or on error).
 */
static void
wait_out_worker_batch(const char *name, bool *held)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int			attempt;

	if (ProjectionShared == NULL)
		return;					/* no workers */
	values[0] = CStringGetTextDatum(name);
	for (attempt = 0; attempt < 10000; attempt++)
	{
		bool		isnull;
		int32		id;
		TransactionId xmax;

		projection_registry_exec("SELECT 1 FROM projection.projections p WHERE name OPERATOR(pg_catalog.=) $1 "
								 "FOR UPDATE OF p SKIP LOCKED",
								 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			return;				/* locked */
		projection_registry_exec("SELECT id, xmax, owner::pg_catalog.oid FROM projection.projections "
								 "WHERE name OPERATOR(pg_catalog.=) $1",
								 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			return;				/* the caller reports it */
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		xmax = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		/*
		 * Only the owner (or a superuser) may interrupt the worker: anyone
		 * else waits like any locker and then gets the caller's ownership
		 * error, so a role cannot stall other owners' projections by calling
		 * pause() in a loop.
		 */
		if (!has_privs_of_role(GetUserId(),
							   DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 3, &isnull))))
			return;
		if (!*held)
		{
			projection_hold(MyDatabaseId, id);
			*held = true;
		}
		switch (projection_cancel_batch(MyDatabaseId, xmax))
		{
			case PROJECTION_CANCEL_SENT:
				XactLockTableWait(xmax, NULL, NULL, XLTW_None);
				continue;
			case PROJECTION_CANCEL_NOT_YET:
				break;			/* the worker is about to publish its batch */
			case PROJECTION_CANCEL_NOT_WORKER:
				if (TransactionIdIsInProgress(xmax))
					return;		/* another session: wait for it */
				break;			/* it just ended: try again */
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Look up a projection by name and lock its registry row.  Raises
 * UNDEFINED_OBJECT if it does not exist.  Result in the caller's context
 * (saved before SPI_connect), given as "cxt".
 */
ProjectionRow *
projection_registry_lookup(const char *name, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	ProjectionRow *row;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext oldcxt;
	volatile bool held = false;

	values[0] = CStringGetTextDatum(name);
	PG_TRY();
	{
		wait_out_worker_batch(name, (bool *) &held);
		projection_registry_exec(psprintf("SELECT id, owner::pg_catalog.oid, mode OPERATOR(pg_catalog.=) 'inline', state, %s "
						   "FROM projection.projections p WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE OF p",
						   projection_checkpoint_sql()),
				  1, types, values, NULL, SPI_OK_SELECT);
	}
	PG_FINALLY();
	{
		if (held)
			projection_release_hold();
	}
	PG_END_TRY();
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	oldcxt = MemoryContextSwitchTo(cxt);
	row = palloc0(sizeof(ProjectionRow));
	row->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	row->name = pstrdup(name);
	row->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	row->is_inline = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	row->state = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	row->position = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	MemoryContextSwitchTo(oldcxt);
	return row;
}

void
projection_check_owner(ProjectionRow *row)
{
	if (!has_privs_of_role(GetUserId(), row->owner))
	{
		/* NULL for an owner that no longer exists: no GRANT to suggest */
		char	   *owner = GetUserNameFromId(row->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", row->name),
				 owner ? errhint("A member of the projection's owner role may manage it: GRANT %s TO %s.",
								 quote_identifier(owner),
								 quote_identifier(GetUserNameFromId(GetUserId(), false))) : 0));
	}
}

void
projection_registry_set_state(int32 id, const char *state, bool set_position, int64 position,
							  bool clear_error)
{
	Oid			types[4] = {INT4OID, TEXTOID, INT8OID, BOOLOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(state);
	values[2] = Int64GetDatum(position);
	if (!set_position)
		nulls[2] = 'n';
	values[3] = BoolGetDatum(clear_error);
	projection_registry_exec("UPDATE projection.projections SET state = $2, "
							 "position = COALESCE($3, position), "
							 "last_error = CASE WHEN $4 THEN NULL ELSE last_error END, "
							 "last_error_sqlstate = CASE WHEN $4 THEN NULL ELSE last_error_sqlstate END, "
							 "last_error_position = CASE WHEN $4 THEN NULL ELSE last_error_position END, "
							 "updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
							 4, types, values, nulls, SPI_OK_UPDATE);
	/* a position set here replaces the worker's checkpoints */
	if (set_position)
		projection_forget_checkpoints(id);
}

/* the registry entry of a projection, from the (reloaded) cache */
ProjectionDef *
projection_registry_def(ProjectionRegistry *registry, int32 id)
{
	int			i;

	for (i = 0; i < registry->nprojections; i++)
		if (registry->projections[i].id == id)
			return &registry->projections[i];
	elog(ERROR, "projection %d not found in the registry cache", id);
	return NULL;				/* keep compiler quiet */
}

/* ---------------------------------------------------------------------
 * Triggers on the registry tables
 * ---------------------------------------------------------------------
 */

/* After a commit or abort: the registry change, if any, is over. */
static void
registry_change_end(void)
{
	if (registry_change_committing)
	{
		projection_registry_change_end(MyDatabaseId);
		registry_change_committing = false;
	}
}

/*
 * AFTER statement trigger on the registry tables: every backend (and this
 * one, at its next command) drops its cached registry, and the commit moves
 * the registry generation on (shmem.c), so that no backend uses a cache
 * older than a snapshot that already sees the change.
 */
Datum
projection_registry_changed_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" was not called by trigger manager",
						"projection._registry_changed")));

	CacheInvalidateRelcacheByRelid(projection_oids()->registry);
	registry_changed_in_xact = true;
	return PointerGetDatum(NULL);
}

/*
 * BEFORE INSERT row trigger on projection.projections (version 1.1): a
 * registry row that does not come from projection.create() is being
 * restored (pg_restore, or psql with a plain dump).  It is marked with the
 * restoring session (its pid and start time), and the worker leaves the
 * projection alone until that session has ended, so that it does not apply
 * events to read-model tables whose rows are still to be restored; the
 * session's end asks for a worker for it (pool.c).
 */
Datum
projection_restored_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	int			cols[2];
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int			att_id;
	Datum		id;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		RelationGetRelid(td->tg_relation) != projection_oids()->registry)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired BEFORE INSERT FOR EACH ROW on projection.projections",
						"projection._restored")));
	if (projection_creating)
		return PointerGetDatum(td->tg_trigtuple);

	desc = RelationGetDescr(td->tg_relation);
	cols[0] = SPI_fnumber(desc, "restored_pid");
	cols[1] = SPI_fnumber(desc, "restored_at");
	att_id = SPI_fnumber(desc, "id");
	if (cols[0] <= 0 || cols[1] <= 0 || att_id <= 0)
		elog(ERROR, "projection.projections has no id, restored_pid or restored_at column");

	/*
	 * A restored projection gets a worker at this commit (poolcommit.c),
	 * which leaves it alone while this session lives, and again when the
	 * session ends (pool.c): the restore is over then.
	 */
	projection_request_launcher_at_commit();
	id = heap_getattr(td->tg_trigtuple, att_id, desc, &isnull);
	if (!isnull)
		projection_pool_note_restored(DatumGetInt32(id));

	values[0] = Int32GetDatum(MyProcPid);
	values[1] = TimestampTzGetDatum(MyStartTimestamp);
	return PointerGetDatum(heap_modify_tuple_by_cols(td->tg_trigtuple, desc, 2, cols, values, nulls));
}

/* ---------------------------------------------------------------------
 * End of (sub)transaction (called from xact.c)
 * ---------------------------------------------------------------------
 */

/* Has this transaction changed the registry (PREPARE refuses it)? */
bool
projection_registry_changed_in_xact(void)
{
	return registry_changed_in_xact;
}

/*
 * Before the commit becomes visible: count the change in the registry
 * generation (shmem.c), so that no cache older than the commit is trusted.
 */
void
projection_registry_at_pre_commit(void)
{
	if (registry_changed_in_xact && !registry_change_committing)
	{
		projection_registry_change_begin(MyDatabaseId);
		registry_change_committing = true;
	}
}

/* Commit or abort: the change is over.  Cannot fail. */
void
projection_registry_at_eoxact(void)
{
	registry_change_end();
	registry_changed_in_xact = false;
	projection_creating = false;
}

/* Subtransaction abort: a create() inside it is over. */
void
projection_registry_at_subxact_abort(void)
{
	projection_creating = false;
}

/*
 * Argument checks of create() and alter(): the read-model tables (ordinary
 * or partitioned tables outside the extension and the catalogs, which the
 * caller may write) and the event types (a one-dimensional array of
 * non-empty strings).
 */
void
projection_check_tables(ArrayType *tables)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	/* regclass[] from SQL; oid and regclass elements are laid out alike */
	deconstruct_array(tables, ARR_ELEMTYPE(tables), sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		Oid			relid;
		char		relkind;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", "tables")));
		relid = DatumGetObjectId(elems[i]);
		relkind = get_rel_relkind(relid);
		if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" is not a table", get_rel_name(relid)),
					 errdetail("A projection's tables must be ordinary or partitioned tables.")));
		if (relid == projection_oids()->events || get_rel_namespace(relid) == projection_oids()->schema)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s\" belongs to the extension and cannot be a read model",
							get_rel_name(relid))));
		if (IsCatalogRelationOid(relid) || get_rel_namespace(relid) == PG_CATALOG_NAMESPACE ||
			isAnyTempNamespace(get_rel_namespace(relid)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("table \"%s\" cannot be a read model", get_rel_name(relid)),
					 errdetail("System catalogs and temporary tables cannot be a projection's tables.")));
		/* each right is needed: aclcheck with several bits passes if any one is held */
		if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
			pg_class_aclcheck(relid, GetUserId(), ACL_UPDATE) != ACLCHECK_OK ||
			pg_class_aclcheck(relid, GetUserId(), ACL_DELETE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(relid)),
					 errdetail("A projection's owner needs INSERT, UPDATE and DELETE on its tables.")));
	}
}

/*
 * Check an event_types argument: one-dimensional, not empty, no NULL or
 * empty string.  "empty_hint" is the hint of the empty-array error (what
 * NULL means for the caller: projections, snapshots and feeds say it their
 * way).  Raises INVALID_PARAMETER_VALUE or NULL_VALUE_NOT_ALLOWED.
 */
void
projection_check_event_types(ArrayType *types, const char *empty_hint)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	if (ARR_NDIM(types) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a one-dimensional array", "event_types")));
	deconstruct_array(types, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_types"),
				 errhint("%s", empty_hint)));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", "event_types")));
		if (VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("argument \"%s\" must not contain empty strings", "event_types")));
	}
}
