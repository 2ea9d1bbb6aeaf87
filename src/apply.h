/*-------------------------------------------------------------------------
 *
 * apply.h
 *	  One event applied to one projection on its own (apply.c).
 *
 * IDENTIFICATION
 *	  src/apply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_APPLY_H
#define PROJECTION_APPLY_H

#include "utils/elog.h"
#include "utils/palloc.h"

#include "catalog.h"
#include "handler.h"

extern void projection_apply_one(ProjectionOwnerScope *scope, ProjectionDef *def, Datum event,
								 const char *event_type, int64 position);
extern ErrorData *projection_apply_one_guarded(ProjectionDef *def, Datum event,
											   const char *event_type, int64 position,
											   MemoryContext errcxt);
extern bool projection_error_is_fatal(ErrorData *edata);

#endif							/* PROJECTION_APPLY_H */
