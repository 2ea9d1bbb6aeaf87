/*-------------------------------------------------------------------------
 *
 * events.h
 *	  The event store (events.c).
 *
 * IDENTIFICATION
 *	  src/events.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_EVENTS_H
#define PROJECTION_EVENTS_H

#include "utils/acl.h"

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

extern void projection_check_events_privilege(AclMode what, const char *action);
extern void projection_append_capture_begin(ProjectionAppendCapture *saved);
extern int64 projection_append_capture_end(const ProjectionAppendCapture *saved);
extern bool projection_statement_imported(void);
extern void projection_warn_untracked_events(void);

extern void projection_events_at_eoxact(void);
extern void projection_events_at_subxact_abort(SubTransactionId mySubid);
extern void projection_events_at_subxact_commit(SubTransactionId mySubid,
												SubTransactionId parentSubid);

#endif							/* PROJECTION_EVENTS_H */
