/*-------------------------------------------------------------------------
 *
 * snapapply.c
 *	  Snapshot projections: _snapshot_apply, the fold of one batch of
 *	  events into the stored states.
 *
 * A snapshot projection's batch statement (snapshot.c) is
 *
 *		SELECT projection._snapshot_apply('name', array_agg(b)) FROM batch b
 *
 * so it runs wherever batch statements run.  Per batch: group the events
 * by stream (sorted by stream, then position), load the stored states with
 * one query (locking them, in stream order), fold each stream's events
 * through fmgr (no SPI per event), and write the changed states with one
 * upsert (those that existed) and one INSERT (the new ones).  Each state
 * remembers the position and stream version of the last event folded into
 * it: in a replay (catch-up, rebuild, retry of a dead letter) events at or
 * below that position are skipped, so replaying events already applied
 * changes nothing.  Inline, the events are new ones of the appending
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
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "batch.h"
#include "catalog.h"
#include "handler.h"
#include "inline.h"
#include "projection.h"
#include "snapfold.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_snapshot_apply);

/* one event of a batch, for grouping */
typedef struct SnapshotEvent
{
	const char *stream_id;
	int64		position;
	int64		version;
	Datum		row;			/* the projection.events composite */
} SnapshotEvent;
static SPIPlanPtr load_plan = NULL;
static SPIPlanPtr upsert_plan = NULL;
static SPIPlanPtr insert_plan = NULL;

/* the stored states of a batch's streams, in stream order (bytewise) */
typedef struct SnapshotLoaded
{
	int			n;
	char	  **ids;
	Datum	   *states;
	bool	   *nulls;
	int64	   *positions;
	int64	   *versions;
} SnapshotLoaded;

/* the states a batch changed, as the columns of the writes */
typedef struct SnapshotChanged
{
	int			n;
	Datum	   *ids;
	Datum	   *states;
	bool	   *nulls;
	Datum	   *versions;
	Datum	   *positions;
	Datum	   *loaded;			/* the position each was loaded at (0: none) */
	int			nskipped;
	Datum	   *skipped;		/* events at or below their stored state */
} SnapshotChanged;

static int
snapshot_event_cmp(const void *a, const void *b)
{
	const SnapshotEvent *x = (const SnapshotEvent *) a;
	const SnapshotEvent *y = (const SnapshotEvent *) b;
	int			c = strcmp(x->stream_id, y->stream_id);

	if (c != 0)
		return c;
	return x->position < y->position ? -1 : (x->position > y->position ? 1 : 0);
}

/*
 * Write the states whose loaded position is non-zero (existing: upsert) or
 * zero (new: insert), as one statement; nothing if there are none.
 */
static void
snapshot_write(SPIPlanPtr *cache, int32 projection_id, const char *projection_name,
			   SnapshotChanged *changed, bool existing)
{
	Oid			types[5] = {INT4OID, TEXTARRAYOID, JSONBARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[5];
	Datum	   *w_ids = palloc(sizeof(Datum) * Max(changed->n, 1));
	Datum	   *w_states = palloc(sizeof(Datum) * Max(changed->n, 1));
	bool	   *w_nulls = palloc(sizeof(bool) * Max(changed->n, 1));
	Datum	   *w_ver = palloc(sizeof(Datum) * Max(changed->n, 1));
	Datum	   *w_pos = palloc(sizeof(Datum) * Max(changed->n, 1));
	int			dims[1];
	int			lbs[1] = {1};
	int			m = 0;
	int			i;

	for (i = 0; i < changed->n; i++)
	{
		if ((DatumGetInt64(changed->loaded[i]) != 0) != existing)
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
	values[0] = Int32GetDatum(projection_id);
	values[1] = PointerGetDatum(construct_array(w_ids, m, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_md_array(w_states, w_nulls, 1, dims, lbs,
												   JSONBOID, -1, false, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(w_ver, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_array(w_pos, m, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	projection_snapshot_exec_plan(projection_kept_plan(cache, existing ?
									 "INSERT INTO projection.snapshot_states AS s "
									 "(projection_id, stream_id, state, version, global_position) "
									 "SELECT $1, u.stream_id, u.state, u.version, u.global_position "
									 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
									 "pg_catalog.unnest($4), pg_catalog.unnest($5)) "
									 "AS u(stream_id, state, version, global_position) "
									 "ON CONFLICT (projection_id, stream_id) DO UPDATE "
									 "SET state = excluded.state, version = excluded.version, "
									 "global_position = excluded.global_position" :
									 "INSERT INTO projection.snapshot_states "
									 "(projection_id, stream_id, state, version, global_position) "
									 "SELECT $1, u.stream_id, u.state, u.version, u.global_position "
									 "FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
									 "pg_catalog.unnest($4), pg_catalog.unnest($5)) "
									 "AS u(stream_id, state, version, global_position) "
									 "ON CONFLICT (projection_id, stream_id) DO NOTHING",
									 5, types),
					   values, NULL, SPI_OK_INSERT, "writing snapshot states");
	if (!existing && SPI_processed < (uint64) m)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not create the state of a stream in snapshot projection \"%s\"",
						projection_name),
				 errdetail("A concurrent transaction created it first, with events inserted with explicit "
						   "stream versions."),
				 errhint("Retry the transaction, or append through projection.append, which "
						 "serializes the appends to a stream.")));
}

/* ---------------------------------------------------------------------
 * projection._snapshot_apply
 * ---------------------------------------------------------------------
 */

/*
 * The array's events (rows of projection.events; NULLs and rows without a
 * position or stream left out), sorted by stream (bytewise), then
 * position.  The rows point into the array.  Returns their number.
 */
static int
snapshot_batch_events(ArrayType *arr, SnapshotEvent **result)
{
	Oid			events_type = projection_oids()->events_type;
	TupleDesc	rowdesc;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	SnapshotEvent *events;
	int			nevents = 0;
	int			i;

	deconstruct_array(arr, events_type, -1, false, TYPALIGN_DOUBLE, &elems, &elem_nulls, &nelems);
	rowdesc = lookup_rowtype_tupdesc_copy(events_type, -1);
	events = palloc(sizeof(SnapshotEvent) * Max(nelems, 1));
	for (i = 0; i < nelems; i++)
	{
		HeapTupleHeader th;
		HeapTupleData tmp;
		bool		isnull;
		Datum		d;

		if (elem_nulls[i])
			continue;
		th = DatumGetHeapTupleHeader(elems[i]);
		tmp.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tmp.t_self);
		tmp.t_tableOid = InvalidOid;
		tmp.t_data = th;
		d = heap_getattr(&tmp, Anum_events_global_position, rowdesc, &isnull);
		if (isnull)
			continue;
		events[nevents].position = DatumGetInt64(d);
		d = heap_getattr(&tmp, Anum_events_stream_id, rowdesc, &isnull);
		if (isnull)
			continue;
		events[nevents].stream_id = TextDatumGetCString(d);
		d = heap_getattr(&tmp, Anum_events_stream_version, rowdesc, &isnull);
		events[nevents].version = isnull ? 0 : DatumGetInt64(d);
		events[nevents].row = PointerGetDatum(th);
		nevents++;
	}
	if (nevents > 0)
		qsort(events, nevents, sizeof(SnapshotEvent), snapshot_event_cmp);
	*result = events;
	return nevents;
}

/*
 * Load (and lock, in stream order, so that concurrent inline batches take
 * the locks in one order) the stored states of the sorted events' streams,
 * copied into "cxt".  Caller is connected to SPI.
 */
static void
snapshot_load_states(SnapshotDef *def, SnapshotEvent *events, int nevents,
					 MemoryContext cxt, SnapshotLoaded *loaded)
{
	Oid			types[2] = {INT4OID, TEXTARRAYOID};
	Datum		values[2];
	Datum	   *stream_ids = palloc(sizeof(Datum) * nevents);
	int			nstreams = 0;
	MemoryContext oldcxt;
	int			i;

	for (i = 0; i < nevents; i++)
		if (i == 0 || strcmp(events[i].stream_id, events[i - 1].stream_id) != 0)
			stream_ids[nstreams++] = CStringGetTextDatum(events[i].stream_id);
	values[0] = Int32GetDatum(def->id);
	values[1] = PointerGetDatum(construct_array(stream_ids, nstreams, TEXTOID, -1, false,
												TYPALIGN_INT));
	projection_snapshot_exec_plan(projection_kept_plan(&load_plan,
													   "SELECT s.stream_id, s.state, s.global_position, s.version "
													   "FROM projection.snapshot_states s "
													   "WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
													   "AND s.stream_id OPERATOR(pg_catalog.=) ANY ($2) "
													   "ORDER BY s.stream_id COLLATE \"C\" FOR UPDATE",
													   2, types),
								  values, NULL, SPI_OK_SELECT, "loading snapshot states");
	oldcxt = MemoryContextSwitchTo(cxt);
	loaded->n = (int) SPI_processed;
	loaded->ids = palloc(sizeof(char *) * Max(loaded->n, 1));
	loaded->states = palloc(sizeof(Datum) * Max(loaded->n, 1));
	loaded->nulls = palloc(sizeof(bool) * Max(loaded->n, 1));
	loaded->positions = palloc(sizeof(int64) * Max(loaded->n, 1));
	loaded->versions = palloc(sizeof(int64) * Max(loaded->n, 1));
	for (i = 0; i < loaded->n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		st;

		loaded->ids[i] = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		st = SPI_getbinval(tup, desc, 2, &loaded->nulls[i]);
		loaded->states[i] = loaded->nulls[i] ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
		loaded->positions[i] = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		loaded->versions[i] = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);
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

/*
 * Fold each stream's events after its stored position into its state (the
 * stored one, or the initial state), as the owner (its scope is entered
 * unless the batch statement already runs as the owner, restricted), and
 * collect the states that changed into *changed, copied into "cxt".  The
 * fold's errors propagate.  "fresh": the events are new ones of this
 * transaction (inline), which must come after their stored states.
 */
/*
 * Inline: the new event "e" of stream "sid" comes at or before what its
 * state holds (position "pos", version "ver"), the stored state's if
 * "stored", else those of the statement's previous event of the stream.
 */
static void
snapshot_refuse_out_of_order(SnapshotDef *def, const char *sid, SnapshotEvent *e,
							 int64 pos, int64 ver, bool stored)
{
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

static void
snapshot_fold_streams(SnapshotDef *def, SnapshotEvent *events, int nevents,
					  SnapshotLoaded *loaded, MemoryContext cxt, SnapshotChanged *changed,
					  bool fresh)
{
	SnapshotFold fold;
	ProjectionOwnerScope scope;
	bool		in_scope;
	int			li = 0;
	int			i = 0;

	changed->n = 0;
	changed->ids = palloc(sizeof(Datum) * nevents);
	changed->states = palloc(sizeof(Datum) * nevents);
	changed->nulls = palloc(sizeof(bool) * nevents);
	changed->versions = palloc(sizeof(Datum) * nevents);
	changed->positions = palloc(sizeof(Datum) * nevents);
	changed->loaded = palloc(sizeof(Datum) * nevents);
	changed->nskipped = 0;
	changed->skipped = palloc(sizeof(Datum) * nevents);
	in_scope = !(GetUserId() == def->owner && InSecurityRestrictedOperation());
	if (in_scope)
		projection_snapshot_owner_enter(&scope, def);
	projection_snapshot_fold_init(&fold, def);
	while (i < nevents)
	{
		const char *sid = events[i].stream_id;
		Datum		state = def->initial;
		bool		state_null = false;
		int64		pos = 0;
		int64		ver = 0;
		bool		folded = false;
		int64		loaded_at = 0;

		while (li < loaded->n && strcmp(loaded->ids[li], sid) < 0)
			li++;
		if (li < loaded->n && strcmp(loaded->ids[li], sid) == 0)
		{
			state = loaded->states[li];
			state_null = loaded->nulls[li];
			pos = loaded->positions[li];
			ver = loaded->versions[li];
			loaded_at = pos;
		}
		for (; i < nevents && strcmp(events[i].stream_id, sid) == 0; i++)
		{
			if (fresh && (events[i].position <= pos || events[i].version <= ver))
				snapshot_refuse_out_of_order(def, sid, &events[i], pos, ver, !folded);
			if (events[i].position <= pos)
			{
				/* folded in already (a replay), unless it is a dead letter */
				if (events[i].position <= loaded_at)
					changed->skipped[changed->nskipped++] = Int64GetDatum(events[i].position);
				continue;
			}
			projection_snapshot_fold_event(&fold, &state, &state_null, events[i].row);
			pos = events[i].position;
			ver = events[i].version;
			folded = true;
		}
		if (folded)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
			int			k = changed->n++;

			changed->ids[k] = CStringGetTextDatum(sid);
			changed->nulls[k] = state_null;
			changed->states[k] = state_null ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(state));
			changed->versions[k] = Int64GetDatum(ver);
			changed->positions[k] = Int64GetDatum(pos);
			changed->loaded[k] = Int64GetDatum(loaded_at);
			MemoryContextSwitchTo(oldcxt);
		}
		projection_snapshot_fold_reset(&fold);
	}
	if (in_scope)
		projection_owner_leave(&scope);
}

/*
 * _snapshot_apply(name, events projection.events[]) RETURNS bigint: fold a
 * batch of events into the stored states of snapshot projection "name";
 * returns the number of states written.  Called by the projection's batch
 * statement, as its owner; refused (42501) for anyone not a member of the
 * owner role.  Events are taken in (stream, position) order whatever the
 * array's order; an event at or below its stream's stored position is
 * skipped.  The fold's errors propagate (the batch machinery then retries
 * event by event and applies on_error).
 */
Datum
projection_snapshot_apply(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	MemoryContext cxt = CurrentMemoryContext;
	SnapshotDef def;
	SnapshotEvent *events;
	int			nevents;
	SnapshotLoaded loaded;
	SnapshotChanged changed;

	if (ARR_ELEMTYPE(arr) != projection_oids()->events_type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("events must be an array of projection.events")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_snapshot_def_load(name, &def, cxt);
	if (!has_privs_of_role(GetUserId(), def.owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of projection \"%s\"", name),
				 errdetail("Only the projection's own batch statement writes its states.")));
	if (!projection_batch_running(def.id))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot write the states of snapshot projection \"%s\" outside its batch statement", name),
				 errdetail("Only the projection's own batch statement writes its states, with the events of its batches: "
						   "projection.aggregate() starts from them.")));

	nevents = snapshot_batch_events(arr, &events);
	if (nevents == 0)
	{
		if (SPI_finish() != SPI_OK_FINISH)
			elog(ERROR, "SPI_finish failed");
		PG_RETURN_INT64(0);
	}
	snapshot_load_states(&def, events, nevents, cxt, &loaded);
	snapshot_fold_streams(&def, events, nevents, &loaded, cxt, &changed,
						  projection_inline_applying());
	snapshot_check_skipped(&def, &changed);
	/* a fold changed since the states began: aggregate() must not use them (async only) */
	if (!projection_inline_applying())
		projection_snapshot_check_fold(&def);

	/*
	 * Write the changed states: the ones loaded (and locked) with one
	 * upsert, which always updates them (through the primary key, whatever
	 * the number of states); the new ones with one INSERT.  A stream whose
	 * first state another transaction created meanwhile (possible only
	 * inline, with explicit stream versions in concurrent INSERTs; the
	 * INSERT waits for it to commit) then fails with serialization_failure,
	 * to be retried, instead of overwriting the other's state or losing
	 * this transaction's events.
	 */
	snapshot_write(&upsert_plan, def.id, def.name, &changed, true);
	snapshot_write(&insert_plan, def.id, def.name, &changed, false);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(changed.n);
}
