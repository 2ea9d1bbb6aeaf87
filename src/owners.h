/*-------------------------------------------------------------------------
 *
 * owners.h
 *	  The owners of projections: pg_shdepend entries, role commands,
 *	  vanished owners (owners.c).
 *
 * IDENTIFICATION
 *	  src/owners.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_OWNERS_H
#define PROJECTION_OWNERS_H

#include "nodes/parsenodes.h"
#include "nodes/pg_list.h"

/* the registry as dependency code sees it (depend.c and owners.c) */
extern Oid	projection_depend_registry_relid(void);
extern void projection_depend_exec(const char *sql, Oid arg1, Oid arg2, int expected);
extern List *projection_depend_names(const char *sql, Oid arg);
extern void projection_depend_drop_projection(const char *name);

/* role commands in this database, before PostgreSQL runs them (depend.c) */
extern void projection_owners_drop_role(DropRoleStmt *stmt);
extern void projection_owners_drop_owned(DropOwnedStmt *stmt);
extern void projection_owners_reassign_owned(ReassignOwnedStmt *stmt);

/* owners that vanished, entries that went missing (the worker) */
extern void projection_depend_fail_ownerless(int32 id, const char *name, Oid owner);
extern void projection_depend_fail_unprivileged(int32 id, const char *name, Oid owner);
extern int	projection_depend_check_owners(void);

#endif							/* PROJECTION_OWNERS_H */
