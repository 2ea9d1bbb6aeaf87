/*-------------------------------------------------------------------------
 *
 * snapshot.h
 *	  Snapshot projections: per-stream states folded by the extension.
 *
 * IDENTIFICATION
 *	  src/snapshot.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SNAPSHOT_H
#define PROJECTION_SNAPSHOT_H

extern void projection_snapshot_forget(int32 projection_id);
extern void projection_snapshot_types_changed(int32 projection_id);

#endif							/* PROJECTION_SNAPSHOT_H */
