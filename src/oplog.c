/*-------------------------------------------------------------------------
 *
 * oplog.c
 *	  LOG lines for the operator (a projection paused, resumed, rebuilt, an
 *	  event skipped, dead letters retried), written if, and when, the
 *	  management call's transaction commits.
 *
 * Each line is kept in TopTransactionContext with the subtransaction that
 * wrote it; xact.c calls projection_oplog_at_subxact_abort when a
 * subtransaction aborts (its lines and those of every subtransaction inside
 * it are dropped) and projection_oplog_at_eoxact at the end of the
 * transaction (COMMIT writes the lines, after the commit record; abort and
 * PREPARE drop them).  Backend-local state only: no locks.
 *
 * IDENTIFICATION
 *	  src/oplog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "oplog.h"

/* LOG lines for the end of this transaction (OpLogLine), in TopTransactionContext */
static List *oplog_lines = NIL;

/* a LOG line kept until the end of its transaction (TopTransactionContext) */
typedef struct OpLogLine
{
	SubTransactionId subid;		/* the subtransaction that wrote it */
	char	   *message;
	char	   *detail;			/* NULL: none */
} OpLogLine;

/*
 * Log a line for the operator (a projection paused, resumed, rebuilt, an
 * event skipped) if, and when, the transaction commits: the line is kept
 * with the subtransaction that asked for it, dropped if that subtransaction
 * or the transaction aborts, and written at commit
 * (projection_oplog_at_eoxact).  "detail" may be NULL.  The strings are
 * copied; raises only when out of memory.
 */
void
projection_log_detail_at_commit(const char *message, const char *detail)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	OpLogLine *line = palloc(sizeof(OpLogLine));

	line->subid = GetCurrentSubTransactionId();
	line->message = pstrdup(message);
	line->detail = detail != NULL ? pstrdup(detail) : NULL;
	oplog_lines = lappend(oplog_lines, line);
	MemoryContextSwitchTo(oldcxt);
}

/* The same without a detail. */
void
projection_log_at_commit(const char *message)
{
	projection_log_detail_at_commit(message, NULL);
}

/*
 * Transaction end (xact.c): at COMMIT, after the commit record is written,
 * write the kept lines; at abort or PREPARE, forget them (their memory goes
 * with TopTransactionContext).  A LOG report does not raise.
 */
void
projection_oplog_at_eoxact(bool commit)
{
	List	   *logs = oplog_lines;
	ListCell   *lc;

	oplog_lines = NIL;
	if (!commit)
		return;
	foreach(lc, logs)
	{
		OpLogLine *line = (OpLogLine *) lfirst(lc);

		ereport(LOG,
				(errmsg_internal("%s", line->message),
				 line->detail != NULL ? errdetail_internal("%s", line->detail) : 0));
	}
}

/*
 * Subtransaction abort (xact.c): forget the lines of the subtransaction
 * and of every subtransaction inside it.  Subtransaction ids grow, and
 * while "subid" runs every newer one is inside it, so those are the lines
 * with an id of "subid" or more.  No allocation, no errors (the cells stay
 * in TopTransactionContext until the transaction ends).
 */
void
projection_oplog_at_subxact_abort(SubTransactionId subid)
{
	ListCell   *lc;

	foreach(lc, oplog_lines)
	{
		OpLogLine *line = (OpLogLine *) lfirst(lc);

		if (line->subid >= subid)
			oplog_lines = foreach_delete_current(oplog_lines, lc);
	}
}
