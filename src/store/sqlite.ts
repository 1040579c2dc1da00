// The embedded store: SQLite through better-sqlite3, queried with Kysely
// (the queries themselves are kysely.ts, shared with PostgreSQL). WAL mode
// with synchronous=FULL, so a transaction that returned is on disk even if
// the server is killed right after. One connection: Kysely runs one
// transaction at a time on it, so the core's read-then-write transactions
// never interleave.

import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect, type ExpressionBuilder, type SqliteDatabase as SqliteDatabaseLike } from "kysely";
import type { AuditEvent, Store } from "../core/index.js";
import { auditRows, KyselyStore, type Db, type Tables } from "./kysely.js";
import { migrations } from "./migrations/index.js";
import type { AuditBatch, AuditBatchResult, AuditRow } from "./audit-worker.js";

/**
 * Kysely's SQLite driver prepares every query anew; compiling the SQL was a
 * fifth of a GetMicrovmImage request's CPU time. Statements are reusable, and
 * the set of distinct queries is small and fixed, so keep them.
 */
function withStatementCache(sqlite: Database.Database): SqliteDatabaseLike {
  const cache = new Map<string, Database.Statement>();
  return {
    close: () => sqlite.close(),
    prepare: (text: string) => {
      // Transactions take the write lock when they begin: the audit writer thread (audit-worker.ts) commits on
      // its own connection, and a deferred transaction that read before that commit could not write after it
      // (SQLITE_BUSY_SNAPSHOT, which no busy timeout retries). Begun immediately, it waits its turn instead.
      const sql = text === "begin" ? "begin immediate" : text;
      let stmt = cache.get(sql);
      if (!stmt) {
        stmt = sqlite.prepare(sql);
        if (cache.size < 1000) cache.set(sql, stmt);
      }
      // Kysely prepares each statement right before it runs it: anything but a plain select (a write, one
      // with RETURNING, BEGIN, COMMIT, ROLLBACK, a pragma) drops the hot reads' copy (SqliteStore.hotRows).
      if (!stmt.reader || !sql.startsWith("select ")) {
        const state = hotStates.get(sqlite);
        if (state) {
          state.rows.clear();
          state.held = 0;
        }
      }
      if (sql === "rollback") {
        // SQLite rolls a transaction back by itself when a write fails for want of disk
        // (SQLITE_FULL) or on an I/O error; Kysely's ROLLBACK after that would fail with
        // "no transaction is active" and hide the cause from the caller.
        const rollback = stmt;
        return { reader: false, run: () => (sqlite.inTransaction ? rollback.run() : { changes: 0, lastInsertRowid: 0 }) } as unknown as ReturnType<SqliteDatabaseLike["prepare"]>;
      }
      return stmt as unknown as ReturnType<SqliteDatabaseLike["prepare"]>;
    },
  };
}

/** The audit writer thread (audit-worker.ts) as the store uses it: a batch in, a promise that resolves when it is on disk. */
class AuditWriter {
  private worker: Worker | undefined;
  /** Checkpoints the log off the writer's commits (audit-worker.ts). */
  private checkpointer: Worker | undefined;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (removed: number) => void; reject: (err: Error) => void }>();

  constructor(private readonly file: string) {}

  private start(): Worker {
    const worker = new Worker(new URL("./audit-worker.js", import.meta.url), { workerData: { file: this.file } });
    worker.unref();
    if (!this.checkpointer) {
      const checkpointer = new Worker(new URL("./audit-worker.js", import.meta.url), { workerData: { file: this.file, checkpointEveryMs: 5000 } });
      checkpointer.unref();
      checkpointer.on("error", () => undefined);
      checkpointer.on("exit", () => {
        if (this.checkpointer === checkpointer) this.checkpointer = undefined;
      });
      this.checkpointer = checkpointer;
    }
    worker.on("message", (r: AuditBatchResult) => {
      if (r.checkpoint) this.checkpointer?.postMessage("checkpoint");
      const w = this.waiting.get(r.id);
      if (!w) return;
      this.waiting.delete(r.id);
      if (!r.error) return w.resolve(r.removed ?? 0);
      w.reject(Object.assign(new Error(`audit write failed: ${r.error.message}`), r.error.code ? { code: r.error.code } : {}));
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`the audit writer thread exited (${code})`)));
    return worker;
  }

  private send(message: Omit<AuditBatch, "id">): Promise<number> {
    this.worker ??= this.start();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker!.postMessage({ id, ...message } as AuditBatch);
    });
  }

  async append(rows: AuditRow[]): Promise<void> {
    await this.send({ rows });
  }

  expire(before: Date): Promise<number> {
    return this.send({ expireBefore: before.getTime() });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    const checkpointer = this.checkpointer;
    this.worker = undefined;
    this.checkpointer = undefined;
    if (worker) await worker.terminate();
    if (checkpointer) await checkpointer.terminate();
  }
}

/**
 * The hot reads' state, one per connection: their prepared statements, and the
 * rows they read, by query and parameters. The rows are a copy of what the
 * database held when they were read, and the connection is the only writer of
 * the tables they come from (the audit writer thread writes only the audit
 * tables, on its own connection), so the copy is dropped whole whenever that
 * connection runs anything but a read: every write, BEGIN, COMMIT and ROLLBACK
 * (withStatementCache). A hot read never runs while a transaction is open, so
 * what it keeps was committed. Rows are mapped to fresh objects on every read:
 * no caller shares them.
 */
interface HotState { statements: Map<string, Database.Statement>; rows: Map<string, unknown[]>; held: number }
const hotStates = new WeakMap<Database.Database, HotState>();
/** The copy is dropped whole past this many rows in all (a page of images is up to 101 of them), so varied list queries cannot grow it without bound. */
const HOT_ROWS = 20_000;

function hotState(sqlite: Database.Database): HotState {
  let state = hotStates.get(sqlite);
  if (!state) hotStates.set(sqlite, (state = { statements: new Map(), rows: new Map(), held: 0 }));
  return state;
}

export class SqliteStore extends KyselyStore {
  private constructor(
    db: Db,
    private readonly root: Kysely<Tables>,
    inTransaction: boolean,
    private readonly sqlite: Database.Database,
  ) {
    super(db, inTransaction);
  }

  /** Opens (creating if needed) the database file and brings its schema up to date. */
  static async open(file: string): Promise<SqliteStore> {
    const sqlite = new Database(file);
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = FULL");
    sqlite.pragma("busy_timeout = 5000");
    const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
    const { error, results } = await new Migrator({ db, provider: migrations("sqlite") }).migrateToLatest();
    if (error) {
      await db.destroy();
      const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
      throw new Error(`Database migration ${failed} failed on ${file}: ${String(error)}`);
    }
    return new SqliteStore(db, db, false, sqlite);
  }

  async close(): Promise<void> {
    await this.auditWriter?.close();
    await this.root.destroy();
  }

  /**
   * The hot reads of the control API (an image, its tags, a version, a MicroVM, a
   * page of images) skip Kysely's query builder, which cost more CPU than SQLite's
   * own work: a prepared statement on the same connection, used only when no
   * transaction is open on it (inside one, or while another is open, the read
   * goes through Kysely, which queues it behind that transaction, so a read
   * never sees a write that has not committed). The database stays the truth.
   */
  protected override hotRows<R>(sql: string, ...params: unknown[]): R[] | undefined {
    if (this.inTransaction || this.sqlite.inTransaction) return undefined;
    const state = hotState(this.sqlite);
    const key = `${sql}\0${JSON.stringify(params)}`;
    let rows = state.rows.get(key);
    if (!rows) {
      let stmt = state.statements.get(sql);
      if (!stmt) state.statements.set(sql, (stmt = this.sqlite.prepare(sql)));
      rows = stmt.all(...params);
      if (state.held + rows.length > HOT_ROWS) {
        state.rows.clear();
        state.held = 0;
      }
      state.rows.set(key, rows);
      state.held += rows.length;
    }
    return rows as R[];
  }

  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inTransaction) return fn(this);
    return this.root.transaction().execute((trx) => fn(new SqliteStore(trx, this.root, true, this.sqlite)));
  }


  protected contains(eb: ExpressionBuilder<Tables, "images">, column: "name", text: string) {
    return eb(eb.fn("instr", [eb.ref(column), eb.val(text)]), ">", 0);
  }

  // Audit trail: appended, looked up; there is no way to change or remove an event.
  private auditWriter?: AuditWriter;

  async appendAuditEvents(events: AuditEvent[]): Promise<void> {
    if (!events.length) return;
    this.auditWriter ??= new AuditWriter(this.sqlite.name);
    await this.auditWriter.append(auditRows(events));
  }

  async expireAuditEvents(before: Date): Promise<number> {
    this.auditWriter ??= new AuditWriter(this.sqlite.name);
    return this.auditWriter.expire(before);
  }
}
