/*-------------------------------------------------------------------------
 *
 * streams.h
 *	  Stream versions and their locks (streams.c).
 *
 * IDENTIFICATION
 *	  src/streams.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_STREAMS_H
#define PROJECTION_STREAMS_H

extern int64 projection_stream_version(text *stream_id);
extern void projection_stream_note_version(text *stream_id, int64 version);
extern void projection_stream_versions_forget(void);
extern void projection_streams_at_eoxact(void);

#endif							/* PROJECTION_STREAMS_H */
