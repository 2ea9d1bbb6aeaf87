/*-------------------------------------------------------------------------
 *
 * spiutil.c
 *	  Helpers shared by the SQL-callable functions and the worker: argument
 *	  checks, statements on the extension's tables as the bootstrap
 *	  superuser, SPI return-code checks and kept plans.
 *
 * Nothing here takes locks or keeps state.  The caller is connected to SPI
 * where a helper runs a statement.  Only the extension's own fixed
 * statements run as the bootstrap superuser, with values as parameters;
 * user code never runs through these helpers.
 *
 * IDENTIFICATION
 *	  src/spiutil.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "spiutil.h"

/* Raise NULL_VALUE_NOT_ALLOWED if argument argno is null. */
void
projection_require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

/*
 * A text argument that must be neither null nor empty, as a palloc'd C
 * string in the current context.
 */
char *
projection_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *s;

	projection_require_arg(fcinfo, argno, argname);
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", argname)));
	return s;
}

/*
 * Run one statement on the extension's tables as the bootstrap superuser
 * (read_only: with the active snapshot).  The caller is connected to SPI;
 * results are left in SPI_tuptable.  Only our own fixed statements go
 * through here, with values as parameters.
 */
void
projection_extension_exec(const char *sql, int nargs, Oid *types, Datum *values,
						  const char *nulls, bool read_only, int expected)
{
	projection_extension_run(NULL, sql, nargs, types, values, nulls, read_only, expected);
}

/*
 * The same, with the statement's plan from plan_for (called as the bootstrap
 * superuser too, so that it may prepare the plan, as feed.c's plan cache
 * does), or prepared for this one execution when plan_for is NULL.
 */
void
projection_extension_run(ProjectionPlanFor plan_for, const char *sql, int nargs, Oid *types,
						 Datum *values, const char *nulls, bool read_only, int expected)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (plan_for != NULL)
		rc = SPI_execute_plan(plan_for(sql, nargs, types), values, nulls, read_only, 0);
	else
		rc = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	projection_spi_check(rc, expected, sql);
}

/* the same, read-write (a new snapshot for each statement) */
void
projection_registry_exec(const char *sql, int nargs, Oid *types, Datum *values,
						 const char *nulls, int expected)
{
	projection_extension_exec(sql, nargs, types, values, nulls, false, expected);
}

/*
 * The first column of every row of SPI_tuptable, as a List of C strings
 * allocated in "cxt" (NIL if there is none): the names a query selected,
 * copied before SPI_finish frees them.
 */
List *
projection_spi_names(MemoryContext cxt)
{
	List	   *names = NIL;
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		names = lappend(names, pstrdup(name));
		MemoryContextSwitchTo(oldcxt);
	}
	return names;
}

/*
 * Check an SPI return code against the one expected; anything else is a
 * can't-happen error.
 */
void
projection_spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/*
 * A kept plan, prepared on first use and again once it is no longer valid;
 * *cache holds it between calls.  Call connected to SPI.
 */
SPIPlanPtr
projection_kept_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types)
{
	if (*cache != NULL && !SPI_plan_is_valid(*cache))
	{
		SPI_freeplan(*cache);
		*cache = NULL;
	}
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*cache = plan;
	}
	return *cache;
}
