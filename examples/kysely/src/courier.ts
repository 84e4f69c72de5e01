// courier's SQL API as typed Kysely calls. Each function takes a Kysely instance or a
// Transaction (a Transaction is a Kysely), so an enqueue or an ack joins the caller's
// transaction. The calls are raw `sql` templates: Kysely has no notion of courier's functions,
// and named arguments (`batch_size => ...`) are plain SQL.
//
// Kysely runs on node-postgres here, which brings its defaults: int8 as a string (see `types`
// in db.ts, which makes it a BigInt), and a JS array parameter sent as a PostgreSQL array, which
// jsonb rejects — so payloads are JSON.stringify'd and cast with ::jsonb. Kysely never names its
// statements, so all of this works through PgBouncer's transaction pooling.
import { sql, type Kysely, type RawBuilder } from 'kysely';

/** courier's SQLSTATE for a strict ack/nack/extend whose receipt no longer holds its lease. */
export const LEASE_LOST = 'QC001';

export function isLeaseLost(err: unknown): boolean {
    return err instanceof Error && (err as { code?: unknown }).code === LEASE_LOST;
}

/** A payload as a ::jsonb parameter; bigints (which JSON.stringify rejects) become strings. */
export function jsonb(value: unknown): RawBuilder<unknown> {
    return sql`${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}::jsonb`;
}

// Named arguments only when given, so courier's defaults apply otherwise.
function args(positional: RawBuilder<unknown>[], named: [string, RawBuilder<unknown> | undefined][]): RawBuilder<unknown> {
    const parts = [...positional];
    for (const [name, value] of named) if (value !== undefined) parts.push(sql`${sql.raw(name)} => ${value}`);
    return sql.join(parts);
}

const opt = <T>(value: T | undefined, cast: string): RawBuilder<unknown> | undefined =>
    value === undefined ? undefined : sql`${value}::${sql.raw(cast)}`;

export async function enqueue(
    db: Kysely<any>,
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
    const { rows } = await sql<{ id: bigint }>`SELECT courier.enqueue(${a}) AS id`.execute(db);
    return rows[0]!.id;
}

/** A leased message as courier.lease returns it; the payload type is the caller's claim. */
export interface Leased<P> {
    id: bigint;
    receipt: string;
    payload: P;
    headers: Record<string, unknown> | null;
    attempt: number;
    enqueued_at: Date;
    lease_expires_at: Date;
    priority: number;
    last_error: string | null;
}

export async function lease<P>(
    db: Kysely<any>,
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
    const { rows } = await sql<Leased<P>>`
        SELECT id, receipt, payload, headers, attempt, enqueued_at, lease_expires_at, priority, last_error
        FROM courier.lease(${a})`.execute(db);
    return rows;
}

/** Strict: raises QC001 (see isLeaseLost) when the lease was lost, aborting the transaction. */
export async function ack(db: Kysely<any>, receipt: string, options: { strict?: boolean } = {}): Promise<boolean> {
    const { rows } = await sql<{ ok: boolean }>`SELECT courier.ack(${receipt}::uuid, strict => ${options.strict ?? false}::boolean) AS ok`.execute(db);
    return rows[0]!.ok;
}

export async function nack(
    db: Kysely<any>,
    receipt: string,
    options: { retryIn?: string; error?: string; dead?: boolean; strict?: boolean } = {},
): Promise<boolean> {
    const a = args(
        [sql`${receipt}::uuid`],
        [
            ['retry_in', opt(options.retryIn, 'interval')],
            ['error', opt(options.error, 'text')],
            ['dead', opt(options.dead, 'boolean')],
            ['strict', opt(options.strict, 'boolean')],
        ],
    );
    const { rows } = await sql<{ ok: boolean }>`SELECT courier.nack(${a}) AS ok`.execute(db);
    return rows[0]!.ok;
}

export interface Gauges {
    ready: bigint;
    delayed: bigint;
    in_flight: bigint;
    dead: bigint;
}

export async function gauges(db: Kysely<any>, queue: string): Promise<Gauges> {
    const { rows } = await sql<Gauges>`SELECT ready, delayed, in_flight, dead FROM courier.stats(${queue}::text)`.execute(db);
    return rows[0]!;
}
