// Public face of the store: the core's Store port on SQLite (the embedded default) or PostgreSQL.
export { SqliteStore } from "./sqlite.js";
export { PostgresStore, redactUrl } from "./postgres.js";
export { ClusterStore, HOST_STATES, type HostCapacity, type HostRecord, type HostState, type Lease, type LeaderRecord, type SecretChecks } from "./cluster.js";
