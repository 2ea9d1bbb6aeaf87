#!/usr/bin/env bash
# test/demo.sh -- the project's demo command (README "Quick start").
#
# Run it from anywhere, as root, on Debian bookworm:
#
#     test/demo.sh
#
# It installs the packages it needs (skipped when they are all present),
# builds the extension and installs it into a private copy of Debian's
# PostgreSQL 15 (the system's is never written), starts a throwaway server as
# "postgres" in a temporary directory (shared_preload_libraries = 'projection',
# Unix socket only, on a free port), runs test/demo.sql in a new database with
# psql, then stops the server and removes the directory, whatever happened.
# The compiler's output goes to a log that is shown only if the build fails.
# The exit status is non-zero if any step, any statement or any check of the
# demo failed (the demo raises an error when a check does not hold).
#
# Environment:
#   PG_CFLAGS   compiler flags for the build (default: none)
#   PG_CONFIG   pg_config of a private server tree (default: a copy of
#               Debian's PostgreSQL 15 made in the temporary directory)
#   DEMO_PORT   the port to use (default: the first free one from 55440)

set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$top/test/lib.sh"

pj_require_root
pj_install_packages

# in /tmp, whatever TMPDIR says: the "postgres" user must reach it
D=$(mktemp -d /tmp/projection-demo.XXXXXX)
bindir=
build_log=
finish() {
    local rc=$?

    if [ -n "$bindir" ] && [ -f "$D/data/postmaster.pid" ]; then
        pj_as_postgres "$bindir/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -n "$build_log" ] && [ -s "$build_log" ]; then
        printf '\n===== build log (last 50 lines) =====\n' >&2
        tail -n 50 "$build_log" >&2
    fi
    if [ "$rc" -ne 0 ] && [ -s "$D/server.log" ]; then
        printf '\n===== server log (last 100 lines) =====\n' >&2
        tail -n 100 "$D/server.log" >&2
    fi
    rm -rf "$D"
    [ "$rc" -eq 0 ] && echo "demo finished: every step and check passed" ||
        echo "demo FAILED (exit status $rc)" >&2
    exit "$rc"
}
trap finish EXIT

[ -n "${PG_CONFIG:-}" ] || PG_CONFIG=$(pj_private_tree "$D/pg")
pj_stage_tree "$top" "$D/tree"
# the compiler's output goes to a log, shown only if the build fails
pj_say "building the extension and installing it into $("$PG_CONFIG" --pkglibdir)"
build_log=$D/build.log
pj_build_install "$D/tree" "${PG_CFLAGS-}" >"$build_log" 2>&1
build_log=
bindir=$("$PG_CONFIG" --bindir)
port=${DEMO_PORT:-$(pj_free_port 55440)}
chown -R postgres:postgres "$D"

pj_say "starting a throwaway server in $D (port $port)"
pj_as_postgres "$bindir/initdb" -D "$D/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 -N >"$D/initdb.log" ||
    { cat "$D/initdb.log" >&2; exit 1; }
cat >>"$D/data/postgresql.conf" <<EOF

# test/demo.sh
shared_preload_libraries = 'projection'
port = $port
listen_addresses = ''
unix_socket_directories = '$D'
fsync = off
EOF
pj_as_postgres "$bindir/pg_ctl" -D "$D/data" -l "$D/server.log" -w start >/dev/null

psql=("$bindir/psql" -X -h "$D" -p "$port" -U postgres -v ON_ERROR_STOP=1 -P pager=off)
pj_as_postgres "${psql[@]}" -q -d postgres -c 'CREATE DATABASE projection_demo'

pj_say "running test/demo.sql"
echo
pj_as_postgres "${psql[@]}" -d projection_demo -f "$D/tree/test/demo.sql"
echo
