/*-------------------------------------------------------------------------
 *
 * feedread.h
 *	  Reading a feed partition's next events (feedread.c), for poll.
 *
 * IDENTIFICATION
 *	  src/feedread.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FEEDREAD_H
#define PROJECTION_FEEDREAD_H

#include "eventread.h"
#include "feed.h"

extern void projection_feed_read_events(ProjectionFeedRow *row, int partition, int64 position,
										int64 horizon, int max_events, Size max_bytes,
										MemoryContext cxt, ProjectionEventRows *rows);

#endif							/* PROJECTION_FEEDREAD_H */
