// Host loss after a database outage, on a real PostgreSQL (a throwaway cluster): agents cannot
// heartbeat while the database is unreachable, so once it answers again the server gives them a
// whole deadline before it declares any host lost. A server that just started (or took over) does
// the same: the outage may have ended just before it.

import assert from "node:assert/strict";
import pg from "pg";
import { after, before, test } from "node:test";
import { RemoteRuntime } from "../../src/cluster/index.js";
import { ClusterStore } from "../../src/store/index.js";
import { eventually } from "../support/platform.js";
import { freshDatabase } from "../support/postgres.js";

const host = (id: string) => ({ id, address: "10.0.0.1:7700", memoryMiB: 1024, freeMemoryMiB: 512, cpus: 2, diskMiB: 1024, freeDiskMiB: 512, architecture: "X86_64", runscVersion: "runsc version test", platform: "ptrace" });
const DEADLINE_MS = 5_000;

let url: string;
let sql: pg.Client;
const stores: ClusterStore[] = [];

before(async () => {
  url = await freshDatabase();
  sql = new pg.Client({ connectionString: url });
  await sql.connect();
});
after(async () => {
  await sql?.end();
  for (const s of stores) await s.close().catch(() => undefined);
});

test("a database outage longer than the loss deadline does not make every host lost once it is back", async () => {
  const open = async () => {
    const s = await ClusterStore.open(url);
    stores.push(s);
    return s;
  };
  let current = await open();
  // The runtime's store, switched under it: the real one, then one whose pool has ended (every query fails, as with the database down), then a new one.
  const cluster = new Proxy({} as ClusterStore, { get: (_t, name) => { const v = (current as unknown as Record<string | symbol, unknown>)[name]; return typeof v === "function" ? v.bind(current) : v; } });
  await current.registerHost(host("stale-before"));
  await sql.query("update hosts set heartbeat_at = heartbeat_at - 60000 where id = 'stale-before'");
  const events: Record<string, unknown>[] = [];
  const runtime = new RemoteRuntime({
    cluster, tls: { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) } as never, platform: "ptrace", architecture: "X86_64",
    log: (e) => events.push(e), hostLostMs: DEADLINE_MS, sharedCheckpoints: false,
  });
  try {
    await runtime.checkHosts();
    const state = async (id: string) => (await current.listHosts()).find((h) => h.id === id)?.state;
    assert.equal(await state("stale-before"), "ACTIVE", "a server just started declares no host lost before a whole deadline");
    await eventually(async () => {
      await runtime.checkHosts();
      return (await state("stale-before")) === "LOST" ? true : undefined;
    }, "the host silent since before the start to be declared lost", 4 * DEADLINE_MS);
    await current.registerHost(host("stale-during")); // heartbeating until the outage
    // The outage: the check fails; meanwhile the other host's heartbeat goes stale (it could not write it).
    const down = current;
    await down.close();
    await runtime.checkHosts();
    assert.ok(events.some((e) => e.msg === "checking hosts' heartbeats failed"), "the failed check is logged");
    current = await open();
    await sql.query("update hosts set heartbeat_at = heartbeat_at - 60000 where id = 'stale-during'");
    await runtime.checkHosts();
    assert.equal(await state("stale-during"), "ACTIVE", "just after the outage, no host is declared lost");
    assert.ok(events.some((e) => /answers again/.test(String(e.msg))), "and the server says why");
    // Still silent a whole deadline after the outage (counted from the first check that succeeded, the runtime's own timer's or this test's): lost.
    await eventually(async () => {
      await runtime.checkHosts();
      return (await state("stale-during")) === "LOST" ? true : undefined;
    }, "the host silent since the outage to be declared lost", 4 * DEADLINE_MS);
  } finally {
    await runtime.stop();
  }
});
