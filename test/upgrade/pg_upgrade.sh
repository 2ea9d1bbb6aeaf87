#!/bin/bash
# test/upgrade/pg_upgrade.sh -- pg_upgrade of a PostgreSQL 15 cluster with the
# extension to PostgreSQL 17, by the steps of the README's "pg_upgrade from 15
# to 17" (run by hand, as root, from the repository; not part of the matrix).
#
#   PG_CONFIG=<private 15 tree>/usr/lib/postgresql/15/bin/pg_config test/upgrade/pg_upgrade.sh
#
# pg_upgrade needs both servers' binaries on one system.  The 17 server is the
# cached trixie chroot of test/servers.sh (build it with a pg17 run first); it
# runs as the lower layer of an overlay in a private mount namespace, so the
# cache is never written.  The 15 tree (installed into first) is bind-mounted
# at its own path; the few libraries its binaries need that trixie lacks
# (ICU 72, OpenLDAP 2.5; sonames trixie does not have, so the 17 binaries
# never load them) are copied from the host into the overlay.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
PJ_CACHE=${PJ_CACHE:-/var/cache/projection-test}
base=$PJ_CACHE/chroot-pg17
[ -x "$base/usr/lib/postgresql/17/bin/pg_upgrade" ] || { echo "no PostgreSQL 17 chroot in $base"; exit 1; }
: "${PG_CONFIG:?set PG_CONFIG to the pg_config of a private PostgreSQL 15 tree}"
old_bindir=$("$PG_CONFIG" --bindir)
tree=${old_bindir%/usr/lib/postgresql/15/bin}

make -C "$here" -s PG_CONFIG="$PG_CONFIG" install
dir=$(mktemp -d /tmp/pj-upgrade.XXXXXX)
mkdir -p "$dir/upper/opt/pg15libs" "$dir/upper/src" "$dir/upper/tmp" "$dir/work" "$dir/root"
for lib in $(ldd "$old_bindir/postgres" | awk '/icu|ldap|lber/ { print $3 }'); do
    cp -aL "$lib" "$dir/upper/opt/pg15libs/"
done
git -C "$here" ls-files -z | (cd "$here" && xargs -0 tar -c) | tar -x -C "$dir/upper/src"
cp "$here/test/upgrade/in-chroot.sh" "$dir/upper/tmp/"
cat >"$dir/upper/tmp/enter.sh" <<ENTER
cd /src && make -s PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config install >/tmp/build17.log 2>&1 ||
    { tail /tmp/build17.log; exit 1; }
chown -R postgres /tmp
su postgres -c "bash /tmp/in-chroot.sh $old_bindir"
ENTER
unshare --mount --propagation private bash -c '
    set -e
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/root"
    mount -t proc proc "$2/root/proc"
    mount --rbind /dev "$2/root/dev"
    mkdir -p "$2/root$3"
    mount --bind "$3" "$2/root$3"
    exec chroot "$2/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash /tmp/enter.sh
' _ "$base" "$dir" "$tree"
echo "pg_upgrade 15 -> 17: passed (scratch in $dir)"
