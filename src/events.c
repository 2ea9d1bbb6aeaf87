/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The event store: projection.append().
 *
 * append() inserts through one kept plan; the position trigger gives the
 * row its position and stream version (trigger.c), and append() returns the
 * position its own row got (ProjectionAppendCapture), not the last one this
 * backend drew.
 *
 * IDENTIFICATION
 *	  src/events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/plannodes.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/pquery.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog.h"
#include "eventread.h"
#include "events.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(projection_append);

/* ---------------------------------------------------------------------
 * projection.append
 * ---------------------------------------------------------------------
 */

static SPIPlanPtr append_plan = NULL;

/*
 * append(stream_id, event_type, data, metadata DEFAULT '{}',
 *		  expected_version DEFAULT NULL) RETURNS bigint
 *
 * Appends one event at the stream's next version, under the stream's lock,
 * and returns its global_position.  The insert runs as the caller (who needs
 * INSERT on projection.events) and fires the same triggers as any INSERT.
 */
Datum
projection_append(PG_FUNCTION_ARGS)
{
	text	   *stream_id;
	text	   *event_type;
	Datum		data;
	Datum		metadata;
	int64		current;
	Datum		values[5];
	Oid			types[5] = {TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID};
	int			rc;
	int64		position;
	ProjectionAppendCapture capture;
	const ProjectionOids *o;

	projection_require_arg(fcinfo, 0, "stream_id");
	projection_require_arg(fcinfo, 1, "event_type");
	projection_require_arg(fcinfo, 2, "data");
	stream_id = PG_GETARG_TEXT_PP(0);
	event_type = PG_GETARG_TEXT_PP(1);
	data = PG_GETARG_DATUM(2);
	if (VARSIZE_ANY_EXHDR(stream_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "stream_id")));
	if (VARSIZE_ANY_EXHDR(event_type) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be empty", "event_type")));
	metadata = PG_ARGISNULL(3) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))
		: PG_GETARG_DATUM(3);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_version must be 0 or greater"),
				 errhint("Use 0 for \"the stream must not exist yet\", or NULL for no check.")));

	o = projection_oids();
	/* refuse before taking any lock */
	if (pg_class_aclcheck(o->events, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "events");

	current = projection_stream_version(stream_id);
	if (!PG_ARGISNULL(4) && PG_GETARG_INT64(4) != current)
		ereport(ERROR,
				(errcode(ERRCODE_PROJECTION_VERSION_CONFLICT),
				 errmsg("version conflict on stream \"%s\": expected version %lld, current version %lld",
						text_to_cstring(stream_id), (long long) PG_GETARG_INT64(4),
						(long long) current),
				 errhint("Reload the stream and retry the command.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (append_plan == NULL || !SPI_plan_is_valid(append_plan))
	{
		SPIPlanPtr	plan;

		if (append_plan != NULL)
		{
			SPI_freeplan(append_plan);
			append_plan = NULL;
		}
		plan = SPI_prepare("INSERT INTO projection.events "
						   "(stream_id, stream_version, event_type, data, metadata) "
						   "VALUES ($1, $2, $3, $4, $5)", 5, types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		append_plan = plan;
	}
	values[0] = PointerGetDatum(stream_id);
	values[1] = Int64GetDatum(current + 1);
	values[2] = PointerGetDatum(event_type);
	values[3] = data;
	values[4] = metadata;

	/*
	 * Return the position the trigger gave our row, not that of the last
	 * event this backend inserted: inline handlers may append more events in
	 * this statement's AFTER trigger, or append and roll back.  (Not
	 * INSERT ... RETURNING: that would need SELECT on projection.events,
	 * which an appender need not have.)
	 */
	projection_append_capture_begin(&capture);
	PG_TRY();
	{
		rc = SPI_execute_plan(append_plan, values, NULL, false, 0);
	}
	PG_CATCH();
	{
		(void) projection_append_capture_end(&capture);
		PG_RE_THROW();
	}
	PG_END_TRY();
	position = projection_append_capture_end(&capture);
	projection_spi_check(rc, SPI_OK_INSERT, "appending an event");
	if (position <= 0)
		elog(ERROR, "appended event got no global_position");
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	PG_RETURN_INT64(position);
}

/*
 * Privileges on projection.events the calling role needs: "what" is
 * ACL_SELECT (reading events: creating any projection, aggregate) or
 * ACL_TRIGGER (an inline projection's code runs in every appender's
 * transaction, as a trigger's does).  Raises INSUFFICIENT_PRIVILEGE with
 * the GRANT to run.
 */
void
projection_check_events_privilege(AclMode what, const char *action)
{
	const char *priv = what == ACL_SELECT ? "SELECT" : "TRIGGER";

	if (pg_class_aclcheck(projection_oids()->events, GetUserId(), what) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table events"),
				 errdetail("%s needs the %s privilege on projection.events.", action, priv),
				 errhint("Grant it with GRANT %s ON projection.events TO %s.", priv,
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}
