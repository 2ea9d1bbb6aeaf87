# test/lib.sh -- shared by test/run-tests.sh, test/suite.sh, test/servers.sh
# and test/demo.sh; sourced, never run.
# shellcheck shell=bash
#
# The scripts run as root on Debian bookworm: they install the packages the
# build and the tests need, build the extension in a scratch copy of the tree
# (so the checkout stays clean and root-owned), install it into a private copy
# of the server (never into the system's PostgreSQL, which other runs share),
# and hand that copy to the "postgres" user, because the server refuses to run
# as root.
#
# Environment:
#   PG_CONFIG   pg_config of the target server
#   PG_CFLAGS   extra compiler flags for the build (each script sets its default)

PJ_PACKAGES=(
    postgresql-15
    postgresql-server-dev-15
    libipc-run-perl
    build-essential
    python3-asyncpg
    gnuplot-nox
    prometheus-postgres-exporter
    sphinxsearch
    python3-pymysql
    python3-psycopg
)


pj_say() {
    printf '==> %s\n' "$*"
}

pj_die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

pj_require_root() {
    [ "$(id -u)" -eq 0 ] || pj_die "run me as root: I install packages and the extension, then run the server as \"postgres\""
    command -v dpkg-query >/dev/null 2>&1 || pj_die "this script expects Debian (bookworm) with apt"
}

# pj_install_packages [PACKAGE...]: installs PJ_PACKAGES and the PACKAGEs
# unless every one of them is already installed, so a rerun does not touch the
# network.  All of them are named even if only one is missing:
# postgresql-server-dev-15 must match the server's minor version, and apt
# upgrades postgresql-15 along with it.
pj_install_packages() {
    local p missing=() all=("${PJ_PACKAGES[@]}" "$@")

    for p in "${all[@]}"; do
        dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        pj_say "packages already installed: ${all[*]}"
        return 0
    fi
    pj_say "installing packages (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${all[@]}"
}

# pj_private_tree DEST: copies Debian's PostgreSQL 15 (server, share and
# include directories) into DEST/usr/... and prints the copy's pg_config.
# Debian's build is relocatable: the copy's pg_config reports DEST paths and its
# server finds its share and lib directories relative to its own binary, so
# "make install" with that pg_config writes into DEST only.
pj_private_tree() {
    local dest=$1 d

    for d in lib/postgresql/15 share/postgresql/15 include/postgresql; do
        mkdir -p "$dest/usr/${d%/*}"
        cp -a "/usr/$d" "$dest/usr/$d"
    done
    echo "$dest/usr/lib/postgresql/15/bin/pg_config"
}

# pj_check_private PG_CONFIG: refuses (exits) if PG_CONFIG's library
# directory is the system's (/usr/lib/postgresql/...), which concurrent runs
# and other users share.  PJ_ALLOW_SYSTEM_INSTALL=1 lifts the check where the
# system is private anyway (inside the chroots of test/servers.sh, each run
# on its own overlay).
pj_check_private() {
    local libdir

    [ "${PJ_ALLOW_SYSTEM_INSTALL:-0}" = 1 ] && return 0
    libdir=$("$1" --pkglibdir) || pj_die "\"$1 --pkglibdir\" failed"
    case "$libdir" in
        /usr/lib/postgresql/*)
            pj_die "$1 is the system's PostgreSQL ($libdir): give the pg_config of a private copy (see test/README.md)" ;;
    esac
}

# pj_stage_tree SRC DEST: copies the source tree SRC (without .git) into the
# new directory DEST and removes any build or test leftovers from it.
pj_stage_tree() {
    local src=$1 dest=$2

    mkdir -p "$dest"
    tar -C "$src" --exclude=./.git -cf - . | tar -C "$dest" -xf -
    make -s -C "$dest" PG_CONFIG="$PG_CONFIG" clean >/dev/null
}

# pj_build_install DIR CFLAGS: builds the extension in DIR with PG_CFLAGS=CFLAGS
# and installs it into PG_CONFIG's (private) server tree.
pj_build_install() {
    local dir=$1 cflags=$2

    pj_check_private "$PG_CONFIG"
    pj_say "building in $dir (PG_CFLAGS=\"$cflags\")"
    make -C "$dir" -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$PG_CONFIG" PG_CFLAGS="$cflags"
    pj_say "installing into $("$PG_CONFIG" --pkglibdir)"
    make -C "$dir" PG_CONFIG="$PG_CONFIG" PG_CFLAGS="$cflags" install
}

# pj_as_postgres CMD...: runs CMD as the "postgres" user.
pj_as_postgres() {
    runuser -u postgres -- "$@"
}

# pj_free_port FIRST: prints the first TCP port from FIRST on that nothing on
# this machine listens on.
pj_free_port() {
    local p

    for ((p = $1; p < $1 + 200; p++)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    pj_die "no free TCP port between $1 and $(($1 + 199))"
}
