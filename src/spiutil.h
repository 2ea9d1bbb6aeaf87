/*-------------------------------------------------------------------------
 *
 * spiutil.h
 *	  Argument checks, extension statements as the bootstrap superuser,
 *	  SPI checks and kept plans (spiutil.c).
 *
 * IDENTIFICATION
 *	  src/spiutil.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SPIUTIL_H
#define PROJECTION_SPIUTIL_H

#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"

extern void projection_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname);
extern char *projection_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname);
/* a statement's plan, prepared (and kept) by the caller of projection_extension_run */
typedef SPIPlanPtr (*ProjectionPlanFor) (const char *sql, int nargs, Oid *types);

extern void projection_extension_exec(const char *sql, int nargs, Oid *types, Datum *values,
									  const char *nulls, bool read_only, int expected);
extern void projection_extension_run(ProjectionPlanFor plan_for, const char *sql, int nargs,
									 Oid *types, Datum *values, const char *nulls,
									 bool read_only, int expected);
extern void projection_registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
									 const char *nulls, int expected);
extern List *projection_spi_names(MemoryContext cxt);
extern void projection_spi_check(int rc, int expected, const char *what);
extern SPIPlanPtr projection_kept_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types);

#endif							/* PROJECTION_SPIUTIL_H */
