/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Module entry point of the projection extension: PG_MODULE_MAGIC,
 *	  _PG_init, the GUCs and the installation of hooks.  Nothing else.
 *
 * When the library is not preloaded, only the reloadable GUCs are defined: inline
 * projections work, and functions that need the background worker warn (see
 * manage.c).  When it is preloaded, shared memory is requested and the launcher
 * registered.  The utility and object access hooks are installed either way.
 *
 * IDENTIFICATION
 *	  src/projection.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "batch.h"
#include "depend.h"
#include "launcher.h"
#include "pool.h"
#include "projection.h"
#include "shmem.h"
#include "utility.h"
#include "xact.h"

PROJECTION_MODULE_MAGIC;

int			projection_max_workers = 4;
int			projection_workers_per_database = 2;
int			projection_max_projections = 1024;
int			projection_naptime = 1000;
int			projection_worker_idle_timeout = 10000;
int			projection_batch_size = 1000;
int			projection_batch_bytes = 8192;	/* kB */
bool		projection_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("projection.naptime",
							"Safety-net interval at which an idle async worker looks for work even if nothing woke it.",
							"Committing appenders wake the worker at once.  Events inserted without the extension's "
							"triggers (for example by logical replication) are not applied by async projections, "
							"whatever this is.",
							&projection_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("projection.worker_idle_timeout",
							"Time after which a worker with nothing to do leaves and gives its slot back to the pool.",
							"A commit with events for an async projection starts a worker again at once.",
							&projection_worker_idle_timeout,
							10000, 0, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("projection.batch_size",
							"Maximum number of events an async worker applies in one transaction.",
							NULL,
							&projection_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("projection.batch_bytes",
							"Memory bound of the events an async worker, a catch-up or a rebuild reads at once.",
							"A batch ends at projection.batch_size events or once its events hold this much "
							"memory, whichever comes first; it always takes at least one event.",
							&projection_batch_bytes,
							8192, 64, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	projection_batch_define_gucs();

	/*
	 * The (sub)transaction callbacks (xact.c) are registered once, here, in
	 * every backend that loads the library, preloaded or not.
	 */
	projection_xact_init();

	/*
	 * Dependencies of projections (depend.c) are checked by every backend
	 * that loads the library, preloaded or not.
	 */
	projection_depend_install_hook();
	projection_utility_install_hook();

	/*
	 * Without preloading there is no shared memory and no worker: inline
	 * projections work, async ones wait (create() warns).  PGC_POSTMASTER
	 * variables cannot be defined after startup, so they only exist when
	 * preloaded.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;

	DefineCustomIntVariable("projection.max_workers",
							"Maximum number of projection workers running at once, over all databases.",
							"Workers come from this shared pool on demand: a database holds one (per "
							"worker group) only while it has async work.  Each counts against "
							"max_worker_processes.",
							&projection_max_workers,
							4, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("projection.workers_per_database",
							"Number of workers applying async projections in each database.",
							"Projections are spread over the workers by id, so a slow or failing "
							"projection only shares its worker with the projections of its group.",
							&projection_workers_per_database,
							2, 1, 32,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("projection.max_projections",
							"Maximum number of projections, across all databases, whose progress is tracked in shared memory.",
							NULL,
							&projection_max_projections,
							1024, 16, 1000000,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	projection_preloaded = true;
	MarkGUCPrefixReserved("projection");

	projection_shmem_install_hooks();
	projection_pool_install_hooks();
	projection_launcher_register();
}
