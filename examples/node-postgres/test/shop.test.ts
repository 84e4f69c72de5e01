// The shop on node-postgres against a real courier database (DATABASE_URL): what happens to
// every order and every message. Run by examples/node-test.sh, directly and through PgBouncer.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { ack, enqueue, gauges, lease, nack, sqlstate, transaction } from '../src/courier.js';
import { connect, leaseJobs, migrate, placeOrder, QUEUE, ship, shipAll, type ShipJob } from '../src/shop.js';

const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const pool = connect(url);

/** Every message of the queue that is ready now, read by a lease that is rolled back: a lease
 *  in a transaction that rolls back never happened (attempt counts included). */
async function peek(): Promise<{ id: bigint; payload: ShipJob; attempt: number }[]> {
    const client = await pool.connect();
    try {
        await client.query('BEGIN');
        const jobs = await lease<ShipJob>(client, QUEUE, { batchSize: 1000 });
        return jobs.map((j) => ({ id: j.id, payload: j.payload, attempt: j.attempt }));
    } finally {
        await client.query('ROLLBACK');
        client.release();
    }
}

async function assertQueueEmpty(): Promise<void> {
    assert.deepEqual(await gauges(pool, QUEUE), { ready: 0n, delayed: 0n, inFlight: 0n, dead: 0n });
}

async function shipments(): Promise<Map<bigint, { messageId: bigint; attempt: number; shipper: string }>> {
    const { rows } = await pool.query<{ order_id: bigint; message_id: bigint; attempt: number; shipper: string }>(
        'SELECT order_id, message_id, attempt, shipper FROM shipments',
    );
    return new Map(rows.map((r) => [r.order_id, { messageId: r.message_id, attempt: r.attempt, shipper: r.shipper }]));
}

// order id -> the message id its transaction enqueued, for every order that committed
const placed = new Map<bigint, bigint>();

before(async () => {
    await migrate(pool);
    // Start from nothing, so the test can be run again on the same database.
    await pool.query('TRUNCATE shipments, orders RESTART IDENTITY');
    await pool.query('SELECT courier.purge_queue($1)', [QUEUE]);
});

after(() => pool.end());

test('an order and its job commit together; a rolled-back order enqueues nothing', async () => {
    const orders: [string, { sku: string; qty: number }[]][] = [
        ['ada', [{ sku: 'book', qty: 1 }]],
        ['grace', [{ sku: 'pen', qty: 3 }, { sku: 'ink', qty: 1 }]],
        ['edsger', []],
    ];
    for (const [customer, items] of orders) {
        const { orderId, messageId } = await transaction(pool, (tx) => placeOrder(tx, customer, items));
        assert.equal(typeof orderId, 'bigint');
        assert.equal(typeof messageId, 'bigint');
        placed.set(orderId, messageId);
    }
    await assert.rejects(
        transaction(pool, async (tx) => {
            await placeOrder(tx, 'mallory', [{ sku: 'card', qty: 99 }]);
            throw new Error('payment declined');
        }),
        /payment declined/,
    );

    // The order ids are above 2^53 and come back exact: as a JS number the first would round.
    const ids = [...placed.keys()];
    assert.ok(ids.every((id) => id > BigInt(Number.MAX_SAFE_INTEGER)));
    assert.equal(ids[0], 9007199254740993n);
    const { rows } = await pool.query<{ id: bigint; customer: string }>('SELECT id, customer FROM orders ORDER BY id');
    assert.deepEqual(rows, [
        { id: ids[0], customer: 'ada' },
        { id: ids[1], customer: 'grace' },
        { id: ids[2], customer: 'edsger' },
    ]);

    // Exactly the three committed jobs are in the queue, carrying their orders.
    assert.deepEqual(await gauges(pool, QUEUE), { ready: 3n, delayed: 0n, inFlight: 0n, dead: 0n });
    const jobs = await peek();
    assert.deepEqual(
        jobs.map((j) => [j.id, j.payload.orderId, j.payload.items, j.attempt]).sort((a, b) => String(a[1]).localeCompare(String(b[1]))),
        orders.map(([, items], i) => [placed.get(ids[i]!), ids[i]!.toString(), items, 1]),
    );
    // The peek's lease rolled back: still three ready, none in flight, none with attempt 2.
    assert.deepEqual(await gauges(pool, QUEUE), { ready: 3n, delayed: 0n, inFlight: 0n, dead: 0n });
});

test('a shipper ships every job once, writing and acking in one transaction', async () => {
    const outcomes = await shipAll(pool, 'shipper-1');
    assert.deepEqual(
        outcomes.map((o) => o.status),
        ['shipped', 'shipped', 'shipped'],
    );
    const shipped = await shipments();
    assert.equal(shipped.size, placed.size);
    for (const [orderId, messageId] of placed) {
        assert.deepEqual(shipped.get(orderId), { messageId, attempt: 1, shipper: 'shipper-1' });
    }
    await assertQueueEmpty();
});

test("a late shipper's strict ack fails and its shipment rolls back; the shipper that took over ships", async () => {
    const { orderId, messageId } = await transaction(pool, (tx) => placeOrder(tx, 'barbara', [{ sku: 'lamp', qty: 1 }]));
    placed.set(orderId, messageId);

    // A leases with a short visibility timeout and stalls past it.
    const [a] = await leaseJobs(pool, { visibilityTimeout: '200 milliseconds' });
    assert.ok(a);
    assert.equal(a.id, messageId);
    assert.equal(a.attempt, 1);
    // B long-polls: the wait returns the moment A's lease runs out (no sleep in the test).
    const [b] = await leaseJobs(pool, { wait: '20 seconds' });
    assert.ok(b, "B's wait returned no job");
    assert.equal(b.id, messageId);
    assert.equal(b.attempt, 2);
    assert.notEqual(b.receipt, a.receipt);

    // A wakes up and ships: its strict ack raises QC001, so its shipment row rolls back.
    assert.deepEqual(await ship(pool, a, 'late-A'), { status: 'lease-lost', orderId });
    assert.equal((await shipments()).has(orderId), false);
    // A non-strict ack with A's receipt does nothing either.
    assert.equal(await ack(pool, a.receipt), false);

    assert.deepEqual(await ship(pool, b, 'B'), { status: 'shipped', orderId });
    assert.deepEqual((await shipments()).get(orderId), { messageId, attempt: 2, shipper: 'B' });
    await assertQueueEmpty();
});

test('a failed attempt nacks with its error; the job comes back at once with retry_in 0', async () => {
    const { orderId, messageId } = await transaction(pool, (tx) => placeOrder(tx, 'alan', [{ sku: 'tape', qty: 2 }]));
    placed.set(orderId, messageId);
    const [first] = await leaseJobs(pool);
    assert.ok(first);
    assert.equal(await nack(pool, first.receipt, { retryIn: '0', error: 'label printer jammed' }), true);
    assert.equal(await ack(pool, first.receipt), false, 'a nacked receipt stops working');
    const [second] = await leaseJobs(pool);
    assert.ok(second);
    assert.deepEqual([second.id, second.attempt, second.lastError], [messageId, 2, 'label printer jammed']);
    assert.deepEqual(await ship(pool, second, 'shipper-2'), { status: 'shipped', orderId });
    await assertQueueEmpty();
});

test('payload pitfalls: arrays need JSON.stringify, bigints need a type parser', async () => {
    // What node-postgres does by default: a JS array parameter becomes a PostgreSQL array
    // literal, which is not JSON ...
    await assert.rejects(pool.query('SELECT $1::jsonb', [[{ sku: 'book' }]]), (err) => sqlstate(err) === '22P02');
    // ... and int8 comes back as a string, which Number() silently rounds.
    const plain = new pg.Pool({ connectionString: url, max: 1 });
    try {
        const { rows } = await plain.query<{ id: unknown }>('SELECT min(id) AS id FROM orders');
        assert.equal(rows[0]!.id, '9007199254740993');
        assert.equal(Number(rows[0]!.id), 9007199254740992);
    } finally {
        await plain.end();
    }

    // Through courier.ts: a top-level array and a bigint inside an object both round-trip.
    const arrayId = await enqueue(pool, QUEUE, [1, 'two', { three: [3] }]);
    const bigId = await enqueue(pool, QUEUE, { big: 2n ** 60n }, { headers: { source: 'test' }, priority: 1 });
    const jobs = await lease<unknown>(pool, QUEUE, { batchSize: 10 });
    assert.deepEqual(
        jobs.map((j) => [j.id, j.payload, j.headers]),
        [
            [bigId, { big: '1152921504606846976' }, { source: 'test' }], // priority 1 first
            [arrayId, [1, 'two', { three: [3] }], null],
        ],
    );
    for (const j of jobs) assert.equal(await ack(pool, j.receipt, { strict: true }), true);
    await assertQueueEmpty();
});

test('every committed order was shipped exactly once and no message is left', async () => {
    const { rows } = await pool.query<{ id: bigint }>('SELECT id FROM orders ORDER BY id');
    assert.deepEqual(
        rows.map((r) => r.id),
        [...placed.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
    );
    const shipped = await shipments();
    assert.deepEqual([...shipped.keys()].sort(), [...placed.keys()].sort());
    for (const [orderId, messageId] of placed) assert.equal(shipped.get(orderId)?.messageId, messageId);
    await assertQueueEmpty();
});
