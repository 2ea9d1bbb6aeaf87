/* sql/projection--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.4'" to load this file. \quit

/*
 * Version 1.4.  Version 1.3 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */

/* ------------------------------------------------------------------------
 * Feeds: owners in pg_shdepend (issue 13, src/feeddepend.c)
 *
 * One pg_shdepend "owner" entry per feed, kept by a row trigger (so rows
 * that pg_restore loads get theirs too): DROP ROLE of a feed's owner is
 * refused with 2BP01, also from another database; DROP OWNED BY drops the
 * role's feeds and REASSIGN OWNED BY gives them to the new role (the
 * utility hook, src/depend.c).  The UPDATE records the entries of the
 * feeds that exist.
 * ------------------------------------------------------------------------
 */
CREATE FUNCTION projection._feed_owner() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'projection_feed_owner_trigger';
COMMENT ON FUNCTION projection._feed_owner() IS 'records the owner of each feed in pg_shdepend';
REVOKE ALL ON FUNCTION projection._feed_owner() FROM PUBLIC;
CREATE TRIGGER _feed_owner AFTER INSERT OR UPDATE OF owner OR DELETE ON projection.feeds
	FOR EACH ROW EXECUTE FUNCTION projection._feed_owner();
CREATE TRIGGER _feed_owner_truncate AFTER TRUNCATE ON projection.feeds
	FOR EACH STATEMENT EXECUTE FUNCTION projection._feed_owner();
UPDATE projection.feeds SET owner = owner;
COMMENT ON FUNCTION projection.repair_dependencies() IS 'records missing owner entries of projections and feeds in pg_shdepend and stops projections whose owner is gone (superuser)';
