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

#include "access/tupdesc.h"
#include "feed.h"
#include "utils/tuplestore.h"

/* what one read put in poll's result */
typedef struct ProjectionFeedBatch
{
	Tuplestorestate *store;		/* rows of poll's result type, created by the caller */
	int			ntuples;
	int64		last;			/* global_position of the last row */
} ProjectionFeedBatch;

extern void projection_feed_read_events(ProjectionFeedRow *row, int partition, int64 position,
										int64 horizon, int max_events, Size max_bytes,
										const char *stream, Datum held, text *token,
										TupleDesc result_desc, ProjectionFeedBatch *batch);

#endif							/* PROJECTION_FEEDREAD_H */
