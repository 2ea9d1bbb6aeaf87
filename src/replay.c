/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  Catch-up and rebuild: replaying the stored events through one
 *	  projection's handlers in the caller's transaction (inline catch-up at
 *	  create and resume, projection.rebuild() in rebuild.c), and emptying
 *	  its tables.  A replay reads its events in chunks; replaychunk.c
 *	  applies each one.
 *
 * A replay runs user code as the projection's owner (handler.c).  An inline
 * replay locks out appenders first (projection_lock_out_appenders); an async
 * rebuild keeps the projection's registry row locked until commit, so the
 * worker leaves it alone, and stops at the safe horizon (horizon.c).  The
 * rebuilding projection is published in shared memory
 * (projection_publish_rebuild) and unpublished at commit or at the abort of
 * the (sub)transaction running the replay (projection_replay_at_abort).
 *
 * IDENTIFICATION
 *	  src/replay.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batch.h"
#include "eventread.h"
#include "replaychunk.h"
#include "handler.h"
#include "horizon.h"
#include "inline.h"
#include "progress.h"
#include "pool.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "snapshot.h"
#include "snapstates.h"
#include "spiutil.h"

/*
 * The projection whose replay this backend is running, and the
 * (sub)transaction running it, for abort cleanup.
 */
static int32 replaying_projection = 0;
static SubTransactionId replaying_subid = InvalidSubTransactionId;

/* seconds between progress NOTICEs of long replays */
#define PROJECTION_PROGRESS_INTERVAL_MS 5000

/* ---------------------------------------------------------------------
 * Replay (inline catch-up and rebuild)
 * ---------------------------------------------------------------------
 */

/* events the last replay (under on_error 'skip') recorded as dead letters */
static int64 replay_skipped = 0;

/* the next replay starts over states its caller emptied: projection_replay_expect_empty */
static bool replay_next_from_empty = false;

/* The number of events the last replay in this backend dead-lettered. */
int64
projection_replay_skipped(void)
{
	return replay_skipped;
}

/* events per batch of a replay */
#define REPLAY_BATCH_ROWS 1000

/* how a replay reads its events: a plan over (after, upto], as the superuser */
typedef struct ReplayRead
{
	SPIPlanPtr	plan;
	int			nargs;
	Oid			types[4];
	Datum		values[4];
	int			batch_rows;
	Oid			save_userid;	/* the caller's identity, restored after each read */
	int			save_sec_context;
} ReplayRead;

/*
 * Prepare the read of the projection's events in (from, upto] (its event
 * types only), in batches of batch_rows, as the bootstrap superuser (the
 * caller may lack SELECT on the events).  The plan is the caller's to free.
 */
static void
replay_read_begin(ReplayRead *rd, ProjectionDef *def, int64 from, int64 upto)
{
	Datum		filter = projection_type_filter(def);

	rd->nargs = filter == (Datum) 0 ? 3 : 4;
	rd->types[0] = INT8OID;
	rd->types[1] = INT8OID;
	rd->types[2] = INT8OID;
	rd->types[3] = TEXTARRAYOID;
	rd->batch_rows = REPLAY_BATCH_ROWS;
	if (def->nbatch_statements > 0)
		rd->batch_rows = Max(REPLAY_BATCH_ROWS, projection_replay_batch_size);
	rd->values[0] = Int64GetDatum(from);
	rd->values[1] = Int64GetDatum(upto);
	rd->values[2] = Int64GetDatum(rd->batch_rows);
	rd->values[3] = filter;

	GetUserIdAndSecContext(&rd->save_userid, &rd->save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   rd->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rd->plan = SPI_prepare(psprintf("SELECT " PROJECTION_EVENT_COLUMNS " FROM projection.events e "
									"WHERE e.global_position OPERATOR(pg_catalog.>) $1 "
									"AND e.global_position OPERATOR(pg_catalog.<=) $2 %s"
									"ORDER BY e.global_position LIMIT $3",
									rd->nargs == 3 ? "" : "AND e.event_type OPERATOR(pg_catalog.=) ANY ($4) "),
						   rd->nargs, rd->types);
	if (rd->plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SetUserIdAndSecContext(rd->save_userid, rd->save_sec_context);
}

/* The next batch after position "after", as the superuser, into "cxt". */
static void
replay_read_next(ReplayRead *rd, int64 after, MemoryContext cxt, ProjectionEventRows *rows)
{
	rd->values[0] = Int64GetDatum(after);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   rd->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	projection_read_events(rd->plan, rd->nargs, rd->types, rd->values, rd->batch_rows,
						   PROJECTION_BATCH_BYTES, cxt, rows);
	SetUserIdAndSecContext(rd->save_userid, rd->save_sec_context);
}

/*
 * A replay's progress, in positions (the events of other types count as
 * passed): a NOTICE every PROJECTION_PROGRESS_INTERVAL_MS, and in shared
 * memory after every chunk.
 */
static void
replay_report_progress(ProjectionDef *def, int64 done, int64 total, TimestampTz start,
					   TimestampTz *last_report)
{
	if (TimestampDifferenceExceeds(*last_report, GetCurrentTimestamp(),
								   PROJECTION_PROGRESS_INTERVAL_MS))
	{
		TimestampTz now = GetCurrentTimestamp();
		double		secs = (double) (now - start) / 1000000.0;
		double		rate = secs > 0 ? done / secs : 0;

		ereport(NOTICE,
				(errmsg("projection \"%s\": %lld of %lld events replayed (%.0f events/s, about %.0f s left)",
						def->name, (long long) done, (long long) total, rate,
						rate > 0 ? (total - done) / rate : 0)));
		*last_report = now;
	}
	projection_publish_rebuild(MyDatabaseId, def->id, done, total);
}

/*
 * The next replay (the caller's very next call, projection_replay_events)
 * is an async projection's rebuild, over the read model it has just
 * emptied, with its registry row locked: a snapshot projection's states
 * then need no loading but those the replay itself wrote (snapapply.c
 * tracks them).
 */
void
projection_replay_expect_empty(void)
{
	replay_next_from_empty = true;
}

/*
 * Apply every event in (from, upto] that the projection handles to it, in
 * position order, in this transaction, as the projection's owner, reading
 * events with the active snapshot (the caller pushes one taken after it made
 * sure no event in that range can still appear, so no gap needs watching and
 * only the handled event types are read).  Reports progress with NOTICEs
 * every few seconds and in shared memory.  Returns the number of events
 * replayed (applied) and sets *last to the last position read (from if none).
 * Caller is connected to SPI.
 *
 * The events are read in batches of at most 1000 (more for batch
 * statements) that hold at most projection.batch_bytes (at least one event
 * each), each batch after the last position of the one before: a cursor's
 * fetch would hold a whole fetch of events of any size.  Every batch reads
 * with the same active snapshot, so they see exactly what one cursor would.
 * Each chunk goes the way on_error and batch statements say
 * (replaychunk.c).
 */
int64
projection_replay_events(ProjectionDef *def, int64 from, int64 upto, int64 *last)
{
	ReplayRead	rd;
	MemoryContext batch_cxt;
	MemoryContext event_cxt;
	int64		total = upto - from;
	int64		replayed = 0;
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz last_report = start;

	bool		from_empty = replay_next_from_empty;

	replay_next_from_empty = false;
	*last = from;
	replay_skipped = 0;
	replay_read_begin(&rd, def, from, upto);
	event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection replay event",
									  ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection replay batch",
									  ALLOCSET_DEFAULT_SIZES);
	replaying_projection = def->id;
	replaying_subid = GetCurrentSubTransactionId();
	projection_publish_rebuild(MyDatabaseId, def->id, 0, total);
	if (from_empty && from == 0 && !def->is_inline && projection_batch_is_snapshot(def))
		projection_snapshot_track_begin(def->id);

	for (;;)
	{
		ProjectionEventRows rows;

		replay_read_next(&rd, *last, batch_cxt, &rows);
		if (rows.ntuples == 0)
			break;
		replayed += projection_replay_chunk(def, &rows, event_cxt, &replay_skipped);
		*last = projection_event_row_position(rows.tuples[rows.ntuples - 1], rows.tupdesc);
		MemoryContextReset(batch_cxt);
		replay_report_progress(def, *last - from, total, start, &last_report);
	}
	projection_snapshot_track_end(true);
	SPI_freeplan(rd.plan);
	MemoryContextDelete(batch_cxt);
	MemoryContextDelete(event_cxt);
	projection_publish_rebuild(MyDatabaseId, def->id, 0, 0);
	replaying_projection = 0;
	return replayed;
}

/*
 * Replay events for an inline projection after
 * projection_lock_out_appenders(): with a snapshot taken after the lock, so
 * that it sees every committed event, up to the last one in the store, which
 * *last is set to (from if none is after it).
 */
int64
projection_replay_inline(ProjectionDef *def, int64 from, int64 *last)
{
	int64		replayed;
	bool		isnull;
	Datum		max;
	int64		upto;

	PushActiveSnapshot(GetTransactionSnapshot());
	projection_extension_exec("SELECT pg_catalog.max(global_position) FROM projection.events",
							  0, NULL, NULL, NULL, true, SPI_OK_SELECT);
	max = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	upto = isnull ? from : Max(from, DatumGetInt64(max));
	replayed = projection_replay_events(def, from, upto, last);
	*last = upto;
	PopActiveSnapshot();
	return replayed;
}

/*
 * Abort of the transaction, or of the subtransaction "subid" (a cancelled or
 * failed rebuild or catch-up, maybe inside a savepoint or an EXCEPTION
 * block): the projection is no longer rebuilding.  A subtransaction that
 * aborts inside a handler while the replay goes on is not the replay's.
 * Called from the abort callbacks, after LWLocks were released; takes our
 * LWLock briefly and cannot fail.
 */
void
projection_replay_at_abort(SubTransactionId subid)
{
	if (subid == InvalidSubTransactionId)
		replay_next_from_empty = false;
	if (replaying_projection != 0 &&
		(subid == InvalidSubTransactionId || subid == replaying_subid))
	{
		projection_publish_rebuild(MyDatabaseId, replaying_projection, 0, 0);
		replaying_projection = 0;
		replaying_subid = InvalidSubTransactionId;
		projection_snapshot_track_end(false);
	}
}

/* ---------------------------------------------------------------------
 * projection.rebuild
 * ---------------------------------------------------------------------
 */

/*
 * The projection's tables as an oid[] datum.
 */
static Datum
tables_array(ProjectionDef *def)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(def->ntables, 1));
	int			i;

	for (i = 0; i < def->ntables; i++)
		elems[i] = ObjectIdGetDatum(def->tables[i]);
	return PointerGetDatum(construct_array(elems, def->ntables, OIDOID,
										   sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * The foreign keys that reference the projection's tables, as edges
 * (*from)[i] references (*to)[i]; returns their number.  One from a table
 * the projection does not own refuses the rebuild before anything is
 * emptied: emptying would cascade to that table (ON DELETE CASCADE or SET
 * NULL), or fail half-way.  Connected to SPI; the edges in the current
 * context.
 */
static int
empty_tables_foreign_keys(ProjectionDef *def, Oid **from, Oid **to)
{
	Oid			types[1] = {OIDARRAYOID};
	Datum		values[1];
	int			nedges;
	int			rc;

	values[0] = tables_array(def);
	rc = SPI_execute_with_args("SELECT c.conrelid, c.confrelid, c.conrelid OPERATOR(pg_catalog.=) ANY ($1), "
							   "c.conname::pg_catalog.text, "
							   "c.confrelid::pg_catalog.regclass::pg_catalog.text, "
							   "c.conrelid::pg_catalog.regclass::pg_catalog.text "
							   "FROM pg_catalog.pg_constraint c "
							   "WHERE c.contype OPERATOR(pg_catalog.=) 'f' "
							   "AND c.conparentid OPERATOR(pg_catalog.=) 0 "
							   "AND c.conrelid OPERATOR(pg_catalog.<>) c.confrelid "
							   "AND c.confrelid OPERATOR(pg_catalog.=) ANY ($1) "
							   "ORDER BY c.oid",
							   1, types, values, NULL, true, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "looking for foreign keys");
	*from = palloc(sizeof(Oid) * Max(SPI_processed, 1));
	*to = palloc(sizeof(Oid) * Max(SPI_processed, 1));
	for (nedges = 0; nedges < (int) SPI_processed; nedges++)
	{
		HeapTuple	tup = SPI_tuptable->vals[nedges];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot rebuild projection \"%s\": its table %s is referenced by foreign key \"%s\" of table %s",
							def->name, SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 4),
							SPI_getvalue(tup, desc, 6)),
					 errdetail("A rebuild empties the projection's tables, which would delete from or fail on a table the projection does not own."),
					 errhint("Drop the constraint, or create the projection again with table %s among its tables.",
							 SPI_getvalue(tup, desc, 6))));
		(*from)[nedges] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		(*to)[nedges] = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	}
	return nedges;
}

/*
 * The next table to empty: the last one not referenced by a table still to
 * be emptied, or, in a cycle, the last one left.
 */
static int
empty_tables_next(ProjectionDef *def, const bool *done, const Oid *from, const Oid *to,
				  int nedges)
{
	int			pick = -1;
	int			i,
				k;

	for (i = def->ntables - 1; i >= 0 && pick < 0; i--)
	{
		bool		referenced = false;

		if (done[i])
			continue;
		for (k = 0; k < nedges && !referenced; k++)
		{
			int			j;

			if (to[k] != def->tables[i])
				continue;
			for (j = 0; j < def->ntables; j++)
				if (!done[j] && j != i && def->tables[j] == from[k])
					referenced = true;
		}
		if (!referenced)
			pick = i;
	}
	if (pick < 0)				/* a cycle: reverse order */
		for (i = def->ntables - 1; i >= 0 && pick < 0; i--)
			if (!done[i])
				pick = i;
	return pick;
}

/* DELETE every row of one of the projection's tables (as the caller is). */
static void
empty_table(ProjectionDef *def, Oid relid)
{
	char	   *relname = get_rel_name(relid);
	char	   *nspname;
	int			rc;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %u of projection \"%s\" does not exist",
						relid, def->name)));
	nspname = get_namespace_name(get_rel_namespace(relid));
	rc = SPI_execute(psprintf("DELETE FROM %s",
							  quote_qualified_identifier(nspname, relname)),
					 false, 0);
	projection_spi_check(rc, SPI_OK_DELETE, "emptying a read-model table");
}

/*
 * Empty a projection's tables with DELETE, as its owner.  DELETE, not
 * TRUNCATE: readers keep seeing the old rows (MVCC) until this transaction
 * commits, and are never blocked.  A table is emptied after the tables of
 * the projection that reference it with a foreign key (in reverse order of
 * "tables" otherwise, and for cycles).
 */
void
projection_empty_tables(ProjectionDef *def)
{
	ProjectionOwnerScope scope;
	Oid		   *from;			/* edge i: from[i] references to[i] */
	Oid		   *to;
	int			nedges;
	bool	   *done = palloc0(sizeof(bool) * Max(def->ntables, 1));
	int			ndone;

	/* a snapshot projection's read model is its states (snapshot.c) */
	projection_snapshot_forget(def->id);

	nedges = empty_tables_foreign_keys(def, &from, &to);
	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, def);
	for (ndone = 0; ndone < def->ntables; ndone++)
	{
		int			pick = empty_tables_next(def, done, from, to, nedges);

		empty_table(def, def->tables[pick]);
		done[pick] = true;
	}
	projection_owner_leave(&scope);
}
