/*-------------------------------------------------------------------------
 *
 * snapstates.h
 *	  A snapshot projection's batch being applied (snapapply.c), and the
 *	  reads and writes of its stored states (snapstates.c).
 *
 * IDENTIFICATION
 *	  src/snapstates.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SNAPSTATES_H
#define PROJECTION_SNAPSTATES_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "common/hashfn.h"

#include "snapfold.h"

/* one event of a batch */
typedef struct SnapshotEvent
{
	const char *sid;			/* its stream id's bytes (sid_len, not
								 * terminated) */
	int			sid_len;
	int			stream;			/* its stream's index in the batch */
	int64		position;
	int64		version;
	HeapTuple	row;			/* a row of projection.events, or NULL ... */
	Datum		datum;			/* ... and the event as a composite datum */
} SnapshotEvent;

/* one stream of a batch: its events and its stored state */
typedef struct SnapshotStream
{
	const char *sid;
	int			sid_len;
	int			first;			/* its events: order[first .. first + count) */
	int			count;
	int64		last_position;	/* of its latest event so far (grouping) */
	bool		unsorted;		/* its events came out of position order */
	bool		loaded;			/* a stored state was loaded: */
	Datum		state;
	bool		state_null;
	int64		position;
	int64		version;
} SnapshotStream;

/* the streams of a batch, by stream id */
typedef struct SnapshotKey
{
	const char *p;
	int			len;
} SnapshotKey;

typedef struct SnapshotStreamEntry
{
	SnapshotKey key;
	uint32		hash;
	char		status;
	int			stream;
} SnapshotStreamEntry;

#define SH_PREFIX snapstream
#define SH_ELEMENT_TYPE SnapshotStreamEntry
#define SH_KEY_TYPE SnapshotKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).p, (k).len)
#define SH_EQUAL(tb, a, b) ((a).len == (b).len && memcmp((a).p, (b).p, (a).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* a batch being applied */
typedef struct SnapshotBatch
{
	SnapshotDef def;
	SnapshotEvent *events;
	int			nevents;
	SnapshotStream *streams;
	int			nstreams;
	int		   *order;			/* event indexes, grouped by stream */
	int		   *sorted;			/* stream indexes, in stream order (bytewise) */
	snapstream_hash *hash;
	bool		fresh;			/* inline: new events of this transaction */
	bool		alone;			/* no other transaction writes these states */
	bool		via_sql;		/* given to _snapshot_apply (its statement run as SQL) */
	TupleDesc	events_desc;	/* projection.events' row type (rows only) */
} SnapshotBatch;

/* the states a batch changed, as the columns of the writes */
typedef struct SnapshotChanged
{
	int			n;
	Datum	   *ids;
	Datum	   *states;
	bool	   *nulls;
	Datum	   *versions;
	Datum	   *positions;
	bool	   *existing;		/* loaded (upsert), or new (insert) */
	int			nskipped;
	Datum	   *skipped;		/* events at or below their stored state */
} SnapshotChanged;

/* the writes: of the states loaded, of new ones, of new ones nobody else can create */
typedef enum SnapshotWrite
{
	SNAPSHOT_WRITE_LOADED,
	SNAPSHOT_WRITE_NEW,
	SNAPSHOT_WRITE_NEW_ALONE
} SnapshotWrite;

extern void projection_snapshot_load_states(SnapshotBatch *b, MemoryContext cxt);
extern void projection_snapshot_write(SnapshotDef *def, SnapshotChanged *changed,
									  SnapshotWrite kind);
extern void projection_snapshot_check_skipped(SnapshotDef *def, SnapshotChanged *changed);
extern void projection_snapshot_track_begin(int32 projection_id);
extern void projection_snapshot_track_end(bool release);
extern void projection_snapshot_track_written(SnapshotBatch *b, SnapshotChanged *changed);

#endif							/* PROJECTION_SNAPSTATES_H */
