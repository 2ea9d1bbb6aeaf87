/*-------------------------------------------------------------------------
 *
 * depend.c
 *	  Dependencies of projections on their handler function, read-model
 *	  tables and owner role, enforced the way PostgreSQL enforces its own:
 *	  DROP FUNCTION / DROP TABLE of what a projection uses and DROP ROLE of
 *	  its owner fail with 2BP01; CASCADE drops the projection (as it drops a
 *	  view), DROP OWNED BY drops the role's projections and REASSIGN OWNED BY
 *	  gives them to the new role.
 *
 * Why not pg_depend alone.  A projection is a row of projection.projections,
 * not a catalog object.  PostgreSQL 15 can record a pg_depend or pg_shdepend
 * entry whose classid is that table, but everything that describes or drops
 * such an entry (getObjectClass, getObjectDescription, shdepDropOwned,
 * shdepReassignOwned) fails with "unrecognized object class" (XX000) when it
 * meets one in the current database.  So:
 *
 * - Functions and tables: no catalog entry.  The object access hook sees
 *   every object PostgreSQL deletes (OAT_DROP, whatever the command: DROP
 *   FUNCTION, DROP SCHEMA ... CASCADE, DROP OWNED, DROP EXTENSION of another
 *   extension) and looks the object up in the registry.  The utility hook
 *   tells it whether the command said CASCADE (depend_behavior).  Since the
 *   registry itself is the record, a restored registry needs nothing more.
 *
 * - Owners: a pg_shdepend "owner" entry per projection, and the role
 *   commands (DROP ROLE, DROP OWNED, REASSIGN OWNED) handled before
 *   PostgreSQL reaches those entries: owners.c.  This file's utility-hook
 *   entry (projection_depend_before_utility) dispatches to it.
 *
 * The hooks act in every backend that has loaded the library; with
 * shared_preload_libraries that is every backend.  A backend that has not
 * loaded it still cannot drop a projection's owner (PostgreSQL's own check
 * fails, with XX000), but can drop its handler or tables; since 1.3 the
 * event trigger at the end of this file loads it for the DROP commands.
 *
 * Locking: none of its own.  The object access hook runs inside
 * PostgreSQL's deletion, with the locks it took; the registry is read and
 * written as the bootstrap superuser (the roles running these commands need
 * no right on it), through owners.c's helpers, and projections are dropped
 * through projection_drop() (manage.c), as a superuser would, which locks
 * their registry rows.  The statement state (depend_behavior and the
 * others) is per backend, saved and restored around every utility
 * statement.
 *
 * IDENTIFICATION
 *	  src/depend.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "depend.h"
#include "feeddepend.h"
#include "ownerentry.h"
#include "projection.h"

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * The DropBehavior of the DROP statement running (DropStmt, DropOwnedStmt),
 * or -1 outside one: a deletion PostgreSQL makes on its own (none reaches a
 * handler or a table today) drops the projection, as CASCADE would.
 */
static int	depend_behavior = -1;

/* DROP EXTENSION projection is running: the registry is going away too */
static bool depend_dropping_extension = false;

/*
 * Utility statements the utility hook is running (nested ones count:
 * SPI, DO blocks).  Zero while a statement runs that began before the
 * library was loaded: the event trigger below then stands in for the hook.
 */
static int	depend_utility_depth = 0;

/* Does this database's extension have snapshot projections (version 1.3)? */
static bool
depend_has_snapshots(void)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("snapshot_defs", nsp));
}

/*
 * A function or table is being deleted: the projections that use it are
 * dependents.  RESTRICT refuses with PostgreSQL's dependency error; CASCADE
 * drops them, with a NOTICE as for any dependent object.
 */
static void
depend_object_dropped(Oid registry, Oid classId, Oid objectId)
{
	ObjectAddress object;
	List	   *names;
	ListCell   *lc;
	char	   *desc;

	if (classId == ProcedureRelationId && depend_has_snapshots())
		/* or the fold of a snapshot projection (version 1.3, snapshot.c) */
		names = projection_depend_names("SELECT name FROM projection.projections "
										"WHERE handler::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
										"OR id IN (SELECT projection_id FROM projection.snapshot_defs "
										"WHERE fold::pg_catalog.oid OPERATOR(pg_catalog.=) $1) "
										"ORDER BY name COLLATE \"C\"", objectId);
	else if (classId == ProcedureRelationId)
		names = projection_depend_names("SELECT name FROM projection.projections "
										"WHERE handler::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
										"ORDER BY name COLLATE \"C\"", objectId);
	else
		names = projection_depend_names("SELECT name FROM projection.projections "
										"WHERE $1 OPERATOR(pg_catalog.=) ANY (tables::pg_catalog.oid[]) "
										"ORDER BY name COLLATE \"C\"", objectId);
	if (names == NIL)
		return;

	ObjectAddressSet(object, classId, objectId);
	desc = getObjectDescription(&object, false);
	if (depend_behavior == DROP_RESTRICT)
	{
		StringInfoData detail;

		initStringInfo(&detail);
		foreach(lc, names)
			appendStringInfo(&detail, "%sprojection %s depends on %s",
							 detail.len > 0 ? "\n" : "", (char *) lfirst(lc), desc);
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop %s because other objects depend on it", desc),
				 errdetail("%s", detail.data),
				 errhint("Use DROP ... CASCADE to drop the dependent objects too.")));
	}
	foreach(lc, names)
	{
		ereport(NOTICE,
				(errmsg("drop cascades to projection %s", (char *) lfirst(lc))));
		projection_depend_drop_projection(lfirst(lc));
	}
}

static void
depend_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	Oid			registry;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_DROP || subId != 0 ||
		(classId != ProcedureRelationId && classId != RelationRelationId))
		return;
	/* only tables can be read models (and the registry itself is one) */
	if (classId == RelationRelationId)
	{
		char		relkind = get_rel_relkind(objectId);

		if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
			return;
	}
	/*
	 * feeds (feeddepend.c): projection.feeds' owner entries go with it.
	 * Before the registry's lookup: DROP EXTENSION may have dropped the
	 * registry already.
	 */
	if (classId == RelationRelationId && projection_feed_table_dropped(objectId))
		return;
	registry = projection_depend_registry_relid();
	if (!OidIsValid(registry))
		return;
	if (classId == RelationRelationId && objectId == registry)
	{
		projection_owner_entries_forget(registry);
		return;
	}
	if (depend_dropping_extension)
		return;
	depend_object_dropped(registry, classId, objectId);
}

void
projection_depend_install_hook(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = depend_object_access;
}

/*
 * Called by the utility hook before a statement runs: acts on the role
 * commands, and notes what DROP statements mean for the object access hook.
 * "saved" receives the state to restore with projection_depend_after_utility,
 * whether the statement succeeds or fails.
 */
void
projection_depend_before_utility(Node *parsetree, ProjectionDependState *saved)
{
	saved->behavior = depend_behavior;
	saved->dropping_extension = depend_dropping_extension;
	depend_utility_depth++;

	switch (nodeTag(parsetree))
	{
		case T_DropStmt:
			{
				DropStmt   *stmt = (DropStmt *) parsetree;

				depend_behavior = stmt->behavior;
				if (stmt->removeType == OBJECT_EXTENSION)
				{
					ListCell   *lc;

					foreach(lc, stmt->objects)
						if (strcmp(strVal(lfirst(lc)), PROJECTION_EXTENSION_NAME) == 0)
							depend_dropping_extension = true;
				}
				break;
			}
		case T_DropOwnedStmt:
			depend_behavior = ((DropOwnedStmt *) parsetree)->behavior;
			if (OidIsValid(projection_depend_registry_relid()))
				projection_owners_drop_owned((DropOwnedStmt *) parsetree);
			break;
		case T_DropRoleStmt:
			if (OidIsValid(projection_depend_registry_relid()))
				projection_owners_drop_role((DropRoleStmt *) parsetree);
			break;
		case T_ReassignOwnedStmt:
			if (OidIsValid(projection_depend_registry_relid()))
				projection_owners_reassign_owned((ReassignOwnedStmt *) parsetree);
			break;
		default:
			break;
	}
}

void
projection_depend_after_utility(ProjectionDependState *saved)
{
	depend_behavior = saved->behavior;
	depend_dropping_extension = saved->dropping_extension;
	depend_utility_depth--;
}

/* ---------------------------------------------------------------------
 * Backends that had not loaded the library (version 1.3)
 *
 * Without shared_preload_libraries, a backend loads the library only when
 * it first calls one of our functions: before that, neither hook sees its
 * DROP FUNCTION, DROP TABLE, DROP OWNED or DROP EXTENSION.  An event
 * trigger is a catalog object and fires whatever is loaded: on
 * ddl_command_start of those commands it calls this function, which loads
 * the library (installing the hooks: the object access hook then sees the
 * drops of this very statement) and does what the utility hook would have
 * done before the statement.  In a backend whose hook runs the statement
 * it does nothing.  The statement's state is reset at the end of the
 * transaction (the utility hook saves and restores it around every later
 * statement, so a leftover value only lasts until then).
 * Commands that fire no event trigger (DROP ROLE, REASSIGN OWNED) still
 * need the library: the README says so.
 * ---------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(projection_ddl_command_start);

static bool depend_event_xact_callback_registered = false;

static void
depend_event_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		if (depend_utility_depth == 0)
		{
			depend_behavior = -1;
			depend_dropping_extension = false;
		}
	}
}

Datum
projection_ddl_command_start(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	ProjectionDependState saved;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired by an event trigger",
						"projection._ddl_command_start")));
	if (depend_utility_depth > 0)
		PG_RETURN_VOID();		/* the utility hook runs this statement */
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!depend_event_xact_callback_registered)
	{
		RegisterXactCallback(depend_event_xact_callback, NULL);
		depend_event_xact_callback_registered = true;
	}
	PG_TRY();
	{
		projection_depend_before_utility(trigdata->parsetree, &saved);
	}
	PG_FINALLY();
	{
		/* the statement goes on: keep its state, but not the depth */
		depend_utility_depth--;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}
