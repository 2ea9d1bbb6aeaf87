--
-- handler_settings: each handler call starts from the projection's own
-- settings.  What a handler changes with SET LOCAL, SET or set_config() is
-- undone when it returns: the next projection of the same owner, the next
-- event, and the appending session never see it, inline or in the worker.
--
CREATE SCHEMA hs;
-- if a handler's search_path leaked, unqualified "seen" would land here
CREATE SCHEMA hs_elsewhere;
CREATE TABLE hs.seen (projection text, pos bigint, search_path text, tz_changed boolean,
                      app_changed boolean, bonus integer);
CREATE TABLE hs_elsewhere.seen (LIKE hs.seen);
SET search_path = hs;
-- records what it sees, then changes settings three ways
CREATE FUNCTION hs.first(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen
    VALUES ('first', e.global_position, current_setting('search_path'),
            current_setting('TimeZone') = 'Asia/Tokyo',
            current_setting('application_name') = 'changed by first',
            nullif(current_setting('hs.bonus', true), '')::integer);
    SET LOCAL search_path = hs_elsewhere, pg_catalog;
    PERFORM set_config('TimeZone', 'Asia/Tokyo', true);
    PERFORM set_config('application_name', 'changed by first', false);
    SET hs.bonus = 42;
END $$;
-- only records what it sees
CREATE FUNCTION hs.second(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen
    VALUES ('second', e.global_position, current_setting('search_path'),
            current_setting('TimeZone') = 'Asia/Tokyo',
            current_setting('application_name') = 'changed by first',
            nullif(current_setting('hs.bonus', true), '')::integer);
END $$;
-- one owner (the test's superuser), one search_path: one owner scope
SELECT projection.create('hs_first', 'hs.first', '{HsEvent}', mode => 'inline',
                         start_from => 'end');
SELECT projection.create('hs_second', 'hs.second', '{HsEvent}', mode => 'inline',
                         start_from => 'end');
-- a statement handler of the same owner after them
SELECT projection.create('hs_third', NULL, mode => 'inline', start_from => 'end');
SELECT projection.on('hs_third', 'HsEvent', $$
    INSERT INTO seen
    VALUES ('third', ($1).global_position, current_setting('search_path'),
            current_setting('TimeZone') = 'Asia/Tokyo',
            current_setting('application_name') = 'changed by first',
            nullif(current_setting('hs.bonus', true), '')::integer)
$$);
RESET search_path;

--
-- inline: one event, then two events in one statement
--
SET application_name = 'appender';
SELECT projection.append('hs-1', 'HsEvent', '{}') > 0 AS appended;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('hs-2', 1, 'HsEvent', '{}'), ('hs-2', 2, 'HsEvent', '{}');
-- every call saw the projections' search_path and none of the changes
SELECT projection, dense_rank() OVER (ORDER BY pos) AS event, search_path, tz_changed,
       app_changed, bonus
  FROM hs.seen ORDER BY pos, projection COLLATE "C";
SELECT count(*) AS elsewhere FROM hs_elsewhere.seen;
-- nor does the appending session see them
SELECT current_setting('search_path') AS search_path,
       current_setting('TimeZone') = 'Asia/Tokyo' AS tz_changed,
       current_setting('application_name') AS app,
       current_setting('hs.bonus', true) AS bonus;
RESET application_name;

--
-- async: the same in one worker batch
--
TRUNCATE hs.seen;
SELECT projection.pause('hs_first');
SELECT projection.pause('hs_second');
SELECT projection.pause('hs_third');
SET search_path = hs;
SELECT projection.create('hs_async_first', 'hs.first', '{HsAsync}', start_from => 'end');
SELECT projection.create('hs_async_second', 'hs.second', '{HsAsync}', start_from => 'end');
RESET search_path;
INSERT INTO projection.events (stream_id, stream_version, event_type, data)
VALUES ('hs-3', 1, 'HsAsync', '{}'), ('hs-3', 2, 'HsAsync', '{}'), ('hs-3', 3, 'HsAsync', '{}');
SELECT max(global_position) AS last FROM projection.events \gset
SELECT projection.wait('hs_async_first', :last, '30 s') AS first_done,
       projection.wait('hs_async_second', :last, '30 s') AS second_done;
SELECT projection, dense_rank() OVER (ORDER BY pos) AS event, search_path, tz_changed,
       app_changed, bonus
  FROM hs.seen ORDER BY pos, projection COLLATE "C";
SELECT count(*) AS elsewhere FROM hs_elsewhere.seen;

SELECT projection.drop(name) FROM projection.status WHERE name LIKE 'hs\_%' ORDER BY name;
DROP SCHEMA hs, hs_elsewhere CASCADE;
