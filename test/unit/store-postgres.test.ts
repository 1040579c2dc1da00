// What the PostgreSQL store adds over SQLite's single connection, on a real
// PostgreSQL (a throwaway cluster, test/support/postgres.ts): transactions
// that read then write run concurrently on several connections, as they will
// from several API nodes, and must still never commit on a stale read (a lost
// update, a write skew past a limit); servers starting together migrate one
// database once; and what reads back is what SQLite gives.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Microvm, MicrovmImage, Store } from "../../src/core/index.js";
import { PostgresStore } from "../../src/store/index.js";
import pg from "pg";
import { until } from "../support/deadline.js";
import { freshDatabase, killPostgres, restartPostgres } from "../support/postgres.js";

const ACCT = "123456789012";
const arn = (name: string) => `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:${name}`;
const image = (name: string): MicrovmImage => ({
  arn: arn(name), accountId: ACCT, name, state: "CREATING", createdAt: new Date(1_000), updatedAt: new Date(1_000), currentVersion: "1.0", nextMajor: 2,
});
const microvm = (id: string): Microvm => ({
  id, accountId: ACCT, imageArn: arn("a"), imageVersion: "1.0", state: "PENDING", endpoint: `${id}.example`, config: {} as Microvm["config"],
  startedAt: new Date(2_000), updatedAt: new Date(2_000),
});
/** Lets the other transactions run between a transaction's read and its write, so they overlap. */
const pause = () => new Promise((r) => setTimeout(r, 20));

let url: string;
let stores: PostgresStore[] = [];

before(async () => {
  url = await freshDatabase();
});
after(async () => {
  await Promise.all(stores.map((s) => s.close()));
});

test("two servers starting together on one database migrate it once; both then share it", async () => {
  stores = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
  const [a, b] = stores as [PostgresStore, PostgresStore];
  await a.insertImage(image("a"));
  const seen = await b.getImage(arn("a"));
  assert.deepEqual(seen, image("a"), "times and numbers come back as the core's types, not strings");
  const reopened = await PostgresStore.open(url);
  stores.push(reopened);
  assert.equal((await reopened.listImages(ACCT, undefined, { limit: 10 })).items.length, 1, "a later start finds the schema and the rows");
});

test("one server per database: a second server's claim fails naming the database; once the first has closed, it succeeds", async () => {
  const first = await PostgresStore.open(url);
  const second = await PostgresStore.open(url);
  try {
    await first.claimServer(url);
    await assert.rejects(second.claimServer(url), /Another lmvm server already uses the database at .*: one server per database outside cluster mode \(with --cluster-dir and --cluster-listen, a second server is a standby/);
    await first.close();
    await second.claimServer(url);
  } finally {
    await first.close().catch(() => undefined);
    await second.close();
  }
});

test("read-then-write transactions on several connections lose no update", async () => {
  const [a, b] = stores as [PostgresStore, PostgresStore];
  const bump = (store: Store) => store.transaction(async (tx) => {
    const current = await tx.getImage(arn("a"));
    await pause();
    await tx.updateImage(arn("a"), { nextMajor: current!.nextMajor + 1 });
  });
  await Promise.all([bump(a), bump(b), bump(a), bump(b), bump(a)]);
  assert.equal((await a.getImage(arn("a")))!.nextMajor, 2 + 5, "each transaction saw the one before it");
});

test("a limit checked inside a transaction holds against concurrent transactions (no write skew)", async () => {
  const [a, b] = stores as [PostgresStore, PostgresStore];
  // As the memory quota: count what exists, insert only below the limit.
  const runIfRoom = (store: Store, id: string) => store.transaction(async (tx) => {
    const live = await tx.microvmsInStates(["PENDING", "RUNNING"]);
    await pause();
    if (live.length >= 2) return false;
    await tx.insertMicrovm(microvm(id));
    return true;
  });
  const ran = await Promise.all([runIfRoom(a, "m1"), runIfRoom(b, "m2"), runIfRoom(a, "m3"), runIfRoom(b, "m4")]);
  assert.equal(ran.filter(Boolean).length, 2, `ran: ${JSON.stringify(ran)}`);
  assert.equal((await a.microvmsInStates(["PENDING"])).length, 2);
});

test("a transaction that fails leaves nothing behind, and other errors are not retried", async () => {
  const [a] = stores as [PostgresStore];
  let runs = 0;
  await assert.rejects(a.transaction(async (tx) => {
    runs++;
    await tx.putTags(arn("a"), { k: "v" });
    throw new Error("changed my mind");
  }), /changed my mind/);
  assert.equal(runs, 1);
  assert.deepEqual(await a.getTags(arn("a")), {});
  await assert.rejects(a.transaction(async (tx) => {
    await tx.insertImage(image("b"));
    await tx.insertImage(image("b"));
  }), /duplicate key/);
  assert.equal(await a.getImage(arn("b")), undefined);
});

test("tags come back in code-unit order, as from SQLite, whatever the database's collation", async () => {
  const [a] = stores as [PostgresStore];
  await a.putTags(arn("a"), { b: "1", B: "2", a: "3", _: "4", "a-b": "5", ab: "6" });
  assert.deepEqual(Object.keys(await a.getTags(arn("a"))), ["B", "_", "a", "a-b", "ab", "b"]);
});

test("a database that cannot be reached is named in the error, without its password", async () => {
  await assert.rejects(PostgresStore.open("postgres://lmvm:s3cret@/nowhere?host=/nonexistent-socket-dir"), (err: Error) => {
    assert.match(err.message, /Cannot reach PostgreSQL at postgres:\/\/lmvm:\*\*\*@/);
    assert.doesNotMatch(err.message, /s3cret/);
    return true;
  });
});

// The server lock is a session advisory lock (pg_try_advisory_lock's key "lmvm"): its holders, read from pg_locks.
const SERVER_LOCK_KEY = 0x6c6d766d;
async function lockHolders(): Promise<number[]> {
  const admin = new pg.Client({ connectionString: url });
  try {
    await admin.connect();
    const r = await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted", [SERVER_LOCK_KEY]);
    return r.rows.map((row) => row.pid);
  } catch {
    return [];
  } finally {
    await admin.end().catch(() => undefined);
  }
}

test("the holder whose lock session ended (PostgreSQL killed and restarted) takes the server lock again, and a second server still cannot claim it", async () => {
  const holder = await PostgresStore.open(url);
  const second = await PostgresStore.open(url);
  const lost: string[] = [];
  holder.onServerLockLost((why) => lost.push(why));
  try {
    await holder.claimServer(url);
    const [before] = await lockHolders();
    assert.ok(before, "the claim holds the lock");
    await killPostgres();
    await restartPostgres();
    await until(30_000, "the holder to take the server lock again", async () => {
      const pids = await lockHolders();
      return pids.length === 1 && pids[0] !== before;
    });
    assert.equal(await second.tryClaimServer(), false, "the lock is the holder's again, not free");
    assert.deepEqual(lost, [], "the holder did not report a loss");
    assert.equal(await holder.tryClaimServer(), true);
  } finally {
    await holder.close();
    await second.close();
  }
  assert.deepEqual(await lockHolders(), [], "closing released it");
});

test("the holder whose lock session ended while another session took the lock first reports the loss, naming it", async () => {
  const holder = await PostgresStore.open(url);
  const lost: string[] = [];
  holder.onServerLockLost((why) => lost.push(why));
  const other = new pg.Client({ connectionString: url });
  const admin = new pg.Client({ connectionString: url });
  try {
    await holder.claimServer(url);
    const [pid] = await lockHolders();
    assert.ok(pid);
    await other.connect();
    await admin.connect();
    // Queued behind the holder: it gets the lock the moment the holder's session ends, before the holder can retake it.
    const waiting = other.query("SELECT pg_advisory_lock($1)", [SERVER_LOCK_KEY]);
    await until(10_000, "the other session to wait for the lock", async () =>
      (await admin.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted", [SERVER_LOCK_KEY])).rowCount === 1);
    await admin.query("SELECT pg_terminate_backend($1)", [pid]);
    await waiting;
    await until(10_000, "the holder to report the lost lock", () => lost.length > 0);
    assert.equal(lost.length, 1);
    assert.match(lost[0]!, /another API node holds the server lock now/);
    assert.equal(await holder.tryClaimServer(), false, "the holder does not hold it any more");
  } finally {
    await holder.close();
    await other.end().catch(() => undefined);
    await admin.end().catch(() => undefined);
  }
});
