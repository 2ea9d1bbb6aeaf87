/*-------------------------------------------------------------------------
 *
 * registry.h
 *	  Registry rows for management calls (registry.c).
 *
 * IDENTIFICATION
 *	  src/registry.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_REGISTRY_H
#define PROJECTION_REGISTRY_H

#include "utils/array.h"

#include "catalog.h"

/* the registry row of one projection, as management calls need it */
typedef struct ProjectionRow
{
	int32		id;
	char	   *name;
	Oid			owner;
	bool		is_inline;
	char	   *state;
	int64		position;
} ProjectionRow;

extern ProjectionRow *projection_registry_lookup(const char *name, MemoryContext cxt);
extern void projection_check_owner(ProjectionRow *row);
extern void projection_registry_set_state(int32 id, const char *state, bool set_position,
										  int64 position, bool clear_error);
extern ProjectionDef *projection_registry_def(ProjectionRegistry *registry, int32 id);
extern void projection_check_tables(ArrayType *tables);
extern void projection_check_event_types(ArrayType *types, const char *empty_hint);

/* set by projection.create() while it inserts its registry row */
extern bool projection_creating;

extern bool projection_registry_changed_in_xact(void);
extern void projection_registry_at_pre_commit(void);
extern void projection_registry_at_eoxact(void);
extern void projection_registry_at_subxact_abort(void);

#endif							/* PROJECTION_REGISTRY_H */
