/*-------------------------------------------------------------------------
 *
 * feedread.c
 *	  Reading a feed partition's next events for poll (feedpoll.c): the
 *	  kept plans of the query, run as the bootstrap superuser.
 *
 * Locking: none beyond the query's own; no shared state.
 *
 * IDENTIFICATION
 *	  src/feedread.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "eventread.h"
#include "feed.h"
#include "feedread.h"

/*
 * Read a partition's events in (position, horizon], at most max_events
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

void
projection_feed_read_events(ProjectionFeedRow *row, int partition, int64 position, int64 horizon,
							int max_events, Size max_bytes, MemoryContext cxt,
							ProjectionEventRows *rows)
{
	Oid			types[6];
	Datum		values[6];
	int			nargs = 0;
	int			form = (row->types != (Datum) 0 ? 1 : 0) + (row->partitions > 1 ? 2 : 0);
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

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
	if (row->partitions > 1)
	{
		types[nargs] = INT4OID;
		values[nargs++] = Int32GetDatum(row->partitions);
		types[nargs] = INT4OID;
		values[nargs++] = Int32GetDatum(partition);
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
