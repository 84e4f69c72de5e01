// The shop on Drizzle: placing an order inserts the order through the ORM and enqueues its
// shipping job in the same transaction; a shipper inserts the shipment and acks strictly in one.
import { sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { ack, enqueue, isLeaseLost, lease, type Db, type Leased } from './courier.js';
import * as schema from './schema.js';
import { orders, shipments, type Item } from './schema.js';

export const QUEUE = 'orders.ship';

export type ShopDb = NodePgDatabase<typeof schema>;

/** The job's payload. Order ids travel as decimal strings: JSON numbers are doubles in JS. */
export interface ShipJob {
    orderId: string;
    items: Item[];
}

export function connect(connectionString: string, max = 4): { db: ShopDb; pool: pg.Pool } {
    const pool = new pg.Pool({ connectionString, max });
    return { db: drizzle(pool, { schema }), pool };
}

/** The tables (as drizzle-kit would generate them from schema.ts) and the queue; safe to run again. */
export async function migrate(db: Db): Promise<void> {
    await db.execute(sql`
        CREATE TABLE IF NOT EXISTS orders (
            id bigint GENERATED ALWAYS AS IDENTITY (START WITH 9007199254740993) PRIMARY KEY,
            customer text NOT NULL,
            items jsonb NOT NULL
        )`);
    await db.execute(sql`
        CREATE TABLE IF NOT EXISTS shipments (
            order_id bigint PRIMARY KEY REFERENCES orders,
            message_id bigint NOT NULL,
            attempt integer NOT NULL,
            shipper text NOT NULL
        )`);
    await db.execute(sql`SELECT courier.create_queue(${QUEUE}, visibility_timeout => '30 seconds', if_not_exists => true)`);
}

/** Inserts the order and enqueues its job on `db` — pass the transaction to make them one. */
export async function placeOrder(db: ShopDb, customer: string, items: Item[]): Promise<{ orderId: bigint; messageId: bigint }> {
    const [order] = await db.insert(orders).values({ customer, items }).returning({ id: orders.id });
    const orderId = order!.id;
    const job: ShipJob = { orderId: orderId.toString(), items };
    return { orderId, messageId: await enqueue(db, QUEUE, job) };
}

/** Leases jobs in their own short transaction: the work after it may take its time. */
export function leaseJobs(db: Db, options: { batchSize?: number; visibilityTimeout?: string; wait?: string } = {}): Promise<Leased<ShipJob>[]> {
    return lease<ShipJob>(db, QUEUE, options);
}

export type ShipOutcome = { status: 'shipped' | 'lease-lost'; orderId: bigint };

/** The shipment row and the strict ack commit together or not at all. */
export async function ship(db: ShopDb, job: Leased<ShipJob>, shipper: string): Promise<ShipOutcome> {
    const orderId = BigInt(job.payload.orderId);
    try {
        await db.transaction(async (tx) => {
            await tx.insert(shipments).values({ orderId, messageId: job.id, attempt: job.attempt, shipper });
            await ack(tx, job.receipt, { strict: true }); // QC001 when the lease was lost: all rolls back
        });
        return { status: 'shipped', orderId };
    } catch (err) {
        if (isLeaseLost(err)) return { status: 'lease-lost', orderId };
        throw err;
    }
}

/** A worker loop: leases and ships until a lease (or a wait) comes back empty. */
export async function shipAll(db: ShopDb, shipper: string, wait = '0'): Promise<ShipOutcome[]> {
    const outcomes: ShipOutcome[] = [];
    for (;;) {
        const jobs = await leaseJobs(db, { batchSize: 10, wait });
        if (jobs.length === 0) return outcomes;
        for (const job of jobs) outcomes.push(await ship(db, job, shipper));
    }
}
