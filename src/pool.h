/*-------------------------------------------------------------------------
 *
 * pool.h
 *	  Workers on demand: the per-database demand table that backends post
 *	  to, and the wait events of our processes.
 *
 * IDENTIFICATION
 *	  src/pool.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_POOL_H
#define PROJECTION_POOL_H

#include "port/atomics.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "catalog.h"

/* databases that can ask for a worker between two server starts */
#define PROJECTION_POOL_DATABASES 4096

/*
 * What one database asks of the pool.  dboid is set once, under the pool's
 * spinlock (an entry is freed only by the launcher, for a database that no
 * longer exists, when no backend can be connected to it); pending is
 * or-ed into by committing backends without a lock; the rest is read and
 * written under ProjectionShared->lock.
 */
typedef struct ProjectionDbDemand
{
	pg_atomic_uint32 dboid;		/* InvalidOid: entry free */
	pg_atomic_uint32 pending;	/* worker groups asked for, not yet seen by the launcher */
	pg_atomic_uint32 waiting;	/* groups waiting for a free pool slot, as of the
								 * launcher's last pass (written by it only) */
	uint32		wanted;			/* groups the launcher has still to give a worker */
	bool		probe;			/* the wanted workers only look (after a server start) */
	int			stop;			/* > 0: start no worker (utility.c's database commands) */
	TimestampTz stop_until;		/* when "stop" lapses */
	TimestampTz waiting_since;	/* a group waits for a free pool slot; 0: none waits */
	bool		start_failed;	/* the last start could not register a background worker */
	int			failures;		/* workers of this database that exited abnormally in a row */
	TimestampTz next_start;		/* back-off after failures */
	uint64		starts;			/* workers started for this database */
} ProjectionDbDemand;

typedef struct ProjectionPoolState
{
	slock_t		mutex;			/* taking an entry (and freeing one) */
	pg_atomic_uint32 nused;		/* entries [0, nused) may be taken */
	pg_atomic_uint32 overflow;	/* a commit found no entry for its database */
	pg_atomic_uint32 nwaiting;	/* groups waiting for a slot, as of the launcher's last pass */
	bool		probed;			/* the launcher has looked at every database since the server started */
	ProjectionDbDemand dbs[PROJECTION_POOL_DATABASES];
} ProjectionPoolState;

extern ProjectionPoolState *ProjectionPool;

/* the wait events of our processes (pg_stat_activity.wait_event on 17 and later) */
typedef enum ProjectionWaitEvent
{
	PROJECTION_WAIT_WORKER_IDLE,	/* a worker waits for events */
	PROJECTION_WAIT_WORKER_BACKOFF, /* a worker waits before retrying after an error */
	PROJECTION_WAIT_LAUNCHER,	/* the launcher waits for requests */
	PROJECTION_WAIT_WORKER_STOP,	/* a database command waits for the database's workers to leave */
	PROJECTION_WAIT_COUNT
} ProjectionWaitEvent;

extern uint32 projection_wait_event(ProjectionWaitEvent which);

extern void projection_pool_install_hooks(void);

/* asking for workers (poolcommit.c) */
extern uint32 projection_pool_group_bit(int32 projection_id);
extern void projection_pool_ask(uint32 groups);

/* a restoring session (registry.c): its groups are asked for when it ends */
extern void projection_pool_note_restored(int32 projection_id);

/* the launcher and the workers */
extern ProjectionDbDemand *projection_pool_demand(Oid dboid, bool create);
extern uint32 projection_pool_all_groups(void);

/* database commands (utility.c) */
extern bool projection_pool_stop_database(Oid dboid, bool stop, bool terminate, TimestampTz until);
extern void projection_pool_release_database(Oid dboid);

/* why async projections of a database cannot run, or NULL (api.c) */
extern const char *projection_pool_unavailable(Oid dboid, char **hint);
extern bool projection_pool_waiting(Oid dboid);
extern bool projection_pool_group_waiting(Oid dboid, int32 projection_id);

#endif							/* PROJECTION_POOL_H */
