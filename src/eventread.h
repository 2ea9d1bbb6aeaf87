/*-------------------------------------------------------------------------
 *
 * eventread.h
 *	  Reading a batch of events, bounded by rows and by bytes.
 *
 * IDENTIFICATION
 *	  src/eventread.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_EVENTREAD_H
#define PROJECTION_EVENTREAD_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "executor/spi.h"

/* the rows of one bounded read */
typedef struct ProjectionEventRows
{
	int			ntuples;
	HeapTuple  *tuples;
	TupleDesc	tupdesc;		/* NULL if the query never started */
	Size		bytes;			/* held by the copied rows */
	bool		full;			/* a bound stopped the read: more may follow */
} ProjectionEventRows;

extern void projection_read_events(SPIPlanPtr plan, int nargs, Oid *types, Datum *values,
								   int max_rows, Size max_bytes, MemoryContext cxt,
								   ProjectionEventRows *rows);

/*
 * Reads whose rows are events themselves: the select list
 * PROJECTION_EVENT_COLUMNS (the columns of projection.events, in order, of
 * the alias "e"), so that each row read is a projection.events tuple that a
 * batch's tuplestore takes as it is, and an event datum (the composite a
 * handler gets) is built only for the events that need one.  A column
 * added to projection.events must be added here, in its place
 * (projection_event_row_datum refuses rows of another width).
 */
#define PROJECTION_EVENT_COLUMNS \
	"e.global_position, e.stream_id, e.stream_version, e.event_type, e.data, e.metadata, e.recorded_at"

extern int64 projection_event_row_position(HeapTuple row, TupleDesc desc);
extern char *projection_event_row_type(HeapTuple row, TupleDesc desc);
extern char *projection_event_row_stream(HeapTuple row, TupleDesc desc);
extern Datum projection_event_row_datum(HeapTuple row);

#endif							/* PROJECTION_EVENTREAD_H */
