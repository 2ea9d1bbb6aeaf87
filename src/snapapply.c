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
 * running it: no tuplestore, no array of the events, no copy of a row (a
 * PL/pgSQL fold gets each row as an expanded record over it, snapfold.c).
 * The SQL function _snapshot_apply (snapshot.c) calls the same code with
 * the array's elements.
 *
 * Per batch: group the events by stream (a hash table; each stream's
 * events in position order), load the stored states with one query,
 * fold each stream's events through fmgr (no SPI per event), and write
 * the changed states with one upsert (those that existed) and one INSERT
 * (the new ones); the loads and writes are snapstates.c's.  Each state
 * remembers the position and stream version of the last event folded into
 * it: in a replay (catch-up, rebuild, retry of a dead letter) events at or
 * below that position are skipped, so replaying events already applied
 * changes nothing.  Inline ("fresh"), the events are new ones of the
 * appending transaction: a stored state already at or past one (its
 * position or its version) means that a concurrent transaction, which
 * inserted a later event with an explicit stream version, folded it first;
 * the event would be lost, so the append fails with serialization_failure,
 * to be retried.
 *
 * Locking: snapstates.c's (inline, the states of the batch's streams stay
 * locked from the load to the write).  The fold runs as the owner.
 *
 * IDENTIFICATION
 *	  src/snapapply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
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
#include "snapstates.h"
#include "spiutil.h"

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
	projection_snapshot_fold_end(&fold);
	if (in_scope)
		projection_owner_leave(&scope);
}

/*
 * The projection whose batch statements this backend runs as SQL now (0:
 * none): set and restored by batch.c around them, on its error path too.
 * _snapshot_apply refuses any other caller (snapshot_apply).
 */
static int32 running_batch_id = 0;

int32
projection_snapshot_running_batch(void)
{
	return running_batch_id;
}

void
projection_snapshot_set_running_batch(int32 projection_id)
{
	running_batch_id = projection_id;
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
	/* only the projection's own batch statement, over its batch: aggregate() trusts the states */
	if (b->via_sql && (b->def.id == 0 || running_batch_id != b->def.id))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot write the states of snapshot projection \"%s\" outside its batch statement", name),
				 errdetail("Only the projection's own batch statement writes its states, with the events of its batches: "
						   "projection.aggregate() starts from them.")));
	changed.n = 0;
	if (b->nevents > 0)
	{
		MemoryContextSwitchTo(cxt);
		snapshot_group(b);
		projection_snapshot_load_states(b, cxt);
		snapshot_fold_streams(b, cxt, &changed);
		projection_snapshot_check_skipped(&b->def, &changed);
		/* a fold changed since the states began: aggregate() must not use them (async only) */
		if (!b->fresh)
			projection_snapshot_check_fold(&b->def);
		projection_snapshot_track_written(b, &changed);

		/* the states loaded (and locked) with one upsert, the new ones with one INSERT */
		projection_snapshot_write(&b->def, &changed, SNAPSHOT_WRITE_LOADED);
		projection_snapshot_write(&b->def, &changed, b->alone ? SNAPSHOT_WRITE_NEW_ALONE : SNAPSHOT_WRITE_NEW);
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

	/*
	 * Alone, but with a transaction snapshot (retry_dead_letters in
	 * REPEATABLE READ): a state the worker created after the snapshot is
	 * not loaded, and a plain INSERT of it would fail with a unique
	 * violation; ON CONFLICT fails with serialization_failure instead.
	 */
	b.alone = alone && !fresh && !IsolationUsesXactSnapshot();
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
	b.via_sql = true;
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
