import type { Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// Times are integer milliseconds since the epoch. `seq` gives every listable
// table a stable, never-reused order for pagination cursors.
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("images")
    .addColumn("seq", ...t.seq)
    .addColumn("arn", "text", (c) => c.notNull().unique())
    .addColumn("account_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("latest_active_version", "text")
    .addColumn("latest_failed_version", "text")
    .addColumn("current_version", "text", (c) => c.notNull())
    .addColumn("next_major", "integer", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("images_by_name").unique().on("images").columns(["account_id", "name"]).execute();
  await db.schema.createIndex("images_by_state").on("images").column("state").execute();

  await db.schema
    .createTable("image_versions")
    .addColumn("seq", ...t.seq)
    .addColumn("image_arn", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("origin", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("config", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("versions_by_image").unique().on("image_versions").columns(["image_arn", "version"]).execute();
  await db.schema.createIndex("versions_by_state").on("image_versions").column("state").execute();

  await db.schema
    .createTable("builds")
    .addColumn("seq", ...t.seq)
    .addColumn("build_id", "text", (c) => c.notNull().unique())
    .addColumn("image_arn", "text", (c) => c.notNull())
    .addColumn("image_version", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("architecture", "text", (c) => c.notNull())
    .addColumn("chipset", "text", (c) => c.notNull())
    .addColumn("chipset_generation", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("attempts", "integer", (c) => c.notNull())
    .addColumn("snapshot_build", "text")
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("builds_by_version").on("builds").columns(["image_arn", "image_version"]).execute();
  await db.schema.createIndex("builds_by_state").on("builds").column("state").execute();

  await db.schema
    .createTable("microvms")
    .addColumn("seq", ...t.seq)
    .addColumn("id", "text", (c) => c.notNull().unique())
    .addColumn("account_id", "text", (c) => c.notNull())
    .addColumn("image_arn", "text", (c) => c.notNull())
    .addColumn("image_version", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("state_reason", "text")
    .addColumn("endpoint", "text", (c) => c.notNull())
    .addColumn("config", "text", (c) => c.notNull())
    .addColumn("started_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .addColumn("terminated_at", t.big)
    .execute();
  await db.schema.createIndex("microvms_by_image").on("microvms").columns(["image_arn", "image_version"]).execute();
  await db.schema.createIndex("microvms_by_state").on("microvms").column("state").execute();

  await db.schema
    .createTable("tags")
    .addColumn("resource_arn", "text", (c) => c.notNull())
    .addColumn("key", "text", (c) => c.notNull())
    .addColumn("value", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("tags_pk", ["resource_arn", "key"])
    .execute();

  await db.schema
    .createTable("idempotency")
    .addColumn("account_id", "text", (c) => c.notNull())
    .addColumn("operation", "text", (c) => c.notNull())
    .addColumn("client_token", "text", (c) => c.notNull())
    .addColumn("request_hash", "text", (c) => c.notNull())
    .addColumn("response", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addPrimaryKeyConstraint("idempotency_pk", ["account_id", "operation", "client_token"])
    .execute();

  await db.schema
    .createTable("managed_image_versions")
    .addColumn("seq", ...t.seq)
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .addColumn("updated_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("managed_by_name").unique().on("managed_image_versions").columns(["name", "version"]).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ["managed_image_versions", "idempotency", "tags", "microvms", "builds", "image_versions", "images"]) {
    await db.schema.dropTable(t).execute();
  }
}
