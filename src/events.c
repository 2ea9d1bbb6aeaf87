/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The event store: projection.append(), the position trigger, the
 *	  positions of each (sub)transaction, the append-only guard, and the
 *	  privilege to read events.
 *
 * append() inserts through one kept plan; the position trigger gives the
 * row its position (after publishing the appender entry, horizon.c rule 1)
 * and its stream version, and append() returns the position its own row
 * got (ProjectionAppendCapture), not the last one this backend drew.
 *
 * Stream versions and their locks are streams.c's: the position trigger
 * gives a row without stream_version the stream's next one, under the
 * stream's lock, and append() reads the current one before it inserts.
 *
 * Positions drawn are tracked per subtransaction (AppendLevel), so that a
 * rolled-back subtransaction stops holding async readers back (horizon.c
 * rule 4).  All of this file's state is per transaction, in
 * TopTransactionContext, and cleared by xact.c (projection_events_at_*).
 *
 * Events inserted without these triggers (session_replication_role =
 * replica, logical replication) are invisible to the async workers; the
 * worker warns about them (projection_warn_untracked_events).
 *
 * Locking: append() takes the stream's lock (streams.c) before it inserts,
 * a plain INSERT without stream_version takes it in the position trigger;
 * the trigger publishes the appender entry before it draws a position
 * (horizon.c).  Nothing here takes an LWLock.
 *
 * IDENTIFICATION
 *	  src/events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "commands/sequence.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "events.h"
#include "horizon.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "streams.h"

PG_FUNCTION_INFO_V1(projection_append);
PG_FUNCTION_INFO_V1(projection_position_trigger);
PG_FUNCTION_INFO_V1(projection_append_only_trigger);

/* ---- per-transaction state of this backend, reset at its end ---- */

/* rows of the current statement, counted by the BEFORE trigger */
static int64 stmt_assigned_rows = 0;
static int64 stmt_imported_rows = 0;
static int64 stmt_imported_max = 0;

/* the capture of projection.append() in progress (events.h) */
static ProjectionAppendCapture append_capture = {false, 0};

/*
 * Appends per (sub)transaction level.  A level is pushed by the first append
 * (or statement-counter change) of a subtransaction, so that a transaction
 * that never appends pays nothing for its subtransactions; the list runs from
 * the innermost level outwards and always ends at the current subtransaction
 * or one of its ancestors.  At subtransaction commit a level is merged into
 * (or relabelled as) its parent's; at abort it is dropped: the positions it
 * drew belong to rows nobody will ever see, so they stop holding back the
 * async projections (see projection_appender_forget in horizon.c), and the
 * statement counters go back to what they were when the subtransaction
 * first touched them.
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

/* ---------------------------------------------------------------------
 * projection.append
 * ---------------------------------------------------------------------
 */

static SPIPlanPtr append_plan = NULL;

/*
 * append(stream_id, event_type, data, metadata DEFAULT '{}',
 *		  expected_version DEFAULT NULL) RETURNS bigint
 *
 * Appends one event at the stream's next version, under the stream's lock,
 * and returns its global_position.  The insert runs as the caller (who needs
 * INSERT on projection.events) and fires the same triggers as any INSERT.
 */
Datum
projection_append(PG_FUNCTION_ARGS)
{
	text	   *stream_id;
	text	   *event_type;
	Datum		data;
	Datum		metadata;
	int64		current;
	Datum		values[5];
	Oid			types[5] = {TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID};
	int			rc;
	int64		position;
	ProjectionAppendCapture capture;
	const ProjectionOids *o;

	projection_require_arg(fcinfo, 0, "stream_id");
	projection_require_arg(fcinfo, 1, "event_type");
	projection_require_arg(fcinfo, 2, "data");
	stream_id = PG_GETARG_TEXT_PP(0);
	event_type = PG_GETARG_TEXT_PP(1);
	data = PG_GETARG_DATUM(2);
	if (VARSIZE_ANY_EXHDR(stream_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "stream_id")));
	if (VARSIZE_ANY_EXHDR(event_type) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_type")));
	metadata = PG_ARGISNULL(3) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))
		: PG_GETARG_DATUM(3);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_version must be 0 or greater"),
				 errhint("Use 0 for \"the stream must not exist yet\", or NULL for no check.")));

	o = projection_oids();
	/* refuse before taking any lock */
	if (pg_class_aclcheck(o->events, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "events");

	current = projection_stream_version(stream_id);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) != current)
		ereport(ERROR,
				(errcode(ERRCODE_PROJECTION_VERSION_CONFLICT),
				 errmsg("version conflict on stream \"%s\": expected version %lld, current version %lld",
						text_to_cstring(stream_id), (long long) PG_GETARG_INT64(4),
						(long long) current),
				 errhint("Reload the stream and retry the command.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) projection_kept_plan(&append_plan,
								"INSERT INTO projection.events "
								"(stream_id, stream_version, event_type, data, metadata) "
								"VALUES ($1, $2, $3, $4, $5)", 5, types);
	values[0] = PointerGetDatum(stream_id);
	values[1] = Int64GetDatum(current + 1);
	values[2] = PointerGetDatum(event_type);
	values[3] = data;
	values[4] = metadata;

	/*
	 * Return the position the trigger gave our row, not that of the last
	 * event this backend inserted: inline handlers may append more events in
	 * this statement's AFTER trigger, or append and roll back.  (Not
	 * INSERT ... RETURNING: that would need SELECT on projection.events,
	 * which an appender need not have.)
	 */
	projection_append_capture_begin(&capture);
	PG_TRY();
	{
		rc = SPI_execute_plan(append_plan, values, NULL, false, 0);
	}
	PG_CATCH();
	{
		(void) projection_append_capture_end(&capture);
		PG_RE_THROW();
	}
	PG_END_TRY();
	position = projection_append_capture_end(&capture);
	projection_spi_check(rc, SPI_OK_INSERT, "appending an event");
	if (position <= 0)
		elog(ERROR, "appended event got no global_position");
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	PG_RETURN_INT64(position);
}

/*
 * Privileges on projection.events the calling role needs: "what" is
 * ACL_SELECT (reading events: creating any projection, aggregate) or
 * ACL_TRIGGER (an inline projection's code runs in every appender's
 * transaction, as a trigger's does).  Raises INSUFFICIENT_PRIVILEGE with
 * the GRANT to run.
 */
void
projection_check_events_privilege(AclMode what, const char *action)
{
	const char *priv = what == ACL_SELECT ? "SELECT" : "TRIGGER";

	if (pg_class_aclcheck(projection_oids()->events, GetUserId(), what) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("%s needs the %s privilege on projection.events.", action, priv),
				 errhint("Grant it with GRANT %s ON projection.events TO %s.", priv,
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

/* ---------------------------------------------------------------------
 * Positions, stream versions and the append-only guard
 * ---------------------------------------------------------------------
 */

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
	projection_appender_note_position(position);
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

/* The trigger protocol: BEFORE INSERT FOR EACH ROW on projection.events. */
static void
position_check_call(FunctionCallInfo fcinfo)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired BEFORE INSERT FOR EACH ROW",
						"projection._position")));
	if (RelationGetRelid(td->tg_relation) != projection_oids()->events)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" may only be used on projection.events",
						"projection._position")));
}

/*
 * BEFORE INSERT FOR EACH ROW on projection.events (fires first, by name).
 *
 * Assigns global_position from the sequence after taking the xid (rule 1 of horizon.c),
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

	position_check_call(fcinfo);
	o = projection_oids();

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
	/*
	 * A new event's stream must not be empty, as append() says; an event
	 * imported with its position (a restore of a database where 1.6 stored
	 * one) is taken as it is.
	 */
	if (nulls[Anum_events_global_position - 1] && VARSIZE_ANY_EXHDR(stream_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("stream_id of an event must not be empty"),
				 errtable(td->tg_relation)));

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
		projection_appender_begin();
		append_level_note_position(position);
		stmt_imported_rows++;
		if (position > stmt_imported_max)
			stmt_imported_max = position;
	}
	else
	{
		projection_appender_begin();
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

		projection_stream_note_version(stream_id, version);
		repl[Anum_events_stream_version - 1] = true;
		repl_values[Anum_events_stream_version - 1] = Int64GetDatum(version);
	}
	else
		projection_stream_note_version(stream_id, DatumGetInt64(values[Anum_events_stream_version - 1]));

	if (nulls[Anum_events_metadata - 1])
	{
		repl[Anum_events_metadata - 1] = true;
		repl_values[Anum_events_metadata - 1] =
			DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	}

	return PointerGetDatum(heap_modify_tuple(tuple, desc, repl_values, repl_nulls, repl));
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
	if (RelationGetRelid(td->tg_relation) != projection_oids()->events)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" may only be used on projection.events",
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
 * The statement that fired the inline trigger has inserted its rows: take
 * the rows the position trigger counted and reset the counts.  Returns true
 * if the statement imported its rows with their positions (inline
 * projections do not run for those), after keeping the sequence ahead of
 * them; raises if it mixed imported and assigned rows.
 */
bool
projection_statement_imported(void)
{
	int64		imported = stmt_imported_rows;
	int64		assigned = stmt_assigned_rows;
	int64		imported_max = stmt_imported_max;

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

		/* restored events (pg_restore): the projections restored with them may lag */
		projection_request_launcher_at_commit();
		/* keep the sequence ahead of imported positions */
		if (imported_max > projection_sequence_last_value())
			DirectFunctionCall2(setval_oid, ObjectIdGetDatum(projection_oids()->sequence),
								Int64GetDatum(imported_max));
		return true;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * End of (sub)transaction (called from xact.c; plain memory and
 * shared-memory stores only, nothing that can fail)
 * ---------------------------------------------------------------------
 */

/* Transaction end: everything lived in TopTransactionContext, now gone. */
void
projection_events_at_eoxact(void)
{
	projection_streams_at_eoxact();
	stmt_assigned_rows = 0;
	stmt_imported_rows = 0;
	stmt_imported_max = 0;
	append_levels = NULL;
}

/*
 * Subtransaction abort: the stream locks taken inside it are released and
 * the versions it assigned are gone, so forget every remembered version
 * (the next append reads the stream again under its lock); its positions
 * are dead, so publish the lowest position the transaction still holds
 * (projection_appender_forget), also after an append that failed before it
 * noted its position; the rows it counted for a statement in progress are
 * gone too.
 */
void
projection_events_at_subxact_abort(SubTransactionId mySubid)
{
	AppendLevel *level;
	int64		min_pos = 0;

	projection_stream_versions_forget();
	if (append_levels != NULL && append_levels->subid == mySubid)
	{
		level = append_levels;
		stmt_assigned_rows = level->saved_assigned;
		stmt_imported_rows = level->saved_imported;
		stmt_imported_max = level->saved_imported_max;
		append_levels = level->outer;
		pfree(level);
	}
	for (level = append_levels; level != NULL; level = level->outer)
		if (level->min_pos > 0 && (min_pos == 0 || level->min_pos < min_pos))
			min_pos = level->min_pos;
	projection_appender_forget(min_pos);
}

/* Subtransaction commit: what it appended now belongs to its parent. */
void
projection_events_at_subxact_commit(SubTransactionId mySubid, SubTransactionId parentSubid)
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
}
