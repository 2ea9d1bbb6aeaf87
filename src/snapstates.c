/*-------------------------------------------------------------------------
 *
 * snapstates.c
 *	  Snapshot projections: the stored states of a batch's streams, loaded
 *	  and written with one statement each (for snapapply.c), and the streams
 *	  an async rebuild has written.
 *
 * The tables are read and written as the bootstrap superuser with fixed
 * statements (kept plans).  Locking: inline, the states are loaded FOR
 * UPDATE, in stream order (so that concurrent inline batches lock in one
 * order), and stay locked until the write; an async projection's states
 * are written only by holders of its registry row (the worker's round, a
 * replay, retry_dead_letters), so they are loaded without locks ("alone")
 * and new ones are inserted without ON CONFLICT.
 *
 * IDENTIFICATION
 *	  src/snapstates.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "projection.h"
#include "snapfold.h"
#include "snapstates.h"
#include "spiutil.h"

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

static SPIPlanPtr write_plans[3] = {NULL, NULL, NULL};

/*
 * The writes' rows come from unnest() in the select list (a ProjectSet, the arrays
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
void
projection_snapshot_track_written(SnapshotBatch *b, SnapshotChanged *changed)
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
void
projection_snapshot_load_states(SnapshotBatch *b, MemoryContext cxt)
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
void
projection_snapshot_write(SnapshotDef *def, SnapshotChanged *changed, SnapshotWrite kind)
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
				 errdetail("A concurrent transaction created it first, with events inserted with explicit stream versions."),
				 errhint("Retry the transaction, or append through projection.append, which serializes the appends to a stream.")));
}

/*
 * Events at or below their stream's stored position are skipped as folded in
 * already.  A dead letter of the projection never was: it is one only
 * retry_dead_letters hands over, after later events of its stream were
 * folded.  Skipping it would report it applied and delete the dead letter,
 * so that nothing would say any more what the states lack: refuse it
 * (55000), which leaves it a dead letter.
 */
void
projection_snapshot_check_skipped(SnapshotDef *def, SnapshotChanged *changed)
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

