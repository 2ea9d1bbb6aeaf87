/*-------------------------------------------------------------------------
 *
 * feed.c
 *	  Feeds: the events of projection.events handed to a process outside
 *	  the database (a search indexer, a cache writer, a broker bridge), in
 *	  order, without gaps, at least once, with the checkpoint kept in the
 *	  database: create_feed, drop_feed, poll, ack, seek, pause_feed,
 *	  resume_feed and feed_partition.
 *
 * A feed has "partitions" partitions; a stream belongs to partition
 * feed_partition(stream_id, partitions), the 32-bit FNV-1a hash of the
 * stream id's bytes (in the database encoding) modulo the partition count.
 * FNV-1a is fixed arithmetic on bytes, so the mapping is the same on every
 * platform, every PostgreSQL version and every release of this extension
 * (hashtext() is not: its result depends on the machine's byte order).  A
 * partition is consumed by one lease holder at a time, so each consumer gets
 * whole streams, in position order.
 *
 * The rows (sql/projection--1.2--1.3.sql): projection.feeds (one per feed)
 * and projection.feed_partitions (checkpoint "position" and lease of each
 * partition).  They are ordinary tables: a checkpoint moves in the ack's
 * transaction, survives restarts and crashes, and pg_dump keeps it.
 *
 * poll, in one READ COMMITTED statement:
 *	1. compute the safe horizon H (feed_horizon: the rule of worker.c,
 *	   "Which events are safe"): read the sequence's last_value, then the
 *	   appending transactions, then take a snapshot S; every position <= H
 *	   is visible in S or dead for ever.  Positions this transaction
 *	   appended itself (not yet committed) are excluded too;
 *	2. with S, read the feed's partitions and pick a free one (no lease, or
 *	   an expired one) that has events in (position, H]: the given one, or
 *	   the free one with the lowest checkpoint; read its next events there;
 *	3. take the lease with one UPDATE that succeeds only if the row is
 *	   unchanged since step 2 (same lease_epoch, still free): a concurrent
 *	   poll, ack or seek makes it fail, and poll starts over.  No row lock is
 *	   held by a poll that returns nothing, so a long-poll blocks no one.
 * A poll that finds nothing returns no rows and holds no lease.  With wait,
 * it sleeps on the database's feed condition variable (broadcast by every
 * appending transaction's commit or abort, and by ack, seek and
 * resume_feed at commit) and tries again, until events come or wait passes.
 * A lease's end wakes it too (it sleeps no longer than that), and
 * projection.naptime bounds every sleep as the worker's safety net.
 * While it sleeps it advertises no xmin when the statement is a plain
 * "SELECT ... FROM projection.poll(...)" in READ COMMITTED (the rule of
 * projection.wait, feed_may_release_snapshot): every read after a sleep
 * uses a new snapshot.
 *
 * ack(feed, token, up_to) finds the partition by its lease token, refuses
 * (PJF01, nothing changed) if that lease expired or was taken over, sets
 * the checkpoint to up_to (default: the last event of the poll) and ends
 * the lease.  lease_epoch grows with every lease, ack and seek, which is
 * what step 3 compares.
 *
 * Locking: only row locks on projection.feeds / feed_partitions, taken by
 * the UPDATEs of poll (step 3), ack and seek and by FOR UPDATE in the
 * management calls; no LWLock is held here.  The shared state used is the
 * appenders' registry (read lock-free, as the worker does) and the feed
 * condition variables in ProjectionShared.
 *
 * IDENTIFICATION
 *	  src/feed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "eventread.h"
#include "feed.h"
#include "projection.h"
#include "shmem.h"
#include "trigger.h"

#define FEED_MAX_PARTITIONS 1024
#define FEED_TOKEN_RANDOM_BYTES 12

PG_FUNCTION_INFO_V1(projection_feed_partition);
PG_FUNCTION_INFO_V1(projection_create_feed);
PG_FUNCTION_INFO_V1(projection_drop_feed);
PG_FUNCTION_INFO_V1(projection_poll);
PG_FUNCTION_INFO_V1(projection_ack);
PG_FUNCTION_INFO_V1(projection_nack);
PG_FUNCTION_INFO_V1(projection_seek);
PG_FUNCTION_INFO_V1(projection_pause_feed);
PG_FUNCTION_INFO_V1(projection_resume_feed);

/* a feed's registry row */
typedef struct FeedRow
{
	int32		id;
	char	   *name;
	Oid			owner;
	int			partitions;
	Datum		types;			/* text[], or 0 for every type */
	bool		paused;
	int			max_attempts;	/* 0: never park */
} FeedRow;

/* a partition as poll saw it */
typedef struct FeedPartition
{
	int			partition;
	int64		position;
	int64		epoch;
	bool		leased;			/* an unexpired lease */
	TimestampTz expires;		/* its end (0 if none) */
	bool		backing_off;	/* a nack's retry_after has not passed */
	TimestampTz retry_at;		/* its end (0 if none) */
} FeedPartition;

static bool feed_wake_at_commit = false;
static bool feed_callback_registered = false;

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

static void
feed_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

static char *
feed_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *s;

	feed_require_arg(fcinfo, argno, argname);
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", argname)));
	return s;
}

/* an interval in milliseconds (months as 30 days, as projection.wait does) */
static int64
feed_interval_ms(Interval *iv)
{
	return (int64) (iv->time / 1000) + (int64) iv->day * 86400000 +
		(int64) iv->month * 30 * 86400000;
}

/*
 * The kept plan of one of our fixed statements, prepared on first use in
 * this backend.  The statements are string constants, so the text's
 * address identifies them.  Caller is connected to SPI and runs as the
 * bootstrap superuser.
 */
#define FEED_MAX_PLANS 32
static struct
{
	const char *sql;
	SPIPlanPtr	plan;
}			feed_plans[FEED_MAX_PLANS];

static SPIPlanPtr
feed_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan;
	int			i;

	for (i = 0; i < FEED_MAX_PLANS && feed_plans[i].sql != NULL; i++)
		if (feed_plans[i].sql == sql)
			return feed_plans[i].plan;
	plan = SPI_prepare(sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (i == FEED_MAX_PLANS)
		return plan;			/* not kept: freed with the SPI procedure */
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	feed_plans[i].plan = plan;
	feed_plans[i].sql = sql;
	return plan;
}

/*
 * Run one of our fixed statements on the extension's tables as the
 * bootstrap superuser (callers have no rights on them; ownership is checked
 * before).  read_only: with the active snapshot; otherwise a new snapshot
 * for the statement.  Connected to SPI.
 */
static void
feed_run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		 bool read_only, int expected)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_plan(feed_plan(sql, nargs, types), values, nulls, read_only, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, sql);
}

/* read-write: a new snapshot for each statement */
static void
feed_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		  int expected)
{
	feed_run(sql, nargs, types, values, nulls, false, expected);
}

/* the commit callback: wake the long-polls once the transaction is visible */
static void
feed_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && feed_wake_at_commit)
		projection_feed_wake(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		feed_wake_at_commit = false;
}

/* Wake this database's long-polls when this transaction commits. */
static void
feed_wake_on_commit(void)
{
	if (!feed_callback_registered)
	{
		RegisterXactCallback(feed_xact_callback, NULL);
		feed_callback_registered = true;
	}
	feed_wake_at_commit = true;
}

/* 32-bit FNV-1a: offset basis 2166136261, prime 16777619 */
static uint32
feed_fnv1a(const char *bytes, int len)
{
	uint32		h = 2166136261u;
	int			i;

	for (i = 0; i < len; i++)
	{
		h ^= (unsigned char) bytes[i];
		h *= 16777619u;
	}
	return h;
}

/*
 * feed_partition(stream_id, partitions): the partition a stream belongs to.
 * Stable: see the file header.
 */
Datum
projection_feed_partition(PG_FUNCTION_ARGS)
{
	text	   *stream_id = PG_GETARG_TEXT_PP(0);
	int32		partitions = PG_GETARG_INT32(1);

	if (partitions < 1 || partitions > FEED_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partitions must be between 1 and %d", FEED_MAX_PARTITIONS)));
	PG_RETURN_INT32((int32) (feed_fnv1a(VARDATA_ANY(stream_id), VARSIZE_ANY_EXHDR(stream_id)) %
							 (uint32) partitions));
}

/*
 * Look up a feed by name (FOR UPDATE if "lock"), check that the caller owns
 * it (is a member of its owner role, or superuser).  Raises
 * UNDEFINED_OBJECT or INSUFFICIENT_PRIVILEGE.  Result in "cxt".
 */
static FeedRow *
feed_lookup(const char *name, bool lock, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	FeedRow    *row;
	MemoryContext oldcxt;
	Datum		d;

	values[0] = CStringGetTextDatum(name);
	feed_exec(lock ?
			  "SELECT id, owner::pg_catalog.oid, partitions, event_types, paused, max_attempts "
			  "FROM projection.feeds WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE" :
			  "SELECT id, owner::pg_catalog.oid, partitions, event_types, paused, max_attempts "
			  "FROM projection.feeds WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feed \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	oldcxt = MemoryContextSwitchTo(cxt);
	row = palloc0(sizeof(FeedRow));
	row->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	row->name = pstrdup(name);
	row->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	row->partitions = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	row->types = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
	row->paused = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	d = SPI_getbinval(tup, desc, 6, &isnull);
	row->max_attempts = isnull ? 0 : DatumGetInt32(d);
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);

	if (!has_privs_of_role(GetUserId(), row->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of feed \"%s\"", name),
				 errhint("A member of the feed's owner role may use it: GRANT %s TO %s.",
						 quote_identifier(GetUserNameFromId(row->owner, false)),
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
	return row;
}

/* The events reader must be able to read the events: 42501 with the GRANT. */
static void
feed_check_events_privilege(Oid role, const char *detail)
{
	if (pg_class_aclcheck(projection_oids()->events, role, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("%s", detail),
				 errhint("Grant it with GRANT SELECT ON projection.events TO %s.",
						 quote_identifier(GetUserNameFromId(role, false)))));
}

static void
feed_require_preloaded(const char *what)
{
	if (ProjectionAppenders == NULL || ProjectionShared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s: the projection library is not preloaded", what),
				 errdetail("Feeds need the appending transactions published in shared memory to find the safe horizon."),
				 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
}

/* ---------------------------------------------------------------------
 * The safe horizon
 * ---------------------------------------------------------------------
 */

/*
 * The highest position up to which every event is visible in the snapshot
 * this pushes as the active snapshot, or dead for ever (the rule of
 * worker.c, "Which events are safe": last_value, then the appenders, then
 * the snapshot).  Events this transaction appended itself are not yet
 * committed, and may roll back: the horizon stays below them.  An appender
 * caught between publishing its xid and drawing its position holds every
 * gap for microseconds: wait it out with a fresh snapshot.  The caller pops
 * the active snapshot.  READ COMMITTED only (GetTransactionSnapshot() must
 * be new).
 */
static int64
feed_horizon(void)
{
	int64		last_value;
	int64		horizon;
	ProjectionAppenderSeen *appenders;
	int			nappenders;

	for (;;)
	{
		last_value = projection_sequence_last_value();
		appenders = projection_read_appenders(MyDatabaseId, &nappenders);
		PushActiveSnapshot(GetTransactionSnapshot());
		if (!projection_appender_pending(appenders, nappenders, GetActiveSnapshot()))
			break;
		PopActiveSnapshot();
		pfree(appenders);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	horizon = projection_gap_bound(last_value, appenders, nappenders, GetActiveSnapshot());
	pfree(appenders);

	if (projection_appended_in_xact() && MyBackendId != InvalidBackendId &&
		MyBackendId <= ProjectionNumAppenders)
	{
		uint64		own = pg_atomic_read_u64(&ProjectionAppenders[MyBackendId - 1].min_pos);

		if (own > 0)
			horizon = Min(horizon, (int64) own - 1);
	}
	return horizon;
}

/* ---------------------------------------------------------------------
 * create_feed, drop_feed, pause_feed, resume_feed
 * ---------------------------------------------------------------------
 */

static void
feed_check_event_types(ArrayType *types)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	if (ARR_NDIM(types) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a one-dimensional array", "event_types")));
	deconstruct_array(types, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_types"),
				 errhint("Pass NULL to feed every event type.")));
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", "event_types")));
		if (VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("argument \"%s\" must not contain empty strings", "event_types")));
	}
}

/*
 * create_feed(name, event_types, start_from, partitions, max_attempts): a
 * feed owned by the caller, every partition's checkpoint at the start
 * position.  max_attempts: after that many nacks of one event, it is parked
 * (NULL: retried for ever).
 * start_from: 'beginning' (0), 'end' (the safe horizon now: events still
 * being committed below the last position are delivered) or a position.
 */
Datum
projection_create_feed(PG_FUNCTION_ARGS)
{
	char	   *name = feed_text_arg(fcinfo, 0, "name");
	char	   *start_from = feed_text_arg(fcinfo, 2, "start_from");
	int32		partitions;
	int64		start;
	Oid			types[6] = {TEXTOID, OIDOID, TEXTARRAYOID, INT4OID, INT8OID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	feed_require_arg(fcinfo, 3, "partitions");
	partitions = PG_GETARG_INT32(3);
	if (!PG_ARGISNULL(1))
		feed_check_event_types(PG_GETARG_ARRAYTYPE_P(1));
	if (partitions < 1 || partitions > FEED_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partitions must be between 1 and %d", FEED_MAX_PARTITIONS)));
	if (!PG_ARGISNULL(4) && PG_GETARG_INT32(4) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1"),
				 errhint("Pass NULL to retry a failing event for ever.")));
	if (strcmp(start_from, "beginning") == 0)
		start = 0;
	else if (strcmp(start_from, "end") == 0)
		start = -1;
	else
	{
		char	   *end;

		errno = 0;
		start = strtoll(start_from, &end, 10);
		if (errno != 0 || *end != '\0' || start < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid start_from \"%s\"", start_from),
					 errhint("Valid values are 'beginning', 'end' or a position (a non-negative integer).")));
	}
	feed_check_events_privilege(GetUserId(), "Creating a feed needs the SELECT privilege on projection.events.");
	if (start == -1 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot create a feed starting at the end in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Run it in a READ COMMITTED transaction.")));
	if (start == -1)
		feed_require_preloaded("create a feed starting at the end");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = CStringGetTextDatum(name);
	feed_exec("SELECT 1 FROM projection.feeds WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("feed \"%s\" already exists", name)));
	if (start == -1)
	{
		start = feed_horizon();
		PopActiveSnapshot();
	}

	values[1] = ObjectIdGetDatum(GetUserId());
	if (PG_ARGISNULL(1))
		nulls[2] = 'n';
	else
		values[2] = PG_GETARG_DATUM(1);
	values[3] = Int32GetDatum(partitions);
	values[4] = Int64GetDatum(start);
	if (PG_ARGISNULL(4))
		nulls[5] = 'n';
	else
		values[5] = PG_GETARG_DATUM(4);
	feed_exec("WITH f AS (INSERT INTO projection.feeds (name, owner, event_types, partitions, max_attempts) "
			  "VALUES ($1, $2::pg_catalog.regrole, $3, $4, $6) RETURNING id) "
			  "INSERT INTO projection.feed_partitions (feed_id, partition, position) "
			  "SELECT f.id, p, $5 FROM f, pg_catalog.generate_series(0, $4 OPERATOR(pg_catalog.-) 1) p",
			  6, types, values, nulls, SPI_OK_INSERT);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/* drop_feed(name): the feed, its checkpoints and leases (owner only) */
Datum
projection_drop_feed(PG_FUNCTION_ARGS)
{
	char	   *name = feed_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, true, cxt);
	values[0] = Int32GetDatum(row->id);
	feed_exec("DELETE FROM projection.feeds WHERE id OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_DELETE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	feed_wake_on_commit();		/* long-polls of this feed learn it is gone */
	PG_RETURN_VOID();
}

static void
feed_set_paused(FunctionCallInfo fcinfo, bool paused)
{
	char	   *name = feed_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	Oid			types[2] = {INT4OID, BOOLOID};
	Datum		values[2];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, true, cxt);
	values[0] = Int32GetDatum(row->id);
	values[1] = BoolGetDatum(paused);
	feed_exec("UPDATE projection.feeds SET paused = $2 WHERE id OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (!paused)
		feed_wake_on_commit();
}

/*
 * pause_feed(name): polls return nothing (long-polls sleep) until
 * resume_feed; leases already handed out can still be acked.
 */
Datum
projection_pause_feed(PG_FUNCTION_ARGS)
{
	feed_set_paused(fcinfo, true);
	PG_RETURN_VOID();
}

Datum
projection_resume_feed(PG_FUNCTION_ARGS)
{
	feed_set_paused(fcinfo, false);
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * seek, ack
 * ---------------------------------------------------------------------
 */

/*
 * seek(feed, position): every partition's checkpoint to position, every
 * lease ended (their acks are refused).  Back to replay, ahead to skip;
 * not past the last position drawn.
 */
Datum
projection_seek(PG_FUNCTION_ARGS)
{
	char	   *name = feed_text_arg(fcinfo, 0, "feed");
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	int64		position;
	int64		last;
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		values[2];

	feed_require_arg(fcinfo, 1, "position");
	position = PG_GETARG_INT64(1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, true, cxt);
	last = projection_sequence_last_value();
	if (position < 0 || position > last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("position %lld is out of range", (long long) position),
				 errdetail("Positions go from 0 (before the first event) to %lld (the last event).",
						   (long long) last)));
	values[0] = Int32GetDatum(row->id);
	values[1] = Int64GetDatum(position);
	feed_exec("UPDATE projection.feed_partitions SET position = $2, "
			  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = NULL, "
			  "lease_holder = NULL, lease_expires = NULL, lease_last = NULL, "
			  "failed_position = NULL, attempts = 0, last_error = NULL, retry_at = NULL "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	feed_wake_on_commit();
	PG_RETURN_VOID();
}

/* the partition a live lease token holds, locked (lease_row) */
typedef struct FeedLease
{
	int			partition;
	int64		position;
	int64		last;			/* the last event the poll returned */
	int64		failed_position;	/* 0 if none */
	int			attempts;
} FeedLease;

/*
 * Find and lock the partition that "token" leases; raise PJF01 if that lease
 * expired, was taken over, or ended with an ack, a nack or a seek.
 */
static void
feed_lease_row(FeedRow *row, const char *token, FeedLease *lease)
{
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	bool		active = false;
	bool		isnull;

	values[0] = Int32GetDatum(row->id);
	values[1] = CStringGetTextDatum(token);
	feed_exec("SELECT partition, position, lease_last, "
			  "lease_expires OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), "
			  "COALESCE(failed_position, 0), attempts "
			  "FROM projection.feed_partitions "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND lease_token OPERATOR(pg_catalog.=) $2 FOR UPDATE",
			  2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		lease->partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		lease->position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		lease->last = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		active = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)) && !isnull;
		lease->failed_position = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		lease->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	}
	if (!active)
		ereport(ERROR,
				(errcode(ERRCODE_PROJECTION_LEASE_LOST),
				 errmsg("lease of feed \"%s\" is no longer held", row->name),
				 errdetail("The lease expired, or was taken over by another poll, or ended with an ack, a nack or a seek; its unacknowledged events are delivered again."),
				 errhint("Poll again, and ack before the lease passes (the lease argument of projection.poll).")));
}

/*
 * ack(feed, token, up_to): the leased partition's checkpoint to up_to
 * (default: the last event the poll returned), the lease ended; returns the
 * new checkpoint.  up_to lies between the checkpoint (ack nothing, just end
 * the lease) and the poll's last event.  A lease that expired or was taken
 * over is refused with PJF01 and nothing changes: its events go out again.
 */
Datum
projection_ack(PG_FUNCTION_ARGS)
{
	char	   *name = feed_text_arg(fcinfo, 0, "feed");
	char	   *token = feed_text_arg(fcinfo, 1, "token");
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	FeedLease	lease;
	Oid			types[3] = {INT4OID, INT4OID, INT8OID};
	Datum		values[3];
	int64		up_to;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, false, cxt);
	feed_lease_row(row, token, &lease);
	up_to = PG_ARGISNULL(2) ? lease.last : PG_GETARG_INT64(2);
	if (up_to < lease.position || up_to > lease.last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("up_to %lld is outside the leased events", (long long) up_to),
				 errdetail("Partition %d of feed \"%s\" is at %lld; the poll returned events up to %lld.",
						   lease.partition, name, (long long) lease.position, (long long) lease.last)));
	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(lease.partition);
	values[2] = Int64GetDatum(up_to);
	feed_exec("UPDATE projection.feed_partitions SET position = $3, "
			  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = NULL, "
			  "lease_holder = NULL, lease_expires = NULL, lease_last = NULL, "
			  "acked_at = pg_catalog.clock_timestamp(), retry_at = NULL, "
			  "attempts = CASE WHEN $3 OPERATOR(pg_catalog.<) failed_position THEN attempts ELSE 0 END, "
			  "last_error = CASE WHEN $3 OPERATOR(pg_catalog.<) failed_position THEN last_error END, "
			  "failed_position = CASE WHEN $3 OPERATOR(pg_catalog.<) failed_position THEN failed_position END "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
			  3, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	feed_wake_on_commit();		/* a partial ack leaves events for others */
	PG_RETURN_INT64(up_to);
}

/*
 * nack(feed, token, failed_position, error, retry_after): the consumer
 * could not handle the event at failed_position (one the poll returned).
 * The events before it are acked (the checkpoint moves to just before it),
 * the lease ends, and the partition is not handed out again before
 * retry_after has passed; then the failed event comes first.  The number of
 * nacks of that event in a row is counted (feed_status.attempts); when it
 * reaches the feed's max_attempts, the event is parked instead: recorded in
 * projection.feed_parked_events, passed over, and the partition goes on
 * with the next event at once (the stream's later events are delivered:
 * as on_error => 'skip' for projections, parking trades that stream's
 * completeness for the feed's progress).  Returns the new checkpoint.
 * PJF01 for a lost lease, as ack.
 */
Datum
projection_nack(PG_FUNCTION_ARGS)
{
	char	   *name = feed_text_arg(fcinfo, 0, "feed");
	char	   *token = feed_text_arg(fcinfo, 1, "token");
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	FeedLease	lease;
	int64		failed;
	Interval   *retry_after;
	int			attempts;
	bool		park;
	Oid			types[6] = {INT4OID, INT4OID, INT8OID, INT4OID, TEXTOID, INTERVALOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int64		result;

	feed_require_arg(fcinfo, 2, "failed_position");
	feed_require_arg(fcinfo, 4, "retry_after");
	failed = PG_GETARG_INT64(2);
	retry_after = PG_GETARG_INTERVAL_P(4);
	if (feed_interval_ms(retry_after) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_after must not be negative")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, false, cxt);
	feed_lease_row(row, token, &lease);
	if (failed <= lease.position || failed > lease.last)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("failed_position %lld is not an event of the lease", (long long) failed),
				 errdetail("Partition %d of feed \"%s\" is at %lld; the poll returned events up to %lld.",
						   lease.partition, name, (long long) lease.position, (long long) lease.last)));
	attempts = (lease.failed_position == failed ? lease.attempts : 0) + 1;
	park = row->max_attempts > 0 && attempts >= row->max_attempts;

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(lease.partition);
	values[2] = Int64GetDatum(failed);
	values[3] = Int32GetDatum(attempts);
	if (PG_ARGISNULL(3))
		nulls[4] = 'n';
	else
		values[4] = PG_GETARG_DATUM(3);
	values[5] = IntervalPGetDatum(retry_after);
	if (park)
	{
		feed_exec("INSERT INTO projection.feed_parked (feed_id, global_position, stream_id, event_type, attempts, error) "
				  "SELECT $1, e.global_position, e.stream_id, e.event_type, $4, $5 "
				  "FROM projection.events e WHERE e.global_position OPERATOR(pg_catalog.=) $3 "
				  "ON CONFLICT (feed_id, global_position) DO UPDATE SET attempts = EXCLUDED.attempts, "
				  "error = EXCLUDED.error, parked_at = EXCLUDED.parked_at",
				  5, types, values, nulls, SPI_OK_INSERT);
		feed_exec("UPDATE projection.feed_partitions SET position = $3, "
				  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = NULL, "
				  "lease_holder = NULL, lease_expires = NULL, lease_last = NULL, "
				  "acked_at = pg_catalog.clock_timestamp(), retry_at = NULL, "
				  "failed_position = NULL, attempts = 0, last_error = $5 "
				  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
				  5, types, values, nulls, SPI_OK_UPDATE);
		result = failed;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("feed \"%s\" parked an event after %d failed attempts", name, attempts),
				 errdetail("The event at position %lld is passed over; the partition goes on after it.",
						   (long long) failed),
				 errhint("The event is listed in projection.feed_parked_events.")));
	}
	else
	{
		feed_exec("UPDATE projection.feed_partitions SET "
				  "position = $3 OPERATOR(pg_catalog.-) 1, "
				  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = NULL, "
				  "lease_holder = NULL, lease_expires = NULL, lease_last = NULL, "
				  "acked_at = pg_catalog.clock_timestamp(), "
				  "failed_position = $3, attempts = $4, last_error = $5, "
				  "retry_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $6 "
				  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2",
				  6, types, values, nulls, SPI_OK_UPDATE);
		result = failed - 1;
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	feed_wake_on_commit();
	PG_RETURN_INT64(result);
}

/* ---------------------------------------------------------------------
 * poll
 * ---------------------------------------------------------------------
 */

/*
 * May poll stop advertising an xmin while it sleeps?  Only if nothing will
 * read with this backend's older snapshots after it returns: the statement
 * is a plain "SELECT ... FROM projection.poll(...)" (a function scan of
 * poll alone, constant or parameter arguments, no subqueries), at the top
 * level, with no other portal open, in READ COMMITTED (poll refuses the
 * other levels).  Anywhere else poll keeps the statement's snapshot while
 * it sleeps, as any function does.  The rule of projection.wait.
 */
static bool
feed_may_release_snapshot(FunctionCallInfo fcinfo)
{
	Portal		portal = ActivePortal;
	PlannedStmt *stmt;
	FunctionScan *scan;
	RangeTblFunction *rtf;
	FuncExpr   *call;
	ListCell   *arg;

	if (IsolationUsesXactSnapshot() || portal == NULL || list_length(portal->stmts) != 1 ||
		!ThereAreNoReadyPortals())
		return false;
	stmt = linitial_node(PlannedStmt, portal->stmts);
	if (stmt->commandType != CMD_SELECT || stmt->utilityStmt != NULL ||
		stmt->subplans != NIL || stmt->planTree == NULL ||
		!IsA(stmt->planTree, FunctionScan) || stmt->planTree->lefttree != NULL ||
		stmt->planTree->initPlan != NIL)
		return false;
	scan = (FunctionScan *) stmt->planTree;
	if (list_length(scan->functions) != 1)
		return false;
	rtf = linitial_node(RangeTblFunction, scan->functions);
	call = (FuncExpr *) rtf->funcexpr;
	if (call == NULL || !IsA(call, FuncExpr) || call->funcid != fcinfo->flinfo->fn_oid)
		return false;
	foreach(arg, call->args)
		if (!IsA(lfirst(arg), Const) && !IsA(lfirst(arg), Param))
			return false;
	return true;
}

/*
 * The feed's partitions as the active snapshot sees them (ordered by
 * checkpoint, then number), or only "partition" if >= 0.  Sets *next_expiry
 * to the soonest end of a lease or of a nack's back-off (0 if none).
 * Result palloc'd.
 */
static FeedPartition *
feed_read_partitions(FeedRow *row, int partition, int *count, TimestampTz *next_expiry)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];
	FeedPartition *parts;
	uint64		i;

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(partition);
	feed_run("SELECT partition, position, lease_epoch, "
			 "COALESCE(lease_expires OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), false), "
			 "lease_expires, "
			 "COALESCE(retry_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), false), "
			 "retry_at FROM projection.feed_partitions "
			 "WHERE feed_id OPERATOR(pg_catalog.=) $1 "
			 "AND ($2 OPERATOR(pg_catalog.<) 0 OR partition OPERATOR(pg_catalog.=) $2) "
			 "ORDER BY position, partition",
			 2, types, values, NULL, true, SPI_OK_SELECT);

	*next_expiry = 0;
	parts = palloc(sizeof(FeedPartition) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		parts[i].partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		parts[i].position = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		parts[i].epoch = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		parts[i].leased = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		parts[i].expires = isnull ? 0 : DatumGetTimestampTz(d);
		parts[i].backing_off = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		d = SPI_getbinval(tup, desc, 7, &isnull);
		parts[i].retry_at = isnull ? 0 : DatumGetTimestampTz(d);
		if (parts[i].leased && (*next_expiry == 0 || parts[i].expires < *next_expiry))
			*next_expiry = parts[i].expires;
		if (parts[i].backing_off && (*next_expiry == 0 || parts[i].retry_at < *next_expiry))
			*next_expiry = parts[i].retry_at;
	}
	*count = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return parts;
}

/*
 * Re-read the feed's row with a new snapshot: it may have been dropped,
 * paused or resumed while we slept.  Raises UNDEFINED_OBJECT if dropped.
 */
static void
feed_refresh(FeedRow *row)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;

	values[0] = Int32GetDatum(row->id);
	feed_exec("SELECT paused FROM projection.feeds WHERE id OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feed \"%s\" was dropped while polling", row->name)));
	row->paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Read partition "p"'s events in (p->position, horizon], at most max_events
 * and, after the first, max_bytes, with the active snapshot, as the
 * bootstrap superuser (the feed's owner may read events: checked).  Rows
 * in "cxt".
 *
 * The four forms of the query (with or without a type filter and a
 * partition filter) are kept plans, one set per backend.  They are planned
 * with enable_sort off: right after a bulk load the statistics may say the
 * range holds a few rows, and a bitmap scan sorted afterwards would then
 * read the whole backlog for every poll; the index scan in position order
 * stops after max_events.
 */
static SPIPlanPtr feed_event_plans[4];

static void
feed_read_events(FeedRow *row, FeedPartition *p, int64 horizon, int max_events,
				 Size max_bytes, MemoryContext cxt, ProjectionEventRows *rows)
{
	Oid			types[6];
	Datum		values[6];
	int			nargs = 0;
	int			form = (row->types != (Datum) 0 ? 1 : 0) + (row->partitions > 1 ? 2 : 0);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	types[nargs] = INT8OID;
	values[nargs++] = Int64GetDatum(p->position);
	types[nargs] = INT8OID;
	values[nargs++] = Int64GetDatum(horizon);
	types[nargs] = INT4OID;
	values[nargs++] = Int32GetDatum(max_events);
	if (row->types != (Datum) 0)
	{
		types[nargs] = TEXTARRAYOID;
		values[nargs++] = row->types;
	}
	if (row->partitions > 1)
	{
		types[nargs] = INT4OID;
		values[nargs++] = Int32GetDatum(row->partitions);
		types[nargs] = INT4OID;
		values[nargs++] = Int32GetDatum(p->partition);
	}

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (feed_event_plans[form] == NULL)
	{
		StringInfoData sql;
		SPIPlanPtr	plan;

		initStringInfo(&sql);
		appendStringInfoString(&sql,
							   "SELECT e.global_position, e.stream_id, e.stream_version, e.event_type, "
							   "e.data, e.metadata, e.recorded_at FROM projection.events e "
							   "WHERE e.global_position OPERATOR(pg_catalog.>) $1 "
							   "AND e.global_position OPERATOR(pg_catalog.<=) $2");
		if (form & 1)
			appendStringInfoString(&sql, " AND e.event_type OPERATOR(pg_catalog.=) ANY ($4)");
		if (form & 2)
			appendStringInfo(&sql, " AND projection.feed_partition(e.stream_id, $%d) OPERATOR(pg_catalog.=) $%d",
							 nargs - 1, nargs);
		appendStringInfoString(&sql, " ORDER BY e.global_position LIMIT $3");
		plan = SPI_prepare(sql.data, nargs, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		feed_event_plans[form] = plan;
		pfree(sql.data);
	}
	projection_read_events(feed_event_plans[form], nargs, types, values, max_events, max_bytes,
						   cxt, rows);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/* a new lease token: feed, partition, epoch and random bytes */
static char *
feed_new_token(FeedRow *row, FeedPartition *p)
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
	return psprintf("%d.%d.%lld.%s", row->id, p->partition, (long long) p->epoch + 1, hex);
}

/*
 * Take the lease of partition p if its row is still as we read it (same
 * epoch, no unexpired lease).  In READ COMMITTED the UPDATE waits for a
 * concurrent writer of the row and re-checks the new version.  Returns
 * false if someone else got there first.
 */
static bool
feed_take_lease(FeedRow *row, FeedPartition *p, const char *token, Interval *lease, int64 last)
{
	Oid			types[7] = {INT4OID, INT4OID, INT8OID, TEXTOID, TEXTOID, INTERVALOID, INT8OID};
	Datum		values[7];

	values[0] = Int32GetDatum(row->id);
	values[1] = Int32GetDatum(p->partition);
	values[2] = Int64GetDatum(p->epoch);
	values[3] = CStringGetTextDatum(token);
	values[4] = CStringGetTextDatum(psprintf("%s (pid %d)",
											 application_name ? application_name : "",
											 MyProcPid));
	values[5] = IntervalPGetDatum(lease);
	values[6] = Int64GetDatum(last);
	feed_exec("UPDATE projection.feed_partitions SET "
			  "lease_epoch = lease_epoch OPERATOR(pg_catalog.+) 1, lease_token = $4, lease_holder = $5, "
			  "lease_expires = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) $6, lease_last = $7 "
			  "WHERE feed_id OPERATOR(pg_catalog.=) $1 AND partition OPERATOR(pg_catalog.=) $2 "
			  "AND lease_epoch OPERATOR(pg_catalog.=) $3 "
			  "AND (lease_expires IS NULL OR lease_expires OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()) "
			  "AND (retry_at IS NULL OR retry_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())",
			  7, types, values, NULL, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/* what one look at the feed found */
typedef enum FeedLook
{
	FEED_LOOK_GOT,				/* leased a partition, events in *rows */
	FEED_LOOK_EMPTY,			/* nothing to hand out now */
	FEED_LOOK_RACE				/* lost a lease to a concurrent poll: look again */
} FeedLook;

/*
 * One look: horizon, partitions, events, lease (steps 1-3 of the file
 * header).  With a given partition whose lease is held, raises
 * OBJECT_IN_USE.  Sets *next_expiry for the long-poll's sleep.
 */
static FeedLook
feed_look(FeedRow *row, int partition, int max_events, Size max_bytes, Interval *lease,
		  MemoryContext cxt, ProjectionEventRows *rows, FeedPartition *got, char **token,
		  TimestampTz *next_expiry)
{
	int64		horizon;
	FeedPartition *parts;
	int			nparts;
	int			i;
	FeedLook	result = FEED_LOOK_EMPTY;
	int64		last;
	bool		isnull;

	*next_expiry = 0;
	horizon = feed_horizon();
	{
		parts = feed_read_partitions(row, partition, &nparts, next_expiry);
		if (partition >= 0 && nparts == 1 && parts[0].leased)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("partition %d of feed \"%s\" is leased", partition, row->name),
					 errdetail("The lease ends at %s.", timestamptz_to_str(parts[0].expires)),
					 errhint("Ack the events of the lease first, or poll another partition.")));
		for (i = 0; i < nparts && !row->paused; i++)
		{
			FeedPartition *p = &parts[i];

			if (p->leased || p->backing_off || p->position >= horizon)
				continue;
			feed_read_events(row, p, horizon, max_events, max_bytes, cxt, rows);
			if (rows->ntuples == 0)
				continue;
			last = DatumGetInt64(heap_getattr(rows->tuples[rows->ntuples - 1],
											  Anum_events_global_position, rows->tupdesc, &isnull));
			*token = feed_new_token(row, p);
			if (feed_take_lease(row, p, *token, lease, last))
			{
				*got = *p;
				result = FEED_LOOK_GOT;
			}
			else
				result = FEED_LOOK_RACE;
			break;
		}
	}
	PopActiveSnapshot();
	return result;
}

/*
 * poll(feed, max_events, wait, lease, partition, max_bytes): lease one
 * partition (the given one, or any free one with events) and return its
 * next events after its checkpoint, in position order, up to the safe
 * horizon, each row with the lease token and the partition.  Nothing to
 * return: no rows, no lease.  With wait, an empty poll sleeps until events
 * come or wait passes (see the file header).  Owner only; the owner must
 * still be allowed to read projection.events.
 */
Datum
projection_poll(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = feed_text_arg(fcinfo, 0, "feed");
	int32		max_events;
	int64		wait_ms;
	Interval   *lease;
	int32		partition = -1;
	Size		max_bytes = SIZE_MAX;
	MemoryContext cxt = CurrentMemoryContext;
	FeedRow    *row;
	TimestampTz deadline;
	bool		release;
	ConditionVariable *cv;
	ProjectionEventRows rows;
	FeedPartition got;
	char	   *token = NULL;
	bool		found = false;
	int			i;

	feed_require_arg(fcinfo, 1, "max_events");
	feed_require_arg(fcinfo, 2, "wait");
	feed_require_arg(fcinfo, 3, "lease");
	max_events = PG_GETARG_INT32(1);
	wait_ms = feed_interval_ms(PG_GETARG_INTERVAL_P(2));
	lease = PG_GETARG_INTERVAL_P(3);
	if (max_events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be at least 1")));
	if (wait_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative")));
	if (feed_interval_ms(lease) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be positive")));
	if (!PG_ARGISNULL(4))
	{
		partition = PG_GETARG_INT32(4);
		if (partition < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("partition must not be negative")));
	}
	if (!PG_ARGISNULL(5))
	{
		if (PG_GETARG_INT32(5) < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_bytes must be at least 1")));
		max_bytes = (Size) PG_GETARG_INT32(5);
	}
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot poll a feed in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("The safe horizon needs a snapshot taken after the appending transactions are read."),
				 errhint("Run it in a READ COMMITTED transaction.")));
	feed_require_preloaded("poll a feed");
	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = feed_lookup(name, false, cxt);
	feed_check_events_privilege(row->owner,
								psprintf("The owner of feed \"%s\" needs the SELECT privilege on projection.events for polls.",
										 name));
	if (partition >= row->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("feed \"%s\" has no partition %d", name, partition),
				 errdetail("Its partitions are 0 to %d.", row->partitions - 1)));

	release = feed_may_release_snapshot(fcinfo);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	cv = projection_feed_cv(MyDatabaseId);
	for (;;)
	{
		TimestampTz next_expiry;
		TimestampTz now;
		long		sleep_ms;
		FeedLook	look;

		if (wait_ms > 0)
			ConditionVariablePrepareToSleep(cv);
		look = feed_look(row, partition, max_events, max_bytes, lease, cxt, &rows, &got,
						 &token, &next_expiry);
		if (look == FEED_LOOK_GOT)
		{
			found = true;
			break;
		}
		if (look == FEED_LOOK_RACE)
			continue;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		/* projection.naptime is the safety net, as for the worker */
		sleep_ms = (long) Min((deadline - now) / 1000, projection_naptime);
		if (next_expiry != 0 && next_expiry > now)
			sleep_ms = Min(sleep_ms, (long) ((next_expiry - now) / 1000) + 1);
		/* sleep holding no snapshot (every look uses a new one) */
		if (release)
		{
			InvalidateCatalogSnapshot();
			MyProc->xmin = InvalidTransactionId;
		}
		(void) ConditionVariableTimedSleep(cv, Max(sleep_ms, 1), PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		feed_refresh(row);
	}
	if (wait_ms > 0)
		ConditionVariableCancelSleep();

	if (found)
	{
		text	   *token_text = cstring_to_text(token);

		for (i = 0; i < rows.ntuples; i++)
		{
			Datum		values[2 + Natts_events];
			bool		nulls[2 + Natts_events];

			values[0] = PointerGetDatum(token_text);
			nulls[0] = false;
			values[1] = Int32GetDatum(got.partition);
			nulls[1] = false;
			heap_deform_tuple(rows.tuples[i], rows.tupdesc, values + 2, nulls + 2);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	return (Datum) 0;
}
