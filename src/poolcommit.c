/*-------------------------------------------------------------------------
 *
 * poolcommit.c
 *	  Workers on demand, the committing backend's side: which worker groups
 *	  of its database a transaction has given async work, found before the
 *	  commit and asked for once it is visible (pool.c, projection_pool_ask).
 *
 *	- the position trigger notes which groups have a running async
 *	  projection (projection_pool_note_append); a database without async
 *	  projections notes nothing;
 *	- a management call, a restore or re-enabled triggers ask for the
 *	  launcher (shmem.c, projection_request_launcher_at_commit): at
 *	  pre-commit (projection_pool_at_pre_commit) the registry, read without
 *	  SPI, says which groups then have async work;
 *	- at commit (projection_pool_at_commit, from xact.c) those groups are
 *	  asked for: their workers are woken, and the launcher gets a request
 *	  for each group without one.
 *
 * State: per transaction, in backend-local memory, cleared at commit and
 * abort.  The commit step takes no lock but pool.c's spinlock and cannot
 * fail.
 *
 * IDENTIFICATION
 *	  src/poolcommit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "checkpoint.h"
#include "horizon.h"
#include "ownerentry.h"
#include "pool.h"
#include "poolcommit.h"
#include "projection.h"
#include "shmem.h"

/* worker groups with a running async projection this transaction appended for */
static uint32 pool_xact_groups = 0;

/*
 * A management call's commit: the groups of every running or catching-up
 * async projection (pool_groups_with_work), and the count of untrusted
 * registry loads read before the change began to commit
 * (projection_pool_before_registry_change).
 */
static uint32 pool_xact_candidates = 0;
static uint64 pool_xact_untrusted_loads = 0;

/*
 * The position trigger: this statement appended events, and the registry
 * (current for the statement) says which groups have a running async
 * projection.  A database without one notes nothing, so its commit wakes
 * nobody.
 */
void
projection_pool_note_append(ProjectionRegistry *registry)
{
	int			i;

	for (i = 0; i < registry->nprojections; i++)
	{
		ProjectionDef *def = &registry->projections[i];

		if (!def->is_inline &&
			(def->state == PROJECTION_RUNNING || def->state == PROJECTION_CATCHING_UP))
			pool_xact_groups |= projection_pool_group_bit(def->id);
	}
}

/* the text column "att" of a registry row equals "value" */
static bool
pool_text_is(HeapTuple tup, TupleDesc desc, int att, const char *value)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, att, desc, &isnull);

	return !isnull && strcmp(TextDatumGetCString(d), value) == 0;
}

/*
 * The worker groups of this database that have async work as this
 * transaction leaves the registry: an async projection catching up, or
 * running with its checkpoint (projection_checkpoint_read) below the
 * sequence's last value; *candidates gets the groups of every such
 * projection, with work or not.  A restored row (restored_pid set, 1.1 and
 * later) has work whatever its checkpoint: in a parallel restore the
 * registry rows, the events and the sequence are restored by different
 * sessions, and the commit that restores the rows may look before the
 * events are in while the commit that restores the events looks before the
 * rows are visible to it; the worker asked for here leaves the projection
 * alone while the restoring session lives, without holding its pool slot
 * for it (workerstep.c), and the end of that session asks for the group
 * again (pool.c): a worker then applies what lags.  Group 0 has work too
 * when a registry row lacks the pg_shdepend entry of its owner (a restore
 * with triggers disabled, pg_upgrade, an owner that is gone): the database's first
 * worker records the entries and fails projections whose owner is gone
 * (depend.c, projection_depend_check_owners).  That is looked at only where
 * the entries are kept (1.2 and later: the _registry_owner trigger); the
 * bootstrap superuser is pinned and never gets one.  Groups without such a
 * projection have nothing for a worker to do.
 *
 * Runs at every commit of a management call, so it reads the registry
 * with a heap scan and index look-ups under a snapshot that sees this
 * transaction's changes (as the query it replaces did), not through SPI,
 * which parsed and planned that query each time (about 4x the cost).  0 where the
 * extension is not (or no longer) installed.  Takes AccessShareLock on the
 * registry and checkpoints; raises only on can't-happen failures.
 */
static uint32
pool_groups_with_work(uint32 *candidates)
{
	const ProjectionOids *o;
	Relation	rel;
	TupleDesc	desc;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snapshot;
	int64		last;
	bool		check_owners;
	bool		owners_missing = false;
	uint32		groups = 0;
	int			att_id,
				att_mode,
				att_state,
				att_position,
				att_owner,
				att_restored;

	*candidates = 0;
	if (!OidIsValid(get_extension_oid(PROJECTION_EXTENSION_NAME, true)))
		return 0;
	o = projection_oids();
	check_owners = OidIsValid(get_trigger_oid(o->registry, "_registry_owner", true));
	/* as a query through SPI would: this transaction's last change visible */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	last = projection_sequence_last_value();

	rel = table_open(o->registry, AccessShareLock);
	desc = RelationGetDescr(rel);
	att_id = SPI_fnumber(desc, "id");
	att_mode = SPI_fnumber(desc, "mode");
	att_state = SPI_fnumber(desc, "state");
	att_position = SPI_fnumber(desc, "position");
	att_owner = SPI_fnumber(desc, "owner");
	att_restored = SPI_fnumber(desc, "restored_pid");	/* none in 1.0 */
	if (att_id <= 0 || att_mode <= 0 || att_state <= 0 || att_position <= 0 || att_owner <= 0)
		elog(ERROR, "projection.projections lacks a column the pool reads");
	scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		int32		id = DatumGetInt32(heap_getattr(tup, att_id, desc, &isnull));
		Oid			owner = DatumGetObjectId(heap_getattr(tup, att_owner, desc, &isnull));

		if (check_owners && !owners_missing && owner != BOOTSTRAP_SUPERUSERID &&
			!projection_owner_entry_exists(o->registry, id, owner))
			owners_missing = true;
		if (!pool_text_is(tup, desc, att_mode, "async"))
			continue;
		if (pool_text_is(tup, desc, att_state, "catching_up"))
			groups |= projection_pool_group_bit(id);
		else if (pool_text_is(tup, desc, att_state, "running"))
		{
			int64		position = DatumGetInt64(heap_getattr(tup, att_position, desc, &isnull));

			if ((att_restored > 0 && !heap_attisnull(tup, att_restored, desc)) ||
				projection_checkpoint_read(id, position, snapshot) < last)
				groups |= projection_pool_group_bit(id);
		}
		else
			continue;
		*candidates |= projection_pool_group_bit(id);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	if (owners_missing)
		groups |= 1;
	return groups;
}

/*
 * Pre-commit (xact.c), while the transaction can still read: a management
 * call (create, resume, rebuild, skip), a restore or re-enabled triggers
 * asked for workers (projection_request_launcher_at_commit, shmem.c).  Only
 * the groups that now have async work get one at commit; a projection
 * created at the end of the store, or resumed or rebuilt with nothing left
 * to apply, asks for nothing, and the other groups of the database are not
 * disturbed.
 */
void
projection_pool_at_pre_commit(void)
{
	uint32		candidates;

	if (ProjectionShared == NULL || !projection_launcher_requested())
		return;
	pool_xact_groups |= pool_groups_with_work(&candidates);
	pool_xact_candidates |= candidates;
}

/*
 * Pre-commit, before this transaction's registry change begins to commit
 * (xact.c; registry.c then calls projection_registry_change_begin, and only
 * after that does projection_pool_at_pre_commit look for work).  An append
 * that draws its position after that look, while the change is not yet
 * visible, may read a registry without it (a resumed or created projection
 * missing) and ask for no worker: but such a registry load happens while
 * the change is committing, and counts itself (catalog.c,
 * projection_registry_note_untrusted) before taking its snapshot.  An
 * append that loaded its registry before the change began drew its position
 * before the look, which sees it.  projection_pool_at_commit, after our
 * commit became visible, compares the count with the one read here.
 */
void
projection_pool_before_registry_change(void)
{
	pool_xact_untrusted_loads = projection_registry_untrusted_loads(MyDatabaseId);
}

/*
 * Commit callback (xact.c, every commit): for the groups noted in this
 * transaction, wake their workers, and ask the launcher for a worker for
 * each that has none; the workers of other groups are left alone.  (An
 * appending commit wakes every worker of the database anyway: horizon.c.)
 * No locks but the spinlock of projection_pool_demand, no allocation, no
 * errors.
 */
void
projection_pool_at_commit(void)
{
	uint32		groups = pool_xact_groups;

	/* someone read the registry while our change was committing */
	if ((pool_xact_candidates & ~groups) != 0 &&
		projection_registry_untrusted_loads(MyDatabaseId) != pool_xact_untrusted_loads)
		groups |= pool_xact_candidates;
	pool_xact_groups = 0;
	pool_xact_candidates = 0;
	/* our commit is visible */
	projection_pool_ask(groups);
}

/* Abort callback: nothing to ask for, nothing to log. */
void
projection_pool_at_abort(void)
{
	pool_xact_groups = 0;
	pool_xact_candidates = 0;
}
