/*-------------------------------------------------------------------------
 *
 * workerstep.h
 *	  The steps a worker round's transaction is made of (workerstep.c), the
 *	  round's projections and events, and the worker's own state.
 *
 * IDENTIFICATION
 *	  src/workerstep.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_WORKERSTEP_H
#define PROJECTION_WORKERSTEP_H

#include "executor/spi.h"

#include "catalog.h"
#include "horizon.h"

/* a projection taking part in a round */
typedef struct ProjectionRoundMember
{
	ProjectionDef *def;			/* registry cache: valid until projection_worker_end() */
	int32		id;				/* def->id, for after projection_worker_end() */
	char	   *name;			/* def->name, copied, for after projection_worker_end() */
	int64		position;		/* checkpoint, locked and re-read this round */
	bool		catching_up;
	bool		failed;			/* failed during this round (careful mode) */
	bool		skipped_any;	/* wrote dead letters this round */
	bool		just_caught_up; /* finished its catch-up this round */
} ProjectionRoundMember;

/* an event of the batch */
typedef struct ProjectionRoundEvent
{
	int64		position;
	char	   *event_type;
	char	   *stream_id;
	HeapTuple	row;			/* the projection.events row (eventread.c) */
	Datum		event;			/* its datum, once built: projection_round_event_datum */
} ProjectionRoundEvent;

/*
 * This worker: who it is (set by projection_worker_main at start), what its
 * last round found, and the handler call running now.  One per process.
 */
typedef struct ProjectionWorkerState
{
	Oid			dboid;
	int			index;
	int			count;
	bool		probe;			/* started after a server start: leave once caught up */
	char	   *dbname;			/* for log lines, read once at start */

	/*
	 * What the last round found (projection_worker_round): every projection
	 * of this worker's group at or past the sequence's last value read in
	 * that round (nothing drawn is left to apply), but those that a live
	 * restoring session holds back (their count in "restoring": that
	 * session's end asks for the group again, pool.c); and whether the group
	 * has no running async projection at all.
	 */
	bool		caught_up;
	int			restoring;
	bool		group_empty;
	/* leaving with nothing left to do: the group need not be started again */
	bool		exit_clean;
	/* checkpoints saved by this worker: moves whenever a round did work */
	uint64		saves;

	/*
	 * The handler call running now (applying_id 0: none), so that an error
	 * can be charged to it.
	 */
	int32		applying_id;
	int64		applying_position;
} ProjectionWorkerState;

extern ProjectionWorkerState projection_worker;

/* a round's transaction, in the order a round takes its steps */
extern bool projection_worker_begin(ProjectionHorizon *hz);
extern void projection_worker_check_owners(ProjectionRegistry *registry);
extern int	projection_worker_lock_projections(ProjectionRegistry **registry, MemoryContext cxt,
											   ProjectionRoundMember **rps);
extern int	projection_worker_group_count(ProjectionRegistry *registry, bool ready);
extern int	projection_worker_restoring_count(ProjectionRegistry *registry,
											  ProjectionRoundMember *rps, int nrps);
extern void projection_worker_track_catch_ups(ProjectionRoundMember *rps, int nrps);
extern int	projection_worker_read_batch(int64 from, int64 upto, Datum filter, int max_rows,
										 ProjectionRoundEvent **events, bool *full);
extern Datum projection_round_event_datum(ProjectionRoundEvent *ev);
extern int	projection_worker_horizon(ProjectionRoundEvent *events, int nevents, bool full,
									  int64 from, int64 last_value, int64 gap_bound,
									  int64 *horizon);
extern void projection_worker_save_checkpoint(ProjectionRoundMember *rp, int64 position,
											  bool caught_up);
extern void projection_worker_end(bool commit);
extern void projection_worker_publish(ProjectionRoundMember *rps, int nrps);

#endif							/* PROJECTION_WORKERSTEP_H */
