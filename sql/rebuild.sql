--
-- rebuild: empty a projection's tables and replay every event
--
CREATE SCHEMA rb;
CREATE TABLE rb.accounts (
    account_id text PRIMARY KEY,
    balance    numeric NOT NULL,
    movements  integer NOT NULL
);
CREATE TABLE rb.movements (
    position   bigint PRIMARY KEY,
    account_id text NOT NULL REFERENCES rb.accounts,
    amount     numeric NOT NULL
);
CREATE FUNCTION rb.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'AccountOpened' THEN
        INSERT INTO rb.accounts VALUES (e.stream_id, 0, 0);
    ELSE
        UPDATE rb.accounts
           SET balance = balance + (e.data->>'amount')::numeric, movements = movements + 1
         WHERE account_id = e.stream_id;
        INSERT INTO rb.movements VALUES (e.global_position, e.stream_id, (e.data->>'amount')::numeric);
    END IF;
END $$;
SELECT projection.create('rb_accounts', 'rb.apply', '{AccountOpened,Deposited,Withdrawn}',
                         mode => 'inline', tables => '{rb.accounts,rb.movements}',
                         start_from => 'end');
-- a statement handler takes part in the rebuild too
CREATE TABLE rb.audit (position bigint PRIMARY KEY, account_id text NOT NULL);
SELECT projection.create('rb_audit', NULL, mode => 'inline', tables => '{rb.audit}',
                         start_from => 'end');
SELECT projection.on('rb_audit', 'Withdrawn',
                     'INSERT INTO rb.audit VALUES (($1).global_position, ($1).stream_id)');

SELECT projection.append('account-1', 'AccountOpened', '{}') > 0 AS appended;
SELECT projection.append('account-2', 'AccountOpened', '{}') > 0 AS appended;
INSERT INTO projection.events (stream_id, event_type, data) VALUES
    ('account-1', 'Deposited', '{"amount": 100}'),
    ('account-2', 'Deposited', '{"amount": 50}'),
    ('account-1', 'Withdrawn', '{"amount": -30}'),
    ('account-2', 'Withdrawn', '{"amount": -5}'),
    ('account-1', 'Deposited', '{"amount": 7.5}');
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";
-- the good state, to compare with
CREATE TABLE rb.accounts_good AS SELECT * FROM rb.accounts;
CREATE TABLE rb.movements_good AS SELECT * FROM rb.movements;
CREATE TABLE rb.audit_good AS SELECT * FROM rb.audit;

-- corrupt the read models
UPDATE rb.accounts SET balance = 0;
DELETE FROM rb.movements WHERE amount < 0;
INSERT INTO rb.audit VALUES (-1, 'bogus');

-- rebuild replays every event of the store that the projection handles
-- (the number it returns), and the read model is again what the events say
SELECT projection.rebuild('rb_accounts') =
       (SELECT count(*) FROM projection.events
         WHERE event_type IN ('AccountOpened', 'Deposited', 'Withdrawn')) AS replayed_all;
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";
SELECT (SELECT count(*) FROM (SELECT * FROM rb.accounts EXCEPT SELECT * FROM rb.accounts_good) d) +
       (SELECT count(*) FROM (SELECT * FROM rb.accounts_good EXCEPT SELECT * FROM rb.accounts) d) +
       (SELECT count(*) FROM (SELECT * FROM rb.movements EXCEPT SELECT * FROM rb.movements_good) d) +
       (SELECT count(*) FROM (SELECT * FROM rb.movements_good EXCEPT SELECT * FROM rb.movements) d)
       AS differences;
-- the other projection was not touched
SELECT * FROM rb.audit ORDER BY position;
SELECT projection.rebuild('rb_audit') > 0 AS rebuilt;
SELECT (SELECT count(*) FROM (SELECT * FROM rb.audit EXCEPT SELECT * FROM rb.audit_good) d) +
       (SELECT count(*) FROM (SELECT * FROM rb.audit_good EXCEPT SELECT * FROM rb.audit) d)
       AS differences;
SELECT name, state, lag_events, position = (SELECT max(global_position) FROM projection.events) AS at_end
  FROM projection.status ORDER BY name COLLATE "C";
-- appends go on as before
SELECT projection.append('account-2', 'Deposited', '{"amount": 1}') > 0 AS appended;
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";

-- the same result as a projection created now from the beginning
CREATE TABLE rb.accounts_fresh (LIKE rb.accounts);
CREATE FUNCTION rb.apply_fresh(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'AccountOpened' THEN
        INSERT INTO rb.accounts_fresh VALUES (e.stream_id, 0, 0);
    ELSE
        UPDATE rb.accounts_fresh
           SET balance = balance + (e.data->>'amount')::numeric, movements = movements + 1
         WHERE account_id = e.stream_id;
    END IF;
END $$;
SELECT projection.create('rb_fresh', 'rb.apply_fresh', '{AccountOpened,Deposited,Withdrawn}',
                         mode => 'inline', tables => '{rb.accounts_fresh}');
SELECT (SELECT count(*) FROM (SELECT * FROM rb.accounts EXCEPT SELECT * FROM rb.accounts_fresh) d) +
       (SELECT count(*) FROM (SELECT * FROM rb.accounts_fresh EXCEPT SELECT * FROM rb.accounts) d)
       AS differences;
SELECT projection.drop('rb_fresh');

--
-- a handler error during the rebuild rolls it back: the old read model stays
--
UPDATE rb.accounts SET movements = 99 WHERE account_id = 'account-1';
CREATE OR REPLACE FUNCTION rb.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'handler broken';
END $$;
\set VERBOSITY terse
SELECT projection.rebuild('rb_accounts');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";
SELECT name, state FROM projection.status WHERE name = 'rb_accounts';
-- put the handler back
CREATE OR REPLACE FUNCTION rb.apply(e projection.events) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'AccountOpened' THEN
        INSERT INTO rb.accounts VALUES (e.stream_id, 0, 0);
    ELSE
        UPDATE rb.accounts
           SET balance = balance + (e.data->>'amount')::numeric, movements = movements + 1
         WHERE account_id = e.stream_id;
        INSERT INTO rb.movements VALUES (e.global_position, e.stream_id, (e.data->>'amount')::numeric);
    END IF;
END $$;

-- a rebuild rolled back with its transaction leaves the old read model
BEGIN;
SELECT projection.rebuild('rb_accounts') > 0 AS rebuilt;
SELECT movements FROM rb.accounts WHERE account_id = 'account-1';
ROLLBACK;
SELECT movements FROM rb.accounts WHERE account_id = 'account-1';
SELECT projection.rebuild('rb_accounts') > 0 AS rebuilt;
SELECT movements FROM rb.accounts WHERE account_id = 'account-1';

-- a paused projection stays paused after a rebuild, and is caught up to the
-- end of the store
SELECT projection.pause('rb_accounts');
SELECT projection.append('account-1', 'Deposited', '{"amount": 1000}') > 0 AS appended;
SELECT name, state, lag_events FROM projection.status WHERE name = 'rb_accounts';
SELECT projection.rebuild('rb_accounts') > 0 AS rebuilt;
SELECT name, state, lag_events FROM projection.status WHERE name = 'rb_accounts';
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";
SELECT projection.append('account-1', 'Deposited', '{"amount": 0.5}') > 0 AS appended;
SELECT projection.resume('rb_accounts');
SELECT * FROM rb.accounts ORDER BY account_id COLLATE "C";

--
-- refused rebuilds change nothing
--
-- inside REPEATABLE READ or SERIALIZABLE
UPDATE rb.accounts SET movements = 99 WHERE account_id = 'account-1';
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT projection.rebuild('rb_accounts');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT projection.rebuild('rb_accounts');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT movements FROM rb.accounts WHERE account_id = 'account-1';
-- by someone other than the owner
GRANT USAGE ON SCHEMA rb TO regress_other;
SET ROLE regress_other;
SELECT projection.rebuild('rb_accounts');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT movements FROM rb.accounts WHERE account_id = 'account-1';
-- the owner (not a superuser) may
GRANT SELECT, TRIGGER ON projection.events TO regress_owner;
SET ROLE regress_owner;
CREATE TABLE regress_owned.counts (event_type text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION regress_owned.count(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO regress_owned.counts AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
SELECT projection.create('rb_owned', 'regress_owned.count', '{Deposited}', mode => 'inline',
                         tables => '{regress_owned.counts}', start_from => 'end');
SELECT projection.rebuild('rb_owned') > 0 AS rebuilt;
RESET ROLE;
SET ROLE regress_other;
SELECT projection.rebuild('rb_owned');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT n = (SELECT count(*) FROM projection.events WHERE event_type = 'Deposited') AS all_counted
  FROM regress_owned.counts;
SELECT projection.drop('rb_owned');
REVOKE SELECT, TRIGGER ON projection.events FROM regress_owner;
--
-- async projections are rebuilt the same way
--
CREATE TABLE rb.async_counts (event_type text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION rb.async_count(e projection.events) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO rb.async_counts AS c VALUES (e.event_type, 1)
    ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1
$$;
-- paused in the creating transaction: the worker leaves it alone
BEGIN;
SELECT projection.create('rb_async', 'rb.async_count', '{Deposited,Withdrawn}',
                         tables => '{rb.async_counts}', start_from => 'end');
SELECT projection.pause('rb_async');
COMMIT;
INSERT INTO rb.async_counts VALUES ('Bogus', 1);
SELECT projection.rebuild('rb_async') =
       (SELECT count(*) FROM projection.events WHERE event_type IN ('Deposited', 'Withdrawn')) AS replayed_all;
SELECT name, mode, state, lag_events,
       position = (SELECT max(global_position) FROM projection.events) AS at_end
  FROM projection.status WHERE name = 'rb_async';
SELECT c.event_type, c.n = (SELECT count(*) FROM projection.events e
                             WHERE e.event_type = c.event_type) AS all_counted
  FROM rb.async_counts c ORDER BY c.event_type COLLATE "C";
-- it goes on from there once resumed
SELECT projection.resume('rb_async');
SELECT projection.append('account-2', 'Deposited', '{"amount": 2}') AS pos \gset
SELECT projection.wait('rb_async', :pos);
SELECT c.event_type, c.n = (SELECT count(*) FROM projection.events e
                             WHERE e.event_type = c.event_type) AS all_counted
  FROM rb.async_counts c ORDER BY c.event_type COLLATE "C";
-- rebuilt while it runs
UPDATE rb.async_counts SET n = 0;
SELECT projection.rebuild('rb_async') > 0 AS rebuilt;
SELECT projection.append('account-2', 'Withdrawn', '{"amount": -2}') AS pos \gset
SELECT projection.wait('rb_async', :pos);
SELECT name, state, lag_events, last_error FROM projection.status WHERE name = 'rb_async';
SELECT c.event_type, c.n = (SELECT count(*) FROM projection.events e
                             WHERE e.event_type = c.event_type) AS all_counted
  FROM rb.async_counts c ORDER BY c.event_type COLLATE "C";
-- refused in REPEATABLE READ, and by others than its owner
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT projection.rebuild('rb_async');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SET ROLE regress_other;
SELECT projection.rebuild('rb_async');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT projection.drop('rb_async');

-- the tables are emptied in foreign-key order, whatever the order of
-- "tables" (movements references accounts)
SELECT projection.create('rb_reversed', 'rb.apply', '{AccountOpened,Deposited,Withdrawn}',
                         mode => 'inline', tables => '{rb.movements,rb.accounts}',
                         start_from => 'end');
SELECT projection.pause('rb_reversed');
SELECT projection.drop('rb_accounts');
SELECT projection.rebuild('rb_reversed') > 0 AS rebuilt;
SELECT (SELECT count(*) FROM rb.movements) =
       (SELECT count(*) FROM projection.events WHERE event_type IN ('Deposited', 'Withdrawn'))
       AS every_movement;
-- a table the projection does not own references one of its tables: the
-- rebuild refuses before emptying anything (it would cascade)
CREATE TABLE rb.favorites (account_id text REFERENCES rb.accounts ON DELETE CASCADE);
INSERT INTO rb.favorites SELECT min(account_id) FROM rb.accounts;
SELECT projection.rebuild('rb_reversed');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS favorites_kept FROM rb.favorites;
DROP TABLE rb.favorites;
SELECT projection.drop('rb_reversed');
SELECT projection.drop('rb_audit');
SELECT count(*) AS projections FROM projection.status;
