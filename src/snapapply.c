/*-------------------------------------------------------------------------
 *
 * snapapply.c
 *	  Snapshot projections: one batch of events folded into the stored
 *	  states.
 *
 * A snapshot projection's batch statement (snapshot.c) is
 *
 *		SELECT projection._snapshot_apply('name', array_agg(b)) FROM batch b
 *
 * and wherever batch statements run, batch.c recognises it and hands the
 * batch's rows here directly (projection_snapshot_apply_rows), without
 * running it: no tuplestore, no array of the events, no copy of a row but
 * the event datum the fold gets.  The SQL function _snapshot_apply
 * (snapshot.c) calls the same code with the array's elements.
 *
 * Per batch: group the events by stream (a hash table; each stream's
 * events in position order), load the stored states with one query
 * (locking them, in stream order), fold each stream's events through fmgr
 * (no SPI per event), and write the changed states with one upsert (those
 * that existed) and one INSERT (the new ones).  Each state remembers the
 * position and stream version of the last event folded into it: in a
 * replay (catch-up, rebuild, retry of a dead letter) events at or below
 * that position are skipped, so replaying events already applied changes
 * nothing.  Inline ("fresh"), the events are new ones of the appending
 * transaction: a stored state already at or past one (its position or its
 * version) means that a concurrent transaction, which inserted a later
 * event with an explicit stream version, folded it first; the event would
 * be lost, so the append fails with serialization_failure, to be retried.
 *
 * Locking: the states of the batch's streams are locked (FOR UPDATE, in
 * stream order, so concurrent inline batches lock in one order) from the
 * load to the write.  The tables are read and written as the bootstrap
 * superuser with fixed statements; the fold runs as the owner.
 *
 * IDENTIFICATION
 *	  src/snapapply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "handler.h"
#include "projection.h"
#include "snapapply.h"
#include "snapfold.h"
#include "spiutil.h"

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

/*
 * The streams an async rebuild has written so far, while it runs: the
 * rebuild emptied the projection's states and holds its registry row, so
 * every other stream has no state, and loading it can be skipped.  Set up
 * by projection_snapshot_track_begin (replay.c), forgotten at the end of
 * the replay or at its abort.  Streams written by a subtransaction that
 * rolled back stay in it: they are loaded, and found absent.
 */
typedef struct SnapshotTrack
{
	int32		projection_id;
	MemoryContext cxt;
	snapstream_hash *written;
	Size		bytes;			/* of the stream ids kept */
} SnapshotTrack;

static SnapshotTrack *track = NULL;

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

/*
 * Loading the states: locked, in stream order (inline: concurrent batches
 * lock in one order), or plainly where nobody else writes them ("alone").
 */
static SPIPlanPtr load_plans[2] = {NULL, NULL};
static const char *const load_sql[2] = {
	"SELECT s.stream_id, s.state, s.global_position, s.version "
	"FROM projection.snapshot_states s "
	"WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
	"AND s.stream_id OPERATOR(pg_catalog.=) ANY ($2) "
	"ORDER BY s.stream_id COLLATE \"C\" FOR UPDATE",
	"SELECT s.stream_id, s.state, s.global_position, s.version "
	"FROM projection.snapshot_states s "
	"WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
	"AND s.stream_id OPERATOR(pg_catalog.=) ANY ($2)"
};

/* the writes: of the states loaded, of new ones, of new ones nobody else can create */
typedef enum SnapshotWrite
{
	SNAPSHOT_WRITE_LOADED,
	SNAPSHOT_WRITE_NEW,
	SNAPSHOT_WRITE_NEW_ALONE
} SnapshotWrite;

static SPIPlanPtr write_plans[3] = {NULL, NULL, NULL};
/*
 * The rows come from unnest() in the select list (a ProjectSet, the arrays
 * walked in step), not in FROM: a function scan would first copy them into
 * a tuplestore.
 */
#define SNAPSHOT_WRITE_ROWS \
	"INSERT INTO projection.snapshot_states AS s " \
	"(projection_id, stream_id, state, version, global_position) " \
	"SELECT $1, pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), " \
	"pg_catalog.unnest($5)"
static const char *const write_sql[3] = {
	SNAPSHOT_WRITE_ROWS " ON CONFLICT (projection_id, stream_id) DO UPDATE "
	"SET state = excluded.state, version = excluded.version, "
	"global_position = excluded.global_position",
	SNAPSHOT_WRITE_ROWS " ON CONFLICT (projection_id, stream_id) DO NOTHING",
	SNAPSHOT_WRITE_ROWS
};

/* ---------------------------------------------------------------------
 * The statement
 * ---------------------------------------------------------------------
 */

/*
 * The batch statement of snapshot projection "name" (palloc'd), as
 * create_snapshot adds it; batch.c applies a statement equal to it
 * through projection_snapshot_apply_rows instead of running it.
 */
char *
projection_snapshot_statement(const char *name)
{
	return psprintf("SELECT projection._snapshot_apply(%s, pg_catalog.array_agg(b::projection.events)) FROM batch b",
					quote_literal_cstr(name));
}

/* ---------------------------------------------------------------------
 * Grouping
 * ---------------------------------------------------------------------
 */

static int
snapshot_stream_cmp(const void *a, const void *b, void *arg)
{
	SnapshotStream *streams = (SnapshotStream *) arg;
	const SnapshotStream *x = &streams[*(const int *) a];
	const SnapshotStream *y = &streams[*(const int *) b];
	int			c = memcmp(x->sid, y->sid, Min(x->sid_len, y->sid_len));

	if (c != 0)
		return c;
	return x->sid_len < y->sid_len ? -1 : (x->sid_len > y->sid_len ? 1 : 0);
}

static int
snapshot_position_cmp(const void *a, const void *b, void *arg)
{
	SnapshotEvent *events = (SnapshotEvent *) arg;
	int64		x = events[*(const int *) a].position;
	int64		y = events[*(const int *) b].position;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * Group the batch's events by stream: b->streams (in order of first
 * appearance, found through b->hash), b->order (each stream's events
 * together, in position order) and b->sorted (the streams in stream
 * order: bytewise, as COLLATE "C" orders them).  In the current context.
 */
static void
snapshot_group(SnapshotBatch *b)
{
	int			i;
	int			next = 0;

	b->hash = snapstream_create(CurrentMemoryContext, b->nevents, NULL);
	b->streams = palloc(sizeof(SnapshotStream) * b->nevents);
	b->nstreams = 0;
	for (i = 0; i < b->nevents; i++)
	{
		SnapshotEvent *e = &b->events[i];
		SnapshotKey key;
		SnapshotStreamEntry *ent;
		SnapshotStream *s;
		bool		found;

		key.p = e->sid;
		key.len = e->sid_len;
		ent = snapstream_insert(b->hash, key, &found);
		if (!found)
		{
			ent->stream = b->nstreams++;
			s = &b->streams[ent->stream];
			memset(s, 0, sizeof(*s));
			s->sid = e->sid;
			s->sid_len = e->sid_len;
		}
		else
			s = &b->streams[ent->stream];
		if (s->count > 0 && e->position < s->last_position)
			s->unsorted = true;
		s->last_position = e->position;
		s->count++;
		e->stream = ent->stream;
	}
	for (i = 0; i < b->nstreams; i++)
	{
		b->streams[i].first = next;
		next += b->streams[i].count;
		b->streams[i].count = 0;
	}
	b->order = palloc(sizeof(int) * Max(b->nevents, 1));
	for (i = 0; i < b->nevents; i++)
	{
		SnapshotStream *s = &b->streams[b->events[i].stream];

		b->order[s->first + s->count++] = i;
	}
	b->sorted = palloc(sizeof(int) * Max(b->nstreams, 1));
	for (i = 0; i < b->nstreams; i++)
	{
		SnapshotStream *s = &b->streams[i];

		if (s->unsorted)
			qsort_arg(b->order + s->first, s->count, sizeof(int), snapshot_position_cmp, b->events);
		b->sorted[i] = i;
	}
	qsort_arg(b->sorted, b->nstreams, sizeof(int), snapshot_stream_cmp, b->streams);
}

/* ---------------------------------------------------------------------
 * A rebuild's written streams
 * ---------------------------------------------------------------------
 */

/*
 * A replay of snapshot projection "projection_id" starts over states it
 * has emptied itself, and no other transaction writes them meanwhile (an
 * async projection's rebuild: replay.c, told so by rebuild.c): track the
 * streams it writes, in a context under the current one.
 */
void
projection_snapshot_track_begin(int32 projection_id)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot rebuild",
											  ALLOCSET_DEFAULT_SIZES);
	SnapshotTrack *t = MemoryContextAllocZero(cxt, sizeof(SnapshotTrack));

	t->projection_id = projection_id;
	t->cxt = cxt;
	t->written = snapstream_create(cxt, 1024, NULL);
	track = t;
}

/*
 * The replay ended ("release": free the tracking; at an abort its memory
 * goes with the aborted replay's, and only the pointer is forgotten).
 * Cannot fail.
 */
void
projection_snapshot_track_end(bool release)
{
	if (track != NULL && release)
		MemoryContextDelete(track->cxt);
	track = NULL;
}

/* Is the batch's stream s known to have no stored state (not written by the rebuild)? */
static bool
snapshot_known_absent(SnapshotBatch *b, SnapshotStream *s)
{
	SnapshotKey key;

	if (track == NULL || track->projection_id != b->def.id || !b->alone)
		return false;
	key.p = s->sid;
	key.len = s->sid_len;
	return snapstream_lookup(track->written, key) == NULL;
}

/*
 * The rebuild is about to write the batch's changed streams: remember them
 * (before the write, so that a write that fails half-way is remembered
 * too).  Beyond projection.batch_bytes of stream ids, tracking stops, and
 * every later batch loads its states.
 */
static void
snapshot_track_written(SnapshotBatch *b, SnapshotChanged *changed)
{
	int			i;

	if (track == NULL || track->projection_id != b->def.id)
		return;
	if (!b->alone)
	{
		projection_snapshot_track_end(true);	/* an unexpected writer: stop */
		return;
	}
	for (i = 0; i < changed->n; i++)
	{
		text	   *id = DatumGetTextPP(changed->ids[i]);
		SnapshotKey key;
		char	   *copy;
		bool		found;

		key.p = VARDATA_ANY(id);
		key.len = VARSIZE_ANY_EXHDR(id);
		if (snapstream_lookup(track->written, key) != NULL)
			continue;
		copy = MemoryContextAlloc(track->cxt, Max(key.len, 1));
		memcpy(copy, key.p, key.len);
		key.p = copy;
		(void) snapstream_insert(track->written, key, &found);
		track->bytes += key.len + 2 * sizeof(SnapshotStreamEntry);
	}
	if (track->bytes > PROJECTION_BATCH_BYTES)
		projection_snapshot_track_end(true);
}

/* ---------------------------------------------------------------------
 * Loading and writing the states
 * ---------------------------------------------------------------------
 */

/*
 * Load the stored states of the batch's streams into b->streams, the
 * states copied into "cxt"; none of the streams a rebuild knows to have
 * none (snapshot_known_absent).  Unless the batch is "alone" (no other
 * transaction writes these states now), they are locked until the write,
 * in stream order, so that concurrent inline batches take the locks in one
 * order.  Caller is connected to SPI.
 */
static void
snapshot_load_states(SnapshotBatch *b, MemoryContext cxt)
{
	Oid			types[2] = {INT4OID, TEXTARRAYOID};
	Datum		values[2];
	Datum	   *stream_ids = palloc(sizeof(Datum) * b->nstreams);
	int			nids = 0;
	uint64		i;

	for (i = 0; i < (uint64) b->nstreams; i++)
	{
		SnapshotStream *s = &b->streams[b->sorted[i]];

		if (!snapshot_known_absent(b, s))
			stream_ids[nids++] = PointerGetDatum(cstring_to_text_with_len(s->sid, s->sid_len));
	}
	if (nids == 0)
		return;
	values[0] = Int32GetDatum(b->def.id);
	values[1] = PointerGetDatum(construct_array(stream_ids, nids, TEXTOID, -1, false,
												TYPALIGN_INT));
	projection_snapshot_exec_plan(projection_kept_plan(&load_plans[b->alone], load_sql[b->alone],
													   2, types),
								  values, NULL, SPI_OK_SELECT, "loading snapshot states");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		text	   *id = DatumGetTextPP(SPI_getbinval(tup, desc, 1, &isnull));
		SnapshotKey key;
		SnapshotStreamEntry *ent;
		SnapshotStream *s;
		Datum		st;
		MemoryContext oldcxt;

		key.p = VARDATA_ANY(id);
		key.len = VARSIZE_ANY_EXHDR(id);
		ent = snapstream_lookup(b->hash, key);
		if (ent == NULL)
			elog(ERROR, "snapshot state of an unexpected stream loaded");
		s = &b->streams[ent->stream];
		s->loaded = true;
		st = SPI_getbinval(tup, desc, 2, &s->state_null);
		oldcxt = MemoryContextSwitchTo(cxt);
		s->state = s->state_null ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
		MemoryContextSwitchTo(oldcxt);
		s->position = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		s->version = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Write the changed states that were loaded (SNAPSHOT_WRITE_LOADED: an
 * upsert, which always updates them, through the primary key) or the new
 * ones, as one statement; nothing if there are none.  New states are
 * inserted with ON CONFLICT DO NOTHING (SNAPSHOT_WRITE_NEW): one that
 * another transaction created meanwhile (possible only inline, with
 * explicit stream versions in concurrent INSERTs; the INSERT waits for it
 * to commit) then fails with serialization_failure, to be retried, instead
 * of overwriting the other's state or losing this transaction's events.
 * Where no other transaction can write the projection's states (the
 * worker's round, a replay: SNAPSHOT_WRITE_NEW_ALONE), a plain INSERT:
 * without the check of the index before each row.
 */
static void
snapshot_write(SnapshotDef *def, SnapshotChanged *changed, SnapshotWrite kind)
{
	Oid			types[5] = {INT4OID, TEXTARRAYOID, JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[5];
	Datum	   *w_ids = palloc(sizeof(Datum) * Max(changed->n, 1));
	Datum	   *w_states = palloc(sizeof(Datum) * Max(changed->n, 1));
	bool	   *w_nulls = palloc(sizeof(bool) * Max(changed->n, 1));
	Datum	   *w_ver = palloc(sizeof(Datum) * Max(changed->n, 1));
	Datum	   *w_pos = palloc(sizeof(Datum) * Max(changed->n, 1));
	bool		existing = kind == SNAPSHOT_WRITE_LOADED;
	int			dims[1];
	int			lbs[1] = {1};
	int			m = 0;
	int			i;

	for (i = 0; i < changed->n; i++)
	{
		if (changed->existing[i] != existing)
			continue;
		w_ids[m] = changed->ids[i];
		w_states[m] = changed->states[i];
		w_nulls[m] = changed->nulls[i];
		w_ver[m] = changed->versions[i];
		w_pos[m] = changed->positions[i];
		m++;
	}
	if (m == 0)
		return;
	dims[0] = m;
	values[0] = Int32GetDatum(def->id);
	values[1] = PointerGetDatum(construct_array(w_ids, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_md_array(w_states, w_nulls, 1, dims, lbs,
												   JSONBOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(w_ver, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(w_pos, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	projection_snapshot_exec_plan(projection_kept_plan(&write_plans[kind], write_sql[kind], 5, types),
								  values, NULL, SPI_OK_INSERT, "writing snapshot states");
	if (kind == SNAPSHOT_WRITE_NEW && SPI_processed < (uint64) m)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not create the state of a stream in snapshot projection \"%s\"",
						def->name),
				 errdetail("A concurrent transaction created it first, with events inserted with explicit "
						   "stream versions."),
				 errhint("Retry the transaction, or append through projection.append, which "
						 "serializes the appends to a stream.")));
}

/*
 * Events at or below their stream's stored position are skipped as folded in
 * already.  A dead letter of the projection never was: it is one only
 * retry_dead_letters hands over, after later events of its stream were
 * folded.  Skipping it would report it applied and delete the dead letter,
 * so that nothing would say any more what the states lack: refuse it
 * (55000), which leaves it a dead letter.
 */
static void
snapshot_check_skipped(SnapshotDef *def, SnapshotChanged *changed)
{
	static SPIPlanPtr dead_plan = NULL;
	Oid			types[2] = {TEXTOID, INT8ARRAYOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;

	if (changed->nskipped == 0)
		return;
	values[0] = CStringGetTextDatum(def->name);
	values[1] = PointerGetDatum(construct_array(changed->skipped, changed->nskipped, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	projection_snapshot_exec_plan(projection_kept_plan(&dead_plan,
													   "SELECT pg_catalog.min(d.global_position) "
													   "FROM projection.dead_letters d "
													   "WHERE d.name OPERATOR(pg_catalog.=) $1 "
													   "AND d.global_position OPERATOR(pg_catalog.=) ANY ($2)",
													   2, types),
								  values, NULL, SPI_OK_SELECT, "reading dead letters");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot fold the event at position %lld into snapshot projection \"%s\"",
						(long long) DatumGetInt64(d), def->name),
				 errdetail("The stored state of its stream already includes later events."),
				 errhint("Rebuild the projection to fold every event in order.")));
}

/* ---------------------------------------------------------------------
 * Folding
 * ---------------------------------------------------------------------
 */

/*
 * Inline: the new event "e" of stream "s" comes at or before what its
 * state holds (position "pos", version "ver"), the stored state's if
 * "stored", else those of the statement's previous event of the stream.
 */
static void
snapshot_refuse_out_of_order(SnapshotDef *def, SnapshotStream *s, SnapshotEvent *e,
							 int64 pos, int64 ver, bool stored)
{
	char	   *sid = pnstrdup(s->sid, s->sid_len);

	if (stored)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("state of stream \"%s\" in snapshot projection \"%s\" already holds version %lld",
						sid, def->name, (long long) ver),
				 errdetail("The event at position %lld with version %lld comes before the state's last "
						   "event (position %lld): a concurrent transaction folded a later event of the "
						   "stream first, and folding this one now would fold the stream out of order.",
						   (long long) e->position, (long long) e->version, (long long) pos),
				 errhint("Retry the transaction, or append through projection.append, which "
						 "serializes the appends to a stream.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("events of stream \"%s\" are not in version order", sid),
			 errdetail("The event at position %lld has version %lld, after version %lld of the same "
					   "statement; inline snapshot projection \"%s\" folds in position order.",
					   (long long) e->position, (long long) e->version, (long long) ver, def->name),
			 errhint("Insert each stream's events in version order.")));
}

/*
 * Fold one stream's events after its stored position into its state (the
 * stored one, or the initial state), and add the state to *changed (copied
 * into "cxt") if an event was folded.
 */
static void
snapshot_fold_stream(SnapshotBatch *b, SnapshotStream *s, SnapshotFold *fold,
					 MemoryContext cxt, SnapshotChanged *changed)
{
	SnapshotDef *def = &b->def;
	Datum		state = s->loaded ? s->state : def->initial;
	bool		state_null = s->loaded ? s->state_null : false;
	int64		pos = s->loaded ? s->position : 0;
	int64		ver = s->loaded ? s->version : 0;
	bool		folded = false;
	int			k;

	for (k = s->first; k < s->first + s->count; k++)
	{
		SnapshotEvent *e = &b->events[b->order[k]];
		if (b->fresh && (e->position <= pos || e->version <= ver))
			snapshot_refuse_out_of_order(def, s, e, pos, ver, !folded);
		if (e->position <= pos)
		{
			/* folded in already (a replay), unless it is a dead letter */
			if (s->loaded && e->position <= s->position)
				changed->skipped[changed->nskipped++] = Int64GetDatum(e->position);
			continue;
		}
		if (e->row != NULL)
			projection_snapshot_fold_row(fold, &state, &state_null, e->row, b->events_desc);
		else
			projection_snapshot_fold_event(fold, &state, &state_null, e->datum);
		pos = e->position;
		ver = e->version;
		folded = true;
	}
	if (folded)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
		int			i = changed->n++;

		changed->ids[i] = PointerGetDatum(cstring_to_text_with_len(s->sid, s->sid_len));
		changed->nulls[i] = state_null;
		changed->states[i] = state_null ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(state));
		changed->versions[i] = Int64GetDatum(ver);
		changed->positions[i] = Int64GetDatum(pos);
		changed->existing[i] = s->loaded;
		MemoryContextSwitchTo(oldcxt);
	}
	projection_snapshot_fold_reset(fold);
}

/*
 * Fold every stream of the batch, in stream order, as the owner (its scope
 * is entered unless the caller already runs as the owner, restricted: the
 * batch statement's scope), collecting the changed states into *changed,
 * in "cxt".  The fold's errors propagate.
 */
static void
snapshot_fold_streams(SnapshotBatch *b, MemoryContext cxt, SnapshotChanged *changed)
{
	SnapshotFold fold;
	ProjectionOwnerScope scope;
	bool		in_scope;
	int			i;

	changed->n = 0;
	changed->ids = palloc(sizeof(Datum) * b->nstreams);
	changed->states = palloc(sizeof(Datum) * b->nstreams);
	changed->nulls = palloc(sizeof(bool) * b->nstreams);
	changed->versions = palloc(sizeof(Datum) * b->nstreams);
	changed->positions = palloc(sizeof(Datum) * b->nstreams);
	changed->existing = palloc(sizeof(bool) * b->nstreams);
	changed->nskipped = 0;
	changed->skipped = palloc(sizeof(Datum) * b->nevents);
	in_scope = !(GetUserId() == b->def.owner && InSecurityRestrictedOperation());
	if (in_scope)
		projection_snapshot_owner_enter(&scope, &b->def);
	projection_snapshot_fold_init(&fold, &b->def);
	for (i = 0; i < b->nstreams; i++)
		snapshot_fold_stream(b, &b->streams[b->sorted[i]], &fold, cxt, changed);
	if (in_scope)
		projection_owner_leave(&scope);
}

/* ---------------------------------------------------------------------
 * Applying a batch
 * ---------------------------------------------------------------------
 */

/*
 * Fold b's events (b->events, b->nevents; any order) into the stored
 * states of snapshot projection "name"; returns the number of states
 * written.  Raises 42704 / 42809 for a projection that does not exist or
 * is not a snapshot projection, 42501 for a caller without the owner's
 * privileges; the fold's errors propagate.  Connects to SPI itself; works
 * in a context of its own, deleted before it returns (b's arrays are the
 * caller's).
 */
static int64
snapshot_apply(const char *name, SnapshotBatch *b)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot batch",
											  ALLOCSET_DEFAULT_SIZES);
	SnapshotChanged changed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_snapshot_def_load(name, &b->def, cxt);
	if (!has_privs_of_role(GetUserId(), b->def.owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", name),
				 errdetail("Only the projection's own batch statement writes its states.")));
	changed.n = 0;
	if (b->nevents > 0)
	{
		MemoryContextSwitchTo(cxt);
		snapshot_group(b);
		snapshot_load_states(b, cxt);
		snapshot_fold_streams(b, cxt, &changed);
		snapshot_check_skipped(&b->def, &changed);
		snapshot_track_written(b, &changed);

		/* the states loaded (and locked) with one upsert, the new ones with one INSERT */
		snapshot_write(&b->def, &changed, SNAPSHOT_WRITE_LOADED);
		snapshot_write(&b->def, &changed, b->alone ? SNAPSHOT_WRITE_NEW_ALONE : SNAPSHOT_WRITE_NEW);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return changed.n;
}

/* Fill e's stream, position and version from the event row or datum "tup". */
static bool
snapshot_event_fields(SnapshotEvent *e, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;
	text	   *sid;

	d = heap_getattr(tup, Anum_events_global_position, desc, &isnull);
	if (isnull)
		return false;
	e->position = DatumGetInt64(d);
	d = heap_getattr(tup, Anum_events_stream_id, desc, &isnull);
	if (isnull)
		return false;
	sid = DatumGetTextPP(d);
	e->sid = VARDATA_ANY(sid);
	e->sid_len = VARSIZE_ANY_EXHDR(sid);
	d = heap_getattr(tup, Anum_events_stream_version, desc, &isnull);
	e->version = isnull ? 0 : DatumGetInt64(d);
	return true;
}

/*
 * Fold rows of projection.events (rows[0..nrows), as a table or a read of
 * PROJECTION_EVENT_COLUMNS gives them: heap tuples, not datums) into the
 * stored states of snapshot projection "name", as its batch statement
 * would; "fresh": they are new events of this transaction (inline).
 * "alone": no other transaction can write the projection's states now (an
 * async projection applied by a holder of its registry row: the worker's
 * round, a replay, retry_dead_letters), so its new states are inserted
 * without ON CONFLICT.  The rows must stay valid until it returns; they
 * are not changed.  Returns the number of states written.  Errors as
 * _snapshot_apply's.
 */
int64
projection_snapshot_apply_rows(const char *name, HeapTuple *rows, int nrows, bool fresh,
							   bool alone)
{
	SnapshotBatch b;
	int64		written;
	int			i;

	memset(&b, 0, sizeof(b));
	b.fresh = fresh;
	b.alone = alone && !fresh;
	b.events_desc = lookup_rowtype_tupdesc(projection_oids()->events_type, -1);
	b.events = palloc(sizeof(SnapshotEvent) * Max(nrows, 1));
	for (i = 0; i < nrows; i++)
	{
		SnapshotEvent *e = &b.events[b.nevents];

		if (HeapTupleHeaderGetNatts(rows[i]->t_data) != b.events_desc->natts)
			elog(ERROR, "an event row has %d columns, projection.events %d",
				 HeapTupleHeaderGetNatts(rows[i]->t_data), b.events_desc->natts);
		if (!snapshot_event_fields(e, rows[i], b.events_desc))
			continue;
		e->row = rows[i];
		b.nevents++;
	}
	written = snapshot_apply(name, &b);
	ReleaseTupleDesc(b.events_desc);
	return written;
}

/*
 * The same for events given as composite datums of projection.events
 * (the elements of _snapshot_apply's array; NULLs and events without a
 * position or a stream are left out), which the fold gets as they are.
 */
int64
projection_snapshot_apply_datums(const char *name, Datum *datums, bool *nulls, int n, bool fresh)
{
	SnapshotBatch b;
	TupleDesc	desc = lookup_rowtype_tupdesc(projection_oids()->events_type, -1);
	int			i;

	memset(&b, 0, sizeof(b));
	b.fresh = fresh;
	b.events = palloc(sizeof(SnapshotEvent) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		SnapshotEvent *e = &b.events[b.nevents];
		HeapTupleHeader th;
		HeapTupleData tmp;

		if (nulls[i])
			continue;
		th = DatumGetHeapTupleHeader(datums[i]);
		tmp.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tmp.t_self);
		tmp.t_tableOid = InvalidOid;
		tmp.t_data = th;
		if (!snapshot_event_fields(e, &tmp, desc))
			continue;
		e->row = NULL;
		e->datum = PointerGetDatum(th);
		b.nevents++;
	}
	ReleaseTupleDesc(desc);
	return snapshot_apply(name, &b);
}
