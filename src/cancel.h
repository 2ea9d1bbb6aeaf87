/*-------------------------------------------------------------------------
 *
 * cancel.h
 *	  Cancel requests: management calls against a worker's batch that holds
 *	  the registry rows they need (cancel.c states the rules).
 *
 * IDENTIFICATION
 *	  src/cancel.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_CANCEL_H
#define PROJECTION_CANCEL_H

/* what projection_cancel_batch() found holding a registry row */
typedef enum ProjectionCancelResult
{
	PROJECTION_CANCEL_SENT,		/* a worker's batch: cancelled */
	PROJECTION_CANCEL_NOT_YET,	/* a worker, not yet in its batch: ask again */
	PROJECTION_CANCEL_NOT_WORKER	/* another session (or nobody) */
} ProjectionCancelResult;

/* cancelling a worker's batch for a management call */
extern void projection_hold(Oid dboid, int32 projection_id);
extern void projection_release_hold(void);
extern void projection_release_database_hold(void);
extern Datum projection_held_projections(Oid dboid);
extern bool projection_database_held(Oid dboid);
extern ProjectionCancelResult projection_cancel_batch(Oid dboid, TransactionId xid);
extern int	projection_cancel_database_batches(Oid dboid);
extern void projection_worker_batch_begin(Oid dboid, int index);
extern void projection_worker_batch_end(Oid dboid, int index);
extern bool projection_worker_batch_aborted(Oid dboid, int index);

#endif							/* PROJECTION_CANCEL_H */
