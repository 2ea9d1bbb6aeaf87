/*-------------------------------------------------------------------------
 *
 * feed.c
 *	  Feeds: the events of projection.events handed to a process outside
 *	  the database (a search indexer, a cache writer, a broker bridge), in
 *	  order, without gaps, at least once, with the checkpoint kept in the
 *	  database.  This file: the feeds themselves (create_feed, drop_feed,
 *	  pause_feed, resume_feed, feed_partition) and what the feed files
 *	  share (statements, lookups, checks); poll is in feedpoll.c, ack, nack
 *	  and seek in feedack.c.
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
 * The rows (sql/projection--1.2--1.3.sql): projection.feeds (one per feed),
 * projection.feed_partitions (checkpoint "position", lease and nack state
 * of each partition), projection.feed_parked and (1.6) projection.feed_holds
 * (parked streams, feedpark.c).  They are ordinary tables:
 * a checkpoint moves in the ack's transaction, survives restarts and
 * crashes, and pg_dump keeps it.  lease_epoch grows with every lease, ack,
 * nack and seek: a poll takes a lease only if the epoch is still the one
 * it read (feedpoll.c).
 *
 * Locking: only row locks on projection.feeds / feed_partitions, taken by
 * the UPDATEs of poll, ack, nack and seek and by FOR UPDATE in the
 * management calls; no LWLock is held here.  The shared state used is the
 * appenders' registry (read lock-free, as the worker does) and the feed
 * condition variables in ProjectionShared (shmem.c).
 *
 * Every statement is one of our fixed ones, kept as a plan and run as the
 * bootstrap superuser after the ownership checks (projection_feed_run).
 *
 * IDENTIFICATION
 *	  src/feed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog.h"
#include "feed.h"
#include "horizon.h"
#include "projection.h"
#include "registry.h"
#include "shmem.h"
#include "spiutil.h"

PG_FUNCTION_INFO_V1(projection_feed_partition);
PG_FUNCTION_INFO_V1(projection_create_feed);
PG_FUNCTION_INFO_V1(projection_drop_feed);
PG_FUNCTION_INFO_V1(projection_pause_feed);
PG_FUNCTION_INFO_V1(projection_resume_feed);

static bool feed_wake_at_commit = false;

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* an interval in milliseconds (months as 30 days, as projection.wait does) */
int64
projection_feed_interval_ms(Interval *iv)
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
void
projection_feed_run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		 bool read_only, int expected)
{
	projection_extension_run(feed_plan, sql, nargs, types, values, nulls, read_only, expected);
}

/* read-write: a new snapshot for each statement */
void
projection_feed_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		  int expected)
{
	projection_feed_run(sql, nargs, types, values, nulls, false, expected);
}

/*
 * Transaction end (xact.c): after a commit of an ack, nack, seek, resume or
 * drop, wake the long-polls, which may now take a partition.  A broadcast
 * cannot fail.
 */
void
projection_feed_at_eoxact(bool commit)
{
	if (commit && feed_wake_at_commit)
		projection_feed_wake(MyDatabaseId);
	feed_wake_at_commit = false;
}

/*
 * Whether this database's catalog has projection.feed_holds (1.6,
 * feedpark.c): two syscache lookups, as every poll asks.
 */
bool
projection_feed_has_holds(void)
{
	Oid			nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("feed_holds", nsp));
}

/* Wake this database's long-polls when this transaction commits. */
void
projection_feed_wake_on_commit(void)
{
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
ProjectionFeedRow *
projection_feed_lookup(const char *name, bool lock, MemoryContext cxt)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	ProjectionFeedRow    *row;
	MemoryContext oldcxt;
	Datum		d;

	/* feeds.park is 1.6: a catalog not yet updated has only feeds that park events */
	bool		has_park = projection_feed_has_holds();

	values[0] = CStringGetTextDatum(name);
#define FEED_LOOKUP_SQL(park) \
	"SELECT id, owner::pg_catalog.oid, partitions, event_types, paused, max_attempts, " park \
	" FROM projection.feeds WHERE name OPERATOR(pg_catalog.=) $1"
	projection_feed_exec(has_park ?
						 (lock ? FEED_LOOKUP_SQL("park OPERATOR(pg_catalog.=) 'stream'") " FOR UPDATE" :
						  FEED_LOOKUP_SQL("park OPERATOR(pg_catalog.=) 'stream'")) :
						 (lock ? FEED_LOOKUP_SQL("false") " FOR UPDATE" : FEED_LOOKUP_SQL("false")),
						 1, types, values, NULL, SPI_OK_SELECT);
#undef FEED_LOOKUP_SQL
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("feed \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	oldcxt = MemoryContextSwitchTo(cxt);
	row = palloc0(sizeof(ProjectionFeedRow));
	row->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	row->name = pstrdup(name);
	row->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	row->partitions = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	row->types = isnull ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(d));
	row->paused = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	d = SPI_getbinval(tup, desc, 6, &isnull);
	row->max_attempts = isnull ? 0 : DatumGetInt32(d);
	row->park_stream = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
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
void
projection_feed_check_events_privilege(Oid role, const char *detail)
{
	if (pg_class_aclcheck(projection_oids()->events, role, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("%s", detail),
				 errhint("Grant it with GRANT SELECT ON projection.events TO %s.",
						 quote_identifier(GetUserNameFromId(role, false)))));
}

void
projection_feed_require_preloaded(const char *what)
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
 * this pushes as the active snapshot, or dead for ever (horizon.c, read
 * settled: last_value, then the appenders, then the snapshot).  Events this
 * transaction appended itself are not yet committed, and may roll back: the
 * horizon stays below them.  An appender caught between publishing its xid
 * and drawing its position holds every gap for microseconds: the settled
 * read waits it out.  The caller pops
 * the active snapshot.  READ COMMITTED only (GetTransactionSnapshot() must
 * be new).
 */
int64
projection_feed_horizon(void)
{
	ProjectionHorizon h;
	int64		horizon;

	projection_horizon_read_settled(&h, MyDatabaseId);
	horizon = projection_horizon_gap_bound(&h);
	pfree(h.appenders);

	{
		int64		own;

		if (projection_appender_own(&own) && own > 0)
			horizon = Min(horizon, own - 1);
	}
	return horizon;
}

/* ---------------------------------------------------------------------
 * create_feed, drop_feed, pause_feed, resume_feed
 * ---------------------------------------------------------------------
 */

/*
 * create_feed(name, event_types, start_from, partitions, max_attempts,
 * park): a feed owned by the caller, every partition's checkpoint at the
 * start position.  max_attempts: after that many nacks of one event, it is
 * parked (NULL: retried for ever); park (1.6): 'event' parks the event
 * alone, 'stream' the event and its stream (feedpark.c).
 * start_from: 'beginning' (0), 'end' (the safe horizon now: events still
 * being committed below the last position are delivered) or a position.
 */
Datum
projection_create_feed(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	char	   *start_from = projection_text_arg(fcinfo, 2, "start_from");
	int32		partitions;
	int64		start;
	/* park (1.6): the 1.5 signature has five arguments */
	char	   *park = PG_NARGS() > 5 ? projection_text_arg(fcinfo, 5, "park") : "event";
	Oid			types[7] = {TEXTOID, OIDOID, TEXTARRAYOID, INT4OID, INT8OID, INT4OID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	projection_require_arg(fcinfo, 3, "partitions");
	partitions = PG_GETARG_INT32(3);
	if (!PG_ARGISNULL(1))
		projection_check_event_types(PG_GETARG_ARRAYTYPE_P(1), "Pass NULL to feed every event type.");
	if (partitions < 1 || partitions > FEED_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partitions must be between 1 and %d", FEED_MAX_PARTITIONS)));
	if (!PG_ARGISNULL(4) && PG_GETARG_INT32(4) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1"),
				 errhint("Pass NULL to retry a failing event for ever.")));
	if (strcmp(park, "event") != 0 && strcmp(park, "stream") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid park \"%s\"", park),
				 errhint("Valid values are 'event' and 'stream'.")));
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
	projection_feed_check_events_privilege(GetUserId(), "Creating a feed needs the SELECT privilege on projection.events.");
	if (start == -1 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot create a feed starting at the end in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Run it in a READ COMMITTED transaction.")));
	if (start == -1)
		projection_feed_require_preloaded("create a feed starting at the end");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = CStringGetTextDatum(name);
	projection_feed_exec("SELECT 1 FROM projection.feeds WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("feed \"%s\" already exists", name)));
	if (start == -1)
	{
		start = projection_feed_horizon();
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
	values[6] = CStringGetTextDatum(park);
	projection_feed_exec("WITH f AS (INSERT INTO projection.feeds (name, owner, event_types, partitions, max_attempts, park) "
			  "VALUES ($1, $2::pg_catalog.regrole, $3, $4, $6, $7) RETURNING id) "
			  "INSERT INTO projection.feed_partitions (feed_id, partition, position) "
			  "SELECT f.id, p, $5 FROM f, pg_catalog.generate_series(0, $4 OPERATOR(pg_catalog.-) 1) p",
			  7, types, values, nulls, SPI_OK_INSERT);
	if (partitions > 1 && !projection_feed_has_partition_index(partitions))
		ereport(NOTICE,
				(errmsg("no index on projection.events serves the partitions of feed \"%s\"", name),
				 errdetail("A poll of one of its %d partitions reads the other partitions' events of its range too; with a backlog, that costs in proportion to the number of partitions.",
						   partitions),
				 errhint("Create the index, which every append then also updates: CREATE INDEX CONCURRENTLY ON projection.events (projection.feed_partition(stream_id, %d), global_position);",
						 partitions)));
	if (ProjectionAppenders == NULL || ProjectionShared == NULL)	/* as create() warns */
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("feed \"%s\" cannot be polled: the projection library is not preloaded", name),
				 errhint("Add \"projection\" to shared_preload_libraries and restart the server.")));
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

/*
 * Is there a valid index on projection.events whose columns are
 * (projection.feed_partition(stream_id, partitions), global_position), the
 * one poll's partition filter can use (feedread.c)?  Connected to SPI.
 */
bool
projection_feed_has_partition_index(int partitions)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(psprintf("feed_partition\\(stream_id, %d\\), global_position\\)$",
											  partitions));
	projection_feed_run("SELECT 1 FROM pg_catalog.pg_index i "
						"WHERE i.indrelid OPERATOR(pg_catalog.=) 'projection.events'::pg_catalog.regclass "
						"AND i.indisvalid AND i.indpred IS NULL "
						"AND pg_catalog.pg_get_indexdef(i.indexrelid) OPERATOR(pg_catalog.~) $1",
						1, types, values, NULL, true, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/* drop_feed(name): the feed, its checkpoints and leases (owner only) */
Datum
projection_drop_feed(PG_FUNCTION_ARGS)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow    *row;
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(name, true, cxt);
	values[0] = Int32GetDatum(row->id);
	projection_feed_exec("DELETE FROM projection.feeds WHERE id OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_DELETE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	projection_feed_wake_on_commit();		/* long-polls of this feed learn it is gone */
	PG_RETURN_VOID();
}

static void
feed_set_paused(FunctionCallInfo fcinfo, bool paused)
{
	char	   *name = projection_text_arg(fcinfo, 0, "name");
	MemoryContext cxt = CurrentMemoryContext;
	ProjectionFeedRow    *row;
	Oid			types[2] = {INT4OID, BOOLOID};
	Datum		values[2];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	row = projection_feed_lookup(name, true, cxt);
	values[0] = Int32GetDatum(row->id);
	values[1] = BoolGetDatum(paused);
	projection_feed_exec("UPDATE projection.feeds SET paused = $2 WHERE id OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (!paused)
		projection_feed_wake_on_commit();
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

