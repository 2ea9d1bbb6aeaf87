/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The per-database worker that applies async projections.
 *
 * IDENTIFICATION
 *	  src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_WORKER_H
#define PROJECTION_WORKER_H

#include "compat.h"

extern PGDLLEXPORT void projection_worker_main(Datum main_arg) pg_attribute_noreturn();

#endif							/* PROJECTION_WORKER_H */
