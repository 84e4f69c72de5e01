// Typed calls of courier's SQL API for node-postgres. Every function takes anything with
// `query()` — a Pool for a one-statement call, or a PoolClient inside the caller's transaction,
// which is the point: an enqueue or an ack is part of whatever transaction it runs in.
//
// The three things node-postgres gets wrong by default, and what this file does about them:
// - int8 arrives as a string (a JS number loses precision above 2^53): `types` below parses it
//   as a BigInt, per pool, without touching pg's global parsers.
// - a JS array passed as a parameter is sent as a PostgreSQL array literal ('{1,2}'), which
//   jsonb rejects ("invalid input syntax for type json"): payloads are always JSON.stringify'd
//   here and cast with ::jsonb. JSON.stringify also throws on a BigInt, so bigints in a payload
//   become decimal strings.
// - only queries given a `name` become named prepared statements; nothing here names one, so
//   these calls work through PgBouncer's transaction pooling (which, in Debian's 1.18, cannot
//   follow named statements from one server connection to the next).
import pg from 'pg';

const INT8_OID = 20;

/** Type parsers for a Pool or Client: int8 as BigInt, everything else as pg parses it. */
export const types: pg.CustomTypesConfig = {
    getTypeParser: (oid, format) => (oid === INT8_OID ? BigInt : pg.types.getTypeParser(oid, format)),
};

/** A Pool, a Client or a PoolClient: whatever runs the statement (and owns its transaction). */
export interface Queryable {
    query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

/** A JSON value as courier stores it in a jsonb payload or headers document. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Serialises a payload for a `$n::jsonb` parameter; bigints become decimal strings. */
export function toJsonb(value: unknown): string {
    return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

/** courier's own SQLSTATE for a strict ack/nack/extend whose receipt no longer holds its lease. */
export const LEASE_LOST = 'QC001';

/** Thrown by strict ack/nack/extend when another consumer has taken the message over. */
export class LeaseLost extends Error {
    constructor(readonly receipt: string, options?: { cause: unknown }) {
        super(`the lease of receipt ${receipt} was lost`, options);
        this.name = 'LeaseLost';
    }
}

/** The SQLSTATE of a database error, looking through wrappers (`cause`) that ORMs add. */
export function sqlstate(err: unknown): string | undefined {
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
        const code = (e as { code?: unknown }).code;
        if (typeof code === 'string') return code;
    }
    return undefined;
}

export interface EnqueueOptions {
    headers?: Record<string, Json>;
    /** An interval, e.g. '10 seconds'. */
    delay?: string;
    priority?: number;
    notBefore?: Date;
    dedupKey?: string;
}

// Named arguments are appended only when given, so courier's own defaults apply otherwise
// (passing NULL would not mean "default": courier rejects a NULL delay with 22004).
function namedArgs(values: unknown[], args: [string, unknown, string?][]): string {
    let sql = '';
    for (const [name, value, cast] of args) {
        if (value === undefined) continue;
        values.push(value);
        sql += `, ${name} => $${values.length}${cast ?? ''}`;
    }
    return sql;
}

/** courier.enqueue: returns the new message's id. */
export async function enqueue(db: Queryable, queue: string, payload: unknown, options: EnqueueOptions = {}): Promise<bigint> {
    const values: unknown[] = [queue, toJsonb(payload)];
    const named = namedArgs(values, [
        ['headers', options.headers === undefined ? undefined : toJsonb(options.headers), '::jsonb'],
        ['delay', options.delay, '::interval'],
        ['priority', options.priority, '::integer'],
        ['not_before', options.notBefore, '::timestamptz'],
        ['dedup_key', options.dedupKey, '::text'],
    ]);
    const { rows } = await db.query<{ id: bigint }>(`SELECT courier.enqueue($1::text, $2::jsonb${named}) AS id`, values);
    return rows[0]!.id;
}

/** One leased message, as courier.lease returns it (payload typed by the caller). */
export interface Leased<P = Json> {
    id: bigint;
    receipt: string;
    payload: P;
    headers: Record<string, Json> | null;
    attempt: number;
    enqueuedAt: Date;
    leaseExpiresAt: Date;
    priority: number;
    lastError: string | null;
}

interface LeaseRow {
    id: bigint;
    receipt: string;
    payload: unknown;
    headers: Record<string, Json> | null;
    attempt: number;
    enqueued_at: Date;
    lease_expires_at: Date;
    priority: number;
    last_error: string | null;
}

export interface LeaseOptions {
    batchSize?: number;
    /** An interval, e.g. '30 seconds'; the queue's own when not given. */
    visibilityTimeout?: string;
    /** Long poll: an interval, e.g. '20 seconds'. Holds this connection (and, behind a
     *  transaction-pooling PgBouncer, a server connection) for as long as it waits. */
    wait?: string;
}

/** courier.lease. The payload type is the caller's claim: check it if producers can't be trusted. */
export async function lease<P = Json>(db: Queryable, queue: string, options: LeaseOptions = {}): Promise<Leased<P>[]> {
    const values: unknown[] = [queue];
    const named = namedArgs(values, [
        ['batch_size', options.batchSize, '::integer'],
        ['visibility_timeout', options.visibilityTimeout, '::interval'],
        ['wait', options.wait, '::interval'],
    ]);
    // Columns by name: a column courier adds later does not change what this returns.
    const { rows } = await db.query<LeaseRow>(
        `SELECT id, receipt, payload, headers, attempt, enqueued_at, lease_expires_at, priority, last_error
         FROM courier.lease($1::text${named})`,
        values,
    );
    return rows.map((r) => ({
        id: r.id,
        receipt: r.receipt,
        payload: r.payload as P,
        headers: r.headers,
        attempt: r.attempt,
        enqueuedAt: r.enqueued_at,
        leaseExpiresAt: r.lease_expires_at,
        priority: r.priority,
        lastError: r.last_error,
    }));
}

async function settle(db: Queryable, receipt: string, sql: string, values: unknown[]): Promise<boolean> {
    try {
        const { rows } = await db.query<{ ok: boolean }>(sql, values);
        return rows[0]!.ok;
    } catch (err) {
        if (sqlstate(err) === LEASE_LOST) throw new LeaseLost(receipt, { cause: err });
        throw err;
    }
}

/** courier.ack. Not strict: false when the receipt no longer holds its lease. Strict: throws
 *  LeaseLost instead, which aborts the surrounding transaction — and the caller's writes in it. */
export function ack(db: Queryable, receipt: string, options: { strict?: boolean } = {}): Promise<boolean> {
    return settle(db, receipt, 'SELECT courier.ack($1::uuid, strict => $2::boolean) AS ok', [receipt, options.strict ?? false]);
}

export interface NackOptions {
    /** An interval; the queue's backoff when not given. '0' makes the message due at once. */
    retryIn?: string;
    error?: string;
    /** A poison message: dead-letter it now. */
    dead?: boolean;
    strict?: boolean;
}

/** courier.nack: gives the message back (or dead-letters it). */
export function nack(db: Queryable, receipt: string, options: NackOptions = {}): Promise<boolean> {
    const values: unknown[] = [receipt];
    const named = namedArgs(values, [
        ['retry_in', options.retryIn, '::interval'],
        ['error', options.error, '::text'],
        ['dead', options.dead, '::boolean'],
        ['strict', options.strict, '::boolean'],
    ]);
    return settle(db, receipt, `SELECT courier.nack($1::uuid${named}) AS ok`, values);
}

/** courier.extend: heartbeat for long work. */
export function extend(db: Queryable, receipt: string, visibilityTimeout: string, options: { strict?: boolean } = {}): Promise<boolean> {
    return settle(db, receipt, 'SELECT courier.extend($1::uuid, $2::interval, strict => $3::boolean) AS ok', [
        receipt,
        visibilityTimeout,
        options.strict ?? false,
    ]);
}

/** The gauges of courier.stats: what is in the queue now. */
export interface QueueGauges {
    ready: bigint;
    delayed: bigint;
    inFlight: bigint;
    dead: bigint;
}

export async function gauges(db: Queryable, queue: string): Promise<QueueGauges> {
    const { rows } = await db.query<{ ready: bigint; delayed: bigint; in_flight: bigint; dead: bigint }>(
        'SELECT ready, delayed, in_flight, dead FROM courier.stats($1::text)',
        [queue],
    );
    const r = rows[0]!;
    return { ready: r.ready, delayed: r.delayed, inFlight: r.in_flight, dead: r.dead };
}

/** Runs fn in a transaction on one connection of the pool: COMMIT if it returns, ROLLBACK if it throws. */
export async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    let broken = false;
    try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
    } catch (err) {
        // A connection that cannot even roll back is not given back to the pool.
        await client.query('ROLLBACK').catch(() => (broken = true));
        throw err;
    } finally {
        client.release(broken);
    }
}
