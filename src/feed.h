/*-------------------------------------------------------------------------
 *
 * feed.h
 *	  Feeds: events handed in order, without gaps, to consumers outside the
 *	  database, through poll/ack with leases and checkpoints kept here.
 *
 * IDENTIFICATION
 *	  src/feed.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FEED_H
#define PROJECTION_FEED_H

/* wake the long-polls of a database: appenders' commit and abort callbacks */
extern void projection_feed_wake(Oid dboid);

#endif							/* PROJECTION_FEED_H */
