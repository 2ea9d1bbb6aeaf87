/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  Snapshot projections: one state per stream, folded by a function of
 *	  the shape of aggregate()'s fold and stored by the extension.
 *
 * A snapshot projection is an ordinary projection (registry row, mode,
 * checkpoint, on_error, rebuild) whose only handler is a batch statement
 * (projection.on_batch) of the form
 *
 *		SELECT projection._snapshot_apply('name', array_agg(b)) FROM batch b
 *
 * so it is applied wherever and however batch statements are: in the
 * worker's transaction before its checkpoint, in the appending statement
 * (inline), over large batches in catch-up and rebuild, and event by event
 * when a batch fails (on_error then applies to the one failing event).
 * _snapshot_apply (snapapply.c) folds each batch into the stored states;
 * snapfold.c reads a snapshot projection's definition and calls its fold.
 * This file holds the SQL faces: create_snapshot, snapshot() and the
 * emptying of the states on rebuild.
 *
 * snapshot(name, stream) reads the stored state and folds it forward with
 * the stream's events after its position (of the projection's types, less
 * its dead letters), so it is current however far the worker lags.
 *
 * Privileges: the tables are the extension's (not readable by PUBLIC) and
 * are read and written here as the bootstrap superuser, with fixed
 * statements only.  The fold always runs as the projection's owner, with
 * the projection's search_path, as every handler does.  Reading states
 * needs membership in the owner role or SELECT on projection.events (the
 * rule of status.last_error).
 *
 * IDENTIFICATION
 *	  src/snapshot.c
 *
 *-------------------------------------------------------------------------
 */#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "batch.h"
#include "catalog.h"
#include "compat.h"
#include "eventread.h"
#include "handler.h"
#include "horizon.h"
#include "projection.h"
#include "inline.h"
#include "snapapply.h"
#include "snapfold.h"
#include "snapshot.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_create_snapshot);
PG_FUNCTION_INFO_V1(projection_snapshot);
PG_FUNCTION_INFO_V1(projection_snapshot_apply);

/*
 * A fold must be f(state jsonb, e projection.events) RETURNS jsonb, not
 * temporary (it is stored), and executable by the caller.  The same errors
 * as aggregate() and create() give.
 */
static void
snapshot_check_fold(Oid fold)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;
	bool		is_temp;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fold)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	ok = proc->pronargs == 2 && proc->proargtypes.values[0] == JSONBOID &&
		proc->proargtypes.values[1] == projection_oids()->events_type &&
		proc->prorettype == JSONBOID && !proc->proretset && proc->prokind == PROKIND_FUNCTION;
	is_temp = isAnyTempNamespace(proc->pronamespace);
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a fold function", format_procedure(fold)),
				 errdetail("A fold function must take (state jsonb, e projection.events) and return jsonb."),
				 errhint("Declare it as CREATE FUNCTION f(state jsonb, e projection.events) RETURNS jsonb.")));
	if (is_temp)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("temporary function \"%s\" cannot be a fold function", get_func_name(fold)),
				 errdetail("A temporary function is dropped at the end of its session, and other sessions cannot call it.")));
	if (pg_proc_aclcheck(fold, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fold));
}
/* ---------------------------------------------------------------------
 * projection.snapshot
 * ---------------------------------------------------------------------
 */

/* events read per batch by snapshot() */
#define SNAPSHOT_READ_ROWS 1000

/*
 * The stored state of the stream in the snapshot projection (*state copied
 * into "cxt"), or its initial state; returns the position folded in (0:
 * none stored).  Caller is connected to SPI.
 */
static int64
snapshot_stored_state(SnapshotDef *def, text *stream_id, MemoryContext cxt,
					  Datum *state, bool *state_null)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	int64		pos = 0;

	values[0] = Int32GetDatum(def->id);
	values[1] = PointerGetDatum(stream_id);
	projection_registry_exec("SELECT s.state, s.global_position FROM projection.snapshot_states s "
							 "WHERE s.projection_id OPERATOR(pg_catalog.=) $1 "
							 "AND s.stream_id OPERATOR(pg_catalog.=) $2",
							 2, types, values, NULL, SPI_OK_SELECT);
	*state = def->initial;
	*state_null = false;
	if (SPI_processed > 0)
	{
		bool		isnull;
		Datum		st = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, state_null);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		if (!*state_null)
			*state = PointerGetDatum(PG_DETOAST_DATUM_COPY(st));
		MemoryContextSwitchTo(oldcxt);
		pos = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	return pos;
}

/*
 * Fold (*state, *state_null) forward, as the owner, with the stream's
 * events after position "pos", of the projection's event types, less its
 * dead letters, read in bounded batches as the extension (the caller's
 * right to read was checked).  The result lives in the current (SPI)
 * context.  Caller is connected to SPI; the fold's errors propagate.
 */
static void
snapshot_fold_forward(SnapshotDef *def, text *stream_id, int64 pos, Datum *state,
					  bool *state_null)
{
	SnapshotFold fold;
	ProjectionOwnerScope scope;
	MemoryContext batch_cxt;
	SPIPlanPtr	plan;
	Oid			types[5] = {TEXTOID, INT8OID, TEXTARRAYOID, TEXTOID, INT8OID};
	Datum		values[5];

	plan = SPI_prepare(psprintf("SELECT e, e.global_position FROM projection.events e "
								"WHERE e.stream_id OPERATOR(pg_catalog.=) $1 "
								"AND e.global_position OPERATOR(pg_catalog.>) $2 "
								"AND (%s) "
								"AND NOT EXISTS (SELECT 1 FROM projection.dead_letters d "
								"WHERE d.name OPERATOR(pg_catalog.=) $4 "
								"AND d.global_position OPERATOR(pg_catalog.=) e.global_position) "
								"ORDER BY e.global_position LIMIT $5",
								def->all_types ? "$3 IS NOT NULL" : "e.event_type OPERATOR(pg_catalog.=) ANY ($3)"),
					   5, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = PointerGetDatum(stream_id);
	/* every type: an empty array, which the query does not read */
	values[2] = def->all_types ? PointerGetDatum(construct_empty_array(TEXTOID)) : def->event_types;
	values[3] = CStringGetTextDatum(def->name);
	values[4] = Int64GetDatum(SNAPSHOT_READ_ROWS);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "projection snapshot batch",
									  ALLOCSET_DEFAULT_SIZES);
	projection_snapshot_fold_init(&fold, def);
	for (;;)
	{
		ProjectionEventRows rows;
		Oid			save_userid;
		int			save_sec_context;
		int			i;

		values[1] = Int64GetDatum(pos);
		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		projection_read_events(plan, 5, types, values, SNAPSHOT_READ_ROWS,
							   PROJECTION_BATCH_BYTES, batch_cxt, &rows);
		SetUserIdAndSecContext(save_userid, save_sec_context);
		if (rows.ntuples > 0)
		{
			projection_snapshot_owner_enter(&scope, def);
			for (i = 0; i < rows.ntuples; i++)
			{
				bool		isnull;
				Datum		event = SPI_getbinval(rows.tuples[i], rows.tupdesc, 1, &isnull);

				pos = DatumGetInt64(SPI_getbinval(rows.tuples[i], rows.tupdesc, 2, &isnull));
				projection_snapshot_fold_event(&fold, state, state_null, event);
			}
			projection_owner_leave(&scope);
		}
		MemoryContextReset(batch_cxt);
		if (!rows.full)
			break;
	}
	projection_snapshot_fold_end(&fold);
	SPI_freeplan(plan);
}

/*
 * snapshot(name, stream_id) RETURNS jsonb: the stream's current state in
 * snapshot projection "name": its stored state (or the initial state)
 * folded forward, as the owner, with the stream's events after the stored
 * position, of the projection's event types, less its dead letters (the
 * events the projection skipped).  Needs SELECT on projection.events, or
 * membership in the owner role while the owner has it (42501).
 */
Datum
projection_snapshot(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	SnapshotDef def;
	text	   *stream_id;
	Datum		state;
	bool		state_null;
	int64		pos;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "stream_id")));
	stream_id = PG_GETARG_TEXT_PP(1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_snapshot_def_load(name, &def, cxt);
	/* it folds the stream's latest events: the owner's right only while the owner may read them */
	if (pg_class_aclcheck(projection_oids()->events, GetUserId(), ACL_SELECT) != ACLCHECK_OK &&
		!(has_privs_of_role(GetUserId(), def.owner) &&
		  pg_class_aclcheck(projection_oids()->events, def.owner, ACL_SELECT) == ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for snapshot projection \"%s\"", name),
				 errdetail("Reading a snapshot needs the SELECT privilege on projection.events, or membership in the projection's owner role while that role has it."),
				 errhint("Grant it with GRANT SELECT ON projection.events TO %s.",
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));

	pos = snapshot_stored_state(&def, stream_id, cxt, &state, &state_null);
	snapshot_fold_forward(&def, stream_id, pos, &state, &state_null);

	/* the state lives in SPI memory: copy it out before SPI_finish */
	if (!state_null)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		state = PointerGetDatum(PG_DETOAST_DATUM_COPY(state));
		MemoryContextSwitchTo(oldcxt);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (state_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(state);
}

/* ---------------------------------------------------------------------
 * projection._snapshot_apply
 * ---------------------------------------------------------------------
 */

/*
 * _snapshot_apply(name, events projection.events[]) RETURNS bigint: fold a
 * batch of events into the stored states of snapshot projection "name"
 * (snapapply.c); returns the number of states written.  The projection's
 * batch statement calls it, as its owner (batch.c applies that statement's
 * batches directly, without calling it); refused (42501) for anyone not a
 * member of the owner role.  Events are taken in (stream, position) order
 * whatever the array's order; an event at or below its stream's stored
 * position is skipped.  The fold's errors propagate (the batch machinery
 * then retries event by event and applies on_error).
 */
Datum
projection_snapshot_apply(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;

	if (ARR_ELEMTYPE(arr) != projection_oids()->events_type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("events must be an array of projection.events")));
	deconstruct_array(arr, projection_oids()->events_type, -1, false, TYPALIGN_DOUBLE,
					  &elems, &elem_nulls, &nelems);
	PG_RETURN_INT64(projection_snapshot_apply_datums(name, elems, elem_nulls, nelems,
													 projection_inline_applying()));
}

/* ---------------------------------------------------------------------
 * projection.create_snapshot
 * ---------------------------------------------------------------------
 */

/*
 * create_snapshot(name, fold, initial, event_types, mode, on_error): check
 * the fold, then create() the projection without a handler (as the caller,
 * so create's own checks and errors apply: privileges, mode, on_error,
 * event types, duplicate name), record its fold and initial state, and add
 * its batch statement (projection_batch_add_statement(), as on_batch()
 * does).  An async projection starts from the
 * beginning and catches up in the worker; an inline one is created at the
 * end and rebuilt at once (create()'s own inline catch-up would run before
 * the batch statement exists).  Everything in the caller's transaction:
 * an error leaves nothing behind.
 */
Datum
projection_create_snapshot(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *mode;
	char	   *on_error;
	Oid			fold;
	bool		is_inline;
	MemoryContext cxt = CurrentMemoryContext;
	SnapshotDef def;
	int			rc;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "fold")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", "initial")));
	mode = projection_text_arg(fcinfo, 4, "mode");
	on_error = projection_text_arg(fcinfo, 5, "on_error");
	fold = PG_GETARG_OID(1);
	is_inline = strcmp(mode, "inline") == 0;
	snapshot_check_fold(fold);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[5] = {TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(name);
		if (PG_ARGISNULL(3))
			nulls[1] = 'n';
		else
			values[1] = PG_GETARG_DATUM(3);
		values[2] = CStringGetTextDatum(mode);
		values[3] = CStringGetTextDatum(is_inline ? "end" : "beginning");
		values[4] = CStringGetTextDatum(on_error);
		rc = SPI_execute_with_args("SELECT projection.create($1, NULL::pg_catalog.regproc, $2, $3, "
								   "'{}'::pg_catalog.regclass[], $4, $5)",
								   5, types, values, nulls, false, 0);
		projection_spi_check(rc, SPI_OK_SELECT, "creating a snapshot projection");
	}
	{
		Oid			types[3] = {TEXTOID, OIDOID, JSONBOID};
		Datum		values[3];

		values[0] = CStringGetTextDatum(name);
		values[1] = ObjectIdGetDatum(fold);
		values[2] = PG_GETARG_DATUM(2);
		projection_registry_exec("INSERT INTO projection.snapshot_defs (projection_id, fold, initial) "
								 "SELECT p.id, $2::pg_catalog.regprocedure, $3 FROM projection.projections p "
								 "WHERE p.name OPERATOR(pg_catalog.=) $1",
								 3, types, values, NULL, SPI_OK_INSERT);
		if (SPI_processed != 1)
			elog(ERROR, "projection \"%s\" was not created", name);
	}
	/* validated as the owner (the caller, who just created it) and added, as on_batch() does */
	projection_snapshot_def_load(name, &def, cxt);
	projection_batch_add_statement(def.id, def.owner, def.search_path,
								   projection_snapshot_statement(name));
	/* the fold the states start from, for aggregate() */
	projection_snapshot_record_fold(def.id);
	if (is_inline && projection_sequence_last_value() > 0)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		rc = SPI_execute_with_args("SELECT projection.rebuild($1)",
								   1, types, values, NULL, false, 0);
		projection_spi_check(rc, SPI_OK_SELECT, "catching up an inline snapshot projection");
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Rebuild
 * ---------------------------------------------------------------------
 */

/*
 * A rebuild (or create with if_not_empty => 'empty') empties a projection's
 * read model: for a snapshot projection, its states, and records its fold's
 * definition as the one the new states start from.  DELETE, so readers see
 * the old states (and the old definition) until the rebuild commits.  Nothing for other projections,
 * or in a database whose extension predates version 1.3.
 */
void
projection_snapshot_forget(int32 projection_id)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("snapshot_states", nsp)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(projection_id);
	projection_registry_exec("DELETE FROM projection.snapshot_states "
							 "WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_DELETE);
	/* the states start again from the fold as it is now (for aggregate()) */
	projection_snapshot_record_fold(projection_id);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * alter() changed the event types of projection "projection_id": if it is a
 * snapshot projection, its states no longer say which events they hold (the
 * events of an added type already passed are not in them), so forget the
 * fold definition they started from: aggregate() stops using them until the
 * next rebuild records it again.  Nothing for other projections or in a
 * catalog before 1.5.  The caller is connected to SPI.
 */
void
projection_snapshot_types_changed(int32 projection_id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!projection_snapshot_has_fold_definition())
		return;
	values[0] = Int32GetDatum(projection_id);
	projection_registry_exec("UPDATE projection.snapshot_defs SET fold_definition = NULL "
							 "WHERE projection_id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_UPDATE);
}
