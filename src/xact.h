/*-------------------------------------------------------------------------
 *
 * xact.h
 *	  The extension's (sub)transaction callbacks (xact.c).
 *
 * IDENTIFICATION
 *	  src/xact.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_XACT_H
#define PROJECTION_XACT_H

extern void projection_xact_init(void);

#endif							/* PROJECTION_XACT_H */
