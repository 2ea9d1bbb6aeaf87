/*-------------------------------------------------------------------------
 *
 * batchdef.c
 *	  Defining batch statements: projection.on_batch(name, statement),
 *	  projection.off_batch(name), and the check of a statement as the
 *	  projection's owner.
 *
 * A batch statement is validated when it is added, as the projection's
 * owner with its search_path: it is parsed, analysed and planned against
 * an empty relation "batch" (batch.c prepares it the way it will run), and
 * the privileges its plan needs are checked as the executor would, without
 * running it.  Only then is it stored in projection.batch_handlers, after
 * the projection's others.  Kinds of projection built on batch statements
 * (snapshots, snapshot.c) add theirs through
 * projection_batch_add_statement().  A snapshot projection's only
 * statement is its own (it writes the stored states): on_batch, off_batch
 * and on() refuse snapshot projections (projection_refuse_snapshot), so
 * that the states cannot silently stop being written.
 *
 * Locking: on_batch and off_batch lock the projection's registry row (FOR
 * UPDATE; a worker batch holding it is short) and write the registry as
 * the bootstrap superuser; the registry-change triggers make sessions and
 * workers reload their registry (catalog.c) from the next batch after the
 * commit.
 *
 * IDENTIFICATION
 *	  src/batchdef.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/plancache.h"

#include "batch.h"
#include "catalog.h"
#include "handler.h"
#include "projection.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_on_batch);
PG_FUNCTION_INFO_V1(projection_off_batch);

/*
 * Check a batch statement as the current user (the caller has entered the
 * owner's scope): it is prepared and planned against an empty batch, the
 * privileges its plan needs are checked as the executor would (without
 * running it: that could write), and the plan is thrown away.
 */
static void
batch_validate(const char *sql)
{
	Tuplestorestate *store = tuplestore_begin_heap(false, false, work_mem);
	SPIPlanPtr	plan;
	CachedPlan *cplan;
	ListCell   *lc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_batch_register(store);
	plan = projection_batch_prepare(sql);
	cplan = SPI_plan_get_cached_plan(plan);
	if (cplan == NULL)
		elog(ERROR, "could not plan the batch statement");
	foreach(lc, cplan->stmt_list)
	{
		PlannedStmt *pstmt = lfirst_node(PlannedStmt, lc);

#if PG_VERSION_NUM >= 160000
		(void) ExecCheckPermissions(pstmt->rtable, pstmt->permInfos, true);
#else
		(void) ExecCheckRTPerms(pstmt->rtable, true);
#endif
	}
	ReleaseCachedPlan(cplan, NULL);
	SPI_freeplan(plan);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	tuplestore_end(store);
}

/* ---------------------------------------------------------------------
 * projection.on_batch / projection.off_batch
 * ---------------------------------------------------------------------
 */

/*
 * Raise WRONG_OBJECT_TYPE if projection "id" is a snapshot projection:
 * its one batch statement calls projection._snapshot_apply and is the
 * extension's, not the user's, so "action" (the function refused, for the
 * message) must not add to or remove it.  Caller is connected to SPI and
 * holds the projection's registry row locked, so the answer cannot change
 * before its commit.
 */
void
projection_refuse_snapshot(int32 id, const char *name, const char *action)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	values[0] = Int32GetDatum(id);
	projection_registry_exec("SELECT 1 FROM projection.snapshot_defs "
							 "WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot use %s on snapshot projection \"%s\"", action, name),
				 errdetail("A snapshot projection has only its own batch statement, which writes its stored states."),
				 errhint("Use projection.drop() to remove a snapshot projection, or create a separate projection for other statements.")));
}

/*
 * Lock a projection's registry row (a worker batch holding it is waited
 * for: batches are short) and check that the caller owns it.  Returns its
 * id; *owner and *search_path (palloc'd in "cxt") if asked for.  Caller is
 * connected to SPI.
 */
static int32
batch_lookup_owned(const char *name, MemoryContext cxt, Oid *owner, char **search_path)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Oid			owner_id;

	values[0] = CStringGetTextDatum(name);
	projection_registry_exec("SELECT p.id, p.owner::pg_catalog.oid, p.search_path FROM projection.projections p "
							 "WHERE p.name OPERATOR(pg_catalog.=) $1 FOR UPDATE OF p",
							 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	owner_id = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	if (!has_privs_of_role(GetUserId(), owner_id))
	{
		/* NULL for an owner that no longer exists: no GRANT to suggest */
		char	   *owner_name = GetUserNameFromId(owner_id, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", name),
				 owner_name ? errhint("A member of the projection's owner role may manage it: GRANT %s TO %s.",
									  quote_identifier(owner_name),
									  quote_identifier(GetUserNameFromId(GetUserId(), false))) : 0));
	}
	if (owner != NULL)
		*owner = owner_id;
	if (search_path != NULL)
		*search_path = MemoryContextStrdup(cxt, TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull)));
	return DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
}

/*
 * Validate a batch statement as the projection's owner, with its
 * search_path, and add it after the projection's others.  Caller is
 * connected to SPI.  Also the entry point for kinds of projection built on
 * batch statements (snapshots): they pass their own projection's id.
 */
void
projection_batch_add_statement(int32 projection_id, Oid owner, const char *search_path,
							   const char *statement)
{
	ProjectionDef def;
	ProjectionOwnerScope scope;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	memset(&def, 0, sizeof(def));
	def.id = projection_id;
	def.owner = owner;
	def.search_path = (char *) search_path;
	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, &def);
	batch_validate(statement);
	projection_owner_leave(&scope);

	values[0] = Int32GetDatum(projection_id);
	values[1] = CStringGetTextDatum(statement);
	projection_registry_exec("INSERT INTO projection.batch_handlers (projection_id, seq, statement) "
							 "SELECT $1, COALESCE(pg_catalog.max(seq), 0) OPERATOR(pg_catalog.+) 1, $2 "
							 "FROM projection.batch_handlers WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 2, types, values, NULL, SPI_OK_INSERT);
}

/*
 * on_batch(name, statement): add a batch statement (not to a snapshot
 * projection).  Only the projection's
 * owner (or a member of that role, or a superuser) may; the statement is
 * prepared now as the owner, so that errors in it (unknown tables or
 * columns, a syntax error, a missing privilege) are reported here and
 * nothing is registered.  It takes effect from the next batch, in every
 * session and worker, once this transaction commits.
 */
Datum
projection_on_batch(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *statement = projection_text_arg(fcinfo, 1, "statement");
	MemoryContext cxt = CurrentMemoryContext;
	int32		id;
	Oid			owner;
	char	   *search_path;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	id = batch_lookup_owned(name, cxt, &owner, &search_path);
	projection_refuse_snapshot(id, name, "projection.on_batch()");
	projection_batch_add_statement(id, owner, search_path, statement);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * off_batch(name): remove the projection's batch statements; returns how
 * many.  Refused on a snapshot projection (its statement is its own).
 */
Datum
projection_off_batch(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	uint64		removed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(batch_lookup_owned(name, cxt, NULL, NULL));
	projection_refuse_snapshot(DatumGetInt32(values[0]), name, "projection.off_batch()");
	projection_registry_exec("DELETE FROM projection.batch_handlers WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_DELETE);
	removed = SPI_processed;
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT32((int32) removed);
}
