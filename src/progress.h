/*-------------------------------------------------------------------------
 *
 * progress.h
 *	  Published progress of projections (progress.c).
 *
 * IDENTIFICATION
 *	  src/progress.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_PROGRESS_H
#define PROJECTION_PROGRESS_H

#include "access/tupdesc.h"
#include "storage/condition_variable.h"
#include "utils/tuplestore.h"

extern void projection_publish_progress(Oid dboid, int32 projection_id, int64 applied);
extern void projection_publish_rebuild(Oid dboid, int32 projection_id, int64 done, int64 total);
extern void projection_forget_progress(Oid dboid, int32 projection_id);
extern void projection_progress_report(Oid dboid, Tuplestorestate *store, TupleDesc desc);
extern int64 projection_progress_applied(Oid dboid, int32 projection_id);
extern ConditionVariable *projection_progress_cv(Oid dboid);

#endif							/* PROJECTION_PROGRESS_H */
