/*-------------------------------------------------------------------------
 *
 * utility.h
 *	  ProcessUtility_hook: keep our workers out of the way of database-level
 *	  commands.
 *
 * IDENTIFICATION
 *	  src/utility.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_UTILITY_H
#define PROJECTION_UTILITY_H

extern void projection_utility_install_hook(void);
extern void projection_utility_at_eoxact(void);

#endif							/* PROJECTION_UTILITY_H */
