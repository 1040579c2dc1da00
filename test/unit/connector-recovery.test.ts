// A restart finishes what a killed server left of network connectors: a
// version still PENDING (host names not yet resolved) is provisioned again,
// an update in progress settles its LastUpdateStatus, and a DELETING
// connector is forgotten. The store is the real SQLite one; the resolver is
// the server's own (getaddrinfo).

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { ControlPlane, systemClock, type NetworkConnector, type NetworkConnectorVersion } from "../../src/core/index.js";
import { MicrovmTokens } from "../../src/proxy/index.js";
import { hostNameResolver } from "../../src/server/name-resolver.js";
import { SqliteStore } from "../../src/store/index.js";
import { tempDir } from "../support/platform.js";
import { ScriptedRuntime } from "../support/scripted.js";

const SCOPE = { region: "us-east-1", accountId: "000000000000" };
const CIDR = { HostEgressConfiguration: { Destinations: [{ Cidr: "10.77.0.0/24", Protocol: "tcp" as const }], NetworkProtocol: "IPv4" as const, AssociatedComputeResourceTypes: ["MicroVm"] } };
const LOOPBACK = { HostEgressConfiguration: { ...CIDR.HostEgressConfiguration, Destinations: [{ HostName: "localhost", Protocol: "tcp" as const }] } };

function connector(name: string, over: Partial<NetworkConnector> = {}): NetworkConnector {
  const at = new Date();
  return { id: `nc-${name.padEnd(17, "0")}`, accountId: SCOPE.accountId, name, arn: `arn:aws:lambda:us-east-1:000000000000:network-connector:${name}`, state: "PENDING", latestVersion: 1, nextVersion: 2, createdAt: at, updatedAt: at, ...over };
}
function version(c: NetworkConnector, n: number, over: Partial<NetworkConnectorVersion> = {}): NetworkConnectorVersion {
  const at = new Date();
  return { connectorId: c.id, version: n, state: "PENDING", configuration: CIDR, createdAt: at, updatedAt: at, ...over };
}

test("a restart provisions PENDING versions, settles updates in progress and finishes deletions", async () => {
  const file = join(tempDir(), "lmvm.db");
  const seed = await SqliteStore.open(file);
  const fresh = connector("fresh");
  const updating = connector("updating", { state: "ACTIVE", latestVersion: 1, nextVersion: 3, lastUpdateStatus: "InProgress" });
  const doomed = connector("doomed", { state: "DELETING" });
  for (const c of [fresh, updating, doomed]) await seed.insertConnector(c);
  await seed.insertConnectorVersion(version(fresh, 1));
  await seed.insertConnectorVersion(version(updating, 1, { state: "ACTIVE", rules: [{ cidrs: ["10.77.0.0/24"], protocol: "tcp" }] }));
  await seed.insertConnectorVersion(version(updating, 2, { configuration: LOOPBACK }));
  await seed.insertConnectorVersion(version(doomed, 1, { state: "ACTIVE" }));
  await seed.close();

  const store = await SqliteStore.open(file);
  const cp = new ControlPlane({
    store, clock: systemClock, runtime: new ScriptedRuntime(), scope: SCOPE, resolver: hostNameResolver,
    host: { architecture: "X86_64", chipset: "INTEL", chipsetGeneration: "x" },
    tokens: new MicrovmTokens(new Uint8Array(32)),
    endpointFor: (id) => `https://${id}.microvm.localhost:7643`,
  });
  try {
    await cp.start();
    await cp.connectors.settle();
    const f = await store.getConnector(fresh.id);
    assert.equal(f?.state, "ACTIVE");
    assert.deepEqual((await store.getConnectorVersion(fresh.id, 1))?.rules, [{ cidrs: ["10.77.0.0/24"], protocol: "tcp" }]);
    const u = await store.getConnector(updating.id);
    assert.equal(u?.state, "ACTIVE");
    assert.equal(u?.lastUpdateStatus, "Failed");
    assert.equal(u?.latestVersion, 1);
    assert.match(u?.lastUpdateStatusReason ?? "", /Version 2 failed, so version 1 stays in force: Host name localhost resolves to 127\.0\.0\.1/);
    assert.equal(await store.getConnector(doomed.id), undefined);
    assert.equal(await store.getConnectorVersion(doomed.id, 1), undefined);
  } finally {
    await cp.stop();
    await store.close();
  }
});
