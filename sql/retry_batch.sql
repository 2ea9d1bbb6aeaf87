--
-- retry_dead_letters() of a projection whose read model is written by a
-- batch statement (on_batch): a retried event goes through the batch
-- statements too, as a one-row batch, and stays a dead letter when they
-- fail again.
--
\set SHOW_CONTEXT never
CREATE ROLE regress_rtb_owner NOLOGIN;
CREATE SCHEMA rtb AUTHORIZATION regress_rtb_owner;
GRANT SELECT ON projection.events TO regress_rtb_owner;
SET ROLE regress_rtb_owner;
CREATE TABLE rtb.totals (stream_id text PRIMARY KEY, n integer NOT NULL);
CREATE TABLE rtb.broken (stream_id text PRIMARY KEY);
-- raises for a stream listed in rtb.broken, through a division by zero
CREATE FUNCTION rtb.check(s text) RETURNS integer
LANGUAGE sql AS $$ SELECT 1 / (SELECT count(*)::integer - count(b.stream_id)::integer
                                 FROM (SELECT s) x LEFT JOIN rtb.broken b ON b.stream_id = s) $$;
SELECT projection.create('rtb_totals', NULL, '{RbTotal}', tables => '{rtb.totals}',
                         start_from => 'end', on_error => 'skip');
SELECT projection.on_batch('rtb_totals', $$
    INSERT INTO rtb.totals
    SELECT stream_id, sum(rtb.check(stream_id)) FROM batch GROUP BY stream_id ORDER BY stream_id
    ON CONFLICT (stream_id) DO UPDATE SET n = totals.n + excluded.n$$);
INSERT INTO rtb.broken VALUES ('r-2');
RESET ROLE;
SELECT projection.append('r-1', 'RbTotal', '{}') AS r1 \gset
SELECT projection.append('r-2', 'RbTotal', '{}') AS poison \gset
SELECT projection.append('r-1', 'RbTotal', '{}') AS r3 \gset
SELECT projection.wait('rtb_totals', :r3, '1 hour');
SELECT * FROM rtb.totals ORDER BY 1;
SELECT global_position = :poison AS poison, stream_id, sqlstate
  FROM projection.dead_letters WHERE name = 'rtb_totals';
SET ROLE regress_rtb_owner;
-- still broken: the batch statement fails again, the dead letter stays
SELECT * FROM projection.retry_dead_letters('rtb_totals');
SELECT * FROM rtb.totals ORDER BY 1;
-- fixed: the event is applied by the batch statement and removed
DELETE FROM rtb.broken;
SELECT * FROM projection.retry_dead_letters('rtb_totals');
SELECT * FROM rtb.totals ORDER BY 1;
RESET ROLE;
SELECT count(*) AS dead_letters FROM projection.dead_letters WHERE name = 'rtb_totals';

SELECT projection.drop('rtb_totals');
DROP SCHEMA rtb CASCADE;
REVOKE SELECT ON projection.events FROM regress_rtb_owner;
DROP ROLE regress_rtb_owner;
