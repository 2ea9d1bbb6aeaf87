/*-------------------------------------------------------------------------
 *
 * ownerentry.h
 *	  pg_shdepend owner entries of rows in our tables: the one trigger
 *	  body of _registry_owner and _feed_owner, forgetting a table's
 *	  entries, the test for one entry (ownerentry.c).
 *
 * IDENTIFICATION
 *	  src/ownerentry.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_OWNERENTRY_H
#define PROJECTION_OWNERENTRY_H

#include "fmgr.h"

extern Datum projection_owner_entry_trigger(FunctionCallInfo fcinfo, const char *function,
											const char *table, Oid relid);
extern Oid	projection_our_table_relid(const char *table);
extern void projection_owner_entries_forget(Oid classid);
extern bool projection_owner_entry_exists(Oid classid, int32 id, Oid owner);

#endif							/* PROJECTION_OWNERENTRY_H */
