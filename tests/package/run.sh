#!/usr/bin/env bash
# The release artifacts, as a user gets them:
#   1. META.json passes bin/check-meta, and copies that break the spec or disagree with
#      Cargo.toml's version fail it (so both checks are really made, not skipped);
#   2. bin/package builds the Debian package, lintian-clean apart from justified overrides;
#   3. `dpkg -i` installs it into this machine's PostgreSQL 15; on a throwaway cluster that
#      preloads courier, a database creates the extension and runs a message through
#      create_queue, enqueue, lease and ack, and a second database creates the frozen 0.1.0, leases
#      a message with it, runs ALTER EXTENSION courier UPDATE and acks the old receipt;
#   4. `dpkg -r` removes it: dpkg knows the package no more and no courier file is left in
#      PostgreSQL's directories or under /usr/share.
#
# Steps 3-4 change the system PostgreSQL, which other work on this machine shares: they hold
# /tmp/courier-system-pg.lock (COURIER_SYSTEM_PG_LOCK) throughout, so do not run this script
# under that lock yourself. Whatever courier files were installed before (bin/test's bin/install
# put them there) are moved aside first, so that step 4 can check that dpkg removed everything,
# and put back afterwards with install_staged, on success or failure: the machine is left as it
# was found.
#
# Usage: tests/package/run.sh WORK_DIR [PORT]     (port default 54336)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=$(realpath -m "${1:?usage: tests/package/run.sh WORK_DIR [PORT]}")
PORT="${2:-54336}"
LOCK="${COURIER_SYSTEM_PG_LOCK:-/tmp/courier-system-pg.lock}"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGE=postgresql-15-courier
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh
# shellcheck source=bin/lib/stage.sh
source bin/lib/stage.sh

fail() { echo "package test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "dpkg -i and -r need root"
psql_() { psql -X -v ON_ERROR_STOP=1 -qAt "$@"; }
mkdir -p "$WORK"
chown postgres: "$WORK"

echo "META.json"
bin/check-meta
sed 's/"license": "postgresql"/"license": "PostgreSQL License"/' META.json >"$WORK/META.broken.json"
! cmp -s META.json "$WORK/META.broken.json" || fail "could not break META.json's license for the negative check"
if bin/check-meta "$WORK/META.broken.json" >"$WORK/check-meta.broken.log" 2>&1 \
   || ! grep -q "does not follow the PGXN meta spec" "$WORK/check-meta.broken.log"; then
    cat "$WORK/check-meta.broken.log" >&2
    fail "bin/check-meta accepted a META.json whose license is not one of the spec's"
fi
# A META.json that follows the spec but names another version than Cargo.toml's: a release that
# bumped one and forgot the other.
cargo_version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
sed "s/\"version\": \"$cargo_version\"/\"version\": \"0.0.1\"/" META.json >"$WORK/META.stale.json"
! cmp -s META.json "$WORK/META.stale.json" || fail "could not change META.json's version for the negative check"
if bin/check-meta "$WORK/META.stale.json" >"$WORK/check-meta.stale.log" 2>&1 \
   || ! grep -q "Cargo.toml's is" "$WORK/check-meta.stale.log"; then
    cat "$WORK/check-meta.stale.log" >&2
    fail "bin/check-meta did not reject a META.json whose version is not Cargo.toml's"
fi
echo "  a META.json with a license outside the spec, and one with another version than Cargo.toml's, fail bin/check-meta, as they must"

echo "bin/package"
deb=$(bin/package "$WORK/out")
[ -f "$deb" ] || fail "bin/package printed no package path"
version=$(dpkg-deb -f "$deb" Version)

libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
courier_files() { # every courier file that can be in PostgreSQL's directories or the docs
    find "$libdir" "$extdir" -maxdepth 1 -name 'courier*'
    # find fails on a path that does not exist, which is the answer hoped for here.
    find /usr/share/doc/$PACKAGE /usr/share/lintian/overrides/$PACKAGE -maxdepth 0 2>/dev/null || true
}

# From here to the end the system PostgreSQL is ours.
exec 9>"$LOCK"
flock 9
if dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "ok installed"; then
    fail "$PACKAGE is already installed on this machine; this test would remove it"
fi

saved="$WORK/saved"
installed=0
restore() {
    local status=$?
    cluster_destroy "$WORK/pg" || true
    if [ "$installed" = 1 ]; then dpkg -r "$PACKAGE" >/dev/null || status=1; fi
    # install_staged writes each file next to its place and renames it over, as bin/install does.
    if [ -d "$saved" ]; then
        install_staged "$saved" || status=1
        echo "  put back: the $(cd "$saved" && find . -type f | wc -l) courier files installed before"
    fi
    flock -u 9
    exit "$status"
}
trap restore EXIT
mkdir -p "$saved"
while read -r file; do
    [ -f "$file" ] || fail "unexpected $file (not a file) among courier's"
    install -D -m 644 "$file" "$saved$file"
    rm -f "$file"
done < <(courier_files)
echo "  moved aside: $(cd "$saved" && find . -type f | wc -l) courier files installed before"
[ -z "$(courier_files)" ] || fail "courier files left after moving them aside: $(courier_files)"

echo "dpkg -i $(basename "$deb")"
installed=1
dpkg -i "$deb" >/dev/null
dpkg -V "$PACKAGE" || fail "dpkg -V: installed files differ from the package's md5sums"
for file in "$libdir/courier.so" "$extdir/courier.control" "$extdir/courier--$version.sql" \
            $(cd sql && ls courier--*.sql | sed "s|^|$extdir/|"); do
    dpkg -S "$file" 2>/dev/null | grep -q "^$PACKAGE: " || fail "$file is not installed by $PACKAGE"
done

cluster_start "$WORK/pg" "$PORT" "shared_preload_libraries = 'courier'"
psql_ -d postgres -c "CREATE DATABASE smoke" -c "CREATE DATABASE upgrade" >/dev/null
out=$(psql_ -d smoke <<EOF
CREATE EXTENSION courier;
SELECT extversion = '$version' FROM pg_extension WHERE extname = 'courier';
SELECT courier.create_queue('smoke');
SELECT courier.enqueue('smoke', '{"n": 1}') IS NOT NULL;
CREATE TEMP TABLE leased AS SELECT receipt, payload FROM courier.lease('smoke');
SELECT count(*) = 1 AND bool_and(payload = '{"n": 1}') FROM leased;
SELECT courier.ack(receipt) FROM leased;
SELECT count(*) = 0 FROM courier.lease('smoke');
-- courier.version() arrives in 0.2.0: when the SQL has it, the library must be the package's.
SELECT CASE WHEN to_regprocedure('courier.version()') IS NULL THEN true
            ELSE (SELECT courier.version() = '$version') END;
EOF
) || fail "the smoke test failed in database smoke"
[ "$(echo "$out" | grep -cv '^t$')" = 0 ] && [ "$(echo "$out" | grep -c '^t$')" = 7 ] \
    || { echo "$out" >&2; fail "a smoke check did not hold in database smoke"; }
echo "  smoke: CREATE EXTENSION courier $version, create_queue, enqueue, lease, ack (7 checks hold)"

out=$(psql_ -d upgrade <<EOF
CREATE EXTENSION courier VERSION '0.1.0';
SELECT extversion = '0.1.0' FROM pg_extension WHERE extname = 'courier';
SELECT courier.create_queue('old');
SELECT courier.enqueue('old', '{"n": 2}') IS NOT NULL;
CREATE TABLE leased AS SELECT receipt FROM courier.lease('old', visibility_timeout => '10 minutes');
SELECT count(*) = 1 FROM leased;
ALTER EXTENSION courier UPDATE;
SELECT extversion = '$version' FROM pg_extension WHERE extname = 'courier';
SELECT courier.ack(receipt) FROM leased;
SELECT CASE WHEN to_regprocedure('courier.version()') IS NULL THEN true
            ELSE (SELECT courier.version() = '$version') END;
EOF
) || fail "the 0.1.0 upgrade failed in database upgrade"
[ "$(echo "$out" | grep -cv '^t$')" = 0 ] && [ "$(echo "$out" | grep -c '^t$')" = 7 ] \
    || { echo "$out" >&2; fail "an upgrade check did not hold in database upgrade"; }
echo "  upgrade: CREATE EXTENSION courier VERSION '0.1.0', a lease, ALTER EXTENSION courier UPDATE to $version, the old receipt acks (7 checks hold)"
cluster_destroy "$WORK/pg"

echo "dpkg -r $PACKAGE"
dpkg -r "$PACKAGE" >/dev/null
installed=0
! dpkg -s "$PACKAGE" >/dev/null 2>&1 || fail "dpkg -s still knows $PACKAGE after dpkg -r: $(dpkg -s "$PACKAGE" | grep Status)"
! dpkg -L "$PACKAGE" >/dev/null 2>&1 || fail "dpkg -L still lists files of $PACKAGE after dpkg -r"
left=$(courier_files)
[ -z "$left" ] || fail "dpkg -r left courier files behind: $left"
echo "  removed: dpkg knows $PACKAGE no more, no courier file is left"
echo "package test: $(basename "$deb") installs, works, upgrades from 0.1.0 and removes cleanly"
