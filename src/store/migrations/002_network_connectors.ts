import type { Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// Network connectors (the Lambda Core API) and their immutable versions.
// A version's configuration and, once provisioned, its rules are JSON.
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("network_connectors")
    .addColumn("seq", ...t.seq)
    .addColumn("id", "text", (c) => c.notNull().unique())
    .addColumn("account_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("arn", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("state_reason_code", "text")
    .addColumn("latest_version", "integer", (c) => c.notNull())
    .addColumn("next_version", "integer", (c) => c.notNull())
    .addColumn("last_update_status", "text")
    .addColumn("last_update_status_reason", "text")
    .addColumn("last_update_status_reason_code", "text")
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("connectors_by_name").unique().on("network_connectors").columns(["account_id", "name"]).execute();
  await db.schema.createIndex("connectors_by_state").on("network_connectors").column("state").execute();

  await db.schema
    .createTable("network_connector_versions")
    .addColumn("seq", ...t.seq)
    .addColumn("connector_id", "text", (c) => c.notNull())
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("state_reason_code", "text")
    .addColumn("configuration", "text", (c) => c.notNull())
    .addColumn("operator_role", "text")
    .addColumn("rules", "text")
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("connector_versions_by_connector").unique().on("network_connector_versions").columns(["connector_id", "version"]).execute();
  await db.schema.createIndex("connector_versions_by_state").on("network_connector_versions").column("state").execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable("network_connector_versions").execute();
  await db.schema.dropTable("network_connectors").execute();
}
