--
-- setup: install the extension, create the test roles, check what
-- CREATE EXTENSION leaves behind (schema, objects, default privileges)
--
CREATE EXTENSION projection;

-- not relocatable; the control file's schema is pg_catalog, and the
-- install script creates schema "projection" itself, as a member
SELECT extname, extversion, extrelocatable, extnamespace::regnamespace AS control_schema
  FROM pg_extension WHERE extname = 'projection';
SELECT n.nspname,
       EXISTS (SELECT 1 FROM pg_depend d
                WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'projection'))
         AS extension_member
  FROM pg_namespace n WHERE n.nspname = 'projection';
ALTER EXTENSION projection SET SCHEMA public;
\echo :LAST_ERROR_SQLSTATE
-- a second CREATE EXTENSION is refused
CREATE EXTENSION projection;
\echo :LAST_ERROR_SQLSTATE

-- the relations of the schema
SELECT c.relname, c.relkind
  FROM pg_class c
 WHERE c.relnamespace = 'projection'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY c.relname COLLATE "C";

-- the columns of the event store, as the contract fixes them
SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default
  FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'projection.events'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;
-- (18 also lists NOT NULL as constraints, contype 'n': the columns above show them)
SELECT conname, contype, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint WHERE conrelid = 'projection.events'::regclass AND contype <> 'n'
 ORDER BY conname COLLATE "C";

-- the status view has at least the contract's columns
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a
 WHERE a.attrelid = 'projection.status'::regclass
   AND a.attname IN ('name', 'mode', 'state', 'position', 'lag_events', 'lag_seconds', 'last_error')
 ORDER BY a.attnum;

-- the contract's functions, with their signatures, and who may call them
SELECT p.proname, pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result, p.prokind,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'projection'::regnamespace
   AND p.proname IN ('append', 'create', 'on', 'drop', 'pause', 'resume', 'rebuild',
                     'wait', 'aggregate')
 ORDER BY p.proname COLLATE "C";
-- internal helpers (names starting with "_") other than the status view's
-- _worker_info are not callable by PUBLIC
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'projection'::regnamespace AND p.proname LIKE '\_%'
 ORDER BY p.proname COLLATE "C";

-- every table with user data is dumped by pg_dump
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid)
  JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'projection'
 ORDER BY c.relname COLLATE "C";

--
-- roles used by the following tests (the temporary instance is thrown away)
--
CREATE ROLE regress_owner NOLOGIN;
CREATE ROLE regress_appender NOLOGIN;
CREATE ROLE regress_other NOLOGIN;
-- a schema for the read models of regress_owner's projections
CREATE SCHEMA regress_owned AUTHORIZATION regress_owner;

--
-- default privileges: USAGE on the schema and SELECT on the status view
-- for PUBLIC; nothing on the tables that hold event data or the registry
--
SELECT has_schema_privilege('public', 'projection', 'USAGE') AS usage,
       has_schema_privilege('public', 'projection', 'CREATE') AS "create";
SELECT c.relname,
       has_table_privilege('public', c.oid, 'SELECT') AS "select",
       has_table_privilege('public', c.oid, 'INSERT') AS "insert",
       has_table_privilege('public', c.oid, 'UPDATE') AS "update",
       has_table_privilege('public', c.oid, 'DELETE') AS "delete",
       has_table_privilege('public', c.oid, 'TRUNCATE') AS "truncate"
  FROM pg_class c
 WHERE c.relnamespace = 'projection'::regnamespace AND c.relkind IN ('r', 'v')
 ORDER BY c.relname COLLATE "C";
SELECT c.relname, has_sequence_privilege('public', c.oid, 'USAGE') AS usage,
       has_sequence_privilege('public', c.oid, 'SELECT') AS "select"
  FROM pg_class c
 WHERE c.relnamespace = 'projection'::regnamespace AND c.relkind = 'S'
 ORDER BY c.relname COLLATE "C";
-- nobody but the superuser may INSERT into events until granted
SELECT r.rolname, has_table_privilege(r.rolname, 'projection.events', 'INSERT') AS may_append
  FROM pg_roles r WHERE r.rolname LIKE 'regress\_%'
 ORDER BY r.rolname COLLATE "C";

-- and as an ordinary role
SET ROLE regress_other;
SELECT count(*) AS projections FROM projection.status;
SELECT count(*) FROM projection.events;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.dead_letters;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.projections;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM projection.handlers;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO projection.events (stream_id, event_type, data) VALUES ('s', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.append('s', 'E', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT nextval('projection.events_global_position_seq');
\echo :LAST_ERROR_SQLSTATE
SELECT projection._notify_launcher();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- nothing was appended
SELECT count(*) AS events FROM projection.events;
