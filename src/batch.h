/*-------------------------------------------------------------------------
 *
 * batch.h
 *	  Set-based handlers (projection.on_batch): statements run once per
 *	  batch of events over the ephemeral relation "batch".
 *
 * IDENTIFICATION
 *	  src/batch.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_BATCH_H
#define PROJECTION_BATCH_H

#include "access/htup.h"
#include "executor/spi.h"
#include "utils/tuplestore.h"

#include "catalog.h"
#include "eventread.h"
#include "handler.h"

/* the name under which a batch statement sees its events */
#define PROJECTION_BATCH_RELATION "batch"

/* the events of one batch for one projection, being assembled or run */
typedef struct ProjectionBatch
{
	HeapTuple  *tuples;			/* rows of projection.events, in position order,
								 * not copied (valid until the batch has run) ... */
	int			ntuples;
	int			allocated;
	Tuplestorestate *store;		/* ... or copied into this as they came
								 * (projection_batch_begin_stored); for SQL
								 * statements, made from tuples at the run */
	bool		fresh;			/* new events of the appending statement (inline) */
	int64		count;
	int64		first;			/* positions of the first and last events */
	int64		last;
} ProjectionBatch;

extern int	projection_replay_batch_size;

extern void projection_batch_define_gucs(void);

extern bool projection_wants_batch(ProjectionDef *def, const char *event_type);

extern void projection_batch_register(Tuplestorestate *store);
extern SPIPlanPtr projection_batch_prepare(const char *sql);

/* assembling and running a batch; the caller is in the owner's scope, connected to SPI */
extern void projection_batch_begin(ProjectionBatch *batch);
extern void projection_batch_begin_stored(ProjectionBatch *batch);
extern bool projection_batch_is_snapshot(ProjectionDef *def);
extern void projection_batch_put(ProjectionBatch *batch, Datum event, int64 position);
extern void projection_batch_put_tuple(ProjectionBatch *batch, HeapTuple tuple, int64 position);
extern void projection_batch_run(ProjectionDef *def, ProjectionBatch *batch);
extern void projection_batch_end(ProjectionBatch *batch);

/* shorthands for the callers' loops (batchapply.c) */
extern void projection_batch_apply_one(ProjectionDef *def, Datum event, const char *event_type,
									   int64 position);
extern int64 projection_batch_apply_rows(ProjectionDef *def, ProjectionEventRows *rows,
										 int from, int to, bool filtered);
extern void projection_batch_apply_inline(ProjectionRegistry *registry, ProjectionOwnerScope *scope,
										  Tuplestorestate *store, TupleDesc desc);
extern void projection_batch_apply_inline_one(ProjectionRegistry *registry,
											  ProjectionOwnerScope *scope,
											  HeapTuple tuple, TupleDesc desc);

/* for other kinds of projection built on batch statements (snapshots) */
/* batchdef.c */
extern void projection_batch_add_statement(int32 projection_id, Oid owner,
										   const char *search_path, const char *statement);
extern void projection_refuse_snapshot(int32 id, const char *name, const char *action);

#endif							/* PROJECTION_BATCH_H */
