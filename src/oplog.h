/*-------------------------------------------------------------------------
 *
 * oplog.h
 *	  LOG lines of management calls, written at commit (oplog.c).
 *
 * IDENTIFICATION
 *	  src/oplog.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PROJECTION_OPLOG_H
#define PROJECTION_OPLOG_H

extern void projection_log_at_commit(const char *message);
extern void projection_log_detail_at_commit(const char *message, const char *detail);

/* end of (sub)transaction (xact.c) */
extern void projection_oplog_at_eoxact(bool commit);
extern void projection_oplog_at_subxact_abort(SubTransactionId subid);

#endif							/* PROJECTION_OPLOG_H */
