// MicroVMs from snapshots, side by side in one run, for a Node app that builds
// about 200 MB of state during init:
// - RunMicrovm → first response, against a cold start of the same image in
//   the same kind of sandbox (the app initialising from scratch);
// - ResumeMicrovm → first response, against the same cold start, 5 s after
//   suspending and right after it (which waits for the old sandbox's removal);
// - suspend time per GB of memory image;
// - memory per idle MicroVM (PSS of its sandbox's processes), against the app's own RSS;
// - how many idle MicroVMs of the app fit on this machine.

import { readdirSync, readFileSync, statSync, existsSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
  TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { limitsOf } from "../src/core/index.js";
import { NetworkNamespaces } from "../src/net/index.js";
import { Gvisor, type ImageConfig, type SandboxRecord } from "../src/runtime/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../test/support/artifacts.js";
import { eventually, startTestPlatform, tempDir } from "../test/support/platform.js";

const INIT_MB = 200;
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
/** One GET; the client closes first, so the sandbox can be checkpointed afterwards. */
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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
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

const MB = 1024 * 1024;

export async function snapshotsBench(): Promise<string[]> {
  const t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
  const client: LambdaMicrovmsClient = t.client;
  const scratch = tempDir("lmvm-bench-snap-");
  const gvisor = new Gvisor({ stateRoot: join(scratch, "runsc") });
  const nets = new NetworkNamespaces("10.214.0.0/24", join(scratch, "networks"));
  const rounds = 3;
  try {
    const zip = join(scratch, "app.zip");
    writeFileSync(zip, makeZip([
      { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD [\"node\", \"app.js\"]\n" },
      { name: "app.js", content: APP },
    ]));
    await client.send(new CreateMicrovmImageCommand({
      name: "bench", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${zip}` }, hooks: { port: 8080, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 120 } },
    }));
    const image = await eventually(async () => {
      const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: "bench" }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, "the image build", 600_000);
    if (image.state !== "CREATED") throw new Error(`the bench image failed to build (${image.state}); see lmvm logs build`);
    const builtDir = join(t.dataDir, "images", "bench", "1.0");
    const arch = readdirSync(builtDir)[0]!;
    const rootfs = join(builtDir, arch, "rootfs");
    const config = JSON.parse(readFileSync(join(builtDir, arch, "config.json"), "utf8")) as ImageConfig;
    const snapshotBytes = readdirSync(join(builtDir, arch, "snapshot")).filter((f) => f.startsWith("pages")).reduce((n, f) => n + statSync(join(builtDir, arch, "snapshot", f)).size, 0);

    // Cold: the image's entrypoint booted in a fresh sandbox, initialising from scratch.
    const cold: number[] = [];
    let appRss = 0;
    for (let i = 0; i < rounds; i++) {
      const network = await nets.create();
      const id = `bench-cold-${i}`;
      const started = performance.now();
      try {
        await gvisor.run({ id, rootfs, config, env: {}, hostname: id, network, dir: join(scratch, id), logFile: "/dev/null", limits: limitsOf({}) });
        cold.push((await firstResponse(() => network.sandboxIp)) - started);
        appRss = (await get(network.sandboxIp))!.rss;
      } finally {
        await gvisor.destroy(id);
        Gvisor.forget({ dir: join(scratch, id) });
        await nets.destroy(network);
      }
    }

    const record = (id: string) => {
      const file = join(t.dataDir, "microvms", id, "sandbox.json");
      return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as SandboxRecord) : undefined;
    };
    const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;

    // Restore: RunMicrovm until the app's first answer; then suspend and resume it.
    const restore: number[] = [];
    const resume: number[] = [];
    const resumeAtOnce: number[] = [];
    const suspend: number[] = [];
    const ids: string[] = [];
    for (let i = 0; i < rounds; i++) {
      const started = performance.now();
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:bench" }));
      const id = microvmId!;
      ids.push(id);
      restore.push((await firstResponse(() => record(id)?.sandboxIp)) - started);
      await eventually(async () => ((await state(id)) === "RUNNING" ? true : undefined), "RUNNING", 60_000);

      // Twice: resumed at once, the resume waits for the old sandbox's removal (runsc delete, in
      // the background after a suspend); resumed after a pause, as after an idle period, it does not.
      for (const [resumes, pauseMs] of [[resumeAtOnce, 0], [resume, 5_000]] as const) {
        const suspending = performance.now();
        await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
        await eventually(async () => ((await state(id)) === "SUSPENDED" ? true : undefined), "SUSPENDED", 120_000);
        suspend.push(performance.now() - suspending);
        await new Promise((r) => setTimeout(r, pauseMs));

        const resuming = performance.now();
        await client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
        resumes.push((await firstResponse(() => record(id)?.sandboxIp)) - resuming);
      }
    }

    // Idle footprint: the MicroVMs above are idle now; add more until there are five.
    const availableBefore = meminfo("MemAvailable");
    const extra: string[] = [];
    for (let i = ids.length; i < 5; i++) {
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:bench" }));
      extra.push(microvmId!);
      await eventually(async () => ((await state(microvmId!)) === "RUNNING" ? true : undefined), "RUNNING", 60_000);
    }
    await new Promise((r) => setTimeout(r, 2000));
    const marginal = extra.length ? (availableBefore - meminfo("MemAvailable")) / extra.length : 0;
    const pss = median([...ids, ...extra].map((id) => sandboxPss(record(id)?.sandboxId ?? id)));
    const perVm = Math.max(pss, marginal);
    const fit = Math.floor((meminfo("MemTotal") - 1024 * MB) / perVm);
    for (const id of [...ids, ...extra]) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    for (const id of [...ids, ...extra]) await eventually(async () => ((await state(id)) === "TERMINATED" ? true : undefined), "TERMINATED", 60_000);

    const c = median(cold);
    const ms = (x: number) => `${x.toFixed(0).padStart(6)} ms`;
    return [
      `MicroVMs from snapshots (a Node app building ~${INIT_MB} MB of state at init; medians of ${rounds}; baseline: its cold start, same run):`,
      `  cold start → first response (init from scratch)        ${ms(c)}   1.00`,
      `  RunMicrovm → first response (snapshot restore)         ${ms(median(restore))}   ${(median(restore) / c).toFixed(2)}x cold`,
      `  ResumeMicrovm → first response, 5 s after suspending    ${ms(median(resume))}   ${(median(resume) / c).toFixed(2)}x cold`,
      `  ResumeMicrovm → first response, right after suspending ${ms(median(resumeAtOnce))}   ${(median(resumeAtOnce) / c).toFixed(2)}x cold`,
      `  SuspendMicrovm → SUSPENDED (memory image ${(snapshotBytes / MB).toFixed(0)} MB)       ${ms(median(suspend))}   ${(median(suspend) / (snapshotBytes / 1024 / MB) / 1000).toFixed(2)} s per GB`,
      `  memory per idle MicroVM: PSS ${(pss / MB).toFixed(0)} MB, host MemAvailable drop ${(marginal / MB).toFixed(0)} MB; the app's own RSS ${(appRss / MB).toFixed(0)} MB   ${(perVm / appRss).toFixed(2)}x RSS`,
      `  idle MicroVMs of this app that fit in this machine's ${(meminfo("MemTotal") / 1024 / MB).toFixed(0)} GiB (1 GiB kept free): ${fit}`,
    ];
  } finally {
    await t.stop();
  }
}
