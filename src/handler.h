/*-------------------------------------------------------------------------
 *
 * handler.h
 *	  Running user code as the projection's owner (handler.c).
 *
 * IDENTIFICATION
 *	  src/handler.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_HANDLER_H
#define PROJECTION_HANDLER_H

#include "catalog.h"

/* the saved identity while running a projection's code as its owner */
typedef struct ProjectionOwnerScope
{
	bool		active;
	const char *projection;		/* the projection last entered, for errors */
	Oid			owner;
	const char *search_path;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} ProjectionOwnerScope;

extern void projection_owner_enter(ProjectionOwnerScope *scope, ProjectionDef *def);
extern void projection_owner_leave(ProjectionOwnerScope *scope);
extern void projection_apply(ProjectionDef *def, Datum event, const char *event_type,
							 int64 position);
extern SPIPlanPtr projection_prepare_statement(const char *sql, Oid events_type);
extern void projection_handler_at_eoxact(void);
extern void projection_handler_at_subxact_abort(SubTransactionId mySubid);

#endif							/* PROJECTION_HANDLER_H */
