import type { Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// The audit trail (src/core/audit.ts): one row per API call, appended and
// never changed. `record` is the CloudTrail event as JSON; the other columns
// are the LookupEvents attributes it is found by. A call's resources get a
// row each in `audit_resources`, by ARN and by name. Newest first is `seq`
// descending: events are appended in the order their calls were answered.
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("audit_events")
    .addColumn("seq", ...t.seq)
    .addColumn("event_id", "text", (c) => c.notNull().unique())
    .addColumn("event_time", t.big, (c) => c.notNull())
    .addColumn("event_source", "text", (c) => c.notNull())
    .addColumn("event_name", "text", (c) => c.notNull())
    .addColumn("read_only", "integer", (c) => c.notNull())
    .addColumn("username", "text")
    .addColumn("access_key_id", "text")
    .addColumn("error_code", "text")
    .addColumn("record", "text", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("audit_by_time").on("audit_events").columns(["event_time", "seq"]).execute();
  await db.schema.createIndex("audit_by_name").on("audit_events").columns(["event_name", "seq"]).execute();
  await db.schema.createIndex("audit_by_source").on("audit_events").columns(["event_source", "seq"]).execute();
  await db.schema.createIndex("audit_by_user").on("audit_events").columns(["username", "seq"]).execute();
  await db.schema.createIndex("audit_by_key").on("audit_events").columns(["access_key_id", "seq"]).execute();
  await db.schema.createIndex("audit_by_read_only").on("audit_events").columns(["read_only", "seq"]).execute();

  await db.schema
    .createTable("audit_resources")
    .addColumn("event_seq", t.big, (c) => c.notNull())
    .addColumn("resource_type", "text", (c) => c.notNull())
    .addColumn("resource_name", "text", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("audit_resources_by_name").on("audit_resources").columns(["resource_name", "event_seq"]).execute();
  await db.schema.createIndex("audit_resources_by_type").on("audit_resources").columns(["resource_type", "event_seq"]).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable("audit_resources").execute();
  await db.schema.dropTable("audit_events").execute();
}
