#!/usr/bin/env bash
# Queues and messages are user data: pg_dump must carry them, and a restored database must keep
# working (sequences restored past the highest id, leases and receipts still valid).
# Expects PGHOST/PGPORT/PGUSER of a running cluster with courier installed.
set -euo pipefail
dump=$(mktemp /tmp/courier-dump.XXXXXX)
trap 'rm -f "$dump"' EXIT
q() { psql -X -v ON_ERROR_STOP=1 -qAt -d "$1" -c "$2"; }

dropdb --if-exists courier_dump_src; dropdb --if-exists courier_dump_dst
createdb courier_dump_src
q courier_dump_src "CREATE EXTENSION courier"
q courier_dump_src "SELECT courier.create_queue('dumped', visibility_timeout => '45 seconds')"
q courier_dump_src "SELECT courier.create_queue('other')"
q courier_dump_src "SELECT count(*) FROM courier.enqueue_batch('dumped', ARRAY['{\"n\":1}','{\"n\":2}','{\"n\":3}']::jsonb[], headers => ARRAY['{\"h\":1}',NULL,NULL]::jsonb[])" >/dev/null
q courier_dump_src "SELECT courier.enqueue('other', '\"x\"', delay => '1 hour')" >/dev/null
receipt=$(q courier_dump_src "SELECT receipt FROM courier.lease('dumped', visibility_timeout => '10 minutes')")

snapshot="SELECT q.name, q.visibility_timeout, m.id, m.payload, m.headers, m.attempt, m.lease_token IS NOT NULL,
                  m.visible_at, m.enqueued_at FROM courier.queue q JOIN courier.message m USING (queue_id) ORDER BY m.id"
before=$(q courier_dump_src "$snapshot")

pg_dump -Fc -f "$dump" courier_dump_src
createdb courier_dump_dst
pg_restore -d courier_dump_dst --exit-on-error "$dump"
after=$(q courier_dump_dst "$snapshot")

fail() { echo "dump test: $*" >&2; exit 1; }
[ -n "$before" ] || fail "nothing to compare"
[ "$before" = "$after" ] || fail "restored data differs"$'\n'"before:"$'\n'"$before"$'\n'"after:"$'\n'"$after"
# The lease survives the round trip: its receipt still acks in the restored copy.
[ "$(q courier_dump_dst "SELECT courier.ack('$receipt')")" = t ] || fail "receipt does not ack after restore"
# Sequences were restored too: new ids continue after the old ones.
max_id=$(q courier_dump_src "SELECT max(id) FROM courier.message")
new_id=$(q courier_dump_dst "SELECT courier.enqueue('dumped', '{}')")
[ "$new_id" -gt "$max_id" ] || fail "message id $new_id reused (max before dump $max_id)"
q courier_dump_dst "SELECT courier.create_queue('after_restore')" >/dev/null || fail "queue id sequence not restored"
dropdb courier_dump_src; dropdb courier_dump_dst
echo "dump test: $(echo "$before" | wc -l) messages in 2 queues survived pg_dump/pg_restore; receipts and sequences intact"
