// What an idle MicroVM costs: CPU and memory, with no traffic at all, for the
// example apps (examples/, Node and Python), measured side by side in one run
// on each gVisor platform lmvm offers (`lmvm server --platform systrap|ptrace`).
// - One `lmvm server` per platform, each in its own process, both at once, builds every example.
// - Baseline: the server with no MicroVM, over ROUNDS windows of WINDOW_S.
// - Then VMS idle MicroVMs of each example, left to settle, over ROUNDS
//   windows of WINDOW_S: each sandbox's CPU from its cgroup (the sandbox
//   process and everything runsc put in its cgroup, the gofer included), plus
//   what the server spent beyond its baseline (its own CPU and its reaped
//   children's, `runsc` calls included), shared out over the MicroVMs.
//   Figures are a share of one core, per MicroVM, median (min–max) over the
//   MicroVMs and rounds, against the target of 0.5% of a core.
// - Memory per idle MicroVM: the PSS of its sandbox's processes (its cgroup's),
//   and how many such MicroVMs fit in 24 GiB with 1 GiB kept free.
// - What the platform costs elsewhere, per example: RunMicrovm → the app's first
//   answer on port 8080 (each MicroVM started), one HTTP request to the app
//   (REQUESTS sequential keep-alive GETs to its sandbox address, per MicroVM),
//   and suspend → SUSPENDED and ResumeMicrovm → first answer (each MicroVM, after
//   the idle windows).
// The load average at the start and end of the idle windows is printed: other
// work on the host disturbs the per-sandbox cgroup figures little, the
// server's share more.
// LMVM_IDLE_EXAMPLES (comma-separated), LMVM_IDLE_VMS, LMVM_IDLE_ROUNDS,
// LMVM_IDLE_SECONDS and LMVM_IDLE_PLATFORMS change what runs; defaults: every
// example, 2, 3, 60, systrap,ptrace.

import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "node:http";
import { loadavg } from "node:os";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand,
  type CreateMicrovmImageCommandInput, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { SandboxCgroups } from "../src/runtime/index.js";
import { zipExample } from "../test/support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { median, spread } from "./stats.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "examples");
const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
const TARGET_PERCENT = 0.5;
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const TICKS_PER_SECOND = 100; // USER_HZ on Linux

const env = process.env;
// Every example at once must fit the host's CPU room (8 baseline vCPUs per core, 1 for each of these).
const VMS = Number(env.LMVM_IDLE_VMS ?? 2);
const ROUNDS = Number(env.LMVM_IDLE_ROUNDS ?? 3);
const WINDOW_S = Number(env.LMVM_IDLE_SECONDS ?? 60);
const SETTLE_MS = 15_000;
const PLATFORMS = (env.LMVM_IDLE_PLATFORMS ?? "systrap,ptrace").split(",").map((s) => s.trim()).filter(Boolean);
const REQUESTS = 50;
const APP_PORT = 8080;

function examples(): string[] {
  const all = readdirSync(EXAMPLES).filter((n) => existsSync(join(EXAMPLES, n, "Dockerfile"))).sort();
  const wanted = env.LMVM_IDLE_EXAMPLES?.split(",").map((s) => s.trim()).filter(Boolean);
  return wanted ? all.filter((n) => wanted.includes(n)) : all;
}

/** CreateMicrovmImage input beyond name, role and artifact: the example's microvm-image.json, else the base its Dockerfile names. */
function imageInput(name: string): Partial<CreateMicrovmImageCommandInput> {
  const config = join(EXAMPLES, name, "microvm-image.json");
  if (existsSync(config)) return JSON.parse(readFileSync(config, "utf8")) as Partial<CreateMicrovmImageCommandInput>;
  const from = /^FROM\s+lmvm\/([a-z0-9]+)/im.exec(readFileSync(join(EXAMPLES, name, "Dockerfile"), "utf8"))?.[1] ?? "busybox";
  return { baseImageArn: `arn:aws:lambda:us-east-1:aws:microvm-image:${from}` };
}

/** CPU seconds a process and its reaped children have used (utime, stime, cutime, cstime). */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14.
  return fields.slice(11, 15).reduce((n, f) => n + Number(f), 0) / TICKS_PER_SECOND;
}

/** The sandbox address of a MicroVM's current incarnation, from its record. */
function sandboxIpOf(dataDir: string, microvmId: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(dataDir, "microvms", microvmId, "sandbox.json"), "utf8")) as { sandboxIp?: string }).sandboxIp;
  } catch {
    return undefined;
  }
}

/** One GET / on the app's port, any status; the socket is reset after (a checkpoint must not wait for it). */
function get(ip: string, agent: Agent): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: ip, port: APP_PORT, path: "/", agent, timeout: 1000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(true));
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/** Polls until the app answers at the MicroVM's current address; resolves with the time it did. */
async function firstAnswer(dataDir: string, id: string, timeoutMs = 120_000): Promise<number> {
  const agent = new Agent({ keepAlive: false });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const ip = sandboxIpOf(dataDir, id);
      if (ip && (await get(ip, agent))) return performance.now();
      if (Date.now() > deadline) throw new Error(`MicroVM ${id}'s app never answered on port ${APP_PORT}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    agent.destroy();
  }
}

/** Milliseconds of each of REQUESTS sequential GETs on one keep-alive connection. */
async function requestTimes(ip: string): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    await get(ip, agent); // the connection
    for (let i = 0; i < REQUESTS; i++) {
      const t0 = performance.now();
      if (!(await get(ip, agent))) throw new Error(`the app at ${ip} stopped answering`);
      times.push(performance.now() - t0);
    }
  } finally {
    agent.destroy();
  }
  return times;
}

async function reach(client: LambdaMicrovmsClient, id: string, state: string, timeoutMs: number): Promise<void> {
  await eventually(async () => {
    const s = (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
    if (s === "TERMINATED" && state !== "TERMINATED") throw new Error(`MicroVM ${id} went ${s}`);
    return s === state ? s : undefined;
  }, `MicroVM ${id} to be ${state}`, timeoutMs);
}

const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");

/** The runsc id of a MicroVM's sandbox: its record's sandboxId where runsc ids are per incarnation, else the MicroVM id. */
function sandboxIdOf(dataDir: string, microvmId: string): string {
  try {
    const rec = JSON.parse(readFileSync(join(dataDir, "microvms", microvmId, "sandbox.json"), "utf8")) as { sandboxId?: string };
    return rec.sandboxId ?? microvmId;
  } catch {
    return microvmId;
  }
}

/** Pids in the sandbox's cgroup (memory controller on v1; the unified one on v2). */
function sandboxPids(id: string): number[] {
  const file = existsSync("/sys/fs/cgroup/cgroup.controllers") ? `/sys/fs/cgroup/${id}/cgroup.procs` : `/sys/fs/cgroup/memory/${id}/cgroup.procs`;
  return readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map(Number);
}

function pssBytes(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0; // gone meanwhile
  }
}

const pct = (xs: number[]) => `${median(xs).toFixed(2).padStart(5)}% of a core (${xs.length > 1 ? spread(xs) : xs[0]!.toFixed(2)})`;

interface PlatformFigures {
  platform: string;
  baseline: number[];
  serverShare: number[];
  loadBefore: string;
  loadAfter: string;
  examples: Map<string, { perVm: number[]; sandboxOnly: number[]; pss: number[]; runMs: number[]; requestMs: number[]; suspendMs: number[]; resumeMs: number[] }>;
}

/** Everything for one platform, in a server of its own: build, baseline, idle windows, then the costs elsewhere. */
async function measure(platform: string, names: string[]): Promise<PlatformFigures> {
  const dataDir = tempDir(`lmvm-bench-idle-${platform}-`);
  const server = await spawnServer(dataDir, { builds: true, args: ["--platform", platform, "--build-concurrency", "2", "--quotas", `concurrent-builds=${Math.max(5, names.length)}`] });
  const client = sdkClient(server.url, readCredentials(dataDir));
  const serverPid = server.child.pid!;
  const cgroups = new SandboxCgroups();
  const ids = new Map<string, string[]>();
  try {
    const arns = new Map<string, string>();
    for (const name of names) {
      const zip = join(dataDir, `${name}.zip`);
      writeFileSync(zip, zipExample(name));
      const { imageArn } = await client.send(new CreateMicrovmImageCommand({ ...imageInput(name), name: `idle-${name}`, buildRoleArn: ROLE, codeArtifact: { uri: `file://${zip}` } } as CreateMicrovmImageCommandInput));
      arns.set(name, imageArn!);
    }
    for (const name of names) {
      const image = await eventually(async () => {
        const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: `idle-${name}` }));
        return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
      }, `examples/${name} to build`, 1_200_000);
      if (image.state !== "CREATED") throw new Error(`examples/${name} did not build on ${platform} (${image.state}); see lmvm logs build idle-${name} 1.0`);
    }

    // Baseline: the server alone, images built, no MicroVM.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const baseline: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const before = processCpuSeconds(serverPid);
      await new Promise((res) => setTimeout(res, WINDOW_S * 1000));
      baseline.push((processCpuSeconds(serverPid) - before) / WINDOW_S);
    }

    const runMs = new Map<string, number[]>(names.map((n) => [n, []]));
    for (const name of names) {
      const started: string[] = [];
      for (let i = 0; i < VMS; i++) {
        const t0 = performance.now();
        const id = (await client.send(new RunMicrovmCommand({ imageIdentifier: arns.get(name)! }))).microvmId!;
        runMs.get(name)!.push((await firstAnswer(dataDir, id)) - t0);
        started.push(id);
      }
      ids.set(name, started);
    }
    const all = [...ids.values()].flat();
    for (const id of all) await reach(client, id, "RUNNING", 180_000);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const sandbox = new Map(all.map((id) => [id, sandboxIdOf(dataDir, id)]));

    // Per MicroVM and round: its sandbox's share of a core, and the server's extra share.
    const own = new Map<string, number[]>(all.map((id) => [id, []]));
    const serverShare: number[] = [];
    const loadBefore = load();
    for (let r = 0; r < ROUNDS; r++) {
      const usage = (id: string) => cgroups.cpuUsageMicros(sandbox.get(id)!) ?? NaN;
      const before = new Map(all.map((id) => [id, usage(id)]));
      const serverBefore = processCpuSeconds(serverPid);
      const t0 = performance.now();
      await new Promise((res) => setTimeout(res, WINDOW_S * 1000));
      const seconds = (performance.now() - t0) / 1000;
      for (const id of all) own.get(id)!.push((usage(id) - before.get(id)!) / 1e6 / seconds);
      serverShare.push(Math.max(0, (processCpuSeconds(serverPid) - serverBefore) / seconds - median(baseline)) / all.length);
    }
    const loadAfter = load();

    const figures: PlatformFigures = { platform, baseline, serverShare, loadBefore, loadAfter, examples: new Map() };
    for (const name of names) {
      const vms = ids.get(name)!;
      const perVm = vms.flatMap((id) => own.get(id)!.map((x, r) => (x + serverShare[r]!) * 100));
      const sandboxOnly = vms.flatMap((id) => own.get(id)!.map((x) => x * 100));
      const pss = vms.map((id) => sandboxPids(sandbox.get(id)!).reduce((n, pid) => n + pssBytes(pid), 0));
      figures.examples.set(name, { perVm, sandboxOnly, pss, runMs: runMs.get(name)!, requestMs: [], suspendMs: [], resumeMs: [] });
    }

    // The costs elsewhere, after the idle windows (they would disturb them).
    for (const name of names) {
      const f = figures.examples.get(name)!;
      for (const id of ids.get(name)!) {
        f.requestMs.push(median(await requestTimes(sandboxIpOf(dataDir, id)!)));
        const s0 = performance.now();
        await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
        await reach(client, id, "SUSPENDED", 120_000);
        f.suspendMs.push(performance.now() - s0);
        const r0 = performance.now();
        await client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
        f.resumeMs.push((await firstAnswer(dataDir, id)) - r0);
        await reach(client, id, "RUNNING", 60_000);
      }
    }
    return figures;
  } catch (err) {
    throw new Error(`--platform ${platform}: ${(err as Error).message}`);
  } finally {
    // Clean-up never hides why the measurement failed.
    for (const id of [...ids.values()].flat()) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    client.destroy();
    await server.kill().catch((err: Error) => console.error(`--platform ${platform}: ${err.message}`));
    await freeSandboxes(dataDir).catch((err: Error) => console.error(`--platform ${platform}: ${err.message}`));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const ms = (xs: number[]) => `${median(xs).toFixed(1)} ms (${spread(xs)})`;

export async function idleBench(): Promise<string[]> {
  const names = examples();
  const results = await Promise.all(PLATFORMS.map((p) => measure(p, names)));
  const lines = [
    `Idle MicroVMs (${VMS} of each example, no traffic, ${ROUNDS} windows of ${WINDOW_S} s; one server per gVisor platform, each in its own process, side by side; target: at most ${TARGET_PERCENT}% of a core each):`,
  ];
  for (const f of results) {
    lines.push(
      `--platform ${f.platform}  (load average ${f.loadBefore} before the idle windows, ${f.loadAfter} after)`,
      `  lmvm server alone (images built, no MicroVM)              ${pct(f.baseline.map((x) => x * 100))}`,
      `  lmvm server's extra CPU, shared out per MicroVM           ${pct(f.serverShare.map((x) => x * 100))}`,
    );
    for (const name of names) {
      const e = f.examples.get(name)!;
      const fit = Math.floor((24 * GIB - GIB) / median(e.pss));
      const met = median(e.perVm) <= TARGET_PERCENT ? "met" : "NOT met";
      lines.push(
        `  ${`examples/${name}`.padEnd(26)} CPU per MicroVM ${pct(e.perVm)}  [sandbox ${median(e.sandboxOnly).toFixed(2)}%]  ${(median(e.perVm) / TARGET_PERCENT).toFixed(2)}x target, ${met}`,
        `  ${"".padEnd(26)} memory per MicroVM (PSS) ${(median(e.pss) / MIB).toFixed(1)} MiB (${spread(e.pss.map((b) => b / MIB))})  →  ${fit} fit in 24 GiB with 1 GiB free`,
      );
    }
  }
  const first = results[0];
  if (first) {
    lines.push(`What the platform costs elsewhere (median (min–max) over the MicroVMs; ratio against --platform ${first.platform}):`);
    for (const name of names) {
      for (const [label, key] of [["RunMicrovm → first answer", "runMs"], [`one request (median of ${REQUESTS}, keep-alive)`, "requestMs"], ["suspend → SUSPENDED", "suspendMs"], ["ResumeMicrovm → first answer", "resumeMs"]] as const) {
        const base = median(first.examples.get(name)![key]);
        const cells = results.map((f) => {
          const xs = f.examples.get(name)![key];
          return `${f.platform} ${ms(xs)}${f === first ? "" : ` = ${(median(xs) / base).toFixed(2)}x`}`;
        });
        lines.push(`  ${`examples/${name}`.padEnd(26)} ${label.padEnd(36)} ${cells.join("   ")}`);
      }
    }
  }
  return lines;
}
