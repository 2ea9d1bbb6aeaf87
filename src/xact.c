/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  The extension's transaction and subtransaction callbacks: the PREPARE
 *	  refusals, and the end-of-(sub)transaction dispatch to each module's
 *	  cleanup function (the shape of core's AtEOXact_* calls).
 *
 * The callbacks are registered once, by _PG_init (projection_xact_init),
 * in every backend that loads the library; each module keeps its own
 * per-transaction state and says here, through one call, what ends with a
 * transaction or subtransaction.  No module registers transaction callbacks
 * of its own.
 *
 * COMMIT and ABORT run after the transaction has left the proc array
 * (rule 2 of horizon.c) and must not fail: every cleanup called from them
 * only stores to memory or shared memory, takes at most our LWLock briefly,
 * and sets latches.
 *
 * IDENTIFICATION
 *	  src/xact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "events.h"
#include "feed.h"
#include "feedlease.h"
#include "handler.h"
#include "horizon.h"
#include "inline.h"
#include "oplog.h"
#include "poolcommit.h"
#include "projection.h"
#include "registry.h"
#include "replay.h"
#include "utility.h"
#include "xact.h"

/* What every transaction end clears, whatever the outcome. */
static void
xact_reset(void)
{
	projection_events_at_eoxact();
	projection_inline_at_eoxact();
	projection_feed_lease_at_eoxact();
}

static void
projection_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (projection_appended_in_xact())
				ereport(ERROR,
						(errcode(ERRCODE_PROJECTION_PREPARE_APPENDED),
						 errmsg("cannot PREPARE a transaction that has appended events"),
						 errdetail("Async projections could not order its events safely."),
						 errhint("Commit the transaction instead, or append the events in a transaction of their own.")));
			if (projection_registry_changed_in_xact())
				ereport(ERROR,
						(errcode(ERRCODE_PROJECTION_PREPARE_APPENDED),
						 errmsg("cannot PREPARE a transaction that has changed the projection registry"),
						 errdetail("Sessions could not tell when the change becomes visible."),
						 errhint("Change the registry in a transaction that is not prepared.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			/*
			 * Before the commit becomes visible (shmem.c, registry
			 * generations); then the worker groups a management call gave
			 * work to (poolcommit.c says why in this order).
			 */
			projection_pool_before_registry_change();
			projection_registry_at_pre_commit();
			projection_pool_at_pre_commit();
			/* last: whether a poll's lease was all this transaction wrote */
			projection_feed_lease_at_pre_commit();
			break;
		case XACT_EVENT_COMMIT:
			projection_registry_at_eoxact();
			projection_registry_at_abort(); /* nothing runs any more */
			projection_appender_at_eoxact();
			projection_launcher_request_at_eoxact(true);
			/* wake our workers; a group with async work and none gets one (poolcommit.c) */
			projection_pool_at_commit();
			xact_reset();
			projection_handler_at_eoxact();
			projection_utility_at_eoxact();
			projection_feed_at_eoxact(true);
			/* the management calls' LOG lines, now that they committed (oplog.c) */
			projection_oplog_at_eoxact(true);
			break;
		case XACT_EVENT_ABORT:
			projection_registry_at_eoxact();
			/* a worker may be waiting for our positions: they are dead now */
			projection_appender_at_eoxact();
			projection_launcher_request_at_eoxact(false);
			projection_pool_at_abort();
			xact_reset();
			projection_registry_at_abort();
			projection_replay_at_abort(InvalidSubTransactionId);
			projection_handler_at_eoxact();
			projection_utility_at_eoxact();
			projection_feed_at_eoxact(false);
			projection_oplog_at_eoxact(false);
			break;
		case XACT_EVENT_PREPARE:
			/* PRE_PREPARE refused appends and registry changes */
			projection_registry_at_eoxact();
			projection_appender_at_eoxact();
			projection_launcher_request_at_eoxact(false);
			projection_pool_at_abort();
			xact_reset();
			projection_handler_at_eoxact();
			projection_utility_at_eoxact();
			projection_feed_at_eoxact(false);
			projection_oplog_at_eoxact(false);
			break;
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			projection_handler_at_eoxact();
			projection_utility_at_eoxact();
			break;
		default:
			break;
	}
}

/*
 * Subtransaction end.  At abort: its stream locks, versions, positions and
 * counted rows are gone (events.c), so are the events it queued for inline
 * projections (inline.c) and the handler calls it built (handler.c); a
 * create() or a replay running in it has ended, and the LOG lines it kept
 * for the commit are dropped (oplog.c).  At commit: what it did
 * now belongs to its parent.
 */
static void
projection_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		projection_events_at_subxact_abort(mySubid);
		projection_registry_at_subxact_abort();
		projection_inline_at_subxact_abort(mySubid);
		projection_replay_at_abort(mySubid);
		projection_handler_at_subxact_abort(mySubid);
		projection_oplog_at_subxact_abort(mySubid);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		projection_events_at_subxact_commit(mySubid, parentSubid);
		projection_inline_at_subxact_commit(mySubid, parentSubid);
	}
}

/* Register the callbacks; called once, from _PG_init. */
void
projection_xact_init(void)
{
	RegisterXactCallback(projection_xact_callback, NULL);
	RegisterSubXactCallback(projection_subxact_callback, NULL);
}
