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

extern const char *projection_checkpoint_sql(void);
extern void projection_forget_checkpoints(int32 id);

#endif							/* PROJECTION_CHECKPOINT_H */
