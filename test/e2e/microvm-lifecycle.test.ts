// A MicroVM's life on real gVisor sandboxes, through the official SDK: built
// and snapshotted, run from the snapshot with /run and its payload, reached
// through its network namespace, suspended and resumed with memory kept,
// terminated with nothing left behind.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
  TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import type { SandboxRecord } from "../../src/runtime/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

const APP = `const http = require("node:http");
const hooks = [];
let counter = 0;
const big = Buffer.alloc(20 * 1024 * 1024, 7); // initialised once, before the snapshot
http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const hook = req.url.split("/").pop();
    if (hook !== "ready") hooks.push({ hook, body, id: req.headers["x-lmvm-microvm-id"] });
    res.writeHead(200).end();
  });
}).listen(9000, "0.0.0.0");
http.createServer((req, res) => {
  counter += 1;
  console.log("served request " + counter);
  require("node:fs").appendFileSync("/app/visits.txt", "x"); // disk state, in the sandbox's overlay
  const visits = require("node:fs").readFileSync("/app/visits.txt", "utf8").length;
  const fd = require("node:fs").openSync("/dev/urandom", "r");
  const random = Buffer.alloc(16);
  require("node:fs").readSync(fd, random);
  require("node:fs").closeSync(fd);
  const identity = { hostname: require("node:os").hostname(), random: random.toString("hex"), memTotal: require("node:os").totalmem() };
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ counter, visits, hooks, big: big.length, ...identity }));
}).listen(8080, "0.0.0.0");
`;

const agent = new Agent({ keepAlive: true, maxSockets: 1 });
/** GET on its own connection, closed by us first so the sandbox can be checkpointed later. */
interface Answer {
  counter: number;
  visits: number;
  hooks: { hook: string; body: string; id?: string }[];
  big: number;
  hostname: string;
  random: string;
  memTotal: number;
}
function get(ip: string): Promise<Answer> {
  // The socket timeout only emits 'timeout'; the deadline ends the wait.
  return within(30_000, `the app at ${ip}:8080 to answer`, new Promise((resolve, reject) => {
    const req = request({ host: ip, port: 8080, path: "/", agent, timeout: 5000 }, (res) => {
      const socket = res.socket;
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        socket.resetAndDestroy();
        resolve(JSON.parse(body));
      });
    });
    req.on("error", reject);
    req.end();
  }));
}

describe("MicroVM lifecycle on gVisor", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:lifecycle";
  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
    const file = join(tempDir("lmvm-life-"), "app.zip");
    writeFileSync(file, makeZip([
      { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD [\"node\", \"app.js\"]\n" },
      { name: "app.js", content: APP },
    ]));
    await t.client.send(new CreateMicrovmImageCommand({
      name: "lifecycle", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${file}` },
      resources: [{ minimumMemoryInMiB: 512 }],
      hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 }, microvmHooks: { run: "ENABLED", runTimeoutInSeconds: 5, suspend: "ENABLED", suspendTimeoutInSeconds: 5, resume: "ENABLED", resumeTimeoutInSeconds: 5, terminate: "ENABLED", terminateTimeoutInSeconds: 5 } },
    }));
    const state = await eventually(async () => {
      const s = (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "lifecycle" }))).state;
      return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
    }, "the image build", 300_000);
    assert.equal(state, "CREATED");
  });
  after(() => t.stop());

  const status = async (id: string) => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = async (id: string, want: string) => {
    let last: unknown;
    try {
      await eventually(async () => {
        last = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
        return (last as { state?: string }).state === want ? true : undefined;
      }, want, 60_000);
    } catch (err) {
      const { state, stateReason } = last as { state?: string; stateReason?: string };
      throw new Error(`${(err as Error).message}; the MicroVM is ${state}: ${stateReason ?? "no reason given"}`);
    }
  };
  const record = (id: string) => JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;

  test("run → /run with the payload → serve → suspend → resume with memory kept → terminate, leaving nothing", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN, runHookPayload: '{"tenant":"t-42"}' }));
    const id = microvmId!;
    await until(id, "RUNNING");
    const ip = record(id).sandboxIp;
    const first = await get(ip);
    assert.equal(first.counter, 1, "the app starts from the snapshot: no request was served before");
    assert.equal(first.big, 20 * 1024 * 1024, "memory initialised before the snapshot is there");
    assert.deepEqual(first.hooks, [{ hook: "run", body: JSON.stringify({ microvmId: id, runHookPayload: '{"tenant":"t-42"}' }), id }]);
    await get(ip);

    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    assert.ok(existsSync(join(t.dataDir, "microvms", id, "checkpoint", "checkpoint.img")));

    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    assert.equal(await status(id), "RUNNING");
    const after = await get(record(id).sandboxIp);
    assert.equal(after.counter, 3, "the in-memory counter went on from 2");
    assert.deepEqual(after.hooks.map((h) => h.hook), ["run", "suspend", "resume"]);
    assert.ok(after.hooks.every((h) => h.id === id), "every hook names the MicroVM");

    const net = record(id).networkIndex;
    assert.match(execFileSync("tc", ["qdisc", "show", "dev", `lmvmh${net}`], { encoding: "utf8" }), /tbf .*rate 8Mbit/, "shaped to its size's 1 MB/s");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
    assert.ok(!existsSync(join(t.dataDir, "microvms", id)), "the MicroVM's directory is gone");
    assert.doesNotMatch(execFileSync("nft", ["list", "table", "inet", "lmvm"], { encoding: "utf8" }), new RegExp(`chain lmvmh${net} \\{`), "its firewall chain is gone");
    const logs = await lmvm(["logs", "microvm", id, "--data-dir", t.dataDir, "--endpoint-url", t.platform.url]);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /served request 1\n[\s\S]*served request 3\n/, "the app's output is kept after the MicroVM ends");
  });

  test("ten suspend/resume cycles in a row keep memory and disk state", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN }));
    const id = microvmId!;
    await until(id, "RUNNING");
    for (let cycle = 1; cycle <= 10; cycle++) {
      const seen = await get(record(id).sandboxIp);
      assert.equal(seen.counter, cycle, `cycle ${cycle}: the in-memory counter survived every cycle before`);
      assert.equal(seen.visits, cycle, `cycle ${cycle}: the file on disk survived every cycle before`);
      await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
      await until(id, "SUSPENDED");
      await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    }
    const last = await get(record(id).sandboxIp);
    assert.equal(last.counter, 11);
    assert.equal(last.hooks.filter((h) => h.hook === "resume").length, 10);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
  });

  test("terminating a suspended MicroVM leaves alone the sandbox that took its network's place", async (ctx) => {
    const a = (await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN }))).microvmId!;
    await until(a, "RUNNING");
    const old = record(a).networkIndex;
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: a }));
    await until(a, "SUSPENDED");
    const b = (await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN }))).microvmId!;
    await until(b, "RUNNING");
    // Indexes are the lowest free on the host: b takes a's, unless another test's server took it meanwhile.
    if (record(b).networkIndex !== old) ctx.diagnostic("another server took the index first");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: a }));
    await until(a, "TERMINATED");
    assert.equal((await get(record(b).sandboxIp)).counter, 1, "b still serves");
    assert.match(execFileSync("nft", ["list", "chain", "inet", "lmvm", `lmvmh${record(b).networkIndex}`], { encoding: "utf8" }), /counter name "refused_lmvmh\d+" drop/, "b keeps its firewall chain");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: b }));
    await until(b, "TERMINATED");
  });

  test("three MicroVMs from one image run at once, each with its own state, identity and memory limit", async () => {
    const ids = await Promise.all([0, 1, 2].map(async () => (await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN }))).microvmId!));
    for (const id of ids) await until(id, "RUNNING");
    const ips = ids.map((id) => record(id).sandboxIp);
    assert.equal(new Set(ips).size, 3);
    const answers: Answer[] = [];
    for (const [i, ip] of ips.entries()) {
      for (let n = 0; n < i; n++) await get(ip);
      answers.push(await get(ip));
    }
    assert.deepEqual(answers.map((a) => a.counter), [1, 2, 3]);
    assert.deepEqual(answers.map((a) => a.hostname), ids, "each MicroVM's hostname is its id");
    assert.equal(new Set(answers.map((a) => a.random)).size, 3, "each MicroVM reads its own /dev/urandom");
    for (const a of answers) assert.equal(a.memTotal, 2048 * 1024 * 1024, "minimumMemoryInMiB 512 picks the smallest size, whose peak memory (2 GiB) the guest sees");
    for (const id of ids) await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    for (const id of ids) await until(id, "TERMINATED");
  });
});
