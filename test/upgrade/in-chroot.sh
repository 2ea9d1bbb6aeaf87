#!/bin/bash
# test/upgrade/in-chroot.sh OLD_BINDIR -- the pg_upgrade check from 15 to 17,
# run by test/upgrade/pg_upgrade.sh inside the PostgreSQL 17 chroot, as
# postgres.  Builds a 15 cluster with projections of every kind, writes down
# what must survive, upgrades with the README's steps, compares, then
# appends and resumes.  Prints SAME when nothing changed; exits non-zero on
# any failure.
set -euo pipefail
OLD=$1
NEW=/usr/lib/postgresql/17/bin
export LD_LIBRARY_PATH=/opt/pg15libs
D=/tmp/pgup; rm -rf $D; mkdir -p $D; cd $D
PORT=58431
$OLD/initdb -D $D/old -U postgres -E UTF8 --locale=C >/dev/null
$NEW/initdb -D $D/new -U postgres -E UTF8 --locale=C >/dev/null
for c in old new; do
  cat >> $D/$c/postgresql.conf <<CONF
shared_preload_libraries = 'projection'
port = $PORT
unix_socket_directories = '$D'
listen_addresses = ''
CONF
done
$OLD/pg_ctl -D $D/old -l $D/old.log -w start >/dev/null
P="$OLD/psql -X -q -v ON_ERROR_STOP=1 -h $D -p $PORT -U postgres"
$P -d postgres -c "CREATE ROLE app LOGIN" -c "CREATE DATABASE shop OWNER app"
$P -d shop <<'SQL'
CREATE EXTENSION projection;
GRANT INSERT, SELECT, TRIGGER ON projection.events TO app;
SET ROLE app;
CREATE TABLE counts (stream_id text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION counts_h(e projection.events) RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.counts VALUES (e.stream_id, 1)
  ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1 $$;
SELECT projection.create('counts', 'counts_h', tables => '{counts}');
CREATE TABLE lagging_model (pos bigint PRIMARY KEY);
CREATE FUNCTION lagging_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.lagging_model VALUES (e.global_position) $$;
SELECT projection.create('lagging', 'lagging_h', tables => '{lagging_model}');
CREATE TABLE skipping_model (pos bigint PRIMARY KEY);
CREATE FUNCTION skipping_h(e projection.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF (e.data->>'bad')::boolean THEN RAISE EXCEPTION 'bad event %', e.global_position; END IF;
  INSERT INTO public.skipping_model VALUES (e.global_position);
END $$;
SELECT projection.create('skipping', 'skipping_h', on_error => 'skip');
CREATE TABLE inline_model (pos bigint PRIMARY KEY);
CREATE FUNCTION inline_h(e projection.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.inline_model VALUES (e.global_position) $$;
SELECT projection.create('inline', 'inline_h', mode => 'inline', tables => '{inline_model}');
SELECT max(projection.append('s-' || i % 4, 'Happened', jsonb_build_object('i', i, 'bad', i % 5 = 0)))
  FROM generate_series(1, 20) i;
SELECT projection.wait('counts', 20, '30 s'), projection.wait('lagging', 20, '30 s'),
       projection.wait('skipping', 20, '30 s');
SELECT projection.pause('lagging');
SELECT max(projection.append('s-' || i % 4, 'Happened', jsonb_build_object('i', i, 'bad', i % 5 = 0)))
  FROM generate_series(21, 30) i;
SELECT projection.wait('counts', 30, '30 s'), projection.wait('skipping', 30, '30 s');
SQL
Q="$P -d shop -At"
snap() {  # what must survive
  $1 -d shop -At <<'SQL'
SELECT 'events ' || count(*) || ' ' || md5(string_agg(e::text, ',' ORDER BY global_position)) FROM projection.events e;
SELECT 'registry ' || string_agg(format('%s|%s|%s|%s', name, mode, state, owner), ' ' ORDER BY name) FROM projection.projections;
SELECT 'checkpoints ' || string_agg(c::text, ' ' ORDER BY projection_id) FROM (SELECT projection_id, position FROM projection.checkpoints) c;
SELECT 'dead_letters ' || string_agg(global_position::text, ',' ORDER BY global_position) FROM projection.dead_letters;
SELECT 'status ' || string_agg(format('%s|%s|%s|%s', name, state, position, lag_events), ' ' ORDER BY name) FROM projection.status;
SELECT 'models ' || (SELECT sum(n) FROM counts) || ' ' || (SELECT count(*) FROM lagging_model) || ' ' || (SELECT count(*) FROM skipping_model) || ' ' || (SELECT count(*) FROM inline_model);
SELECT 'owner_entries ' || count(*) FROM pg_shdepend WHERE classid = 'projection.projections'::regclass AND refobjid = 'app'::regrole AND deptype = 'o';
SQL
}
snap "$P" > $D/before.txt
cat $D/before.txt
# pg_upgrade refuses regprocedure columns (function oids are not kept): the
# handler column goes through its text form, resolved again after the upgrade
$P -d shop -c "SET search_path = pg_catalog" -c "ALTER TABLE projection.projections ALTER COLUMN handler TYPE text USING handler::text"
$OLD/pg_ctl -D $D/old -w stop >/dev/null

cd $D
$NEW/pg_upgrade -b $OLD -B $NEW -d $D/old -D $D/new -p $PORT -P $PORT -U postgres --check
$NEW/pg_upgrade -b $OLD -B $NEW -d $D/old -D $D/new -p $PORT -P $PORT -U postgres
N="$NEW/psql -X -q -v ON_ERROR_STOP=1 -h $D -p $PORT -U postgres"
# the handler column back to regprocedure, before the workers start
$NEW/pg_ctl -D $D/new -l $D/new.log -w -o "-c shared_preload_libraries=" start >/dev/null
$N -d shop -c "SET search_path = pg_catalog" -c "ALTER TABLE projection.projections ALTER COLUMN handler TYPE regprocedure USING handler::regprocedure"
$NEW/pg_ctl -D $D/new -w stop >/dev/null
$NEW/pg_ctl -D $D/new -l $D/new.log -w start >/dev/null
# the worker's first round records the owner entries: wait for them
for i in $(seq 1 300); do
  [ "$($N -d shop -At -c "SELECT count(*) FROM pg_shdepend WHERE classid = 'projection.projections'::regclass")" = 4 ] && break
  sleep 0.2
done
snap "$N" > $D/after.txt
cat $D/after.txt
diff $D/before.txt $D/after.txt
echo "SAME"
out=$($N -d postgres -c "DROP ROLE app" 2>&1 || true)
echo "$out"
case "$out" in *"objects in database shop"*) ;; *) echo "DROP ROLE app was not refused"; exit 1 ;; esac
$N -d shop -At <<'SQL'
SELECT max(projection.append('s-' || i % 4, 'Happened', jsonb_build_object('i', i, 'bad', i % 5 = 0)))
  FROM generate_series(31, 35) i;
SELECT projection.wait('counts', 35, '30 s'), projection.wait('skipping', 35, '30 s');
SELECT projection.resume('lagging');
SELECT projection.wait('lagging', 35, '30 s');
SELECT 'models ' || (SELECT sum(n) FROM counts) || ' ' || (SELECT count(*) FROM lagging_model) || ' ' || (SELECT count(*) FROM skipping_model) || ' ' || (SELECT count(*) FROM inline_model);
SELECT 'dead_letters ' || string_agg(global_position::text, ',' ORDER BY global_position) FROM projection.dead_letters;
SELECT 'status ' || string_agg(format('%s|%s|%s|%s', name, state, position, lag_events), ' ' ORDER BY name) FROM projection.status;
SELECT version();
SQL
grep -i "projection" $D/new.log | grep -v "^\s*$" | head -20
$NEW/pg_ctl -D $D/new -w stop >/dev/null
