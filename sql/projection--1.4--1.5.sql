/* sql/projection--1.4--1.5.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.5'" to load this file. \quit

/*
 * Version 1.5.  Version 1.4 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

/*
 * Section snap3: aggregate() from a snapshot.  fold_definition records,
 * when a snapshot projection's states start (create_snapshot, rebuild), a
 * digest of its fold's definition (projection_snapshot_fold_definition in
 * src/snapfold.c); aggregate() starts from a stored state only while the
 * fold still has that definition.  NULL for the snapshot projections of
 * 1.4 (how their states were folded is not known) until their next
 * rebuild.
 */
ALTER TABLE projection.snapshot_defs ADD COLUMN fold_definition text;
COMMENT ON COLUMN projection.snapshot_defs.fold_definition IS 'digest of the fold''s definition when the states started (create_snapshot or the last rebuild); aggregate() uses the states only while it is unchanged';
