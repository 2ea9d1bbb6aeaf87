/*-------------------------------------------------------------------------
 *
 * checkpoint.c
 *	  Checkpoints of projections: the only file that knows the two versions
 *	  of the schema.  In 1.0 a projection's checkpoint is the position in
 *	  its registry row; from 1.1 the worker writes it to
 *	  projection.checkpoints, and the checkpoint is the further of the two.
 *
 * Checkpoints are written in the transaction that applied the events up to
 * them (exactly once); the registry row lock of that transaction (FOR
 * UPDATE) serializes writers.
 *
 * IDENTIFICATION
 *	  src/checkpoint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "catalog.h"
#include "checkpoint.h"
#include "compat.h"
#include "spiutil.h"

/*
 * The checkpoint of projection row "p" (an alias), as an SQL expression: the
 * registry's base position, or the newest entry of projection.checkpoints
 * (version 1.1) if that is further.  The two forms for a database with and
 * without the checkpoints table.
 */
#define PROJECTION_CHECKPOINT_SQL(p) \
	"GREATEST(" p ".position, (SELECT c.position FROM projection.checkpoints c " \
	"WHERE c.projection_id OPERATOR(pg_catalog.=) " p ".id ORDER BY c.position DESC LIMIT 1))"
#define PROJECTION_CHECKPOINT_SQL_1_0(p) p ".position"

/* the worker's kept plans, one per version: a plan of 1.0 stays valid after the update */
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr lock_plan_1_0 = NULL;
static SPIPlanPtr checkpoint_plan = NULL;
static SPIPlanPtr checkpoint_plan_1_0 = NULL;
static SPIPlanPtr caught_up_plan = NULL;
static SPIPlanPtr restoring_plan = NULL;

/* Is the database's schema at 1.1 or later (projection.checkpoints exists)? */
static bool
checkpoints_table(void)
{
	return OidIsValid(projection_oids()->checkpoints);
}

/* the checkpoint of registry row "p" in this database's version of the schema */
const char *
projection_checkpoint_sql(void)
{
	return checkpoints_table() ?
		PROJECTION_CHECKPOINT_SQL("p") : PROJECTION_CHECKPOINT_SQL_1_0("p");
}

/*
 * The checkpoint of projection "id" whose registry row holds "position",
 * read without SPI under "snapshot" (poolcommit.c's pre-commit look): the value of
 * projection_checkpoint_sql, through the primary key of
 * projection.checkpoints (1.1), newest entry first.  Takes AccessShareLock
 * on the table and its index.
 */
#define PROJECTION_CHECKPOINTS_PKEY "checkpoints_pkey"
#define Anum_checkpoints_projection_id 1
#define Anum_checkpoints_position 2

int64
projection_checkpoint_read(int32 id, int64 position, Snapshot snapshot)
{
	const ProjectionOids *o = projection_oids();
	Oid			pkey;
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;

	if (!checkpoints_table())
		return position;
	pkey = get_relname_relid(PROJECTION_CHECKPOINTS_PKEY, o->schema);
	if (!OidIsValid(pkey))
		elog(ERROR, "projection.checkpoints has no index \"%s\"", PROJECTION_CHECKPOINTS_PKEY);
	heap = table_open(o->checkpoints, AccessShareLock);
	index = index_open(pkey, AccessShareLock);
	ScanKeyInit(&key, Anum_checkpoints_projection_id, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(id));
	scan = projection_index_beginscan(heap, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	slot = table_slot_create(heap, NULL);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;
		int64		saved = DatumGetInt64(slot_getattr(slot, Anum_checkpoints_position, &isnull));

		if (!isnull && saved > position)
			position = saved;
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return position;
}

/* Delete the worker's checkpoints of a projection (version 1.1). */
void
projection_forget_checkpoints(int32 id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!checkpoints_table())
		return;
	values[0] = Int32GetDatum(id);
	projection_registry_exec("DELETE FROM projection.checkpoints WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_DELETE);
}

/*
 * When row "p" last moved its checkpoint, as an SQL expression: the
 * registry row's updated_at, or the newest checkpoint's saved_at (1.1).
 */
const char *
projection_checkpoint_saved_at_sql(void)
{
	return checkpoints_table() ?
		"GREATEST(p.updated_at, (SELECT c.saved_at FROM projection.checkpoints c "
		"WHERE c.projection_id OPERATOR(pg_catalog.=) p.id ORDER BY c.position DESC LIMIT 1))" :
		"p.updated_at";
}

/*
 * The worker marks a projection failed: its registry position is its
 * checkpoint again (1.1: the worker's entries go).  In the worker's
 * transaction, as the worker.
 */
void
projection_checkpoint_reset(int32 id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	int			rc;

	if (!checkpoints_table())
		return;
	values[0] = Int32GetDatum(id);
	rc = SPI_execute_with_args("DELETE FROM projection.checkpoints "
							   "WHERE projection_id OPERATOR(pg_catalog.=) $1",
							   1, types, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_DELETE, "recording a failure");
}

/*
 * Move a projection's checkpoint to "position" in this round's transaction,
 * and mark it running if it was catching up and has caught up; *checkpoint
 * and *catching_up are the caller's copy of the two, updated.  From
 * version 1.1 the checkpoint is a new entry in projection.checkpoints (the
 * previous one is deleted); the registry row is only written when the state
 * changes, so that a long transaction elsewhere, which keeps old row
 * versions from being pruned, does not make every round walk more of them.
 */
void
projection_checkpoint_save(int32 id, int64 *checkpoint, bool *catching_up, int64 position,
						   bool caught_up)
{
	Oid			types[3] = {INT4OID, INT8OID, BOOLOID};
	Datum		values[3];
	SPIPlanPtr	plan;
	int			rc;

	values[0] = Int32GetDatum(id);
	values[1] = Int64GetDatum(position);
	if (!checkpoints_table())
	{
		plan = projection_kept_plan(&checkpoint_plan_1_0,
									"UPDATE projection.projections SET position = $2, "
									"state = CASE WHEN $3 THEN 'running' ELSE state END, "
									"updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
									3, types);
		values[2] = BoolGetDatum(caught_up);
		rc = SPI_execute_plan(plan, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_UPDATE, "saving a checkpoint");
		*checkpoint = position;
		*catching_up = *catching_up && !caught_up;
		return;
	}

	if (position > *checkpoint)
	{
		types[2] = INT8OID;
		plan = projection_kept_plan(&checkpoint_plan,
									"WITH previous AS (DELETE FROM projection.checkpoints "
						   "WHERE projection_id OPERATOR(pg_catalog.=) $1 "
						   "AND position OPERATOR(pg_catalog.=) $3) "
									"INSERT INTO projection.checkpoints (projection_id, position) VALUES ($1, $2)",
									3, types);
		values[2] = Int64GetDatum(*checkpoint);
		rc = SPI_execute_plan(plan, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_INSERT, "saving a checkpoint");
		*checkpoint = position;
	}
	if (caught_up)
	{
		*catching_up = false;
		plan = projection_kept_plan(&caught_up_plan,
									"UPDATE projection.projections SET state = 'running', "
									"updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
									1, types);
		rc = SPI_execute_plan(plan, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_UPDATE, "marking a projection caught up");
	}
}

/* the session that restored registry row "p" (1.1) still lives */
#define RESTORING_SESSION_LIVES \
	"EXISTS (SELECT FROM pg_catalog.pg_stat_get_activity(p.restored_pid) a " \
	"WHERE a.backend_start OPERATOR(pg_catalog.=) p.restored_at)"

/*
 * The worker's plan that locks its async projections' registry rows (FOR
 * UPDATE SKIP LOCKED) and reads their checkpoints, and from 1.1 their
 * restore marks: $1 the worker count, $2 the worker's index, $3 the ids to
 * leave out.  Columns: id, checkpoint, catching up, being restored.
 */
SPIPlanPtr
projection_checkpoint_lock_plan(void)
{
	Oid			types[3] = {INT4OID, INT4OID, INT4ARRAYOID};

#define LOCK_SQL(checkpoint, restored, hold) \
	"SELECT id, " checkpoint ", state OPERATOR(pg_catalog.=) 'catching_up', " restored " " \
	"FROM projection.projections p " \
	"WHERE mode OPERATOR(pg_catalog.=) 'async' " \
	"AND state OPERATOR(pg_catalog.=) ANY ('{running,catching_up}') " \
	"AND id OPERATOR(pg_catalog.%) $1 OPERATOR(pg_catalog.=) $2 " hold \
	"AND id OPERATOR(pg_catalog.<>) ALL ($3) " \
	"ORDER BY id FOR UPDATE OF p SKIP LOCKED"

	/*
	 * One cached plan per version: a plan of 1.0 stays valid after the
	 * update.  From 1.1, a projection being restored is left alone while
	 * the restoring session lives.
	 */
	if (checkpoints_table())
		return projection_kept_plan(&lock_plan,
									LOCK_SQL(PROJECTION_CHECKPOINT_SQL("p"), "restored_pid IS NOT NULL",
									"AND (restored_pid IS NULL OR NOT " RESTORING_SESSION_LIVES ") "),
									3, types);
	return projection_kept_plan(&lock_plan_1_0,
						   LOCK_SQL(PROJECTION_CHECKPOINT_SQL_1_0("p"), "false", ""),
						   3, types);
}

/*
 * The worker's plan that finds, without locking, the async projections of
 * its group that the lock plan leaves out because the session that restored
 * them still lives: $1 the worker count, $2 the worker's index.  Column:
 * id.  NULL for 1.0, which has no restore marks.
 */
SPIPlanPtr
projection_checkpoint_restoring_plan(void)
{
	Oid			types[2] = {INT4OID, INT4OID};

	if (!checkpoints_table())
		return NULL;
	return projection_kept_plan(&restoring_plan,
								"SELECT id FROM projection.projections p "
								"WHERE mode OPERATOR(pg_catalog.=) 'async' "
								"AND state OPERATOR(pg_catalog.=) ANY ('{running,catching_up}') "
								"AND id OPERATOR(pg_catalog.%) $1 OPERATOR(pg_catalog.=) $2 "
								"AND restored_pid IS NOT NULL AND " RESTORING_SESSION_LIVES,
								2, types);
}
