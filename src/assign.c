/*-------------------------------------------------------------------------
 *
 * assign.c
 *	  The launcher's decisions: giving the shared pool's slots to the worker
 *	  groups that databases want (demand table, pool.c).
 *
 * For each wanted group of a database that exists and allows connections:
 * wake its worker if one runs and takes wake-ups; wait if that worker is
 * leaving (it wakes the launcher when gone, or stays); else bind a free
 * pool slot for a worker that launcher.c starts once the lock is released,
 * unless the database is stopped by a database command (utility.c) or its
 * workers failed recently (back-off); with no free slot, count the group as
 * waiting (projection.status shows it) and ask the longest-idle workers to
 * leave.  The entries of databases that are gone are forgotten.
 *
 * Locking: every decision is taken under ProjectionShared->lock held
 * exclusively, and nothing here can fail while it is held; a demand entry
 * is freed under the pool's spinlock as well (pool.c's rules).
 *
 * IDENTIFICATION
 *	  src/assign.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "assign.h"
#include "pool.h"
#include "projection.h"
#include "shmem.h"

static LauncherDb *
assign_find_database(LauncherDb *dbs, int ndbs, Oid oid)
{
	int			i;

	for (i = 0; i < ndbs; i++)
		if (dbs[i].oid == oid)
			return &dbs[i];
	return NULL;
}

/* what assign_group() did for one wanted group */
typedef enum AssignOutcome
{
	ASSIGN_GROUP_SERVED,		/* woken, starting, or given a slot: no longer wanted */
	ASSIGN_GROUP_KEPT,		/* still wanted: its worker is leaving, or a back-off runs */
	ASSIGN_GROUP_WAITING		/* still wanted: no free pool slot */
} AssignOutcome;

/*
 * A database that is gone (or became a template, or no longer allows
 * connections): never start a worker there, and forget what it wanted.
 * Returns whether its entry can be freed (gone, and no slot or stop refers
 * to it).  Caller holds ProjectionShared->lock exclusively.
 */
static bool
assign_forget_wants(ProjectionDbDemand *e, LauncherDb *db)
{
	bool		has_slot = false;
	int			i;

	e->wanted = 0;
	e->waiting_since = 0;
	pg_atomic_write_u32(&e->waiting, 0);
	for (i = 0; i < ProjectionShared->ndbslots; i++)
		if (ProjectionShared->dbslots[i].dboid == pg_atomic_read_u32(&e->dboid))
			has_slot = true;
	return db == NULL && !has_slot && e->stop == 0;
}

/*
 * One wanted group of a database: wake its worker, wait for it, or bind a
 * free pool slot for a worker to start once the lock is released
 * (appended to *starts).  Caller holds ProjectionShared->lock exclusively.
 */
static AssignOutcome
assign_group(ProjectionDbDemand *e, LauncherDb *db, int index, TimestampTz now,
					 LauncherStart *starts, int *nstarts)
{
	ProjectionDbSlot *slot = projection_find_dbslot(db->oid, index);
	LauncherStart *start;

	if (slot != NULL)
	{
		if (slot->pid > 0 && slot->pgprocno >= 0)
		{
			/* it runs and takes wake-ups: a commit raced with its start */
			projection_set_latch(slot->pgprocno);
			return ASSIGN_GROUP_SERVED;
		}
		if (slot->pid == -1)
			return ASSIGN_GROUP_SERVED;	/* starting: its first round sees the commit */
		/* else leaving: it stays (and takes wake-ups) or wakes us when gone */
		return ASSIGN_GROUP_KEPT;
	}
	if (e->next_start > now)
		return ASSIGN_GROUP_KEPT;
	slot = projection_find_dbslot(InvalidOid, 0);
	if (slot == NULL || *nstarts >= ProjectionShared->ndbslots)
		return ASSIGN_GROUP_WAITING;

	projection_slot_clear(slot);
	slot->dboid = db->oid;
	slot->index = index;
	slot->pid = -1;
	slot->probe = e->probe;
	start = &starts[(*nstarts)++];
	start->slotno = slot - ProjectionShared->dbslots;
	start->dboid = db->oid;
	start->index = index;
	start->probe = e->probe;
	strlcpy(start->name, db->name, NAMEDATALEN);
	return ASSIGN_GROUP_SERVED;
}

/*
 * Decide for one database's entry, under ProjectionShared->lock held
 * exclusively: wake or start its wanted groups' workers (appending to
 * *starts), or count them as waiting for a slot (*nwaiting, and the
 * entry's "waiting" groups that projection.status shows).  Returns whether
 * the entry should be freed (its database is gone).
 */
static bool
assign_database(ProjectionDbDemand *e, LauncherDb *db, TimestampTz now,
			   LauncherStart *starts, int *nstarts, int *nwaiting)
{
	int			index;
	bool		waiting = false;
	uint32		waiting_groups = 0;

	e->wanted |= pg_atomic_exchange_u32(&e->pending, 0);
	if (e->stop > 0 && e->stop_until <= now)
		e->stop = 0;

	if (db == NULL || !db->connectable)
		return assign_forget_wants(e, db);
	if (e->stop > 0)
		return false;

	for (index = 0; index < 32 && e->wanted != 0; index++)
	{
		uint32		bit = (uint32) 1 << index;

		if ((e->wanted & bit) == 0)
			continue;
		switch (assign_group(e, db, index, now, starts, nstarts))
		{
			case ASSIGN_GROUP_SERVED:
				e->wanted &= ~bit;
				break;
			case ASSIGN_GROUP_KEPT:
				break;
			case ASSIGN_GROUP_WAITING:
				/* a probe waits for a free slot; real work may have an idle worker leave */
				waiting = true;
				waiting_groups |= bit;
				if (!e->probe)
					(*nwaiting)++;
				break;
		}
	}
	if (e->wanted == 0)
		e->probe = false;
	pg_atomic_write_u32(&e->waiting, waiting_groups);
	if (!waiting)
		e->waiting_since = 0;
	else if (e->waiting_since == 0)
	{
		e->waiting_since = now;
		elog(DEBUG1, "projection: database \"%s\" waits for a free worker slot", db->name);
	}
	return false;
}

/*
 * Ask idle workers to leave so that waiting groups get their slots: as many
 * as groups wait, less those already leaving, longest idle first.  Caller
 * holds ProjectionShared->lock exclusively.
 */
void
projection_assign_evict(int nwaiting)
{
	int			i;

	/* slots that are being given back already: asked to leave, or left and not yet reaped */
	for (i = 0; i < ProjectionShared->ndbslots; i++)
		if ((OidIsValid(ProjectionShared->dbslots[i].dboid) &&
			 ProjectionShared->dbslots[i].exit_requested) ||
			ProjectionShared->dbslots[i].pid == -2)
			nwaiting--;
	while (nwaiting-- > 0)
	{
		ProjectionDbSlot *victim = NULL;

		for (i = 0; i < ProjectionShared->ndbslots; i++)
		{
			ProjectionDbSlot *slot = &ProjectionShared->dbslots[i];

			if (slot->pid > 0 && slot->pgprocno >= 0 && slot->idle_since != 0 &&
				!slot->exit_requested &&
				(victim == NULL || slot->idle_since < victim->idle_since))
				victim = slot;
		}
		if (victim == NULL)
			break;
		victim->exit_requested = true;
		projection_set_latch(victim->latchno);
	}
}

/* Free a demand entry whose database is gone; caller holds ProjectionShared->lock. */
static void
assign_free_entry(ProjectionDbDemand *e)
{
	memset(((char *) e) + offsetof(ProjectionDbDemand, wanted), 0,
		   sizeof(ProjectionDbDemand) - offsetof(ProjectionDbDemand, wanted));
	SpinLockAcquire(&ProjectionPool->mutex);
	pg_atomic_write_u32(&e->dboid, InvalidOid);
	SpinLockRelease(&ProjectionPool->mutex);
}

/*
 * Serve every entry of the demand table (assign_database), taking
 * ProjectionShared->lock for each.  Returns when the next pass is due for
 * back-offs and stops that lapse (at most "next").
 */
TimestampTz
projection_assign_slots(LauncherDb *dbs, int ndbs, TimestampTz now, TimestampTz next,
				   LauncherStart *starts, int *nstarts, int *nwaiting)
{
	uint32		nused = pg_atomic_read_u32(&ProjectionPool->nused);
	uint32		i;

	for (i = 0; i < nused; i++)
	{
		ProjectionDbDemand *e = &ProjectionPool->dbs[i];
		Oid			oid = pg_atomic_read_u32(&e->dboid);

		if (!OidIsValid(oid))
			continue;
		LWLockAcquire(ProjectionShared->lock, LW_EXCLUSIVE);
		if (assign_database(e, assign_find_database(dbs, ndbs, oid), now,
						   starts, nstarts, nwaiting))
			assign_free_entry(e);
		else
		{
			if (e->wanted != 0 && e->stop == 0 && e->next_start > now && e->next_start < next)
				next = e->next_start;
			if (e->stop > 0 && e->stop_until < next)
				next = e->stop_until;
		}
		LWLockRelease(ProjectionShared->lock);
	}
	return next;
}

/* A start that failed asked to be retried: the next pass is due then (at most "next"). */
TimestampTz
projection_assign_next_retry(TimestampTz now, TimestampTz next)
{
	uint32		nused = pg_atomic_read_u32(&ProjectionPool->nused);
	uint32		i;

	LWLockAcquire(ProjectionShared->lock, LW_SHARED);
	for (i = 0; i < nused; i++)
	{
		ProjectionDbDemand *e = &ProjectionPool->dbs[i];

		if (OidIsValid(pg_atomic_read_u32(&e->dboid)) && e->wanted != 0 && e->stop == 0 &&
			e->next_start > now && e->next_start < next)
			next = e->next_start;
	}
	LWLockRelease(ProjectionShared->lock);
	return next;
}
