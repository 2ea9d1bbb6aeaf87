/*-------------------------------------------------------------------------
 *
 * workerround.h
 *	  One round of the worker (workerround.c).
 *
 * IDENTIFICATION
 *	  src/workerround.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_WORKERROUND_H
#define PROJECTION_WORKERROUND_H

extern bool projection_worker_round(void);

#endif							/* PROJECTION_WORKERROUND_H */
