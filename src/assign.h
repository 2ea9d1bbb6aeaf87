/*-------------------------------------------------------------------------
 *
 * assign.h
 *	  The launcher's decisions over the demand table (assign.c).
 *
 * IDENTIFICATION
 *	  src/assign.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_ASSIGN_H
#define PROJECTION_ASSIGN_H

#include "utils/timestamp.h"

/* a row of pg_database, as the launcher reads it each pass */
typedef struct LauncherDb
{
	Oid			oid;
	bool		connectable;	/* not a template, allows connections */
	char		name[NAMEDATALEN];
} LauncherDb;

/* a worker to start once the lock is released */
typedef struct LauncherStart
{
	int			slotno;
	Oid			dboid;
	int			index;
	bool		probe;
	char		name[NAMEDATALEN];
} LauncherStart;

extern TimestampTz projection_assign_slots(LauncherDb *dbs, int ndbs, TimestampTz now,
										   TimestampTz next, LauncherStart *starts,
										   int *nstarts, int *nwaiting);
extern void projection_assign_evict(int nwaiting);
extern TimestampTz projection_assign_next_retry(TimestampTz now, TimestampTz next);

#endif							/* PROJECTION_ASSIGN_H */
