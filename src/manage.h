/*-------------------------------------------------------------------------
 *
 * manage.h
 *	  The SQL face of projection management (manage.c).
 *
 * IDENTIFICATION
 *	  src/manage.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_MANAGE_H
#define PROJECTION_MANAGE_H

#include "fmgr.h"

extern Datum projection_drop(PG_FUNCTION_ARGS);

#endif							/* PROJECTION_MANAGE_H */
