/*-------------------------------------------------------------------------
 *
 * checkpoint.h
 *	  Checkpoints of projections, in both versions of the schema
 *	  (checkpoint.c).
 *
 * IDENTIFICATION
 *	  src/checkpoint.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_CHECKPOINT_H
#define PROJECTION_CHECKPOINT_H

#include "executor/spi.h"
#include "utils/snapshot.h"

extern const char *projection_checkpoint_sql(void);
extern int64 projection_checkpoint_read(int32 id, int64 position, Snapshot snapshot);
extern void projection_forget_checkpoints(int32 id);
extern const char *projection_checkpoint_saved_at_sql(void);
extern void projection_checkpoint_reset(int32 id);
extern void projection_checkpoint_save(int32 id, int64 *checkpoint, bool *catching_up,
									   int64 position, bool caught_up);
extern SPIPlanPtr projection_checkpoint_lock_plan(void);
extern SPIPlanPtr projection_checkpoint_restoring_plan(void);

#endif							/* PROJECTION_CHECKPOINT_H */
