/*-------------------------------------------------------------------------
 *
 * foldexpr.c
 *	  A fold written in LANGUAGE sql with an SQL-standard body (RETURN
 *	  expr, or BEGIN ATOMIC SELECT expr; END) evaluated as an expression
 *	  tree, with no function call per event (1.7).
 *
 * Through fmgr, an SQL function runs an executor per call (fmgr_sql):
 * about twice the cost of evaluating the same expression.  PostgreSQL's
 * own inliner (inline_function) does not help: it refuses an IMMUTABLE
 * function whose body calls STABLE functions (to_jsonb and
 * jsonb_build_object are), and aggregate() wants the fold IMMUTABLE.  So
 * for a fold whose stored body (pg_proc.prosqlbody) is one plain SELECT of
 * one expression with nothing else (no FROM, no WHERE, no sublink,
 * aggregate, window function, set-returning function, CTE, grouping,
 * ordering or limit), the expression is planned once per batch
 * (expression_planner) and evaluated per event with the state and the
 * event as the parameters $1 and $2 the body already refers to (each
 * column of the event it reads, e.data, as a parameter of its own, set
 * from the row deformed once per event).  Anything
 * else, and any fold whose call fmgr wraps (SECURITY DEFINER, SET clauses,
 * a loaded fmgr hook such as sepgsql's) or whose executor takes a new
 * snapshot per call (VOLATILE), is called through fmgr as before.
 *
 * The semantics are those of the call: the expression is prepared at the
 * first event, as the user the fold runs as (the privileges of the
 * functions it calls are checked then, as the executor of fmgr_sql would),
 * under the same search_path; strictness is the caller's (snapfold.c,
 * aggregate.c skip a strict fold's call on a null state); each batch
 * prepares the body afresh, so a redefined fold is never evaluated with
 * its old body.  An error raised inside gets a context line naming the
 * fold and the event.
 *
 * Locking: none (the syscache's).
 *
 * IDENTIFICATION
 *	  src/foldexpr.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "catalog.h"
#include "foldexpr.h"
#include "projection.h"

/* Are the body's parameters only $1 (jsonb) and $2 (projection.events)? */
static bool
fold_expr_params_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
	{
		Param	   *p = (Param *) node;

		if (p->paramkind != PARAM_EXTERN)
			return true;
		if (p->paramid == 1)
			return p->paramtype != JSONBOID;
		if (p->paramid == 2)
			return p->paramtype != projection_oids()->events_type;
		return true;
	}
	return expression_tree_walker(node, fold_expr_params_walker, context);
}

/*
 * The body of fold "proc" as an expression to evaluate (*body, in the
 * current context), or the reason (a constant string) why it is called
 * through fmgr instead.
 */
static const char *
fold_expr_refusal(Oid fold, HeapTuple proctup, Expr **body)
{
	Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(proctup);
	Datum		d;
	bool		isnull;
	Node	   *n;
	Query	   *q;
	TargetEntry *tle;

	if (proc->prosecdef)
		return "it is SECURITY DEFINER";
	if (!heap_attisnull(proctup, Anum_pg_proc_proconfig, NULL))
		return "it has SET clauses";
	if (proc->provolatile == PROVOLATILE_VOLATILE)
		return "it is VOLATILE (each call takes a new snapshot)";
	if (proc->proretset || proc->prorettype != JSONBOID || proc->pronargs != 2)
		return "it is not a fold function";
	if (FmgrHookIsNeeded(fold))
		return "a function hook is loaded";
	d = SysCacheGetAttr(PROCOID, proctup, Anum_pg_proc_prosqlbody, &isnull);
	if (isnull)
		return "its body is a string, not SQL-standard (RETURN or BEGIN ATOMIC)";
	n = stringToNode(TextDatumGetCString(d));
	if (IsA(n, List))
	{
		/* BEGIN ATOMIC: a list of one list, that of its statements */
		List	   *outer = (List *) n;

		if (list_length(outer) != 1 || !IsA(linitial(outer), List) ||
			list_length((List *) linitial(outer)) != 1)
			return "its body is not one statement";
		n = linitial((List *) linitial(outer));
	}
	if (!IsA(n, Query))
		return "its body is not one statement";
	q = (Query *) n;
	if (q->commandType != CMD_SELECT || q->utilityStmt != NULL ||
		q->hasAggs || q->hasWindowFuncs || q->hasTargetSRFs || q->hasSubLinks ||
		q->hasRecursive || q->hasModifyingCTE || q->hasForUpdate || q->cteList ||
		q->rtable || q->jointree == NULL || q->jointree->fromlist || q->jointree->quals ||
		q->groupClause || q->groupingSets || q->havingQual || q->windowClause ||
		q->distinctClause || q->sortClause || q->limitOffset || q->limitCount ||
		q->rowMarks || q->setOperations || list_length(q->targetList) != 1)
		return "its body is not a SELECT of one expression alone";
	tle = linitial_node(TargetEntry, q->targetList);
	if (tle->resjunk || exprType((Node *) tle->expr) != JSONBOID)
		return "its body's expression is not of type jsonb";
	if (fold_expr_params_walker((Node *) tle->expr, NULL))
		return "its body refers to parameters other than its arguments";
	*body = tle->expr;
	return NULL;
}

/*
 * Decide how fold "fold" is called: returns true if it is evaluated as an
 * expression (fx is then set up, in a context of its own under the current
 * one, until projection_fold_expr_end), false if it is called through fmgr
 * (fx is left empty).  A DEBUG2 line says which, for LANGUAGE sql folds.
 * Reads the syscache only: nothing is checked or planned as the user yet.
 */
bool
projection_fold_expr_begin(FoldExpr *fx, Oid fold)
{
	HeapTuple	tup;
	const char *refusal;
	MemoryContext oldcxt;
	Expr	   *body = NULL;

	memset(fx, 0, sizeof(*fx));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fold));
	if (!HeapTupleIsValid(tup))
		return false;
	if (((Form_pg_proc) GETSTRUCT(tup))->prolang != SQLlanguageId)
	{
		ReleaseSysCache(tup);
		return false;
	}
	fx->cxt = AllocSetContextCreate(CurrentMemoryContext, "projection fold expression",
									ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(fx->cxt);
	refusal = fold_expr_refusal(fold, tup, &body);
	ReleaseSysCache(tup);
	fx->fname = format_procedure(fold);
	MemoryContextSwitchTo(oldcxt);
	if (refusal != NULL)
	{
		elog(DEBUG2, "fold %s is called as a function: %s", fx->fname, refusal);
		MemoryContextDelete(fx->cxt);
		memset(fx, 0, sizeof(*fx));
		return false;
	}
	elog(DEBUG2, "fold %s is evaluated as an expression", fx->fname);
	oldcxt = MemoryContextSwitchTo(fx->cxt);
	fx->fold = fold;
	fx->body = body;
	fx->events_desc = lookup_rowtype_tupdesc_copy(projection_oids()->events_type, -1);
	fx->values = palloc(sizeof(Datum) * fx->events_desc->natts);
	fx->nulls = palloc(sizeof(bool) * fx->events_desc->natts);
	fx->fetched = palloc0(sizeof(bool) * fx->events_desc->natts);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/*
 * Replace each column of the event the body reads (a FieldSelect of $2)
 * by a parameter of its own, $3 for the first column and so on, which
 * projection_fold_expr_eval sets from the row deformed once: no composite
 * datum is made of each event, and no column is looked for in it at every
 * reference.  A use of $2 itself is left (fx->whole_row: the datum is then
 * made too).
 */
static Node *
fold_expr_fields_mutator(Node *node, FoldExpr *fx)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, FieldSelect))
	{
		FieldSelect *fs = (FieldSelect *) node;
		Param	   *arg = (Param *) fs->arg;

		if (arg != NULL && IsA(arg, Param) && arg->paramkind == PARAM_EXTERN && arg->paramid == 2 &&
			fs->fieldnum > 0 && fs->fieldnum <= fx->events_desc->natts)
		{
			Form_pg_attribute att = TupleDescAttr(fx->events_desc, fs->fieldnum - 1);

			if (!att->attisdropped && att->atttypid == fs->resulttype)
			{
				Param	   *p = makeNode(Param);

				p->paramkind = PARAM_EXTERN;
				p->paramid = 2 + fs->fieldnum;
				p->paramtype = fs->resulttype;
				p->paramtypmod = fs->resulttypmod;
				p->paramcollid = fs->resultcollid;
				p->location = -1;
				return (Node *) p;
			}
		}
	}
	if (IsA(node, Param) && ((Param *) node)->paramkind == PARAM_EXTERN &&
		((Param *) node)->paramid == 2)
		fx->whole_row = true;
	return expression_tree_mutator(node, fold_expr_fields_mutator, (void *) fx);
}

/*
 * The parameter hook (ParamListInfo.paramFetch): a column of the event is
 * set at its first reference of each evaluation, and a value stored in a
 * short header, compressed or out of line (TOAST) is made a plain one then,
 * once: each function reading it would do that again at every reference, a
 * fetch and a decompression of a large event's data each time.  A column
 * the evaluation does not reach (another branch of a CASE) costs nothing.
 */
static ParamExternData *
fold_expr_param_fetch(ParamListInfo params, int paramid, bool speculative,
					  ParamExternData *workspace)
{
	FoldExpr   *fx = (FoldExpr *) params->paramFetchArg;
	ParamExternData *prm = &params->params[paramid - 1];
	int			i = paramid - 3;

	if (i >= 0 && i < fx->events_desc->natts && !fx->fetched[i])
	{
		/* a speculative fetch must not fail: it gets nothing (never asked today) */
		if (speculative)
			return NULL;
		fx->fetched[i] = true;
		prm->isnull = fx->nulls[i];
		prm->value = fx->values[i];
		if (!prm->isnull && TupleDescAttr(fx->events_desc, i)->attlen == -1 &&
			VARATT_IS_EXTENDED(DatumGetPointer(prm->value)))
			prm->value = PointerGetDatum(PG_DETOAST_DATUM(prm->value));
	}
	return prm;
}

/*
 * Plan the body and prepare it for evaluation, as the current user with
 * the current search_path (those the fold runs with): the planner may
 * inline SQL functions the body calls, and ExecInitExpr checks the right to
 * execute each function, as fmgr_sql's executor would at its first call.
 */
static void
fold_expr_prepare(FoldExpr *fx)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(fx->cxt);
	Expr	   *planned = expression_planner(fx->body);
	int			natts = fx->events_desc->natts;
	int			i;

	planned = (Expr *) fold_expr_fields_mutator((Node *) planned, fx);
	fx->params = makeParamList(2 + natts);
	fx->params->params[0].ptype = JSONBOID;
	fx->params->params[1].ptype = projection_oids()->events_type;
	for (i = 0; i < natts; i++)
		fx->params->params[2 + i].ptype = TupleDescAttr(fx->events_desc, i)->atttypid;
	for (i = 0; i < 2 + natts; i++)
	{
		fx->params->params[i].value = (Datum) 0;
		fx->params->params[i].isnull = true;
		fx->params->params[i].pflags = PARAM_FLAG_CONST;
	}
	fx->params->paramFetch = fold_expr_param_fetch;
	fx->params->paramFetchArg = (void *) fx;
	fx->econtext = CreateStandaloneExprContext();
	fx->econtext->ecxt_param_list_info = fx->params;
	fx->exprstate = ExecInitExpr(planned, NULL);
	MemoryContextSwitchTo(oldcxt);
}

/* error context of an evaluation: which fold, which event */
static void
fold_expr_error_callback(void *arg)
{
	FoldExpr   *fx = (FoldExpr *) arg;

	if (fx->deformed && !fx->nulls[Anum_events_global_position - 1] &&
		!fx->nulls[Anum_events_stream_id - 1])
		errcontext("fold %s, event at position %lld of stream \"%s\"", fx->fname,
				   (long long) DatumGetInt64(fx->values[Anum_events_global_position - 1]),
				   TextDatumGetCString(fx->values[Anum_events_stream_id - 1]));
	else
		errcontext("fold %s", fx->fname);
}

/*
 * Evaluate the fold on (state, state_null) and an event of
 * projection.events, given as a row ("row", of projection.events' row
 * type) or as a composite datum ("event", when row is NULL), in the
 * current memory context, which holds the result: it may be the state
 * itself or point into the event (RETURN s, RETURN e.data), so a caller
 * keeping it copies it.  The row or datum must stay valid during the call.
 * The event's columns the body reads are its parameters, each set at its
 * first reference (fold_expr_param_fetch: a short, compressed or TOASTed
 * value made plain once, 1.8, rather than by each function reading it).
 * Where the body uses the event whole, it gets a flat composite datum (not an expanded record: it
 * may pass it to a function that would take a read/write one over).  The
 * caller has checked strictness.  Errors propagate, with the fold's
 * context.
 */
Datum
projection_fold_expr_eval(FoldExpr *fx, Datum state, bool state_null, HeapTuple row,
						  Datum event, bool *isnull)
{
	ErrorContextCallback errcallback;
	HeapTupleData tmp;
	Datum		result;
	int			natts = fx->events_desc->natts;

	if (row == NULL)
	{
		HeapTupleHeader th = DatumGetHeapTupleHeader(event);

		tmp.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tmp.t_self);
		tmp.t_tableOid = InvalidOid;
		tmp.t_data = th;
		row = &tmp;
		event = PointerGetDatum(th);
	}
	heap_deform_tuple(row, fx->events_desc, fx->values, fx->nulls);
	fx->deformed = true;
	errcallback.callback = fold_expr_error_callback;
	errcallback.arg = fx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	if (fx->exprstate == NULL)
		fold_expr_prepare(fx);
	fx->params->params[0].value = state;
	fx->params->params[0].isnull = state_null;
	if (fx->whole_row)
	{
		if (event == (Datum) 0)
			event = heap_copy_tuple_as_datum(row, fx->events_desc);
		fx->params->params[1].value = event;
	}
	/* the columns: at their first reference (fold_expr_param_fetch) */
	memset(fx->fetched, 0, sizeof(bool) * natts);
	ResetExprContext(fx->econtext);
	result = ExecEvalExpr(fx->exprstate, fx->econtext, isnull);
	error_context_stack = errcallback.previous;
	fx->deformed = false;
	return result;
}

/* Free what projection_fold_expr_begin set up (nothing if it returned false). */
void
projection_fold_expr_end(FoldExpr *fx)
{
	if (fx->cxt == NULL)
		return;
	if (fx->econtext != NULL)
		FreeExprContext(fx->econtext, true);
	MemoryContextDelete(fx->cxt);
	memset(fx, 0, sizeof(*fx));
}
