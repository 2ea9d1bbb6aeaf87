/*-------------------------------------------------------------------------
 *
 * catalog.h
 *	  The projection registry as seen by one backend: object ids of the
 *	  extension's relations, the cached list of projections with their
 *	  kept SPI plans, and running handlers as their owner.
 *
 * IDENTIFICATION
 *	  src/catalog.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_CATALOG_H
#define PROJECTION_CATALOG_H

#include "executor/spi.h"
#include "fmgr.h"
#include "storage/block.h"

typedef enum ProjectionState
{
	PROJECTION_RUNNING,
	PROJECTION_PAUSED,
	PROJECTION_FAILED,
	PROJECTION_REBUILDING,
	PROJECTION_CATCHING_UP
} ProjectionState;

typedef struct ProjectionStatement
{
	char	   *event_type;
	char	   *sql;
	SPIPlanPtr	plan;			/* kept plan, prepared as the owner on first use */
} ProjectionStatement;

/* a batch statement (projection.on_batch, batch.c), in the registry's context */
typedef struct ProjectionBatchStatement
{
	char	   *sql;
	SPIPlanPtr	plan;			/* kept plan, prepared as the owner on first use */
	int			plan_generation;	/* the plan cache's generation of plan ... */
	BlockNumber plan_blocks;	/* ... and its tables' blocks then (batch.c) */
	char		kind;			/* batch.c: 0 not known yet, or one of: */
} ProjectionBatchStatement;

#define PROJECTION_BATCH_SQL		'q' /* run as SQL over "batch" */
#define PROJECTION_BATCH_SNAPSHOT	's' /* a snapshot projection's own: applied
										 * directly (snapapply.c) */

typedef struct ProjectionDef
{
	MemoryContext cxt;			/* the registry's context */
	int32		id;
	char	   *name;
	Oid			handler;		/* InvalidOid: statements only */
	FmgrInfo   *flinfo;			/* this transaction's, while flinfo_epoch is
								 * current (catalog.c, "Handler calls") */
	uint64		flinfo_epoch;
	int			ntypes;			/* 0 with types == NULL: every type */
	char	  **types;
	bool		is_inline;
	bool		skip_errors;	/* on_error = 'skip' */
	Oid			owner;
	char	   *search_path;
	ProjectionState state;
	int64		position;
	int			ntables;
	Oid		   *tables;
	int			nstatements;
	ProjectionStatement *statements;
	int			nbatch_statements;	/* projection.on_batch (batch.c) */
	ProjectionBatchStatement *batch_statements;
} ProjectionDef;

typedef struct ProjectionRegistry
{
	MemoryContext cxt;
	int			nprojections;
	ProjectionDef *projections;
	int			ninline_running;	/* inline projections in state running */
	bool		trusted;		/* no registry change was committing at the load */
	uint64		generation;		/* registry generation read before the load */
	uint64		serial;			/* this backend's count of loads (owners.c) */
	struct ProjectionRegistry *next_retired;
} ProjectionRegistry;

/* object ids of the extension's relations in this database */
typedef struct ProjectionOids
{
	Oid			schema;
	Oid			events;
	Oid			events_type;
	Oid			sequence;
	Oid			stream_index;
	Oid			registry;
	Oid			handlers;
	Oid			checkpoints;	/* InvalidOid before ALTER EXTENSION ... UPDATE TO '1.1' */
} ProjectionOids;

extern const ProjectionOids *projection_oids(void);
extern ProjectionRegistry *projection_registry_acquire(void);
extern void projection_registry_release(ProjectionRegistry *registry);
extern void projection_registry_invalidate(void);
extern void projection_registry_at_abort(void);

extern bool projection_wants(ProjectionDef *def, const char *event_type);
extern Datum projection_type_filter(ProjectionDef *def);

#endif							/* PROJECTION_CATALOG_H */
