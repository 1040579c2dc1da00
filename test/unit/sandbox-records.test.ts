// A MicroVM's sandbox record (its address above all, asked for on every
// proxied request) is kept in memory: read from sandbox.json once, as the
// process starts, and never again per request.

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { EgressGateway, NetworkNamespaces } from "../../src/net/index.js";
import { DEFAULT_CAPABILITIES } from "../../src/core/index.js";
import type { LogFiles } from "../../src/os/index.js";
import { Gvisor, MicrovmRuntime, SandboxCgroups, type SandboxRecord } from "../../src/runtime/index.js";
import { tempDir } from "../support/platform.js";

const ID = "microvm-0123456789abcdef0";

test("a MicroVM's address is loaded once at startup, not read from disk on every request", () => {
  const dataDir = tempDir();
  const rec: SandboxRecord = { networkIndex: 3, sandboxIp: "10.200.0.14", rootfs: "/nowhere", config: {}, hooks: {}, logging: true, // Limits as a server before sizes and capabilities wrote them.
    limits: { memoryMiB: 1024, vcpus: 1 } as SandboxRecord["limits"] };
  mkdirSync(join(dataDir, "microvms", ID), { recursive: true });
  writeFileSync(join(dataDir, "microvms", ID, "sandbox.json"), JSON.stringify(rec));
  const runtime = new MicrovmRuntime({
    gvisor: new Gvisor({ stateRoot: join(dataDir, "runsc") }),
    nets: {} as NetworkNamespaces,
    egress: {} as EgressGateway,
    dataDir,
    microvmsDir: join(dataDir, "microvms"),
    logs: {} as LogFiles,
    locate: () => { throw new Error("not asked"); },
    cgroups: new SandboxCgroups(join(dataDir, "no-cgroups")),
  });
  assert.equal(runtime.address(ID), "10.200.0.14");
  assert.deepEqual(runtime.record(ID)!.limits, { memoryMiB: 1024, vcpus: 1, peakMemoryMiB: 1024, peakVcpus: 1, diskMiB: 10240, capabilities: [...DEFAULT_CAPABILITIES] }, "an old record's limits read as they were enforced");
  writeFileSync(join(dataDir, "microvms", ID, "sandbox.json"), "{ torn");
  for (let i = 0; i < 3; i++) assert.equal(runtime.address(ID), "10.200.0.14", "the address comes from memory");
  assert.equal(runtime.address("microvm-fffffffffffffffff"), undefined);
});
