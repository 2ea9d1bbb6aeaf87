/*-------------------------------------------------------------------------
 *
 * streams.c
 *	  Stream versions: the stream's lock, its current version, and the
 *	  versions this transaction remembers.
 *
 * Appends that need a version (append(), or INSERT without stream_version)
 * take a transaction-level advisory lock on the stream, so concurrent
 * appends to one stream serialize and never share a version; the current
 * version is read from the (stream_id, stream_version) index with
 * SnapshotSelf (committed rows and all of our own, those of the current
 * command too), and remembered for the rest of the transaction (we hold the
 * lock until it ends; a subtransaction abort forgets it).
 *
 * Locking: the stream lock (advisory, ExclusiveLock, field 4
 * PROJECTION_STREAM_LOCK_FIELD4) until the end of the transaction;
 * AccessShareLock on projection.events and its stream index while the
 * version is read.  The cache is per transaction, in a context under
 * TopTransactionContext, and cleared through events.c's end-of-transaction
 * calls (xact.c).
 *
 * IDENTIFICATION
 *	  src/streams.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "common/hashfn.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "compat.h"
#include "projection.h"
#include "streams.h"

/* advisory lock space of stream locks (pg_advisory_* use 1 and 2) */
#define PROJECTION_STREAM_LOCK_FIELD4 0x504A

/* ---- per-transaction state of this backend, reset at its end ---- */

/* the stream version cache: a context of its own under TopTransactionContext */
static HTAB *stream_versions = NULL;
static MemoryContext stream_versions_cxt = NULL;

typedef struct StreamVersionEntry
{
	uint64		hash;			/* key */
	int64		version;
	char	   *stream_id;		/* to tell hash collisions apart */
} StreamVersionEntry;

/* Forget every remembered stream version (and free the cache). */
void
projection_stream_versions_forget(void)
{
	if (stream_versions_cxt != NULL)
		MemoryContextDelete(stream_versions_cxt);
	stream_versions_cxt = NULL;
	stream_versions = NULL;
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
		/* forgotten when the transaction ends (projection_events_at_eoxact) */
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
void
projection_stream_note_version(text *stream_id, int64 version)
{
	StreamVersionEntry *entry = stream_cache_lookup(VARDATA_ANY(stream_id),
													VARSIZE_ANY_EXHDR(stream_id),
													false);

	if (entry != NULL && entry->version >= 0 && version > entry->version)
		entry->version = version;
}

/* Transaction end: the cache lived in TopTransactionContext, now gone. */
void
projection_streams_at_eoxact(void)
{
	stream_versions = NULL;
	stream_versions_cxt = NULL;
}
