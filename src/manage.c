/*-------------------------------------------------------------------------
 *
 * manage.c
 *	  The SQL face of projection management: on, drop, pause, resume
 *	  (create is create.c's; off, alter and skip are lifecycle.c's).
 *
 * Every function validates all of its arguments before its first write, so
 * bad input changes nothing.  Each starts with manage_begin: the registry
 * row locked (registry.c, which cancels a worker batch holding it, so two
 * management calls on one projection serialize and none waits for a
 * handler) and the caller's ownership checked.  The registry rows are
 * written through registry.c as the bootstrap superuser; user code
 * (statements prepared by on) runs as the projection's owner, never as a
 * superuser on its behalf.  Pausing, resuming or dropping an inline
 * projection locks appenders out first (inline.c).
 *
 * IDENTIFICATION
 *	  src/manage.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "batch.h"
#include "checkpoint.h"
#include "handler.h"
#include "horizon.h"
#include "inline.h"
#include "lifecycle.h"
#include "manage.h"
#include "progress.h"
#include "oplog.h"
#include "pool.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_on);
PG_FUNCTION_INFO_V1(projection_drop);
PG_FUNCTION_INFO_V1(projection_pause);
PG_FUNCTION_INFO_V1(projection_resume);

/*
 * Start a management call on an existing projection: connect to SPI, lock
 * its registry row (projection_registry_lookup, which cancels a worker
 * batch holding it) and check that the caller owns it.  Raises
 * UNDEFINED_OBJECT or INSUFFICIENT_PRIVILEGE.  The row is in the caller's
 * memory context.  End the call with manage_end().
 */
static ProjectionRow *
manage_begin(const char *name)
{
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	return row;
}

static void
manage_end(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/* ---------------------------------------------------------------------
 * projection.on
 * ---------------------------------------------------------------------
 */

/*
 * on(name, event_type, statement): add a statement handler.  The statement
 * is prepared now, as the projection's owner with its search_path, so that
 * errors in it are reported here rather than at the first event.  Refused
 * on a snapshot projection (batchdef.c): its only handler is its own.
 */
Datum
projection_on(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *event_type = projection_text_arg(fcinfo, 1, "event_type");
	char	   *statement = projection_text_arg(fcinfo, 2, "statement");
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionOwnerScope scope;
	SPIPlanPtr	plan;

	row = manage_begin(name);
	projection_refuse_snapshot(row->id, name, "projection.on()");

	registry = projection_registry_acquire();
	memset(&scope, 0, sizeof(scope));
	projection_owner_enter(&scope, projection_registry_def(registry, row->id));
	plan = projection_prepare_statement(statement, projection_oids()->events_type);
	SPI_freeplan(plan);
	projection_owner_leave(&scope);
	projection_registry_release(registry);
	projection_on_notice_existing(row->id, name, event_type);

	{
		Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
		Datum		values[3];

		values[0] = Int32GetDatum(row->id);
		values[1] = CStringGetTextDatum(event_type);
		values[2] = CStringGetTextDatum(statement);
		projection_registry_exec("INSERT INTO projection.handlers (projection_id, seq, event_type, statement) "
								 "SELECT $1, COALESCE(pg_catalog.max(seq), 0) OPERATOR(pg_catalog.+) 1, $2, $3 "
								 "FROM projection.handlers WHERE projection_id OPERATOR(pg_catalog.=) $1",
								 3, types, values, NULL, SPI_OK_INSERT);
	}
	manage_end();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * projection.drop / pause / resume
 * ---------------------------------------------------------------------
 */

/* drop(name): unregister; the read-model tables are left alone. */
Datum
projection_drop(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	ProjectionRow *row;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	row = manage_begin(name);
	if (row->is_inline)
		projection_lock_out_appenders("drop");

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(name);
	projection_registry_exec("DELETE FROM projection.dead_letters WHERE name OPERATOR(pg_catalog.=) $2 "
							 "AND $1 IS NOT NULL",
							 2, types, values, NULL, SPI_OK_DELETE);
	projection_registry_exec("DELETE FROM projection.projections WHERE id OPERATOR(pg_catalog.=) $1",
							 1, types, values, NULL, SPI_OK_DELETE);
	projection_forget_checkpoints(row->id);
	/* harmless if the drop rolls back: the worker publishes again */
	projection_forget_progress(MyDatabaseId, row->id);
	manage_end();
	PG_RETURN_VOID();
}

/*
 * pause(name): a paused projection applies nothing until resume().  For an
 * inline projection, in-flight appends finish first and the position where
 * it paused is kept, so resume() can catch up exactly the events it missed.
 */
Datum
projection_pause(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	ProjectionRow *row;

	row = manage_begin(name);
	if (strcmp(row->state, "paused") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already paused", name)));
	else if (row->is_inline)
	{
		projection_lock_out_appenders("pause");
		projection_registry_set_state(row->id, "paused", true, projection_sequence_last_value(), false);
	}
	else
		projection_registry_set_state(row->id, "paused", false, 0, false);
	if (strcmp(row->state, "paused") != 0)
		projection_log_at_commit(psprintf("projection \"%s\" paused", name));
	manage_end();
	PG_RETURN_VOID();
}

/*
 * resume(name): run a paused projection again, or retry a failed one from
 * its failing event.  An inline projection first catches up the events
 * appended while it was paused.
 */
Datum
projection_resume(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	ProjectionRow *row;

	row = manage_begin(name);
	if (strcmp(row->state, "running") == 0 || strcmp(row->state, "catching_up") == 0)
		ereport(NOTICE,
				(errmsg("projection \"%s\" is already running", name)));
	else if (row->is_inline)
	{
		ProjectionRegistry *registry;
		int64		last;

		projection_lock_out_appenders("resume");
		registry = projection_registry_acquire();
		(void) projection_replay_inline(projection_registry_def(registry, row->id), row->position, &last);
		projection_registry_release(registry);
		projection_registry_set_state(row->id, "running", true, 0, true);
	}
	else
	{
		projection_registry_set_state(row->id, "running", false, 0, true);
		projection_request_launcher_at_commit();
	}
	if (strcmp(row->state, "running") != 0 && strcmp(row->state, "catching_up") != 0)
		projection_log_at_commit(psprintf("projection \"%s\" resumed (it was %s at position %lld)",
										  name, row->state, (long long) row->position));
	manage_end();
	PG_RETURN_VOID();
}
