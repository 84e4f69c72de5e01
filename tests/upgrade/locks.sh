#!/usr/bin/env bash
# Which locks ALTER EXTENSION courier UPDATE takes on courier's relations, against the ones
# README documents (tests/upgrade/locks.allowed, per version updated from). Prints every lock the
# update holds (tests/upgrade/locks.sql, in a stable form) and fails when the update takes a lock
# on courier's relations that is not documented — an ACCESS EXCLUSIVE lock on courier.message
# stops every producer and consumer until the update commits — or no longer takes one that is
# (the documentation would be stale, and would let that lock come back unnoticed). A control
# then takes a lock the list does not document and requires the comparison to fail.
#
# Usage: tests/upgrade/locks.sh DB FROM_VERSION, with PGHOST/PGPORT/PGUSER set and DB at
# FROM_VERSION; the update is rolled back.
set -euo pipefail
cd "$(dirname "$0")/../.."
db="$1"
from="$2"
allowed=tests/upgrade/locks.allowed

held() { psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" "$@" -f tests/upgrade/locks.sql; }

# compare HELD: 0 if courier's relation locks in HELD are exactly the documented ones for $from;
# otherwise says what differs, and how to fix it. Locks are compared as "relation|mode".
compare() {
    local observed documented undocumented stale relation mode blocks
    observed=$(awk -F'|' '$1 == "courier" {print $3 "|" $4}' <<<"$1" | sort -u)
    documented=$(awk -F'|' -v v="$from" '!/^#/ && $1 == v {print $2 "|" $3}' "$allowed" | sort -u)
    undocumented=$(comm -23 <(echo "$observed") <(echo "$documented") | sed '/^$/d')
    stale=$(comm -13 <(echo "$observed") <(echo "$documented") | sed '/^$/d')
    [ -z "$undocumented$stale" ] && return 0
    while IFS='|' read -r relation mode; do
        [ -n "$relation" ] || continue
        blocks=$(awk -F'|' -v r="$relation" -v m="$mode" '$1 == "courier" && $3 == r && $4 == m {print $5; exit}' <<<"$1")
        echo "upgrade test: the update from $from now takes $mode on $relation, which is not documented." >&2
        echo "  Until it commits, the update waits for, then blocks: $blocks." >&2
        echo "  Document in README's \"Upgrading\" what waits behind it and for how long (bench/upgrade.sh" >&2
        echo "  times the update on 1,000,000 messages), then add \"$from|$relation|$mode\" to $allowed." >&2
    done <<<"$undocumented"
    while IFS='|' read -r relation mode; do
        [ -n "$relation" ] || continue
        echo "upgrade test: the update from $from no longer takes $mode on $relation: remove \"$from|$relation|$mode\"" >&2
        echo "  from $allowed and README's \"Upgrading\"." >&2
    done <<<"$stale"
    return 1
}

locks=$(held)
echo "  locks the update from $from holds until it commits (scope|locktype|object|mode|blocks):"
sed 's/^/    /' <<<"$locks"
compare "$locks" || exit 1
echo "  locks on courier's relations: as documented in $allowed"

# The control: a lock this version's list does not document (the first of these candidates that it
# does not list), taken during the update, must be noticed.
documented=$(awk -F'|' -v v="$from" '!/^#/ && $1 == v {print $2 "|" $3}' "$allowed")
control=
for candidate in courier.completed courier.dedup courier.queue_grant courier.message courier.queue; do
    for mode in "SHARE:ShareLock" "EXCLUSIVE:ExclusiveLock" "ACCESS EXCLUSIVE:AccessExclusiveLock"; do
        if ! grep -qxF "$candidate|${mode#*:}" <<<"$documented"; then
            control="LOCK TABLE $candidate IN ${mode%%:*} MODE;"
            break 2
        fi
    done
done
[ -n "$control" ] || { echo "upgrade test: every candidate control lock is documented: add one to locks.sh" >&2; exit 1; }
if compare "$(held -v extra="$control")" 2>/dev/null; then
    echo "upgrade test: an undocumented lock taken during the update ($control) went unnoticed: the lock check cannot fail" >&2
    exit 1
fi
echo "  control: an undocumented lock taken during the update ($control) fails the check, as it must"
