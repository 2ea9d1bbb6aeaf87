/*-------------------------------------------------------------------------
 *
 * inline.h
 *	  Inline projections (inline.c).
 *
 * IDENTIFICATION
 *	  src/inline.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_INLINE_H
#define PROJECTION_INLINE_H

extern void projection_lock_out_appenders(const char *what);

#endif							/* PROJECTION_INLINE_H */
