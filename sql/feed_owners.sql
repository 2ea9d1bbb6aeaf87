--
-- feed_owners: a feed's owner is recorded in pg_shdepend, as a
-- projection's is: DROP ROLE of the owner is refused (here and from
-- another database), DROP OWNED BY drops its feeds, REASSIGN OWNED BY
-- gives them to the new role, DROP EXTENSION forgets the entries, and
-- repair_dependencies() records entries that went missing
--
\set regress_db :DBNAME
CREATE DATABASE regress_feed_owners;
\c regress_feed_owners
CREATE EXTENSION projection;
\set VERBOSITY default
CREATE ROLE regress_fo_owner;
CREATE ROLE regress_fo_heir;
-- SELECT on the events through a group role: a privilege granted to the
-- owner itself would be a dependency of its own
CREATE ROLE regress_fo_readers;
GRANT SELECT ON projection.events TO regress_fo_readers;
GRANT regress_fo_readers TO regress_fo_owner;
SET ROLE regress_fo_owner;
SELECT projection.create_feed('regress_fo_a');
SELECT projection.create_feed('regress_fo_b', partitions => 2);
RESET ROLE;
-- one owner entry per feed
SELECT count(*) AS entries FROM pg_shdepend
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND classid = 'projection.feeds'::regclass AND refobjid = 'regress_fo_owner'::regrole
   AND deptype = 'o';

-- DROP ROLE of the owner: refused in this database, nothing changes
DROP ROLE regress_fo_owner;
\echo :LAST_ERROR_SQLSTATE
SELECT feed, owner FROM projection.feed_status WHERE partition = 0 ORDER BY feed COLLATE "C";

-- and from another database (PostgreSQL counts the entries)
\c :regress_db
DROP ROLE regress_fo_owner;
\echo :LAST_ERROR_SQLSTATE
\c regress_feed_owners
\set VERBOSITY default

-- REASSIGN OWNED: the feeds move, with a warning for a new owner who could
-- not poll them
REASSIGN OWNED BY regress_fo_owner TO regress_fo_heir;
SELECT feed, owner FROM projection.feed_status WHERE partition = 0 ORDER BY feed COLLATE "C";
SELECT count(*) AS entries FROM pg_shdepend
 WHERE classid = 'projection.feeds'::regclass AND refobjid = 'regress_fo_heir'::regrole;
DROP ROLE regress_fo_owner;
DROP ROLE regress_fo_heir;
\echo :LAST_ERROR_SQLSTATE

-- DROP OWNED: the feeds are dropped with their entries
DROP OWNED BY regress_fo_heir;
SELECT count(*) AS feeds FROM projection.feed_status;
SELECT count(*) AS entries FROM pg_shdepend WHERE classid = 'projection.feeds'::regclass;
DROP ROLE regress_fo_heir;

-- entries lost (a restore with triggers disabled): repair_dependencies()
-- records them
CREATE ROLE regress_fo_owner2 IN ROLE regress_fo_readers;
ALTER TABLE projection.feeds DISABLE TRIGGER USER;
SET ROLE regress_fo_owner2;
SELECT projection.create_feed('regress_fo_c');
RESET ROLE;
ALTER TABLE projection.feeds ENABLE TRIGGER USER;
SELECT count(*) AS entries FROM pg_shdepend WHERE classid = 'projection.feeds'::regclass;
SELECT projection.repair_dependencies() AS recorded;
SELECT count(*) AS entries FROM pg_shdepend WHERE classid = 'projection.feeds'::regclass;
SELECT projection.repair_dependencies() AS recorded;

-- DROP EXTENSION forgets the entries: the role can go
DROP EXTENSION projection;
SELECT count(*) AS entries FROM pg_shdepend
 WHERE refobjid = 'regress_fo_owner2'::regrole AND deptype = 'o';
DROP ROLE regress_fo_owner2;

-- clean up
\c :regress_db
DROP DATABASE regress_feed_owners;
DROP ROLE regress_fo_readers;
