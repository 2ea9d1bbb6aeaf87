#!/usr/bin/env bash
# test/bench/run.sh: the projection benchmarks, in one command.
#
#   test/bench/run.sh [--quick] [--events N] [--seed S] [--out DIR] [--keep]
#                     [other bench.py options, see bench.py --help]
#
# Run as root after `make install`.  It starts a throwaway PostgreSQL 15
# cluster (as user postgres, in a temporary directory, on a free port from
# 55460 up, Unix socket only) with shared_preload_libraries = 'projection'
# and track_commit_timestamp = on, runs bench.py against it, writes
# results.md, results.csv and bench.png to the out directory (default
# test/bench/out/), prints the table, stops the cluster and removes it
# (--keep leaves it, with its log, for a post-mortem).
#
# Exit status: 0 when every figure was measured and every read model matched
# the set-based oracle; 1 otherwise (the reasons are printed and end up in
# results.md).  --quick (small sizes, fewer variants, under a minute) asserts
# correctness only, never timing: it is what CI may run.
#
# Environment: PGBIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PYTHON=/usr/bin/python3   # Debian's, where python3-asyncpg is installed

die() { echo "run.sh: $*" >&2; exit 2; }

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

out="$here/out"
keep=0
noext=0
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
	--out=*) out=${1#--out=}; shift ;;
	--keep) keep=1; shift ;;
	--no-extension) noext=1; args+=("$1"); shift ;;
	-h | --help) usage; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

[ -x "$PGBIN/pg_config" ] || die "no PostgreSQL 15 server binaries in $PGBIN (set PGBIN)"
sharedir=$("$PGBIN/pg_config" --sharedir)
pkglibdir=$("$PGBIN/pg_config" --pkglibdir)
if [ "$noext" = 0 ] && { [ ! -f "$sharedir/extension/projection.control" ] || [ ! -f "$pkglibdir/projection.so" ]; }; then
	die "the projection extension is not installed ($sharedir/extension/projection.control, $pkglibdir/projection.so): run \`make && make install\` first"
fi

if [ "$(id -u)" -eq 0 ]; then
	# the Debian packages the benchmark needs (PyPI is not used)
	missing=()
	for pkg in python3-asyncpg gnuplot-nox postgresql-contrib; do
		dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "run.sh: installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
			{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; }
	fi
	id postgres >/dev/null 2>&1 || die "there is no postgres user to run the server as"
	as_pg() { runuser -u postgres -- "$@"; }
else
	# not root: run everything as ourselves (the server refuses only root)
	as_pg() { "$@"; }
fi
"$PYTHON" -c 'import asyncpg' 2>/dev/null || die "$PYTHON cannot import asyncpg (apt-get install python3-asyncpg)"
command -v gnuplot >/dev/null || die "gnuplot is missing (apt-get install gnuplot-nox)"
[ -x "$PGBIN/pgbench" ] || die "pgbench is missing from $PGBIN"

port_free() {
	local p=$1
	[ -e "/tmp/.s.PGSQL.$p" ] && return 1
	[ -e "/var/run/postgresql/.s.PGSQL.$p" ] && return 1
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 1
	return 0
}
port=""
for p in $(seq 55460 55499); do
	if port_free "$p"; then port=$p; break; fi
done
[ -n "$port" ] || die "no free port in 55460-55499"

tmp=$(mktemp -d /tmp/projection-bench.XXXXXX)
chmod 755 "$tmp"
mkdir -p "$tmp/bench" "$tmp/out"
cp "$here"/*.py "$tmp/bench/"
# models.py reads the seed statements from test/demo.sql, next to bench/
cp "$here/../demo.sql" "$tmp/demo.sql"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$tmp"

cleanup() {
	local rc=$?
	if [ -f "$tmp/data/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -t 60 stop >/dev/null 2>&1 ||
			as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	[ -f "$tmp/server.log" ] && cp "$tmp/server.log" "$out/server.log" 2>/dev/null || true
	if [ "$keep" = 1 ]; then
		echo "run.sh: kept the cluster in $tmp (start: $PGBIN/pg_ctl -D $tmp/data start)"
	else
		rm -rf "$tmp"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg "$PGBIN/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1 ||
	{ cat "$tmp/initdb.log" >&2; die "initdb failed"; }
cat >>"$tmp/data/postgresql.conf" <<EOF

# projection benchmark (test/bench/run.sh)
port = $port
listen_addresses = ''
unix_socket_directories = '$tmp'
$([ "$noext" = 0 ] && echo "shared_preload_libraries = 'projection'")
track_commit_timestamp = on		# latency = commit time of the read-model write - commit time of the append
max_worker_processes = 32
max_connections = 100
shared_buffers = 512MB
max_wal_size = 8GB			# no checkpoint in the middle of a measurement
checkpoint_timeout = 30min
log_min_messages = warning
log_line_prefix = '%m [%p] %q%a '
EOF
as_pg "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 start >/dev/null ||
	{ cat "$tmp/server.log" >&2; die "the server did not start"; }

rc=0
as_pg env PGBIN="$PGBIN" "$PYTHON" "$tmp/bench/bench.py" --host "$tmp" --port "$port" \
	--out "$tmp/out" "${args[@]}" || rc=$?
for f in results.md results.csv bench.png; do
	[ -f "$tmp/out/$f" ] && cp "$tmp/out/$f" "$out/$f"
done
rm -rf "$out/work"
[ -d "$tmp/out/work" ] && cp -r "$tmp/out/work" "$out/work"
if [ $rc -ne 0 ]; then
	echo "run.sh: FAILED (exit $rc); server log: $out/server.log" >&2
fi
exit $rc
