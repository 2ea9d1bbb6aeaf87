/*-------------------------------------------------------------------------
 *
 * projection.h
 *	  Constants, SQLSTATEs and GUC variables shared by every file of the
 *	  projection extension.
 *
 * IDENTIFICATION
 *	  src/projection.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_H
#define PROJECTION_H

#include "utils/elog.h"

#include "compat.h"

#define PROJECTION_EXTENSION_NAME	"projection"
#define PROJECTION_SCHEMA_NAME		"projection"
#define PROJECTION_EVENTS_TABLE		"events"
#define PROJECTION_EVENTS_SEQUENCE	"events_global_position_seq"
#define PROJECTION_EVENTS_STREAM_INDEX "events_stream_version_key"
#define PROJECTION_REGISTRY_TABLE	"projections"
#define PROJECTION_HANDLERS_TABLE	"handlers"
#define PROJECTION_CHECKPOINTS_TABLE	"checkpoints"

/* attribute numbers of projection.events (fixed by the install script) */
#define Anum_events_global_position 1
#define Anum_events_stream_id		2
#define Anum_events_stream_version	3
#define Anum_events_event_type		4
#define Anum_events_data			5
#define Anum_events_metadata		6
#define Anum_events_recorded_at		7
#define Natts_events				7

/*
 * The extension's own SQLSTATE class "PJ" (as TimescaleDB uses "TS").
 * Everything else uses PostgreSQL's standard codes.
 */
#define ERRCODE_PROJECTION_VERSION_CONFLICT		MAKE_SQLSTATE('P','J','0','0','1')
#define ERRCODE_PROJECTION_APPEND_ONLY			MAKE_SQLSTATE('P','J','0','0','2')
#define ERRCODE_PROJECTION_PREPARE_APPENDED		MAKE_SQLSTATE('P','J','0','0','3')

/* feeds (feed.c): an ack whose lease expired or was taken over */
#define ERRCODE_PROJECTION_LEASE_LOST			MAKE_SQLSTATE('P','J','F','0','1')

/* GUCs (projection.c) */
extern int	projection_max_workers;
extern int	projection_workers_per_database;
extern int	projection_worker_idle_timeout;
extern int	projection_max_projections;
extern int	projection_naptime;
extern int	projection_batch_size;
extern int	projection_batch_bytes; /* kB */

/* projection.batch_bytes in bytes */
#define PROJECTION_BATCH_BYTES	((Size) projection_batch_bytes * 1024)

/* true when loaded through shared_preload_libraries (set in _PG_init) */
extern bool projection_preloaded;

#endif							/* PROJECTION_H */
