// Runnable: DATABASE_URL=postgresql://... node dist/src/main.js
// Places three orders (and one that rolls back), ships them, and prints what happened.
import { gauges } from './courier.js';
import { connect, migrate, placeOrder, QUEUE, shipAll } from './shop.js';

const url = process.env.DATABASE_URL;
if (!url) {
    console.error('set DATABASE_URL, e.g. postgresql://postgres@127.0.0.1:5432/shop');
    process.exit(2);
}
const { db, pool } = connect(url);
try {
    await migrate(db);
    for (const customer of ['ada', 'grace', 'edsger']) {
        const { orderId, messageId } = await db.transaction((tx) => placeOrder(tx, customer, [{ sku: 'book', qty: 1 }]));
        console.log(`order ${orderId} placed, shipping job ${messageId} enqueued`);
    }
    await db
        .transaction(async (tx) => {
            await placeOrder(tx, 'mallory', [{ sku: 'card', qty: 99 }]);
            throw new Error('payment declined');
        })
        .catch((err: Error) => console.log(`order rolled back (${err.message}): no order, no job`));

    for (const outcome of await shipAll(db, 'main')) console.log(`order ${outcome.orderId}: ${outcome.status}`);
    const g = await gauges(db, QUEUE);
    console.log(`queue ${QUEUE}: ready ${g.ready}, in flight ${g.inFlight}, delayed ${g.delayed}, dead ${g.dead}`);
} finally {
    await pool.end();
}
