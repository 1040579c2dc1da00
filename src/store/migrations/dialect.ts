// What the migrations write differently for each database. Every migration
// runs on SQLite and on PostgreSQL; the SQLite column types are exactly the
// ones these migrations always created there, so existing data directories
// are untouched. On PostgreSQL, `integer` is 32 bits: times (milliseconds
// since the epoch) and sequence numbers need `bigint`, and a sequence column
// is an identity column rather than SQLite's AUTOINCREMENT rowid.
import type { ColumnDefinitionBuilder } from "kysely";

export type Dialect = "sqlite" | "postgres";

export interface ColumnTypes {
  /** A table's `seq`: its primary key, increasing and never reused (pagination cursors). */
  seq: ["integer" | "bigint", (c: ColumnDefinitionBuilder) => ColumnDefinitionBuilder];
  /** Milliseconds since the epoch, or a reference to another table's `seq`. */
  big: "integer" | "bigint";
}

export function columnTypes(dialect: Dialect): ColumnTypes {
  return dialect === "sqlite"
    ? { seq: ["integer", (c) => c.primaryKey().autoIncrement()], big: "integer" }
    : { seq: ["bigint", (c) => c.primaryKey().generatedByDefaultAsIdentity()], big: "bigint" };
}
