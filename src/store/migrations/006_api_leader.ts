import type { Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// Several API nodes on one database (docs/design.md, "Many hosts"): the one
// row (id 1) in which the API node that holds the server lock says where it
// is, so standby API nodes can relay to it and agents can ask it for
// execution-role credentials; and the check values of the secrets every API
// node must share (the master key, the root credentials, the endpoint CA),
// written by the first leader and kept by every later one, so a node with
// other secrets never takes over. Used only in cluster mode (PostgreSQL);
// the table exists on SQLite too so both dialects keep one schema.
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("api_leader")
    .addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("address", "text")
    .addColumn("started_at", t.big, (c) => c.notNull())
    .addColumn("key_check", "text", (c) => c.notNull())
    .addColumn("credentials_check", "text", (c) => c.notNull())
    .addColumn("endpoint_ca_check", "text", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable("api_leader").execute();
}
