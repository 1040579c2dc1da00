// Builds end with a real snapshot: the app boots in gVisor, /ready is polled
// through 503s, memory and disk are checkpointed, the checkpoint is restored
// once and /validate must pass. Hook failures fail the build with their reason.

import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmImageBuildCommand, GetMicrovmImageVersionCommand, ListMicrovmImageBuildsCommand } from "@aws-sdk/client-lambda-microvms";
import { builtImageDir } from "../../src/builder/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { paths } from "../../src/server/data-paths.js";

// Answers /ready with 503 until it has "initialised"; /validate as VALIDATE says.
const APP = `const http = require("node:http");
let ready = false;
const state = { initialisedAt: null, hits: [] };
setTimeout(() => { ready = true; state.initialisedAt = Date.now(); }, 1500);
http.createServer((req, res) => {
  const hook = req.url.split("/").pop();
  state.hits.push(hook);
  if (hook === "ready") return res.writeHead(ready ? 200 : 503).end();
  if (hook === "validate") return res.writeHead(Number(process.env.VALIDATE || 200)).end(process.env.VALIDATE ? "validation failed: missing model weights" : "");
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(state));
}).listen(9000, "0.0.0.0");
`;

// After /ready, a thread of each keeps a core busy for good: every restore of
// the snapshot is busy with no request, as an app spinning on a socket runsc
// left in its epoll set is (the validation restore's check cannot tell them apart).
const BUSY_NODE = `const http = require("node:http");
const { Worker } = require("node:worker_threads");
let busy = false;
http.createServer((req, res) => {
  res.writeHead(200).end();
  if (!busy) { busy = true; new Worker("for (;;) {}", { eval: true }); }
}).listen(9000, "0.0.0.0");
`;
const BUSY_PYTHON = `import threading
from http.server import BaseHTTPRequestHandler
from socketserver import TCPServer
started = []
def spin():
    while True:
        pass
class Hooks(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        if not started:
            started.append(True)
            threading.Thread(target=spin, daemon=True).start()
TCPServer.allow_reuse_address = True
TCPServer(("0.0.0.0", 9000), Hooks).serve_forever()
`;

describe("build-time snapshots", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  const dir = tempDir("lmvm-snap-");
  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
  });
  after(() => t.stop());

  const NODE_APP = [
    { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD [\"node\", \"app.js\"]\n" },
    { name: "app.js", content: APP },
  ];

  async function build(name: string, extra: Record<string, unknown>, env: Record<string, string> = {}, files: { name: string; content: string }[] = NODE_APP) {
    const file = join(dir, `${name}.zip`);
    writeFileSync(file, makeZip(files));
    await t.client.send(new CreateMicrovmImageCommand({
      name, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
      codeArtifact: { uri: `file://${file}` }, environmentVariables: env, ...extra,
    }));
    const version = await eventually(async () => {
      const v = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
      return v.state === "SUCCESSFUL" || v.state === "FAILED" ? v : undefined;
    }, `build of ${name}`, 300_000);
    const id = (await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }))).items![0]!.buildId!;
    return { version, build: await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: name, imageVersion: "1.0", buildId: id })) };
  }

  const hooks = (validateTimeout = 10) => ({ hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60, validate: "ENABLED", validateTimeoutInSeconds: validateTimeout } } });

  test("a build polls /ready through 503s, checkpoints, and passes /validate on a restored copy", async () => {
    const { version, build: b } = await build("snap-ok", hooks());
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
    assert.ok((b.snapshotBuild?.memorySnapshotSizeInBytes ?? 0) > 10_000_000, `memory snapshot of ${b.snapshotBuild?.memorySnapshotSizeInBytes} bytes holds a Node heap`);
    assert.ok((b.snapshotBuild?.diskSnapshotSizeInBytes ?? 0) > 0);
    assert.ok((b.snapshotBuild?.codeInstallSizeInBytes ?? 0) > 0);
    const out = builtImageDir(paths(t.dataDir).images, "arn:aws:lambda:us-east-1:000000000000:microvm-image:snap-ok", "1.0", b.architecture!);
    assert.ok(existsSync(join(out, "snapshot", "checkpoint.img")));
    const log = readFileSync(join(t.dataDir, "logs", "builds", `${b.buildId}.log`), "utf8");
    for (const line of ["Waiting for /ready on port 9000", "Checkpointing memory and disk", "Restoring the snapshot once", "Calling /validate"]) assert.match(log, new RegExp(line));
  });

  test("a failing /validate fails the build, quoting the hook's answer", async () => {
    const { version, build: b } = await build("snap-invalid", hooks(), { VALIDATE: "500" });
    assert.equal(version.state, "FAILED");
    assert.match(b.stateReason!, /The \/validate hook failed: \/validate hook answered HTTP 500: validation failed: missing model weights/);
  });

  test("a /ready that never answers 200 fails the build when its timeout passes", async () => {
    const { build: b } = await build("snap-never-ready", { hooks: { port: 9001, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 3 } } });
    assert.equal(b.buildState, "FAILED");
    assert.match(b.stateReason!, /The \/ready hook failed: \/ready hook on port 9001 did not answer 200 within 3 s/);
  });

  for (const [lang, files] of [
    ["Node", [{ name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY app.js .\nCMD [\"node\", \"app.js\"]\n" }, { name: "app.js", content: BUSY_NODE }]],
    ["Python", [{ name: "Dockerfile", content: 'FROM lmvm/debian12\nWORKDIR /app\nCOPY app.py .\nCMD ["python3", "-u", "app.py"]\n' }, { name: "app.py", content: BUSY_PYTHON }]],
  ] as const) {
    test(`a ${lang} app whose restored copy keeps a core busy with no request is snapshotted again, three times in all, and the last snapshot is kept with a warning`, async () => {
      const { version, build: b } = await build(`snap-busy-${lang.toLowerCase()}`, { hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 } } }, {}, [...files]);
      assert.equal(version.state, "SUCCESSFUL", version.stateReason);
      const log = readFileSync(join(t.dataDir, "logs", "builds", `${b.buildId}.log`), "utf8");
      assert.equal(log.match(/Checkpointing memory and disk/g)?.length, 3, log);
      assert.match(log, /The restored app kept a CPU core busy with no request .*: taking the snapshot again \(attempt 2 of 3\)/);
      assert.match(log, /taking the snapshot again \(attempt 3 of 3\)/);
      assert.match(log, /Warning: the restored app still kept a CPU core busy with no request after 3 snapshots; keeping the last one/);
    });
  }

  test("snapshot sandboxes and their network namespaces are gone after each build", async () => {
    assert.deepEqual(readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), []);
    const runsc = join(t.dataDir, "runsc", "builds");
    const { Gvisor } = await import("../../src/runtime/index.js");
    assert.deepEqual(await new Gvisor({ stateRoot: runsc }).list(), []);
  });
});
