// The shared store: PostgreSQL through `pg`, queried with Kysely (the queries
// themselves are kysely.ts, the same as SQLite's). What is PostgreSQL's own:
//
// - Transactions run SERIALIZABLE. The core reads then writes inside them
//   (a state check then the transition, a quota sum then the insert, an
//   idempotency token looked up then recorded); with several API nodes on one
//   database, PostgreSQL's serializable snapshot isolation makes such a
//   transaction fail (SQLSTATE 40001, or 40P01 for a deadlock) rather than
//   commit on a stale read. The store then runs the whole transaction again,
//   from a fresh snapshot, up to TRANSACTION_ATTEMPTS times with a short random
//   pause, so callers see a conflict only when contention lasts. What the core
//   does inside a transaction may therefore run more than once: it only
//   touches the store and in-memory state it overwrites.
// - Statements outside a transaction are single statements (or the store's own
//   short transactions, such as deleting an image with its versions) that
//   PostgreSQL's row locks order; they run at the session default, READ
//   COMMITTED.
// - A transaction that returned is durable: every session runs with
//   synchronous_commit=on, whatever the server's default, so COMMIT returns
//   once the commit record is flushed (PostgreSQL's group commit shares the
//   flush between concurrent commits).
// - bigint columns (times in milliseconds, sequence numbers) come back as
//   numbers, not strings: they stay far below 2^53.
// - The audit trail is written by the same pool, one transaction per batch
//   (the core's AuditRecorder already groups events into batches); no thread
//   is needed, since the queries do not block the event loop.

import pg from "pg";
import { Kysely, Migrator, PostgresDialect, sql, type ExpressionBuilder } from "kysely";
import type { AuditEvent, Store } from "../core/index.js";
import { auditRows, KyselyStore, type Db, type Tables } from "./kysely.js";
import { migrations } from "./migrations/index.js";

/** How many times a transaction runs before a serialization failure reaches the caller. */
const TRANSACTION_ATTEMPTS = 10;
/** Connections per server process. */
const POOL_SIZE = 10;
/** Audit events removed per expiry transaction, so appends are never held up long. */
const EXPIRE_CHUNK = 2000;

const INT8_OID = 20;

/** A serialization failure or deadlock: the transaction did nothing and may be run again. */
function retryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "40001" || code === "40P01";
}

/** The URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, "$1:***@");
}

/**
 * Makes a pool's lost connections errors to log, never a crash. pg-pool listens for a client's
 * 'error' only while the client is idle in the pool; one PostgreSQL drops while the client is
 * checked out (a restart or crash of PostgreSQL between two statements of a transaction, or
 * before its release) emits 'error' with nobody listening, which ends the process. Every client
 * gets a listener of its own when it connects: the query under way, if any, fails with the error
 * itself, and the pool drops the broken client when it is released.
 */
export function survivePostgresLoss(pool: pg.Pool, log?: (event: Record<string, unknown>) => void): void {
  pool.on("error", (err) => log?.({ msg: "postgresql connection lost", error: err.message }));
  pool.on("connect", (client) => client.on("error", (err) => log?.({ msg: "postgresql connection lost while in use", error: err.message })));
}

/** The advisory lock the one lmvm server of a database holds (pg_try_advisory_lock's key: "lmvm" in ASCII). */
const SERVER_LOCK_KEY = 0x6c6d766d;
/** The deadline of one try of the server lock (connect, then each query). */
const LOCK_TRY_MS = 2_000;
/** How often the holder whose lock session ended tries to take the lock again (a standby waits a grace first: api-nodes.ts). */
const LOCK_RETRY_MS = 250;
/** How often the holder checks its lock session answers. */
const LOCK_PING_MS = 2_000;
/**
 * How long that check may take: long enough that a slow database does not make the holder drop a
 * live session (and with it the lock), short enough to notice a silent one (a partition) about
 * when PostgreSQL drops it (~11 s, lockSession).
 */
const LOCK_PING_DEADLINE_MS = 10_000;

export class PostgresStore extends KyselyStore {
  /** The pool behind `root` (set by open). */
  private pool: pg.Pool | undefined;
  /** The connection holding the server lock (claimServer), its own (not the pool's), kept for the server's life. */
  private lockHolder: pg.Client | undefined;
  /** Whether this process holds, or is retaking, the server lock (claimed and not closed). */
  private claimed = false;
  private closing = false;
  /** Called when the lock's session ended and another process holds the lock now (onServerLockLost). */
  private lockLost: ((why: string) => void) | undefined;
  private lockLog: ((event: Record<string, unknown>) => void) | undefined;
  private watchTimer: NodeJS.Timeout | undefined;

  private constructor(
    db: Db,
    private readonly root: Kysely<Tables>,
    inTransaction: boolean,
  ) {
    super(db, inTransaction);
  }

  /**
   * Makes this process the database's one lmvm server, or fails saying another one is: a second
   * server on the same database would take the first one's MicroVMs (whose sandboxes it cannot
   * see) for lost and re-queue its builds. The lock is PostgreSQL's own (a session advisory lock
   * on a connection kept open), so it goes with the process however that ends.
   */
  async claimServer(url: string): Promise<void> {
    if (!(await this.tryClaimServer())) {
      throw new Error(`Another lmvm server already uses the database at ${redactUrl(url)}: one server per database outside cluster mode (with --cluster-dir and --cluster-listen, a second server is a standby API node that relays to the first and takes over when it dies). Stop that server, or give this one another database (--database).`);
    }
  }

  /**
   * Takes the server lock if no other process holds it; answers whether this process holds it
   * now. A standby API node (cluster mode) calls it every second until the leader's session ends.
   */
  async tryClaimServer(): Promise<boolean> {
    if (!this.pool || this.closing) return false;
    if (this.claimed) return !!this.lockHolder;
    const client = await this.lockSession();
    if (!client) return false;
    this.claimed = true;
    this.hold(client);
    return true;
  }

  /**
   * What to do when this process lost the server lock to another one (its lock session ended, a
   * PostgreSQL restart or a cut connection, and another process took the lock before this one
   * could take it again): the server must stop acting at once (it exits; a supervisor restarts it).
   */
  onServerLockLost(handler: (why: string) => void): void {
    this.lockLost = handler;
  }

  /**
   * A fresh connection of its own that holds the server lock, or undefined when another session
   * holds it; throws when PostgreSQL cannot be reached within LOCK_TRY_MS. Its session asks
   * PostgreSQL to drop it when the peer is dead (a power loss or a partition leaves no FIN): after
   * tcp_keepalives_idle + count x interval = 5 + 3 x 2 = 11 s idle, or 10 s of unacknowledged
   * sends (tcp_user_timeout), so a standby takes over in ~11-12 s, not after the OS's ~2 h.
   */
  private async lockSession(): Promise<pg.Client | undefined> {
    const client = new pg.Client({ ...(this.pool!.options as pg.ClientConfig), connectionTimeoutMillis: LOCK_TRY_MS, query_timeout: LOCK_TRY_MS, keepAlive: true, keepAliveInitialDelayMillis: 5_000 });
    client.on("error", () => undefined); // watched in hold(); a failed try throws from connect/query
    try {
      await client.connect();
      await client.query("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000");
      const r = await client.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1) AS locked", [SERVER_LOCK_KEY]);
      if (r.rows[0]?.locked) return client;
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    await client.end().catch(() => undefined);
    return undefined;
  }

  /** Keeps `client` as the lock's session and watches it: its end, an error, or a ping past LOCK_PING_DEADLINE_MS. */
  private hold(client: pg.Client): void {
    this.lockHolder = client;
    let gone = false;
    const lost = (why: string) => {
      if (gone || this.closing) return;
      gone = true;
      clearTimeout(this.watchTimer);
      if (this.lockHolder === client) this.lockHolder = undefined;
      void client.end().catch(() => undefined);
      this.lockLog?.({ level: "warn", msg: "the server lock's PostgreSQL session ended; taking the lock again", why });
      void this.retake(why);
    };
    client.on("error", (err: Error) => lost(err.message));
    client.on("end", () => lost("the connection closed"));
    // A connection that never errors (a partition) is found by a ping with a deadline.
    const ping = () => {
      this.watchTimer = setTimeout(() => {
        // pg reads a query's own query_timeout (its types omit it).
        client.query({ text: "SELECT 1", query_timeout: LOCK_PING_DEADLINE_MS } as pg.QueryConfig).then(ping, (err: Error) => lost(`a ping failed: ${err.message}`));
      }, LOCK_PING_MS);
    };
    ping();
  }

  /** After the lock's session ended: takes the lock again, every LOCK_RETRY_MS, until this process holds it or another one does. */
  private async retake(why: string): Promise<void> {
    for (;;) {
      if (this.closing) return;
      try {
        const client = await this.lockSession();
        if (this.closing) return void (await client?.end().catch(() => undefined));
        if (client) {
          this.lockLog?.({ msg: "the server lock is held again after its session ended", why });
          return this.hold(client);
        }
        const loss = `another API node holds the server lock now (this one's PostgreSQL session ended: ${why})`;
        if (this.lockLost) this.lockLost(loss);
        else this.lockLog?.({ level: "error", msg: loss });
        return;
      } catch {
        // PostgreSQL is not back yet: try again shortly, before a standby (which waits a grace) does.
      }
      await new Promise((r) => setTimeout(r, LOCK_RETRY_MS));
    }
  }

  /** When PostgreSQL last started (ms since the epoch): a standby sees a restart by it changing. */
  async postgresStartedAt(): Promise<number> {
    const r = await sql<{ at: Date }>`SELECT pg_postmaster_start_time() AS at`.execute(this.root);
    return new Date(r.rows[0]!.at).getTime();
  }

  /** Connects to the database at `url` (postgres://user[:password]@host[:port]/database) and brings its schema up to date. */
  static async open(url: string, log?: (event: Record<string, unknown>) => void): Promise<PostgresStore> {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new Error(`--database must be a postgres:// URL; got '${redactUrl(url)}'.`);
    const pool = new pg.Pool({
      connectionString: url,
      max: POOL_SIZE,
      application_name: "lmvm",
      connectionTimeoutMillis: 10_000,
      options: "-c synchronous_commit=on",
      types: {
        getTypeParser: ((oid: number, format?: "text" | "binary") =>
          oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
    });
    // A connection PostgreSQL dropped (a restart, a network cut) is not a crash: the pool opens a new one for the next query.
    survivePostgresLoss(pool, log);
    const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
    try {
      await db.selectNoFrom((eb) => eb.val(1).as("one")).execute();
    } catch (err) {
      await db.destroy();
      throw new Error(`Cannot reach PostgreSQL at ${redactUrl(url)}: ${(err as Error).message}`);
    }
    // Kysely's Migrator holds an advisory lock while it migrates, so API nodes starting together migrate once.
    const { error, results } = await new Migrator({ db, provider: migrations("postgres") }).migrateToLatest();
    if (error) {
      await db.destroy();
      const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
      throw new Error(`Database migration ${failed} failed on ${redactUrl(url)}: ${String(error)}`);
    }
    const store = new PostgresStore(db, db, false);
    store.pool = pool;
    store.lockLog = log;
    return store;
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.watchTimer);
    // Unlocked explicitly first: the session ending would release it too, but only once
    // PostgreSQL has noticed the closed connection, so a server started right after this one
    // stopped could find the lock still held.
    await this.lockHolder?.query("SELECT pg_advisory_unlock($1)", [SERVER_LOCK_KEY]).catch(() => undefined);
    // Closing the connection ends its session, and the server lock with it.
    await this.lockHolder?.end().catch(() => undefined);
    this.lockHolder = undefined;
    await this.root.destroy();
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inTransaction) return fn(this);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.root.transaction().setIsolationLevel("serializable").execute((trx) => fn(new PostgresStore(trx, this.root, true)));
      } catch (err) {
        if (!retryable(err) || attempt >= TRANSACTION_ATTEMPTS) throw err;
        // Random, growing pauses, so the transactions that collided do not collide again.
        await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
      }
    }
  }

  protected contains(eb: ExpressionBuilder<Tables, "images">, column: "name", text: string) {
    return eb(eb.fn("strpos", [eb.ref(column), eb.val(text)]), ">", 0);
  }

  // Audit trail: appended, looked up; there is no way to change or remove an event.
  async appendAuditEvents(events: AuditEvent[]): Promise<void> {
    if (!events.length) return;
    const rows = auditRows(events);
    await this.root.transaction().execute(async (trx) => {
      const inserted = await trx.insertInto("audit_events").values(rows.map(([eventId, time, source, name, readOnly, username, key, error, record]) => ({
        event_id: eventId, event_time: time, event_source: source, event_name: name, read_only: readOnly, username,
        access_key_id: key, error_code: error, record,
      }))).returning(["seq", "event_id"]).execute();
      const seqOf = new Map(inserted.map((r) => [r.event_id, r.seq]));
      const resources = rows.flatMap(([eventId, , , , , , , , , names]) =>
        names.map(([type, name]) => ({ event_seq: seqOf.get(eventId)!, resource_type: type, resource_name: name })));
      if (resources.length) await trx.insertInto("audit_resources").values(resources).execute();
    });
  }

  async expireAuditEvents(before: Date): Promise<number> {
    let removed = 0;
    for (;;) {
      const n = await this.root.transaction().execute(async (trx) => {
        const seqs = (await trx.selectFrom("audit_events").select("seq").where("event_time", "<", before.getTime()).orderBy("seq").limit(EXPIRE_CHUNK).execute()).map((r) => r.seq);
        if (!seqs.length) return 0;
        await trx.deleteFrom("audit_resources").where("event_seq", "in", seqs).execute();
        return Number((await trx.deleteFrom("audit_events").where("seq", "in", seqs).executeTakeFirst()).numDeletedRows);
      });
      if (!n) return removed;
      removed += n;
    }
  }
}
