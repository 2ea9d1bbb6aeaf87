/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  Shared state of the projection extension: the registry of appending
 *	  transactions, the per-database worker slots, the launcher's latch and
 *	  the published progress of every projection.
 *
 * IDENTIFICATION
 *	  src/shmem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SHMEM_H
#define PROJECTION_SHMEM_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/snapshot.h"
#include "access/tupdesc.h"

/*
 * One entry per backend (indexed by MyBackendId - 1): the top-level xid of a
 * transaction that has appended events and not yet ended, and the lowest
 * position it holds.  Written only by its own backend, read without locks by
 * workers (see the ordering rules in horizon.c).
 */
typedef struct ProjectionAppender
{
	pg_atomic_uint32 xid;		/* InvalidTransactionId when idle */
	pg_atomic_uint32 dboid;
	pg_atomic_uint64 min_pos;	/* 0 while not yet known */
} ProjectionAppender;

/* an appending transaction as seen by a reader */
typedef struct ProjectionAppenderSeen
{
	TransactionId xid;
	uint64		min_pos;		/* 0: not yet known */
} ProjectionAppenderSeen;

/*
 * A slot of the worker pool (pool.c): one worker, bound to one database and
 * one of its worker groups while it runs.  Protected by
 * ProjectionShared->lock, except that committing backends read dboid, index
 * and pgprocno without it to set a latch (pool.c says why that is safe).
 */
typedef struct ProjectionDbSlot
{
	Oid			dboid;			/* InvalidOid: slot unused */
	int			index;			/* which of the database's workers (0-based) */
	pid_t		pid;			/* worker pid, -1 while starting, -2 while the
								 * worker that left still holds its background
								 * worker slot (the launcher reaps it), 0: none */
	int			pgprocno;		/* worker's PGPROC number while it takes
								 * wake-ups from commits, else -1 */
	int			latchno;		/* worker's PGPROC number while it runs */
	bool		leaving;		/* idle: looking for work a last time, then exits */
	bool		exit_requested; /* asked to leave when idle (slot wanted elsewhere, DROP DATABASE) */
	bool		probe;			/* started after a server start: leave once caught up */
	TimestampTz idle_since;		/* when the worker last found nothing to do; 0 while busy */
	TransactionId batch_xid;	/* the worker's xid while it applies a batch */
	bool		cancel_requested;	/* a management call cancelled that batch */
} ProjectionDbSlot;

/*
 * A management call (pause, drop, ... or DROP EXTENSION) waiting for a
 * projection's registry row, or a whole database, that a worker's batch
 * holds: one entry per backend (MyBackendId - 1), written only by its
 * backend, read by workers without a lock.  Workers leave the projection
 * (projection_id 0: every projection of the database) alone meanwhile.
 */
typedef struct ProjectionHold
{
	pg_atomic_uint32 dboid;		/* InvalidOid: no projection hold */
	pg_atomic_uint32 projection_id;
	/*
	 * A DROP EXTENSION's hold on a whole database, kept apart: a management
	 * call later in the same transaction posts and releases its projection
	 * hold without touching it.
	 */
	pg_atomic_uint32 database;	/* InvalidOid: no database hold */
} ProjectionHold;

typedef struct ProjectionProgressKey
{
	Oid			dboid;
	int32		projection_id;
} ProjectionProgressKey;

/* published progress of one projection (hash entry, under ->lock) */
typedef struct ProjectionProgress
{
	ProjectionProgressKey key;
	int64		applied;		/* checkpoint, as committed */
	int64		rebuild_done;	/* events replayed by a running rebuild */
	int64		rebuild_total;
} ProjectionProgress;

/*
 * Registry generations, for a database's registry caches (catalog.c): a
 * transaction that changed the registry counts itself in "changing" and
 * bumps "gen" before its commit becomes visible, and bumps "gen" again and
 * leaves "changing" after.  Databases share the slot of their oid modulo
 * the number of slots; sharing only costs a reload.
 */
#define PROJECTION_REGISTRY_GEN_SLOTS 64

typedef struct ProjectionRegistryGen
{
	pg_atomic_uint64 gen;
	pg_atomic_uint32 changing;
	/* registry loads made while a change was committing (pool.c) */
	pg_atomic_uint64 untrusted_loads;
} ProjectionRegistryGen;

typedef struct ProjectionSharedState
{
	LWLock	   *lock;
	ProjectionRegistryGen registry_gens[PROJECTION_REGISTRY_GEN_SLOTS];
	int			launcher_pgprocno;	/* -1 when no launcher runs */
	pid_t		launcher_pid;
	/* broadcast after every checkpoint commit, per database (oid modulo) */
	ConditionVariable progress_cvs[PROJECTION_REGISTRY_GEN_SLOTS];
	/* broadcast at every appender's commit or abort, per database (feed.c) */
	ConditionVariable feed_cvs[PROJECTION_REGISTRY_GEN_SLOTS];
	int			ndbslots;
	ProjectionDbSlot dbslots[FLEXIBLE_ARRAY_MEMBER];
} ProjectionSharedState;

extern ProjectionSharedState *ProjectionShared;
extern ProjectionAppender *ProjectionAppenders;
extern ProjectionHold *ProjectionHolds;
extern HTAB *ProjectionProgressHash;
extern int	ProjectionNumAppenders;

extern void projection_shmem_install_hooks(void);
extern void projection_set_latch(int procno);
extern void projection_wake_launcher(void);
extern void projection_wake_database_worker(Oid dboid);
extern ConditionVariable *projection_feed_cv(Oid dboid);
extern void projection_feed_wake(Oid dboid);
extern void projection_request_launcher_at_commit(void);
extern bool projection_launcher_requested(void);
extern void projection_launcher_request_at_eoxact(bool commit);
extern ProjectionDbSlot *projection_find_dbslot(Oid dboid, int index);
extern void projection_slot_clear(ProjectionDbSlot *slot);
extern void projection_registry_change_begin(Oid dboid);
extern void projection_registry_change_end(Oid dboid);
extern bool projection_registry_generation(Oid dboid, uint64 *gen);
extern void projection_registry_note_untrusted(Oid dboid);
extern uint64 projection_registry_untrusted_loads(Oid dboid);

#endif							/* PROJECTION_SHMEM_H */
