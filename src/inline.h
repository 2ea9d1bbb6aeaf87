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
extern bool projection_inline_applying(void);
extern void projection_inline_at_eoxact(void);
extern void projection_inline_at_subxact_abort(SubTransactionId mySubid);
extern void projection_inline_at_subxact_commit(SubTransactionId mySubid,
												SubTransactionId parentSubid);

#endif							/* PROJECTION_INLINE_H */
