/*-------------------------------------------------------------------------
 *
 * ownerentry.c
 *	  pg_shdepend "owner" entries of rows in our own tables: one entry per
 *	  row (classid the table, objid the row's id, refobjid its owner), as
 *	  the registry (owners.c, 1.2) and the feeds (feeddepend.c, 1.4) keep
 *	  them.  The one row trigger body both tables' trigger functions run,
 *	  forgetting every entry of a table, the test for one entry, and the
 *	  relid of such a table.
 *
 * The table is whatever relation the trigger fires on, and the row's id
 * and owner are its columns "id" (integer) and "owner" (regrole); the
 * trigger function names the one table it may fire on.  Why such entries
 * exist, and what DROP ROLE, DROP OWNED and REASSIGN OWNED do about them,
 * is argued in depend.c's and owners.c's headers.
 *
 * Locking: pg_shdepend is written through PostgreSQL's own functions
 * (RowExclusiveLock), in the writer's transaction.  No LWLock.
 *
 * IDENTIFICATION
 *	  src/ownerentry.c
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
#include "catalog/pg_authid.h"
#include "catalog/pg_shdepend.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ownerentry.h"
#include "projection.h"

/*
 * Our table "table" (projection.<table>) of this database, or InvalidOid if
 * the extension is not installed or has no such table (yet).  Syscache
 * lookups only, except the pg_extension scan when a "projection" schema
 * exists: cheap enough for every dropped object (depend.c).
 */
Oid
projection_our_table_relid(const char *table)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	Oid			relid;

	if (!OidIsValid(nsp))
		return InvalidOid;
	relid = get_relname_relid(table, nsp);
	if (!OidIsValid(relid) || !OidIsValid(get_extension_oid(PROJECTION_EXTENSION_NAME, true)))
		return InvalidOid;
	return relid;
}

/*
 * The body of an owner-entry trigger: AFTER INSERT OR UPDATE OF owner OR
 * DELETE FOR EACH ROW, and AFTER TRUNCATE, on the table "table" (relid
 * "relid"; InvalidOid if the extension is not there), for the SQL function
 * "function".  Keeps one entry per row, whoever writes it (our functions,
 * REASSIGN OWNED, pg_restore); an owner that does not exist (a row
 * restored without its role) gets none.  Raises 39P01 when misused.
 */
Datum
projection_owner_entry_trigger(FunctionCallInfo fcinfo, const char *function,
							   const char *table, Oid relid)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Oid			classid;
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
				 errmsg("function \"%s\" must be fired AFTER on %s", function, table)));
	classid = RelationGetRelid(td->tg_relation);
	if (classid != relid)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" may only be used on %s", function, table)));
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		projection_owner_entries_forget(classid);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired FOR EACH ROW, or for TRUNCATE",
						function)));

	desc = RelationGetDescr(td->tg_relation);
	id_att = SPI_fnumber(desc, "id");
	owner_att = SPI_fnumber(desc, "owner");
	if (id_att <= 0 || owner_att <= 0)
		elog(ERROR, "%s has no id or owner column", table);

	tup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	id = (Oid) DatumGetInt32(heap_getattr(tup, id_att, desc, &isnull));
	owner = DatumGetObjectId(heap_getattr(tup, owner_att, desc, &isnull));

	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		deleteSharedDependencyRecordsFor(classid, id, 0);
	else
	{
		if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		{
			Oid			old_id = (Oid) DatumGetInt32(heap_getattr(td->tg_trigtuple, id_att,
																  desc, &isnull));

			deleteSharedDependencyRecordsFor(classid, old_id, 0);
		}
		if (SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
			recordDependencyOnOwner(classid, id, owner);
	}
	return PointerGetDatum(NULL);
}

/*
 * Delete every pg_shdepend entry of this database whose classid is
 * "classid" (the table is being dropped or truncated).
 */
void
projection_owner_entries_forget(Oid classid)
{
	Relation	rel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(SharedDependRelationId, RowExclusiveLock);
	ScanKeyInit(&key[0], Anum_pg_shdepend_dbid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(MyDatabaseId));
	ScanKeyInit(&key[1], Anum_pg_shdepend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(classid));
	scan = systable_beginscan(rel, SharedDependDependerIndexId, true, NULL, 2, key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		CatalogTupleDelete(rel, &tup->t_self);
	systable_endscan(scan);
	table_close(rel, RowExclusiveLock);
}

/*
 * Is there an owner entry for row "id" of table "classid" naming "owner"?
 * Reads pg_shdepend with a fresh catalog snapshot.
 */
bool
projection_owner_entry_exists(Oid classid, int32 id, Oid owner)
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
				ObjectIdGetDatum(classid));
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
