/*-------------------------------------------------------------------------
 *
 * feedlease.h
 *	  Taking a feed lease (feedlease.c), for poll (feedpoll.c).
 *
 * IDENTIFICATION
 *	  src/feedlease.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FEEDLEASE_H
#define PROJECTION_FEEDLEASE_H

#include "feed.h"

extern char *projection_feed_new_token(ProjectionFeedRow *row, int partition, int64 epoch);
extern bool projection_feed_take_lease(ProjectionFeedRow *row, int partition, int64 epoch,
									   const char *token, Interval *lease, int64 last, int64 after,
									   ProjectionFeedAck *ack);

extern void projection_feed_lease_commit_async(bool own_statement, bool wrote_before);
extern void projection_feed_lease_at_pre_commit(void);
extern void projection_feed_lease_at_eoxact(void);

#endif							/* PROJECTION_FEEDLEASE_H */
