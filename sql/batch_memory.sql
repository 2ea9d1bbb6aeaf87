--
-- A batch's copy as the relation "batch" stays in memory up to twice
-- projection.batch_bytes, whatever work_mem says (1.5): the events of a
-- replay's or the worker's batch are held in memory anyway (at most
-- batch_bytes), so a batch larger than work_mem is not written to a
-- temporary file and read back.  Before 1.5, this rebuild's batch of 2,000
-- events (some 300 kB) spilled at work_mem = 64kB.
--
CREATE TABLE public.bm_counts (n bigint NOT NULL, total bigint NOT NULL);
SELECT projection.create('bm_counts', NULL, '{BmEvent}', tables => '{public.bm_counts}',
                         start_from => 'end');
-- no sort, no hash: the statement itself needs no temporary file
SELECT projection.on_batch('bm_counts', $$
    INSERT INTO public.bm_counts SELECT count(*), sum((data->>'i')::bigint) FROM batch$$);
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
SELECT 'bm-' || i, 1, 'BmEvent', jsonb_build_object('i', i, 'pad', repeat('x', 100))
  FROM generate_series(1, 2000) i;
SELECT projection.wait('bm_counts', (SELECT max(global_position) FROM projection.events), '1 hour');
SET work_mem = '64kB';
-- the rebuild's read of the events takes the position index, not a sort
-- that would spill at this work_mem
SET enable_sort = off;
SELECT pg_stat_force_next_flush();
SELECT temp_files AS temp_files_before FROM pg_stat_database WHERE datname = current_database() \gset
SELECT projection.rebuild('bm_counts');
SELECT pg_stat_force_next_flush();
SELECT temp_files - :temp_files_before AS temp_files_of_the_rebuild
  FROM pg_stat_database WHERE datname = current_database();
-- one batch of every event
SELECT n, total FROM public.bm_counts;
RESET work_mem;
RESET enable_sort;
SELECT projection.drop('bm_counts');
DROP TABLE public.bm_counts;
