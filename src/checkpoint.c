/*-------------------------------------------------------------------------
 *
 * checkpoint.c
 *	  Checkpoints of projections: the only file that knows the two versions
 *	  of the schema.  In 1.0 a projection's checkpoint is the position in
 *	  its registry row; from 1.1 the worker writes it to
 *	  projection.checkpoints, and the checkpoint is the further of the two.
 *
 * Checkpoints are written in the transaction that applied the events up to
 * them (exactly once); the registry row lock of that transaction (FOR
 * UPDATE) serializes writers.
 *
 * IDENTIFICATION
 *	  src/checkpoint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "catalog.h"
#include "checkpoint.h"
#include "eventread.h"
#include "projection.h"
#include "shmem.h"
#include "spiutil.h"

/* the checkpoint of registry row "p" in this database's version of the schema */
const char *
projection_checkpoint_sql(void)
{
	return OidIsValid(projection_oids()->checkpoints) ?
		PROJECTION_CHECKPOINT_SQL("p") : PROJECTION_CHECKPOINT_SQL_1_0("p");
}

/* Delete the worker's checkpoints of a projection (version 1.1). */
void
projection_forget_checkpoints(int32 id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (!OidIsValid(projection_oids()->checkpoints))
		return;
	values[0] = Int32GetDatum(id);
	projection_registry_exec("DELETE FROM projection.checkpoints WHERE projection_id OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, SPI_OK_DELETE);
}
