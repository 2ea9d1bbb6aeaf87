/*-------------------------------------------------------------------------
 *
 * feeddepend.c
 *	  The owners of feeds, recorded and enforced as the owners of
 *	  projections are (depend.c): a pg_shdepend "owner" entry per feed, so
 *	  that DROP ROLE of a feed's owner fails with 2BP01, DROP OWNED BY drops
 *	  the role's feeds and REASSIGN OWNED BY gives them to the new role.
 *
 * The entries: classid is projection.feeds, objid the feed's id, kept by
 * the row trigger projection._feed_owner (version 1.4), so they also follow
 * rows that pg_restore loads.  As for projections, PostgreSQL cannot
 * describe or drop such an entry in the current database (it fails with
 * "unrecognized object class"), so depend.c's utility hook calls the
 * functions here before PostgreSQL reaches the entries: DROP ROLE lists the
 * feeds in its dependency error, DROP OWNED and REASSIGN OWNED act on the
 * feeds first.  In another database PostgreSQL counts the entries and
 * refuses DROP ROLE, as for any object.  The object access hook
 * (depend.c) deletes every entry when projection.feeds itself is dropped
 * (DROP EXTENSION); the TRUNCATE trigger does the same for a truncation.
 * The event trigger of depend.c reaches DROP OWNED here too in backends
 * that had not loaded the library.
 *
 * Rows missing their entry (pg_upgrade, which does not carry pg_shdepend
 * over; a restore with triggers disabled) are repaired by
 * projection.repair_dependencies() (projection_feed_check_owners).
 * Unlike a projection, a feed runs no code as its owner: a feed whose
 * owner is gone is only reported (WARNING); only a superuser can still
 * poll or drop it.
 *
 * Locking: row locks on projection.feeds taken by the statements here;
 * pg_shdepend is written through PostgreSQL's own functions.  No LWLock.
 * Every statement runs as the bootstrap superuser through
 * projection_feed_exec (feed.c): the roles running role commands need no
 * right on our tables.
 *
 * IDENTIFICATION
 *	  src/feeddepend.c
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
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "feed.h"
#include "feeddepend.h"
#include "ownerentry.h"
#include "projection.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_feed_owner_trigger);

#define FEEDS_TABLE "feeds"

/*
 * projection.feeds of this database, or InvalidOid if the extension is not
 * installed or predates feeds (1.2).  Syscache lookups only.
 */
Oid
projection_feed_table_relid(void)
{
	return projection_our_table_relid(FEEDS_TABLE);
}

/*
 * Object access hook (depend.c), for a table being dropped: if it is
 * projection.feeds (DROP EXTENSION), forget every feed's owner entry and
 * return true.
 */
bool
projection_feed_table_dropped(Oid relid)
{
	Oid			feeds = projection_feed_table_relid();

	if (!OidIsValid(feeds) || relid != feeds)
		return false;
	projection_owner_entries_forget(feeds);
	return true;
}

/*
 * Names of the feeds "role" owns, in name order, as a List of C strings in
 * the caller's context (NIL if none, or no feeds table).
 */
List *
projection_feed_owned_names(Oid role)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names;
	Oid			types[1] = {OIDOID};
	Datum		values[1];

	if (!OidIsValid(projection_feed_table_relid()))
		return NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = ObjectIdGetDatum(role);
	projection_feed_exec("SELECT name FROM projection.feeds "
						 "WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
						 "ORDER BY name COLLATE \"C\"",
						 1, types, values, NULL, SPI_OK_SELECT);
	names = projection_spi_names(cxt);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return names;
}

/*
 * DROP OWNED BY: drop "role"'s feeds (with their checkpoints, leases and
 * parked events; the trigger deletes the owner entries).  The caller
 * (depend.c) has checked that PostgreSQL's own check passes.  Long-polls of
 * these feeds learn at commit that they are gone.
 */
void
projection_feed_drop_owned(Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1];

	if (!OidIsValid(projection_feed_table_relid()))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = ObjectIdGetDatum(role);
	projection_feed_exec("DELETE FROM projection.feeds "
						 "WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
						 1, types, values, NULL, SPI_OK_DELETE);
	if (SPI_processed > 0)
		projection_feed_wake_on_commit();
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	CommandCounterIncrement();
}

/*
 * REASSIGN OWNED BY oldrole TO newrole: the feeds change owner (the
 * trigger moves the entries), with a WARNING for each one the new owner
 * could not poll (it lacks SELECT on projection.events).  The caller is
 * connected to SPI and has checked PostgreSQL's own conditions.
 */
void
projection_feed_reassign_owned(Oid oldrole, Oid newrole)
{
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		values[2];
	bool		can_select;
	uint64		i;

	if (!OidIsValid(projection_feed_table_relid()) || oldrole == newrole)
		return;
	values[0] = ObjectIdGetDatum(oldrole);
	values[1] = ObjectIdGetDatum(newrole);
	projection_feed_exec("UPDATE projection.feeds SET owner = $2::pg_catalog.regrole "
						 "WHERE owner::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
						 "RETURNING name",
						 2, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	can_select = pg_class_aclcheck(projection_oids()->events, newrole, ACL_SELECT) == ACLCHECK_OK;
	for (i = 0; i < SPI_processed && !can_select; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *rolname = GetUserNameFromId(newrole, false);

		ereport(WARNING,
				(errmsg("new owner \"%s\" of feed \"%s\" lacks SELECT on projection.events",
						rolname, name),
				 errdetail("Polling the feed requires it; its polls fail until it is granted."),
				 errhint("Run GRANT SELECT ON projection.events TO %s;", quote_identifier(rolname))));
	}
	CommandCounterIncrement();
}

/*
 * AFTER INSERT OR UPDATE OF owner OR DELETE FOR EACH ROW, and AFTER
 * TRUNCATE, on projection.feeds (version 1.4): one pg_shdepend "owner"
 * entry per feed, whoever writes the row (create_feed, REASSIGN OWNED,
 * pg_restore), through ownerentry.c's trigger body (shared with the
 * registry).  An owner that does not exist gets no entry.
 */
Datum
projection_feed_owner_trigger(PG_FUNCTION_ARGS)
{
	return projection_owner_entry_trigger(fcinfo, "projection._feed_owner",
										  "projection.feeds",
										  projection_feed_table_relid());
}

/*
 * Record the missing owner entries of feeds, and warn about feeds whose
 * owner is gone.  The caller is connected to SPI, in a transaction that may
 * write, as a superuser.  Rows locked by another transaction are left (its
 * trigger keeps their entries).  Returns the number of entries recorded.
 */
int
projection_feed_check_owners(void)
{
	Oid			feeds = projection_feed_table_relid();
	Oid			types[3] = {OIDOID, OIDOID, OIDOID};
	Datum		values[3];
	SPITupleTable *tt;
	uint64		n;
	uint64		i;
	int			recorded = 0;

	if (!OidIsValid(feeds) || !OidIsValid(get_trigger_oid(feeds, "_feed_owner", true)))
		return 0;
	values[0] = ObjectIdGetDatum(MyDatabaseId);
	values[1] = ObjectIdGetDatum(feeds);
	values[2] = ObjectIdGetDatum(BOOTSTRAP_SUPERUSERID);
	projection_feed_exec("SELECT f.id, f.name, f.owner::pg_catalog.oid FROM projection.feeds f "
						 "WHERE f.owner::pg_catalog.oid OPERATOR(pg_catalog.<>) $3 AND NOT EXISTS ("
						 "SELECT FROM pg_catalog.pg_shdepend d "
						 "WHERE d.dbid OPERATOR(pg_catalog.=) $1 AND d.classid OPERATOR(pg_catalog.=) $2 "
						 "AND d.objid OPERATOR(pg_catalog.=) f.id::pg_catalog.oid "
						 "AND d.refobjid OPERATOR(pg_catalog.=) f.owner::pg_catalog.oid "
						 "AND d.deptype OPERATOR(pg_catalog.=) 'o') "
						 "ORDER BY f.id FOR NO KEY UPDATE OF f SKIP LOCKED",
						 3, types, values, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	if (n == 0)
		return 0;
	tt = SPI_tuptable;
	AcceptInvalidationMessages();
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		char	   *name = SPI_getvalue(tt->vals[i], tt->tupdesc, 2);
		Oid			owner = DatumGetObjectId(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));

		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		{
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("owner of feed \"%s\" does not exist (role %u was dropped)", name, owner),
					 errdetail("Only a superuser can poll or drop the feed."),
					 errhint("Drop it with SELECT projection.drop_feed('%s') and create it again.", name)));
			continue;
		}
		if (projection_owner_entry_exists(feeds, id, owner))
			continue;
		deleteSharedDependencyRecordsFor(feeds, (Oid) id, 0);
		recordDependencyOnOwner(feeds, (Oid) id, owner);
		recorded++;
		ereport(LOG,
				(errmsg("recorded the owner of feed \"%s\" in pg_shdepend, which had no entry for it",
						name),
				 errdetail("The feed's row was loaded without its trigger (pg_upgrade, or a restore with triggers disabled).")));
	}
	SPI_freetuptable(tt);
	CommandCounterIncrement();
	return recorded;
}
