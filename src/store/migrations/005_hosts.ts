import type { Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// Many hosts (docs/design.md, "Many hosts"): the hosts whose agents run
// sandboxes, and each MicroVM's lease (its owner host and the fencing epoch
// that every placement bumps). Used only in cluster mode, which needs
// PostgreSQL; the tables exist on SQLite too so both dialects keep one schema.
// Times are milliseconds since the epoch, from the DATABASE's clock (so hosts'
// clocks never have to agree).
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("hosts")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("address", "text", (c) => c.notNull())
    .addColumn("memory_mib", t.big, (c) => c.notNull())
    .addColumn("free_memory_mib", t.big, (c) => c.notNull())
    .addColumn("cpus", "integer", (c) => c.notNull())
    .addColumn("disk_mib", t.big, (c) => c.notNull())
    .addColumn("free_disk_mib", t.big, (c) => c.notNull())
    .addColumn("architecture", "text", (c) => c.notNull())
    .addColumn("runsc_version", "text", (c) => c.notNull())
    .addColumn("platform", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("registered_at", t.big, (c) => c.notNull())
    .addColumn("heartbeat_at", t.big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("leases")
    .addColumn("microvm_id", "text", (c) => c.primaryKey())
    .addColumn("host_id", "text", (c) => c.notNull())
    .addColumn("epoch", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("leases_by_host").on("leases").column("host_id").execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable("leases").execute();
  await db.schema.dropTable("hosts").execute();
}
