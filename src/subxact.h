/*-------------------------------------------------------------------------
 *
 * subxact.h
 *	  Running a piece of work in an internal subtransaction (subxact.c).
 *
 * IDENTIFICATION
 *	  src/subxact.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SUBXACT_H
#define PROJECTION_SUBXACT_H

#include "utils/elog.h"
#include "utils/palloc.h"

/* the work: true to keep it (release the subtransaction), false to roll it back */
typedef bool (*ProjectionSubxactBody) (void *arg);

extern bool projection_subxact_run(ProjectionSubxactBody body, void *arg,
								   MemoryContext errcxt, ErrorData **edata);

#endif							/* PROJECTION_SUBXACT_H */
