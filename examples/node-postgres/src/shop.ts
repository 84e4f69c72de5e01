// A shop on node-postgres: placing an order writes the order row and enqueues its shipping job
// in one transaction; a shipper leases a job, writes the shipment and acks strictly in one
// transaction, so a shipment exists exactly once per order even when a slow shipper loses its
// lease to another.
import pg from 'pg';
import { ack, enqueue, lease, LeaseLost, transaction, types, type Leased, type Queryable } from './courier.js';

export const QUEUE = 'orders.ship';

export interface Item {
    sku: string;
    qty: number;
}

/** What the shipping job carries. The order id travels as a decimal string: JSON numbers are
 *  doubles in JavaScript, and order ids here start above 2^53 to prove nothing rounds them. */
export interface ShipJob {
    orderId: string;
    items: Item[];
}

export function connect(connectionString: string, max = 4): pg.Pool {
    // `types` parses int8 (order ids, message ids, counters) as BigInt for this pool only.
    return new pg.Pool({ connectionString, types, max });
}

/** The application's tables and its queue; safe to run again. */
export async function migrate(db: Queryable): Promise<void> {
    await db.query(`
        CREATE TABLE IF NOT EXISTS orders (
            id bigint GENERATED ALWAYS AS IDENTITY (START WITH 9007199254740993) PRIMARY KEY,
            customer text NOT NULL,
            items jsonb NOT NULL
        )`);
    await db.query(`
        CREATE TABLE IF NOT EXISTS shipments (
            order_id bigint PRIMARY KEY REFERENCES orders,
            message_id bigint NOT NULL,
            attempt integer NOT NULL,
            shipper text NOT NULL
        )`);
    await db.query(`SELECT courier.create_queue($1, visibility_timeout => '30 seconds', if_not_exists => true)`, [QUEUE]);
}

/** Writes the order and enqueues its job on `db`, inside the caller's transaction. */
export async function placeOrder(db: Queryable, customer: string, items: Item[]): Promise<{ orderId: bigint; messageId: bigint }> {
    const { rows } = await db.query<{ id: bigint }>(
        'INSERT INTO orders (customer, items) VALUES ($1, $2::jsonb) RETURNING id',
        [customer, JSON.stringify(items)], // a bare JS array would be sent as a PostgreSQL array
    );
    const orderId = rows[0]!.id;
    const job: ShipJob = { orderId: orderId.toString(), items };
    const messageId = await enqueue(db, QUEUE, job);
    return { orderId, messageId };
}

/** Leases up to `batchSize` jobs in its own short transaction (autocommit), so the work that
 *  follows can take as long as it likes and a crash leaves the job to come back after the
 *  visibility timeout. */
export function leaseJobs(pool: pg.Pool, options: { batchSize?: number; visibilityTimeout?: string; wait?: string } = {}): Promise<Leased<ShipJob>[]> {
    return lease<ShipJob>(pool, QUEUE, options);
}

export type ShipOutcome = { status: 'shipped'; orderId: bigint } | { status: 'lease-lost'; orderId: bigint };

/** Ships one leased job: the shipment row and the strict ack commit together or not at all. */
export async function ship(pool: pg.Pool, job: Leased<ShipJob>, shipper: string): Promise<ShipOutcome> {
    const orderId = BigInt(job.payload.orderId);
    try {
        await transaction(pool, async (tx) => {
            await tx.query('INSERT INTO shipments (order_id, message_id, attempt, shipper) VALUES ($1, $2, $3, $4)', [
                orderId,
                job.id,
                job.attempt,
                shipper,
            ]);
            await ack(tx, job.receipt, { strict: true }); // throws LeaseLost: the INSERT rolls back
        });
        return { status: 'shipped', orderId };
    } catch (err) {
        if (err instanceof LeaseLost) return { status: 'lease-lost', orderId };
        throw err;
    }
}

/** A worker loop: long-polls for jobs and ships them until a wait comes back empty. */
export async function shipAll(pool: pg.Pool, shipper: string, wait = '0'): Promise<ShipOutcome[]> {
    const outcomes: ShipOutcome[] = [];
    for (;;) {
        const jobs = await leaseJobs(pool, { batchSize: 10, wait });
        if (jobs.length === 0) return outcomes;
        for (const job of jobs) outcomes.push(await ship(pool, job, shipper));
    }
}
