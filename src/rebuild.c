/*-------------------------------------------------------------------------
 *
 * rebuild.c
 *	  projection.rebuild(): empty a projection's tables and replay every
 *	  event through it (replay.c), in one transaction.
 *
 * Locking: the projection's registry row is locked FOR UPDATE
 * (projection_registry_lookup, which cancels a worker batch holding it)
 * until commit, so the worker leaves the projection alone.  An inline
 * rebuild locks out appenders first (projection_lock_out_appenders); an
 * async one reads the safe horizon (horizon.c) and stops there.
 *
 * IDENTIFICATION
 *	  src/rebuild.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "horizon.h"
#include "inline.h"
#include "oplog.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_rebuild);

/*
 * rebuild(name) RETURNS bigint: empty the projection's tables and replay
 * every event, in one transaction.  Readers see the old, complete read
 * model until the transaction commits, then the new one; a cancel or error
 * leaves everything as it was.
 *
 * Inline: appends wait until the rebuild commits (they would run the
 * projection's handlers on a half-built read model otherwise).
 *
 * Async: appends are not blocked and other projections keep running.  The
 * projection's registry row stays locked until commit, so the worker leaves
 * this projection alone meanwhile.  The replay stops at the safe horizon
 * (horizon.c: every position up to it is visible or dead) and
 * the checkpoint is set there; the worker applies what came after, once.
 */
Datum
projection_rebuild(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionRow *row;
	ProjectionRegistry *registry;
	ProjectionDef *def;
	int64		replayed;
	int64		last;
	int64		horizon;
	const char *state;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_registry_lookup(name, cxt);
	projection_check_owner(row);
	/* the replay hands every event to the owner's code: as create() requires */
	if (pg_class_aclcheck(projection_oids()->events, row->owner, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("Rebuilding projection \"%s\" replays every event to its owner, role \"%s\", which may not read projection.events.",
						   name, GetUserNameFromId(row->owner, false)),
				 errhint("Grant it with GRANT SELECT ON projection.events TO %s.",
						 quote_identifier(GetUserNameFromId(row->owner, false)))));
	if (row->is_inline)
		projection_lock_out_appenders("rebuild");
	else
	{
		if (ProjectionAppenders == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rebuild async projection \"%s\": the projection library is not preloaded", name),
					 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rebuild a projection in a REPEATABLE READ or SERIALIZABLE transaction"),
					 errhint("Run it in a READ COMMITTED transaction.")));
	}

	registry = projection_registry_acquire();
	def = projection_registry_def(registry, row->id);
	projection_empty_tables(def);

	/*
	 * The rebuild replays every event again: its dead letters are those of
	 * the events that fail now (on_error 'skip'), so the old ones go, in
	 * this transaction.  Afterwards dead_letters lists exactly the events
	 * the new read model lacks.
	 */
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		values[0] = CStringGetTextDatum(name);
		projection_registry_exec("DELETE FROM projection.dead_letters WHERE name OPERATOR(pg_catalog.=) $1",
								 1, types, values, NULL, SPI_OK_DELETE);
	}
	if (row->is_inline)
	{
		replayed = projection_replay_inline(def, 0, &last);
		horizon = last;
	}
	else
	{
		ProjectionHorizon hz;

		/* the safe horizon (horizon.c): the replay stops at its gap bound */
		projection_horizon_read_settled(&hz, MyDatabaseId);
		horizon = projection_horizon_gap_bound(&hz);
		/* over the read model emptied above, which nobody else writes meanwhile */
		projection_replay_expect_empty();
		replayed = projection_replay_events(def, 0, horizon, &last);
		PopActiveSnapshot();
	}
	projection_registry_release(registry);

	state = strcmp(row->state, "paused") == 0 ? "paused" : "running";
	projection_registry_set_state(row->id, state, true, horizon, true);
	if (!row->is_inline && strcmp(state, "running") == 0)
		projection_request_launcher_at_commit();

	projection_log_at_commit(psprintf("projection \"%s\" rebuilt from %lld events (%lld skipped)",
									  name, (long long) replayed, (long long) projection_replay_skipped()));
	if (projection_replay_skipped() > 0)
		ereport(NOTICE,
				(errmsg_plural("projection \"%s\" rebuilt from %lld event, %lld skipped",
							   "projection \"%s\" rebuilt from %lld events, %lld skipped",
							   replayed, name, (long long) replayed, (long long) projection_replay_skipped()),
				 errdetail("The skipped events and their errors are in projection.dead_letters.")));
	else
		ereport(NOTICE,
				(errmsg_plural("projection \"%s\" rebuilt from %lld event",
							   "projection \"%s\" rebuilt from %lld events",
							   replayed, name, (long long) replayed)));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT64(replayed);
}
