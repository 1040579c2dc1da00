// A build's phases and their deadlines. Each phase runs under its own
// AbortSignal, aborted when its deadline passes or when the whole build is
// cancelled (its version deleted, the server stopping). A phase that does
// not stop when asked is not waited for beyond STOP_GRACE_MS: the build ends
// anyway and frees its slot in the queue.

import { BuildFailure } from "../core/index.js";

export const PHASES = ["fetch", "unpack", "base-image", "buildah", "snapshot"] as const;
export type BuildPhase = (typeof PHASES)[number];

/** Seconds each phase may take. */
export type PhaseTimeouts = Record<BuildPhase, number>;

/**
 * Artifacts are at most 256 MiB and unpack to at most 1 GiB, so fetch and
 * unpack get minutes. Making debian12 downloads about 60 MB of packages from
 * the Debian mirror. RUN steps reach only what the image's egress
 * connectors grant (nothing without them), within the image's bandwidth. The snapshot phase gets its time on top of the
 * image's own /ready and /validate timeouts.
 */
export const DEFAULT_PHASE_TIMEOUTS: PhaseTimeouts = {
  fetch: 10 * 60,
  unpack: 5 * 60,
  "base-image": 30 * 60,
  buildah: 30 * 60,
  snapshot: 10 * 60,
};

/** How long a phase asked to stop may take to stop what it started before the build gives up on it. */
export const STOP_GRACE_MS = 5_000;

const HINTS: Record<BuildPhase, string> = {
  fetch: "the code artifact's server stalled or is too slow. Try again, or serve the artifact from closer to the lmvm host.",
  unpack: "the code artifact is too large or holds too many files to unpack in time. Make it smaller.",
  "base-image": "making the managed base image took too long; the Debian mirror (lmvm server --debian-mirror) may be slow or unreachable.",
  buildah: "a RUN step may be waiting for something that never comes (RUN steps reach only what the image's egressNetworkConnectors grant, within its size's bandwidth) or doing too much. Make the Dockerfile finish sooner.",
  snapshot: "the app did not boot, get ready, checkpoint or validate in time. See the app's output in the build log.",
};

export function describeDuration(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} hour${seconds === 3600 ? "" : "s"}`;
  if (seconds % 60 === 0) return `${seconds / 60} minute${seconds === 60 ? "" : "s"}`;
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

/**
 * Reads `fetch=10m,buildah=1h,unpack=90s` (a number alone is seconds) into
 * the timeouts it changes, or throws an Error saying what is wrong.
 */
export function parsePhaseTimeouts(text: string): Partial<PhaseTimeouts> {
  const out: Partial<PhaseTimeouts> = {};
  for (const item of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z-]+)=(\d+)([smh]?)$/.exec(item);
    if (!m) throw new Error(`'${item}' is not phase=duration (for example buildah=45m; units s, m, h; seconds when none).`);
    const phase = m[1] as BuildPhase;
    if (!PHASES.includes(phase)) throw new Error(`'${m[1]}' is not a build phase; the phases are ${PHASES.join(", ")}.`);
    const seconds = Number(m[2]) * (m[3] === "h" ? 3600 : m[3] === "m" ? 60 : 1);
    if (seconds < 1) throw new Error(`The ${phase} phase needs a deadline of at least 1 second.`);
    out[phase] = seconds;
  }
  return out;
}

/** Thrown by a phase when the build itself was cancelled (not its deadline). */
export class BuildCancelled extends Error {
  constructor() {
    super("The build was cancelled.");
  }
}

/** Resolves when `task` settles or after `ms`, whichever is first; never rejects. */
function settleWithin(task: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    task.then(
      () => (clearTimeout(timer), resolve()),
      () => (clearTimeout(timer), resolve()),
    );
  });
}

/**
 * Runs one phase of a build under `seconds` of deadline, giving `work` a
 * signal that aborts at the deadline or when `build` aborts. On either, the
 * phase waits up to STOP_GRACE_MS for `work` to stop what it started, then
 * fails: with a BuildFailure naming the phase at the deadline, with
 * BuildCancelled when the build was cancelled.
 */
export async function runPhase<T>(phase: BuildPhase, seconds: number, build: AbortSignal, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (build.aborted) throw new BuildCancelled();
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, seconds * 1000);
  const cancel = () => controller.abort();
  build.addEventListener("abort", cancel, { once: true });
  const stopped = new Promise<never>((_, reject) => controller.signal.addEventListener("abort", () => reject(new BuildCancelled()), { once: true }));
  stopped.catch(() => undefined);
  const task = work(controller.signal);
  try {
    return await Promise.race([task, stopped]);
  } catch (err) {
    if (!controller.signal.aborted) throw err;
    await settleWithin(task, STOP_GRACE_MS);
    if (timedOut) throw new BuildFailure(
        `The ${phase} phase did not finish within ${describeDuration(seconds)}; ${HINTS[phase]} (The server's operator sets this deadline: lmvm server --build-phase-timeouts ${phase}=<duration>.)`,
      );
    throw new BuildCancelled();
  } finally {
    clearTimeout(timer);
    build.removeEventListener("abort", cancel);
  }
}
