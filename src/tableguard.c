/*-------------------------------------------------------------------------
 *
 * tableguard.c
 *	  The shape of the extension's relations is the extension's: ALTER
 *	  TABLE, RENAME and SET SCHEMA that would change their columns, their
 *	  names or their schema are refused (1.8).
 *
 * The C code reads and builds rows of projection.events by column number
 * (PROJECTION_EVENT_COLUMNS, heap_form_tuple of an event row), and its
 * statements name the extension's tables and columns.  A column added to
 * the events table made every append fail with an internal error ("has 8
 * columns, expected 7") and every rebuild of a snapshot projection too; a
 * renamed column or table broke every statement naming it.  So the utility
 * hook refuses, for a relation that is a member of the extension:
 *
 * - ALTER TABLE ... ADD COLUMN, DROP COLUMN, ALTER COLUMN ... TYPE;
 * - ALTER TABLE / VIEW / SEQUENCE / INDEX ... RENAME (the relation, a
 *   column or a constraint): the indexes of our tables' constraints too, the
 *   code looks some of them up by name (an index a user added may be
 *   renamed);
 * - ALTER ... SET SCHEMA.
 *
 * One exception: a column of projection.events that is not one of its
 * seven may be dropped, so that a table altered before 1.8 can be repaired.
 * Everything else stays allowed: indexes, storage parameters, triggers
 * enabled or disabled (pg_restore --disable-triggers), constraints, grants.
 * The extension's own scripts (CREATE / ALTER EXTENSION) and a binary
 * upgrade (pg_upgrade's pg_dump drops the dropped columns again with ALTER
 * TABLE ... DROP COLUMN) are not checked.
 *
 * Data an application wants next to its events belongs in the events'
 * metadata, or in a table of its own keyed by global_position.
 *
 * IDENTIFICATION
 *	  src/tableguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"

#include "catalog.h"
#include "projection.h"
#include "tableguard.h"

/* The relation named, if it exists and is a member of our extension */
static Oid
tableguard_our_relid(RangeVar *relation)
{
	Oid			relid;
	Oid			extoid;

	if (relation == NULL)
		return InvalidOid;
	relid = RangeVarGetRelid(relation, NoLock, true);
	if (!OidIsValid(relid))
		return InvalidOid;
	extoid = get_extension_oid(PROJECTION_EXTENSION_NAME, true);
	if (!OidIsValid(extoid))
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

/*
 * Is "column" one of projection.events' own?  A column of any other name
 * was added before 1.8 refused that: dropping it again repairs the table.
 */
static bool
tableguard_event_column(const char *column)
{
	static const char *const names[] = {
		"global_position", "stream_id", "stream_version", "event_type",
		"data", "metadata", "recorded_at"
	};

	StaticAssertStmt(lengthof(names) == Natts_events, "one name per column of projection.events");
	for (size_t i = 0; i < lengthof(names); i++)
		if (strcmp(column, names[i]) == 0)
			return true;
	return false;
}

/* Does an ALTER TABLE of our relation "relid" (as parsed) change its columns? */
static bool
tableguard_changes_columns(AlterTableStmt *stmt, Oid relid)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_AddColumn || cmd->subtype == AT_AlterColumnType)
			return true;
		if (cmd->subtype == AT_DropColumn &&
			(relid != projection_oids()->events || tableguard_event_column(cmd->name)))
			return true;
	}
	return false;
}

static void
tableguard_refuse(Oid relid)
{
	bool		events = relid == projection_oids()->events;

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot change the columns, name or schema of relation \"%s.%s\"",
					get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)),
			 errdetail("The relation belongs to extension \"%s\", whose code relies on them.",
					   PROJECTION_EXTENSION_NAME),
			 events ? errhint("Keep data of your own in the events' metadata, or in a table of your own keyed by global_position.") : 0));
}

/*
 * Called by the utility hook before any utility statement runs: raises an
 * error for a statement that would change the shape of one of our relations.
 */
void
projection_tableguard_check(Node *parsetree)
{
	if (creating_extension || IsBinaryUpgrade)
		return;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
			{
				AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
				Oid			relid = tableguard_our_relid(stmt->relation);

				if (OidIsValid(relid) && tableguard_changes_columns(stmt, relid))
					tableguard_refuse(relid);
				break;
			}
		case T_RenameStmt:
			{
				RenameStmt *stmt = (RenameStmt *) parsetree;

				if (stmt->renameType == OBJECT_COLUMN || stmt->renameType == OBJECT_TABLE ||
					stmt->renameType == OBJECT_VIEW || stmt->renameType == OBJECT_SEQUENCE ||
					stmt->renameType == OBJECT_INDEX || stmt->renameType == OBJECT_TABCONSTRAINT)
				{
					Oid			relid = tableguard_our_relid(stmt->relation);

					if (OidIsValid(relid))
						tableguard_refuse(relid);
				}
				break;
			}
		case T_AlterObjectSchemaStmt:
			{
				Oid			relid =
					tableguard_our_relid(((AlterObjectSchemaStmt *) parsetree)->relation);

				if (OidIsValid(relid))
					tableguard_refuse(relid);
				break;
			}
		default:
			break;
	}
}
