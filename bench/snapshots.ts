// MicroVMs from snapshots, side by side in one run, for a Node app that builds
// about 200 MB of state during init. Each configuration runs ROUNDS times,
// alternating (cold, RunMicrovm, suspends and resumes, in every round); each
// line prints the median and the spread (min–max).
//
// What each side pays for:
// - Cold start: bench/cold-start.ts, in a process of its own, does RunMicrovm's
//   sandbox set-up (a prepared network namespace with the same egress
//   attached, the same bundle, limits and prepared scratch disk, hostname set
//   as RunMicrovm sets it) and then `runsc run`: the app initialises from scratch.
//   Time from the order to the app's first HTTP answer.
// - RunMicrovm and ResumeMicrovm: through `lmvm server` in its own process
//   (spawnServer), from the API call to the app's first HTTP answer: the same
//   set-up, then `runsc restore` of the build's snapshot or of the MicroVM's
//   checkpoint. Resumed right after the suspend and after a 5 s pause.
// - RunMicrovm with a warm pool of 3 (the image tagged lmvm:warm-pool=3): the
//   same call, which claims a paused clone; before each round the pool is
//   refilled to 3 and the machine left to settle.
// - Suspend: SuspendMicrovm until GetMicrovm says SUSPENDED, against `dd` writing
//   as many bytes as the MicroVM's memory image to the data directory. Without
//   conv=fsync: runsc checkpoint does not fsync its image either (it is in the
//   page cache when the suspend ends), so both write to the page cache.
// - The memory image (pages*.img of the suspend's checkpoint, zero pages left
//   out) against the app's own RSS, and the size of two checkpoints of the
//   same running app with and without --exclude-committed-zero-pages.
// - Memory per idle MicroVM (PSS of its sandbox's processes, and the drop of
//   the host's MemAvailable per extra MicroVM) and how many fit in 24 GiB.
// The server's own step times (RunMicrovm/ResumeMicrovm/SuspendMicrovm steps in its log) are
// printed as medians, ms since the operation began; then each idle MicroVM's CPU over 2 s, and
// how many waits for a quiet host gave up. BENCH_TRACE=1 prints to stderr, for each warm-pool
// claim, the server's log lines during it (ms since the call) and its first response.

import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
  TagResourceCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { limitsOf, reservedEnvironment } from "../src/core/index.js";
import { SandboxCgroups, type ImageConfig, type SandboxRecord } from "../src/runtime/index.js";
import { memoryImageSize } from "../src/runtime/snapshots.js";
import { makeZip } from "../test/support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { median, spread } from "./stats.js";

const INIT_MB = 200;
const ROUNDS = 3;
const PAUSE_MS = 5_000;
const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:bench";
const APP = `const http = require("node:http");
const crypto = require("node:crypto");
// Init, as a real app's: a lookup table on the JS heap and a buffer of precomputed data.
const table = new Map();
for (let i = 0; i < ${INIT_MB * 2500}; i++) table.set("key-" + i, { id: i, name: "item-" + i, tags: ["a", "b"] });
const data = Buffer.alloc(${INIT_MB / 2} * 1024 * 1024);
for (let off = 0; off < data.length; off += 1 << 20) crypto.randomFillSync(data, off, 1 << 20);
const ready = true;
http.createServer((req, res) => {
  if (req.url.endsWith("/ready")) return res.writeHead(ready ? 200 : 503).end();
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ entries: table.size, rss: process.memoryUsage().rss }));
}).listen(8080, "0.0.0.0");
`;

const agent = new Agent({ keepAlive: true, maxSockets: 1 });
/** Connections the probe gave up on (not made in 100 ms), all told. */
let givenUp = 0;
/**
 * One GET; the client closes first, so the sandbox can be checkpointed afterwards. A connection not
 * made in 100 ms is given up and the caller asks again: a paused gVisor sandbox (a warm clone before
 * its unpause) drops SYNs, and the kernel's own retransmission would come only 1 s later. The same
 * probe measures the cold start, whose app refuses connections until it listens.
 */
function get(ip: string): Promise<{ entries: number; rss: number } | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: ip, port: 8080, path: "/", agent, timeout: 1000 }, (res) => {
      const socket = res.socket;
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        socket.resetAndDestroy();
        resolve(res.statusCode === 200 ? JSON.parse(body) : undefined);
      });
    });
    req.on("error", () => resolve(undefined));
    req.on("timeout", () => req.destroy());
    req.on("socket", (socket) => {
      if (!socket.connecting) return;
      const connectTimer = setTimeout(() => {
        givenUp++;
        req.destroy();
      }, 100);
      socket.once("connect", () => clearTimeout(connectTimer));
      socket.once("close", () => clearTimeout(connectTimer));
    });
    req.end();
  });
}

/** Polls until the app answers; resolves with the time it did. */
async function firstResponse(ip: () => string | undefined, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const at = ip();
    if (at && (await get(at))) return performance.now();
    if (Date.now() > deadline) throw new Error("the app never answered");
    await new Promise((r) => setTimeout(r, 5));
  }
}

function meminfo(field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) * 1024;
}

/** PSS of every process in the sandbox's memory cgroup (runsc names the cgroup after the sandbox). */
function sandboxPss(id: string): number {
  const procs = readFileSync(`/sys/fs/cgroup/memory/${id}/cgroup.procs`, "utf8").trim().split("\n").filter(Boolean);
  let bytes = 0;
  for (const pid of procs) {
    try {
      bytes += Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return bytes;
}

/** The cold-start process (bench/cold-start.ts): one JSON line per request and per answer. */
function coldStarter(setup: object) {
  const child = spawn(process.execPath, [join(import.meta.dirname, "cold-start.js"), JSON.stringify(setup)], { stdio: ["pipe", "pipe", "pipe"] });
  let errors = "";
  child.stderr!.on("data", (d) => (errors += d));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const ask = async <T>(what: object, timeoutMs = 120_000): Promise<T> => {
    child.stdin!.write(`${JSON.stringify(what)}\n`);
    const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the cold-start process did not answer ${JSON.stringify(what)} in time`)), timeoutMs).unref());
    const next = await Promise.race([lines.next(), timer]);
    if (next.done) throw new Error(`the cold-start process exited (${child.exitCode ?? child.signalCode}): ${errors}`);
    const answer = JSON.parse(next.value as string) as T & { error?: string };
    if (answer.error) throw new Error(`cold start: ${answer.error}`);
    return answer;
  };
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    ask,
    async exit() {
      child.stdin!.write(`${JSON.stringify({ do: "exit" })}\n`);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000).unref())]);
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

/** The share of the host's CPU time that was busy over the next 500 ms (/proc/stat). */
async function hostBusy(): Promise<number> {
  const a = hostTicks();
  await new Promise((r) => setTimeout(r, 500));
  return hostBusySince(a);
}

/** CPU time (µs) of every sandbox cgroup on the host, by runsc id (cgroup v1 cpuacct). */
function sandboxCpu(): Map<string, number> {
  const cg = new SandboxCgroups();
  const out = new Map<string, number>();
  for (const id of readdirSync("/sys/fs/cgroup/cpuacct", { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)) {
    const us = cg.cpuUsageMicros(id);
    if (us !== undefined) out.set(id, us);
  }
  return out;
}

function hostTicks(): { idle: number; total: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
}

function hostBusySince(a: { idle: number; total: number }): number {
  const b = hostTicks();
  return b.total > a.total ? 1 - (b.idle - a.idle) / (b.total - a.total) : 0;
}

/** The app output lmvm kept for a MicroVM (its log files under the data directory). */
function microvmLog(dataDir: string, id: string): string {
  const dir = join(dataDir, "logs", "microvms");
  if (!existsSync(dir)) return "";
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.includes(id))
    .map((f) => {
      try {
        return readFileSync(join(dir, f), "utf8");
      } catch {
        return "";
      }
    })
    .join("\n");
}

/** Runs dd to its end; resolves with its duration in ms. */
function dd(file: string, mb: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn("dd", ["if=/dev/zero", `of=${file}`, "bs=1M", `count=${mb}`], { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`dd exited with ${code}`))));
  });
}

/** Medians of each step mark in the server's "<operation> steps" log lines. */
function stepMedians(output: string, operation: string): string {
  const marks = new Map<string, number[]>();
  for (const line of output.split("\n")) {
    if (!line.includes(`"${operation} steps`)) continue;
    const event = JSON.parse(line) as Record<string, unknown>;
    for (const [k, v] of Object.entries(event)) if (typeof v === "number") marks.set(k, [...(marks.get(k) ?? []), v]);
  }
  return [...marks].sort((a, b) => median(a[1]) - median(b[1])).map(([k, xs]) => `${k} ${median(xs).toFixed(0)}`).join(", ");
}

const MB = 1024 * 1024;

export async function snapshotsBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-snap-");
  const scratch = tempDir("lmvm-bench-cold-");
  const server = await spawnServer(dataDir, { builds: true });
  const client: LambdaMicrovmsClient = sdkClient(server.url, readCredentials(dataDir));
  let cold: ReturnType<typeof coldStarter> | undefined;
  const vmIds: string[] = [];
  const claimed: string[] = [];
  try {
    const zip = join(scratch, "app.zip");
    writeFileSync(zip, makeZip([
      // BENCH_TRACE=1: the app prints each garbage collection (--trace-gc), shown with each claim's trace.
      { name: "Dockerfile", content: `FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD ["node", ${process.env.BENCH_TRACE ? '"--trace-gc", ' : ""}"app.js"]\n` },
      { name: "app.js", content: APP },
    ]));
    await client.send(new CreateMicrovmImageCommand({
      name: "bench", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${zip}` }, hooks: { port: 8080, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 120 } },
    }));
    const image = await eventually(async () => {
      const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: "bench" }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, "the image build", 900_000);
    if (image.state !== "CREATED") throw new Error(`the bench image failed to build (${image.state}); see lmvm logs build`);
    const builtDir = join(dataDir, "images", "bench", "1.0");
    const arch = readdirSync(builtDir)[0]!;
    const rootfs = join(builtDir, arch, "rootfs");
    const config = JSON.parse(readFileSync(join(builtDir, arch, "config.json"), "utf8")) as ImageConfig;
    const buildImageBytes = memoryImageSize(join(builtDir, arch, "snapshot"));
    cold = coldStarter({ scratch, rootfs, config, env: reservedEnvironment(IMAGE_ARN, "1.0"), hooksPort: 8080, limits: limitsOf({}) });

    const record = (id: string) => {
      const file = join(dataDir, "microvms", id, "sandbox.json");
      return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as SandboxRecord) : undefined;
    };
    const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
    const reach = async (id: string, want: string, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while ((await state(id)) !== want) {
        if (Date.now() > deadline) throw new Error(`${id} did not become ${want}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    // Background work of the last step (refills, runsc delete, the app's own work after a restore) ends,
    // and the host's CPUs are mostly idle again: the server refuses a RunMicrovm on saturated CPUs.
    // Waits for the host to go quiet (at most 30 s); a wait that gave up is reported with the figures.
    let settles = 0;
    const unsettled: number[] = [];
    const settle = async () => {
      await new Promise((r) => setTimeout(r, 1500));
      let busy = 0;
      for (let tries = 0; tries < 60 && (busy = await hostBusy()) > 0.3; tries++);
      settles++;
      if (busy > 0.3) unsettled.push(busy);
    };

    const coldMs: number[] = [];
    const runMs: number[] = [];
    const resumeAtOnce: number[] = [];
    const resumeLater: number[] = [];
    const suspendMs: number[] = [];
    const ddMs: number[] = [];
    const imageBytes: number[] = [];
    let appRss = 0;
    let zeroPages: { withZeroPages: number; withoutZeroPages: number } | string = "not measured";
    for (let round = 0; round < ROUNDS; round++) {
      // Cold start, set-up as RunMicrovm's.
      await cold.ask({ do: "prepare" });
      await settle();
      let started = performance.now();
      const { ip } = await cold.ask<{ ip: string }>({ do: "start" });
      coldMs.push((await firstResponse(() => ip)) - started);
      // A second answer for the app's RSS (a busy machine can let one GET time out).
      appRss = 0;
      for (let tries = 0; tries < 5 && !appRss; tries++) appRss = (await get(ip))?.rss ?? 0;
      if (round === 0) zeroPages = await cold.ask<{ withZeroPages: number; withoutZeroPages: number }>({ do: "checkpoint" }).catch((err: Error) => `checkpoint --leave-running failed: ${err.message}`);
      await cold.ask({ do: "stop" });
      await settle();

      // RunMicrovm → first response.
      started = performance.now();
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
      const id = microvmId!;
      vmIds.push(id);
      runMs.push((await firstResponse(() => record(id)?.sandboxIp)) - started);
      await reach(id, "RUNNING", 60_000);
      await settle();

      // Suspend, against dd of as many bytes; resume right after, then suspend and resume after a pause.
      for (const [resumes, pauseMs] of [[resumeAtOnce, 0], [resumeLater, PAUSE_MS]] as const) {
        const suspending = performance.now();
        await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
        await reach(id, "SUSPENDED", 120_000);
        suspendMs.push(performance.now() - suspending);
        const bytes = memoryImageSize(join(dataDir, "microvms", id, "checkpoint"));
        imageBytes.push(bytes);
        if (pauseMs) {
          const file = join(dataDir, "dd-baseline");
          ddMs.push(await dd(file, Math.max(1, Math.round(bytes / MB))));
          rmSync(file, { force: true });
          await new Promise((r) => setTimeout(r, pauseMs));
        }
        const resuming = performance.now();
        await client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
        resumes.push((await firstResponse(() => record(id)?.sandboxIp)) - resuming);
        await reach(id, "RUNNING", 60_000);
        await settle();
      }
    }

    // RunMicrovm → first response with a warm pool of 3, each round claiming a clone.
    const metric = async (name: string): Promise<number> => {
      const line = (await (await fetch(`${server.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(IMAGE_ARN));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    const poolReady = (n: number) => eventually(async () => ((await metric("lmvm_warm_pool_ready")) === n ? true : undefined), `the warm pool to hold ${n} clones`, 300_000);
    await client.send(new TagResourceCommand({ Resource: IMAGE_ARN, Tags: { "lmvm:warm-pool": "3" } }));
    const pooledMs: number[] = [];
    const pooledAnswerMs: number[] = [];
    const pooledRunningMs: number[] = [];
    const pooledGivenUp: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      await poolReady(3);
      await settle();
      const started = performance.now();
      const logFrom = server.output().length;
      const startedAt = Date.now();
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
      pooledAnswerMs.push(performance.now() - started);
      const id = microvmId!;
      claimed.push(id);
      const gaveUp = givenUp;
      const cpuAtClaim = process.env.BENCH_TRACE ? sandboxCpu() : undefined;
      const hostAtClaim = hostTicks();
      pooledMs.push((await firstResponse(() => record(id)?.sandboxIp)) - started);
      pooledGivenUp.push(givenUp - gaveUp);
      // BENCH_TRACE=1: what the server logged during the claim, in ms since the call.
      if (process.env.BENCH_TRACE) {
        const claimedId = record(id)?.sandboxId;
        const made = server.output().split("\n").find((l) => l.includes('"warm pool clone ready"') && claimedId && l.includes(`"${claimedId}"`));
        process.stderr.write(`claim ${round}: the clone claimed was made: ${made?.slice(0, 300) ?? "(not in the log)"}\n`);
        for (const line of server.output().slice(logFrom).split("\n").filter(Boolean)) {
          try {
            const j = JSON.parse(line) as { time: string; msg: string };
            process.stderr.write(`claim ${round} +${Date.parse(j.time) - startedAt} ms: ${line.slice(0, 300)}\n`);
          } catch {
            process.stderr.write(`claim ${round}: ${line.slice(0, 300)}\n`);
          }
        }
        process.stderr.write(`claim ${round}: first response +${Math.round(pooledMs.at(-1)!)} ms\n`);
        // Which sandboxes used CPU between the claim and the first response, and the host's busy share.
        const seconds = pooledMs.at(-1)! / 1000;
        const cpuNow = sandboxCpu();
        const used = [...cpuNow].map(([sid, us]) => [sid, (us - (cpuAtClaim!.get(sid) ?? us)) / 1e6 / seconds] as const).filter(([, share]) => share > 0.02);
        process.stderr.write(`claim ${round}: host ${Math.round(hostBusySince(hostAtClaim) * 100)}% busy; sandboxes over 2% of a core: ${used.map(([sid, share]) => `${sid}${sid === record(id)?.sandboxId ? " (claimed)" : ""} ${Math.round(share * 100)}%`).join(", ") || "none"}\n`);
        const gc = microvmLog(dataDir, id).split("\n").filter((l) => /Scavenge|Mark-/.test(l));
        process.stderr.write(`claim ${round}: the app's garbage collections since its restore: ${gc.length ? `\n  ${gc.slice(-6).join("\n  ")}` : "none"}\n`);
      }
      if (!record(id)?.sandboxId?.startsWith("pool-")) throw new Error(`round ${round}: RunMicrovm did not claim a warm-pool clone (sandbox ${record(id)?.sandboxId})`);
      await reach(id, "RUNNING", 60_000);
      pooledRunningMs.push(performance.now() - started);
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
      await reach(id, "TERMINATED", 60_000);
    }
    const hits = await metric("lmvm_warm_pool_hits_total");
    await client.send(new TagResourceCommand({ Resource: IMAGE_ARN, Tags: { "lmvm:warm-pool": "0" } }));
    await poolReady(0);

    // Idle footprint: the MicroVMs above are idle now; add more until there are five.
    const availableBefore = meminfo("MemAvailable");
    const extra: string[] = [];
    for (let i = vmIds.length; i < 5; i++) {
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
      extra.push(microvmId!);
      vmIds.push(microvmId!);
      await reach(microvmId!, "RUNNING", 60_000);
    }
    await new Promise((r) => setTimeout(r, 2000));
    const marginal = extra.length ? (availableBefore - meminfo("MemAvailable")) / extra.length : 0;
    const pss = median(vmIds.map((id) => sandboxPss(record(id)?.sandboxId ?? id)));
    const perVm = Math.max(pss, marginal);
    // Each idle MicroVM's CPU over 2 s: a restore that keeps a core busy with no request (see the README) shows here.
    const cgroups = new SandboxCgroups();
    const cpuBefore = vmIds.map((id) => cgroups.cpuUsageMicros(record(id)?.sandboxId ?? id) ?? NaN);
    await new Promise((r) => setTimeout(r, 2000));
    const idleCores = vmIds.map((id, i) => ((cgroups.cpuUsageMicros(record(id)?.sandboxId ?? id) ?? NaN) - cpuBefore[i]!) / 2e6);
    const busyVms = idleCores.filter((c) => c > 0.3).length;
    const fit24 = Math.floor((24 * 1024 * MB) / perVm);

    const c = median(coldMs);
    const ms = (xs: number[]) => `${median(xs).toFixed(0).padStart(5)} ms (${spread(xs.map((x) => Math.round(x)))})`;
    const ratio = (xs: number[]) => `${(median(xs) / c).toFixed(2)}x cold`;
    const imageMb = median(imageBytes) / MB;
    return [
      `MicroVMs from snapshots (a Node app building ~${INIT_MB} MB of state at init; ${ROUNDS} rounds, alternating; median (min–max); baseline: its cold start, same run):`,
      `  cold start → first response (same set-up, runsc run, init from scratch)  ${ms(coldMs)}   1.00 (target: the others at most 0.15x)`,
      `  RunMicrovm → first response (no warm pool; restore of the build snapshot) ${ms(runMs)}   ${ratio(runMs)}`,
      `  RunMicrovm → first response, warm pool of 3 (a clone claimed; ${hits} hits)  ${ms(pooledMs)}   ${ratio(pooledMs)} (target: at most 0.05x)`,
      `    of which RunMicrovm → its API answer (PENDING)                           ${ms(pooledAnswerMs)}`,
      `    RunMicrovm → RUNNING (its /run done; GetMicrovm polled)                  ${ms(pooledRunningMs)}   ${ratio(pooledRunningMs)}`,
      `    probe connections not made in 100 ms and asked again, per round (a paused clone drops SYNs): ${pooledGivenUp.join(", ")}`,
      `  ResumeMicrovm → first response, right after the suspend                    ${ms(resumeAtOnce)}   ${ratio(resumeAtOnce)}`,
      `  ResumeMicrovm → first response, ${PAUSE_MS / 1000} s after the suspend                      ${ms(resumeLater)}   ${ratio(resumeLater)}`,
      `  SuspendMicrovm → SUSPENDED (memory image ${imageMb.toFixed(0)} MB)                        ${ms(suspendMs)}   ${(median(suspendMs) / median(ddMs)).toFixed(2)}x dd (target: at most 2x)`,
      `  dd of ${imageMb.toFixed(0)} MB to the data directory (no fsync, as the checkpoint)          ${ms(ddMs)}   1.00`,
      `  memory image: suspend ${imageMb.toFixed(0)} MB, build snapshot ${(buildImageBytes / MB).toFixed(0)} MB; the app's RSS ${(appRss / MB).toFixed(0)} MB (${(median(imageBytes) / appRss).toFixed(2)}x RSS)`,
      typeof zeroPages === "string"
        ? `  zero pages: ${zeroPages}`
        : `  one running app checkpointed twice: ${(zeroPages.withZeroPages / MB).toFixed(0)} MB with zero pages, ${(zeroPages.withoutZeroPages / MB).toFixed(0)} MB without (--exclude-committed-zero-pages, ${(zeroPages.withoutZeroPages / zeroPages.withZeroPages).toFixed(2)}x)`,
      `  memory per idle MicroVM: PSS ${(pss / MB).toFixed(0)} MB, host MemAvailable drop ${(marginal / MB).toFixed(0)} MB per extra MicroVM; the app's own RSS ${(appRss / MB).toFixed(0)} MB   ${(perVm / appRss).toFixed(2)}x RSS`,
      `  idle MicroVMs of this app that fit in 24 GiB (at the larger of the two): ${fit24}`,
      `  CPU of the ${vmIds.length} MicroVMs left running, idle, over 2 s: median ${(median(idleCores) * 100).toFixed(1)}% of a core (max ${(Math.max(...idleCores) * 100).toFixed(1)}%)${busyVms ? `; ${busyVms} kept over 30% of a core busy with no request` : ""}`,
      `  waits for a quiet host (at most 30% busy) before a measurement that gave up after 30 s: ${unsettled.length} of ${settles}${unsettled.length ? ` (host ${unsettled.map((b) => `${Math.round(b * 100)}%`).join(", ")} busy)` : ""}`,
      `  server steps, median ms since RunMicrovm's runtime call began: ${stepMedians(server.output(), "RunMicrovm")}`,
      `  server steps, median ms since a warm-pool RunMicrovm's runtime call began: ${stepMedians(server.output(), "RunMicrovm from a warm clone")}`,
      `  server steps, median ms since ResumeMicrovm's runtime call began: ${stepMedians(server.output(), "ResumeMicrovm")}`,
      `  server steps, median ms since SuspendMicrovm's runtime call began: ${stepMedians(server.output(), "SuspendMicrovm")}`,
    ];
  } finally {
    for (const id of [...vmIds, ...claimed]) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    for (const id of [...vmIds, ...claimed]) await eventually(async () => ((await state0(client, id)) === "TERMINATED" ? true : undefined), "TERMINATED", 60_000).catch(() => undefined);
    await cold?.exit();
    client.destroy();
    await server.kill();
    await freeSandboxes(dataDir);
    await freeSandboxes(scratch);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function state0(client: LambdaMicrovmsClient, id: string) {
  return (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
}
