/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Set-based handlers: projection.on_batch(name, statement).
 *
 * A batch statement runs once per batch of events instead of once per
 * event.  It reads the batch's events (those of the projection's types, in
 * global_position order) as the ephemeral named relation "batch", whose row
 * type is that of projection.events, as PL/pgSQL reads a trigger's
 * transition tables: the events are put in a tuplestore, the tuplestore is
 * registered under the name "batch" in a nested SPI connection
 * (SPI_register_relation), and the statement's kept plan runs against
 * whatever tuplestore is registered under that name.  The relation's row
 * estimate is projection.batch_size (a kept plan is generic and planned
 * once, so it gets the typical size, not the first batch's).  The plan is
 * made again when the tables it reads or writes have more than doubled
 * since it was planned (batch_check_growth).
 *
 * Where batches come from:
 *  - async (worker.c): each projection's events of the worker's batch, in
 *    the batch's transaction, before the checkpoint moves;
 *  - inline (inline.c): the appending statement's events (its transition
 *    table), after the per-event handlers of those events;
 *  - catch-up and rebuild (replay.c, worker.c): chunks of
 *    projection.replay_batch_size events, bounded by projection.batch_bytes.
 * When a batch statement fails in the worker or a replay, the batch is
 * applied again event by event in subtransactions (each event through its
 * per-event handlers and the batch statements over a one-row batch), so
 * that on_error applies to the one failing event; the next batch is
 * set-based again.  Inline, an error aborts the append, as any inline
 * handler error does.
 *
 * Mixing with per-event handlers: a projection may have a handler function,
 * on() statements and batch statements.  For each batch, every event first
 * goes through the per-event handlers, in position order; then the batch
 * statements run, in the order they were added, and see those effects.
 *
 * Batch statements run as the projection's owner, with its search_path and
 * SECURITY_RESTRICTED_OPERATION (the caller enters the owner's scope,
 * catalog.c), each batch in a GUC nest level of its own, rolled back when
 * it returns, as for per-event handlers.
 *
 * Adding and removing batch statements (on_batch, off_batch) and checking
 * them as the owner is batchdef.c's; this file prepares and runs them.
 *
 * Locking: none of its own.  The registry's rules (catalog.c) apply: the
 * statements are part of the registry, loaded with it by catalog.c (which
 * does not call this file: no cycle), and their plans are kept in it.
 *
 * IDENTIFICATION
 *	  src/batch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "optimizer/optimizer.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/queryenvironment.h"
#include "utils/snapmgr.h"

#include "batch.h"
#include "catalog.h"
#include "handler.h"
#include "projection.h"
#include "snapapply.h"
#include "spiutil.h"

/* events per batch of a catch-up or a rebuild */
int			projection_replay_batch_size = 10000;

void
projection_batch_define_gucs(void)
{
	DefineCustomIntVariable("projection.replay_batch_size",
							"Maximum number of events a catch-up or a rebuild applies per batch.",
							"Batch statements (projection.on_batch) run once per batch.  A batch also "
							"ends once its events hold projection.batch_bytes; it always takes at least one event.",
							&projection_replay_batch_size,
							10000, 1, 1000000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
}

/* ---------------------------------------------------------------------
 * The registry's batch statements
 * ---------------------------------------------------------------------
 */

/*
 * Does this event go into the projection's batches?  Those hold the events
 * of the projection's event types (all of them with event_types NULL).
 */
bool
projection_wants_batch(ProjectionDef *def, const char *event_type)
{
	int			i;

	if (def->nbatch_statements == 0)
		return false;
	if (def->types == NULL)
		return true;
	for (i = 0; i < def->ntypes; i++)
		if (strcmp(def->types[i], event_type) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------------
 * Preparing a batch statement
 * ---------------------------------------------------------------------
 */

/* query_tree_walker callback: does the query read the relation "batch"? */
static bool
reads_batch_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		return rte->rtekind == RTE_NAMEDTUPLESTORE &&
			strcmp(rte->enrname, PROJECTION_BATCH_RELATION) == 0;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, reads_batch_walker, context,
								 QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, reads_batch_walker, context);
}

/*
 * Register "store" as the relation "batch" in the current SPI connection
 * (a nested one the caller opened: SPI_finish forgets it).  Also used by
 * batchdef.c to validate a statement against an empty batch.
 */
void
projection_batch_register(Tuplestorestate *store)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	int			rc;

	/*
	 * The relation's row type is read from projection.events whenever a
	 * statement over "batch" is parsed or its plan revalidated
	 * (ENRMetadataGetTupDesc opens the table without a lock, as a trigger's
	 * transition tables rely on their table being locked): hold the lock an
	 * INSERT into the events would, for the rest of the transaction.
	 */
	LockRelationOid(projection_oids()->events, AccessShareLock);

	enr->md.name = PROJECTION_BATCH_RELATION;
	enr->md.reliddesc = projection_oids()->events;
	enr->md.tupdesc = NULL;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = (double) projection_batch_size;
	enr->reldata = store;
	rc = SPI_register_relation(enr);
	if (rc != SPI_OK_REL_REGISTER)
		elog(ERROR, "SPI_register_relation failed: %s", SPI_result_code_string(rc));
}

/*
 * Prepare a batch statement, with "batch" registered in the current SPI
 * connection: one statement, INSERT, UPDATE, DELETE, MERGE or SELECT, that
 * reads "batch" and can write something (a SELECT only through a volatile
 * function or a data-modifying WITH).  A generic plan (there are no
 * parameters).  Raises the parser's and planner's errors, and ours.  The
 * plan is not kept; the caller decides (batchdef.c validates with it and
 * throws it away).
 */
SPIPlanPtr
projection_batch_prepare(const char *sql)
{
	SPIPlanPtr	plan;
	List	   *sources;
	CachedPlanSource *src;
	ListCell   *lc;
	bool		reads = false;
	bool		writes = false;

	plan = SPI_prepare_cursor(sql, 0, NULL, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare_cursor failed: %s", SPI_result_code_string(SPI_result));

	sources = SPI_plan_get_plan_sources(plan);
	if (list_length(sources) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a batch statement must be exactly one SQL statement")));
	src = linitial(sources);
	if (src->commandTag != CMDTAG_INSERT && src->commandTag != CMDTAG_UPDATE &&
		src->commandTag != CMDTAG_DELETE && src->commandTag != CMDTAG_SELECT &&
		src->commandTag != CMDTAG_MERGE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a batch statement must be INSERT, UPDATE, DELETE, MERGE or SELECT, not %s",
						GetCommandTagName(src->commandTag))));

	foreach(lc, src->query_list)
	{
		Query	   *query = lfirst_node(Query, lc);

		if (reads_batch_walker((Node *) query, NULL))
			reads = true;
		if (query->commandType != CMD_SELECT || query->hasModifyingCTE ||
			contain_volatile_functions((Node *) query))
			writes = true;
	}
	if (!reads)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a batch statement must read the relation \"%s\"", PROJECTION_BATCH_RELATION),
				 errdetail("The statement runs once per batch of events, and \"%s\" holds that batch's events.",
						   PROJECTION_BATCH_RELATION)));
	if (!writes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a batch statement must write something"),
				 errdetail("A SELECT that calls no volatile function and has no data-modifying WITH changes nothing."),
				 errhint("Write the read model with INSERT, UPDATE, DELETE or MERGE over \"%s\".",
						 PROJECTION_BATCH_RELATION)));
	return plan;
}

/* ---------------------------------------------------------------------
 * Assembling and running a batch
 * ---------------------------------------------------------------------
 */

/*
 * A tuplestore for a batch's rows.  It keeps up to work_mem, or twice
 * projection.batch_bytes if that is more, in memory before it spills to a
 * temporary file: the worker's and a replay's batches are read into memory
 * first anyway, bounded by batch_bytes (eventread.c), so writing their copy
 * out to disk would save no memory worth the write and the read back (a
 * catch-up batch of 30,000 events spilled at the default work_mem).
 * Twice, because the tuplestore counts each row's allocation overhead too.
 * An inline batch (a statement's transition table, of any size) spills
 * beyond that.
 */
static Tuplestorestate *
batch_store_begin(void)
{
	return tuplestore_begin_heap(true, false, Max(work_mem, 2 * projection_batch_bytes));
}

/*
 * Start an empty batch, its bookkeeping in the current memory context.
 * The rows put into it are not copied: each must stay valid until the
 * batch is run (they are copied into a tuplestore then, for batch
 * statements run as SQL).  The inline callers (batchapply.c) set
 * batch->fresh: the rows are new events of the appending statement.
 */
void
projection_batch_begin(ProjectionBatch *batch)
{
	memset(batch, 0, sizeof(*batch));
}

/*
 * Start an empty batch whose rows go into a tuplestore as they come
 * (copied): for rows that do not stay valid (a transition table's, read
 * through a slot), of a projection whose batch statements run as SQL.
 */
void
projection_batch_begin_stored(ProjectionBatch *batch)
{
	projection_batch_begin(batch);
	batch->store = batch_store_begin();
}

/* Add a projection.events row, given as a composite datum (not copied). */
void
projection_batch_put(ProjectionBatch *batch, Datum event, int64 position)
{
	HeapTupleHeader td = DatumGetHeapTupleHeader(event);
	HeapTuple	tuple = palloc(sizeof(HeapTupleData));

	tuple->t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = InvalidOid;
	tuple->t_data = td;
	projection_batch_put_tuple(batch, tuple, position);
}

/*
 * Add a projection.events row, given as a heap tuple: kept as it is
 * (valid until the batch is run), or copied into the batch's tuplestore if
 * it was begun with one.
 */
void
projection_batch_put_tuple(ProjectionBatch *batch, HeapTuple tuple, int64 position)
{
	if (batch->store != NULL)
		tuplestore_puttuple(batch->store, tuple);
	else
	{
		if (batch->ntuples >= batch->allocated)
		{
			batch->allocated = Max(batch->allocated * 2, 16);
			batch->tuples = batch->tuples == NULL ?
				palloc(sizeof(HeapTuple) * batch->allocated) :
				repalloc(batch->tuples, sizeof(HeapTuple) * batch->allocated);
		}
		batch->tuples[batch->ntuples++] = tuple;
	}
	if (batch->count == 0)
		batch->first = position;
	batch->last = position;
	batch->count++;
}

void
projection_batch_end(ProjectionBatch *batch)
{
	if (batch->store != NULL)
		tuplestore_end(batch->store);
	batch->store = NULL;
	if (batch->tuples != NULL)
		pfree(batch->tuples);
	batch->tuples = NULL;
	batch->ntuples = 0;
}

/*
 * Is the projection's batch statement a snapshot projection's own
 * (snapapply.c's projection_snapshot_statement for its name)?  Its batches
 * are then folded directly (projection_snapshot_apply_rows), as the
 * statement would fold them, without running it.  Decided once per loaded
 * statement.  A snapshot projection has no other batch statement
 * (batchdef.c refuses to add one).
 */
bool
projection_batch_is_snapshot(ProjectionDef *def)
{
	ProjectionBatchStatement *stmt;

	if (def->nbatch_statements != 1)
		return false;
	stmt = &def->batch_statements[0];
	if (stmt->kind == 0)
	{
		char	   *expected = projection_snapshot_statement(def->name);

		stmt->kind = strcmp(expected, stmt->sql) == 0 ? PROJECTION_BATCH_SNAPSHOT : PROJECTION_BATCH_SQL;
		pfree(expected);
	}
	return stmt->kind == PROJECTION_BATCH_SNAPSHOT;
}

/* error context for batch statements: which projection, which events */
typedef struct BatchContext
{
	ProjectionDef *def;
	ProjectionBatch *batch;
} BatchContext;

static void
batch_error_callback(void *arg)
{
	BatchContext *ctx = (BatchContext *) arg;

	if (ctx->batch->count == 1)
		errcontext("projection \"%s\", batch statement over event %lld",
				   ctx->def->name, (long long) ctx->batch->first);
	else
		errcontext("projection \"%s\", batch statement over %lld events (%lld to %lld)",
				   ctx->def->name, (long long) ctx->batch->count,
				   (long long) ctx->batch->first, (long long) ctx->batch->last);
}

/*
 * The blocks of the tables a batch statement's plan reads or writes (the
 * plan's relations, partitions included), and the plan cache's generation
 * of that plan.  Called right after the plan ran, so the executor holds a
 * lock on (almost) each of them.
 */
static BlockNumber
batch_plan_blocks(SPIPlanPtr plan, int *generation)
{
	CachedPlanSource *src = linitial(SPI_plan_get_plan_sources(plan));
	BlockNumber blocks = 0;
	ListCell   *lc;

	*generation = src->generation;
	if (src->gplan == NULL)
		return 0;
	foreach(lc, src->gplan->stmt_list)
	{
		PlannedStmt *pstmt = lfirst_node(PlannedStmt, lc);
		ListCell   *rlc;

		foreach(rlc, pstmt->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, rlc);
			Relation	rel;

			if (rte->rtekind != RTE_RELATION ||
				(rte->relkind != RELKIND_RELATION && rte->relkind != RELKIND_MATVIEW))
				continue;
			/*
			 * Held since the execution, except a partition that initial
			 * pruning left unlocked (18): skip one we would wait for.
			 */
			if (!ConditionalLockRelationOid(rte->relid, AccessShareLock))
				continue;
			rel = try_relation_open(rte->relid, NoLock);
			if (rel == NULL)
				continue;
			blocks += RelationGetNumberOfBlocks(rel);
			relation_close(rel, NoLock);
		}
	}
	return blocks;
}

/*
 * After a batch statement ran: forget its kept plan if the tables it reads
 * or writes have grown to more than twice their size when it was planned
 * (and by more than BATCH_REPLAN_MIN_BLOCKS), so that the next batch plans
 * it again with their sizes then.  A kept plan is generic and planned once:
 * planned over an empty read model (the first batch of a catch-up or of a
 * rebuild), a join with the batch is a Seq Scan of the read model, and
 * every later batch would scan the whole, growing read model.  Doubling
 * bounds the plans to a few per statement (log2 of the growth), whatever
 * the number of batches.  The plan cache plans again on its own when a
 * table's definition changes (a new generation): the size then is the new
 * baseline.
 */
#define BATCH_REPLAN_MIN_BLOCKS 16

static void
batch_check_growth(ProjectionBatchStatement *stmt)
{
	int			generation;
	BlockNumber blocks = batch_plan_blocks(stmt->plan, &generation);

	if (generation != stmt->plan_generation)
	{
		stmt->plan_generation = generation;
		stmt->plan_blocks = blocks;
	}
	else if (blocks > 2 * (uint64) stmt->plan_blocks &&
			 blocks - stmt->plan_blocks > BATCH_REPLAN_MIN_BLOCKS)
	{
		SPIPlanPtr	plan = stmt->plan;

		stmt->plan = NULL;
		SPI_freeplan(plan);
	}
}

/*
 * The batch statements over the batch, as SQL: the batch's rows in a
 * tuplestore (made now unless the batch was begun with one) registered as
 * "batch" in a nested SPI connection, each statement's kept plan executed
 * over it.  As for projection_batch_run.
 */
static void
batch_run_statements(ProjectionDef *def, ProjectionBatch *batch)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	int32		save_running_id = projection_snapshot_running_batch();
	int			i;

	if (batch->store == NULL)
	{
		batch->store = batch_store_begin();
		for (i = 0; i < batch->ntuples; i++)
			tuplestore_puttuple(batch->store, batch->tuples[i]);
	}
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		projection_batch_register(batch->store);
		projection_snapshot_set_running_batch(def->id);
		for (i = 0; i < def->nbatch_statements; i++)
		{
			ProjectionBatchStatement *stmt = &def->batch_statements[i];
			int			rc;

			if (stmt->plan == NULL)
			{
				SPIPlanPtr	plan = projection_batch_prepare(stmt->sql);

				if (SPI_keepplan(plan) != 0)
					elog(ERROR, "SPI_keepplan failed");
				stmt->plan = plan;
				stmt->plan_generation = -1;	/* its size after this batch */
			}
			tuplestore_rescan(batch->store);
			rc = SPI_execute_plan(stmt->plan, NULL, NULL, false, 0);
			if (rc < 0)
				elog(ERROR, "batch statement failed: %s", SPI_result_code_string(rc));
			if (SPI_tuptable != NULL)
				SPI_freetuptable(SPI_tuptable);
			batch_check_growth(stmt);
		}
		projection_snapshot_set_running_batch(save_running_id);
		if (SPI_finish() != SPI_OK_FINISH)
			elog(ERROR, "SPI_finish failed");
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		projection_snapshot_set_running_batch(save_running_id);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_CARDINALITY_VIOLATION)
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FlushErrorState();
		/* the server's own hint speaks of rows proposed for insertion: say what to do with a batch */
		edata->hint = pstrdup("A batch can hold several events of one key: aggregate the batch per key "
							  "(GROUP BY, or DISTINCT ON (key) ... ORDER BY global_position DESC) before the upsert.");
		ReThrowError(edata);
	}
	PG_END_TRY();
}

/*
 * Run the projection's batch statements over the batch, in the order they
 * were added (nothing if the batch is empty); a snapshot projection's own
 * statement by folding the batch's rows directly (snapapply.c), the same
 * fold it would run.  The caller has entered the owner's scope, is
 * connected to SPI and pushed an active snapshot, as for
 * projection_apply().  Errors propagate, with a context line naming the
 * projection and the batch's positions; a statement that meets one key
 * twice (ON CONFLICT DO UPDATE or MERGE, 21000) gets a hint saying how to
 * aggregate per key instead of the server's.
 */
void
projection_batch_run(ProjectionDef *def, ProjectionBatch *batch)
{
	ErrorContextCallback errcallback;
	BatchContext ctx;
	int			nestlevel;

	if (batch->count == 0 || def->nbatch_statements == 0)
		return;

	ctx.def = def;
	ctx.batch = batch;
	errcallback.callback = batch_error_callback;
	errcallback.arg = &ctx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* settings: as for per-event handlers (projection_apply) */
	nestlevel = NewGUCNestLevel();

	/*
	 * An async projection's states are written only by holders of its
	 * registry row (the worker's round, replays, retry_dead_letters), the
	 * only callers that are not inline.
	 */
	if (batch->store == NULL && projection_batch_is_snapshot(def))
		(void) projection_snapshot_apply_rows(def->name, batch->tuples, batch->ntuples, batch->fresh,
											  !def->is_inline);
	else
		batch_run_statements(def, batch);

	AtEOXact_GUC(false, nestlevel);
	error_context_stack = errcallback.previous;
}
