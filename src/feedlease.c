/*-------------------------------------------------------------------------
 *
 * feedlease.c
 *	  Taking a feed lease: the token, and the UPDATE that takes the lease
 *	  only if the partition's row is still as poll read it.  poll
 *	  (feedpoll.c) calls these; ack, nack, seek and extend_lease
 *	  (feedack.c) end or move a lease.
 *
 * A token is "feed.partition.epoch.random": the epoch the lease will have
 * and 12 random bytes, so a token is never handed out twice (the unique
 * index feed_partitions_token_idx holds them).  Taking the lease bumps
 * lease_epoch (feed.c's header).
 *
 * The ack a poll carries (1.7): when the poll leases the partition the ack
 * locked, the lease UPDATE writes the ack's effect too, so the row is
 * updated once in the transaction (a second UPDATE would check the foreign
 * key to the feed again: a KEY SHARE lock on the feed's row, a multixact
 * with several consumers).
 *
 * A poll that is a statement of its own, and whose lease is all its
 * transaction writes, commits without waiting for the WAL flush
 * (projection_feed_lease_commit_async).
 *
 * Locking: the lease UPDATE's row lock, held to the end of the poll's
 * transaction when the lease is taken, released with a subtransaction
 * when it is not (see projection_feed_take_lease).  No LWLock.
 *
 * IDENTIFICATION
 *	  src/feedlease.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "feed.h"
#include "feedlease.h"
#include "spiutil.h"
#include "subxact.h"

#define FEED_TOKEN_RANDOM_BYTES 12

/* a new lease token: feed, partition, epoch and random bytes */
char *
projection_feed_new_token(ProjectionFeedRow *row, int partition, int64 epoch)
{
	uint8		bytes[FEED_TOKEN_RANDOM_BYTES];
	char		hex[FEED_TOKEN_RANDOM_BYTES * 2 + 1];
	int			i;

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random lease token")));
	for (i = 0; i < FEED_TOKEN_RANDOM_BYTES; i++)
		sprintf(hex + 2 * i, "%02x", bytes[i]);
	return psprintf("%d.%d.%lld.%s", row->id, partition, (long long) epoch + 1, hex);
}

/*
 * The lease UPDATE of projection_feed_take_lease; true if it took the
 * lease.  With "ack" (the prepared ack of this partition's lease that the
 * poll carries, 1.7), the same UPDATE writes the ack: the partition's row
 * is the one the ack locked, so it is as the ack read it, and the lease's
 * epoch moves by two, one for the ack and one for the lease (the token was
 * made for that epoch).
 */
static bool
feed_update_lease(ProjectionFeedRow *row, int partition, int64 epoch, const char *token,
				  Interval *lease, int64 last, int64 after, const ProjectionFeedAck *ack)
{
	Oid			types[10] = {INT4OID, INT4OID, INT8OID, TEXTOID, TEXTOID, INTERVALOID, INT8OID, INT8OID,
	INT8OID, INT8OID};
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	values[2] = Int64GetDatum(epoch);
	values[3] = CStringGetTextDatum(token);
	values[4] = CStringGetTextDatum(psprintf("%s (pid %d)",
											 application_name ? application_name : "",
											 MyProcPid));
	values[5] = IntervalPGetDatum(lease);
	values[6] = Int64GetDatum(last);
	values[7] = Int64GetDatum(after);
	if (after < 0)
		nulls[7] = 'n';
	if (ack != NULL)
	{
		values[2] = Int64GetDatum(ack->epoch);
		values[8] = Int64GetDatum(ack->up_to);
		values[9] = Int64GetDatum(ack->position);
		projection_feed_exec("UPDATE projection.feed_partitions SET "
							 "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 2, lease_token = $4, lease_holder = $5, "
							 "lease_expires = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $6, lease_last = $7, "
							 "position = COALESCE($8, $10), "
							 FEED_ACK_SET_SQL("$9")
							 "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2 "
							 "AND lease_epoch OPERATOR(pg_catalog.=) $3",
							 10, types, values, nulls, SPI_OK_UPDATE);
		if (SPI_processed != 1)
			elog(ERROR, "the acked partition %d of feed \"%s\" changed under its lock",
				 partition, row->name);
		return true;
	}
	projection_feed_exec("UPDATE projection.feed_partitions SET "
			  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = $4, lease_holder = $5, "
			  "lease_expires = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $6, lease_last = $7, "
			  "position = COALESCE($8, position) "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2 "
			  "AND lease_epoch OPERATOR(pg_catalog.=) $3 "
			  "AND (lease_expires IS NULL OR lease_expires OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()) "
			  "AND (retry_at IS NULL OR retry_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())",
			  8, types, values, nulls, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/* the arguments of feed_lease_body: those of feed_update_lease, no ack */
typedef struct FeedLeaseArgs
{
	ProjectionFeedRow *row;
	int			partition;
	int64		epoch;
	const char *token;
	Interval   *lease;
	int64		last;
	int64		after;
} FeedLeaseArgs;

/* the lease UPDATE in its subtransaction: kept if it took the lease */
static bool
feed_lease_body(void *arg)
{
	FeedLeaseArgs *args = (FeedLeaseArgs *) arg;

	return feed_update_lease(args->row, args->partition, args->epoch, args->token,
							 args->lease, args->last, args->after, NULL);
}

/*
 * Take the lease of a partition if its row is still as poll read it (same
 * epoch, no unexpired lease, no back-off).  In READ COMMITTED the UPDATE
 * waits for a concurrent writer of the row and re-checks the new version;
 * when the re-check fails, the UPDATE changes nothing but keeps the row
 * locked to the end of the transaction.  So the UPDATE runs in a
 * subtransaction that is rolled back when it changed nothing: a poll that
 * lost a race holds no lock while it tries another partition or sleeps
 * (two such polls could otherwise deadlock, each holding the row the other
 * wants).  Returns false if someone else got there first.  An error leaves
 * the subtransaction (rolled back) and goes on.
 */
bool
projection_feed_take_lease(ProjectionFeedRow *row, int partition, int64 epoch, const char *token,
						   Interval *lease, int64 last, int64 after, ProjectionFeedAck *ack)
{
	FeedLeaseArgs args;

	if (ack != NULL && !ack->written && ack->partition == partition)
	{
		/* the row is locked by the ack: the UPDATE cannot miss, no subtransaction */
		(void) feed_update_lease(row, partition, epoch, token, lease, last, after, ack);
		ack->written = true;
		return true;
	}
	args.row = row;
	args.partition = partition;
	args.epoch = epoch;
	args.token = token;
	args.lease = lease;
	args.last = last;
	args.after = after;
	return projection_subxact_run(feed_lease_body, &args, NULL, NULL);
}

/*
 * The end of the WAL this backend had written right after a poll took its
 * lease, when that poll may commit without waiting for the flush
 * (InvalidXLogRecPtr: none).  Cleared at every transaction end.
 */
static XLogRecPtr feed_async_lease_end = InvalidXLogRecPtr;

/*
 * A poll that is a statement of its own ("own_statement": poll's
 * feed_may_release_snapshot, and no transaction block) commits its lease
 * without waiting for the WAL flush: its only writes are the lease and the
 * ack it carries (poll's ack argument, 1.5, written after "wrote_before"
 * was read), and either lost in a server crash costs nothing the contract
 * does not allow (the token's ack is refused, the events after the last
 * durable checkpoint are delivered again).  That takes the flushes out of
 * the path from an append's commit to the poll's return.
 *
 * Only if the lease is the transaction's only write: IsTransactionBlock()
 * is false in a pipeline of the extended protocol too, where the poll
 * shares its transaction (up to the Sync) with the statements before and
 * after it, an append say, whose durability must not change.  So the poll
 * qualifies only if the transaction wrote nothing before it
 * ("wrote_before": it had an xid), and the decision is taken at pre-commit
 * (projection_feed_lease_at_pre_commit): synchronous_commit off for this
 * commit only if no WAL was written after the lease.  Call after the lease
 * was taken.
 */
void
projection_feed_lease_commit_async(bool own_statement, bool wrote_before)
{
	if (!own_statement || wrote_before || IsTransactionBlock())
		return;
	feed_async_lease_end = XactLastRecEnd;
}

/*
 * Pre-commit (xact.c, after every other pre-commit step): if a poll's
 * lease is all this transaction wrote, commit it without waiting for the
 * flush (SET LOCAL semantics: the setting ends with the transaction).
 */
void
projection_feed_lease_at_pre_commit(void)
{
	if (feed_async_lease_end != InvalidXLogRecPtr && XactLastRecEnd == feed_async_lease_end)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	feed_async_lease_end = InvalidXLogRecPtr;
}

/* Transaction end: no poll's lease is pending any more. */
void
projection_feed_lease_at_eoxact(void)
{
	feed_async_lease_end = InvalidXLogRecPtr;
}
