/*-------------------------------------------------------------------------
 *
 * poolcommit.h
 *	  Workers on demand, the committing backend's side: the worker groups a
 *	  transaction gave async work, asked for at its commit.
 *
 * IDENTIFICATION
 *	  src/poolcommit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_POOLCOMMIT_H
#define PROJECTION_POOLCOMMIT_H

#include "catalog.h"

/* the position trigger (inline.c) */
extern void projection_pool_note_append(ProjectionRegistry *registry);

/* the transaction callbacks (xact.c) */
extern void projection_pool_before_registry_change(void);
extern void projection_pool_at_pre_commit(void);
extern void projection_pool_at_commit(void);
extern void projection_pool_at_abort(void);

#endif							/* PROJECTION_POOLCOMMIT_H */
