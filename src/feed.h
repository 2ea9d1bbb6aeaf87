/*-------------------------------------------------------------------------
 *
 * feed.h
 *	  Feeds: events handed in order, without gaps, to consumers outside the
 *	  database, through poll/ack with leases and checkpoints kept here
 *	  (feed.c: the feeds and their management; feedpoll.c: poll; feedack.c:
 *	  ack, nack, seek).
 *
 * IDENTIFICATION
 *	  src/feed.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FEED_H
#define PROJECTION_FEED_H

#include "fmgr.h"
#include "utils/timestamp.h"

#define FEED_MAX_PARTITIONS 1024

/* a feed's registry row */
typedef struct ProjectionFeedRow
{
	int32		id;
	char	   *name;
	Oid			owner;
	int			partitions;
	Datum		types;			/* text[], or 0 for every type */
	bool		paused;
	int			max_attempts;	/* 0: never park */
	bool		park_stream;	/* park => 'stream' (1.6): max_attempts parks the stream */
} ProjectionFeedRow;

/* feed.c: shared by the feed files */
extern int64 projection_feed_interval_ms(Interval *iv);
extern void projection_feed_run(const char *sql, int nargs, Oid *types, Datum *values,
								const char *nulls, bool read_only, int expected);
extern void projection_feed_exec(const char *sql, int nargs, Oid *types, Datum *values,
								 const char *nulls, int expected);
extern void projection_feed_wake_on_commit(void);
extern ProjectionFeedRow *projection_feed_lookup(const char *name, bool lock, MemoryContext cxt);
extern void projection_feed_check_events_privilege(Oid role, const char *detail);
extern void projection_feed_require_preloaded(const char *what);
extern int64 projection_feed_horizon(void);
extern bool projection_feed_has_partition_index(int partitions);
extern bool projection_feed_has_holds(void);

/*
 * An ack checked and its partition's row locked, its UPDATE still to come
 * (feedack.c): the ack a poll carries (1.7) is written by the UPDATE that
 * takes the poll's next lease when that lease is of the same partition
 * (feedlease.c), so the row is updated once (a second UPDATE of a row in
 * its transaction checks the foreign key to the feed again, a KEY SHARE
 * lock on the feed's row: with several consumers, a multixact per poll).
 */
typedef struct ProjectionFeedAck
{
	int			partition;		/* the acked lease's partition */
	int64		epoch;			/* its lease_epoch, as locked */
	int64		up_to;			/* the events acked are up to this one */
	int64		position;		/* the partition's checkpoint after the ack */
	bool		written;		/* the partition's row has the ack */
} ProjectionFeedAck;

/*
 * The SET items of an ack's UPDATE of feed_partitions after the lease's
 * own (the ack up to the parameter "up_to"): a nack's failed event acked
 * past is forgotten.  Shared by feedack.c and feedlease.c.
 */
#define FEED_ACK_SET_SQL(up_to) \
	"acked_at = pg_catalog.clock_timestamp(), retry_at = NULL, " \
	"attempts = CASE WHEN " up_to " OPERATOR(pg_catalog.<) failed_position THEN attempts ELSE 0 END, " \
	"last_error = CASE WHEN " up_to " OPERATOR(pg_catalog.<) failed_position THEN last_error END, " \
	"failed_position = CASE WHEN " up_to " OPERATOR(pg_catalog.<) failed_position THEN failed_position END "

/* feedack.c: an ack, for ack and poll's ack argument */
extern int64 projection_feed_ack_lease(ProjectionFeedRow *row, const char *token, bool has_up_to,
									   int64 up_to);
extern void projection_feed_ack_prepare(ProjectionFeedRow *row, const char *token, bool has_up_to,
										int64 up_to, ProjectionFeedAck *ack);
extern void projection_feed_ack_write(ProjectionFeedRow *row, ProjectionFeedAck *ack);

/* feedpark.c: parked streams (1.6) */
extern void projection_feed_hold_park(ProjectionFeedRow *row, int partition, int64 failed,
									  int attempts, Datum error, bool error_null, bool replaying);
extern void projection_feed_hold_replayed(ProjectionFeedRow *row, int partition,
										  const char *stream, int64 up_to);
extern bool projection_feed_hold_done(ProjectionFeedRow *row, int partition, const char *stream,
									  int64 epoch);
extern void projection_feed_hold_forget(ProjectionFeedRow *row, int partition);
extern int64 projection_feed_hold_replayed_to(ProjectionFeedRow *row, int partition,
											 const char *stream);
extern char *projection_feed_hold_of_lease(ProjectionFeedRow *row, int partition,
										   const char *token, int64 *replayed_to);
extern void projection_feed_hold_lease(ProjectionFeedRow *row, int partition, const char *stream,
									   const char *token);

/* transaction end (xact.c) */
extern void projection_feed_at_eoxact(bool commit);

#endif							/* PROJECTION_FEED_H */
