/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  Published progress and what sessions see of it: the shared progress
 *	  hash (publish, forget, report, the condition variable waiters sleep
 *	  on), projection.status's C part, the worker list, and the launcher
 *	  notification of CREATE EXTENSION.  projection.wait() is wait.c's.
 *
 * Locking: the progress hash (allocated by shmem.c) is read and written
 * only under ProjectionShared->lock, never across anything that can raise.
 * Workers publish after each commit; rebuilds publish their progress while
 * they run.  Waiters sleep on progress_cvs[dboid %
 * PROJECTION_REGISTRY_GEN_SLOTS], broadcast after each publish.  The
 * status view reads the registry and the checkpoints in one query as the
 * bootstrap superuser, with the statement's snapshot, and takes no lock of
 * its own.
 *
 * IDENTIFICATION
 *	  src/progress.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"

#include "catalog.h"
#include "checkpoint.h"
#include "progress.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_notify_launcher);
PG_FUNCTION_INFO_V1(projection_worker_info);
PG_FUNCTION_INFO_V1(projection_status);

/* ---------------------------------------------------------------------
 * Internal helpers
 * ---------------------------------------------------------------------
 */

/*
 * _notify_launcher(), called by the install script: until 1.3 it had the
 * launcher start this database's workers.  Workers now start on demand
 * (pool.c), when a projection is created or events are appended for one,
 * so a fresh installation asks for nothing.
 */
Datum
projection_notify_launcher(PG_FUNCTION_ARGS)
{
	PG_RETURN_VOID();
}

/* _worker_info(): progress of this database's projections from shared memory */
Datum
projection_worker_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (ProjectionShared != NULL)
		projection_progress_report(MyDatabaseId, rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * projection.status
 * ---------------------------------------------------------------------
 */

/*
 * Positions after the checkpoint that the status view reads to count a
 * projection's lag exactly.  A projection further behind gets an estimate
 * from that window (lag_exact false), so that reading the view costs at
 * most this many index entries per lagging projection, however long the
 * store or the lag.
 */
#define PROJECTION_STATUS_LAG_WINDOW 100

/*
 * One row per projection (the columns of projection.status), in one query
 * as the bootstrap superuser, with jit off: the view is read by monitoring
 * every few seconds, and an LLVM compile costs more than the query (with
 * thousands of projections the planner's estimate passes jit_above_cost).
 *
 * lag_events counts the events after the checkpoint that the projection
 * handles (its handler's event_types, or every type, plus the types of its
 * statements), exactly within PROJECTION_STATUS_LAG_WINDOW positions; past
 * that, the window's count is extrapolated to the last visible event.
 * lag_seconds is the age of the oldest of them (of the first event after
 * the checkpoint when the window holds none it handles).
 *
 * last_error quotes event data: it is NULL unless the caller is a member of
 * the owner's role or may SELECT projection.events.  This function masks it
 * itself (as the caller: a view runs functions as its user), so calling it
 * directly shows no more than the view.
 */
Datum
projection_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		reads_events;
	int			nest;
	uint64		i;
	Oid			save_userid;
	int			save_sec_context;
	int			rc;
	const char *ck = projection_checkpoint_sql();
	/* does the projection take its event_types: a handler function or batch statements */
	const char *takes_types = OidIsValid(get_relname_relid("batch_handlers", projection_oids()->schema)) ?
		"p.handler IS NOT NULL OR EXISTS (SELECT FROM projection.batch_handlers b "
		"WHERE b.projection_id OPERATOR(pg_catalog.=) p.id)" : "p.handler IS NOT NULL";

	InitMaterializedSRF(fcinfo, 0);
	reads_events = pg_class_aclcheck(projection_oids()->events, GetUserId(), ACL_SELECT) == ACLCHECK_OK;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute(psprintf(
							  "SELECT p.name, p.mode, "
							  "CASE WHEN w.rebuild_total OPERATOR(pg_catalog.>) 0 THEN 'rebuilding' ELSE p.state END, "
							  "CASE WHEN f.live THEN t.top ELSE f.ck END, "
							  "CASE WHEN f.live OR f.ck OPERATOR(pg_catalog.>=) t.top THEN 0::bigint "
							  "     WHEN t.top OPERATOR(pg_catalog.<=) (f.ck OPERATOR(pg_catalog.+) %d) THEN l.n "
							  "     WHEN f.all_types THEN l.n OPERATOR(pg_catalog.+) ((t.top OPERATOR(pg_catalog.-) f.ck) OPERATOR(pg_catalog.-) %d) "
							  "     ELSE pg_catalog.round((l.n::numeric OPERATOR(pg_catalog.*) (t.top OPERATOR(pg_catalog.-) f.ck)) OPERATOR(pg_catalog./) %d)::bigint END, "
							  "CASE WHEN f.live OR f.ck OPERATOR(pg_catalog.>=) t.top THEN 0::double precision "
							  "     ELSE COALESCE(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) "
							  "          COALESCE(l.first_at, CASE WHEN t.top OPERATOR(pg_catalog.>) (f.ck OPERATOR(pg_catalog.+) %d) THEN l.any_first_at END)), 0) END, "
							  "p.last_error, p.last_error_sqlstate, p.last_error_position, p.handler, p.event_types, "
							  "p.tables, p.on_error, p.owner, w.rebuild_done, w.rebuild_total, "
							  "%s, "
							  "f.live OR t.top OPERATOR(pg_catalog.<=) (f.ck OPERATOR(pg_catalog.+) %d) "
							  "FROM projection.projections p "
							  "CROSS JOIN (SELECT COALESCE(pg_catalog.max(global_position), 0) AS top FROM projection.events) t "
							  "LEFT JOIN projection._worker_info() w ON w.projection_id OPERATOR(pg_catalog.=) p.id "
							  "CROSS JOIN LATERAL (SELECT %s AS ck, "
							  "  p.mode OPERATOR(pg_catalog.=) 'inline' AND p.state OPERATOR(pg_catalog.=) 'running' AS live, "
							  "  (%s) AND p.event_types IS NULL AS all_types, "
							  "  COALESCE(CASE WHEN %s THEN p.event_types END, '{}'::text[]) OPERATOR(pg_catalog.||) "
							  "  ARRAY(SELECT h.event_type FROM projection.handlers h WHERE h.projection_id OPERATOR(pg_catalog.=) p.id) AS types) f "
							  "LEFT JOIN LATERAL (SELECT "
							  "  pg_catalog.count(*) FILTER (WHERE f.all_types OR e.event_type OPERATOR(pg_catalog.=) ANY (f.types)) AS n, "
							  "  pg_catalog.min(e.recorded_at) FILTER (WHERE f.all_types OR e.event_type OPERATOR(pg_catalog.=) ANY (f.types)) AS first_at, "
							  "  pg_catalog.min(e.recorded_at) AS any_first_at "
							  "  FROM projection.events e "
							  "  WHERE NOT f.live AND f.ck OPERATOR(pg_catalog.<) t.top "
							  "  AND e.global_position OPERATOR(pg_catalog.>) f.ck "
							  "  AND e.global_position OPERATOR(pg_catalog.<=) LEAST(f.ck OPERATOR(pg_catalog.+) %d, t.top)) l ON true",
							  PROJECTION_STATUS_LAG_WINDOW, PROJECTION_STATUS_LAG_WINDOW,
							  PROJECTION_STATUS_LAG_WINDOW, PROJECTION_STATUS_LAG_WINDOW,
							  projection_checkpoint_saved_at_sql(),
							  PROJECTION_STATUS_LAG_WINDOW, ck, takes_types, takes_types,
							  PROJECTION_STATUS_LAG_WINDOW),
					 true, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, SPI_OK_SELECT, "reading the status");

	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[18];
		bool		nulls[18];
		int			k;
		bool		isnull;
		Oid			owner;

		for (k = 0; k < 18; k++)
			values[k] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, k + 1, &nulls[k]);
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 14, &isnull));
		/* column 7, last_error, can quote event data (review D9) */
		if (!reads_events && !has_privs_of_role(GetUserId(), owner))
			nulls[6] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	AtEOXact_GUC(true, nest);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Published progress (the shared progress hash, under ProjectionShared->lock)
 * ---------------------------------------------------------------------
 */

/*
 * The progress entry of a projection, created if missing (applied = -1,
 * nothing published yet).  Caller holds ProjectionShared->lock exclusively.
 * NULL if the hash is full (projection.max_projections): progress is then
 * simply not published.
 */
static ProjectionProgress *
progress_entry(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;
	ProjectionProgress *entry;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;
	entry = hash_search(ProjectionProgressHash, &key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		entry->applied = -1;
		entry->rebuild_done = 0;
		entry->rebuild_total = 0;
	}
	return entry;
}

/*
 * Publish a projection's committed checkpoint and wake every waiter.  Call
 * only after the checkpoint's transaction has committed.
 */
void
projection_publish_progress(Oid dboid, int32 projection_id, int64 applied)
{
	ProjectionProgress *entry;

	if (ProjectionShared == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	entry = progress_entry(dboid, projection_id);
	if (entry != NULL)
		entry->applied = applied;
	LWLockRelease(ProjectionShared->lock);

	ConditionVariableBroadcast(projection_progress_cv(dboid));
}

/* The condition variable projection.wait() sleeps on in a database. */
ConditionVariable *
projection_progress_cv(Oid dboid)
{
	return &ProjectionShared->progress_cvs[dboid % PROJECTION_REGISTRY_GEN_SLOTS];
}

/*
 * A projection's published checkpoint, or -1 if none is published (or no
 * shared memory).  A cheap test for waiters woken by another projection's
 * commit: they look at the registry only when this (or the registry
 * generation) moved.
 */
int64
projection_progress_applied(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;
	ProjectionProgress *entry;
	int64		applied = -1;

	if (ProjectionShared == NULL)
		return -1;
	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	entry = hash_search(ProjectionProgressHash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		applied = entry->applied;
	LWLockRelease(ProjectionShared->lock);
	return applied;
}

/* Publish the progress of a running rebuild (0/0 when none runs). */
void
projection_publish_rebuild(Oid dboid, int32 projection_id, int64 done, int64 total)
{
	ProjectionProgress *entry;

	if (ProjectionShared == NULL)
		return;
	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	entry = progress_entry(dboid, projection_id);
	if (entry != NULL)
	{
		entry->rebuild_done = done;
		entry->rebuild_total = total;
	}
	LWLockRelease(ProjectionShared->lock);
}

/* Forget a dropped projection's entry, so that the hash does not fill up. */
void
projection_forget_progress(Oid dboid, int32 projection_id)
{
	ProjectionProgressKey key;

	if (ProjectionShared == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.projection_id = projection_id;

	LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
	hash_search(ProjectionProgressHash, &key, HASH_REMOVE, NULL);
	LWLockRelease(ProjectionShared->lock);
}

/*
 * Emit (projection_id, applied, rebuild_done, rebuild_total) rows for one
 * database into a materialized SRF tuplestore.  Copies the entries under the
 * lock, then builds tuples without it.
 */
void
projection_progress_report(Oid dboid, Tuplestorestate *store, TupleDesc desc)
{
	HASH_SEQ_STATUS status;
	ProjectionProgress *entry;
	ProjectionProgress *copies;
	int			n = 0;
	int			i;

	copies = palloc(sizeof(ProjectionProgress) * projection_max_projections);
	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	hash_seq_init(&status, ProjectionProgressHash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dboid == dboid && n < projection_max_projections)
			copies[n++] = *entry;
	}
	LWLockRelease(ProjectionShared->lock);

	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = Int32GetDatum(copies[i].key.projection_id);
		values[1] = Int64GetDatum(copies[i].applied);
		nulls[1] = copies[i].applied < 0;
		values[2] = Int64GetDatum(copies[i].rebuild_done);
		values[3] = Int64GetDatum(copies[i].rebuild_total);
		tuplestore_putvalues(store, desc, values, nulls);
	}
	pfree(copies);
}
