// Warm pools: an image's `lmvm:warm-pool` tag keeps that many clones of its
// latest version restored and paused, each made for a MicroVM id of its own;
// RunMicrovm claims one and records its MicroVM with that id. For a Node app
// and a Python app (one small image each), a claimed MicroVM has its own id as
// hostname, its /run got its id and payload, its log is its own, its execution
// role's credentials come from 169.254.169.254, its egress is what RunMicrovm
// asked (no egress: unreachable), suspend, resume and terminate work, and the
// app cannot tell it from a MicroVM restored without a pool: the hostname, the
// whole environment, /run's body, the credentials and the log stream's name
// and lines are the same, with the MicroVM's own id in place of the other's;
// and the housekeeping the app arms after its restore was done before the
// claim (clones mature before their pause). A run that finds no paused clone
// takes one still maturing.
// Two runs with one clientToken at once make one MicroVM: the clone the
// second claimed goes back unused, and every MicroVM's id is its own. A run whose
// egress routes differ from the clones' misses and restores; lowering the tag
// to 0 destroys the clones; a run short of memory takes clones' memory first.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CloudWatchLogsClient, DescribeLogStreamsCommand, GetLogEventsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { CreateRoleCommand } from "@aws-sdk/client-iam";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListMicrovmsCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TagResourceCommand, TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import { Gvisor, type MicrovmRuntime, type SandboxRecord } from "../../src/runtime/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { ROLE } from "../support/builds.js";
import { iamClient, imageArnOf, policy, roleArn } from "../support/iam.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

const HOOKS_PATH = "/aws/lambda-microvms/runtime/v1/";

const NODE_APP = String.raw`
const http = require("node:http"), os = require("node:os"), net = require("node:net");
const runs = [], runBodies = [];
const state = Buffer.alloc(16 * 1024 * 1024, 7); // state built at init, kept in the snapshot
// Housekeeping armed after a restore, as a runtime's is (V8's memory reducer): when the clock jumps
// (a restore), work is due 6 s later; each records when it ran and under which hostname.
const cleanups = [];
let lastTick = Date.now();
setInterval(() => {
  const now = Date.now();
  if (now - lastTick > 1500) setTimeout(() => cleanups.push({ at: Date.now(), hostname: os.hostname() }), 6000);
  lastTick = now;
}, 500);
function egress() {
  return new Promise((resolve) => {
    const s = net.connect({ host: "198.51.100.10", port: 80, timeout: 1500 });
    s.on("connect", () => { s.destroy(); resolve("connected"); });
    s.on("timeout", () => { s.destroy(); resolve("timeout"); });
    s.on("error", (e) => resolve(e.code || e.message));
  });
}
function imds(method, path, headers) {
  return new Promise((resolve) => {
    const req = http.request({ host: "169.254.169.254", port: 80, method, path, headers, timeout: 3000, agent: false }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => { req.destroy(); resolve({ status: 0, body: "timeout" }); });
    req.on("error", (e) => resolve({ status: 0, body: e.code }));
    req.end();
  });
}
async function credentials() {
  const token = await imds("PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "60" });
  if (token.status !== 200) return { status: token.status };
  const h = { "x-aws-ec2-metadata-token": token.body };
  const list = await imds("GET", "/latest/meta-data/iam/security-credentials/", h);
  if (list.status !== 200) return { status: list.status };
  const role = list.body.trim();
  const c = await imds("GET", "/latest/meta-data/iam/security-credentials/" + role, h);
  let key;
  try { key = JSON.parse(c.body).AccessKeyId; } catch {}
  return { status: c.status, role, keyPrefix: key ? key.slice(0, 4) : null };
}
http.createServer(async (req, res) => {
  const out = { hostname: os.hostname(), env: process.env, runBodies, runs, egress: await egress(), credentials: await credentials(), state: state.length, cleanups };
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify(out));
}).listen(8080);
http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const hook = req.url.slice(${JSON.stringify(HOOKS_PATH)}.length);
    if (hook === "run") {
      const run = JSON.parse(body);
      runBodies.push(body);
      runs.push({ microvmId: run.microvmId, payload: run.runHookPayload });
      console.log("run hook for " + run.microvmId);
    }
    res.end("{}");
  });
}).listen(9000, "127.0.0.1");
console.log("node pool app up");
`;

const PYTHON_APP = String.raw`
import http.client, json, os, socket, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
runs = []
run_bodies = []
state = bytearray(b"\x07" * (16 * 1024 * 1024))
cleanups = []

def cleanup():
    cleanups.append({"at": int(time.time() * 1000), "hostname": socket.gethostname()})

def watch():
    # Housekeeping armed after a restore: when the clock jumps, work is due 6 s later.
    last = time.time()
    while True:
        time.sleep(0.5)
        now = time.time()
        if now - last > 1.5:
            threading.Timer(6, cleanup).start()
        last = now

threading.Thread(target=watch, daemon=True).start()

def egress():
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect(("198.51.100.10", 80))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        import errno
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()

def imds(method, path, headers):
    c = http.client.HTTPConnection("169.254.169.254", 80, timeout=3)
    try:
        c.request(method, path, headers=headers)
        r = c.getresponse()
        return r.status, r.read().decode()
    except OSError as e:
        return 0, str(e)
    finally:
        c.close()

def credentials():
    status, token = imds("PUT", "/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"})
    if status != 200:
        return {"status": status}
    h = {"x-aws-ec2-metadata-token": token}
    status, body = imds("GET", "/latest/meta-data/iam/security-credentials/", h)
    if status != 200:
        return {"status": status}
    role = body.strip()
    status, body = imds("GET", "/latest/meta-data/iam/security-credentials/" + role, h)
    try:
        key = json.loads(body)["AccessKeyId"]
    except Exception:
        key = None
    return {"status": status, "role": role, "keyPrefix": key[:4] if key else None}

def reply(handler, value):
    data = json.dumps(value).encode()
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

class App(BaseHTTPRequestHandler):
    def do_GET(self):
        reply(self, {"hostname": socket.gethostname(), "env": dict(os.environ), "runBodies": run_bodies, "runs": runs, "egress": egress(), "credentials": credentials(), "state": len(state), "cleanups": cleanups})
    def log_message(self, *a):
        pass

class Hooks(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        if self.path == "${HOOKS_PATH}run":
            run = json.loads(body)
            run_bodies.append(body)
            runs.append({"microvmId": run["microvmId"], "payload": run["runHookPayload"]})
            print("run hook for " + run["microvmId"], flush=True)
        reply(self, {})
    def log_message(self, *a):
        pass

threading.Thread(target=HTTPServer(("127.0.0.1", 9000), Hooks).serve_forever, daemon=True).start()
print("python pool app up", flush=True)
ThreadingHTTPServer(("0.0.0.0", 8080), App).serve_forever()
`.replace("${HOOKS_PATH}", HOOKS_PATH);

const APPS = {
  node: { image: "pool-node", files: [{ name: "Dockerfile", content: 'FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD ["node", "app.js"]\n' }, { name: "app.js", content: NODE_APP }] },
  python: { image: "pool-python", files: [{ name: "Dockerfile", content: 'FROM lmvm/debian12\nWORKDIR /app\nCOPY app.py .\nCMD ["python3", "-u", "app.py"]\n' }, { name: "app.py", content: PYTHON_APP }] },
} as const;
type App = keyof typeof APPS;

interface Seen {
  hostname: string;
  env: Record<string, string>;
  runBodies: string[];
  runs: { microvmId: string; payload: string }[];
  egress: string;
  credentials: { status: number; role?: string; keyPrefix?: string | null };
  state: number;
  cleanups: { at: number; hostname: string }[];
}

function get(ip: string): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port: 8080, path: "/", timeout: 15_000, agent: false }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        try {
          resolve(JSON.parse(text) as Seen);
        } catch {
          reject(new Error(`not JSON from ${ip}: ${text}`));
        }
        const socket = res.socket;
        socket.on("error", () => undefined); // already closed by the app: nothing to reset
        try {
          if (!socket.destroyed) socket.resetAndDestroy(); // no connection left open for a checkpoint to wait on
        } catch {
          socket.destroy();
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET / on ${ip} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

describe("warm pools", { timeout: 1_200_000 }, () => {
  let t: TestPlatform;
  const dir = tempDir("lmvm-pool-app-");
  const INTERNET = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS";

  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
    await iamClient(t.platform.url, t.credentials).send(new CreateRoleCommand({ RoleName: "pool-exec", AssumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: ["sts:AssumeRole", "sts:TagSession"] }) }));
    // Both images at once: the base image is imported once.
    await Promise.all(Object.values(APPS).map(async ({ image, files }) => {
      const zip = join(dir, `${image}.zip`);
      writeFileSync(zip, makeZip([...files]));
      await t.client.send(new CreateMicrovmImageCommand({
        name: image, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: ROLE, codeArtifact: { uri: `file://${zip}` },
        hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 }, microvmHooks: { run: "ENABLED", runTimeoutInSeconds: 5 } },
      }));
      const state = await eventually(async () => {
        const s = (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: image }))).state;
        return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
      }, `the ${image} build`, 600_000);
      const v = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: "1.0" }));
      assert.equal(state, "CREATED", `${image} built: ${v.stateReason}`);
    }));
  });
  after(() => t?.stop());

  const runtime = () => t.platform.runtime as MicrovmRuntime;
  const metric = async (name: string, image: string): Promise<number> => {
    const text = await (await fetch(`${t.platform.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`image="${imageArnOf(image)}"`) && l.includes('version="1.0"'));
    return line ? Number(line.split(" ").pop()) : 0;
  };
  const poolSize = async (image: string, size: number) => {
    await t.client.send(new TagResourceCommand({ Resource: imageArnOf(image), Tags: { "lmvm:warm-pool": String(size) } }));
    await eventually(async () => ((await metric("lmvm_warm_pool_ready", image)) === size ? true : undefined), `${image}'s pool to hold ${size} clones`, 120_000);
  };
  const state = async (id: string) => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = async (id: string, want: string) => {
    let last: { state?: string; stateReason?: string } = {};
    await eventually(async () => {
      last = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
      return last.state === want ? true : undefined;
    }, `${id} to be ${want}`, 120_000).catch((err: Error) => {
      throw new Error(`${err.message}; it is ${last.state}: ${last.stateReason ?? "no reason given"}`);
    });
  };
  const record = (id: string) => JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
  const run = async (image: string, extra: { egressNetworkConnectors?: string[]; executionRoleArn?: string; runHookPayload?: string } = {}) => {
    const id = (await t.client.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf(image), ...extra }))).microvmId!;
    await until(id, "RUNNING");
    return id;
  };
  /** Clones' sandboxes no MicroVM has claimed. */
  const poolSandboxes = async () => {
    const vms = join(t.dataDir, "microvms");
    const claimed = new Set((existsSync(vms) ? readdirSync(vms) : []).map((id) => (existsSync(join(t.dataDir, "microvms", id, "sandbox.json")) ? record(id).sandboxId : undefined)));
    return (await new Gvisor({ stateRoot: join(t.dataDir, "runsc", "microvms") }).list()).filter((s) => s.id.startsWith("pool-") && !claimed.has(s.id));
  };
  /** After a pool's tag went to 0: every clone goes, one whose restore was under way included (destroyed when the restore ends). */
  const noClonesLeft = (what: string) => eventually(async () => ((await poolSandboxes()).length === 0 ? true : undefined), what, 60_000);
  /** The MicroVM's log stream as CloudWatch Logs shows it: its name and lines, once /run's line is there. */
  const stream = async (image: string, id: string) => {
    const logs = new CloudWatchLogsClient({ endpoint: t.platform.url, region: "us-east-1", credentials: t.credentials, maxAttempts: 1 });
    try {
      const logGroupName = `/aws/lambda-microvms/${image}`;
      return await eventually(async () => {
        const names = ((await logs.send(new DescribeLogStreamsCommand({ logGroupName }))).logStreams ?? []).map((x) => x.logStreamName ?? "").filter((n) => n.includes(id));
        if (names.length !== 1) return undefined;
        const lines = ((await logs.send(new GetLogEventsCommand({ logGroupName, logStreamName: names[0], startFromHead: true }))).events ?? []).map((e) => e.message ?? "");
        return lines.some((l) => l.includes("run hook for")) ? { name: names[0]!, lines } : undefined;
      }, `${id}'s log stream with its /run line`, 30_000);
    } finally {
      logs.destroy();
    }
  };
  /** What the app and its log stream show, with the MicroVM's own id in place of itself: equal for MicroVMs the app cannot tell apart. */
  const seenAs = async (image: string, id: string) => {
    // The housekeeping's times are the app's own, different in any two MicroVMs.
    const { cleanups: _, ...seen } = { ...(await get(record(id).sandboxIp)), stream: await stream(image, id) };
    return JSON.parse(JSON.stringify(seen).replaceAll(id, "<self>")) as Omit<Seen, "cleanups">;
  };

  for (const app of ["node", "python"] as App[]) {
    test(`${app}: a claimed clone is the MicroVM's own, like a restored one, through suspend, resume and terminate`, async () => {
      const { image } = APPS[app];
      const role = roleArn("pool-exec");
      await poolSize(image, 2);
      const waiting = await poolSandboxes();
      assert.deepEqual(waiting.map((s) => s.status), ["paused", "paused"], "clones are paused while pooled (no CPU)");
      const hitsBefore = await metric("lmvm_warm_pool_hits_total", image);
      const missesBefore = await metric("lmvm_warm_pool_misses_total", image);

      // A hit: the clone's sandbox is the MicroVM's.
      const claimedAt = Date.now();
      const pooled = await run(image, { executionRoleArn: role, runHookPayload: "hello", egressNetworkConnectors: [INTERNET] });
      assert.equal(await metric("lmvm_warm_pool_hits_total", image), hitsBefore + 1);
      assert.match(pooled, /^microvm-[0-9a-f]{17}$/, "the id the clone was made for is a MicroVM id like any");
      const rec = record(pooled);
      assert.match(rec.sandboxId ?? "", /^pool-[0-9a-f]+$/, "the MicroVM runs in a clone's sandbox");
      assert.equal(rec.sandboxDir, join(t.dataDir, "pool", rec.sandboxId!));
      const seen = await get(rec.sandboxIp);
      assert.equal(seen.hostname, pooled, "its hostname is its id");
      // The clone ran long enough after its restore for the housekeeping its app armed then: it was done
      // before the claim (under the hostname the clone was given after its restore), not on the first requests after it.
      const afterRestore = seen.cleanups.filter((c) => c.hostname === pooled);
      assert.ok(afterRestore.length > 0 && afterRestore[0]!.at < claimedAt, `the app's housekeeping after its restore ran before the claim (claimed at ${claimedAt}; done: ${JSON.stringify(seen.cleanups)})`);
      assert.equal(seen.env.AWS_LAMBDA_MICROVM_IMAGE_ARN, imageArnOf(image), "the reserved variables are the version's");
      assert.equal(seen.env.AWS_LAMBDA_MICROVM_IMAGE_VERSION, "1.0");
      assert.deepEqual(seen.runBodies.map((b) => JSON.parse(b) as unknown), [{ microvmId: pooled, runHookPayload: "hello" }]);
      assert.deepEqual(seen.runs, [{ microvmId: pooled, payload: "hello" }], "/run got its id and payload, once");
      assert.doesNotMatch(seen.egress, /^E(NET|HOST)UNREACH$/, "INTERNET_EGRESS gives it a route out");
      assert.deepEqual(seen.credentials, { status: 200, role: "execution_role", keyPrefix: "ASIA" }, "its execution role's credentials from 169.254.169.254");
      const logs = await lmvm(["logs", "microvm", pooled], { LMVM_DATA_DIR: t.dataDir });
      assert.equal(logs.code, 0, logs.stderr);
      assert.deepEqual(logs.stdout.match(/run hook for \S+/g), [`run hook for ${pooled}`], "its own output, and only its own");

      // Two runs with one clientToken at once: one MicroVM; the clone the second claimed goes back with its id unused.
      await poolSize(image, 2);
      const hitsPaired = await metric("lmvm_warm_pool_hits_total", image);
      const clientToken = `pair-${app}-${Date.now()}`;
      const pair = await Promise.all([0, 1].map(async () => (await t.client.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf(image), clientToken, egressNetworkConnectors: [INTERNET] }))).microvmId!));
      assert.equal(pair[0], pair[1], "one clientToken, one MicroVM");
      await until(pair[0]!, "RUNNING");
      assert.equal(await metric("lmvm_warm_pool_hits_total", image), hitsPaired + 1, "one clone started a MicroVM");
      assert.equal((await get(record(pair[0]!).sandboxIp)).hostname, pair[0]);
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: pair[0]! }));
      await until(pair[0]!, "TERMINATED");
      await eventually(async () => ((await metric("lmvm_warm_pool_ready", image)) === 2 ? true : undefined), `${image}'s pool to hold 2 clones again`, 120_000);

      // Without egress the clones' routes do not fit: a miss, restored as without a pool, and unreachable.
      const isolated = await run(image, { egressNetworkConnectors: [], runHookPayload: "hello" });
      assert.equal(await metric("lmvm_warm_pool_misses_total", image), missesBefore + 1);
      assert.doesNotMatch(record(isolated).sandboxId ?? "", /^pool-/);
      const alone = await get(record(isolated).sandboxIp);
      assert.match(alone.egress, /^E(NET|HOST)UNREACH$/, "no egress: nothing out, as without a pool");
      assert.equal(alone.hostname, isolated);

      // Tag 0: the clones go; the next run restores, and the app sees exactly what the claimed one saw.
      await poolSize(image, 0);
      await noClonesLeft("only the claimed clone's sandbox to be left");
      const restored = await run(image, { executionRoleArn: role, runHookPayload: "hello", egressNetworkConnectors: [INTERNET] });
      assert.doesNotMatch(record(restored).sandboxId ?? "", /^pool-/);
      assert.deepEqual(await seenAs(image, pooled), await seenAs(image, restored), "a claimed clone and a restored sandbox look the same to the app and in its logs");

      // Suspend and resume keep it; terminate frees the clone's directory too.
      await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: pooled }));
      await until(pooled, "SUSPENDED");
      await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: pooled }));
      await until(pooled, "RUNNING");
      const back = await get(record(pooled).sandboxIp);
      assert.equal(back.hostname, pooled);
      assert.deepEqual(back.runs, [{ microvmId: pooled, payload: "hello" }]);
      for (const id of [pooled, isolated, restored]) await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
      for (const id of [pooled, isolated, restored]) await until(id, "TERMINATED");
      const ids = ((await t.client.send(new ListMicrovmsCommand({}))).items ?? []).map((m) => m.microvmId);
      assert.equal(new Set(ids).size, ids.length, "no two MicroVMs share an id");
      assert.equal(await state(pooled), "TERMINATED");
      assert.ok(!existsSync(rec.sandboxDir!), "the clone's directory went with the MicroVM");
      assert.deepEqual(readdirSync(join(t.dataDir, "pool")).filter((n) => n !== rec.sandboxId), [], "nothing left in the pool directory");
    });
  }

  test("a bad lmvm:warm-pool value is refused when tagged, naming the tag and the range", async () => {
    for (const bad of ["51", "-1", "two", "1.5"]) {
      await assert.rejects(t.client.send(new TagResourceCommand({ Resource: imageArnOf("pool-node"), Tags: { "lmvm:warm-pool": bad } })), (err: Error) => {
        assert.equal(err.name, "ValidationException");
        assert.match(err.message, /lmvm:warm-pool/);
        assert.match(err.message, /0 to 50/);
        return true;
      });
    }
  });

  test("a run that finds no paused clone takes one still maturing, which runs already", async () => {
    await poolSize("pool-python", 0);
    await poolSize("pool-node", 0);
    await t.client.send(new TagResourceCommand({ Resource: imageArnOf("pool-node"), Tags: { "lmvm:warm-pool": "1" } }));
    try {
      // Restored, and running for at least 10 s before its pause.
      await eventually(async () => ((await metric("lmvm_warm_pool_maturing", "pool-node")) === 1 ? true : undefined), "a maturing clone", 120_000);
      const maturing = await poolSandboxes();
      assert.deepEqual(maturing.map((s) => s.status), ["running"], "a maturing clone is not paused yet");
      assert.equal(await metric("lmvm_warm_pool_ready", "pool-node"), 0, "and it is not counted ready");
      const hits = await metric("lmvm_warm_pool_hits_total", "pool-node");
      const id = await run("pool-node", { runHookPayload: "early", egressNetworkConnectors: [INTERNET] });
      assert.equal(await metric("lmvm_warm_pool_hits_total", "pool-node"), hits + 1, "a hit, not a restore");
      assert.equal(record(id).sandboxId, maturing[0]!.id, "the MicroVM runs in the maturing clone's sandbox");
      const seen = await get(record(id).sandboxIp);
      assert.equal(seen.hostname, id);
      assert.deepEqual(seen.runs, [{ microvmId: id, payload: "early" }], "/run got its id and payload");
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
      await until(id, "TERMINATED");
    } finally {
      await poolSize("pool-node", 0);
    }
    await noClonesLeft("the clone a refill made after the claim to go");
  });

  test("a run short of memory takes the pools' memory first, and the pool refills when there is room", async () => {
    await poolSize("pool-python", 0);
    await poolSize("pool-node", 2);
    const available = Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))![1]) / 1024;
    // A reserve the host cannot keep even without the clones: the run is refused, after the clones are given back.
    runtime().setMemoryReserve(Math.round(available) + 100_000);
    try {
      await assert.rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("pool-python") })), (err: Error) => {
        assert.equal(err.name, "InsufficientCapacityException", err.message);
        return true;
      });
      assert.equal(await metric("lmvm_warm_pool_ready", "pool-node"), 0, "the other image's clones were destroyed first");
      assert.deepEqual(await poolSandboxes(), []);
    } finally {
      runtime().setMemoryReserve(1024);
    }
    await eventually(async () => ((await metric("lmvm_warm_pool_ready", "pool-node")) === 2 ? true : undefined), "the pool to refill", 120_000);
    await poolSize("pool-node", 0);
    await noClonesLeft("the clones to go");
  });
});
