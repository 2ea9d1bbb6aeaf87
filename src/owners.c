/*-------------------------------------------------------------------------
 *
 * owners.c
 *	  The owners of projections: one pg_shdepend "owner" entry per
 *	  projection, DROP ROLE / DROP OWNED BY / REASSIGN OWNED BY in this
 *	  database, and owners that vanished or entries that went missing.
 *	  Also the helpers depend.c shares: the registry table, statements on
 *	  it as the bootstrap superuser, dropping a projection.
 *
 * Why pg_shdepend, and why the utility hook acts first (depend.c's header
 * gives the whole argument): the entry's classid is the registry table,
 * objid the projection id.  In another database, DROP ROLE only counts
 * such entries ("1 object in database d") and refuses, as for any object;
 * DROP OWNED / REASSIGN OWNED there skip them, as they skip every other
 * database's objects.  In this database PostgreSQL 15 fails on an entry of
 * an unknown class (XX000), so the utility hook (through depend.c) runs
 * DROP ROLE's check, drops the role's projections before DROP OWNED and
 * moves them before REASSIGN OWNED, so that PostgreSQL never meets the
 * entries.  The entries are kept by a row trigger on the registry, so they
 * follow rows that pg_restore loads; DROP EXTENSION deletes them when the
 * registry table is dropped.
 *
 * Locking: pg_shdepend is written with RowExclusiveLock by the registry's
 * row trigger (in the writer's transaction) and by the check of owners,
 * which locks the registry rows it repairs (FOR NO KEY UPDATE SKIP LOCKED:
 * a row another transaction holds is left to its writer's trigger).  The
 * role commands act before PostgreSQL's own checks take their locks, and
 * only where those checks would pass.  The registry is read and written as
 * the bootstrap superuser; projections are dropped through
 * projection_drop() (manage.c), as a superuser would.
 *
 * IDENTIFICATION
 *	  src/owners.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_shdepend.h"
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
#include "manage.h"
#include "feeddepend.h"
#include "ownerentry.h"
#include "owners.h"
#include "projection.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_registry_owner_trigger);

/* ---------------------------------------------------------------------
 * The registry as dependency code sees it (shared with depend.c)
 * ---------------------------------------------------------------------
 */

/*
 * The registry table of this database, or InvalidOid if the extension is
 * not installed (ownerentry.c: cheap enough for every dropped object).
 */
Oid
projection_depend_registry_relid(void)
{
	return projection_our_table_relid(PROJECTION_REGISTRY_TABLE);
}

/*
 * Run one of our fixed statements on the registry as the bootstrap
 * superuser.  The caller is connected to SPI.
 */
void
projection_depend_exec(const char *sql, Oid arg1, Oid arg2, int expected)
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
List *
projection_depend_names(const char *sql, Oid arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	projection_depend_exec(sql, arg, InvalidOid, SPI_OK_SELECT);
	names = projection_spi_names(cxt);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return names;
}

/* projection.drop(name), as a superuser: the caller's right was checked */
void
projection_depend_drop_projection(const char *name)
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
void
projection_owners_drop_role(DropRoleStmt *stmt)
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
		names = projection_depend_names(OWNED_PROJECTIONS_SQL, roleid);
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
void
projection_owners_drop_owned(DropOwnedStmt *stmt)
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
		List	   *names = projection_depend_names(OWNED_PROJECTIONS_SQL, lfirst_oid(lc));
		ListCell   *lc2;

		foreach(lc2, names)
			projection_depend_drop_projection(lfirst(lc2));
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
	projection_depend_exec("SELECT name, mode OPERATOR(pg_catalog.=) 'inline' FROM projection.projections "
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
void
projection_owners_reassign_owned(ReassignOwnedStmt *stmt)
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
		projection_depend_exec("UPDATE projection.projections SET owner = $2::pg_catalog.regrole, "
					"updated_at = pg_catalog.now() "
					"WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
					lfirst_oid(lc), newrole, SPI_OK_UPDATE);
		projection_feed_reassign_owned(lfirst_oid(lc), newrole);	/* feeddepend.c */
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	CommandCounterIncrement();
}

/* ---------------------------------------------------------------------
 * The registry's owner entries in pg_shdepend
 * ---------------------------------------------------------------------
 */

/*
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, and AFTER TRUNCATE, on
 * projection.projections (version 1.2): keeps one pg_shdepend "owner" entry
 * per projection, whoever writes the row (projection.create, REASSIGN OWNED,
 * pg_restore), through ownerentry.c's trigger body (shared with feeds).  An
 * owner that does not exist (a row restored without its role, or left by
 * version 1.1 after a DROP ROLE) gets no entry; the registry cache then
 * ignores the projection (catalog.c).
 */
Datum
projection_registry_owner_trigger(PG_FUNCTION_ARGS)
{
	return projection_owner_entry_trigger(fcinfo, "projection._registry_owner",
										  "projection.projections",
										  projection_depend_registry_relid());
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

/*
 * Set projection "id" failed with last_error "msg" and its SQLSTATE, no
 * failing event (the row locked by the caller, connected to SPI, as a
 * superuser).
 */
static void
depend_stop_projection(int32 id, const char *msg, const char *sqlstate)
{
	Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			rc;

	values[0] = Int32GetDatum(id);
	values[1] = CStringGetTextDatum(msg);
	values[2] = CStringGetTextDatum(sqlstate);
	rc = SPI_execute_with_args("UPDATE projection.projections SET state = 'failed', "
							   "last_error = $2, last_error_sqlstate = $3, last_error_position = NULL, "
							   "updated_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
							   3, types, values, NULL, false, 0);
	projection_spi_check(rc, SPI_OK_UPDATE, "stopping a projection");
}

/*
 * Stop a projection whose owner role no longer exists: nobody may run code
 * as a role that is gone (its oid could even be reused by a new role).
 * The row must be locked by the caller (connected to SPI, as a superuser).
 */
void
projection_depend_fail_ownerless(int32 id, const char *name, Oid owner)
{
	char	   *msg = psprintf("owner of projection \"%s\" does not exist (role %u was dropped)",
							   name, owner);

	depend_stop_projection(id, msg, "42704");
	ereport(WARNING,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("%s", msg),
			 errdetail("The projection was stopped; nothing runs as a dropped role."),
			 errhint("Drop it with SELECT projection.drop('%s') and create it again.", name)));
}

/*
 * Stop a projection whose owner may no longer read projection.events (a
 * REVOKE after create, which needed it): the worker would go on handing it
 * the events its owner may not read.  Not an error of an event (on_error
 * does not apply, no dead letter): the projection stops before its next
 * event, and resume() after a GRANT goes on from there.  The row must be
 * locked by the caller (connected to SPI, as a superuser).
 */
void
projection_depend_fail_unprivileged(int32 id, const char *name, Oid owner)
{
	char	   *role = GetUserNameFromId(owner, false);
	char	   *msg = psprintf("owner of projection \"%s\" may no longer read projection.events", name);

	depend_stop_projection(id, msg, "42501");
	ereport(WARNING,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("%s", msg),
			 errdetail("Role \"%s\" has lost the SELECT privilege on projection.events; the projection was stopped before its next event.", role),
			 errhint("Grant it with GRANT SELECT ON projection.events TO %s, then call projection.resume('%s').",
					 quote_identifier(role), name)));
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
	Oid			registry = projection_depend_registry_relid();
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
		if (projection_owner_entry_exists(registry, id, owner))
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
