/*-------------------------------------------------------------------------
 *
 * depend.h
 *	  Dependencies of projections on their handler function, read-model
 *	  tables and owner role.
 *
 * IDENTIFICATION
 *	  src/depend.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_DEPEND_H
#define PROJECTION_DEPEND_H

#include "nodes/nodes.h"

/* the owner checks the worker calls are owners.c's */
#include "owners.h"

/* what a utility statement in progress means for dependencies */
typedef struct ProjectionDependState
{
	int			behavior;		/* saved drop behavior (a DropBehavior, or -1) */
	bool		dropping_extension; /* saved flag */
} ProjectionDependState;

extern void projection_depend_install_hook(void);
extern void projection_depend_before_utility(Node *parsetree, ProjectionDependState *saved);
extern void projection_depend_after_utility(ProjectionDependState *saved);

#endif							/* PROJECTION_DEPEND_H */
