#!/usr/bin/env bash
# test/suite.sh -- the whole suite against ONE server; test/run-tests.sh (the
# project's test command) runs it once per server of the test matrix, on the
# host or inside a chroot.
#
# Run it as root, with the packages of test/lib.sh installed and PG_CONFIG
# naming a private server tree (test/servers.sh makes them):
#
#     PG_CONFIG=DIR/usr/lib/postgresql/15/bin/pg_config test/suite.sh
#
# It builds the extension with warnings as errors in a scratch copy of the
# tree, installs it into PG_CONFIG's tree, and runs the three suites of "make
# installcheck" as the "postgres" user: pg_regress (REGRESS), isolation
# (ISOLATION) and TAP (TAP_TESTS), each against its own throwaway preloaded
# server.  The suites run one by one, so a failing suite does not hide the
# others.  On failure it prints the diffs and server logs.  The last line is
# "N passed, N failed", counting pg_regress tests, isolation tests and TAP
# test files; the exit status is non-zero if anything failed.
#
# Environment:
#   PG_CONFIG       pg_config of the target server (required; never the system's)
#   PG_CFLAGS       compiler flags (default: -Wall -Wextra -Werror -Wno-unused-parameter)
#   PJ_SUITE_DIR    the scratch copy to make (default: a new /tmp/projection-test.XXXXXX)
#   SUITES          which suites to run (default: "regress isolation tap")
#   PROVE_TESTS     TAP test files to run, relative to the repository root
#   PROVE_FLAGS     replaces the Makefile's prove flags (keep "-I test/perl");
#                   default: the Makefile's and --timer, so that every log
#                   shows what each TAP file took
#   LOG_LINES       lines printed from the end of each server log (default 300)
#   KEEP_TMP=1      keep the scratch copy even when everything passed

set -euo pipefail

# The whole script is one brace group, read before any of it runs: editing or
# checking out the file during a run cannot change what the run does.
{

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/lib.sh
. "$top/test/lib.sh"

cflags=${PG_CFLAGS-"-Wall -Wextra -Werror -Wno-unused-parameter"}
suites=${SUITES:-regress isolation tap}
log_lines=${LOG_LINES:-300}

passed=0
failed=0
failures=()      # "suite/test" of every failed test
failed_suites=() # suites whose logs get printed
failed_tap=()    # TAP files that failed, without ".pl" ("*": all of them)
summary_done=0
W=
keep=${KEEP_TMP:-0}

# On any exit: if the tests did not get as far as the summary (packages, build
# or install failed), still end with the summary line; then remove the scratch
# copy unless it is to be kept.
finish() {
    local rc=$?

    if [ "$summary_done" = 0 ]; then
        echo
        echo "stopped before the tests finished (exit status $rc): see the messages above"
        [ -n "$W" ] && [ -d "$W" ] && echo "test tree kept in $W" && keep=1
        echo "$passed passed, $((failed + 1)) failed"
        [ "$rc" -ne 0 ] || rc=1
    fi
    if [ "$keep" != 1 ] && [ -n "$W" ]; then
        rm -rf "$W"
    fi
    exit "$rc"
}
trap finish EXIT

pj_require_root
[ -n "${PG_CONFIG:-}" ] || pj_die "set PG_CONFIG to the pg_config of a private server tree (test/run-tests.sh does)"
pj_check_private "$PG_CONFIG"

if [ -n "${PJ_SUITE_DIR:-}" ]; then
    W=$PJ_SUITE_DIR
    mkdir "$W"
else
    # in /tmp, whatever TMPDIR says: the "postgres" user must reach it
    W=$(mktemp -d /tmp/projection-test.XXXXXX)
fi
pj_stage_tree "$top" "$W"
build_start=$SECONDS
pj_build_install "$W" "$cflags"
pj_say "build and install took $((SECONDS - build_start)) s"
chown -R postgres:postgres "$W"

# make_var NAME: the value of a variable of the Makefile in $W
make_var() {
    # shellcheck disable=SC2016 # $($*) is for make, not for the shell
    pj_as_postgres make -s --no-print-directory -C "$W" PG_CONFIG="$PG_CONFIG" \
        --eval='pj-print-var-%: ; @echo $($*)' "pj-print-var-$1"
}

# Extra make arguments that the caller's environment asks for.
extra_make_args=()
[ -n "${PROVE_TESTS:-}" ] && extra_make_args+=("PROVE_TESTS=$PROVE_TESTS")
extra_make_args+=("PROVE_FLAGS=${PROVE_FLAGS:-$(make_var PROVE_FLAGS) --timer}")

# run_suite SUITE LOGFILE MAKE-OVERRIDES...: runs "make installcheck" with the
# other two suites switched off; returns make's exit status.
run_suite() {
    local suite=$1 log=$2 rc
    shift 2

    local start=$SECONDS
    pj_say "suite: $suite"
    set +e
    pj_as_postgres make -C "$W" PG_CONFIG="$PG_CONFIG" "${extra_make_args[@]}" "$@" installcheck 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    pj_say "suite $suite took $((SECONDS - start)) s"
    return "$rc"
}

# count_pg_regress SUITE LOGFILE RC TESTS...: counts a pg_regress or
# pg_isolation_regress run.  A test passes only if its line says "ok"; a test
# without a line (the run stopped early) is a failure.
count_pg_regress() {
    local suite=$1 log=$2 rc=$3 t status n_failed=0
    shift 3

    for t in "$@"; do
        # PostgreSQL 15: "test name   ... ok   12 ms" (or "     name ..." in a
        # parallel group); PostgreSQL 16+: "ok 1   - name   12 ms"
        status=$(sed -n -E \
            -e "s/^(test +| +)?${t} +\.\.\. +([^ ].*)$/\2/p" \
            -e "s/^(ok|not ok) +[0-9]+ +[-+] +${t}( .*)?$/\1/p" "$log" | tail -n 1)
        case "$status" in
            ok|ok\ *|"failed (ignored)"*)
                passed=$((passed + 1)) ;;
            *)
                failed=$((failed + 1)); n_failed=$((n_failed + 1))
                failures+=("$suite/$t") ;;
        esac
    done
    if [ "$rc" -ne 0 ] && [ "$n_failed" -eq 0 ]; then
        failed=$((failed + 1)); n_failed=1
        failures+=("$suite (make exited with status $rc)")
    fi
    [ "$n_failed" -eq 0 ] || failed_suites+=("$suite")
}

# count_tap LOGFILE RC FILES...: counts a prove run by test file.  A file
# fails if prove's "Test Summary Report" lists it; if prove did not finish
# (no "Result:" line), a file passes only if prove printed "ok" for it
# (after the time of day that --timer puts first).
count_tap() {
    local log=$1 rc=$2 f re finished=0 n_failed=0
    shift 2

    grep -q '^Result: ' "$log" && finished=1
    for f in "$@"; do
        re=$(printf '%s' "$f" | sed 's/[.[\*^$]/\\&/g')
        if grep -q "^${re} *(Wstat: " "$log"; then
            :
        elif [ "$finished" = 1 ] || grep -Eq "^(\[[0-9:]+\] )?${re} \.+ (ok|skipped)" "$log"; then
            passed=$((passed + 1))
            continue
        fi
        failed=$((failed + 1)); n_failed=$((n_failed + 1))
        failures+=("tap/${f##*/}")
        f=${f##*/}
        failed_tap+=("${f%.pl}")
    done
    if [ "$rc" -ne 0 ] && [ "$n_failed" -eq 0 ]; then
        failed=$((failed + 1)); n_failed=1
        failures+=("tap (make exited with status $rc)")
        failed_tap+=("*")
    fi
    [ "$n_failed" -eq 0 ] || failed_suites+=("tap")
}

for suite in $suites; do
    log="$W/run-$suite.log"
    case "$suite" in
        regress)
            value=$(make_var REGRESS)
            read -r -a tests <<<"$value"
            if [ ${#tests[@]} -eq 0 ]; then pj_say "no REGRESS tests"; continue; fi
            rc=0; run_suite regress "$log" ISOLATION= TAP_TESTS= || rc=$?
            count_pg_regress regress "$log" "$rc" "${tests[@]}"
            ;;
        isolation)
            value=$(make_var ISOLATION)
            read -r -a tests <<<"$value"
            if [ ${#tests[@]} -eq 0 ]; then pj_say "no ISOLATION tests"; continue; fi
            rc=0; run_suite isolation "$log" REGRESS= TAP_TESTS= || rc=$?
            count_pg_regress isolation "$log" "$rc" "${tests[@]}"
            ;;
        tap)
            value=$(make_var TAP_TESTS)
            if [ -z "$value" ]; then pj_say "no TAP_TESTS"; continue; fi
            value=$(make_var PROVE_TESTS)
            pattern=${PROVE_TESTS:-$value}
            pattern=${pattern:-t/*.pl}
            # expand the Makefile's glob where prove will run, like make does
            read -r -a files <<<"$(cd "$W" && eval "echo $pattern")"
            if [ ${#files[@]} -eq 0 ] || [ ! -e "$W/${files[0]}" ]; then
                failed=$((failed + 1))
                failures+=("tap (no file matches \"$pattern\")")
                continue
            fi
            rc=0; run_suite tap "$log" REGRESS= ISOLATION= || rc=$?
            count_tap "$log" "$rc" "${files[@]}"
            ;;
        *)
            pj_die "unknown suite \"$suite\" in SUITES (valid: regress isolation tap)"
            ;;
    esac
done

# show_file FILE [LINES]: prints FILE, or its last LINES lines, under a heading
show_file() {
    [ -s "$1" ] || return 0
    if [ -n "${2:-}" ] && [ "$(wc -l <"$1")" -gt "$2" ]; then
        printf '\n===== %s (last %s lines) =====\n' "${1#"$W"/}" "$2"
        tail -n "$2" "$1"
    else
        printf '\n===== %s =====\n' "${1#"$W"/}"
        cat "$1"
    fi
}

# show_server_logs DIR: the temporary instance's server log from pg_regress's
# log directory DIR (initdb's log if the server never started)
show_server_logs() {
    if [ -s "$1/postmaster.log" ]; then
        show_file "$1/postmaster.log" "$log_lines"
    else
        show_file "$1/initdb.log" "$log_lines"
    fi
}

for suite in "${failed_suites[@]}"; do
    case "$suite" in
        regress)
            show_file "$W/regression.diffs"
            show_server_logs "$W/log"
            ;;
        isolation)
            show_file "$W/output_iso/regression.diffs"
            show_server_logs "$W/output_iso/log"
            ;;
        tap)
            # each test file's log, then its nodes' server logs; $t is
            # unquoted on purpose: "*" stands for every file
            # shellcheck disable=SC2231
            for t in "${failed_tap[@]}"; do
                for f in "$W"/tmp_check/log/regress_log_$t; do show_file "$f"; done
                for f in "$W"/tmp_check/log/${t}_*.log; do show_file "$f" "$log_lines"; done
            done
            ;;
    esac
done

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
    keep=1
fi
[ "$keep" = 1 ] && echo "test tree kept in $W"
summary_done=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
exit
}
