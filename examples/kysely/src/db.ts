// The application's tables as Kysely types, and a Kysely on node-postgres that reads int8 as
// BigInt (node-postgres's default is a string; a JS number would round ids above 2^53).
import { Kysely, PostgresDialect, type ColumnType } from 'kysely';
import pg from 'pg';

export interface Item {
    sku: string;
    qty: number;
}

export interface OrdersTable {
    id: ColumnType<bigint, never, never>; // GENERATED ALWAYS AS IDENTITY
    customer: string;
    items: ColumnType<Item[], string, string>; // inserted as JSON text: see placeOrder
}

export interface ShipmentsTable {
    order_id: bigint;
    message_id: bigint;
    attempt: number;
    shipper: string;
}

export interface Database {
    orders: OrdersTable;
    shipments: ShipmentsTable;
}

const INT8_OID = 20;
const types: pg.CustomTypesConfig = {
    getTypeParser: (oid, format) => (oid === INT8_OID ? BigInt : pg.types.getTypeParser(oid, format)),
};

export function connect(connectionString: string, max = 4): Kysely<Database> {
    return new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString, types, max }) }) });
}
