/*-------------------------------------------------------------------------
 *
 * inline.c
 *	  Inline projections: applied in the appending transaction.
 *
 * An inline projection that catches up or rebuilds locks appenders out
 * (ShareLock on projection.events, projection_lock_out_appenders) until its
 * transaction ends, so that no append runs its handlers on a half-built
 * read model.
 *
 * IDENTIFICATION
 *	  src/inline.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/lmgr.h"

#include "catalog.h"
#include "eventread.h"
#include "inline.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "trigger.h"

/*
 * Block appends until the end of the transaction and wait for in-flight
 * appenders: inline projections run inside appending transactions, so a
 * catch-up, pause or rebuild of one must not race them.  Under REPEATABLE
 * READ the transaction snapshot predates the lock and the catch-up could
 * miss events, so refuse it.
 */
void
projection_lock_out_appenders(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s an inline projection in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errhint("Run it in a READ COMMITTED transaction.")));
	LockRelationOid(projection_oids()->events, ShareLock);
}
