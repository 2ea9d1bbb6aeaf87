/*-------------------------------------------------------------------------
 *
 * feeddepend.h
 *	  The owners of feeds in pg_shdepend, and what DROP ROLE, DROP OWNED
 *	  and REASSIGN OWNED do to feeds (called from depend.c).
 *
 * IDENTIFICATION
 *	  src/feeddepend.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FEEDDEPEND_H
#define PROJECTION_FEEDDEPEND_H

#include "nodes/pg_list.h"

extern Oid	projection_feed_table_relid(void);
extern bool projection_feed_table_dropped(Oid relid);
extern List *projection_feed_owned_names(Oid role);
extern void projection_feed_drop_owned(Oid role);
extern void projection_feed_reassign_owned(Oid oldrole, Oid newrole);
extern int	projection_feed_check_owners(void);

#endif							/* PROJECTION_FEEDDEPEND_H */
