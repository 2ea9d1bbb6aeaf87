/*-------------------------------------------------------------------------
 *
 * lifecycle.h
 *	  Changing a projection after create(): removing statements (off),
 *	  altering its settings, create's if_not_exists form.
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

/* lifecycle.c, called by create() and on() */
extern void projection_create_existing(const char *name, Oid handler, ArrayType *event_types,
									   bool is_inline, ArrayType *tables, const char *on_error);
extern void projection_on_notice_existing(int32 id, const char *name, const char *event_type);

#endif							/* PROJECTION_LIFECYCLE_H */
