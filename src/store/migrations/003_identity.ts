import { sql, type Kysely } from "kysely";
import type { ColumnTypes } from "./dialect.js";

// IAM users, their access keys (secrets sealed under the server key, never in
// clear), roles with their trust policies, and inline policies of users and
// roles. IAM names are unique regardless of case, so each name has a unique
// index on its lower-cased form; times are milliseconds since the epoch.
export async function up(db: Kysely<unknown>, t: ColumnTypes): Promise<void> {
  await db.schema
    .createTable("iam_users")
    .addColumn("user_name", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull().unique())
    .addColumn("path", "text", (c) => c.notNull())
    .addColumn("tags", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .execute();
  await sql`CREATE UNIQUE INDEX iam_users_by_lower_name ON iam_users (lower(user_name))`.execute(db);

  await db.schema
    .createTable("iam_access_keys")
    .addColumn("access_key_id", "text", (c) => c.primaryKey())
    .addColumn("user_name", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("sealed_secret", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("iam_access_keys_by_user").on("iam_access_keys").column("user_name").execute();

  await db.schema
    .createTable("iam_roles")
    .addColumn("role_name", "text", (c) => c.primaryKey())
    .addColumn("role_id", "text", (c) => c.notNull().unique())
    .addColumn("path", "text", (c) => c.notNull())
    .addColumn("trust_policy", "text", (c) => c.notNull())
    .addColumn("description", "text")
    .addColumn("max_session_duration", "integer", (c) => c.notNull())
    .addColumn("tags", "text", (c) => c.notNull())
    .addColumn("created_at", t.big, (c) => c.notNull())
    .execute();
  await sql`CREATE UNIQUE INDEX iam_roles_by_lower_name ON iam_roles (lower(role_name))`.execute(db);

  await db.schema
    .createTable("iam_policies")
    .addColumn("owner_kind", "text", (c) => c.notNull())
    .addColumn("owner_name", "text", (c) => c.notNull())
    .addColumn("policy_name", "text", (c) => c.notNull())
    .addColumn("document", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("iam_policies_pk", ["owner_kind", "owner_name", "policy_name"])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ["iam_policies", "iam_roles", "iam_access_keys", "iam_users"]) await db.schema.dropTable(t).execute();
}
