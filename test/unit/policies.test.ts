// Idle and lifetime policies, driven by a fake clock: no test waits for real time to pass.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ControlPlane, parseInput, type Clock } from "../../src/core/index.js";
import { MicrovmTokens } from "../../src/proxy/index.js";
import { SqliteStore } from "../../src/store/index.js";
import { eventually, imageRequest, tempDir } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";
let now = Date.parse("2026-01-01T00:00:00Z");
const clock: Clock = { now: () => new Date(now) };
const advance = (seconds: number) => (now += seconds * 1000);

const dir = tempDir();
let store: SqliteStore;
let cp: ControlPlane;
const runtime = new ScriptedRuntime();

before(async () => {
  store = await SqliteStore.open(join(dir, "lmvm.db"));
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: {} });
  cp = new ControlPlane({
    store, clock, runtime, builder,
    scope: { region: "us-east-1", accountId: "000000000000" },
    host: { architecture: "X86_64", chipset: "INTEL", chipsetGeneration: "x" },
    tokens: new MicrovmTokens(new Uint8Array(32)),
    endpointFor: (id) => `https://${id}.microvm.localhost:7643`,
  });
  await cp.managed.register();
  await cp.createMicrovmImage(parseInput("CreateMicrovmImage", imageRequest("app")));
  await eventually(async () => ((await cp.getMicrovmImage({ imageIdentifier: "app" })).image.state === "CREATED" ? true : undefined), "image");
});
after(async () => {
  await cp.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function runVm(extra: Record<string, unknown>): Promise<string> {
  const vm = await cp.runMicrovm(parseInput("RunMicrovm", { imageIdentifier: ARN, ...extra }));
  await eventually(async () => ((await cp.getMicrovm({ microvmIdentifier: vm.id })).state === "RUNNING" ? true : undefined), "RUNNING");
  return vm.id;
}
const stateOf = async (id: string) => (await cp.getMicrovm({ microvmIdentifier: id }));
const settles = (id: string, state: string) => eventually(async () => ((await stateOf(id)).state === state ? true : undefined), state);

test("an idle MicroVM is suspended after maxIdleDurationSeconds without traffic, and traffic postpones it", async () => {
  const id = await runVm({ idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 120, autoResumeEnabled: true } });
  advance(50);
  cp.policies.activity(id);
  advance(50);
  assert.deepEqual(await cp.policies.sweep(), [], "50 s since the last request is not idle enough");
  advance(10);
  const actions = await cp.policies.sweep();
  assert.deepEqual(actions.map((a) => [a.microvmId, a.action]), [[id, "suspend"]]);
  await settles(id, "SUSPENDED");
  assert.match((await stateOf(id)).stateReason!, /no inbound traffic for 60 s/);
});

test("a MicroVM suspended for suspendedDurationSeconds is terminated", async () => {
  const id = await runVm({ idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 120, autoResumeEnabled: false } });
  await cp.suspendMicrovm({ microvmIdentifier: id });
  await settles(id, "SUSPENDED");
  advance(119);
  assert.ok(!(await cp.policies.sweep()).some((a) => a.microvmId === id));
  advance(1);
  await cp.policies.sweep();
  await settles(id, "TERMINATED");
  assert.match((await stateOf(id)).stateReason!, /suspended for 120 s/);
});

test("maximumDurationInSeconds ends a MicroVM, suspended time counting too", async () => {
  const id = await runVm({ maximumDurationInSeconds: 300 });
  advance(100);
  await cp.suspendMicrovm({ microvmIdentifier: id });
  await settles(id, "SUSPENDED");
  advance(199);
  assert.ok(!(await cp.policies.sweep()).some((a) => a.microvmId === id));
  advance(1);
  await cp.policies.sweep();
  await settles(id, "TERMINATED");
  assert.match((await stateOf(id)).stateReason!, /maximumDurationInSeconds \(300 s\)/);
});

test("without an idlePolicy a MicroVM is never suspended for idleness", async () => {
  const id = await runVm({});
  advance(7 * 3600);
  assert.ok(!(await cp.policies.sweep()).some((a) => a.microvmId === id));
  assert.equal((await stateOf(id)).state, "RUNNING");
});

test("an unsettled MicroVM is left to the sandbox check: no policy acts on it until it is settled", async () => {
  const id = await runVm({ maximumDurationInSeconds: 60 });
  await cp.microvms.suspend(id);
  await settles(id, "SUSPENDED");
  // The store down as the resume is recorded: the sandbox runs, the row still says SUSPENDED.
  const original = store.transaction;
  store.transaction = async () => {
    throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
  };
  try {
    await assert.rejects(cp.microvms.resume(id), /ECONNREFUSED/);
  } finally {
    store.transaction = original;
  }
  advance(61);
  const mine = async () => (await cp.policies.sweep()).filter((a) => a.microvmId === id).map((a) => a.action);
  assert.deepEqual(await mine(), [], "not terminated while its record may be behind its sandbox");
  await cp.microvms.checkSandboxes();
  assert.equal((await stateOf(id)).state, "RUNNING", "settled from the running sandbox");
  assert.deepEqual(await mine(), ["terminate"]);
  await settles(id, "TERMINATED");
});
