/*-------------------------------------------------------------------------
 *
 * workerstep.c
 *	  The steps a worker round's transaction is made of, shared by the fast
 *	  round and the careful replay: begin (the horizon read), lock the
 *	  projections (and count those the lock left out for a live restore),
 *	  read the batch and walk it with the horizon, save the checkpoints,
 *	  end, publish the progress; and the worker's own state.
 *
 * Locking: projection_worker_begin takes AccessShareLock on the sequence
 * (so a committing DROP EXTENSION is waited out and seen); the lock step
 * locks the projections' registry rows FOR UPDATE SKIP LOCKED, minus those a
 * management call holds (shmem.c), and from then the batch may be cancelled
 * by a management call (projection_worker_batch_begin); the end step closes
 * that window under the projection LWLock before committing.
 *
 * Memory: while connected to SPI everything is in the SPI procedure context
 * and dies at projection_worker_end; what outlives the commit (the round's
 * projections) goes into the context the caller names, saved before
 * SPI_connect.
 *
 * IDENTIFICATION
 *	  src/workerstep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cancel.h"
#include "catalog.h"
#include "checkpoint.h"
#include "depend.h"
#include "eventread.h"
#include "horizon.h"
#include "progress.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "workerstep.h"

ProjectionWorkerState projection_worker = {InvalidOid, 0, 1, false, "?", false, 0, false, false, 0, 0, 0};

/* catch-ups this worker follows, for the "caught up" LOG line's rate */
#define WORKER_TRACKED_CATCH_UPS 64
typedef struct WorkerCatchUp
{
	int32		id;
	int64		from;
	TimestampTz since;
} WorkerCatchUp;
static WorkerCatchUp catch_ups[WORKER_TRACKED_CATCH_UPS];
static int	ncatch_ups = 0;

static SPIPlanPtr batch_plan = NULL;
static SPIPlanPtr filtered_batch_plan = NULL;

/* Is the extension installed (and committed) here?  Inside a transaction. */
static bool
worker_extension_exists(void)
{
	return OidIsValid(get_extension_oid(PROJECTION_EXTENSION_NAME, true));
}

/*
 * Start a round's transaction: snapshot-free start, then the horizon read
 * (L, W, then the snapshot; horizon.c).  Returns false if the extension is
 * gone.
 */
bool
projection_worker_begin(ProjectionHorizon *hz)
{
	Oid			sequence;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!worker_extension_exists())
	{
		CommitTransactionCommand();
		return false;
	}

	/*
	 * A DROP EXTENSION may be committing right now: it holds the sequence
	 * with AccessExclusiveLock, and this worker, outside any batch, cannot
	 * be cancelled by it.  Lock the sequence first and look again once we
	 * have it (the lock acquisition processes the drop's invalidations), so
	 * that the worker leaves cleanly instead of failing to open a relation
	 * that is gone.
	 */
	sequence = projection_oids()->sequence;
	LockRelationOid(sequence, AccessShareLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(sequence)) ||
		!worker_extension_exists())
	{
		CommitTransactionCommand();
		return false;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_horizon_read(hz, projection_worker.dboid);
	return true;
}

/*
 * Lock and re-read the rows of the async projections that may run now.
 * Returns them in *rps, allocated in "cxt": the round's context, saved
 * before SPI_connect, because the round reads them after projection_worker_end()
 * (SPI_finish frees everything allocated while connected).  Their defs
 * point into the registry cache and are only used before projection_worker_end().
 *
 * *registryp, acquired by the caller before the lock, is acquired again
 * once the rows are locked (and so replaced if the registry changed
 * meanwhile): a management call that held one of these rows (off then on,
 * say) may have committed between the caller's acquire and the lock, and
 * the projection's events must not be applied with the statements the
 * cache had before it.  Such a change bumped the registry generation
 * before its commit became visible, and so before we got its row
 * (shmem.c): the second acquire sees the bump and reloads with a snapshot
 * taken after the lock.
 */
int
projection_worker_lock_projections(ProjectionRegistry **registryp, MemoryContext cxt,
						ProjectionRoundMember **rps)
{
	ProjectionRegistry *registry;
	SPITupleTable *locked;
	uint64		nlocked;
	SPIPlanPtr	plan;
	int			rc;
	int			n = 0;
	uint64		i;
	ProjectionRoundMember *result;
	int32	   *restored;
	int			nrestored = 0;
	Datum		values[3];
	List	   *ownerless = NIL;
	List	   *unprivileged = NIL;
	ListCell   *lc;

	plan = projection_checkpoint_lock_plan();
	values[0] = Int32GetDatum(projection_worker.count);
	values[1] = Int32GetDatum(projection_worker.index);
	/* projections a management call is waiting for (manage's cancel requests) */
	values[2] = projection_held_projections(projection_worker.dboid);
	rc = SPI_execute_plan(plan, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "locking async projections");
	locked = SPI_tuptable;
	nlocked = SPI_processed;
	/* the rows are locked: a management call may cancel the batch from here */
	projection_worker_batch_begin(projection_worker.dboid, projection_worker.index);

	/* the registry as of the lock (see above) */
	projection_registry_release(*registryp);
	*registryp = projection_registry_acquire();
	registry = *registryp;

	result = MemoryContextAllocZero(cxt, sizeof(ProjectionRoundMember) * Max(nlocked, 1));
	restored = palloc(sizeof(int32) * Max(nlocked, 1));
	for (i = 0; i < nlocked; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(locked->vals[i], locked->tupdesc, 1, &isnull));
		int			j;

		if (DatumGetBool(SPI_getbinval(locked->vals[i], locked->tupdesc, 4, &isnull)))
			restored[nrestored++] = id;

		for (j = 0; j < registry->nprojections; j++)
		{
			/*
			 * A projection with neither a handler nor statements is not
			 * ready (its statements are still to be added with on() or
			 * on_batch()): it
			 * must not consume events yet.
			 */
			if (registry->projections[j].id == id &&
				(OidIsValid(registry->projections[j].handler) ||
				 registry->projections[j].nstatements > 0 ||
				 registry->projections[j].nbatch_statements > 0))
			{
				/* nothing runs as a dropped role: stop it (depend.c) */
				if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(registry->projections[j].owner)))
				{
					ownerless = lappend(ownerless, &registry->projections[j]);
					break;
				}
				/* nor hands events to an owner who may no longer read them */
				if (pg_class_aclcheck(projection_oids()->events, registry->projections[j].owner,
									  ACL_SELECT) != ACLCHECK_OK)
				{
					unprivileged = lappend(unprivileged, &registry->projections[j]);
					break;
				}
				result[n].def = &registry->projections[j];
				result[n].id = id;
				result[n].name = MemoryContextStrdup(cxt, registry->projections[j].name);
				result[n].position = DatumGetInt64(SPI_getbinval(locked->vals[i], locked->tupdesc, 2, &isnull));
				result[n].catching_up = DatumGetBool(SPI_getbinval(locked->vals[i], locked->tupdesc, 3, &isnull));
				n++;
				break;
			}
		}
	}
	SPI_freetuptable(locked);
	foreach(lc, ownerless)
	{
		ProjectionDef *def = lfirst(lc);

		projection_depend_fail_ownerless(def->id, def->name, def->owner);
	}
	foreach(lc, unprivileged)
	{
		ProjectionDef *def = lfirst(lc);

		projection_depend_fail_unprivileged(def->id, def->name, def->owner);
	}

	/* the restoring session has ended: forget it */
	for (i = 0; i < (uint64) nrestored; i++)
	{
		Datum		id = Int32GetDatum(restored[i]);
		Oid			idtype = INT4OID;

		rc = SPI_execute_with_args("UPDATE projection.projections SET restored_pid = NULL, restored_at = NULL "
								   "WHERE id OPERATOR(pg_catalog.=) $1",
								   1, &idtype, &id, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_UPDATE, "ending a restore");
	}
	*rps = result;
	return n;
}

/*
 * Is "def" one of the running async projections of this worker's group, as
 * the round's registry says?  With "ready", only those with a handler,
 * statements or batch statements (the ones a round takes).
 */
static bool
worker_in_group(ProjectionDef *def, bool ready)
{
	return !def->is_inline && def->id % projection_worker.count == projection_worker.index &&
		(def->state == PROJECTION_RUNNING || def->state == PROJECTION_CATCHING_UP) &&
		(!ready || OidIsValid(def->handler) || def->nstatements > 0 ||
		 def->nbatch_statements > 0);
}

/*
 * How many projections of this worker's group the round's registry has
 * (worker_in_group).  A round that locked fewer left some out, because a
 * management call, or a restore whose session lives, holds them.
 */
int
projection_worker_group_count(ProjectionRegistry *registry, bool ready)
{
	int			i;
	int			n = 0;

	for (i = 0; i < registry->nprojections; i++)
		if (worker_in_group(&registry->projections[i], ready))
			n++;
	return n;
}

/*
 * The ids of this worker's group's async projections that the session which
 * restored them still holds back (the lock left them out for it,
 * checkpoint.c), in the current memory context; none in a database at 1.0.
 * Read without locks, with a snapshot of its own.
 */
static int
worker_restoring_ids(int32 **ids)
{
	SPIPlanPtr	plan = projection_checkpoint_restoring_plan();
	Datum		values[2];
	uint64		i;
	int			n;
	int			rc;

	*ids = NULL;
	if (plan == NULL)
		return 0;
	values[0] = Int32GetDatum(projection_worker.count);
	values[1] = Int32GetDatum(projection_worker.index);
	rc = SPI_execute_plan(plan, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "finding restored projections");
	*ids = palloc(sizeof(int32) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		(*ids)[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
												1, &isnull));
	}
	n = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/*
 * Of the ready projections of this worker's group that the round did not
 * lock (the nrps of rps it did), how many the session which restored them
 * still holds back.  They keep neither the worker busy nor its pool slot:
 * the end of that session asks for the group again (pool.c,
 * projection_pool_note_restored), and the round of a worker woken or
 * started from then on takes them.  Called while the round's transaction
 * is open, after projection_worker_lock_projections.
 */
int
projection_worker_restoring_count(ProjectionRegistry *registry, ProjectionRoundMember *rps,
								  int nrps)
{
	int32	   *ids;
	int			nids = worker_restoring_ids(&ids);
	int			n = 0;
	int			i;

	for (i = 0; i < registry->nprojections && nids > 0; i++)
	{
		ProjectionDef *def = &registry->projections[i];
		bool		listed = false;
		int			j;

		if (!worker_in_group(def, true))
			continue;
		for (j = 0; j < nids && !listed; j++)
			listed = ids[j] == def->id;
		for (j = 0; j < nrps && listed; j++)
			listed = rps[j].id != def->id;
		if (listed)
			n++;
	}
	return n;
}

/*
 * Read up to max_rows events after "from", no further than "upto", and no
 * more once they hold projection.batch_bytes (at least one), with the active
 * snapshot (read_only SPI uses it).  *full says whether a bound stopped the
 * read, so that more events may follow the last one read.  With a filter
 * (a text[] of event types, see projection_type_filter()), only events of
 * those types: the caller must then have made sure that no event up to
 * "upto" can still appear, because the gaps cannot be seen.  The events are
 * in the current memory context (the SPI procedure's: they die at
 * projection_worker_end()).
 */
int
projection_worker_read_batch(int64 from, int64 upto, Datum filter, int max_rows,
				  ProjectionRoundEvent **events, bool *full)
{
	Oid			types[4] = {INT8OID, INT8OID, INT8OID, TEXTARRAYOID};
	Datum		values[4];
	SPIPlanPtr	plan;
	int			i;
	ProjectionRoundEvent *result;
	ProjectionEventRows rows;

#define BATCH_SQL(filter) \
	"SELECT " PROJECTION_EVENT_COLUMNS " FROM projection.events e " \
	"WHERE e.global_position OPERATOR(pg_catalog.>) $1 " \
	"AND e.global_position OPERATOR(pg_catalog.<=) $2 " filter \
	"ORDER BY e.global_position LIMIT $3"

	if (filter == (Datum) 0)
		plan = projection_kept_plan(&batch_plan, BATCH_SQL(""), 3, types);
	else
		plan = projection_kept_plan(&filtered_batch_plan,
									BATCH_SQL("AND e.event_type OPERATOR(pg_catalog.=) ANY ($4) "),
									4, types);
	values[0] = Int64GetDatum(from);
	values[1] = Int64GetDatum(upto);
	values[2] = Int64GetDatum(max_rows);
	values[3] = filter;
	projection_read_events(plan, filter == (Datum) 0 ? 3 : 4, types, values,
						   max_rows, PROJECTION_BATCH_BYTES, CurrentMemoryContext, &rows);

	/*
	 * The rows are events; an event's datum is built only for the per-event
	 * handlers that take it (projection_round_event_datum), batch statements
	 * take the row as it is.
	 */
	result = palloc(sizeof(ProjectionRoundEvent) * Max(rows.ntuples, 1));
	for (i = 0; i < rows.ntuples; i++)
	{
		HeapTuple	tup = rows.tuples[i];
		TupleDesc	desc = rows.tupdesc;

		result[i].row = tup;
		result[i].event = (Datum) 0;
		result[i].position = projection_event_row_position(tup, desc);
		result[i].event_type = projection_event_row_type(tup, desc);
		result[i].stream_id = projection_event_row_stream(tup, desc);
	}
	*events = result;
	*full = rows.full;
	return rows.ntuples;
}

/*
 * A round's event as a projection.events datum, for per-event handlers:
 * built at the first call, in the memory context of the event's row, which
 * it lives as long as.
 */
Datum
projection_round_event_datum(ProjectionRoundEvent *ev)
{
	if (ev->event == (Datum) 0)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(GetMemoryChunkContext(ev->row));

		ev->event = projection_event_row_datum(ev->row);
		MemoryContextSwitchTo(oldcxt);
	}
	return ev->event;
}

/*
 * How far may this round go?  The contiguous walk of horizon.c over the
 * batch.  Returns the number of batch events to apply and sets *horizon,
 * the position every participating projection will have reached.  "full":
 * the read stopped at a bound (projection_worker_read_batch).
 */
int
projection_worker_horizon(ProjectionRoundEvent *events, int nevents, bool full, int64 from, int64 last_value,
			   int64 gap_bound, int64 *horizon)
{
	ProjectionHorizonWalk walk;
	int			i;

	projection_horizon_walk_begin(&walk, from, gap_bound);
	for (i = 0; i < nevents; i++)
	{
		if (!projection_horizon_walk_step(&walk, events[i].position))
		{
			*horizon = walk.reached;
			return i;
		}
	}
	*horizon = projection_horizon_walk_end(&walk, full, last_value);
	return nevents;
}

/*
 * Move a projection's checkpoint to "position" in this round's transaction,
 * and mark it running if it was catching up and has caught up
 * (checkpoint.c).
 */
void
projection_worker_save_checkpoint(ProjectionRoundMember *rp, int64 position, bool caught_up)
{
	bool		was_catching_up = rp->catching_up;

	projection_worker.saves++;
	projection_checkpoint_save(rp->def->id, &rp->position, &rp->catching_up, position, caught_up);
	if (caught_up && was_catching_up)
		rp->just_caught_up = true;
}

/*
 * The first worker of the database checks the registry's owners
 * (depend.c) each time its registry cache was reloaded; the check counts
 * as done once the round's transaction commits (projection_worker_end).
 */
static uint64 owners_checked_serial = 0;
static uint64 owners_checking_serial = 0;

void
projection_worker_check_owners(ProjectionRegistry *registry)
{
	if (projection_worker.index != 0 || registry->serial == owners_checked_serial)
		return;
	(void) projection_depend_check_owners();
	owners_checking_serial = registry->serial;
}

void
projection_worker_end(bool commit)
{
	if (commit)
	{
		projection_worker_batch_end(projection_worker.dboid, projection_worker.index);
		if (owners_checking_serial != 0)
			owners_checked_serial = owners_checking_serial;
	}
	owners_checking_serial = 0;
	PopActiveSnapshot();
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (commit)
		CommitTransactionCommand();
	else
		AbortCurrentTransaction();
}

/*
 * Remember when and where this worker saw each catching-up projection first,
 * for the rate of its "caught up" LOG line.  The table is small; a
 * projection that finds no room simply gets no rate.
 */
void
projection_worker_track_catch_ups(ProjectionRoundMember *rps, int nrps)
{
	int			i,
				j;

	for (j = 0; j < nrps; j++)
	{
		bool		known = false;

		if (!rps[j].catching_up)
			continue;
		for (i = 0; i < ncatch_ups; i++)
			if (catch_ups[i].id == rps[j].id)
				known = true;
		if (!known && ncatch_ups < WORKER_TRACKED_CATCH_UPS)
		{
			catch_ups[ncatch_ups].id = rps[j].id;
			catch_ups[ncatch_ups].from = rps[j].position;
			catch_ups[ncatch_ups].since = GetCurrentTimestamp();
			ncatch_ups++;
		}
	}
}

/* After the commit that ended a catch-up: say so, with its rate. */
static void
worker_log_caught_up(ProjectionRoundMember *rp)
{
	int			i;

	for (i = 0; i < ncatch_ups; i++)
	{
		if (catch_ups[i].id == rp->id)
		{
			long		secs;
			int			usecs;
			double		elapsed;
			int64		events = rp->position - catch_ups[i].from;

			TimestampDifference(catch_ups[i].since, GetCurrentTimestamp(), &secs, &usecs);
			elapsed = secs + usecs / 1000000.0;
			ereport(LOG,
					(errmsg("projection \"%s\" caught up at position %lld: %lld positions in %.1f s (%.0f per second)",
							rp->name, (long long) rp->position, (long long) events, elapsed,
							elapsed > 0 ? events / elapsed : (double) events)));
			catch_ups[i] = catch_ups[--ncatch_ups];
			return;
		}
	}
	ereport(LOG,
			(errmsg("projection \"%s\" caught up at position %lld",
					rp->name, (long long) rp->position)));
}

/*
 * After the commit of a round: publish the positions reached (from rps,
 * which must live in the round's context, and never through rps[].def: the
 * registry may be reloaded by then) and flush our table statistics, which
 * a background worker must do itself, or autovacuum never learns of the
 * checkpoints and read-model rows we write.  pgstat_report_stat(false)
 * flushes at most once a second or so (PGSTAT_MIN_INTERVAL).
 */
void
projection_worker_publish(ProjectionRoundMember *rps, int nrps)
{
	int			j;

	for (j = 0; j < nrps; j++)
	{
		projection_publish_progress(projection_worker.dboid, rps[j].id, rps[j].position);
		if (rps[j].just_caught_up)
			worker_log_caught_up(&rps[j]);
	}
	pgstat_report_stat(false);
}
