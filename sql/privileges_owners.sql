--
-- privileges_owners: create() looks at its tables as the caller, and
-- REASSIGN OWNED warns about a new owner who could not have created the
-- projections it receives
--
CREATE ROLE regress_po_writer;
CREATE ROLE regress_po_heir;
GRANT SELECT, TRIGGER ON projection.events TO regress_po_writer;
CREATE SCHEMA regress_po;
GRANT USAGE ON SCHEMA regress_po TO regress_po_writer;
-- a table the role may write but not read, already holding a row
CREATE TABLE regress_po.audit (pos bigint PRIMARY KEY);
INSERT INTO regress_po.audit VALUES (0);
GRANT INSERT, UPDATE, DELETE ON regress_po.audit TO regress_po_writer;
CREATE TABLE regress_po.empty_audit (pos bigint PRIMARY KEY);
GRANT INSERT, UPDATE, DELETE ON regress_po.empty_audit TO regress_po_writer;
CREATE FUNCTION regress_po.h(e projection.events) RETURNS void LANGUAGE sql AS
$$ INSERT INTO regress_po.audit VALUES (e.global_position) ON CONFLICT DO NOTHING $$;
SELECT projection.append('po-1', 'E', '{}') > 0 AS appended;

SET ROLE regress_po_writer;
-- without SELECT on a table, create() may not tell whether it holds rows
-- (full or empty alike)
SELECT projection.create('po_async', 'regress_po.h', tables => '{regress_po.audit}');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.create('po_async', 'regress_po.h', tables => '{regress_po.empty_audit}');
\echo :LAST_ERROR_SQLSTATE
-- if_not_empty => 'keep' needs no look
SELECT projection.create('po_async', 'regress_po.h', tables => '{regress_po.audit}',
                         if_not_empty => 'keep');
SELECT projection.create('po_inline', 'regress_po.h', mode => 'inline', start_from => 'end');
RESET ROLE;
-- with SELECT, the caller learns what it may read
GRANT SELECT ON regress_po.audit TO regress_po_writer;
SET ROLE regress_po_writer;
SELECT projection.create('po_other', 'regress_po.h', tables => '{regress_po.audit}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- REASSIGN OWNED to a role without SELECT (nor TRIGGER, for the inline
-- one): the projections move and keep running, with a warning each
REASSIGN OWNED BY regress_po_writer TO regress_po_heir;
SELECT name, owner FROM projection.status WHERE name LIKE 'po%' ORDER BY name;
-- to a role with the privileges: no warning
GRANT SELECT, TRIGGER ON projection.events TO regress_po_writer;
REASSIGN OWNED BY regress_po_heir TO regress_po_writer;

-- clean up
DROP OWNED BY regress_po_writer, regress_po_heir;
DROP SCHEMA regress_po CASCADE;
DROP ROLE regress_po_writer, regress_po_heir;
