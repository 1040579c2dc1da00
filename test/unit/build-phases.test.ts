// Build phases end: at their deadline (naming the phase), when the build is
// cancelled, and even when the work ignores its signal. Timers are mocked.

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { BuildFailure } from "../../src/core/index.js";
import { parsePhaseTimeouts } from "../../src/builder/index.js";
import { BuildCancelled, runPhase, STOP_GRACE_MS } from "../../src/builder/phases.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());

const flush = () => new Promise((r) => setImmediate(r));
const never = () => new Promise<never>(() => undefined);

async function outcome(p: Promise<unknown>): Promise<{ settled: boolean; error?: unknown }> {
  const state: { settled: boolean; error?: unknown } = { settled: false };
  p.then(() => (state.settled = true), (error) => Object.assign(state, { settled: true, error }));
  return state;
}

test("a phase that passes its deadline is asked to stop and fails naming the phase and the deadline", async () => {
  let asked = false;
  const state = await outcome(runPhase("buildah", 20 * 60, new AbortController().signal, (signal) => new Promise((_, reject) => {
    signal.addEventListener("abort", () => {
      asked = true;
      reject(new Error("killed"));
    });
  })));
  mock.timers.tick(20 * 60 * 1000 - 1);
  await flush();
  assert.equal(state.settled, false);
  mock.timers.tick(1);
  await flush();
  assert.ok(asked, "the work's signal aborted at the deadline");
  assert.ok(state.error instanceof BuildFailure);
  assert.match((state.error as Error).message, /^The buildah phase did not finish within 20 minutes; .*--build-phase-timeouts buildah=/);
});

test("a phase whose work ignores its signal still ends, STOP_GRACE_MS after its deadline", async () => {
  const state = await outcome(runPhase("snapshot", 90, new AbortController().signal, never));
  mock.timers.tick(90_000);
  await flush();
  assert.equal(state.settled, false, "the work gets a grace period to stop what it started");
  mock.timers.tick(STOP_GRACE_MS);
  await flush();
  assert.match((state.error as Error).message, /^The snapshot phase did not finish within 90 seconds/);
});

test("cancelling the build ends the phase with BuildCancelled, not a deadline failure", async () => {
  const build = new AbortController();
  const state = await outcome(runPhase("fetch", 600, build.signal, (signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("stopped"))))));
  build.abort();
  await flush();
  assert.ok(state.error instanceof BuildCancelled);
  await assert.rejects(runPhase("unpack", 60, build.signal, never), BuildCancelled, "a cancelled build starts no further phase");
});

test("a phase's own failure and result pass through unchanged", async () => {
  await assert.rejects(runPhase("unpack", 60, new AbortController().signal, async () => {
    throw new BuildFailure("The code artifact has no Dockerfile at its root.");
  }), /no Dockerfile at its root/);
  assert.equal(await runPhase("fetch", 60, new AbortController().signal, async () => 42), 42);
});

test("--build-phase-timeouts reads phase=duration pairs and names what is wrong", () => {
  assert.deepEqual(parsePhaseTimeouts("buildah=1h, base-image=45m,fetch=90s,unpack=30"), { buildah: 3600, "base-image": 2700, fetch: 90, unpack: 30 });
  assert.throws(() => parsePhaseTimeouts("ready=30s"), /'ready' is not a build phase; the phases are fetch, unpack, base-image, buildah, snapshot/);
  assert.throws(() => parsePhaseTimeouts("buildah=soon"), /'buildah=soon' is not phase=duration/);
  assert.throws(() => parsePhaseTimeouts("buildah=0"), /at least 1 second/);
});
