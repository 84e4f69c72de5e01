// The shop on Kysely: placing an order writes the order and enqueues its shipping job in one
// transaction; a shipper writes the shipment and acks strictly in one transaction.
import { sql, type Kysely } from 'kysely';
import { ack, enqueue, isLeaseLost, lease, type Leased } from './courier.js';
import type { Database, Item } from './db.js';

export const QUEUE = 'orders.ship';

/** The job's payload. Order ids travel as decimal strings: JSON numbers are doubles in JS. */
export interface ShipJob {
    orderId: string;
    items: Item[];
}

/** The application's tables and its queue; safe to run again. */
export async function migrate(db: Kysely<Database>): Promise<void> {
    await db.schema
        .createTable('orders')
        .ifNotExists()
        .addColumn('id', 'bigint', (c) => c.modifyFront(sql`GENERATED ALWAYS AS IDENTITY (START WITH 9007199254740993)`).primaryKey())
        .addColumn('customer', 'text', (c) => c.notNull())
        .addColumn('items', 'jsonb', (c) => c.notNull())
        .execute();
    await db.schema
        .createTable('shipments')
        .ifNotExists()
        .addColumn('order_id', 'bigint', (c) => c.primaryKey().references('orders.id'))
        .addColumn('message_id', 'bigint', (c) => c.notNull())
        .addColumn('attempt', 'integer', (c) => c.notNull())
        .addColumn('shipper', 'text', (c) => c.notNull())
        .execute();
    await sql`SELECT courier.create_queue(${QUEUE}, visibility_timeout => '30 seconds', if_not_exists => true)`.execute(db);
}

/** Writes the order and enqueues its job on `db` — pass the Transaction to make them one. */
export async function placeOrder(db: Kysely<Database>, customer: string, items: Item[]): Promise<{ orderId: bigint; messageId: bigint }> {
    const { id: orderId } = await db
        .insertInto('orders')
        .values({ customer, items: JSON.stringify(items) })
        .returning('id')
        .executeTakeFirstOrThrow();
    const job: ShipJob = { orderId: orderId.toString(), items };
    return { orderId, messageId: await enqueue(db, QUEUE, job) };
}

/** Leases jobs in their own short transaction: the work after it may take its time. */
export function leaseJobs(db: Kysely<Database>, options: { batchSize?: number; visibilityTimeout?: string; wait?: string } = {}): Promise<Leased<ShipJob>[]> {
    return lease<ShipJob>(db, QUEUE, options);
}

export type ShipOutcome = { status: 'shipped' | 'lease-lost'; orderId: bigint };

/** The shipment row and the strict ack commit together or not at all. */
export async function ship(db: Kysely<Database>, job: Leased<ShipJob>, shipper: string): Promise<ShipOutcome> {
    const orderId = BigInt(job.payload.orderId);
    try {
        await db.transaction().execute(async (trx) => {
            await trx.insertInto('shipments').values({ order_id: orderId, message_id: job.id, attempt: job.attempt, shipper }).execute();
            await ack(trx, job.receipt, { strict: true }); // QC001 when the lease was lost: all rolls back
        });
        return { status: 'shipped', orderId };
    } catch (err) {
        if (isLeaseLost(err)) return { status: 'lease-lost', orderId };
        throw err;
    }
}

/** A worker loop: leases and ships until a lease (or a wait) comes back empty. */
export async function shipAll(db: Kysely<Database>, shipper: string, wait = '0'): Promise<ShipOutcome[]> {
    const outcomes: ShipOutcome[] = [];
    for (;;) {
        const jobs = await leaseJobs(db, { batchSize: 10, wait });
        if (jobs.length === 0) return outcomes;
        for (const job of jobs) outcomes.push(await ship(db, job, shipper));
    }
}
