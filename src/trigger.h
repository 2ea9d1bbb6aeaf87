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

extern int64 projection_stream_version(text *stream_id);
extern int64 projection_last_position(void);
extern void projection_request_launcher_at_commit(void);
extern bool projection_appended_in_xact(void);
extern void projection_register_xact_callbacks(void);

/* set by projection.create() while it inserts its registry row */
extern bool projection_creating;

#endif							/* PROJECTION_TRIGGER_H */
