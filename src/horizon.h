/*-------------------------------------------------------------------------
 *
 * horizon.h
 *	  The safe horizon of async readers (horizon.c).
 *
 * IDENTIFICATION
 *	  src/horizon.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_HORIZON_H
#define PROJECTION_HORIZON_H

#include "shmem.h"

/* writer side: an appending transaction */
extern void projection_appender_begin(void);
extern void projection_appender_note_position(int64 position);
extern void projection_appender_forget(int64 min_pos);
extern void projection_appender_at_eoxact(void);
extern bool projection_appended_in_xact(void);
extern bool projection_appender_own(int64 *min_pos);

/* reader side: what one read of the horizon saw (steps 1 to 3) */
typedef struct ProjectionHorizon
{
	int64		last_value;		/* L, the sequence's last_value */
	ProjectionAppenderSeen *appenders;	/* W, the appending transactions */
	int			nappenders;
	/* S is the active snapshot, pushed by the read */
} ProjectionHorizon;

/* the contiguous walk over the positions a reader read */
typedef struct ProjectionHorizonWalk
{
	int64		expected;		/* the next position, if contiguous */
	int64		gap_bound;
	int64		reached;		/* every position up to it passed */
} ProjectionHorizonWalk;

extern int64 projection_sequence_last_value(void);
extern ProjectionAppenderSeen *projection_read_appenders(Oid dboid, int *count);
extern int64 projection_gap_bound(int64 last_value, ProjectionAppenderSeen *appenders,
								  int nappenders, Snapshot snapshot);
extern bool projection_appender_pending(ProjectionAppenderSeen *appenders, int nappenders,
										Snapshot snapshot);
extern void projection_horizon_read(ProjectionHorizon *h, Oid dboid);
extern void projection_horizon_read_settled(ProjectionHorizon *h, Oid dboid);
extern int64 projection_horizon_gap_bound(const ProjectionHorizon *h);
extern void projection_horizon_walk_begin(ProjectionHorizonWalk *walk, int64 from, int64 gap_bound);
extern bool projection_horizon_walk_step(ProjectionHorizonWalk *walk, int64 position);
extern int64 projection_horizon_walk_end(ProjectionHorizonWalk *walk, bool full, int64 last_value);

#endif							/* PROJECTION_HORIZON_H */
