/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The static launcher background worker.
 *
 * IDENTIFICATION
 *	  src/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_LAUNCHER_H
#define PROJECTION_LAUNCHER_H

#include "compat.h"

extern void projection_launcher_register(void);
extern PGDLLEXPORT void projection_launcher_main(Datum main_arg) pg_attribute_noreturn();

#endif							/* PROJECTION_LAUNCHER_H */
