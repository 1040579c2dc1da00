// CPU room for RunMicrovm and resume: judged from the vCPUs the live MicroVMs
// were given and the CPU time their cgroups used a moment ago, never from the
// load average (which lags a minute behind and made an idle host refuse
// MicroVMs after a burst). Time is a fake clock; usage a scripted counter.

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { syncBuiltinESMExports } from "node:module";
import { test } from "node:test";
import type { ImageVersion, Microvm } from "../../src/core/index.js";
import type { EgressGateway, NetworkNamespaces } from "../../src/net/index.js";
import type { LogFiles } from "../../src/os/index.js";
import { Gvisor, MicrovmRuntime, SandboxCgroups } from "../../src/runtime/index.js";
import { CpuRoom, VCPUS_PER_CORE } from "../../src/runtime/cpu-room.js";
import { tempDir } from "../support/platform.js";

const version = (memoryMiB = 2048): ImageVersion => ({
  imageArn: "arn:aws:lambda:us-east-1:000000000000:microvm-image:app",
  version: "1.0",
  origin: "CREATE",
  state: "SUCCESSFUL",
  status: "ACTIVE",
  config: { baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/b", codeArtifact: { uri: "s3://b/k.zip" }, resources: [{ minimumMemoryInMiB: memoryMiB }] },
  createdAt: new Date(0),
  updatedAt: new Date(0),
});

/** A MicrovmRuntime whose snapshot is a tiny file: only its room check is driven. */
function runtimeOn(cores: number): MicrovmRuntime {
  const dataDir = tempDir();
  const snapshot = join(dataDir, "snapshot");
  mkdirSync(snapshot);
  writeFileSync(join(snapshot, "pages-1.img"), Buffer.alloc(4096));
  return new MicrovmRuntime({
    gvisor: new Gvisor({ stateRoot: join(dataDir, "runsc") }),
    nets: {} as NetworkNamespaces,
    egress: {} as EgressGateway,
    dataDir,
    microvmsDir: join(dataDir, "microvms"),
    logs: {} as LogFiles,
    locate: () => ({ rootfs: join(dataDir, "rootfs"), config: {}, snapshot }),
    minFreeMiB: 0,
    cgroups: new SandboxCgroups(join(dataDir, "no-cgroups")),
    cores,
  });
}

test("an idle host admits a MicroVM however high the load average a past burst left", async () => {
  const real = os.loadavg;
  os.loadavg = () => [99, 99, 99];
  syncBuiltinESMExports();
  try {
    assert.equal(await runtimeOn(2).shortage(version()), undefined);
  } finally {
    os.loadavg = real;
    syncBuiltinESMExports();
  }
});

test("concurrent starts cannot all be promised the same vCPUs: past 8 per core they are refused, naming the CPUs", async () => {
  const runtime = runtimeOn(2);
  const answers = await Promise.all(Array.from({ length: 20 }, () => runtime.shortage(version())));
  const refused = answers.filter((a) => a !== undefined);
  assert.equal(answers.length - refused.length, 2 * VCPUS_PER_CORE);
  for (const why of refused) assert.match(why!, /its CPUs are all given out: its MicroVMs hold 16 baseline vCPUs, this one needs 1, and the host gives out at most 16 \(8 per core on 2 cores\)/);
});

test("the reservation is the size's baseline: 2 cores take 64 of the smallest size (0.25 vCPU) and 4 of the largest (4 vCPUs)", async () => {
  for (const [memoryMiB, fits, needs] of [[512, 64, "0.25"], [8192, 4, "4"]] as const) {
    const runtime = runtimeOn(2);
    const answers = await Promise.all(Array.from({ length: fits + 3 }, () => runtime.shortage(version(memoryMiB))));
    const refused = answers.filter((a) => a !== undefined);
    assert.equal(answers.length - refused.length, fits, `${memoryMiB} MiB`);
    for (const why of refused) assert.match(why!, new RegExp(`hold 16 baseline vCPUs, this one needs ${needs.replace(".", "\\.")}, and the host gives out at most 16`));
  }
});

function room(cores: number) {
  let now = 0;
  const usage = new Map<string, number>();
  /** The sandbox each MicroVM runs in now; a resume gives it a new one, whose counter starts from zero. */
  const sandbox = new Map<string, string>();
  const cpu = new CpuRoom({
    cores, now: () => now, sampleEveryMs: 0,
    usageMicros: (id) => {
      const counter = sandbox.get(id) ?? id;
      const micros = usage.get(counter);
      return micros === undefined ? undefined : { counter, micros };
    },
  });
  /** Lets `ms` pass with each sandbox using `cores` of CPU, then samples. */
  const spend = (ms: number, perSandbox: Record<string, number>) => {
    now += ms;
    for (const [id, c] of Object.entries(perSandbox)) usage.set(id, (usage.get(id) ?? 0) + c * ms * 1000);
    cpu.sample();
  };
  /** The MicroVM now runs in sandbox `counter`, which has used `micros` already (a restore's own CPU time). */
  const resume = (id: string, counter: string, micros: number) => {
    sandbox.set(id, counter);
    usage.set(counter, micros);
  };
  return { cpu, spend, resume, later: (ms: number) => (now += ms) };
}

test("vCPUs given out: a MicroVM that would pass the overcommit is refused until another ends", () => {
  const { cpu } = room(2);
  for (let i = 0; i < 7; i++) cpu.hold(`vm-${i}`, 2);
  assert.equal(cpu.shortage(2, 0), undefined);
  assert.match(cpu.shortage(3, 0) ?? "", /all given out: its MicroVMs hold 14 baseline vCPUs, this one needs 3/);
  assert.match(cpu.shortage(1, 2) ?? "", /hold 16 baseline vCPUs, this one needs 1/, "promised vCPUs count as held");
  cpu.drop("vm-0");
  assert.equal(cpu.shortage(3, 0), undefined);
});

test("MicroVMs using nearly every core for 3 s refuse another; idle ones, a burst of a second, or one long past, do not", () => {
  const { cpu, spend, later } = room(2);
  cpu.hold("busy-a", 1);
  cpu.hold("busy-b", 1);
  cpu.hold("idle", 1);
  spend(0, { "busy-a": 0, "busy-b": 0, idle: 0 });
  const saturating = { "busy-a": 0.95, "busy-b": 0.9, idle: 0.05 };
  spend(1000, saturating);
  assert.equal(cpu.shortage(1, 0), undefined, "one saturated second (garbage collections in two MicroVMs at once, say) is a burst");
  spend(1000, saturating);
  assert.equal(cpu.shortage(1, 0), undefined);
  spend(1000, saturating);
  assert.match(cpu.shortage(1, 0) ?? "", /its CPUs are saturated: its MicroVMs used 1\.9 of its 2 cores over the last 3\.0 s/);
  spend(1000, { "busy-a": 0.1, "busy-b": 0.1, idle: 0.05 });
  assert.equal(cpu.shortage(1, 0), undefined, "the burst is over");
  for (let i = 0; i < 3; i++) spend(1000, { "busy-a": 1, "busy-b": 1 });
  assert.match(cpu.shortage(1, 0) ?? "", /saturated/);
  later(10_000);
  assert.equal(cpu.shortage(1, 0), undefined, "a sample 10 s old says nothing about now");
});

test("a suspended MicroVM's checkpoint, which took every core, does not refuse its resume right after", () => {
  const { cpu, spend } = room(2);
  cpu.hold("other", 1);
  cpu.hold("vm", 1);
  spend(0, { other: 0, vm: 0 });
  for (let i = 0; i < 3; i++) spend(1000, { other: 0.05, vm: 1.9 }); // runsc checkpoint at work in the sandbox
  assert.match(cpu.shortage(1, 0) ?? "", /saturated: its MicroVMs used 1\.9 of its 2 cores/);
  cpu.drop("vm"); // suspended: its sandbox is gone
  assert.equal(cpu.shortage(1, 0), undefined, "what is left used 0.05 cores");
  for (let i = 0; i < 3; i++) spend(1000, { other: 1.9 });
  assert.match(cpu.shortage(1, 0) ?? "", /saturated: its MicroVMs used 1\.9 of its 2 cores/, "the others' own use still counts");
});

test("a sandbox started within the window is not charged its whole life's CPU time", () => {
  const { cpu, spend } = room(2);
  cpu.hold("old", 1);
  spend(0, { old: 0 });
  cpu.hold("new", 1);
  spend(1000, { old: 0.1, new: 100 }); // "new" has no earlier reading: its counter's total is not this window's use
  assert.equal(cpu.shortage(1, 0), undefined);
});

test("a resumed MicroVM's new sandbox is not charged the difference between its counter and the old sandbox's", () => {
  const { cpu, spend, resume } = room(2);
  cpu.hold("other", 1);
  cpu.hold("vm", 1);
  spend(0, { other: 0, vm: 0 });
  spend(1000, { other: 0.01, vm: 0.2 }); // the first sandbox used 0.2 s in all
  cpu.drop("vm"); // suspended
  resume("vm", "vm-r1", 2_000_000); // its restore took 2 s of CPU in the new sandbox
  cpu.hold("vm", 1);
  spend(1000, { other: 0.01, "vm-r1": 0.01 });
  assert.equal(cpu.shortage(1, 0), undefined, "2 s of restore, minus the old sandbox's 0.2 s, is not 1.8 cores of use");
  for (let i = 0; i < 3; i++) spend(1000, { other: 0.95, "vm-r1": 0.95 });
  assert.match(cpu.shortage(1, 0) ?? "", /saturated: its MicroVMs used 1\.9 of its 2 cores/, "the new sandbox's own use counts from its second reading");
});

test("a version built without a snapshot (--no-snapshots) fails to run with the reason, and gives its promised room back", async () => {
  const runtime = runtimeOn(1);
  const vm = { id: "microvm-0123456789abcdef0", imageArn: version().imageArn, imageVersion: "1.0", config: {} } as unknown as Microvm;
  for (let i = 0; i < 3 * VCPUS_PER_CORE; i++) {
    assert.equal(await runtime.shortage(version()), undefined, `start ${i} fits`);
    await assert.rejects(runtime.run(vm, version()), /has no snapshot to start from \(it was built by a server started with --no-snapshots\)/);
  }
});
