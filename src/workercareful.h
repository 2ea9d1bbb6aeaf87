/*-------------------------------------------------------------------------
 *
 * workercareful.h
 *	  The worker's careful replay after a handler error (workercareful.c).
 *
 * IDENTIFICATION
 *	  src/workercareful.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_WORKERCAREFUL_H
#define PROJECTION_WORKERCAREFUL_H

extern void projection_worker_round_careful(int64 from, int64 horizon_limit);

#endif							/* PROJECTION_WORKERCAREFUL_H */
