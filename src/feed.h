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

#endif							/* PROJECTION_FEED_H */
