/*-------------------------------------------------------------------------
 *
 * tableguard.h
 *	  The shape of the extension's relations: changes to their columns,
 *	  constraints, names or schema refused (1.8).
 *
 * IDENTIFICATION
 *	  src/tableguard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_TABLEGUARD_H
#define PROJECTION_TABLEGUARD_H

#include "nodes/nodes.h"

extern void projection_tableguard_check(Node *parsetree);
extern void projection_tableguard_verify(Node *parsetree);

#endif							/* PROJECTION_TABLEGUARD_H */
