/*-------------------------------------------------------------------------
 *
 * subxact.c
 *	  Running a piece of work in an internal subtransaction, the PL/pgSQL
 *	  exception-block pattern written once: begin the subtransaction, run
 *	  the work in the caller's memory context, release the subtransaction
 *	  or roll it back as the work says; on error, either copy the error out
 *	  (CopyErrorData in the caller's chosen context, FlushErrorState) or
 *	  let it go on, after rolling the subtransaction back; in every case
 *	  the caller's memory context and resource owner are restored.  Used by
 *	  the guarded one-event path (apply.c), a replay's set-based chunk
 *	  (replaychunk.c), the feed lease UPDATE (feedlease.c) and a poll's
 *	  wait for a partition's pending writer (feedpark.c).
 *
 * Locks: none of its own.  Locks the work takes inside are released with
 * the subtransaction when it is rolled back, and kept by the parent when
 * it is released; that is why some callers roll back work that succeeded.
 * The abort of the subtransaction also restores the user id and security
 * context and unwinds the GUC nest levels opened inside it, so work that
 * switches to a projection's owner (handler.c's owner scope) needs no
 * PG_TRY of its own: it leaves the scope itself only on success, before
 * the subtransaction is released.
 *
 * IDENTIFICATION
 *	  src/subxact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "subxact.h"

/*
 * Run body(arg) in an internal subtransaction, in the caller's memory
 * context.  When the body returns true the subtransaction is released (its
 * work and locks go to the parent), when it returns false it is rolled
 * back; the body's result is returned.  If the body (or the release)
 * raises an error, the subtransaction is rolled back and then: with
 * "edata", the error is copied into "errcxt" (*edata, which the caller
 * frees), the error state flushed, and false returned; without (NULL), the
 * error is re-thrown once the subtransaction is gone.  *edata is NULL
 * unless an error was copied.  On every return, and before a re-throw,
 * CurrentMemoryContext and CurrentResourceOwner are the caller's again.
 */
bool
projection_subxact_run(ProjectionSubxactBody body, void *arg, MemoryContext errcxt,
					   ErrorData **edata)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool keep = false;

	if (edata != NULL)
		*edata = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		keep = body(arg);
		if (keep)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		if (edata == NULL)
		{
			/* leave the subtransaction before the error goes on */
			MemoryContextSwitchTo(oldcxt);
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			PG_RE_THROW();
		}
		MemoryContextSwitchTo(errcxt);
		*edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		keep = false;
	}
	PG_END_TRY();
	return keep;
}
