// The shop on Drizzle against a real courier database (DATABASE_URL): what happens to every
// order and every message. Run by examples/node-test.sh.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { asc, sql } from 'drizzle-orm';
import { DrizzleQueryError, TransactionRollbackError } from 'drizzle-orm/errors';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { ack, enqueue, gauges, lease, LEASE_LOST, nack, sqlstate, type Leased } from '../src/courier.js';
import { orders, shipments, type Item } from '../src/schema.js';
import { connect, leaseJobs, migrate, placeOrder, QUEUE, ship, shipAll, type ShipJob } from '../src/shop.js';

const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const { db, pool } = connect(url);
const empty = { ready: 0n, delayed: 0n, inFlight: 0n, dead: 0n };

// order id -> the message id its transaction enqueued, for every order that committed
const placed = new Map<bigint, bigint>();

async function shippedByOrder() {
    const rows = await db.select().from(shipments);
    return new Map(rows.map((r) => [r.orderId, { messageId: r.messageId, attempt: r.attempt, shipper: r.shipper }]));
}

before(async () => {
    await migrate(db);
    await db.execute(sql`TRUNCATE shipments, orders RESTART IDENTITY`);
    await db.execute(sql`SELECT courier.purge_queue(${QUEUE})`);
});

after(() => pool.end());

test('an order and its job commit together; a rolled-back order enqueues nothing', async () => {
    const placedOrders: [string, Item[]][] = [
        ['ada', [{ sku: 'book', qty: 1 }]],
        ['grace', [{ sku: 'pen', qty: 3 }, { sku: 'ink', qty: 1 }]],
        ['edsger', []],
    ];
    for (const [customer, items] of placedOrders) {
        const { orderId, messageId } = await db.transaction((tx) => placeOrder(tx, customer, items));
        placed.set(orderId, messageId);
    }
    await assert.rejects(
        db.transaction(async (tx) => {
            await placeOrder(tx, 'mallory', [{ sku: 'card', qty: 99 }]);
            throw new Error('payment declined');
        }),
        /payment declined/,
    );

    const ids = [...placed.keys()];
    assert.deepEqual(ids, [9007199254740993n, 9007199254740994n, 9007199254740995n]); // exact above 2^53
    assert.deepEqual(
        await db.select().from(orders).orderBy(asc(orders.id)),
        placedOrders.map(([customer, items], i) => ({ id: ids[i], customer, items })),
    );

    assert.deepEqual(await gauges(db, QUEUE), { ...empty, ready: 3n });
    // Read the jobs with a lease that rolls back: it never happened, attempts included.
    let jobs: Leased<ShipJob>[] = [];
    await assert.rejects(
        db.transaction(async (tx) => {
            jobs = await lease<ShipJob>(tx, QUEUE, { batchSize: 1000 });
            tx.rollback();
        }),
        TransactionRollbackError,
    );
    assert.deepEqual(
        jobs.map((j) => [j.id, j.payload, j.attempt]).sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
        placedOrders.map(([, items], i) => [placed.get(ids[i]!), { orderId: ids[i]!.toString(), items }, 1]),
    );
    assert.ok(jobs.every((j) => j.enqueuedAt instanceof Date && j.leaseExpiresAt > j.enqueuedAt));
    assert.deepEqual(await gauges(db, QUEUE), { ...empty, ready: 3n });
});

test('a shipper ships every job once, writing and acking in one transaction', async () => {
    const outcomes = await shipAll(db, 'shipper-1');
    assert.deepEqual(
        outcomes.map((o) => o.status),
        ['shipped', 'shipped', 'shipped'],
    );
    const shipped = await shippedByOrder();
    assert.equal(shipped.size, placed.size);
    for (const [orderId, messageId] of placed) assert.deepEqual(shipped.get(orderId), { messageId, attempt: 1, shipper: 'shipper-1' });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test("a late shipper's strict ack fails and its shipment rolls back; the shipper that took over ships", async () => {
    const { orderId, messageId } = await db.transaction((tx) => placeOrder(tx, 'barbara', [{ sku: 'lamp', qty: 1 }]));
    placed.set(orderId, messageId);

    const [a] = await leaseJobs(db, { visibilityTimeout: '200 milliseconds' });
    assert.ok(a);
    assert.deepEqual([a.id, a.attempt], [messageId, 1]);
    const [b] = await leaseJobs(db, { wait: '20 seconds' }); // returns when A's lease runs out
    assert.ok(b, "B's wait returned no job");
    assert.deepEqual([b.id, b.attempt], [messageId, 2]);

    // What ship() catches: Drizzle wraps the driver's error; QC001 is on its cause.
    const lost = await db
        .transaction(async (tx) => {
            await ack(tx, a.receipt, { strict: true });
        })
        .then(
            () => undefined,
            (err: unknown) => err,
        );
    assert.ok(lost instanceof DrizzleQueryError);
    assert.equal(sqlstate(lost), LEASE_LOST);

    assert.deepEqual(await ship(db, a, 'late-A'), { status: 'lease-lost', orderId });
    assert.equal((await shippedByOrder()).has(orderId), false);

    assert.deepEqual(await ship(db, b, 'B'), { status: 'shipped', orderId });
    assert.deepEqual((await shippedByOrder()).get(orderId), { messageId, attempt: 2, shipper: 'B' });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test('a failed attempt nacks with its error; the job comes back at once with retry_in 0', async () => {
    const { orderId, messageId } = await db.transaction((tx) => placeOrder(tx, 'alan', [{ sku: 'tape', qty: 2 }]));
    placed.set(orderId, messageId);
    const [first] = await leaseJobs(db);
    assert.ok(first);
    assert.equal(await nack(db, first.receipt, { retryIn: '0', error: 'label printer jammed' }), true);
    const [second] = await leaseJobs(db);
    assert.ok(second);
    assert.deepEqual([second.id, second.attempt, second.lastError], [messageId, 2, 'label printer jammed']);
    assert.deepEqual(await ship(db, second, 'shipper-2'), { status: 'shipped', orderId });
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test("payloads round-trip; Drizzle's raw results ignore a pool's int8 parser", async () => {
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

    // Why courier.ts converts ids itself: Drizzle passes its own type parsers with each query.
    const parsing = new pg.Pool({ connectionString: url, max: 1, types: { getTypeParser: () => (v: string) => `parsed ${v}` } });
    try {
        assert.deepEqual((await parsing.query('SELECT 1::int8 AS n')).rows, [{ n: 'parsed 1' }]);
        assert.deepEqual((await drizzle(parsing).execute(sql`SELECT 9007199254740993::int8 AS n`)).rows, [{ n: '9007199254740993' }]);
    } finally {
        await parsing.end();
    }
    assert.deepEqual(await gauges(db, QUEUE), empty);
});

test('every committed order was shipped exactly once and no message is left', async () => {
    const rows = await db.select({ id: orders.id }).from(orders).orderBy(asc(orders.id));
    assert.deepEqual(
        rows.map((o) => o.id),
        [...placed.keys()],
    );
    const shipped = await shippedByOrder();
    assert.equal(shipped.size, placed.size);
    for (const [orderId, messageId] of placed) assert.equal(shipped.get(orderId)?.messageId, messageId);
    assert.deepEqual(await gauges(db, QUEUE), empty);
});
