/*-------------------------------------------------------------------------
 *
 * snapfold.h
 *	  A snapshot projection's definition and its fold (snapfold.c), for
 *	  snapshot.c and snapapply.c.
 *
 * IDENTIFICATION
 *	  src/snapfold.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_SNAPFOLD_H
#define PROJECTION_SNAPFOLD_H

#include "executor/spi.h"
#include "fmgr.h"

#include "foldexpr.h"
#include "handler.h"

/* a snapshot projection, as read from the registry */
typedef struct SnapshotDef
{
	int32		id;
	char	   *name;
	Oid			owner;
	char	   *search_path;
	Oid			fold;
	Datum		initial;		/* jsonb */
	bool		all_types;
	Datum		event_types;	/* text[], unless all_types */
	bool		fold_strict;
} SnapshotDef;
/* the fold's call state: the FmgrInfo and contexts of one state's fold */
typedef struct SnapshotFold
{
	FmgrInfo	flinfo;
	bool		strict;
	bool		plpgsql;		/* PL/pgSQL: see snapfold.c fold_is_plpgsql */
	bool		use_expr;		/* an SQL-standard body evaluated as an expression (foldexpr.c) */
	FoldExpr	expr;
	MemoryContext cxt[2];		/* the calls' and their results', in turn */
	int			cur;			/* the one holding the last result */
} SnapshotFold;
extern void projection_snapshot_exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
										  int expected, const char *what);
extern void projection_snapshot_def_load(const char *name, SnapshotDef *def, MemoryContext cxt);
extern void projection_snapshot_fold_init(SnapshotFold *f, SnapshotDef *def);
extern void projection_snapshot_fold_event(SnapshotFold *f, Datum *state, bool *state_null,
										   Datum event);
extern void projection_snapshot_fold_row(SnapshotFold *f, Datum *state, bool *state_null,
										 HeapTuple row, TupleDesc desc);
extern void projection_snapshot_fold_reset(SnapshotFold *f);
extern void projection_snapshot_fold_end(SnapshotFold *f);
extern char *projection_snapshot_fold_definition(Oid fold);
extern void projection_snapshot_record_fold(int32 projection_id);
extern void projection_snapshot_check_fold(SnapshotDef *def);
extern bool projection_snapshot_has_fold_definition(void);
extern void projection_snapshot_owner_enter(ProjectionOwnerScope *scope, SnapshotDef *def);

#endif							/* PROJECTION_SNAPFOLD_H */
