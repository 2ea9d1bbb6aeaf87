# test/servers.sh -- the servers of the test matrix; sourced by
# test/run-tests.sh after test/lib.sh, never run.
# shellcheck shell=bash
#
# Each server is a name of SERVERS (test/run-tests.sh) with three functions:
#
#   pj_server_packages NAME    the host packages it needs (Debian bookworm)
#   pj_server_cache NAME       builds its cache entry unless complete
#   pj_server_prepare NAME DIR the same, then makes the run's private copy
#                              under DIR
#   pj_server_run NAME DIR TOP runs test/suite.sh against that copy
#
#   pg15          Debian's PostgreSQL 15, copied into DIR (never installed into)
#   pg15-cassert  PostgreSQL 15 from Debian's source package, built with
#                 --enable-cassert --enable-debug (cached), copied into DIR
#   pg17          Debian 13 (trixie)'s PostgreSQL 17 in a chroot (cached)
#   pg18          Debian testing's PostgreSQL 18 in a chroot (cached)
#
# The cache (PJ_CACHE, default /var/cache/projection-test) holds the
# assert-enabled build and the chroots.  Each entry is built under an flock, in
# a directory whose stamp file (.complete, written last) says what was built:
# an entry without a stamp, or with another stamp, is removed and built again.
# A run never writes into the cache: the assert-enabled tree is copied, and a
# chroot is mounted as the lower layer of an overlay whose upper layer is the
# run's, in a private mount namespace (unshare), so concurrent runs of
# different branches never see each other's extension and every mount (the
# overlay, /proc, /dev, the port-lock directory) is gone when the run ends,
# failed or not.

PJ_CACHE=${PJ_CACHE:-/var/cache/projection-test}

# Configure options of the assert-enabled build.  No readline (psql is only
# scripted here) and no ICU (15 builds without it by default); TAP tests need
# --enable-tap-tests, which installs PostgreSQL::Test::* under lib/pgxs.
PJ_CASSERT_CONFIGURE=(--enable-cassert --enable-debug --enable-tap-tests --without-readline --without-icu)

# What the chroots install: the server and its PGXS, the TAP modules' IPC::Run,
# a compiler (postgresql-server-dev-N brings make, gcc and clang for bitcode),
# and the clients that TAP tests run against the server, as test/lib.sh's
# PJ_PACKAGES does on the host: the exporter (055), Sphinx and the search
# indexer's Python drivers (057).  Changing the list changes the entries'
# stamp (PJ_CHROOT_STAMP), so the chroots are built again.
pj_chroot_packages() {
    echo "postgresql-$1 postgresql-server-dev-$1 libipc-run-perl build-essential" \
        "prometheus-postgres-exporter sphinxsearch python3-psycopg python3-pymysql"
}

pj_server_packages() {
    case "$1" in
        pg15) ;;
        # build-essential (in PJ_PACKAGES) brings dpkg-dev, bzip2 and xz-utils
        # for the source package
        pg15-cassert) echo "bison flex zlib1g-dev" ;;
        pg17 | pg18) echo "debootstrap" ;;
        *) pj_die "unknown server \"$1\" in SERVERS (valid: pg15 pg15-cassert pg17 pg18)" ;;
    esac
}

# pj_debian_mirror [SUFFIX]: the URI of the host's Debian archive for the
# release's main suite (SUFFIX "-security" for the security archive), from
# apt's own list of configured sources, so one-line and deb822 files both work.
pj_debian_mirror() {
    local codename suite
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    suite=$codename${1:-}
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' |
        awk -v s="$suite" '$2 == s && $3 == "deb" { sub("/$", "", $1); print $1; exit }'
}

# pj_cache_lock NAME: takes an exclusive lock on the cache entry NAME on file
# descriptor 9, waiting for a concurrent build by another run to finish.
pj_cache_lock() {
    mkdir -p "$PJ_CACHE"
    exec 9>"$PJ_CACHE/$1.lock"
    if ! flock -n 9; then
        pj_say "waiting for $PJ_CACHE/$1, being built (by another run, or this run's prefetch)"
        flock 9
    fi
}

pj_cache_unlock() {
    flock -u 9
    exec 9>&-
}

# pj_cache_valid DIR STAMP: true if DIR holds a complete build of STAMP
pj_cache_valid() {
    [ -f "$1/.complete" ] && [ "$(cat "$1/.complete")" = "$2" ]
}

# --- pg15-cassert -----------------------------------------------------------

# pj_build_cassert PREFIX STAMP: downloads postgresql-15's source package from
# the main suite of the host's release (the point release: the security
# archive's newest tarball may be missing from the mirror), and builds and
# installs the server, its client programs, pg_regress, pg_isolation_regress
# and the TAP modules into PREFIX.  Contrib is not built.  apt runs with a
# private sources list and lists directory: the host's apt configuration is
# not changed.
pj_build_cassert() {
    local prefix=$1 stamp=$2 mirror b src pgxs
    mirror=$(pj_debian_mirror)
    [ -n "$mirror" ] || pj_die "no Debian archive for $(. /etc/os-release && echo "$VERSION_CODENAME") in apt's sources"
    b=$PJ_CACHE/build-pg15-cassert
    rm -rf "$b" "$prefix"
    mkdir -p "$b/lists/partial" "$b/src"
    echo "deb-src $mirror $(. /etc/os-release && echo "$VERSION_CODENAME") main" >"$b/sources.list"
    local apt=(apt-get -q -o Dir::Etc::SourceList="$b/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$b/lists" -o APT::Sandbox::User=root)
    pj_say "downloading postgresql-15's source package ($mirror)"
    "${apt[@]}" update >"$b/apt.log" 2>&1 || { cat "$b/apt.log"; pj_die "apt-get update (deb-src) failed"; }
    (cd "$b/src" && "${apt[@]}" source --download-only postgresql-15) >>"$b/apt.log" 2>&1 ||
        { cat "$b/apt.log"; pj_die "apt-get source postgresql-15 failed"; }
    tar -C "$b" -xf "$b"/src/postgresql-15_*.orig.tar.*
    src=$(echo "$b"/postgresql-15.*/)
    pj_say "building PostgreSQL $(basename "$src") with ${PJ_CASSERT_CONFIGURE[*]} into $prefix (several minutes)"
    (
        cd "$src"
        ./configure --prefix="$prefix" "${PJ_CASSERT_CONFIGURE[@]}" >"$b/configure.log" 2>&1 ||
            { tail -n 40 "$b/configure.log"; exit 1; }
        # src/: server, client programs, pg_regress, pg_isolation_regress
        # and src/test/perl (all in src/Makefile's SUBDIRS)
        make -s -j"$(nproc 2>/dev/null || echo 2)" -C src >"$b/make.log" 2>&1 ||
            { tail -n 60 "$b/make.log"; exit 1; }
        make -s -C src install >"$b/install.log" 2>&1 ||
            { tail -n 40 "$b/install.log"; exit 1; }
        make -s -C config install >>"$b/install.log" 2>&1 ||
            { tail -n 40 "$b/install.log"; exit 1; }
        # auto_explain: TAP 101 reads the batch statements' plans from the log
        make -s -C contrib/auto_explain install >>"$b/install.log" 2>&1 ||
            { tail -n 40 "$b/install.log"; exit 1; }
    ) || pj_die "building the assert-enabled PostgreSQL 15 failed (logs in $b)"
    # pgxs.mk is in PGXS/src/makefiles, the test programs in PGXS/src/test
    pgxs=$(dirname "$(dirname "$("$prefix/bin/pg_config" --pgxs)")")
    [ -x "$pgxs/test/isolation/pg_isolation_regress" ] &&
        [ -x "$pgxs/test/regress/pg_regress" ] &&
        [ -f "$pgxs/test/perl/PostgreSQL/Test/Cluster.pm" ] &&
        [ -f "$("$prefix/bin/pg_config" --pkglibdir)/auto_explain.so" ] &&
        "$prefix/bin/pg_config" --configure | grep -q -e '--enable-cassert' ||
        pj_die "the assert-enabled build in $prefix is incomplete (logs in $b)"
    echo "$stamp" >"$prefix/.complete"
    rm -rf "$b"
}

# --- chroots ------------------------------------------------------------------

# pj_chroot_spec NAME: "SUITE VERSION" of a chroot server
pj_chroot_spec() {
    case "$1" in
        pg17) echo "trixie 17" ;;
        pg18) echo "testing 18" ;;
    esac
}

# pj_build_chroot DIR SUITE VERSION STAMP: a minimal Debian SUITE in DIR with
# PostgreSQL VERSION and what the suites need.  The "postgres" user gets the
# host's uid and gid, so the TAP port locks (shared with the host's runs) and
# files the host reads have one owner.  No cluster is created and no service
# started.  testing's Release file may be past its Valid-Until on a snapshot
# mirror, hence Check-Valid-Until=false there.
#
# It builds into DIR.new and then puts the new tree in DIR's place
# (pj_chroot_replace), because runs that started before may still have the
# old DIR mounted as their overlay's lower layer.
pj_build_chroot() {
    local final=$1 suite=$2 version=$3 stamp=$4 mirror log dir
    mirror=$(pj_debian_mirror)
    [ -n "$mirror" ] || pj_die "no Debian archive in apt's sources"
    log=$PJ_CACHE/build-$(basename "$final").log
    dir=$final.new
    rm -rf "$dir"
    pj_say "debootstrap $suite into $dir ($mirror)"
    debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$log" 2>&1 ||
        { tail -n 40 "$log"; pj_die "debootstrap $suite failed (log: $log)"; }
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    mkdir -p "$dir/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"
    cat >"$dir/etc/apt/apt.conf.d/90projection-test" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
EOF
    # -o: the ids may be taken in the chroot (by "users", say); the name is what counts there
    chroot "$dir" groupadd -o -g "$(id -g postgres)" postgres
    chroot "$dir" useradd -o -r -u "$(id -u postgres)" -g postgres -d /var/lib/postgresql -s /bin/bash postgres
    pj_say "installing $(pj_chroot_packages "$version") in $dir"
    unshare --mount --propagation private bash -c '
        mount -t proc proc "$0/proc" &&
        chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            sh -c "apt-get -q update && apt-get -q install -y $1 && apt-get clean"' \
        "$dir" "$(pj_chroot_packages "$version")" >>"$log" 2>&1 ||
        { tail -n 40 "$log"; pj_die "installing PostgreSQL $version in the $suite chroot failed (log: $log)"; }
    [ -x "$dir/usr/lib/postgresql/$version/bin/pg_config" ] || pj_die "no PostgreSQL $version in the $suite chroot (log: $log)"
    echo "$stamp" >"$dir/.complete"
    pj_chroot_replace "$dir" "$final"
}

# pj_chroot_replace NEW DIR: puts the chroot NEW in DIR's place.  An old DIR
# that a run still has mounted (its overlay's lowerdir, in some process's
# mountinfo) is not removed under that run: it is renamed DIR.old.* and
# removed by a later build, once a day has passed (longer than any run).
pj_chroot_replace() {
    local new=$1 dir=$2 old
    for old in "$dir".old.*; do
        [ -f "$old/.retired" ] && [ -n "$(find "$old/.retired" -mmin +1440)" ] && rm -rf "$old"
    done
    if [ -d "$dir" ]; then
        if grep -qsF "lowerdir=$dir," /proc/[0-9]*/mountinfo; then
            old=$dir.old.$(date +%Y%m%d%H%M%S).$$
            mv "$dir" "$old"
            touch "$old/.retired"
        else
            rm -rf "$dir"
        fi
    fi
    mv "$new" "$dir"
}

# --- the interface ------------------------------------------------------------

# pj_server_cache NAME: builds NAME's cache entry unless it is complete (under
# the entry's lock, so a concurrent run, or this run's prefetch, builds it
# once and the others wait for it).  Nothing to build for pg15.
pj_server_cache() {
    local name=$1 stamp entry spec
    case "$name" in
        pg15-cassert)
            entry=$PJ_CACHE/pg15-cassert
            stamp="pg15-cassert 2 auto_explain ${PJ_CASSERT_CONFIGURE[*]}"
            pj_cache_lock pg15-cassert
            pj_cache_valid "$entry" "$stamp" || pj_build_cassert "$entry" "$stamp"
            pj_cache_unlock
            ;;
        pg17 | pg18)
            spec=$(pj_chroot_spec "$name")
            entry=$PJ_CACHE/chroot-$name
            stamp="chroot ${spec% *} ${spec#* } 2 postgres=$(id -u postgres):$(id -g postgres) $(pj_chroot_packages "${spec#* }")"
            pj_cache_lock "chroot-$name"
            pj_cache_valid "$entry" "$stamp" || pj_build_chroot "$entry" "${spec% *}" "${spec#* }" "$stamp"
            pj_cache_unlock
            ;;
    esac
    return 0
}

# pj_server_prepare NAME DIR: builds or validates NAME's cache entry and makes
# this run's private copy under DIR (which must exist).  Sets
# PJ_SERVER_PG_CONFIG, the pg_config test/suite.sh is to use (for a chroot, its
# path inside).
pj_server_prepare() {
    local name=$1 dir=$2 spec
    pj_server_cache "$name"
    case "$name" in
        pg15)
            PJ_SERVER_PG_CONFIG=$(pj_private_tree "$dir/pg")
            ;;
        pg15-cassert)
            # under the lock: a concurrent run may be rebuilding the entry
            pj_cache_lock pg15-cassert
            mkdir -p "$dir/pg"
            cp -a "$PJ_CACHE/pg15-cassert/." "$dir/pg/"
            pj_cache_unlock
            PJ_SERVER_PG_CONFIG=$dir/pg/bin/pg_config
            ;;
        pg17 | pg18)
            spec=$(pj_chroot_spec "$name")
            mkdir -p "$dir/upper" "$dir/work" "$dir/root"
            PJ_SERVER_PG_CONFIG=/usr/lib/postgresql/${spec#* }/bin/pg_config
            ;;
    esac
    return 0
}

# pj_server_run NAME DIR TOP: runs test/suite.sh of the source tree TOP against
# NAME's copy under DIR; its output goes to stdout, its status is returned.
# The suite's scratch copy is DIR/suite (for chroots: DIR/upper/tmp/suite).
pj_server_run() {
    local name=$1 dir=$2 top=$3 lang xrole=
    local env=(PG_TEST_PORT_DIR="$PG_TEST_PORT_DIR" PJ_SERVER_NAME="$name")
    # TAP 024 dumps a database on Debian's 15 and restores it on 17 and 18
    # (run-tests.sh makes PJ_XVERSION_DIR; pg15 runs first)
    case "$name" in
        pg15) xrole=source ;;
        pg17 | pg18) xrole=target ;;
    esac
    [ -n "${PJ_XVERSION_DIR:-}" ] && [ -n "$xrole" ] && env+=(PJ_XVERSION_ROLE="$xrole")
    local v
    for v in PG_CFLAGS SUITES PROVE_TESTS PROVE_FLAGS LOG_LINES KEEP_TMP PG_TEST_EXTRA PG_TEST_TIMEOUT_DEFAULT; do
        [ -n "${!v+set}" ] && env+=("$v=${!v}")
    done
    case "$name" in
        pg15 | pg15-cassert)
            env PG_CONFIG="$PJ_SERVER_PG_CONFIG" PJ_SUITE_DIR="$dir/suite" "${env[@]}" \
                ${PJ_XVERSION_DIR:+PJ_XVERSION_DIR="$PJ_XVERSION_DIR"} "$top/test/suite.sh"
            ;;
        pg17 | pg18)
            # inside, only C and C.UTF-8 exist (no locales package)
            case "${LC_ALL:-${LANG:-C}}" in C | POSIX | C.UTF-8 | C.utf8) lang=${LC_ALL:-${LANG:-C}} ;; *) lang=C.UTF-8 ;; esac
            # the overlay's upper layer gets the source tree as /tmp/src
            mkdir -p "$dir/upper/tmp/src"
            chmod 1777 "$dir/upper/tmp"
            tar -C "$top" --exclude=./.git -cf - . | tar -C "$dir/upper/tmp/src" -xf -
            unshare --mount --propagation private bash -c '
                set -e
                base=$1 dir=$2 ports=$3 xdir=$4; shift 4
                mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
                mount -t proc proc "$dir/root/proc"
                mount --rbind /dev "$dir/root/dev"
                mkdir -p "$dir/root$ports"
                mount --bind "$ports" "$dir/root$ports"
                if [ -n "$xdir" ]; then
                    mkdir -p "$dir/root/tmp/xversion"
                    mount --bind "$xdir" "$dir/root/tmp/xversion"
                    set -- PJ_XVERSION_DIR=/tmp/xversion "$@"
                fi
                exec chroot "$dir/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' \
                _ "$PJ_CACHE/chroot-$name" "$dir" "$PG_TEST_PORT_DIR" "${PJ_XVERSION_DIR:-}" \
                LANG="$lang" PG_CONFIG="$PJ_SERVER_PG_CONFIG" PJ_SUITE_DIR=/tmp/suite \
                PJ_ALLOW_SYSTEM_INSTALL=1 "${env[@]}" /tmp/src/test/suite.sh
            ;;
    esac
}
