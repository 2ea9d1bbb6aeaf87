/*-------------------------------------------------------------------------
 *
 * horizon.h
 *	  The safe horizon of async readers (horizon.c).
 *
 * IDENTIFICATION
 *	  src/horizon.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_HORIZON_H
#define PROJECTION_HORIZON_H

/* writer side: an appending transaction */
extern void projection_appender_begin(void);
extern void projection_appender_note_position(int64 position);
extern void projection_appender_forget(int64 min_pos);
extern void projection_appender_at_eoxact(void);
extern bool projection_appended_in_xact(void);

#endif							/* PROJECTION_HORIZON_H */
