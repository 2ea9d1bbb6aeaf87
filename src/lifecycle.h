/*-------------------------------------------------------------------------
 *
 * lifecycle.h
 *	  Changing a projection after create(): removing statements (off),
 *	  altering its settings, create's if_not_exists form, and the way out
 *	  of poison events (skip, retry of dead letters).
 *
 * IDENTIFICATION
 *	  src/lifecycle.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_LIFECYCLE_H
#define PROJECTION_LIFECYCLE_H

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

/*
 * The management helpers lifecycle.c shares with the other management
 * calls (api.c): the registry written as the bootstrap superuser, the
 * projection's row looked up and locked (a worker batch holding it is
 * cancelled), the ownership check, the state change, the argument checks.
 */
extern void projection_registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
									 const char *nulls, int expected);
extern ProjectionRow *projection_registry_lookup(const char *name, MemoryContext cxt);
extern void projection_check_owner(ProjectionRow *row);
extern void projection_registry_set_state(int32 id, const char *state, bool set_position,
										  int64 position, bool clear_error);
extern ProjectionDef *projection_registry_def(ProjectionRegistry *registry, int32 id);
extern void projection_check_tables(ArrayType *tables);
extern void projection_check_event_types(ArrayType *types);

/* lifecycle.c, called by create() and on() */
extern void projection_create_existing(const char *name, Oid handler, ArrayType *event_types,
									   bool is_inline, ArrayType *tables, const char *on_error);
extern void projection_on_notice_existing(int32 id, const char *name, const char *event_type);

#endif							/* PROJECTION_LIFECYCLE_H */
