#!/usr/bin/env bash
# test/run-tests.sh -- the project's test command (README "Quick start", CI).
#
# Run it from anywhere, as root, on Debian bookworm:
#
#     test/run-tests.sh
#
# It runs the whole suite (test/suite.sh: pg_regress, isolation and TAP, with
# the extension built with warnings as errors) against every supported server,
# one after the other:
#
#   pg15          Debian's PostgreSQL 15
#   pg15-cassert  PostgreSQL 15 built from Debian's source package with
#                 --enable-cassert --enable-debug
#   pg17          PostgreSQL 17 of Debian 13 (trixie), in a chroot
#   pg18          PostgreSQL 18 of Debian testing, in a chroot
#
# It installs the host packages it needs (skipped when they are all present),
# and builds what a server needs the first time (test/servers.sh: the
# assert-enabled build and the chroots are cached in /var/cache/projection-test
# and reused while complete).  The extension is never installed into the
# system's PostgreSQL: each server gets a private copy for this run, so runs of
# different checkouts can go on at the same time.  It prints one summary line
# per server and, as the last line, the total "N passed, N failed" (pg_regress
# tests, isolation tests and TAP files, over all servers); the exit status is
# non-zero if anything failed or a server could not be prepared.
#
# Environment:
#   SERVERS         the servers to test (default: "pg15 pg15-cassert pg17 pg18")
#   PG_CONFIG       with SERVERS unset: test only against this (private!) tree,
#                   as test/suite.sh does, instead of the matrix
#   PG_TEST_PORT_DIR  TAP's port-lock directory, shared by every run on the
#                   machine (default /tmp/pj-portlock)
#   PJ_CACHE        the cache directory (default /var/cache/projection-test)
#   KEEP_TMP=1      keep the scratch directory even when everything passed
#   and test/suite.sh's: PG_CFLAGS, SUITES, PROVE_TESTS, PROVE_FLAGS, LOG_LINES

set -euo pipefail

# The whole script is one brace group, read before any of it runs: editing or
# checking out the file during a run cannot change what the run does.
{

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$top/test/lib.sh"
# shellcheck source=test/servers.sh
. "$top/test/servers.sh"

pj_require_root

# TAP nodes take ports from one lock directory for the whole machine, or two
# concurrent runs can pick the same port (PostgreSQL::Test::Cluster)
export PG_TEST_PORT_DIR=${PG_TEST_PORT_DIR:-/tmp/pj-portlock}
mkdir -p "$PG_TEST_PORT_DIR"
chmod 1777 "$PG_TEST_PORT_DIR" 2>/dev/null || true

# One private tree named by the caller: no matrix.
if [ -z "${SERVERS+set}" ] && [ -n "${PG_CONFIG:-}" ]; then
    pj_install_packages
    exec "$top/test/suite.sh"
fi

servers=${SERVERS:-pg15 pg15-cassert pg17 pg18}
read -r -a servers <<<"$servers"
[ ${#servers[@]} -gt 0 ] || pj_die "SERVERS is empty"
extra=()
for s in "${servers[@]}"; do
    read -r -a p <<<"$(pj_server_packages "$s")"
    for q in "${p[@]}"; do
        [[ " ${extra[*]} " == *" $q "* ]] || extra+=("$q")
    done
done
pj_install_packages "${extra[@]}"

# in /tmp, whatever TMPDIR says: the "postgres" user must reach it
W=$(mktemp -d /tmp/projection-run.XXXXXX)
chmod 755 "$W"
# the hand-over directory of TAP 024 (a dump made on pg15, restored on 17/18)
export PJ_XVERSION_DIR=$W/xversion
mkdir -m 1777 "$PJ_XVERSION_DIR"
keep=${KEEP_TMP:-0}
passed=0
failed=0
summary=()
failures=()
done_all=0

prefetch=()

finish() {
    local rc=$? pid
    # prefetch jobs still building when the run stops early
    for pid in "${prefetch[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
    done
    if [ "$done_all" = 0 ]; then
        echo
        echo "stopped before every server was tested (exit status $rc)"
        echo "scratch directory kept in $W"
        echo "$passed passed, $((failed + 1)) failed"
        exit 1
    fi
    [ "$keep" = 1 ] || rm -rf "$W"
    exit "$rc"
}
trap finish EXIT

# Build the missing cache entries in the background while the first servers
# are tested: the suites mostly wait on their servers, so the builds take
# little from them, and a first run is shorter by most of a build.  One job
# for the assert-enabled build (CPU), one for the chroots (mostly downloads).
# Each server's own pj_server_prepare then waits on the entry's lock.  set -m
# gives each job a process group, so that finish can stop it whole.
prefetch_job() {
    local s
    for s in "$@"; do
        (pj_server_cache "$s") >"$W/prefetch-$s.log" 2>&1 ||
            echo "prefetch of $s failed: it is built again when its turn comes" >>"$W/prefetch-$s.log"
    done
}
jobs_cassert=() jobs_chroot=()
for s in "${servers[@]}"; do
    case "$s" in
        pg15-cassert) jobs_cassert+=("$s") ;;
        pg17 | pg18) jobs_chroot+=("$s") ;;
    esac
done
if [ ${#servers[@]} -gt 1 ]; then
    set -m
    for j in jobs_cassert jobs_chroot; do
        declare -n list=$j
        if [ ${#list[@]} -gt 0 ]; then
            prefetch_job "${list[@]}" </dev/null &
            prefetch+=($!)
        fi
        unset -n list
    done
    set +m
fi

# elapsed SECONDS: "4m07s"
elapsed() {
    printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}

for s in "${servers[@]}"; do
    d=$W/$s
    mkdir -p "$d"
    log=$W/$s.log
    start=$SECONDS
    printf '\n======== server %s ========\n' "$s"
    set +e
    (
        set -e
        pj_server_prepare "$s" "$d"
        pj_say "$s: prepared in $(elapsed $((SECONDS - start)))"
        pj_server_run "$s" "$d" "$top"
    ) 2>&1 | tee "$log"
    set -e
    t=$(elapsed $((SECONDS - start)))
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
    if [ -z "$line" ]; then
        # never got to the tests: the server could not be prepared
        p=0 f=1
        failures+=("$s: the server could not be prepared (see its output above)")
    else
        p=${line%% passed*}
        f=${line#*passed, }
        f=${f%% failed}
        while IFS= read -r l; do
            failures+=("$s: ${l#failed: }")
        done < <(grep '^failed: ' "$log" || true)
        if [ "$f" -gt 0 ] && ! grep -q '^failed: ' "$log"; then
            failures+=("$s: stopped before its tests finished (see its output above)")
        fi
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -eq 0 ] || keep=1
    summary+=("$(printf '%-14s %4d passed, %d failed   (%s)' "$s" "$p" "$f" "$t")")
done

printf '\n======== summary ========\n'
printf '%s\n' "${summary[@]}"
if [ ${#failures[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
[ "$keep" = 1 ] && echo "scratch directory kept in $W"
done_all=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
exit
}
