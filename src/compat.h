/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Shims for the PostgreSQL versions projection supports: 15, 17 and 18.
 *
 * The code is written against PostgreSQL 15's API; each shim below maps a
 * 15 name onto what a newer server offers instead, and says which version
 * needs it.  projection.h includes this file, so every .c file sees it after
 * its PostgreSQL headers.  Keep shims here, not #if blocks in the code.
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_COMPAT_H
#define PROJECTION_COMPAT_H

#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_tablespace.h"
#include "miscadmin.h"
#include "utils/acl.h"

/*
 * 16: the per-catalog pg_<catalog>_aclcheck() and pg_<catalog>_ownercheck()
 * are gone; object_aclcheck()/object_ownercheck() take the catalog's OID.
 * (pg_class_aclcheck itself remains, for its column-aware semantics.)  The
 * ones this code uses, or is likely to, are mapped.
 */
#if PG_VERSION_NUM >= 160000
#define pg_proc_aclcheck(proc_oid, roleid, mode) \
	object_aclcheck(ProcedureRelationId, (proc_oid), (roleid), (mode))
#define pg_database_aclcheck(db_oid, roleid, mode) \
	object_aclcheck(DatabaseRelationId, (db_oid), (roleid), (mode))
#define pg_namespace_aclcheck(nsp_oid, roleid, mode) \
	object_aclcheck(NamespaceRelationId, (nsp_oid), (roleid), (mode))
#define pg_tablespace_aclcheck(spc_oid, roleid, mode) \
	object_aclcheck(TableSpaceRelationId, (spc_oid), (roleid), (mode))
#define pg_class_ownercheck(class_oid, roleid) \
	object_ownercheck(RelationRelationId, (class_oid), (roleid))
#define pg_proc_ownercheck(proc_oid, roleid) \
	object_ownercheck(ProcedureRelationId, (proc_oid), (roleid))
#define pg_database_ownercheck(db_oid, roleid) \
	object_ownercheck(DatabaseRelationId, (db_oid), (roleid))
#define pg_namespace_ownercheck(nsp_oid, roleid) \
	object_ownercheck(NamespaceRelationId, (nsp_oid), (roleid))
#define pg_extension_ownercheck(ext_oid, roleid) \
	object_ownercheck(ExtensionRelationId, (ext_oid), (roleid))
#endif

/*
 * 15.20 (a backpatched fix; maybe 15.19) made have_createdb_privilege()
 * extern in commands/dbcommands.h.  The assert-enabled test server is built
 * from 15.18, the newest point release whose source the mirror serves, where
 * it is static: the same body here.
 */
#if PG_VERSION_NUM < 150020
#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "utils/syscache.h"

static inline bool
projection_have_createdb_privilege(void)
{
	bool		result = false;
	HeapTuple	utup;

	if (superuser())
		return true;
	utup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(GetUserId()));
	if (HeapTupleIsValid(utup))
	{
		result = ((Form_pg_authid) GETSTRUCT(utup))->rolcreatedb;
		ReleaseSysCache(utup);
	}
	return result;
}
#define have_createdb_privilege() projection_have_createdb_privilege()
#endif

/*
 * 17: BackendId and storage/backendid.h are gone; a backend's slot in the
 * shared PGPROC array is its ProcNumber (0-based, INVALID_PROC_NUMBER when it
 * has none, and below MaxBackends for regular backends and bgworkers).  Our
 * per-backend arrays are indexed by MyBackendId - 1, which stays correct with
 * MyBackendId defined as MyProcNumber + 1.
 */
#if PG_VERSION_NUM >= 170000
#include "storage/procnumber.h"
#define MyBackendId (MyProcNumber + 1)
#define InvalidBackendId (INVALID_PROC_NUMBER + 1)
#else
#include "storage/backendid.h"
#endif

/*
 * 17: PGPROC lost its pgprocno field; the number GetPGProcByNumber() takes
 * back is MyProcNumber.
 */
#if PG_VERSION_NUM >= 170000
#define PROJECTION_MY_PGPROCNO MyProcNumber
#else
#include "storage/proc.h"
#define PROJECTION_MY_PGPROCNO (MyProc->pgprocno)
#endif

/*
 * 18: PG_MODULE_MAGIC_EXT names the library, for pg_get_loaded_modules().
 * (No .version: the library serves every extension version, see README
 * "Upgrading".)
 */
#ifdef PG_MODULE_MAGIC_EXT
#define PROJECTION_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "projection")
#else
#define PROJECTION_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * 18: index_beginscan() takes an IndexScanInstrumentation pointer (NULL: no
 * EXPLAIN ANALYZE counters) before the key counts.
 */
#if PG_VERSION_NUM >= 180000
#define projection_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define projection_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

/*
 * 18: pg_attribute_noreturn() is gone (C11's pg_noreturn, placed before the
 * declaration, replaces it).  Debian builds with gcc or clang, which both
 * take the attribute after the declarator.
 */
#ifndef pg_attribute_noreturn
#define pg_attribute_noreturn() __attribute__((noreturn))
#endif

/*
 * 17: custom wait events.  WaitEventExtensionNew() registers a name that
 * pg_stat_activity.wait_event (and pg_wait_events) shows while a process
 * waits with the id it returns; before 17 every extension wait is
 * "Extension".
 */
#include "utils/wait_event.h"
#if PG_VERSION_NUM >= 170000
#define projection_wait_event_new(name) WaitEventExtensionNew(name)
#else
#define projection_wait_event_new(name) ((void) (name), PG_WAIT_EXTENSION)
#endif

#endif							/* PROJECTION_COMPAT_H */
