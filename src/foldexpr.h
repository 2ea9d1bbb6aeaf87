/*-------------------------------------------------------------------------
 *
 * foldexpr.h
 *	  A fold with an SQL-standard body evaluated as an expression
 *	  (foldexpr.c), for snapfold.c and aggregate.c.
 *
 * IDENTIFICATION
 *	  src/foldexpr.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_FOLDEXPR_H
#define PROJECTION_FOLDEXPR_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "nodes/execnodes.h"
#include "nodes/params.h"
#include "nodes/primnodes.h"

/* one fold's body, prepared for one batch (or one call of snapshot() or aggregate()) */
typedef struct FoldExpr
{
	Oid			fold;
	char	   *fname;			/* the fold's name, for the error context */
	Expr	   *body;			/* the body's expression, as stored */
	ExprState  *exprstate;		/* prepared at the first event (NULL: not yet) */
	ExprContext *econtext;
	ParamListInfo params;		/* $1 the state, $2 the event, $3... its columns */
	bool		whole_row;		/* the body uses $2 itself, not only its columns */
	TupleDesc	events_desc;	/* projection.events */
	Datum	   *values;			/* the event's columns, deformed */
	bool	   *nulls;
	bool	   *fetched;		/* per column: its parameter is set for this event */
	bool		deformed;		/* values hold the event being folded (error context) */
	MemoryContext cxt;			/* holds all of the above */
} FoldExpr;

extern bool projection_fold_expr_begin(FoldExpr *fx, Oid fold);
extern Datum projection_fold_expr_eval(FoldExpr *fx, Datum state, bool state_null, HeapTuple row,
									   Datum event, bool *isnull);
extern void projection_fold_expr_end(FoldExpr *fx);

#endif							/* PROJECTION_FOLDEXPR_H */
