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
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "depend.h"
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
		ListCell   *lc2;
		StringInfoData detail;

		if (spec->roletype != ROLESPEC_CSTRING)
			continue;
		roleid = get_role_oid(spec->rolename, true);
		if (!OidIsValid(roleid) || (superuser_arg(roleid) && !superuser()))
			continue;
		names = depend_projection_names(OWNED_PROJECTIONS_SQL, roleid);
		if (names == NIL)
			continue;
		initStringInfo(&detail);
		foreach(lc2, names)
			appendStringInfo(&detail, "%sowner of projection %s",
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
		/* the registry's trigger moves the pg_shdepend entries */
		depend_exec("UPDATE projection.projections SET owner = $2::pg_catalog.regrole, "
					"updated_at = pg_catalog.now() "
					"WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
					lfirst_oid(lc), newrole, SPI_OK_UPDATE);
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
