// Builds are durable jobs: a build a crash interrupted is queued again, and
// given up on, with a reason, after MAX_ATTEMPTS interruptions.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ControlPlane, MAX_ATTEMPTS, parseInput, systemClock } from "../../src/core/index.js";
import { MicrovmTokens } from "../../src/proxy/index.js";
import { SqliteStore } from "../../src/store/index.js";
import { eventually, imageRequest, tempDir } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";

async function plane(file: string, builder: ScriptedBuilder) {
  const store = await SqliteStore.open(file);
  const cp = new ControlPlane({
    store,
    clock: systemClock,
    scope: { region: "us-east-1", accountId: "000000000000" },
    host: { architecture: "X86_64", chipset: "INTEL", chipsetGeneration: "x" },
    tokens: new MicrovmTokens(new Uint8Array(32)),
    endpointFor: (id) => `https://${id}.microvm.localhost:7643`,
    builder,
    runtime: new ScriptedRuntime(),
  });
  await cp.start();
  return { cp, store, async close() { await cp.stop(); await store.close(); } };
}

const buildOf = async (cp: ControlPlane) => (await cp.listMicrovmImageBuilds(parseInput("ListMicrovmImageBuilds", { imageIdentifier: ARN, imageVersion: "1.0" }), { limit: 10 })).items[0]!;

test("an interrupted build is retried, then failed with a reason after MAX_ATTEMPTS", async () => {
  const dir = tempDir();
  const file = join(dir, "lmvm.db");
  try {
    let p = await plane(file, new ScriptedBuilder());
    await p.cp.createMicrovmImage(parseInput("CreateMicrovmImage", imageRequest("app")));
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      await eventually(async () => ((await buildOf(p.cp)).state === "IN_PROGRESS" ? true : undefined), "IN_PROGRESS");
      assert.equal((await buildOf(p.cp)).attempts, attempt);
      await p.close(); // the process dies with the build running
      p = await plane(file, new ScriptedBuilder());
      if (attempt < MAX_ATTEMPTS) {
        const b = await eventually(async () => {
          const b = await buildOf(p.cp);
          return b.state === "IN_PROGRESS" || b.state === "PENDING" ? b : undefined;
        }, "requeued");
        assert.ok(b.attempts >= attempt);
      }
    }
    const failed = await buildOf(p.cp);
    assert.equal(failed.state, "FAILED");
    assert.match(failed.stateReason!, /interrupted 3 times by a server restart/);
    const image = await p.cp.getMicrovmImage({ imageIdentifier: ARN });
    assert.equal(image.image.state, "CREATE_FAILED");
    assert.equal(image.image.latestFailedImageVersion, "1.0");
    await p.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("after a restart a re-queued build runs to completion", async () => {
  const dir = tempDir();
  const file = join(dir, "lmvm.db");
  try {
    let p = await plane(file, new ScriptedBuilder());
    await p.cp.createMicrovmImage(parseInput("CreateMicrovmImage", imageRequest("app")));
    await eventually(async () => ((await buildOf(p.cp)).state === "IN_PROGRESS" ? true : undefined), "IN_PROGRESS");
    await p.close();
    const builder = new ScriptedBuilder();
    p = await plane(file, builder);
    await builder.succeed();
    await eventually(async () => ((await p.cp.getMicrovmImage({ imageIdentifier: ARN })).image.state === "CREATED" ? true : undefined), "CREATED");
    assert.equal((await buildOf(p.cp)).attempts, 2);
    await p.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
