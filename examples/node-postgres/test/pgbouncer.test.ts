// node-postgres behind Debian's PgBouncer 1.18 in transaction pooling, with one server
// connection in the pool (examples/node-test.sh starts it):
// - named prepared statements break (PgBouncer 1.18 cannot follow them between server
//   connections); node-postgres's default unnamed statements work;
// - a long-poll lease holds a server connection for as long as it waits, so everyone else
//   queues behind it: size the pool for the waiting consumers plus the rest;
// - the NOTIFY hint needs session pooling: in transaction pooling the LISTEN stays on a server
//   connection that is no longer the client's, and PgBouncer drops the notification.
//
// DATABASE_URL: the `bouncer` database through PgBouncer (transaction pooling, pool size 1);
// SESSION_DATABASE_URL: the same database through PgBouncer in session pooling;
// DIRECT_DATABASE_URL: the same database without PgBouncer; ADMIN_DATABASE_URL: PgBouncer's console.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { ack, enqueue, lease, sqlstate, types } from '../src/courier.js';

function env(name: string): string {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set`);
    return value;
}
const bouncerUrl = env('DATABASE_URL');
const sessionUrl = env('SESSION_DATABASE_URL');
const directUrl = env('DIRECT_DATABASE_URL');
const adminUrl = env('ADMIN_DATABASE_URL');
const database = new URL(bouncerUrl).pathname.slice(1);

const clients: pg.Client[] = [];
async function client(connectionString: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString, types });
    await c.connect();
    clients.push(c);
    return c;
}

interface Pool {
    cl_active: number;
    cl_waiting: number;
    sv_active: number;
    sv_idle: number;
    pool_mode: string;
}
let admin: pg.Client;
let direct: pg.Client;

/** PgBouncer's SHOW POOLS row for the test database (the console speaks the simple protocol:
 *  a query without parameters is sent that way). */
async function pool(): Promise<Pool> {
    const { rows } = await admin.query<Pool & { database: string }>('SHOW POOLS');
    const row = rows.find((r) => r.database === database);
    assert.ok(row, `no pool for ${database}`);
    return { cl_active: Number(row.cl_active), cl_waiting: Number(row.cl_waiting), sv_active: Number(row.sv_active), sv_idle: Number(row.sv_idle), pool_mode: row.pool_mode };
}

/** Polls a condition (bounded: 10 s), for states another connection reaches on its own time. */
async function until(what: string, condition: () => Promise<boolean>): Promise<void> {
    for (let i = 0; i < 500; i++) {
        if (await condition()) return;
        await sleep(20);
    }
    assert.fail(`timed out waiting until ${what}`);
}

before(async () => {
    admin = await client(adminUrl);
    direct = await client(directUrl);
    await direct.query("SELECT courier.create_queue('bouncer.waits', if_not_exists => true)");
    await direct.query("SELECT courier.create_queue('bouncer.hints', notify => true, if_not_exists => true)");
    await direct.query("SELECT courier.purge_queue('bouncer.waits'), courier.purge_queue('bouncer.hints')");
    // PgBouncer creates a pool at the first connection to its database.
    await (await client(bouncerUrl)).query('SELECT 1');
    assert.equal((await pool()).pool_mode, 'transaction');
});

after(async () => {
    await direct.query("SELECT courier.drop_queue('bouncer.waits'), courier.drop_queue('bouncer.hints')");
    await Promise.all(clients.map((c) => c.end()));
});

const LEASE = "SELECT id, receipt FROM courier.lease('bouncer.waits', batch_size => $1)";

test('named prepared statements break in transaction pooling; unnamed ones (the default) work', async () => {
    const x = await client(bouncerUrl);
    const y = await client(bouncerUrl);
    // node-postgres prepares a statement only when the query has a `name`; it then remembers it
    // per client and later sends only Bind/Execute. The statement lives on the server connection.
    await x.query({ name: 'courier_lease', text: LEASE, values: [1] });
    await x.query({ name: 'courier_lease', text: LEASE, values: [1] }); // same server connection: fine
    // Another client gets the same server connection, where the name is taken ...
    await assert.rejects(y.query({ name: 'courier_lease', text: LEASE, values: [1] }), (err) => sqlstate(err) === '42P05');
    // ... and once that server connection is gone (server_lifetime, a restart, or here RECONNECT),
    // the client that prepared it gets one that never heard of it.
    await admin.query(`RECONNECT ${database}`);
    await assert.rejects(x.query({ name: 'courier_lease', text: LEASE, values: [1] }), (err) => sqlstate(err) === '26000');

    // Unnamed statements (parse, bind and execute in one round trip) work on any server connection.
    const id = await enqueue(x, 'bouncer.waits', { n: 1 });
    await admin.query(`RECONNECT ${database}`);
    const [job] = await lease<{ n: number }>(y, 'bouncer.waits');
    assert.ok(job);
    assert.deepEqual([job.id, job.payload], [id, { n: 1 }]);
    await admin.query(`RECONNECT ${database}`);
    assert.equal(await ack(x, job.receipt, { strict: true }), true);
});

test('a long-poll lease holds a server connection for as long as it waits', async () => {
    const consumer = await client(bouncerUrl);
    const other = await client(bouncerUrl);
    const finished: string[] = [];

    const waiting = lease(consumer, 'bouncer.waits', { wait: '20 seconds' }).then((jobs) => {
        finished.push('lease');
        return jobs;
    });
    // The wait runs in a statement on the pool's only server connection ...
    await until('the lease is waiting on the server', async () => {
        const { rows } = await direct.query<{ n: bigint }>(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%courier.lease(%wait%'",
        );
        return rows[0]!.n === 1n;
    });
    assert.equal((await pool()).sv_active, 1);

    // ... so any other client of the pool, however small its query, waits for a server connection.
    const queued = other.query('SELECT 1').then(() => finished.push('SELECT 1'));
    await until('the other client waits for a server connection', async () => (await pool()).cl_waiting === 1);
    assert.deepEqual(finished, []);

    // A message ends the wait at once; only then does the other client get its turn.
    const id = await enqueue(direct, 'bouncer.waits', { n: 2 });
    const [job] = await waiting;
    await queued;
    assert.deepEqual(finished, ['lease', 'SELECT 1']);
    assert.ok(job);
    assert.equal(job.id, id);
    assert.equal(await ack(other, job.receipt, { strict: true }), true);
    assert.equal((await pool()).cl_waiting, 0);
});

test('the notify hint reaches a LISTEN in session pooling and is lost in transaction pooling', async () => {
    const pooled = await client(bouncerUrl);
    const session = await client(sessionUrl);
    const got = { pooled: [] as string[], session: [] as string[] };
    pooled.on('notification', (n) => got.pooled.push(n.payload ?? ''));
    session.on('notification', (n) => got.session.push(n.payload ?? ''));
    await pooled.query('LISTEN courier');
    await session.query('LISTEN courier');

    const id = await enqueue(direct, 'bouncer.hints', { n: 3 }); // commits: NOTIFY courier, 'bouncer.hints'
    await until('the session-pooled listener is notified', async () => got.session.length > 0);
    assert.deepEqual(got.session, ['bouncer.hints']);
    // The transaction-pooled client's LISTEN ran on a server connection that went back to the
    // pool; the notification reaches that connection while no client is linked to it, and
    // PgBouncer drops it ("got packet 'A' from server when not linked"). Give it every chance:
    await sleep(300);
    await pooled.query('SELECT 1');
    assert.deepEqual(got.pooled, []);

    // The hint says "lease now"; the message itself is there for any consumer.
    const [job] = await lease(session, 'bouncer.hints');
    assert.ok(job);
    assert.equal(job.id, id);
    assert.equal(await ack(session, job.receipt, { strict: true }), true);
});
