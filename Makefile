# Makefile for the projection extension (PGXS)

EXTENSION = projection
MODULE_big = projection
OBJS = \
	src/projection.o \
	src/shmem.o \
	src/cancel.o \
	src/assign.o \
	src/oplog.o \
	src/catalog.o \
	src/handler.o \
	src/apply.o \
	src/horizon.o \
	src/xact.o \
	src/events.o \
	src/streams.o \
	src/registry.o \
	src/checkpoint.o \
	src/inline.o \
	src/create.o \
	src/manage.o \
	src/replay.o \
	src/replaychunk.o \
	src/rebuild.o \
	src/progress.o \
	src/wait.o \
	src/aggregate.o \
	src/launcher.o \
	src/worker.o \
	src/workerround.o \
	src/workercareful.o \
	src/workerfail.o \
	src/workerstep.o \
	src/eventread.o \
	src/utility.o \
	src/tableguard.o \
	src/depend.o \
	src/ownerentry.o \
	src/owners.o \
	src/spiutil.o \
	src/subxact.o \
	src/lifecycle.o \
	src/deadletter.o \
	src/batch.o \
	src/batchapply.o \
	src/batchdef.o \
	src/feed.o \
	src/feedpoll.o \
	src/feedack.o \
	src/feeddepend.o \
	src/feedlease.o \
	src/feedread.o \
	src/feedpark.o \
	src/snapshot.o \
	src/snapfold.o \
	src/foldexpr.o \
	src/snapapply.o \
	src/snapstates.o \
	src/pool.o \
	src/poolcommit.o
PGFILEDESC = "projection - event store and projections inside PostgreSQL"

DATA = $(wildcard sql/projection--*.sql)
PG_CPPFLAGS = -I$(srcdir)/src

# pg_regress: one topic per file in sql/, expected output in expected/
REGRESS = setup events registry inline security rebuild aggregate aggregate_memory events_subxact privileges manage handler_redefine handler_settings lifecycle batch snapshot feeds feed_owners feed_leases feed_poll_ack privileges_owners retry_batch dead_letters_paths hostile_snapshot_retry snapshot_guard inline_recursion aggregate_snapshot batch_memory hostile_aggregate_trust hostile_subxact_inline snapshot_batches feed_park_stream hostile_snapshot_fold newcomer snapshot_sql_fold table_guard
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=$(srcdir)/test/projection.conf

# isolation specs live in test/specs, expected output in test/expected
ISOLATION = append_race ordering events_rolled_back_append snapshot_retry_repeatable_read feed_release_ack_race table_guard_race
ISOLATION_OPTS = --inputdir=test --temp-instance=./tmp_isolation --temp-config=$(srcdir)/test/projection.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_regress tmp_isolation output_iso test/bench/out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# after PGXS, whose Makefile.global resets PROVE_FLAGS
PROVE_FLAGS = -I $(srcdir)/test/perl

# PGXS tracks no header dependencies (unless the server was configured with
# --enable-depend): an object built against an older header would read shared
# structures at the wrong offsets.  Every object depends on every header.
$(OBJS): $(wildcard $(srcdir)/src/*.h)
