// courier's SQL API as typed Drizzle calls: raw `sql` templates run with db.execute, on a
// database or a transaction (`tx`), so an enqueue or an ack joins the caller's transaction.
//
// What Drizzle on node-postgres does to these raw results, and what this file does about it:
// - Drizzle sets its own type parsers on every query (they override a Pool's `types`), and they
//   leave int8 as node-postgres's string and timestamptz as text: the rows are converted below
//   (BigInt for ids and counters, a Date for timestamps). Drizzle's own `bigint('...', { mode:
//   'bigint' })` columns are converted by Drizzle.
// - a JS array parameter goes to node-postgres as a PostgreSQL array, which jsonb rejects: a
//   payload is always JSON.stringify'd and cast with ::jsonb.
// - errors arrive wrapped in DrizzleQueryError; the SQLSTATE is on its `cause`.
// - db.execute never names a statement (PgBouncer-safe); `.prepare('name')` on a Drizzle query
//   does, which Debian's PgBouncer 1.18 cannot follow in transaction pooling.
import { sql, type SQL } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';

/** A Drizzle database or transaction. */
export type Db = Pick<NodePgDatabase<Record<string, never>>, 'execute'>;

export const LEASE_LOST = 'QC001';

/** The SQLSTATE of a database error, through Drizzle's wrapper. */
export function sqlstate(err: unknown): string | undefined {
    for (let e: unknown = err; e instanceof Error; e = e.cause) {
        const code = (e as { code?: unknown }).code;
        if (typeof code === 'string') return code;
    }
    return undefined;
}

export const isLeaseLost = (err: unknown): boolean => sqlstate(err) === LEASE_LOST;

/** A payload as a ::jsonb parameter; bigints become decimal strings. */
export function jsonb(value: unknown): SQL {
    return sql`${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}::jsonb`;
}

// Named arguments only when given, so courier's defaults apply otherwise.
function args(positional: SQL[], named: [string, SQL | undefined][]): SQL {
    const parts = [...positional];
    for (const [name, value] of named) if (value !== undefined) parts.push(sql`${sql.raw(name)} => ${value}`);
    return sql.join(parts, sql`, `);
}

const opt = (value: string | number | boolean | undefined, cast: string): SQL | undefined =>
    value === undefined ? undefined : sql`${value}::${sql.raw(cast)}`;

const parseTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ) as (text: string) => Date;

export async function enqueue(
    db: Db,
    queue: string,
    payload: unknown,
    options: { headers?: Record<string, unknown>; delay?: string; priority?: number; dedupKey?: string } = {},
): Promise<bigint> {
    const a = args(
        [sql`${queue}::text`, jsonb(payload)],
        [
            ['headers', options.headers === undefined ? undefined : jsonb(options.headers)],
            ['delay', opt(options.delay, 'interval')],
            ['priority', opt(options.priority, 'integer')],
            ['dedup_key', opt(options.dedupKey, 'text')],
        ],
    );
    const { rows } = await db.execute<{ id: string }>(sql`SELECT courier.enqueue(${a}) AS id`);
    return BigInt(rows[0]!.id);
}

export interface Leased<P> {
    id: bigint;
    receipt: string;
    payload: P;
    headers: Record<string, unknown> | null;
    attempt: number;
    enqueuedAt: Date;
    leaseExpiresAt: Date;
    priority: number;
    lastError: string | null;
}

type LeaseRow = {
    id: string;
    receipt: string;
    payload: unknown;
    headers: Record<string, unknown> | null;
    attempt: number;
    enqueued_at: string;
    lease_expires_at: string;
    priority: number;
    last_error: string | null;
};

export async function lease<P>(
    db: Db,
    queue: string,
    options: { batchSize?: number; visibilityTimeout?: string; wait?: string } = {},
): Promise<Leased<P>[]> {
    const a = args(
        [sql`${queue}::text`],
        [
            ['batch_size', opt(options.batchSize, 'integer')],
            ['visibility_timeout', opt(options.visibilityTimeout, 'interval')],
            ['wait', opt(options.wait, 'interval')],
        ],
    );
    const { rows } = await db.execute<LeaseRow>(sql`
        SELECT id, receipt, payload, headers, attempt, enqueued_at, lease_expires_at, priority, last_error
        FROM courier.lease(${a})`);
    return rows.map((r) => ({
        id: BigInt(r.id),
        receipt: r.receipt,
        payload: r.payload as P,
        headers: r.headers,
        attempt: r.attempt,
        enqueuedAt: parseTimestamptz(r.enqueued_at),
        leaseExpiresAt: parseTimestamptz(r.lease_expires_at),
        priority: r.priority,
        lastError: r.last_error,
    }));
}

/** Strict: raises QC001 (see isLeaseLost) when the lease was lost, aborting the transaction. */
export async function ack(db: Db, receipt: string, options: { strict?: boolean } = {}): Promise<boolean> {
    const { rows } = await db.execute<{ ok: boolean }>(sql`SELECT courier.ack(${receipt}::uuid, strict => ${options.strict ?? false}::boolean) AS ok`);
    return rows[0]!.ok;
}

export async function nack(db: Db, receipt: string, options: { retryIn?: string; error?: string; dead?: boolean; strict?: boolean } = {}): Promise<boolean> {
    const a = args(
        [sql`${receipt}::uuid`],
        [
            ['retry_in', opt(options.retryIn, 'interval')],
            ['error', opt(options.error, 'text')],
            ['dead', opt(options.dead, 'boolean')],
            ['strict', opt(options.strict, 'boolean')],
        ],
    );
    const { rows } = await db.execute<{ ok: boolean }>(sql`SELECT courier.nack(${a}) AS ok`);
    return rows[0]!.ok;
}

export interface Gauges {
    ready: bigint;
    delayed: bigint;
    inFlight: bigint;
    dead: bigint;
}

export async function gauges(db: Db, queue: string): Promise<Gauges> {
    const { rows } = await db.execute<{ ready: string; delayed: string; in_flight: string; dead: string }>(
        sql`SELECT ready, delayed, in_flight, dead FROM courier.stats(${queue}::text)`,
    );
    const r = rows[0]!;
    return { ready: BigInt(r.ready), delayed: BigInt(r.delayed), inFlight: BigInt(r.in_flight), dead: BigInt(r.dead) };
}
