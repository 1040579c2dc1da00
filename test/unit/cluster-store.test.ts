// Cluster mode's host loss on a real PostgreSQL (a throwaway cluster, test/support/postgres.ts):
// marking a host LOST revokes, in the same transaction, only the leases placed before it counted
// as lost, and never a SUSPENDED MicroVM's.

import assert from "node:assert/strict";
import pg from "pg";
import { after, before, test } from "node:test";
import type { Microvm } from "../../src/core/index.js";
import { ClusterStore, PostgresStore } from "../../src/store/index.js";
import { freshDatabase } from "../support/postgres.js";

const ACCT = "123456789012";
const microvm = (id: string, state: Microvm["state"]): Microvm => ({
  id, accountId: ACCT, imageArn: `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:a`, imageVersion: "1.0", state, endpoint: `${id}.example`, config: {} as Microvm["config"],
  startedAt: new Date(2_000), updatedAt: new Date(2_000),
});
const host = (id: string) => ({ id, address: "10.0.0.1:7700", memoryMiB: 1024, freeMemoryMiB: 512, cpus: 2, diskMiB: 1024, freeDiskMiB: 512, architecture: "X86_64", runscVersion: "runsc version test", platform: "ptrace" });

let url: string;
let store: PostgresStore;
let cluster: ClusterStore;
let sql: pg.Client;

before(async () => {
  url = await freshDatabase();
  store = await PostgresStore.open(url);
  cluster = await ClusterStore.open(url);
  sql = new pg.Client({ connectionString: url });
  await sql.connect();
});
after(async () => {
  await sql?.end();
  await cluster?.close();
  await store?.close();
});

test("a lost host's leases are revoked with it, except a SUSPENDED MicroVM's and one placed after the loss", async () => {
  await cluster.registerHost(host("h1"));
  await cluster.registerHost(host("h2"));
  for (const [id, state] of [["microvm-00000000000000001", "RUNNING"], ["microvm-00000000000000002", "SUSPENDED"], ["microvm-00000000000000003", "RUNNING"]] as const) {
    await store.insertMicrovm(microvm(id, state));
    await cluster.placeLease(id, "h1");
  }
  await cluster.placeLease("microvm-00000000000000004", "h2");
  // h1's last heartbeat a minute ago; two of its leases placed then, the third just now (after the loss).
  await sql.query("update hosts set heartbeat_at = heartbeat_at - 60000 where id = 'h1'");
  await sql.query("update leases set updated_at = updated_at - 60000 where microvm_id in ('microvm-00000000000000001', 'microvm-00000000000000002')");
  const lost = await cluster.markLost(20_000);
  assert.deepEqual(lost.map((l) => l.host.id), ["h1"], "only the host past the deadline");
  assert.equal(lost[0]!.host.state, "LOST");
  assert.deepEqual(lost[0]!.revoked.map((l) => l.microvmId), ["microvm-00000000000000001"]);
  assert.deepEqual(await cluster.lease("microvm-00000000000000001"), { microvmId: "microvm-00000000000000001", hostId: "", epoch: 2 }, "revoked: no host, a newer epoch");
  assert.deepEqual(await cluster.lease("microvm-00000000000000002"), { microvmId: "microvm-00000000000000002", hostId: "h1", epoch: 1 }, "the suspended MicroVM's lease still names its checkpoint's host");
  assert.deepEqual(await cluster.lease("microvm-00000000000000003"), { microvmId: "microvm-00000000000000003", hostId: "h1", epoch: 1 }, "placed after the loss: kept");
  assert.equal((await cluster.lease("microvm-00000000000000004"))?.hostId, "h2");
  assert.deepEqual(await cluster.markLost(20_000), [], "a LOST host is not marked again");
});

test("restoreLease undoes only the placement of the given epoch", async () => {
  const id = "microvm-00000000000000005";
  await cluster.placeLease(id, "h1");
  const moved = await cluster.placeLease(id, "h2");
  await cluster.restoreLease(id, moved.epoch, "h1");
  assert.deepEqual(await cluster.lease(id), { microvmId: id, hostId: "h1", epoch: moved.epoch + 1 });
  await cluster.restoreLease(id, moved.epoch, "h2");
  assert.equal((await cluster.lease(id))?.hostId, "h1", "a stale epoch changes nothing");
});

test("the leader row: the first leader's secret checks are kept, later leaders overwrite only where they are; tryClaimServer says who holds the lock", async () => {
  assert.equal(await cluster.leader(), undefined, "no leader recorded yet");
  const checks = { key: "k1", credentials: "c1", endpointCa: "AA:BB" };
  assert.deepEqual(await cluster.recordLeader({ nodeId: "a/1", address: "10.0.0.5:7710", checks }), checks);
  const first = (await cluster.leader())!;
  assert.equal(first.nodeId, "a/1");
  assert.equal(first.address, "10.0.0.5:7710");
  assert.deepEqual(first.checks, checks);
  // A later leader (with other checks: the caller compares them and refuses) moves the address, never the checks.
  const kept = await cluster.recordLeader({ nodeId: "b/2", checks: { key: "k2", credentials: "c2", endpointCa: "CC" } });
  assert.deepEqual(kept, checks, "the recorded checks come back for the caller to compare");
  const second = (await cluster.leader())!;
  assert.equal(second.nodeId, "b/2");
  assert.equal(second.address, undefined, "a leader without --cluster-listen records no address");
  assert.ok(second.startedAt.getTime() >= first.startedAt.getTime());
  const a = await PostgresStore.open(url);
  const b = await PostgresStore.open(url);
  try {
    assert.equal(await a.tryClaimServer(), true);
    assert.equal(await a.tryClaimServer(), true, "the holder still holds it");
    assert.equal(await b.tryClaimServer(), false, "a standby's try fails while the leader holds it");
    await a.close();
    assert.equal(await b.tryClaimServer(), true, "and succeeds once the leader's session ended");
  } finally {
    await a.close().catch(() => undefined);
    await b.close();
  }
});
