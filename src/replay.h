/*-------------------------------------------------------------------------
 *
 * replay.h
 *	  Catch-up and rebuild (replay.c).
 *
 * IDENTIFICATION
 *	  src/replay.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_REPLAY_H
#define PROJECTION_REPLAY_H

#include "catalog.h"

extern void projection_replay_expect_empty(void);
extern int64 projection_replay_events(ProjectionDef *def, int64 from, int64 upto, int64 *last);
extern int64 projection_replay_skipped(void);
extern int64 projection_replay_inline(ProjectionDef *def, int64 from, int64 *last);
extern void projection_empty_tables(ProjectionDef *def);
extern void projection_replay_at_abort(SubTransactionId subid);

#endif							/* PROJECTION_REPLAY_H */
