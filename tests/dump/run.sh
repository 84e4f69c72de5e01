#!/usr/bin/env bash
# Queues and messages are user data: pg_dump must carry them, and a restored database must keep
# working (sequences restored past the highest id, leases and receipts still valid).
# Expects PGHOST/PGPORT/PGUSER of a running cluster with courier installed.
set -euo pipefail
dump=$(mktemp /tmp/courier-dump.XXXXXX)
trap 'rm -f "$dump"' EXIT
q() { psql -X -v ON_ERROR_STOP=1 -qAt -d "$1" -c "$2"; }

dropdb --if-exists courier_dump_src 2>/dev/null; dropdb --if-exists courier_dump_dst 2>/dev/null
createdb courier_dump_src
q courier_dump_src "CREATE EXTENSION courier"
q courier_dump_src "SELECT courier.create_queue('dumped', visibility_timeout => '45 seconds')" >/dev/null
q courier_dump_src "SELECT courier.create_queue('other', retention => '1 day')" >/dev/null
# A dead-letter queue created after the queue that points at it.
q courier_dump_src "SELECT courier.create_queue('later_dlq')" >/dev/null
q courier_dump_src "SELECT courier.alter_queue('dumped', dead_letter_queue => 'later_dlq', max_attempts => 3)" >/dev/null
q courier_dump_src "SELECT courier.enqueue('other', '\"keyed\"', dedup_key => 'k1')" >/dev/null
q courier_dump_src "SELECT courier.ack(receipt) FROM courier.lease('other')" >/dev/null
q courier_dump_src "SELECT count(*) FROM courier.enqueue_batch('dumped', ARRAY['{\"n\":1}','{\"n\":2}','{\"n\":3}']::jsonb[], headers => ARRAY['{\"h\":1}',NULL,NULL]::jsonb[])" >/dev/null
q courier_dump_src "SELECT courier.enqueue('other', '\"x\"', delay => '1 hour')" >/dev/null
receipt=$(q courier_dump_src "SELECT receipt FROM courier.lease('dumped', visibility_timeout => '10 minutes')")

snapshot="SELECT q.name, q.visibility_timeout, m.id, m.payload, m.headers, m.attempt, m.lease_token IS NOT NULL,
                  m.visible_at, m.enqueued_at FROM courier.queue q JOIN courier.message m USING (queue_id) ORDER BY m.id"
catalog="SELECT queue, max_attempts, dead_letter_queue, retention FROM courier.queues ORDER BY queue"
keys="SELECT key, message_id FROM courier.dedup ORDER BY key"
completed="SELECT id, payload FROM courier.completed_messages ORDER BY id"
before=$(q courier_dump_src "$snapshot"; q courier_dump_src "$catalog"; q courier_dump_src "$keys"; q courier_dump_src "$completed")

pg_dump -Fc -f "$dump" courier_dump_src 2>"$dump.err"
if [ -s "$dump.err" ]; then cat "$dump.err" >&2; fail_early=1; fi
rm -f "$dump.err"
[ -z "${fail_early:-}" ] || { echo "dump test: pg_dump printed warnings" >&2; exit 1; }
createdb courier_dump_dst
pg_restore -d courier_dump_dst --exit-on-error "$dump"
after=$(q courier_dump_dst "$snapshot"; q courier_dump_dst "$catalog"; q courier_dump_dst "$keys"; q courier_dump_dst "$completed")

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
[ "$(q courier_dump_dst "SELECT duplicate FROM courier.enqueue_unique('other', '1', 'k1')")" = t ] \
    || fail "dedup key lost in the round trip"
dropdb courier_dump_src; dropdb courier_dump_dst
echo "dump test: queues, messages, dead-letter settings, dedup keys and completed messages survived" \
     "pg_dump/pg_restore ($(echo "$before" | wc -l) rows compared); receipts and sequences intact"
