/*-------------------------------------------------------------------------
 *
 * trigger.c
 *	  C triggers on projection.events: position assignment, inline
 *	  projections, the append-only guard, and registry invalidation; plus the
 *	  per-transaction state of an appending backend and its callbacks.
 *
 * Ordering rules this file keeps (the async worker relies on them, see
 * worker.c):
 *
 * 1. Xid first.  Before an appending transaction draws its first position,
 *    it takes its top-level xid and publishes it in its own entry of
 *    ProjectionAppenders (then a full memory barrier); only then does it call
 *    nextval on projection.events_global_position_seq (CACHE 1).  After the
 *    draw it publishes the lowest position it holds (min_pos).  So any
 *    transaction holding a position <= L, where L is a last_value read by a
 *    worker, was visible in ProjectionAppenders when the worker looked after
 *    reading L, unless it had already ended.
 *
 * 2. The entry is cleared in the COMMIT/ABORT transaction callbacks, which
 *    run after ProcArrayEndTransaction(): once a worker sees it cleared, a
 *    snapshot taken afterwards sees the transaction's commit.  Those callbacks
 *    must not fail: they only store to shared memory and set latches.
 *
 * 3. A transaction that appended cannot be prepared (two-phase commit): its
 *    entry would be cleared at PREPARE while it could still commit.
 *
 * 4. Rolled-back subtransactions.  Positions are tracked per subtransaction
 *    (AppendLevel).  When one aborts, its positions are dead for good (no
 *    snapshot ever sees its rows), so min_pos is raised to the lowest
 *    position that survives, or the entry is cleared if none does: a
 *    transaction whose appends all rolled back holds no projection back
 *    while it stays open.  A later append publishes the xid again (rule 1).
 *    appender_forget_level() gives the argument in full.
 *
 * Stream versions: appends that need a version (append(), or INSERT without
 * stream_version) take a transaction-level advisory lock on the stream, so
 * concurrent appends to one stream serialize and never share a version; the
 * current version is read from the (stream_id, stream_version) index with
 * SnapshotSelf (committed rows and all of our own, those of the current
 * command too), and remembered for the rest of the transaction (we hold the
 * lock until it ends; a subtransaction abort forgets it).
 *
 * Inline projections run in the AFTER INSERT statement trigger, row by row in
 * position order.  A handler that appends events re-enters the trigger; the
 * nested call only queues its events, tagged with their subtransaction (a
 * rollback takes them out again), and the outermost call applies them after
 * its own, so every projection still sees global_position order and never an
 * event that was rolled back.
 *
 * projection.append() returns the position the trigger gave its own row
 * (ProjectionAppendCapture), not the last one this backend drew.
 *
 * Events inserted without these triggers (session_replication_role =
 * replica, logical replication) are invisible to the async workers; the
 * worker warns about them (projection_warn_untracked_events).
 *
 * IDENTIFICATION
 *	  src/trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "catalog.h"
#include "projection.h"
#include "shmem.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(projection_position_trigger);
PG_FUNCTION_INFO_V1(projection_inline_trigger);
PG_FUNCTION_INFO_V1(projection_append_only_trigger);
PG_FUNCTION_INFO_V1(projection_registry_changed_trigger);
PG_FUNCTION_INFO_V1(projection_restored_trigger);

/* advisory lock space of stream locks (pg_advisory_* use 1 and 2) */
#define PROJECTION_STREAM_LOCK_FIELD4 0x504A

/* ---- per-transaction state of this backend ---- */
static bool callbacks_registered = false;
static bool appended_in_xact = false;	/* our appender entry is published */
static bool launcher_request_pending = false;
static bool registry_changed_in_xact = false;	/* the registry trigger fired */
static bool registry_change_committing = false;	/* counted in the generation */

/* the stream version cache: a context of its own under TopTransactionContext */
static HTAB *stream_versions = NULL;
static MemoryContext stream_versions_cxt = NULL;

/* rows of the current statement, counted by the BEFORE trigger */
static int64 stmt_assigned_rows = 0;
static int64 stmt_imported_rows = 0;
static int64 stmt_imported_max = 0;

/* the capture of projection.append() in progress (trigger.h) */
static ProjectionAppendCapture append_capture = {false, 0};

/* projection.create() is inserting its registry row (not a restore) */
bool		projection_creating = false;

/*
 * Appends per (sub)transaction level.  A level is pushed by the first append
 * (or statement-counter change) of a subtransaction, so that a transaction
 * that never appends pays nothing for its subtransactions; the list runs from
 * the innermost level outwards and always ends at the current subtransaction
 * or one of its ancestors.  At subtransaction commit a level is merged into
 * (or relabelled as) its parent's; at abort it is dropped: the positions it
 * drew belong to rows nobody will ever see, so they stop holding back the
 * async projections (see appender_forget_level), and the statement counters
 * go back to what they were when the subtransaction first touched them.
 */
typedef struct AppendLevel
{
	SubTransactionId subid;
	int64		min_pos;		/* lowest position drawn at this level or
								 * committed into it; 0 if none */
	int64		saved_assigned; /* statement counters at the level's start */
	int64		saved_imported;
	int64		saved_imported_max;
	struct AppendLevel *outer;
} AppendLevel;

static AppendLevel *append_levels = NULL;	/* in TopTransactionContext */

/*
 * Inline re-entrancy: events appended while inline handlers run are queued
 * for the outermost inline trigger, tagged with the subtransaction that
 * inserted them, so that a rolled-back subtransaction takes its events out
 * of the queue again.
 */
typedef struct PendingEvent
{
	SubTransactionId subid;
	HeapTuple	tuple;
} PendingEvent;

static int	inline_depth = 0;
static List *inline_pending = NIL;	/* of PendingEvent, in TopTransactionContext */

typedef struct StreamVersionEntry
{
	uint64		hash;			/* key */
	int64		version;
	char	   *stream_id;		/* to tell hash collisions apart */
} StreamVersionEntry;

static void
reset_xact_state(void)
{
	/* everything below lived in TopTransactionContext, which goes away */
	appended_in_xact = false;
	launcher_request_pending = false;
	registry_changed_in_xact = false;
	stream_versions = NULL;
	stream_versions_cxt = NULL;
	stmt_assigned_rows = 0;
	stmt_imported_rows = 0;
	stmt_imported_max = 0;
	append_levels = NULL;
	inline_depth = 0;
	inline_pending = NIL;
	projection_creating = false;
}

static void
appender_clear(void)
{
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		pg_atomic_write_u32(&a->xid, InvalidTransactionId);
		pg_atomic_write_u64(&a->min_pos, 0);
		pg_memory_barrier();
	}
}

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
 * Transaction callback.  COMMIT and ABORT run after the transaction has left
 * the proc array and must not fail: plain shared-memory stores and SetLatch
 * only.
 */
static void
projection_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (appended_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_PROJECTION_PREPARE_APPENDED),
						 errmsg("cannot PREPARE a transaction that has appended events"),
						 errdetail("Async projections could not order its events safely.")));
			if (registry_changed_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_PROJECTION_PREPARE_APPENDED),
						 errmsg("cannot PREPARE a transaction that has changed the projection registry"),
						 errdetail("Sessions could not tell when the change becomes visible.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			/* before the commit becomes visible (shmem.c, registry generations) */
			if (registry_changed_in_xact && !registry_change_committing)
			{
				projection_registry_change_begin(MyDatabaseId);
				registry_change_committing = true;
			}
			break;
		case XACT_EVENT_COMMIT:
			registry_change_end();
			projection_registry_at_abort();	/* nothing runs any more */
			if (appended_in_xact)
			{
				appender_clear();
				projection_wake_database_worker(MyDatabaseId);
				projection_feed_wake(MyDatabaseId);
			}
			if (launcher_request_pending && ProjectionShared != NULL)
			{
				pg_atomic_fetch_add_u32(&ProjectionShared->rescan_gen, 1);
				pg_atomic_write_u32(&ProjectionShared->rescan, 1);
				projection_wake_launcher();
				projection_wake_database_worker(MyDatabaseId);
			}
			reset_xact_state();
			break;
		case XACT_EVENT_ABORT:
			registry_change_end();
			if (appended_in_xact)
			{
				/* a worker may be waiting for our positions: they are dead now */
				appender_clear();
				projection_wake_database_worker(MyDatabaseId);
				projection_feed_wake(MyDatabaseId);
			}
			reset_xact_state();
			projection_registry_at_abort();
			projection_replay_at_abort(InvalidSubTransactionId);
			break;
		case XACT_EVENT_PREPARE:
			reset_xact_state();
			break;
		default:
			break;
	}
}

static void projection_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
										SubTransactionId parentSubid, void *arg);

void
projection_register_xact_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(projection_xact_callback, NULL);
		RegisterSubXactCallback(projection_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

/*
 * First append of the transaction (or the first since every earlier one was
 * rolled back): take the xid and publish it before any position is drawn
 * (rule 1).
 */
static void
appender_begin(void)
{
	TransactionId xid;

	if (appended_in_xact)
		return;
	projection_register_xact_callbacks();
	xid = GetTopTransactionId();
	appended_in_xact = true;
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		pg_atomic_write_u64(&a->min_pos, 0);
		pg_atomic_write_u32(&a->dboid, MyDatabaseId);
		pg_write_barrier();
		pg_atomic_write_u32(&a->xid, xid);
		pg_memory_barrier();
	}
}

/* Publish the lowest position this transaction holds. */
static void
appender_note_position(int64 position)
{
	if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];
		uint64		cur = pg_atomic_read_u64(&a->min_pos);

		if (cur == 0 || (uint64) position < cur)
		{
			pg_atomic_write_u64(&a->min_pos, (uint64) position);
			pg_write_barrier();
		}
	}
}

/*
 * The append level of the current subtransaction, pushed if this is its
 * first append (or counter change).  Nothing of the subtransaction has
 * touched our state before, so the counters saved here are those it started
 * with.
 */
static AppendLevel *
append_level_current(void)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	AppendLevel *level;

	if (append_levels != NULL && append_levels->subid == subid)
		return append_levels;
	projection_register_xact_callbacks();
	level = MemoryContextAllocZero(TopTransactionContext, sizeof(AppendLevel));
	level->subid = subid;
	level->saved_assigned = stmt_assigned_rows;
	level->saved_imported = stmt_imported_rows;
	level->saved_imported_max = stmt_imported_max;
	level->outer = append_levels;
	append_levels = level;
	return level;
}

/* Note a position drawn (or imported) by the current subtransaction. */
static void
append_level_note_position(int64 position)
{
	AppendLevel *level = append_level_current();

	if (level->min_pos == 0 || position < level->min_pos)
		level->min_pos = position;
	appender_note_position(position);
}

/*
 * A subtransaction that drew positions has aborted: its positions are dead.
 * Publish the lowest position the transaction still holds, or clear our
 * entry if it holds none, so that a transaction whose appends were all
 * rolled back holds back no projection while it stays open.
 *
 * Why this is safe for a worker (worker.c, "Which events are safe"): a
 * position the aborted subtransaction drew belongs to a row whose xmin is
 * that subtransaction (or one of its children), which no snapshot taken
 * before or after now will ever see: the worker may treat it as dead, as it
 * treats the positions of an aborted transaction.  A worker that read the
 * old, lower value (or the xid just before we cleared it) only stops
 * earlier, which is conservative; one that reads the value between the two
 * stores of appender_clear sees a published xid with no position yet, which
 * lets no gap pass.  Every surviving position is still covered: it is at
 * least the new value.  If the transaction appends again, appender_begin
 * publishes the xid again before it draws (rule 1 holds anew).  A worker
 * that saw no entry between the two can only have read an L below the new
 * position, drawn after the xid was published again.
 *
 * Called from the subtransaction callback: plain shared-memory stores and
 * SetLatch only.
 */
static void
appender_forget_level(void)
{
	AppendLevel *level;
	int64		min_pos = 0;

	for (level = append_levels; level != NULL; level = level->outer)
		if (level->min_pos > 0 && (min_pos == 0 || level->min_pos < min_pos))
			min_pos = level->min_pos;

	if (!appended_in_xact)
		return;
	if (min_pos == 0)
	{
		appender_clear();
		appended_in_xact = false;
		/* a worker may be waiting for our positions: they are dead now */
		projection_wake_database_worker(MyDatabaseId);
		projection_feed_wake(MyDatabaseId);
	}
	else if (ProjectionAppenders != NULL && MyBackendId != InvalidBackendId &&
			 MyBackendId <= ProjectionNumAppenders)
	{
		ProjectionAppender *a = &ProjectionAppenders[MyBackendId - 1];

		if (pg_atomic_read_u64(&a->min_pos) < (uint64) min_pos)
		{
			pg_atomic_write_u64(&a->min_pos, (uint64) min_pos);
			pg_memory_barrier();
			projection_wake_database_worker(MyDatabaseId);
			projection_feed_wake(MyDatabaseId);
		}
	}
}

/* Forget every remembered stream version (and free the cache). */
static void
stream_cache_forget(void)
{
	if (stream_versions_cxt != NULL)
		MemoryContextDelete(stream_versions_cxt);
	stream_versions_cxt = NULL;
	stream_versions = NULL;
}

/*
 * Subtransaction end.
 *
 * At abort: the stream locks taken inside it are released and the versions
 * it assigned are gone, so forget every remembered version (the next append
 * reads the stream again under its lock); its positions are dead (above);
 * the events it queued for inline projections are gone, and so are the rows
 * it counted for a statement in progress.  A replay running in it has
 * ended.
 *
 * At commit: what it did now belongs to its parent.
 */
static void
projection_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		stream_cache_forget();
		projection_creating = false;
		if (append_levels != NULL && append_levels->subid == mySubid)
		{
			AppendLevel *level = append_levels;

			stmt_assigned_rows = level->saved_assigned;
			stmt_imported_rows = level->saved_imported;
			stmt_imported_max = level->saved_imported_max;
			append_levels = level->outer;
			pfree(level);
		}
		/* also after an append that failed before it noted its position */
		appender_forget_level();
		foreach(lc, inline_pending)
		{
			PendingEvent *pe = lfirst(lc);

			if (pe->subid == mySubid)
			{
				heap_freetuple(pe->tuple);
				pfree(pe);
				inline_pending = foreach_delete_current(inline_pending, lc);
			}
		}
		projection_replay_at_abort(mySubid);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		if (append_levels != NULL && append_levels->subid == mySubid)
		{
			AppendLevel *level = append_levels;
			AppendLevel *outer = level->outer;

			if (outer != NULL && outer->subid == parentSubid)
			{
				if (level->min_pos > 0 &&
					(outer->min_pos == 0 || level->min_pos < outer->min_pos))
					outer->min_pos = level->min_pos;
				append_levels = outer;
				pfree(level);
			}
			else
				level->subid = parentSubid; /* the parent's counters are ours */
		}
		foreach(lc, inline_pending)
		{
			PendingEvent *pe = lfirst(lc);

			if (pe->subid == mySubid)
				pe->subid = parentSubid;
		}
	}
}

bool
projection_appended_in_xact(void)
{
	return appended_in_xact;
}

void
projection_append_capture_begin(ProjectionAppendCapture *saved)
{
	*saved = append_capture;
	append_capture.active = true;
	append_capture.position = 0;
}

int64
projection_append_capture_end(const ProjectionAppendCapture *saved)
{
	int64		position = append_capture.position;

	append_capture = *saved;
	return position;
}

/* Ask the launcher, at commit, to look for this database's worker again. */
void
projection_request_launcher_at_commit(void)
{
	projection_register_xact_callbacks();
	launcher_request_pending = true;
}

static StreamVersionEntry *
stream_cache_lookup(const char *stream_id, int len, bool create)
{
	uint64		hash = hash_bytes_extended((const unsigned char *) stream_id, len, 0);
	StreamVersionEntry *entry;
	bool		found;

	if (stream_versions == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		/* our callbacks forget the cache when the transaction ends */
		projection_register_xact_callbacks();
		stream_versions_cxt = AllocSetContextCreate(TopTransactionContext,
													"projection stream versions",
													ALLOCSET_DEFAULT_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(StreamVersionEntry);
		ctl.hcxt = stream_versions_cxt;
		stream_versions = hash_create("projection stream versions", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(stream_versions, &hash, create ? HASH_ENTER : HASH_FIND, &found);
	if (entry == NULL)
		return NULL;
	if (found && (strlen(entry->stream_id) != (size_t) len ||
				  memcmp(entry->stream_id, stream_id, len) != 0))
	{
		/* collision: treat as absent; the caller overwrites it */
		if (!create)
			return NULL;
		found = false;
	}
	if (!found)
	{
		entry->version = -1;
		entry->stream_id = MemoryContextAlloc(stream_versions_cxt, len + 1);
		memcpy(entry->stream_id, stream_id, len);
		entry->stream_id[len] = '\0';
	}
	return entry;
}

/*
 * Read the highest committed (or own) version of a stream from the index.
 *
 * With SnapshotSelf: it sees what the latest MVCC snapshot would (every
 * committed row; other appenders of the stream hold its lock, so theirs are
 * committed or dead), and also the rows of the current command, inserted
 * before this one.  So one INSERT may give some rows of a stream their
 * versions and leave the next ones to us: their rows are in the index
 * already when our row's trigger runs, and an MVCC snapshot would not see
 * them.  (Remembering every explicit version instead would cost memory for
 * every stream of a bulk load or restore, which gives all versions.)
 */
static int64
stream_lookup_version(text *stream_id)
{
	const ProjectionOids *o = projection_oids();
	Relation	heap;
	Relation	index;
	Snapshot	snapshot = SnapshotSelf;
	ScanKeyData key;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int64		version = 0;

	heap = table_open(o->events, AccessShareLock);
	index = index_open(o->stream_index, AccessShareLock);

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, PointerGetDatum(stream_id));
	key.sk_collation = index->rd_indcollation[0];

	scan = projection_index_beginscan(heap, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	slot = table_slot_create(heap, NULL);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		version = DatumGetInt64(slot_getattr(slot, Anum_events_stream_version, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return version;
}

/*
 * The current version of a stream (0 if it has no events), with the
 * stream's advisory lock held until the end of the transaction, so that the
 * caller can append version + 1 without racing other appenders.
 */
int64
projection_stream_version(text *stream_id)
{
	const char *data = VARDATA_ANY(stream_id);
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	StreamVersionEntry *entry;
	LOCKTAG		tag;
	uint64		hash;

	entry = stream_cache_lookup(data, len, false);
	if (entry != NULL && entry->version >= 0)
		return entry->version;

	hash = hash_bytes_extended((const unsigned char *) data, len, 0);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (hash >> 32), (uint32) hash,
						 PROJECTION_STREAM_LOCK_FIELD4);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	entry = stream_cache_lookup(data, len, true);
	entry->version = stream_lookup_version(stream_id);
	return entry->version;
}

/* Remember a version this transaction wrote, if it holds the stream's lock. */
static void
stream_note_version(text *stream_id, int64 version)
{
	StreamVersionEntry *entry = stream_cache_lookup(VARDATA_ANY(stream_id),
													VARSIZE_ANY_EXHDR(stream_id),
													false);

	if (entry != NULL && entry->version >= 0 && version > entry->version)
		entry->version = version;
}

/*
 * BEFORE INSERT FOR EACH ROW on projection.events (fires first, by name).
 *
 * Assigns global_position from the sequence after taking the xid (rule 1),
 * and stream_version when it is NULL.  A row that brings its own
 * global_position is an import of already-projected history (pg_restore of
 * a dump, for instance): allowed to the owner of projection.events only,
 * its position is kept and inline projections do not run for it.
 */
Datum
projection_position_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const ProjectionOids *o;
	TupleDesc	desc;
	HeapTuple	tuple;
	Datum		values[Natts_events];
	bool		nulls[Natts_events];
	Datum		repl_values[Natts_events];
	bool		repl_nulls[Natts_events];
	bool		repl[Natts_events];
	int64		position;
	text	   *stream_id;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired BEFORE INSERT FOR EACH ROW",
						"projection._position")));

	o = projection_oids();
	if (RelationGetRelid(td->tg_relation) != o->events)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" may only be used on projection.events",
						"projection._position")));

	desc = RelationGetDescr(td->tg_relation);
	tuple = td->tg_trigtuple;
	if (desc->natts != Natts_events)
		elog(ERROR, "projection.events has %d columns, expected %d", desc->natts, Natts_events);
	heap_deform_tuple(tuple, desc, values, nulls);

	memset(repl, false, sizeof(repl));
	memset(repl_nulls, false, sizeof(repl_nulls));

	/* report NULLs here, before a position is drawn for nothing */
	if (nulls[Anum_events_stream_id - 1] || nulls[Anum_events_event_type - 1])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
						nulls[Anum_events_stream_id - 1] ? "stream_id" : "event_type",
						RelationGetRelationName(td->tg_relation)),
				 errtable(td->tg_relation)));
	stream_id = DatumGetTextPP(values[Anum_events_stream_id - 1]);

	if (!nulls[Anum_events_global_position - 1])
	{
		if (!superuser() && !pg_class_ownercheck(o->events, GetUserId()))
			ereport(ERROR,
					(errcode(ERRCODE_GENERATED_ALWAYS),
					 errmsg("cannot insert a value into column \"global_position\" of projection.events"),
					 errdetail("Positions are assigned by the extension; only the owner of projection.events may import events with their positions."),
					 errhint("Leave global_position out of the column list.")));
		position = DatumGetInt64(values[Anum_events_global_position - 1]);
		if (position <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("global_position must be positive")));
		appender_begin();
		append_level_note_position(position);
		stmt_imported_rows++;
		if (position > stmt_imported_max)
			stmt_imported_max = position;
	}
	else
	{
		appender_begin();
		position = nextval_internal(o->sequence, false);
		append_level_note_position(position);
		stmt_assigned_rows++;
		repl[Anum_events_global_position - 1] = true;
		repl_values[Anum_events_global_position - 1] = Int64GetDatum(position);
	}
	/* an append's own row is the first its statement inserts */
	if (append_capture.active && append_capture.position == 0)
		append_capture.position = position;

	if (nulls[Anum_events_stream_version - 1])
	{
		int64		version = projection_stream_version(stream_id) + 1;

		stream_note_version(stream_id, version);
		repl[Anum_events_stream_version - 1] = true;
		repl_values[Anum_events_stream_version - 1] = Int64GetDatum(version);
	}
	else
		stream_note_version(stream_id, DatumGetInt64(values[Anum_events_stream_version - 1]));

	if (nulls[Anum_events_metadata - 1])
	{
		repl[Anum_events_metadata - 1] = true;
		repl_values[Anum_events_metadata - 1] =
			DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	}

	return PointerGetDatum(heap_modify_tuple(tuple, desc, repl_values, repl_nulls, repl));
}

/*
 * Apply one event to every running inline projection that wants it.
 * "event" is a projection.events composite datum.
 */
static void
inline_apply_event(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
				   Datum event, int64 position, const char *event_type)
{
	int			i;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (!def->is_inline || def->state != PROJECTION_RUNNING)
			continue;
		if (!projection_wants(def, event_type))
			continue;
		projection_owner_enter(scope, def);
		projection_apply(def, event, event_type, position);
		CommandCounterIncrement();
	}
}

static void
inline_apply_tuple(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
				   HeapTuple tuple, TupleDesc desc)
{
	bool		isnull;
	int64		position;
	char	   *event_type;
	Datum		event;

	position = DatumGetInt64(heap_getattr(tuple, Anum_events_global_position, desc, &isnull));
	event_type = TextDatumGetCString(heap_getattr(tuple, Anum_events_event_type, desc, &isnull));
	event = heap_copy_tuple_as_datum(tuple, desc);
	inline_apply_event(registry, scope, event, position, event_type);
}

/*
 * AFTER INSERT FOR EACH STATEMENT on projection.events, with the inserted
 * rows as transition table: runs the inline projections, event by event in
 * position order, inside the appending transaction.  A handler error aborts
 * the append.
 */
Datum
projection_inline_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	ProjectionRegistry *registry;
	Tuplestorestate *ts;
	TupleDesc	desc;
	int64		imported;
	int64		assigned;
	int64		imported_max;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired AFTER INSERT FOR EACH STATEMENT with a transition table",
						"projection._inline")));

	imported = stmt_imported_rows;
	assigned = stmt_assigned_rows;
	imported_max = stmt_imported_max;
	if (imported != 0 || assigned != 0)
	{
		/* a rollback of this subtransaction brings the counts back */
		(void) append_level_current();
		stmt_imported_rows = stmt_assigned_rows = stmt_imported_max = 0;
	}

	if (imported > 0)
	{
		if (assigned > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cannot mix rows with and without global_position in one statement")));

		/* keep the sequence ahead of imported positions */
		if (imported_max > projection_sequence_last_value())
			DirectFunctionCall2(setval_oid, ObjectIdGetDatum(projection_oids()->sequence),
								Int64GetDatum(imported_max));
		return PointerGetDatum(NULL);
	}

	registry = projection_registry_acquire();
	if (registry->ninline_running == 0)
	{
		projection_registry_release(registry);
		return PointerGetDatum(NULL);
	}

	ts = td->tg_newtable;
	desc = RelationGetDescr(td->tg_relation);

	if (inline_depth > 0)
	{
		/*
		 * A handler appended: queue the events for the outermost call, tagged
		 * with this subtransaction, which inserted them (the statement ran in
		 * it), so that the subtransaction callback can drop them if it rolls
		 * back.
		 */
		MemoryContext oldcxt;
		TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
		SubTransactionId subid = GetCurrentSubTransactionId();

		tuplestore_rescan(ts);
		while (tuplestore_gettupleslot(ts, true, false, slot))
		{
			bool		should_free;
			HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
			PendingEvent *pe;

			oldcxt = MemoryContextSwitchTo(TopTransactionContext);
			pe = palloc(sizeof(PendingEvent));
			pe->subid = subid;
			pe->tuple = heap_copytuple(tup);
			inline_pending = lappend(inline_pending, pe);
			MemoryContextSwitchTo(oldcxt);
			if (should_free)
				heap_freetuple(tup);
		}
		ExecDropSingleTupleTableSlot(slot);
		projection_registry_release(registry);
		return PointerGetDatum(NULL);
	}

	/*
	 * If a handler fails, the error may be caught by a savepoint and the
	 * transaction go on: the depth and the queue must not stay behind.
	 */
	inline_depth++;
	PG_TRY();
	{
		{
			ProjectionOwnerScope scope;
			MemoryContext event_cxt;
			MemoryContext oldcxt;
			TupleTableSlot *slot;

			memset(&scope, 0, sizeof(scope));
			event_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection inline event",
											  ALLOCSET_DEFAULT_SIZES);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");

			slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
			tuplestore_rescan(ts);
			while (tuplestore_gettupleslot(ts, true, false, slot))
			{
				bool		should_free;
				HeapTuple	tup;

				oldcxt = MemoryContextSwitchTo(event_cxt);
				tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
				inline_apply_tuple(registry, &scope, tup, desc);
				MemoryContextSwitchTo(oldcxt);
				MemoryContextReset(event_cxt);
			}
			ExecDropSingleTupleTableSlot(slot);

			/*
			 * Events appended by handlers, in the order they were appended.
			 * Those of subtransactions that rolled back are gone from the
			 * queue; the others' subtransactions have all ended (a handler
			 * cannot return inside one), committed into ours.
			 */
			while (inline_pending != NIL)
			{
				PendingEvent *pe = linitial(inline_pending);

				Assert(pe->subid == GetCurrentSubTransactionId());
				inline_pending = list_delete_first(inline_pending);
				oldcxt = MemoryContextSwitchTo(event_cxt);
				inline_apply_tuple(registry, &scope, pe->tuple, desc);
				MemoryContextSwitchTo(oldcxt);
				MemoryContextReset(event_cxt);
				heap_freetuple(pe->tuple);
				pfree(pe);
			}

			projection_owner_leave(&scope);
			if (SPI_finish() != SPI_OK_FINISH)
				elog(ERROR, "SPI_finish failed");
			MemoryContextDelete(event_cxt);
		}
	}
	PG_FINALLY();
	{
		inline_depth--;
		if (inline_depth == 0)
		{
			/* left over only after an error */
			ListCell   *lc;

			foreach(lc, inline_pending)
			{
				PendingEvent *pe = lfirst(lc);

				heap_freetuple(pe->tuple);
				pfree(pe);
			}
			list_free(inline_pending);
			inline_pending = NIL;
		}
		projection_registry_release(registry);
	}
	PG_END_TRY();
	return PointerGetDatum(NULL);
}

/*
 * Events that did not pass the position trigger: rows inserted with
 * session_replication_role = replica (a logical replication subscriber's
 * apply worker runs so) or with the triggers disabled.  Their positions were
 * not drawn from the sequence, and the worker reads only up to the
 * sequence's last_value (worker.c), so async projections never apply them.
 * We cannot make that safe here, but we can make it loud: the worker calls
 * this in its rounds, with the round's snapshot active, and it warns once
 * each time such events appear.
 *
 * The highest visible position is read first, last_value after it: a
 * position drawn from the sequence is at most last_value from the moment it
 * is drawn (and an import moves the sequence past its rows before they
 * commit), so a visible row above a later last_value did not come through
 * the trigger.  No false alarm under concurrent appends.
 */
#define PROJECTION_EVENTS_PKEY "events_pkey"

void
projection_warn_untracked_events(void)
{
	static bool warned = false;
	const ProjectionOids *o = projection_oids();
	Oid			pkey = get_relname_relid(PROJECTION_EVENTS_PKEY, o->schema);
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int64		max_pos = 0;
	int64		last_value;

	if (!OidIsValid(pkey) || !ActiveSnapshotSet())
		return;
	heap = table_open(o->events, AccessShareLock);
	index = index_open(pkey, AccessShareLock);
	scan = projection_index_beginscan(heap, index, GetActiveSnapshot(), 0, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	slot = table_slot_create(heap, NULL);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		max_pos = DatumGetInt64(slot_getattr(slot, Anum_events_global_position, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);

	last_value = projection_sequence_last_value();
	if (max_pos <= last_value)
	{
		warned = false;
		return;
	}
	if (warned)
		return;
	warned = true;
	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("projection.events holds events that async projections will not apply"),
			 errdetail("Positions up to %lld are in the store, but the sequence %s has handed out only up to %lld. "
					   "Rows inserted with session_replication_role = replica (for example by a logical replication subscription) "
					   "or with the extension's triggers disabled bypass the trigger that assigns positions, "
					   "and async projections read only positions the sequence has handed out.",
					   (long long) max_pos, "projection.events_global_position_seq",
					   (long long) last_value),
			 errhint("Append events with the triggers enabled.  To have async projections apply these events, "
					 "move the sequence past them: SELECT pg_catalog.setval('projection.events_global_position_seq', "
					 "max(global_position)) FROM projection.events;")));
}

/*
 * BEFORE UPDATE OR DELETE / BEFORE TRUNCATE FOR EACH STATEMENT: the event
 * store is append-only.
 */
Datum
projection_append_only_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const char *op;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" was not called by trigger manager",
						"projection._append_only")));

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		op = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		op = "DELETE";
	else
		op = "TRUNCATE";

	ereport(ERROR,
			(errcode(ERRCODE_PROJECTION_APPEND_ONLY),
			 errmsg("cannot %s projection.events: the event store is append-only", op),
			 errhint("Append a compensating event with projection.append() instead.")));
	return PointerGetDatum(NULL);	/* keep compiler quiet */
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
	projection_register_xact_callbacks();
	registry_changed_in_xact = true;
	return PointerGetDatum(NULL);
}

/*
 * BEFORE INSERT row trigger on projection.projections (version 1.1): a
 * registry row that does not come from projection.create() is being
 * restored (pg_restore, or psql with a plain dump).  It is marked with the
 * restoring session (its pid and start time), and the worker leaves the
 * projection alone until that session has ended, so that it does not apply
 * events to read-model tables whose rows are still to be restored.
 */
Datum
projection_restored_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	int			cols[2];
	Datum		values[2];
	bool		nulls[2] = {false, false};

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
	if (cols[0] <= 0 || cols[1] <= 0)
		elog(ERROR, "projection.projections has no restored_pid or restored_at column");
	values[0] = Int32GetDatum(MyProcPid);
	values[1] = TimestampTzGetDatum(MyStartTimestamp);
	return PointerGetDatum(heap_modify_tuple_by_cols(td->tg_trigtuple, desc, 2, cols, values, nulls));
}
