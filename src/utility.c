/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  ProcessUtility_hook: stop our worker before commands that need a
 *	  database to themselves.
 *
 * DROP DATABASE (without FORCE), ALTER DATABASE ... RENAME / SET TABLESPACE
 * and CREATE DATABASE ... TEMPLATE fail after five seconds while another
 * process is connected to the database, and our worker is one.  Before such
 * a command runs we mark the database "stopped" in the pool's demand table
 * (the launcher starts no worker there), ask its workers to leave (SIGTERM
 * after a moment) and wait, interruptibly and at most
 * WORKER_STOP_TIMEOUT_MS, until none is left.  After the command,
 * whether it succeeded or failed, the stop is lifted and the launcher is
 * woken: it forgets a dropped database and restarts the worker of any other.
 *
 * DROP EXTENSION projection must not wait behind a worker's batch either
 * (a handler may run for minutes): before the command runs, the backend
 * holds the database (workers start no round) and cancels every batch of
 * the database's workers (cancel.c), waiting until each has
 * rolled back; then the command takes its locks without waiting for them.
 * The hold ends with the transaction (an end-of-transaction callback): a
 * worker that started a round while the drop was not yet committed would
 * wait for its locks and then find its relations gone.  After the commit
 * the woken worker finds no extension and leaves; after an abort it goes on.
 *
 * Nothing is stopped unless PostgreSQL's own checks for the command would
 * pass for the current role (utility_may_disturb): a command that is bound
 * to fail with "must be owner of database" or in a transaction block must
 * not terminate another database's workers on its way.  Several such
 * commands may run on one database at once: each holds the stop (a count),
 * and the last one to finish lifts it.
 *
 * The hook also tells depend.c about DROP and role commands (dependencies
 * of projections).  Before each statement it asks tableguard.c whether the
 * statement would change the columns, constraints, name or schema of one
 * of our relations, and after it whether projection.events still has its
 * columns.  It is installed in every backend that loads the library,
 * whether or not the current database has the extension; the database
 * commands need shared memory, so only when preloaded.
 *
 * IDENTIFICATION
 *	  src/utility.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/defrem.h"
#include "commands/tablespace.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cancel.h"
#include "depend.h"
#include "pool.h"
#include "projection.h"
#include "shmem.h"
#include "tableguard.h"
#include "utility.h"

#define WORKER_STOP_TIMEOUT_MS 10000
#define WORKER_STOP_HOLD_MS 60000
#define WORKER_STOP_POLITE_MS 1000

static ProcessUtility_hook_type prev_process_utility = NULL;

/* this transaction holds its database's workers (DROP EXTENSION) */
static bool holding_database = false;

/*
 * End of the transaction that ran DROP EXTENSION (commit, abort or
 * prepare, from xact.c): let the workers go on.
 */
void
projection_utility_at_eoxact(void)
{
	if (!holding_database)
		return;
	holding_database = false;
	projection_release_database_hold();
	projection_wake_database_worker(MyDatabaseId);
}

/*
 * Does the statement enable the triggers of one of our tables again
 * (ALTER TABLE projection.x ENABLE TRIGGER ..., as pg_restore
 * --disable-triggers does after loading the data)?  Rows loaded meanwhile
 * asked for no worker (poolcommit.c): the commit of this statement does.
 */
static bool
utility_enables_our_triggers(Node *parsetree)
{
	AlterTableStmt *stmt;
	ListCell   *lc;

	if (!IsA(parsetree, AlterTableStmt))
		return false;
	stmt = (AlterTableStmt *) parsetree;
	if (stmt->relation == NULL || stmt->relation->schemaname == NULL ||
		strcmp(stmt->relation->schemaname, PROJECTION_SCHEMA_NAME) != 0)
		return false;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = (AlterTableCmd *) lfirst(lc);

		if (cmd->subtype == AT_EnableTrig || cmd->subtype == AT_EnableTrigAll ||
			cmd->subtype == AT_EnableTrigUser || cmd->subtype == AT_EnableAlwaysTrig)
			return true;
	}
	return false;
}

/*
 * The database a utility statement needs to itself, or NULL.
 */
static const char *
utility_target_database(Node *parsetree)
{
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) parsetree)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) parsetree)->subname;
			break;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) parsetree)->dbname;
			}
			break;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *def = lfirst_node(DefElem, lc);

				if (strcmp(def->defname, "template") == 0 && def->arg != NULL)
					return defGetString(def);
			}
			break;
		default:
			break;
	}
	return NULL;
}

/* PreventInTransactionBlock() would let the command run */
static bool
utility_outside_transaction_block(ProcessUtilityContext context)
{
	return context == PROCESS_UTILITY_TOPLEVEL && !IsTransactionBlock() &&
		!IsSubTransaction();
}

/*
 * Would PostgreSQL get as far as looking for other sessions of database
 * "dboid" when the current role runs this command?  The same checks, in the
 * same terms, as dbcommands.c makes before that point (PostgreSQL 15):
 *
 * - DROP DATABASE: not in a transaction block; owner (or superuser).
 * - ALTER DATABASE ... RENAME: CREATEDB and owner.
 * - ALTER DATABASE ... SET TABLESPACE: not in a transaction block; owner;
 *   CREATE on the new tablespace.
 * - CREATE DATABASE ... TEMPLATE: not in a transaction block; CREATEDB, and
 *   the template is marked datistemplate or owned by the role.
 *
 * Anything else PostgreSQL checks later (a missing tablespace, a name
 * already taken) only concerns roles that could stop the workers anyway.
 */
static bool
utility_may_disturb(Node *parsetree, Oid dboid, ProcessUtilityContext context)
{
	Oid			userid = GetUserId();

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			return utility_outside_transaction_block(context) &&
				pg_database_ownercheck(dboid, userid);
		case T_RenameStmt:
			return have_createdb_privilege() && pg_database_ownercheck(dboid, userid);
		case T_AlterDatabaseStmt:
			{
				ListCell   *lc;
				Oid			tblspc = InvalidOid;

				if (!utility_outside_transaction_block(context) ||
					!pg_database_ownercheck(dboid, userid))
					return false;
				foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
				{
					DefElem    *def = lfirst_node(DefElem, lc);

					if (strcmp(def->defname, "tablespace") == 0)
						tblspc = get_tablespace_oid(defGetString(def), true);
				}
				return OidIsValid(tblspc) &&
					pg_tablespace_aclcheck(tblspc, userid, ACL_CREATE) == ACLCHECK_OK;
			}
		case T_CreatedbStmt:
			{
				HeapTuple	tup;
				bool		istemplate = false;

				if (!utility_outside_transaction_block(context) || !have_createdb_privilege())
					return false;
				tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
				if (HeapTupleIsValid(tup))
				{
					istemplate = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
					ReleaseSysCache(tup);
				}
				return istemplate || pg_database_ownercheck(dboid, userid);
			}
		default:
			return false;
	}
}

/*
 * Stop the workers of a database and keep them stopped (pool.c): they are
 * asked to leave, which they do quietly after their batch; one still there
 * after WORKER_STOP_POLITE_MS gets SIGTERM.  Returns the database's OID, or
 * InvalidOid if none of its workers ran (nothing to wait for; the stop
 * still keeps the launcher from starting one).  Waits at most
 * WORKER_STOP_TIMEOUT_MS; the command then runs anyway and reports its own
 * error if the database is still in use.
 */
static Oid
utility_stop_worker(Oid dboid)
{
	TimestampTz start;
	TimestampTz deadline;
	TimestampTz polite;

	if (!OidIsValid(dboid) || dboid == MyDatabaseId)
		return InvalidOid;

	start = GetCurrentTimestamp();
	(void) projection_pool_stop_database(dboid, true, false,
										 TimestampTzPlusMilliseconds(start, WORKER_STOP_HOLD_MS));
	deadline = TimestampTzPlusMilliseconds(start, WORKER_STOP_TIMEOUT_MS);
	polite = TimestampTzPlusMilliseconds(start, WORKER_STOP_POLITE_MS);
	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (!projection_pool_stop_database(dboid, false, now >= polite, 0) || now >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, projection_wait_event(PROJECTION_WAIT_WORKER_STOP));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return dboid;
}

/* Lift the stop; the launcher decides what to do with the database. */
static void
utility_release_worker(Oid dboid)
{
	projection_pool_release_database(dboid);
}

/* Does DROP EXTENSION name ours (not just any extension)? */
static bool
utility_drops_our_extension(DropStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->objects)
		if (strcmp(strVal(lfirst(lc)), PROJECTION_EXTENSION_NAME) == 0)
			return true;
	return false;
}

/*
 * The extension is installed here and the current role owns it (or is a
 * superuser): only then may DROP EXTENSION disturb the workers, since
 * PostgreSQL would refuse anyone else's after our hook had run.
 */
static bool
utility_may_drop_our_extension(void)
{
	Oid			extoid = get_extension_oid(PROJECTION_EXTENSION_NAME, true);

	return OidIsValid(extoid) && pg_extension_ownercheck(extoid, GetUserId());
}

/* Is this DROP EXTENSION of ours, installed here, by a role that may drop it? */
static bool
utility_drops_our_installed_extension(Node *parsetree)
{
	return IsA(parsetree, DropStmt) &&
		((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION &&
		utility_drops_our_extension((DropStmt *) parsetree) &&
		utility_may_drop_our_extension();
}

/*
 * ALTER EXTENSION projection UPDATE, by a role that may run it: its script
 * may lock the registry and its rows, so it must not wait behind a batch
 * either (the workers go on with the new version once it commits).
 */
static bool
utility_updates_our_installed_extension(Node *parsetree)
{
	return IsA(parsetree, AlterExtensionStmt) &&
		strcmp(((AlterExtensionStmt *) parsetree)->extname, PROJECTION_EXTENSION_NAME) == 0 &&
		utility_may_drop_our_extension();
}

/*
 * Cancel the batches of this database's workers and wait (interruptibly,
 * WORKER_STOP_TIMEOUT_MS at most) until none is in a batch; the caller holds
 * the database, so no new batch starts.
 */
static void
utility_cancel_batches(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   WORKER_STOP_TIMEOUT_MS);

	while (projection_cancel_database_batches(MyDatabaseId) > 0 &&
		   GetCurrentTimestamp() < deadline)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 5, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
projection_process_utility(PlannedStmt *pstmt, const char *queryString,
						   bool readOnlyTree, ProcessUtilityContext context,
						   ParamListInfo params, QueryEnvironment *queryEnv,
						   DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = NULL;
	volatile Oid stopped = InvalidOid;
	ProjectionDependState depend_saved;

	/* the shape of our relations is ours (1.8) */
	projection_tableguard_check(pstmt->utilityStmt);

	if (ProjectionShared != NULL)
		dbname = utility_target_database(pstmt->utilityStmt);
	if (dbname != NULL)
	{
		Oid			dboid = get_database_oid(dbname, true);

		if (OidIsValid(dboid) && utility_may_disturb(pstmt->utilityStmt, dboid, context))
			stopped = utility_stop_worker(dboid);
	}

	/*
	 * DROP EXTENSION projection: this database's workers are woken at the
	 * end of the transaction (utility_xact_callback), so they leave; no new
	 * worker is asked for.
	 */
	if (ProjectionShared != NULL && utility_enables_our_triggers(pstmt->utilityStmt))
		projection_request_launcher_at_commit();

	PG_TRY();
	{
		/* sets depend_saved before anything that can fail */
		projection_depend_before_utility(pstmt->utilityStmt, &depend_saved);
		/* DROP EXTENSION / ALTER EXTENSION UPDATE never wait behind a worker's batch */
		if (ProjectionShared != NULL &&
			(utility_drops_our_installed_extension(pstmt->utilityStmt) ||
			 utility_updates_our_installed_extension(pstmt->utilityStmt)))
		{
			projection_hold(MyDatabaseId, 0);
			holding_database = true;
			utility_cancel_batches();
		}
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
		projection_tableguard_verify(pstmt->utilityStmt);
	}
	PG_FINALLY();
	{
		projection_depend_after_utility(&depend_saved);
		if (OidIsValid(stopped))
			utility_release_worker(stopped);
	}
	PG_END_TRY();
}

void
projection_utility_install_hook(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = projection_process_utility;
}
