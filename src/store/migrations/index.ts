// Every schema migration, in order. Kysely's Migrator records which ran in
// its own table; add a new file and a line here to change the schema.
import type { Migration, MigrationProvider } from "kysely";
import * as initial from "./001_initial.js";
import * as networkConnectors from "./002_network_connectors.js";
import * as identity from "./003_identity.js";
import * as audit from "./004_audit.js";

const all: Record<string, Migration> = {
  "001_initial": initial,
  "002_network_connectors": networkConnectors,
  "003_identity": identity,
  "004_audit": audit,
};

export const migrations: MigrationProvider = {
  getMigrations: async () => all,
};
