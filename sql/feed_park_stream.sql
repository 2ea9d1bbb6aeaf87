--
-- feed_park_stream (1.6): create_feed(..., park => 'stream') parks, at
-- max_attempts, the failing event and its stream: the stream's later
-- events are held back while the other streams flow; release_stream
-- delivers them, in position order, before the partition goes on
--
\set regress_db :DBNAME
CREATE DATABASE regress_feed_park_stream;
\c regress_feed_park_stream
CREATE EXTENSION projection;
\set VERBOSITY default
CREATE ROLE regress_fps_owner;
CREATE ROLE regress_fps_other;
GRANT SELECT ON projection.events TO regress_fps_owner, regress_fps_other;
-- positions 1 to 6: a1 b1 a2 c1 a3 b2
SELECT projection.append(s, 'E', jsonb_build_object('n', n))
  FROM (VALUES ('a', 1), ('b', 1), ('a', 2), ('c', 1), ('a', 3), ('b', 2)) v(s, n);
SET ROLE regress_fps_owner;
-- poll_ack: poll, show the events and the holds left, ack the poll
\set poll_ack 'CREATE TEMP TABLE got AS SELECT * FROM projection.poll(''regress_fps'', 10); SELECT global_position, stream_id, stream_version FROM got ORDER BY global_position; SELECT count(*) AS holds FROM projection.feed_parked_streams; SELECT projection.ack(''regress_fps'', (SELECT token FROM got LIMIT 1)); DROP TABLE got;'

-- park is checked; the default is 'event' (1.5's behaviour)
SELECT projection.create_feed('regress_fps_bad', park => 'streams');
SELECT projection.create_feed('regress_fps_bad', park => NULL);
SELECT projection.create_feed('regress_fps_event', max_attempts => 1);
SELECT projection.create_feed('regress_fps', max_attempts => 1, park => 'stream');
RESET ROLE;
SELECT name, park FROM projection.feeds ORDER BY name;
SET ROLE regress_fps_owner;

--
-- a poison event parks its stream
--
SELECT token AS t1 FROM projection.poll('regress_fps', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps', :'t1', 3, 'a2 failed');
SELECT feed, partition, stream_id, parked_from, attempts, error, released_at IS NULL AS parked, replayed_to
  FROM projection.feed_parked_streams;
SELECT feed, global_position, stream_id, attempts, error FROM projection.feed_parked_events;
SELECT position, parked, parked_streams, last_error FROM projection.feed_status WHERE feed = 'regress_fps';
-- the other streams flow, a's later events are held back
CREATE TEMP TABLE p2 AS SELECT * FROM projection.poll('regress_fps', 10);
SELECT global_position, stream_id, stream_version FROM p2 ORDER BY global_position;
SELECT token AS t2 FROM p2 LIMIT 1 \gset
SELECT projection.ack('regress_fps', :'t2');
-- events appended later too: a4 (7) is held, b3 (8) comes
RESET ROLE;
SELECT projection.append('a', 'E', '{"n": 4}'), projection.append('b', 'E', '{"n": 3}');
SET ROLE regress_fps_owner;
CREATE TEMP TABLE p3 AS SELECT * FROM projection.poll('regress_fps', 10);
SELECT global_position, stream_id FROM p3 ORDER BY global_position;
SELECT token AS t3 FROM p3 LIMIT 1 \gset
SELECT projection.ack('regress_fps', :'t3');
SELECT count(*) AS nothing FROM projection.poll('regress_fps', 10);
SELECT position, lag_events, parked_streams FROM projection.feed_status WHERE feed = 'regress_fps';

--
-- release_stream: errors change nothing
--
SELECT projection.release_stream('regress_fps_nope', 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.release_stream('regress_fps', 'b');
\echo :LAST_ERROR_SQLSTATE
SELECT projection.release_stream('regress_fps', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.release_stream('regress_fps', 'a', skip => NULL);
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_fps_other;
SELECT projection.release_stream('regress_fps', 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS visible FROM projection.feed_parked_streams;
SET ROLE regress_fps_owner;
SELECT stream_id, released_at IS NULL AS parked FROM projection.feed_parked_streams;

--
-- released: the parked event and the held ones first, in order, then the rest
--
SELECT projection.release_stream('regress_fps', 'a');
SELECT projection.release_stream('regress_fps', 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT stream_id, released_at IS NOT NULL AS released, replayed_to FROM projection.feed_parked_streams;
-- no longer parked: delivered again
SELECT count(*) AS parked_events FROM projection.feed_parked_events;
CREATE TEMP TABLE r1 AS SELECT * FROM projection.poll('regress_fps', 2);
SELECT global_position, stream_id, stream_version FROM r1 ORDER BY global_position;
SELECT token AS r1 FROM r1 LIMIT 1 \gset
-- an up_to outside the held events of the lease is refused
SELECT projection.ack('regress_fps', :'r1', 8);
\echo :LAST_ERROR_SQLSTATE
SELECT projection.ack('regress_fps', :'r1');
-- the checkpoint stayed; replayed_to moved
SELECT position FROM projection.feed_status WHERE feed = 'regress_fps';
SELECT replayed_to FROM projection.feed_parked_streams;
CREATE TEMP TABLE r2 AS SELECT * FROM projection.poll('regress_fps', 10);
SELECT global_position, stream_id, stream_version FROM r2 ORDER BY global_position;
SELECT token AS r2 FROM r2 LIMIT 1 \gset
SELECT projection.ack('regress_fps', :'r2');
-- every held event acked: the hold goes, and a's new events come as the others
RESET ROLE;
SELECT projection.append('a', 'E', '{"n": 5}'), projection.append('c', 'E', '{"n": 2}');
SET ROLE regress_fps_owner;
:poll_ack

--
-- a held event that fails again parks the stream again from it; release
-- with skip passes the parked event over and delivers the later ones (the
-- held events reach up to the checkpoint, 11 here: 12 comes after them,
-- with the partition's events)
--
RESET ROLE;
SELECT projection.append('b', 'E', '{"n": 4}'), projection.append('b', 'E', '{"n": 5}');
SET ROLE regress_fps_owner;
SELECT token AS t4 FROM projection.poll('regress_fps', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps', :'t4', 11, 'b4 failed');
SELECT stream_id, parked_from FROM projection.feed_parked_streams;
SELECT projection.release_stream('regress_fps', 'b');
CREATE TEMP TABLE r4 AS SELECT * FROM projection.poll('regress_fps', 10);
SELECT global_position, stream_id, stream_version FROM r4 ORDER BY global_position;
SELECT token AS r4 FROM r4 LIMIT 1 \gset
SELECT projection.nack('regress_fps', :'r4', 11, 'b4 failed again');
SELECT stream_id, parked_from, error, released_at IS NULL AS parked FROM projection.feed_parked_streams;
SELECT global_position, error FROM projection.feed_parked_events ORDER BY 1;
SELECT projection.release_stream('regress_fps', 'b', skip => true);
SELECT stream_id, released_at IS NOT NULL AS released, replayed_to FROM projection.feed_parked_streams;
:poll_ack
SELECT global_position FROM projection.feed_parked_events ORDER BY 1;

--
-- seek forgets the parked streams; 'event' feeds park events only
--
RESET ROLE;
SELECT projection.append('c', 'E', '{"n": 3}');
SET ROLE regress_fps_owner;
SELECT token AS t5 FROM projection.poll('regress_fps', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps', :'t5', 13, 'c3 failed');
SELECT count(*) AS holds FROM projection.feed_parked_streams;
SELECT projection.seek('regress_fps', 12);
SELECT count(*) AS holds FROM projection.feed_parked_streams;
SELECT global_position FROM projection.poll('regress_fps', 10);
SELECT token AS e1 FROM projection.poll('regress_fps_event', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps_event', :'e1', 3, 'a2 failed');
SELECT count(*) AS holds FROM projection.feed_parked_streams WHERE feed = 'regress_fps_event';
SELECT global_position, stream_id FROM projection.poll('regress_fps_event', 3) ORDER BY 1;
SELECT projection.release_stream('regress_fps_event', 'a');
\echo :LAST_ERROR_SQLSTATE

--
-- drop_feed and DROP OWNED take the holds with them
--
RESET ROLE;
SELECT projection.append('c', 'E', '{"n": 4}');
SET ROLE regress_fps_owner;
SELECT projection.seek('regress_fps', 13);
SELECT token AS t6 FROM projection.poll('regress_fps', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps', :'t6', 14, 'c4 failed');
RESET ROLE;
SELECT count(*) AS holds FROM projection.feed_holds;
SET ROLE regress_fps_owner;
SELECT projection.drop_feed('regress_fps');
RESET ROLE;
SELECT count(*) AS holds FROM projection.feed_holds;
SET ROLE regress_fps_owner;
SELECT projection.create_feed('regress_fps2', max_attempts => 1, park => 'stream');
SELECT token AS t7 FROM projection.poll('regress_fps2', 10) LIMIT 1 \gset
SELECT projection.nack('regress_fps2', :'t7', 1, 'a1 failed');
RESET ROLE;
SELECT count(*) AS holds FROM projection.feed_holds;
DROP OWNED BY regress_fps_owner;
SELECT count(*) AS holds FROM projection.feed_holds;
SELECT count(*) AS feeds FROM projection.feeds;

--
-- a poll carrying the ack of a released stream's last held events (1.7):
-- the stream goes on with the partition in that same poll (it spun, never
-- returning, before)
--
SELECT projection.append(s, 'F', jsonb_build_object('n', n))
  FROM (VALUES ('x', 1), ('x', 2), ('y', 1), ('x', 3)) v(s, n);
SELECT projection.create_feed('regress_fps3', ARRAY['F'], max_attempts => 1, park => 'stream');
SELECT token AS t8, global_position AS g8 FROM projection.poll('regress_fps3', 1) \gset
SELECT projection.nack('regress_fps3', :'t8', :g8, 'x1 failed');
CREATE TEMP TABLE p8 AS SELECT * FROM projection.poll('regress_fps3', 10);
SELECT stream_id, data->>'n' AS n FROM p8 ORDER BY global_position;
SELECT projection.ack('regress_fps3', (SELECT token FROM p8 LIMIT 1));
DROP TABLE p8;
SELECT projection.release_stream('regress_fps3', 'x');
CREATE TEMP TABLE p9 AS SELECT * FROM projection.poll('regress_fps3', 10);
SELECT stream_id, data->>'n' AS n FROM p9 ORDER BY global_position;
SET statement_timeout = '20s';
SELECT count(*) AS after_the_hold
  FROM projection.poll('regress_fps3', 10, ack => (SELECT token FROM p9 LIMIT 1));
RESET statement_timeout;
DROP TABLE p9;
SELECT count(*) AS holds FROM projection.feed_parked_streams WHERE feed = 'regress_fps3';
SELECT position, parked_streams FROM projection.feed_status WHERE feed = 'regress_fps3';
SELECT projection.drop_feed('regress_fps3');

-- clean up
\c :regress_db
DROP DATABASE regress_feed_park_stream;
DROP ROLE regress_fps_owner;
DROP ROLE regress_fps_other;
