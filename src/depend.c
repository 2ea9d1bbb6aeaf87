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
 * - Owners: a pg_shdepend "owner" entry per projection (classid: the
 *   registry table, objid: the projection id), kept by a row trigger on the
 *   registry, so it also follows rows that pg_restore loads.  In another
 *   database, DROP ROLE only counts such entries ("1 object in database d")
 *   and refuses, as for any object; DROP OWNED / REASSIGN OWNED there skip
 *   them, as they skip every other database's objects.  In this database the
 *   utility hook handles DROP ROLE, DROP OWNED and REASSIGN OWNED before
 *   PostgreSQL reaches our entries.  DROP EXTENSION deletes the entries when
 *   the registry table is dropped.
 *
 * The hooks act in every backend that has loaded the library; with
 * shared_preload_libraries that is every backend.  A backend that has not
 * loaded it still cannot drop a projection's owner (PostgreSQL's own check
 * fails, with XX000), but can drop its handler or tables.
 *
 * The registry is read and written as the bootstrap superuser: the roles
 * running these commands need no right on it.  Projections are dropped
 * through projection_drop() (manage.c), as a superuser would.
 *
 * IDENTIFICATION
 *	  src/depend.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_shdepend.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "depend.h"
#include "feeddepend.h"
#include "manage.h"
#include "projection.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_registry_owner_trigger);

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

/*
 * The registry table of this database, or InvalidOid if the extension is
 * not installed.  Syscache lookups only, except the pg_extension scan when
 * a "projection" schema exists: cheap enough for every dropped object.
 */
static Oid
depend_registry_relid(void)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	Oid			relid;

	if (!OidIsValid(nsp))
		return InvalidOid;
	relid = get_relname_relid(PROJECTION_REGISTRY_TABLE, nsp);
	if (!OidIsValid(relid) || !OidIsValid(get_extension_oid(PROJECTION_EXTENSION_NAME, true)))
		return InvalidOid;
	return relid;
}

/*
 * Run one of our fixed statements on the registry as the bootstrap
 * superuser.  The caller is connected to SPI.
 */
static void
depend_exec(const char *sql, Oid arg1, Oid arg2, int expected)
{
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		values[2];
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	values[0] = ObjectIdGetDatum(arg1);
	values[1] = ObjectIdGetDatum(arg2);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args(sql, OidIsValid(arg2) ? 2 : 1, types, values, NULL, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, sql);
}

/*
 * Names of the projections a query with one oid parameter selects (its
 * first column), in name order, as a List of C strings in the caller's
 * context.
 */
static List *
depend_projection_names(const char *sql, Oid arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names = NIL;
	uint64		i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	depend_exec(sql, arg, InvalidOid, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		names = lappend(names, pstrdup(name));
		MemoryContextSwitchTo(oldcxt);
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return names;
}

/* projection.drop(name), as a superuser: the caller's right was checked */
static void
depend_drop_projection(const char *name)
{
	Oid			save_userid;
	int			save_sec_context;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	(void) DirectFunctionCall1(projection_drop, CStringGetTextDatum(name));
	SetUserIdAndSecContext(save_userid, save_sec_context);
	CommandCounterIncrement();
}

/*
 * Delete every pg_shdepend entry of this database's projections (the
 * registry table is being dropped or truncated).
 */
static void
depend_forget_all(Oid registry)
{
	Relation	rel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(SharedDependRelationId, RowExclusiveLock);
	ScanKeyInit(&key[0], Anum_pg_shdepend_dbid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(MyDatabaseId));
	ScanKeyInit(&key[1], Anum_pg_shdepend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(registry));
	scan = systable_beginscan(rel, SharedDependDependerIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		CatalogTupleDelete(rel, &tup->t_self);
	systable_endscan(scan);
	table_close(rel, RowExclusiveLock);
}

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
		names = depend_projection_names("SELECT name FROM projection.projections "
										"WHERE handler::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
										"OR id IN (SELECT projection_id FROM projection.snapshot_defs "
										"WHERE fold::pg_catalog.oid OPERATOR(pg_catalog.=) $1) "
										"ORDER BY name COLLATE \"C\"", objectId);
	else if (classId == ProcedureRelationId)
		names = depend_projection_names("SELECT name FROM projection.projections "
										"WHERE handler::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
										"ORDER BY name COLLATE \"C\"", objectId);
	else
		names = depend_projection_names("SELECT name FROM projection.projections "
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
		depend_drop_projection(lfirst(lc));
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
	registry = depend_registry_relid();
	if (!OidIsValid(registry))
		return;
	if (classId == RelationRelationId && objectId == registry)
	{
		depend_forget_all(registry);
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

/* ---------------------------------------------------------------------
 * Roles: DROP ROLE, DROP OWNED BY, REASSIGN OWNED BY in this database
 * ---------------------------------------------------------------------
 */

#define OWNED_PROJECTIONS_SQL \
	"SELECT name FROM projection.projections " \
	"WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1 ORDER BY name COLLATE \"C\""

/*
 * DROP ROLE of a projection's owner: PostgreSQL's dependency error, listing
 * the projections.  Only where PostgreSQL's own checks would pass (the
 * caller may drop the role), so that nobody learns more than PostgreSQL
 * would tell.
 */
static void
depend_drop_role(DropRoleStmt *stmt)
{
	ListCell   *lc;

	if (!has_createrole_privilege(GetUserId()))
		return;
	foreach(lc, stmt->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			roleid;
		List	   *names;
		List	   *feeds;
		ListCell   *lc2;
		StringInfoData detail;

		if (spec->roletype != ROLESPEC_CSTRING)
			continue;
		roleid = get_role_oid(spec->rolename, true);
		if (!OidIsValid(roleid) || (superuser_arg(roleid) && !superuser()))
			continue;
		names = depend_projection_names(OWNED_PROJECTIONS_SQL, roleid);
		feeds = projection_feed_owned_names(roleid);	/* feeddepend.c */
		if (names == NIL && feeds == NIL)
			continue;
		initStringInfo(&detail);
		foreach(lc2, names)
			appendStringInfo(&detail, "%sowner of projection %s",
							 detail.len > 0 ? "\n" : "", (char *) lfirst(lc2));
		foreach(lc2, feeds)
			appendStringInfo(&detail, "%sowner of feed %s",
							 detail.len > 0 ? "\n" : "", (char *) lfirst(lc2));
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
						spec->rolename),
				 errdetail("%s", detail.data)));
	}
}

/* DROP OWNED BY: the roles' projections are dropped first */
static void
depend_drop_owned(DropOwnedStmt *stmt)
{
	ListCell   *lc;
	List	   *roles = NIL;

	/* PostgreSQL's own check comes first: do nothing unless it passes */
	foreach(lc, stmt->roles)
	{
		Oid			roleid = get_rolespec_oid(lfirst(lc), true);

		if (!OidIsValid(roleid) || !has_privs_of_role(GetUserId(), roleid))
			return;
		roles = lappend_oid(roles, roleid);
	}
	foreach(lc, roles)
	{
		List	   *names = depend_projection_names(OWNED_PROJECTIONS_SQL, lfirst_oid(lc));
		ListCell   *lc2;

		foreach(lc2, names)
			depend_drop_projection(lfirst(lc2));
		projection_feed_drop_owned(lfirst_oid(lc));	/* feeddepend.c */
	}
}

/*
 * REASSIGN OWNED gives "oldrole"'s projections to "newrole": warn about
 * those the new owner could not create (SELECT on projection.events, and
 * TRIGGER for inline ones), as the update to 1.2 does.  They keep running.
 * The caller is connected to SPI.
 */
static void
depend_warn_new_owner(Oid oldrole, Oid newrole)
{
	Oid			events = get_relname_relid(PROJECTION_EVENTS_TABLE,
										   get_namespace_oid(PROJECTION_SCHEMA_NAME, false));
	bool		can_select = pg_class_aclcheck(events, newrole, ACL_SELECT) == ACLCHECK_OK;
	bool		can_trigger = pg_class_aclcheck(events, newrole, ACL_TRIGGER) == ACLCHECK_OK;
	char	   *rolname;
	uint64		i;

	if (can_select && can_trigger)
		return;
	rolname = GetUserNameFromId(newrole, false);
	depend_exec("SELECT name, mode OPERATOR(pg_catalog.=) 'inline' FROM projection.projections "
				"WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1 ORDER BY name COLLATE \"C\"",
				oldrole, InvalidOid, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		bool		is_inline = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
		const char *missing;

		if (!can_select && is_inline && !can_trigger)
			missing = "SELECT, TRIGGER";
		else if (!can_select)
			missing = "SELECT";
		else if (is_inline && !can_trigger)
			missing = "TRIGGER";
		else
			continue;
		ereport(WARNING,
				(errmsg("new owner \"%s\" of projection \"%s\" lacks %s on projection.events",
						rolname, name, missing),
				 errdetail("Creating this projection requires it. The projection keeps running."),
				 errhint("Run GRANT %s ON projection.events TO %s;", missing, quote_identifier(rolname))));
	}
}

/* REASSIGN OWNED BY ... TO: the roles' projections change owner first */
static void
depend_reassign_owned(ReassignOwnedStmt *stmt)
{
	ListCell   *lc;
	List	   *roles = NIL;
	Oid			newrole = get_rolespec_oid(stmt->newrole, true);

	if (!OidIsValid(newrole) || !has_privs_of_role(GetUserId(), newrole))
		return;
	foreach(lc, stmt->roles)
	{
		Oid			roleid = get_rolespec_oid(lfirst(lc), true);

		if (!OidIsValid(roleid) || !has_privs_of_role(GetUserId(), roleid))
			return;
		roles = lappend_oid(roles, roleid);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	foreach(lc, roles)
	{
		if (lfirst_oid(lc) == newrole)
			continue;
		depend_warn_new_owner(lfirst_oid(lc), newrole);
		/* the registry's trigger moves the pg_shdepend entries */
		depend_exec("UPDATE projection.projections SET owner = $2::pg_catalog.regrole, "
					"updated_at = pg_catalog.now() "
					"WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
					lfirst_oid(lc), newrole, SPI_OK_UPDATE);
		projection_feed_reassign_owned(lfirst_oid(lc), newrole);	/* feeddepend.c */
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	CommandCounterIncrement();
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
			if (OidIsValid(depend_registry_relid()))
				depend_drop_owned((DropOwnedStmt *) parsetree);
			break;
		case T_DropRoleStmt:
			if (OidIsValid(depend_registry_relid()))
				depend_drop_role((DropRoleStmt *) parsetree);
			break;
		case T_ReassignOwnedStmt:
			if (OidIsValid(depend_registry_relid()))
				depend_reassign_owned((ReassignOwnedStmt *) parsetree);
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
 * The registry's owner entries in pg_shdepend
 * ---------------------------------------------------------------------
 */

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, and AFTER TRUNCATE, on
 * projection.projections (version 1.2): keeps one pg_shdepend "owner" entry
 * per projection, whoever writes the row (projection.create, REASSIGN OWNED,
 * pg_restore).  An owner that does not exist (a row restored without its
 * role, or left by version 1.1 after a DROP ROLE) gets no entry; the
 * registry cache then ignores the projection (catalog.c).
 */
Datum
projection_registry_owner_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Oid			registry;
	TupleDesc	desc;
	HeapTuple	tup;
	int			id_att;
	int			owner_att;
	bool		isnull;
	Oid			id;
	Oid			owner;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired AFTER on projection.projections",
						"projection._registry_owner")));
	registry = depend_registry_relid();
	if (RelationGetRelid(td->tg_relation) != registry)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" may only be used on projection.projections",
						"projection._registry_owner")));

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		depend_forget_all(registry);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired FOR EACH ROW, or for TRUNCATE",
						"projection._registry_owner")));

	desc = RelationGetDescr(td->tg_relation);
	id_att = SPI_fnumber(desc, "id");
	owner_att = SPI_fnumber(desc, "owner");
	if (id_att <= 0 || owner_att <= 0)
		elog(ERROR, "projection.projections has no id or owner column");

	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	id = (Oid) DatumGetInt32(heap_getattr(tup, id_att, desc, &isnull));
	owner = DatumGetObjectId(heap_getattr(tup, owner_att, desc, &isnull));

	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		deleteSharedDependencyRecordsFor(registry, id, 0);
	else
	{
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			Oid			old_id = (Oid) DatumGetInt32(heap_getattr(td->tg_trigtuple, id_att,
																  desc, &isnull));

			deleteSharedDependencyRecordsFor(registry, old_id, 0);
		}
		if (SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
			recordDependencyOnOwner(registry, id, owner);
	}
	return PointerGetDatum(NULL);
}

/* ---------------------------------------------------------------------
 * Owners that vanished, entries that went missing (version 1.3)
 *
 * The owner entries are written by a row trigger, so whatever loads the
 * registry without it has none: pg_upgrade (pg_shdepend is not carried
 * over), pg_restore --disable-triggers, session_replication_role =
 * replica.  And an owner can vanish where nothing refused its DROP ROLE:
 * a registry without entries, in a backend that has not loaded the
 * library.  projection_depend_check_owners() repairs the first and stops
 * projections of the second; the worker runs it whenever its registry
 * cache was reloaded (catalog.c reloads it after any role change and any
 * change to the registry table, triggers disabled or not), and
 * projection.repair_dependencies() runs it on demand.
 * ---------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(projection_repair_dependencies);

/* Does this database's extension keep owner entries (version 1.2 on)? */
static bool
depend_entries_kept(Oid registry)
{
	return OidIsValid(get_trigger_oid(registry, "_registry_owner", true));
}

/* Is there an owner entry for projection "id" naming "owner"?  Fresh catalog snapshot. */
static bool
depend_has_owner_entry(Oid registry, int32 id, Oid owner)
{
	Relation	rel;
	ScanKeyData key[3];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	InvalidateCatalogSnapshot();
	rel = table_open(SharedDependRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_shdepend_dbid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(MyDatabaseId));
	ScanKeyInit(&key[1], Anum_pg_shdepend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(registry));
	ScanKeyInit(&key[2], Anum_pg_shdepend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum((Oid) id));
	scan = systable_beginscan(rel, SharedDependDependerIndexId, true, NULL, 3, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_shdepend dep = (Form_pg_shdepend) GETSTRUCT(tup);

		if (dep->refclassid == AuthIdRelationId && dep->refobjid == owner &&
			dep->deptype == SHARED_DEPENDENCY_OWNER)
			found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Stop a projection whose owner role no longer exists: nobody may run code
 * as a role that is gone (its oid could even be reused by a new role).
 * The row must be locked by the caller (connected to SPI, as a superuser).
 */
void
projection_depend_fail_ownerless(int32 id, const char *name, Oid owner)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	char	   *msg;
	int			rc;

	msg = psprintf("owner of projection \"%s\" does not exist (role %u was dropped)", name, owner);
	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(msg);
	rc = SPI_execute_with_args("UPDATE projection.projections SET state = 'failed', "
							   "last_error = $2, last_error_sqlstate = '42704', last_error_position = NULL, "
							   "updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
							   2, types, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_UPDATE, "stopping a projection without owner");
	ereport(WARNING,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("%s", msg),
			 errdetail("The projection was stopped; nothing runs as a dropped role."),
			 errhint("Drop it with SELECT projection.drop('%s') and create it again.", name)));
}

/*
 * Check every projection's owner: record the owner entries that are
 * missing, and stop (fail_ownerless) the projections whose owner is gone.
 * The caller is connected to SPI, in a transaction that may write, with an
 * active snapshot, as a superuser.  Rows another transaction has locked are
 * left for the next check (their writer's trigger keeps their entries).
 * Returns the number of entries recorded.
 */
int
projection_depend_check_owners(void)
{
	Oid			registry = depend_registry_relid();
	Oid			types[3] = {OIDOID, OIDOID, OIDOID};
	Datum		values[3];
	SPITupleTable *tt;
	uint64		i;
	int			rc;
	int			recorded = 0;

	if (!OidIsValid(registry) || !depend_entries_kept(registry))
		return 0;

	/*
	 * Candidates first, without locks (normally none): rows without an
	 * entry naming their owner.  The bootstrap superuser is pinned: no
	 * entry is ever recorded for it.  Then lock those and look again, with
	 * the catalog as of the lock.
	 */
	values[0] = ObjectIdGetDatum(MyDatabaseId);
	values[1] = ObjectIdGetDatum(registry);
	values[2] = ObjectIdGetDatum(BOOTSTRAP_SUPERUSERID);
	rc = SPI_execute_with_args("SELECT p.id, p.name, p.owner::pg_catalog.oid, "
							   "p.state OPERATOR(pg_catalog.=) 'failed' "
							   "FROM projection.projections p WHERE p.id IN ("
							   "SELECT c.id FROM projection.projections c "
							   "WHERE c.owner::pg_catalog.oid OPERATOR(pg_catalog.<>) $3 AND NOT EXISTS ("
							   "SELECT FROM pg_catalog.pg_shdepend d "
							   "WHERE d.dbid OPERATOR(pg_catalog.=) $1 AND d.classid OPERATOR(pg_catalog.=) $2 "
							   "AND d.objid OPERATOR(pg_catalog.=) c.id::pg_catalog.oid "
							   "AND d.refobjid OPERATOR(pg_catalog.=) c.owner::pg_catalog.oid "
							   "AND d.deptype OPERATOR(pg_catalog.=) 'o')) "
							   "ORDER BY p.id FOR NO KEY UPDATE OF p SKIP LOCKED",
							   3, types, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_SELECT, "checking the owners of projections");
	if (SPI_processed == 0)
		return 0;
	tt = SPI_tuptable;
	AcceptInvalidationMessages();
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *name = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		Oid			owner = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		bool		failed = DatumGetBool(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull));

		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		{
			if (!failed)
				projection_depend_fail_ownerless(id, name, owner);
			continue;
		}
		if (depend_has_owner_entry(registry, id, owner))
			continue;
		deleteSharedDependencyRecordsFor(registry, (Oid) id, 0);
		recordDependencyOnOwner(registry, (Oid) id, owner);
		recorded++;
		ereport(LOG,
				(errmsg("recorded the owner of projection \"%s\" in pg_shdepend, which had no entry for it",
						name),
				 errdetail("The registry row was loaded without its trigger (pg_upgrade, or a restore with triggers disabled).")));
	}
	SPI_freetuptable(tt);
	if (recorded > 0 || SPI_processed > 0)
		CommandCounterIncrement();
	return recorded;
}

/*
 * projection.repair_dependencies() (1.3): the check above, on demand, for a
 * superuser; returns the number of owner entries recorded.
 */
Datum
projection_repair_dependencies(PG_FUNCTION_ARGS)
{
	int			recorded;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to repair the dependencies of projections")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	recorded = projection_depend_check_owners();
	recorded += projection_feed_check_owners();	/* feeddepend.c */
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_INT32(recorded);
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
