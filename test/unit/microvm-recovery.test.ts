// Recovery never ends a MicroVM it cannot inspect: a restart on a host that
// runs no sandboxes (NoSandboxes), or whose runtime fails to look, keeps every
// MicroVM as recorded and reaps nothing; the null runtime refuses new work
// with the reason instead of pretending.

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { ControlPlane, NoCapacity, NoSandboxes, parseInput, systemClock, type SandboxFound, type SandboxRuntime } from "../../src/core/index.js";
import { MicrovmTokens } from "../../src/proxy/index.js";
import { SqliteStore } from "../../src/store/index.js";
import { eventually, imageRequest, tempDir } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";

async function plane(file: string, runtime: SandboxRuntime) {
  const store = await SqliteStore.open(file);
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: {} });
  const cp = new ControlPlane({
    store, clock: systemClock, runtime, builder,
    scope: { region: "us-east-1", accountId: "000000000000" },
    host: { architecture: "X86_64", chipset: "INTEL", chipsetGeneration: "x" },
    tokens: new MicrovmTokens(new Uint8Array(32)),
    endpointFor: (id) => `https://${id}.microvm.localhost:7643`,
  });
  await cp.start();
  return { cp, async close() { await cp.stop(); await store.close(); } };
}

/** A runtime whose every look at the host fails (runsc broken, say). */
class BlindRuntime extends ScriptedRuntime {
  override async inspect(): Promise<SandboxFound> {
    throw new Error("runsc list failed: permission denied");
  }
}

test("a restart whose runtime cannot inspect MicroVMs keeps them RUNNING and SUSPENDED, and reaps nothing", async () => {
  const file = join(tempDir(), "lmvm.db");
  const first = await plane(file, new ScriptedRuntime());
  await first.cp.createMicrovmImage(parseInput("CreateMicrovmImage", imageRequest("app")));
  await eventually(async () => ((await first.cp.getMicrovmImage({ imageIdentifier: "app" })).image.state === "CREATED" ? true : undefined), "image");
  const state = async (cp: ControlPlane, id: string) => (await cp.getMicrovm({ microvmIdentifier: id })).state;
  const run = async () => (await first.cp.runMicrovm(parseInput("RunMicrovm", { imageIdentifier: ARN }))).id;
  const awake = await run();
  const asleep = await run();
  await eventually(async () => ((await state(first.cp, awake)) === "RUNNING" && (await state(first.cp, asleep)) === "RUNNING" ? true : undefined), "RUNNING");
  await first.cp.suspendMicrovm({ microvmIdentifier: asleep });
  await eventually(async () => ((await state(first.cp, asleep)) === "SUSPENDED" ? true : undefined), "SUSPENDED");
  await first.close();

  const none = new NoSandboxes("runsc is not installed (test).");
  const second = await plane(file, none);
  assert.equal(await state(second.cp, awake), "RUNNING");
  assert.equal(await state(second.cp, asleep), "SUSPENDED");
  await assert.rejects(second.cp.runMicrovm(parseInput("RunMicrovm", { imageIdentifier: ARN })), (err: Error) => err instanceof NoCapacity && /cannot run MicroVMs: this host runs no sandboxes: runsc is not installed/.test(err.message));
  await assert.rejects(second.cp.resumeMicrovm({ microvmIdentifier: asleep }), /stays SUSPENDED.*runs no sandboxes/);
  assert.equal(await state(second.cp, asleep), "SUSPENDED");
  await second.cp.microvms.checkSandboxes(); // nothing to watch: the RUNNING one is not presumed dead
  assert.equal(await state(second.cp, awake), "RUNNING");
  await second.close();

  const blind = new BlindRuntime();
  const third = await plane(file, blind);
  assert.equal(await state(third.cp, awake), "RUNNING");
  assert.equal(await state(third.cp, asleep), "SUSPENDED");
  assert.deepEqual(blind.calls.filter((c) => c.startsWith("reap") || c.startsWith("terminate")), [], "nothing is reaped or terminated");
  await third.close();
});

/** A runtime that can look at every MicroVM but one: `awake` is alive, `hidden` cannot be inspected. */
class OneBlindSpot extends ScriptedRuntime {
  constructor(private readonly awake: string, private readonly hidden: string) {
    super();
  }
  override async inspect(vm: Parameters<SandboxRuntime["inspect"]>[0]): Promise<SandboxFound> {
    this.calls.push(`inspect ${vm.id}`);
    if (vm.id === this.hidden) throw new Error("runsc events timed out");
    return { running: vm.id === this.awake, checkpoint: false };
  }
}

test("a MicroVM that cannot be inspected stops the reaping, not the adopting of the RUNNING ones that could be", async () => {
  const file = join(tempDir(), "lmvm.db");
  const first = await plane(file, new ScriptedRuntime());
  await first.cp.createMicrovmImage(parseInput("CreateMicrovmImage", imageRequest("app")));
  await eventually(async () => ((await first.cp.getMicrovmImage({ imageIdentifier: "app" })).image.state === "CREATED" ? true : undefined), "image");
  const state = async (cp: ControlPlane, id: string) => (await cp.getMicrovm({ microvmIdentifier: id })).state;
  const run = async () => (await first.cp.runMicrovm(parseInput("RunMicrovm", { imageIdentifier: ARN }))).id;
  const awake = await run();
  const hidden = await run();
  await eventually(async () => ((await state(first.cp, awake)) === "RUNNING" && (await state(first.cp, hidden)) === "RUNNING" ? true : undefined), "RUNNING");
  await first.close();

  const partly = new OneBlindSpot(awake, hidden);
  const second = await plane(file, partly);
  assert.equal(await state(second.cp, awake), "RUNNING");
  assert.equal(await state(second.cp, hidden), "RUNNING", "the MicroVM that could not be inspected is kept as recorded");
  assert.deepEqual(partly.calls.filter((c) => c.startsWith("reap") || c.startsWith("terminate")), [], "nothing is reaped or terminated");
  assert.deepEqual(partly.calls.filter((c) => c.startsWith("adopt")), [`adopt ${awake}`], "the running MicroVM that was inspected is taken over");
  await second.close();
});
