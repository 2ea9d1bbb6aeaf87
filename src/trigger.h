/*-------------------------------------------------------------------------
 *
 * trigger.h
 *	  Triggers on the event store and the per-transaction state of an
 *	  appending backend.
 *
 * IDENTIFICATION
 *	  src/trigger.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_TRIGGER_H
#define PROJECTION_TRIGGER_H

#include "utils/relcache.h"

/*
 * projection.append() catches the position the trigger gives its row: begin
 * saves the capture of an append in progress (a handler's append nests) and
 * starts a new one, end returns the position and restores the saved capture.
 */
typedef struct ProjectionAppendCapture
{
	bool		active;
	int64		position;
} ProjectionAppendCapture;

extern int64 projection_stream_version(text *stream_id);
extern void projection_append_capture_begin(ProjectionAppendCapture *saved);
extern int64 projection_append_capture_end(const ProjectionAppendCapture *saved);
extern void projection_request_launcher_at_commit(void);
extern bool projection_appended_in_xact(void);
extern void projection_register_xact_callbacks(void);
extern void projection_warn_untracked_events(void);

/* set by projection.create() while it inserts its registry row */
extern bool projection_creating;

#endif							/* PROJECTION_TRIGGER_H */
