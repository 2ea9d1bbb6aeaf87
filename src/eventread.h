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

#endif							/* PROJECTION_EVENTREAD_H */
