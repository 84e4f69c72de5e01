// The application's tables as a Drizzle schema. Ids are int8 in `bigint` mode: Drizzle turns
// node-postgres's strings into BigInts for these columns itself (a JS number would round above
// 2^53, and the order ids here start above it).
import { bigint, integer, jsonb, pgTable, text } from 'drizzle-orm/pg-core';

export interface Item {
    sku: string;
    qty: number;
}

export const orders = pgTable('orders', {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity({ startWith: '9007199254740993' }),
    customer: text('customer').notNull(),
    // Drizzle JSON.stringifies a jsonb column's value, so an array is stored as a JSON array.
    items: jsonb('items').$type<Item[]>().notNull(),
});

export const shipments = pgTable('shipments', {
    orderId: bigint('order_id', { mode: 'bigint' })
        .primaryKey()
        .references(() => orders.id),
    messageId: bigint('message_id', { mode: 'bigint' }).notNull(),
    attempt: integer('attempt').notNull(),
    shipper: text('shipper').notNull(),
});
