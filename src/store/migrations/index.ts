// Every schema migration, in order. Kysely's Migrator records which ran in
// its own table; add a new file and a line here to change the schema. The
// same migrations run on SQLite and PostgreSQL (dialect.ts: the few column
// types that differ).
import type { Kysely, Migration, MigrationProvider } from "kysely";
import { columnTypes, type Dialect } from "./dialect.js";
import * as initial from "./001_initial.js";
import * as networkConnectors from "./002_network_connectors.js";
import * as identity from "./003_identity.js";
import * as audit from "./004_audit.js";
import * as hosts from "./005_hosts.js";
import * as apiLeader from "./006_api_leader.js";

type Step = { up(db: Kysely<unknown>, t: ReturnType<typeof columnTypes>): Promise<void>; down(db: Kysely<unknown>): Promise<void> };

const all: Record<string, Step> = {
  "001_initial": initial,
  "002_network_connectors": networkConnectors,
  "003_identity": identity,
  "004_audit": audit,
  "005_hosts": hosts,
  "006_api_leader": apiLeader,
};

export type { Dialect };

export function migrations(dialect: Dialect): MigrationProvider {
  const t = columnTypes(dialect);
  const steps: Record<string, Migration> = Object.fromEntries(
    Object.entries(all).map(([name, step]) => [name, { up: (db: Kysely<unknown>) => step.up(db, t), down: (db: Kysely<unknown>) => step.down(db) }]),
  );
  return { getMigrations: async () => steps };
}
