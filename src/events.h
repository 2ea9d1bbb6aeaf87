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

extern void projection_check_events_privilege(AclMode what, const char *action);

#endif							/* PROJECTION_EVENTS_H */
