/*-------------------------------------------------------------------------
 *
 * replaychunk.h
 *	  One chunk of a replay applied to its projection (replaychunk.c).
 *
 * IDENTIFICATION
 *	  src/replaychunk.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_REPLAYCHUNK_H
#define PROJECTION_REPLAYCHUNK_H

#include "catalog.h"
#include "eventread.h"

extern int64 projection_replay_chunk(ProjectionDef *def, ProjectionEventRows *rows,
									 MemoryContext event_cxt, int64 *skipped);

#endif							/* PROJECTION_REPLAYCHUNK_H */
