/*-------------------------------------------------------------------------
 *
 * deadletter.h
 *	  Dead letters: recording one, and the way out of poison events
 *	  (deadletter.c).
 *
 * IDENTIFICATION
 *	  src/deadletter.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_DEADLETTER_H
#define PROJECTION_DEADLETTER_H

#include "utils/elog.h"

extern void projection_dead_letter_record(const char *name, int64 position,
										  const char *event_type, const char *stream_id,
										  ErrorData *edata);

#endif							/* PROJECTION_DEADLETTER_H */
