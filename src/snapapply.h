/*-------------------------------------------------------------------------
 *
 * snapapply.h
 *	  One batch of events folded into a snapshot projection's stored
 *	  states (snapapply.c), for batch.c and snapshot.c.
 *
 * IDENTIFICATION
 *	  src/snapapply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SNAPAPPLY_H
#define PROJECTION_SNAPAPPLY_H

#include "access/htup.h"

extern char *projection_snapshot_statement(const char *name);
extern int32 projection_snapshot_running_batch(void);
extern void projection_snapshot_set_running_batch(int32 projection_id);
extern int64 projection_snapshot_apply_rows(const char *name, HeapTuple *rows, int nrows,
											bool fresh, bool alone);
extern int64 projection_snapshot_apply_datums(const char *name, Datum *datums, bool *nulls,
											  int n, bool fresh);

#endif							/* PROJECTION_SNAPAPPLY_H */
