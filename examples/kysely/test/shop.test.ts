// The shop on Kysely against a real courier database (DATABASE_URL): what happens to every
// order and every message. Run by examples/node-test.sh.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { sql } from 'kysely';
import { ack, enqueue, gauges, lease, nack } from '../src/courier.js';
import { connect, type Item } from '../src/db.js';
import { leaseJobs, migrate, placeOrder, QUEUE, ship, shipAll, type ShipJob } from '../src/shop.js';

const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const db = connect(url);
const empty = { ready: 0n, delayed: 0n, in_flight: 0n, dead: 0n };

// order id -> the message id its transaction enqueued, for every order that committed
const placed = new Map<bigint, bigint>();

async function shipments() {
    const rows = await db.selectFrom('shipments').select(['order_id', 'message_id', 'attempt', 'shipper']).execute();
    return new Map(rows.map((r) => [r.order_id, { messageId: r.message_id, attempt: r.attempt, shipper: r.shipper }]));
}

before(async () => {
    await migrate(db);
    await sql`TRUNCATE shipments, orders RESTART IDENTITY`.execute(db);
    await sql`SELECT courier.purge_queue(${QUEUE})`.execute(db);
});

after(() => db.destroy());

test('an order and its job commit together; a rolled-back order enqueues nothing', async () => {
    const orders: [string, Item[]][] = [
        ['ada', [{ sku: 'book', qty: 1 }]],
        ['grace', [{ sku: 'pen', qty: 3 }, { sku: 'ink', qty: 1 }]],
        ['edsger', []],
    ];
    for (const [customer, items] of orders) {
        const { orderId, messageId } = await db.transaction().execute((trx) => placeOrder(trx, customer, items));
        placed.set(orderId, messageId);
    }
    await assert.rejects(
        db.transaction().execute(async (trx) => {
            await placeOrder(trx, 'mallory', [{ sku: 'card', qty: 99 }]);
            throw new Error('payment declined');
        }),
        /payment declined/,
    );

    const ids = [...placed.keys()];
    assert.deepEqual(ids, [9007199254740993n, 9007199254740994n, 9007199254740995n]); // exact above 2^53
    const rows = await db.selectFrom('orders').select(['id', 'customer', 'items']).orderBy('id').execute();
    assert.deepEqual(
        rows,
        orders.map(([customer, items], i) => ({ id: ids[i], customer, items })),
    );

    assert.deepEqual(await gauges(db, QUEUE), { ...empty, ready: 3n });
    // Read the jobs with a lease that rolls back: it never happened, attempts included.
    const trx = await db.startTransaction().execute();
    const jobs = await lease<ShipJob>(trx, QUEUE, { batchSize: 1000 });
    await trx.rollback().execute();
    assert.deepEqual(
        jobs.map((j) => [j.id, j.payload, j.attempt]).sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
        orders.map(([, items], i) => [placed.get(ids[i]!), { orderId: ids[i]!.toString(), items }, 1]),
    );
    assert.deepEqual(await gauges(db, QUEUE), { ...empty, ready: 3n });
});

test('a shipper ships every job once, writing and acking in one transaction', async () => {
    const outcomes = await shipAll(db, 'shipper-1');
    assert.deepEqual(
        outcomes.map((o) => o.status),
        ['shipped', 'shipped', 'shipped'],
    );
    const shipped = await shipments();
    assert.equal(shipped.size, placed.size);
    for (const [orderId, messageId] of placed) assert.deepEqual(shipped.get(orderId), { messageId, attempt: 1, shipper: 'shipper-1' });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test("a late shipper's strict ack fails and its shipment rolls back; the shipper that took over ships", async () => {
    const { orderId, messageId } = await db.transaction().execute((trx) => placeOrder(trx, 'barbara', [{ sku: 'lamp', qty: 1 }]));
    placed.set(orderId, messageId);

    const [a] = await leaseJobs(db, { visibilityTimeout: '200 milliseconds' });
    assert.ok(a);
    assert.deepEqual([a.id, a.attempt], [messageId, 1]);
    const [b] = await leaseJobs(db, { wait: '20 seconds' }); // returns when A's lease runs out
    assert.ok(b, "B's wait returned no job");
    assert.deepEqual([b.id, b.attempt], [messageId, 2]);

    assert.deepEqual(await ship(db, a, 'late-A'), { status: 'lease-lost', orderId });
    assert.equal((await shipments()).has(orderId), false);
    assert.equal(await ack(db, a.receipt), false);

    assert.deepEqual(await ship(db, b, 'B'), { status: 'shipped', orderId });
    assert.deepEqual((await shipments()).get(orderId), { messageId, attempt: 2, shipper: 'B' });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test('a failed attempt nacks with its error; the job comes back at once with retry_in 0', async () => {
    const { orderId, messageId } = await db.transaction().execute((trx) => placeOrder(trx, 'alan', [{ sku: 'tape', qty: 2 }]));
    placed.set(orderId, messageId);
    const [first] = await leaseJobs(db);
    assert.ok(first);
    assert.equal(await nack(db, first.receipt, { retryIn: '0', error: 'label printer jammed' }), true);
    const [second] = await leaseJobs(db);
    assert.ok(second);
    assert.deepEqual([second.id, second.attempt, second.last_error], [messageId, 2, 'label printer jammed']);
    assert.deepEqual(await ship(db, second, 'shipper-2'), { status: 'shipped', orderId });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test('payloads: a top-level array and a bigint round-trip through jsonb', async () => {
    const arrayId = await enqueue(db, QUEUE, [1, 'two', { three: [3] }]);
    const bigId = await enqueue(db, QUEUE, { big: 2n ** 60n }, { headers: { source: 'test' }, priority: 1 });
    const jobs = await lease<unknown>(db, QUEUE, { batchSize: 10 });
    assert.deepEqual(
        jobs.map((j) => [j.id, j.payload, j.headers]),
        [
            [bigId, { big: '1152921504606846976' }, { source: 'test' }],
            [arrayId, [1, 'two', { three: [3] }], null],
        ],
    );
    for (const j of jobs) assert.equal(await ack(db, j.receipt, { strict: true }), true);
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test('every committed order was shipped exactly once and no message is left', async () => {
    const orders = await db.selectFrom('orders').select('id').orderBy('id').execute();
    assert.deepEqual(
        orders.map((o) => o.id),
        [...placed.keys()],
    );
    const shipped = await shipments();
    assert.equal(shipped.size, placed.size);
    for (const [orderId, messageId] of placed) assert.equal(shipped.get(orderId)?.messageId, messageId);
    assert.deepEqual(await gauges(db, QUEUE), empty);
});
