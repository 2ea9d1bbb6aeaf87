/*-------------------------------------------------------------------------
 *
 * tableguard.c
 *	  The shape of the extension's relations is the extension's: ALTER
 *	  TABLE, RENAME and SET SCHEMA that would change their columns, their
 *	  names or their schema are refused (1.8).
 *
 * The C code reads and builds rows of projection.events by column number
 * (PROJECTION_EVENT_COLUMNS, heap_form_tuple of an event row), opens some
 * constraints' indexes by name, and its statements name the extension's
 * tables and columns.  A column added to the events table made every
 * append fail with an internal error ("has 8 columns, expected 7"); a
 * renamed column or table broke every statement naming it; a dropped and
 * recreated stream-version constraint let appends store duplicate
 * versions.  So, before a utility statement runs, the hook refuses
 * (0A000), for a relation that is a member of the extension:
 *
 * - ALTER TABLE that adds, drops or retypes a column, changes a column's
 *   default, NOT NULL or identity, adds, drops or alters a constraint
 *   (pg_dump would not keep one of the user's on our table either), or
 *   makes the table inherit, a typed table (OF) or a partition; only the
 *   registry's handler column may change type, to text and back, around
 *   pg_upgrade (README "pg_upgrade from 15 to 17");
 * - RENAME of the relation, a column, a constraint, or the index of one of
 *   its constraints (an index a user added may be renamed);
 * - SET SCHEMA; ALTER SEQUENCE; CREATE OR REPLACE VIEW;
 *
 * and CREATE TABLE ... INHERITS of one of them (a child's rows would be
 * read as events that never went through the position trigger), ALTER
 * SCHEMA projection RENAME, and ALTER EXTENSION projection DROP (which
 * would take a relation out of the guard's sight).
 *
 * Some statements reach the events table from elsewhere (ALTER TYPE ...
 * CASCADE of a type it is bound to, DDL on a parent), and a name looked up
 * before the statement may resolve to another relation when the statement
 * looks again (a search_path race).  So after every ALTER, RENAME or DROP
 * the hook also checks the events table itself: its seven columns, in
 * order, with their types, and no other live column; otherwise the
 * statement fails and is rolled back.
 *
 * Everything else stays allowed: indexes of one's own, storage parameters,
 * triggers enabled or disabled (pg_restore --disable-triggers), row level
 * security, grants.  The extension's own scripts (CREATE / ALTER
 * EXTENSION projection) and a binary upgrade are not checked.
 *
 * A column of projection.events that is not one of its seven may be
 * dropped; the table keeps it as a dropped column, which the code does not
 * handle, so a database altered before 1.8 is repaired by a dump and a
 * restore after that.  Data an application wants next to its events
 * belongs in the events' metadata, or in a table of its own keyed by
 * global_position.
 *
 * IDENTIFICATION
 *	  src/tableguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "catalog.h"
#include "projection.h"
#include "tableguard.h"

/*
 * The relation named, if it exists and is a member of our extension
 * (extoid, from tableguard_extension)
 */
static Oid
tableguard_our_relid(RangeVar *relation, Oid extoid)
{
	Oid			relid;

	if (relation == NULL)
		return InvalidOid;
	relid = RangeVarGetRelid(relation, NoLock, true);
	if (!OidIsValid(relid))
		return InvalidOid;
	if (get_rel_relkind(relid) == RELKIND_INDEX)
	{
		/*
		 * An index is no member of the extension: ours are the indexes of
		 * our tables' constraints (the code looks some up by name), not the
		 * indexes users add (a feed's partition index).
		 */
		if (!OidIsValid(get_index_constraint(relid)) ||
			getExtensionOfObject(RelationRelationId, IndexGetRelation(relid, false)) != extoid)
			return InvalidOid;
		return relid;
	}
	if (getExtensionOfObject(RelationRelationId, relid) != extoid)
		return InvalidOid;
	return relid;
}

/* projection.events' columns, in order */
static const char *const event_columns[] = {
	"global_position", "stream_id", "stream_version", "event_type",
	"data", "metadata", "recorded_at"
};

StaticAssertDecl(lengthof(event_columns) == Natts_events,
				 "one name per column of projection.events");

/* Is "column" one of projection.events' own? */
static bool
tableguard_event_column(const char *column)
{
	for (size_t i = 0; i < lengthof(event_columns); i++)
		if (strcmp(column, event_columns[i]) == 0)
			return true;
	return false;
}

/*
 * Does an ALTER TABLE of our relation "relid" (as parsed) change what the
 * code relies on?
 */
static bool
tableguard_changes_shape(AlterTableStmt *stmt, Oid relid)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_AlterColumnType:

				/*
				 * The registry's handler column to text and back, around
				 * pg_upgrade (which refuses regprocedure columns): README
				 * "pg_upgrade from 15 to 17", steps 2 and 5.
				 */
				if (relid == projection_oids()->registry &&
					strcmp(cmd->name, "handler") == 0)
					break;
				return true;
			case AT_AddColumn:
			case AT_AddConstraint:
			case AT_ColumnDefault:
			case AT_DropNotNull:
			case AT_SetNotNull:
			case AT_AddIdentity:
			case AT_SetIdentity:
			case AT_DropIdentity:
			case AT_DropExpression:
			case AT_DropConstraint:
			case AT_AlterConstraint:
			case AT_AddInherit:
			case AT_AddOf:
			case AT_AttachPartition:
				return true;
			case AT_DropColumn:
				if (relid != projection_oids()->events || tableguard_event_column(cmd->name))
					return true;
				break;
			default:
				break;
		}
	}
	return false;
}

/*
 * Our relation that an ALTER TABLE of another table would bind to it: one
 * it attaches as a partition, or one it makes the table inherit from (the
 * table's rows would then be read as events).
 */
static Oid
tableguard_attached_relid(AlterTableStmt *stmt, Oid extoid)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
		RangeVar   *other = NULL;
		Oid			relid;

		if (cmd->subtype == AT_AttachPartition && cmd->def != NULL && IsA(cmd->def, PartitionCmd))
			other = ((PartitionCmd *) cmd->def)->name;
		else if (cmd->subtype == AT_AddInherit && cmd->def != NULL && IsA(cmd->def, RangeVar))
			other = (RangeVar *) cmd->def;
		relid = tableguard_our_relid(other, extoid);
		if (OidIsValid(relid))
			return relid;
	}
	return InvalidOid;
}

static void
tableguard_refuse(Oid relid)
{
	bool		events = relid == projection_oids()->events;

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot change the definition, name or schema of relation \"%s.%s\"",
					get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)),
			 errdetail("The relation belongs to extension \"%s\", whose code relies on its columns, constraints and name.",
					   PROJECTION_EXTENSION_NAME),
			 events ? errhint("Keep data of your own in the events' metadata, or in a table of your own keyed by global_position.") : 0));
}

/*
 * Our extension's oid, when a statement is to be checked: in a transaction
 * state (not the ROLLBACK of a failed transaction block), with the
 * extension installed, and not in its own scripts or a binary upgrade.
 * InvalidOid otherwise.
 */
static Oid
tableguard_extension(void)
{
	Oid			extoid;

	if (!IsTransactionState() || IsBinaryUpgrade)
		return InvalidOid;
	extoid = get_extension_oid(PROJECTION_EXTENSION_NAME, true);
	if (creating_extension && CurrentExtensionObject == extoid)
		return InvalidOid;
	return extoid;
}

static void
tableguard_refuse_other(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot %s", what),
			 errdetail("The extension's code relies on its schema and relations.")));
}

/*
 * Called by the utility hook before any utility statement runs: raises an
 * error for a statement that would change the shape of one of our relations.
 */
void
projection_tableguard_check(Node *parsetree)
{
	Oid			extoid;
	Oid			relid = InvalidOid;

	/*
	 * The statement's kind first: no catalog access for the others, which
	 * include ROLLBACK in an aborted transaction.
	 */
	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
		case T_RenameStmt:
		case T_AlterObjectSchemaStmt:
		case T_AlterSeqStmt:
		case T_ViewStmt:
		case T_CreateStmt:
		case T_AlterExtensionContentsStmt:
			break;
		default:
			return;
	}
	extoid = tableguard_extension();
	if (!OidIsValid(extoid))
		return;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;

				relid = tableguard_our_relid(stmt->relation, extoid);
				if (OidIsValid(relid) && !tableguard_changes_shape(stmt, relid))
					relid = InvalidOid;
				if (!OidIsValid(relid))
					relid = tableguard_attached_relid(stmt, extoid);
				break;
			}
		case T_RenameStmt:
			{
				RenameStmt *stmt = (RenameStmt *) parsetree;

				if (stmt->renameType == OBJECT_SCHEMA &&
					strcmp(stmt->subname, PROJECTION_SCHEMA_NAME) == 0)
					tableguard_refuse_other("rename schema \"" PROJECTION_SCHEMA_NAME "\" of extension \"" PROJECTION_EXTENSION_NAME "\"");
				if (stmt->renameType == OBJECT_COLUMN || stmt->renameType == OBJECT_TABLE ||
					stmt->renameType == OBJECT_VIEW || stmt->renameType == OBJECT_SEQUENCE ||
					stmt->renameType == OBJECT_INDEX || stmt->renameType == OBJECT_TABCONSTRAINT)
					relid = tableguard_our_relid(stmt->relation, extoid);
				break;
			}
		case T_AlterObjectSchemaStmt:
			relid = tableguard_our_relid(((AlterObjectSchemaStmt *) parsetree)->relation, extoid);
			break;
		case T_AlterSeqStmt:
			relid = tableguard_our_relid(((AlterSeqStmt *) parsetree)->sequence, extoid);
			break;
		case T_ViewStmt:
			if (((ViewStmt *) parsetree)->replace)
				relid = tableguard_our_relid(((ViewStmt *) parsetree)->view, extoid);
			break;
		case T_CreateStmt:
			{
				ListCell   *lc;

				foreach(lc, ((CreateStmt *) parsetree)->inhRelations)
				{
					relid = tableguard_our_relid(lfirst_node(RangeVar, lc), extoid);
					if (OidIsValid(relid))
						break;
				}
				break;
			}
		case T_AlterExtensionContentsStmt:
			{
				AlterExtensionContentsStmt *stmt = (AlterExtensionContentsStmt *) parsetree;

				if (stmt->action < 0 && strcmp(stmt->extname, PROJECTION_EXTENSION_NAME) == 0)
					tableguard_refuse_other("remove an object from extension \"" PROJECTION_EXTENSION_NAME "\"");
				break;
			}
		default:
			break;
	}
	if (OidIsValid(relid))
		tableguard_refuse(relid);
}

/*
 * Called by the utility hook after an ALTER, RENAME or DROP statement has
 * run: projection.events must still have its seven columns, in order, with
 * their types, and no other live column (the statement may have reached it
 * through a type, a parent or another name).
 */
void
projection_tableguard_verify(Node *parsetree)
{
	static const Oid types[Natts_events] = {
		INT8OID, TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID
	};
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	bool		ok = true;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
		case T_RenameStmt:
		case T_AlterObjectSchemaStmt:
		case T_DropStmt:
			break;
		default:
			return;
	}
	if (!OidIsValid(tableguard_extension()))
		return;
	nsp = get_namespace_oid(PROJECTION_SCHEMA_NAME, true);
	relid = OidIsValid(nsp) ? get_relname_relid(PROJECTION_EVENTS_TABLE, nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return;					/* the next call of the extension says so */

	rel = relation_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (i >= Natts_events)
			ok = ok && att->attisdropped;
		else
			ok = ok && !att->attisdropped && att->atttypid == types[i] &&
				strcmp(NameStr(att->attname), event_columns[i]) == 0;
	}
	ok = ok && desc->natts >= Natts_events;
	relation_close(rel, AccessShareLock);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot change the columns of relation \"%s.%s\"",
						PROJECTION_SCHEMA_NAME, PROJECTION_EVENTS_TABLE),
				 errdetail("The statement changed them through another object; the extension's code relies on them."),
				 errhint("Keep data of your own in the events' metadata, or in a table of your own keyed by global_position.")));
}
