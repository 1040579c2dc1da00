// Warm pools, side by side in one run, for the snapshot bench's kind of app (a
// Node app building ~200 MB of state at init, with /ready):
// - cold start → first response: the image's entrypoint booted in a fresh
//   sandbox (runsc run, the app initialising from scratch) in a new network
//   namespace, with the MicroVM's limits, then its hostname set: the set-up
//   RunMicrovm's restore path has, with `runsc run` in place of `runsc restore`;
// - RunMicrovm → first response without a pool (snapshot restore);
// - RunMicrovm → first response with a pool of 3 (`lmvm:warm-pool` = 3: a
//   restored, paused clone claimed, unpaused and given its identity), each
//   round waiting for the pool to be full again first.
// The server under test is `lmvm server` in its own process; the bench only
// sends API calls and polls the app. Several rounds each: median and spread.

import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, LambdaMicrovmsClient, RunMicrovmCommand, TagResourceCommand, TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import { limitsOf } from "../src/core/index.js";
import { NetworkNamespaces } from "../src/net/index.js";
import { Gvisor, type ImageConfig, type SandboxRecord } from "../src/runtime/index.js";
import { makeZip } from "../test/support/artifacts.js";
import { eventually, readCredentials, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { median, summary } from "./stats.js";

const INIT_MB = 200;
const APP = `const http = require("node:http");
const crypto = require("node:crypto");
// Init, as a real app's: a lookup table on the JS heap and a buffer of precomputed data.
const table = new Map();
for (let i = 0; i < ${INIT_MB * 2500}; i++) table.set("key-" + i, { id: i, name: "item-" + i, tags: ["a", "b"] });
const data = Buffer.alloc(${INIT_MB / 2} * 1024 * 1024);
for (let off = 0; off < data.length; off += 1 << 20) crypto.randomFillSync(data, off, 1 << 20);
http.createServer((req, res) => {
  if (req.url.endsWith("/ready")) return res.writeHead(200).end();
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ entries: table.size }));
}).listen(8080, "0.0.0.0");
`;
const ROUNDS = 5;
const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:pool-bench";

const agent = new Agent({ keepAlive: false });
function answers(ip: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: ip, port: 8080, path: "/", agent, timeout: 1000 }, (res) => {
      res.resume();
      res.on("end", () => {
        res.socket.resetAndDestroy();
        resolve(res.statusCode === 200);
      });
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/** Polls until the app answers; resolves with the time it did. */
async function firstResponse(ip: () => string | undefined, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const at = ip();
    if (at && (await answers(at))) return performance.now();
    if (Date.now() > deadline) throw new Error("the app never answered");
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function warmPoolBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-pool-");
  const scratch = tempDir("lmvm-bench-pool-cold-");
  const server = await spawnServer(dataDir, { builds: true });
  const client = new LambdaMicrovmsClient({ endpoint: server.url, region: "us-east-1", credentials: readCredentials(dataDir), maxAttempts: 1 });
  const gvisor = new Gvisor({ stateRoot: join(scratch, "runsc", "cold") });
  const nets = new NetworkNamespaces("10.215.0.0/24", join(scratch, "networks"));
  const record = (id: string): SandboxRecord | undefined => {
    try {
      return JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
    } catch {
      return undefined;
    }
  };
  const metric = async (name: string): Promise<number> => {
    const line = (await (await fetch(`${server.url}/metrics`)).text()).split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(IMAGE_ARN));
    return line ? Number(line.split(" ").pop()) : 0;
  };
  const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  try {
    const zip = join(scratch, "app.zip");
    writeFileSync(zip, makeZip([
      { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD [\"node\", \"app.js\"]\n" },
      { name: "app.js", content: APP },
    ]));
    await client.send(new CreateMicrovmImageCommand({
      name: "pool-bench", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${zip}` }, hooks: { port: 8080, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 120 } },
    }));
    const image = await eventually(async () => {
      const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: "pool-bench" }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, "the image build", 900_000);
    if (image.state !== "CREATED") throw new Error(`the bench image failed to build (${image.state})`);
    const builtDir = join(dataDir, "images", "pool-bench", "1.0");
    const arch = readdirSync(builtDir)[0]!;
    const rootfs = join(builtDir, arch, "rootfs");
    const config = JSON.parse(readFileSync(join(builtDir, arch, "config.json"), "utf8")) as ImageConfig;

    // Cold: the entrypoint booted in a fresh sandbox, initialising from scratch.
    const cold: number[] = [];
    for (let i = 0; i < Math.min(ROUNDS, 3); i++) {
      const network = await nets.create();
      const id = `bench-pool-cold-${process.pid}-${i}`;
      const started = performance.now();
      try {
        await gvisor.run({ id, rootfs, config, env: {}, hostname: id, network, dir: join(scratch, id), logFile: "/dev/null", limits: limitsOf({}) });
        await gvisor.setHostname(id, rootfs, id);
        cold.push((await firstResponse(() => network.sandboxIp)) - started);
      } finally {
        await gvisor.destroy(id);
        Gvisor.forget({ dir: join(scratch, id) });
        await nets.destroy(network);
      }
    }

    // RunMicrovm → first response, without and then with a pool of 3.
    const runOnce = async (): Promise<{ ms: number; id: string; sandboxId: string }> => {
      const started = performance.now();
      const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN }));
      const id = microvmId!;
      const ms = (await firstResponse(() => record(id)?.sandboxIp)) - started;
      await eventually(async () => ((await state(id)) === "RUNNING" ? true : undefined), "RUNNING", 60_000);
      const sandboxId = record(id)?.sandboxId ?? id;
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
      await eventually(async () => ((await state(id)) === "TERMINATED" ? true : undefined), "TERMINATED", 60_000);
      return { ms, id, sandboxId };
    };
    const restore: number[] = [];
    for (let i = 0; i < ROUNDS; i++) restore.push((await runOnce()).ms);

    await client.send(new TagResourceCommand({ Resource: IMAGE_ARN, Tags: { "lmvm:warm-pool": "3" } }));
    const pooled: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await eventually(async () => ((await metric("lmvm_warm_pool_ready")) === 3 ? true : undefined), "the pool to hold 3 clones", 300_000);
      const r = await runOnce();
      if (!r.sandboxId.startsWith("pool-")) throw new Error(`round ${i}: RunMicrovm did not claim a clone (sandbox ${r.sandboxId})`);
      pooled.push(r.ms);
    }
    const hits = await metric("lmvm_warm_pool_hits_total");
    await client.send(new TagResourceCommand({ Resource: IMAGE_ARN, Tags: { "lmvm:warm-pool": "0" } }));

    const c = median(cold);
    const ratio = (xs: number[]) => `${(median(xs) / c).toFixed(3)}x cold (${(Math.min(...xs) / c).toFixed(3)}–${(Math.max(...xs) / c).toFixed(3)})`;
    const pool = median(pooled) / c;
    return [
      `Warm pools (a Node app building ~${INIT_MB} MB of state at init; lmvm server in its own process; median (min–max); baseline: its cold start, same run):`,
      `  cold start → first response (runsc run, init from scratch; ${cold.length} rounds)   ${summary(cold, "ms")}   1.00`,
      `  RunMicrovm → first response, no pool (snapshot restore; ${restore.length} rounds)    ${summary(restore, "ms")}   ${ratio(restore)}`,
      `  RunMicrovm → first response, pool of 3 (clone claimed; ${pooled.length} rounds, ${hits} hits)  ${summary(pooled, "ms")}   ${ratio(pooled)}`,
      `  Done when: warm pool at most 0.05x cold: ${pool <= 0.05 ? "met" : "NOT met"} (${pool.toFixed(3)}x)`,
    ];
  } finally {
    client.destroy();
    await server.kill().catch(() => undefined);
    await freeSandboxes(dataDir);
    await freeSandboxes(scratch);
    for (const d of [dataDir, scratch]) {
      try {
        (await import("node:fs")).rmSync(d, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }
}
