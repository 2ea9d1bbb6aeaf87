/*-------------------------------------------------------------------------
 *
 * feedread.c
 *	  Reading a feed partition's next events for poll (feedpoll.c): the
 *	  kept plans of the query, run as the bootstrap superuser, and a
 *	  receiver that puts each event straight into a tuplestore of poll's
 *	  result type (token, partition, the event's columns), with no copy of
 *	  the rows in between.
 *
 * Locking: none beyond the query's own; no shared state.  A relcache
 * callback (registered once per backend) marks the kept plans for a new
 * look at projection.events' indexes.
 *
 * IDENTIFICATION
 *	  src/feedread.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "nodes/parsenodes.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"

#include "catalog.h"
#include "feed.h"
#include "feedread.h"
#include "projection.h"

/* the receiver: the rows go into batch->store, up to the bounds */
typedef struct FeedReadReceiver
{
	DestReceiver pub;
	ProjectionFeedBatch *batch;
	TupleDesc	result_desc;
	Datum		token;
	int32		partition;
	int			max_rows;
	Size		max_bytes;
	Size		bytes;
} FeedReadReceiver;

static void
feedread_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	if (typeinfo->natts != Natts_events)
		elog(ERROR, "the feed's event query returns %d columns, not %d", typeinfo->natts, Natts_events);
}

/*
 * One event: its row of poll's result, in the store (tuplestore_putvalues
 * forms it in the store's context).  The bytes counted are those of the
 * event's row as a heap tuple, as eventread.c counts them.  false (stop the
 * executor) once a bound is reached.
 */
static bool
feedread_receive(TupleTableSlot *slot, DestReceiver *self)
{
	FeedReadReceiver *r = (FeedReadReceiver *) self;
	Datum		values[2 + Natts_events];
	bool		nulls[2 + Natts_events];
	bool		hasnull = false;
	Size		hoff;
	int			i;

	slot_getallattrs(slot);
	values[0] = r->token;
	nulls[0] = false;
	values[1] = Int32GetDatum(r->partition);
	nulls[1] = false;
	for (i = 0; i < Natts_events; i++)
	{
		values[2 + i] = slot->tts_values[i];
		nulls[2 + i] = slot->tts_isnull[i];
		hasnull |= slot->tts_isnull[i];
	}
	tuplestore_putvalues(r->batch->store, r->result_desc, values, nulls);
	r->batch->ntuples++;
	r->batch->last = DatumGetInt64(slot->tts_values[Anum_events_global_position - 1]);

	hoff = offsetof(HeapTupleHeaderData, t_bits) + (hasnull ? BITMAPLEN(Natts_events) : 0);
	r->bytes += HEAPTUPLESIZE + MAXALIGN(hoff) +
		heap_compute_data_size(slot->tts_tupleDescriptor, slot->tts_values, slot->tts_isnull);
	return r->batch->ntuples < r->max_rows && r->bytes < r->max_bytes;
}

static void
feedread_shutdown(DestReceiver *self)
{
}

static void
feedread_destroy(DestReceiver *self)
{
}

/* run the kept plan with the receiver (connected to SPI, as the superuser) */
static void
feedread_run(SPIPlanPtr plan, int nargs, Oid *types, Datum *values, FeedReadReceiver *receiver)
{
	SPIExecuteOptions options;
	ParamListInfo params = makeParamList(nargs);
	int			i;
	int			rc;

	for (i = 0; i < nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = types[i];
	}
	receiver->pub.receiveSlot = feedread_receive;
	receiver->pub.rStartup = feedread_startup;
	receiver->pub.rShutdown = feedread_shutdown;
	receiver->pub.rDestroy = feedread_destroy;
	receiver->pub.mydest = DestNone;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.tcount = receiver->max_rows;
	options.dest = (DestReceiver *) receiver;
	rc = SPI_execute_plan_extended(plan, &options);
	/* a SELECT into a DestNone receiver is reported as a utility command */
	if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute_plan_extended failed while reading events: %s",
			 SPI_result_code_string(rc));
}

/*
 * Read a partition's events in (position, horizon] (without the streams of
 * "held", a text[], if not 0; or, with "stream", only that stream's:
 * feedpark.c), at most max_events
 * and, after the first, max_bytes, with the active snapshot, as the
 * bootstrap superuser (the feed's owner may read events: checked), into
 * batch->store (created by the caller) as rows of poll's result type
 * "result_desc", each with "token" and the partition; batch->ntuples and
 * batch->last say what was read.
 *
 * The forms of the query (with or without a type filter; without a
 * partition filter, or with one for a feed of N partitions, with or
 * without the partition index) are kept plans, per backend.  They are
 * planned with enable_sort off: right after a bulk load the statistics may
 * say the range holds a few rows, and a bitmap scan sorted afterwards would
 * then read the whole backlog for every poll; the index scan in position
 * order stops after max_events.
 *
 * A feed of N partitions: when projection.events has the partition index
 * on (projection.feed_partition(stream_id, N), global_position) (README
 * "Partitioned feeds", 1.5; projection_feed_has_partition_index in feed.c),
 * the query is (1.6)
 *
 *	  WHERE feed_partition(stream_id, N) = ANY ($p) -- $p: int4[], {p}
 *	  AND global_position > $1 AND global_position <= $2
 *	  ORDER BY feed_partition(stream_id, N), global_position
 *
 * The same rows and order as "feed_partition(...) = p" ordered by
 * position, but "= ANY" of an array parameter makes no equivalence class
 * of the partition with a constant, so the first sort key is not dropped
 * as redundant, and only that index yields the order without a sort: it is
 * the plan whatever the statistics say.  The B-tree takes "= ANY" on its
 * first column as an equality key, so both bounds on the position are
 * where the scan starts and stops (row comparisons would force the index
 * as well, but their upper bound does not stop a B-tree scan: a horizon
 * held back by a long appending transaction would make every poll read
 * the partition's entries up to its end).  The array is a parameter of a
 * generic plan: no planner can turn it into an equality.  The form with
 * "= $p" was left to custom plans' costs (1.5), and they chose wrongly for
 * few partitions: the index's correlation is that of its first column
 * (about 1/N), so the planner expects a random heap read for each event
 * and, with the default random_page_cost, prefers the position index with
 * a filter, reading N times the events for a backlog of 2 or 4 partitions
 * (the benchmark's scaling rows).  Within one partition the index is in
 * position order, so its heap reads are as ordered as the position
 * index's.  Without the index this form could only be sorted: so it is
 * used only while the index exists, and a relcache invalidation of
 * projection.events (an index created, made valid or dropped) makes the
 * next poll look again (feedread_relcache_callback).  An index dropped
 * between that look and the read is met by a re-plan of the same text, a
 * sort of the range: that one read is slow, never wrong.  Without the
 * index: the equality filter on the position index's range.  Every form is
 * a generic plan: with the form chosen by the index's presence, the values
 * change nothing in the plan.
 *
 * A partition with parked streams (1.6, feedpark.c) adds
 * "stream_id <> ALL ($k)" (the parked streams, a text[]) as a filter to
 * the same scan; the form without it is the one of every poll of a
 * partition with none, so nothing changes for those.  The held events of a
 * released stream are read with "stream_id = $k" in place of the partition
 * filter, planned with sorts allowed: the stream's index finds its few
 * events in the range, sorted by position.
 *
 * The plans of the last FEED_PLAN_SLOTS (form, partition count) pairs are
 * kept (a backend polls feeds of few distinct counts).
 */
#define FEED_PLAN_SLOTS 8
#define FEED_FORM_TYPES 1		/* a type filter */
#define FEED_FORM_PARTITION 2	/* a partition filter */
#define FEED_FORM_INDEX 4		/* the partition through its index */
#define FEED_FORM_STREAM 8		/* one stream's events (a parked stream's, 1.6) */
#define FEED_FORM_EXCLUDE 16	/* not the partition's parked streams (1.6) */
#define FEED_EVENT_ARGS 6		/* the most parameters of a form */

typedef struct FeedPlanSlot
{
	int			form;			/* FEED_FORM_TYPES | FEED_FORM_PARTITION, as asked */
	int			partitions;		/* N of the partition filter, or 0 */
	bool		indexed;		/* planned as FEED_FORM_INDEX */
	bool		recheck;		/* projection.events changed: look for the index again */
	SPIPlanPtr	plan;
} FeedPlanSlot;

static FeedPlanSlot feed_event_plans[FEED_PLAN_SLOTS];
static int	feed_event_plan_next;
static Oid	feed_events_relid = InvalidOid;
static bool feed_callback_registered = false;

/*
 * Relcache invalidation: projection.events (or every relation) changed,
 * maybe an index was created or dropped; the next use of each kept plan
 * looks for its partition index again.  No catalog access here.
 */
static void
feedread_relcache_callback(Datum arg, Oid relid)
{
	int			i;

	if (relid != InvalidOid && relid != feed_events_relid)
		return;
	for (i = 0; i < FEED_PLAN_SLOTS; i++)
		feed_event_plans[i].recheck = true;
}

/* the text of a form of the event query (FEED_FORM_* bits) */
static char *
feed_event_sql(int form, int partitions, int nargs)
{
	StringInfoData sql;
	/* the stream or the parked streams: after the types, before the partition */
	int			streams_arg = (form & FEED_FORM_TYPES) ? 5 : 4;

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "SELECT e.global_position, e.stream_id, e.stream_version, e.event_type, "
						   "e.data, e.metadata, e.recorded_at FROM projection.events e "
						   "WHERE e.global_position OPERATOR(pg_catalog.>) $1 "
						   "AND e.global_position OPERATOR(pg_catalog.<=) $2");
	if (form & FEED_FORM_TYPES)
		appendStringInfoString(&sql, " AND e.event_type OPERATOR(pg_catalog.=) ANY ($4)");
	if (form & FEED_FORM_STREAM)
		appendStringInfo(&sql, " AND e.stream_id OPERATOR(pg_catalog.=) $%d", streams_arg);
	if (form & FEED_FORM_EXCLUDE)
		appendStringInfo(&sql, " AND e.stream_id OPERATOR(pg_catalog.<>) ALL ($%d)", streams_arg);
	if (form & FEED_FORM_INDEX)
		appendStringInfo(&sql,
						 " AND projection.feed_partition(e.stream_id, %d) OPERATOR(pg_catalog.=) ANY ($%d)"
						 " ORDER BY projection.feed_partition(e.stream_id, %d), e.global_position",
						 partitions, nargs, partitions);
	else
	{
		if (form & FEED_FORM_PARTITION)
			appendStringInfo(&sql, " AND projection.feed_partition(e.stream_id, %d) OPERATOR(pg_catalog.=) $%d",
							 partitions, nargs);
		appendStringInfoString(&sql, " ORDER BY e.global_position");
	}
	appendStringInfoString(&sql, " LIMIT $3");
	return sql.data;
}

/*
 * The kept plan of this form and partition count, prepared if need be, or
 * again if the partition index came or went; *indexed: it is the form
 * through the index, whose last parameter is the partition as an int4[]
 * (the caller passes it so).  Connected to SPI, as the superuser, with
 * an active snapshot (the look for the index is a query).
 */
static SPIPlanPtr
feed_event_plan(int form, int partitions, int nargs, Oid *types, bool *indexed_out)
{
	FeedPlanSlot *slot = NULL;
	bool		indexed;
	Oid			ptypes[FEED_EVENT_ARGS];
	char	   *sql;
	SPIPlanPtr	plan;
	int			i;

	if (!feed_callback_registered)
	{
		CacheRegisterRelcacheCallback(feedread_relcache_callback, (Datum) 0);
		feed_callback_registered = true;
	}
	feed_events_relid = projection_oids()->events;
	/* a form without the partition filter is kept with no count (0) */
	if (!(form & FEED_FORM_PARTITION))
		partitions = 0;
	for (i = 0; i < FEED_PLAN_SLOTS; i++)
		if (feed_event_plans[i].plan != NULL && feed_event_plans[i].form == form &&
			feed_event_plans[i].partitions == partitions)
		{
			slot = &feed_event_plans[i];
			break;
		}
	if (slot != NULL && !slot->recheck)
	{
		*indexed_out = slot->indexed;
		return slot->plan;
	}

	indexed = (form & FEED_FORM_PARTITION) && projection_feed_has_partition_index(partitions);
	*indexed_out = indexed;
	if (slot != NULL)
	{
		slot->recheck = false;
		if (slot->indexed == indexed)
			return slot->plan;
		/* the index came or went: this slot gets the other form */
	}
	else
	{
		slot = &feed_event_plans[feed_event_plan_next];
		feed_event_plan_next = (feed_event_plan_next + 1) % FEED_PLAN_SLOTS;
	}

	sql = feed_event_sql(form | (indexed ? FEED_FORM_INDEX : 0), partitions, nargs);
	memcpy(ptypes, types, sizeof(Oid) * nargs);
	if (indexed)
		ptypes[nargs - 1] = INT4ARRAYOID;
	plan = SPI_prepare_cursor(sql, nargs, ptypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	pfree(sql);

	if (slot->plan != NULL)
		SPI_freeplan(slot->plan);
	slot->form = form;
	slot->partitions = partitions;
	slot->indexed = indexed;
	slot->recheck = false;
	slot->plan = plan;
	return plan;
}

void
projection_feed_read_events(ProjectionFeedRow *row, int partition, int64 position, int64 horizon,
							int max_events, Size max_bytes, const char *stream, Datum held,
							text *token, TupleDesc result_desc, ProjectionFeedBatch *batch)
{
	FeedReadReceiver receiver;
	Oid			types[FEED_EVENT_ARGS];
	Datum		values[FEED_EVENT_ARGS];
	int			nargs = 0;
	int			form = (row->types != (Datum) 0 ? FEED_FORM_TYPES : 0) |
		(stream != NULL ? FEED_FORM_STREAM :
		 ((row->partitions > 1 ? FEED_FORM_PARTITION : 0) |
		  (held != (Datum) 0 ? FEED_FORM_EXCLUDE : 0)));
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	SPIPlanPtr	plan;
	bool		indexed;

	types[nargs] = INT8OID;
	values[nargs++] = Int64GetDatum(position);
	types[nargs] = INT8OID;
	values[nargs++] = Int64GetDatum(horizon);
	types[nargs] = INT4OID;
	values[nargs++] = Int32GetDatum(max_events);
	if (row->types != (Datum) 0)
	{
		types[nargs] = TEXTARRAYOID;
		values[nargs++] = row->types;
	}
	if (form & FEED_FORM_STREAM)
	{
		types[nargs] = TEXTOID;
		values[nargs++] = CStringGetTextDatum(stream);
	}
	if (form & FEED_FORM_EXCLUDE)
	{
		types[nargs] = TEXTARRAYOID;
		values[nargs++] = held;
	}
	if (form & FEED_FORM_PARTITION)
	{
		types[nargs] = INT4OID;
		values[nargs++] = Int32GetDatum(partition);
	}

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	/* one stream's events: its index and a sort of the few (see above) */
	if (stream == NULL)
		(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	plan = feed_event_plan(form, row->partitions, nargs, types, &indexed);
	if (indexed)
	{
		Datum		p = Int32GetDatum(partition);

		types[nargs - 1] = INT4ARRAYOID;
		values[nargs - 1] = PointerGetDatum(construct_array(&p, 1, INT4OID, sizeof(int32), true,
															TYPALIGN_INT));
	}
	memset(&receiver, 0, sizeof(receiver));
	receiver.batch = batch;
	receiver.result_desc = result_desc;
	receiver.token = PointerGetDatum(token);
	receiver.partition = partition;
	receiver.max_rows = Max(max_events, 1);
	receiver.max_bytes = max_bytes;
	batch->ntuples = 0;
	batch->last = position;
	feedread_run(plan, nargs, types, values, &receiver);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}
