// Public face of the store: the SQLite implementation of the core's Store port.
export { SqliteStore } from "./sqlite.js";
