// `lmvm server --platform ptrace`: a Python and a Node MicroVM build, run,
// suspend and resume on gVisor's ptrace platform (their sandboxes run with
// --platform=ptrace, their checkpoints are stamped ptrace). A server on
// another platform (systrap, the default) refuses to run the version or to
// resume the suspended MicroVM, with a reason naming both platforms, and the
// checkpoint is kept: back on ptrace, the MicroVM resumes with its memory.

import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand,
  type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import type { SandboxRecord } from "../../src/runtime/index.js";
import { makeZip } from "../support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const dataDir = tempDir("lmvm-platform-");
let server: ServerProcess | undefined;
let client: LambdaMicrovmsClient | undefined;
after(async () => {
  client?.destroy();
  await server?.kill();
  await freeSandboxes(dataDir);
  rmSync(dataDir, { recursive: true, force: true });
});

// Each app counts the requests it served: the count survives a suspend and resume only if its memory does.
const APPS = {
  node: {
    Dockerfile: 'FROM lmvm/debian12\nCOPY app.js /app.js\nCMD ["node", "/app.js"]\n',
    file: "app.js",
    code: 'let n = 0;\nrequire("http").createServer((req, res) => res.end(String(++n))).listen(8080, "0.0.0.0");\n',
  },
  python: {
    Dockerfile: 'FROM lmvm/debian12\nCOPY app.py /app.py\nCMD ["python3", "-u", "/app.py"]\n',
    file: "app.py",
    code: [
      "from http.server import BaseHTTPRequestHandler, HTTPServer",
      "n = 0",
      "class H(BaseHTTPRequestHandler):",
      "    def do_GET(self):",
      "        global n",
      "        n += 1",
      "        body = str(n).encode()",
      "        self.send_response(200)",
      "        self.send_header('content-length', str(len(body)))",
      "        self.end_headers()",
      "        self.wfile.write(body)",
      "HTTPServer(('0.0.0.0', 8080), H).serve_forever()",
      "",
    ].join("\n"),
  },
} as const;
type App = keyof typeof APPS;
const ARN = (app: App) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:platform-${app}`;

const record = (id: string) => JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
const stamp = (dir: string) => JSON.parse(readFileSync(join(dir, "lmvm-platform.json"), "utf8")) as { platform: string; runsc: string };

/** GET / on the MicroVM's app: the count it answers. */
async function count(id: string): Promise<number> {
  return eventually(async () => {
    try {
      const res = await fetch(`http://${record(id).sandboxIp}:8080/`, { signal: AbortSignal.timeout(2000) });
      return res.ok ? Number(await res.text()) : undefined;
    } catch {
      return undefined;
    }
  }, `MicroVM ${id} to answer`, 120_000); // generous: once in a bench run a Node app restored on ptrace took 71 s to answer
}

async function reach(id: string, state: string): Promise<void> {
  await eventually(async () => {
    const vm = await client!.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    if (vm.state === "TERMINATED" && state !== "TERMINATED") throw new Error(`MicroVM ${id} ended: ${vm.stateReason}`);
    return vm.state === state ? true : undefined;
  }, `MicroVM ${id} to be ${state}`, 120_000);
}

/** The runsc --platform the sandbox process of a MicroVM runs with, from its command line. */
function sandboxPlatformOf(id: string): string | undefined {
  const sandboxId = record(id).sandboxId ?? id;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    if (!argv[0]?.endsWith("runsc-sandbox") || argv[argv.length - 2] !== sandboxId) continue;
    return argv.find((a) => a.startsWith("--platform="))?.slice("--platform=".length);
  }
  return undefined;
}

async function start(platform?: string): Promise<void> {
  client?.destroy();
  await server?.kill();
  server = await spawnServer(dataDir, { builds: true, ...(platform ? { args: ["--platform", platform] } : {}) });
  client = sdkClient(server.url, readCredentials(dataDir));
}

test("MicroVMs on --platform ptrace, and a server on another platform refuses their snapshots and checkpoints", { timeout: 900_000 }, async () => {
  await start("ptrace");
  for (const app of Object.keys(APPS) as App[]) {
    const a = APPS[app];
    const zip = join(dataDir, `${app}.zip`);
    writeFileSync(zip, makeZip([{ name: "Dockerfile", content: a.Dockerfile }, { name: a.file, content: a.code }]));
    await client!.send(new CreateMicrovmImageCommand({ name: `platform-${app}`, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${zip}` } }));
  }
  for (const app of Object.keys(APPS) as App[]) {
    const image = await eventually(async () => {
      const i = await client!.send(new GetMicrovmImageCommand({ imageIdentifier: `platform-${app}` }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, `the ${app} image to build`, 600_000);
    if (image.state !== "CREATED") {
      const logs = join(dataDir, "logs", "builds");
      const tail = existsSync(logs) ? readdirSync(logs, { recursive: true }).map(String).filter((f) => f.endsWith(".log")).map((f) => readFileSync(join(logs, f), "utf8").split("\n").slice(-15).join("\n")).join("\n---\n") : "";
      const v = await client!.send(new GetMicrovmImageVersionCommand({ imageIdentifier: `platform-${app}`, imageVersion: "1.0" })).catch(() => undefined);
      assert.fail(`the ${app} image did not build: ${v?.stateReason}\n${tail}`);
    }
  }
  const snapshotDir = (app: App) => {
    const root = join(dataDir, "images", `platform-${app}`, "1.0");
    return join(root, readdirSync(root)[0]!, "snapshot");
  };

  const vms = {} as Record<App, string>;
  for (const app of Object.keys(APPS) as App[]) {
    assert.equal(stamp(snapshotDir(app)).platform, "ptrace", `the ${app} snapshot is stamped ptrace`);
    const id = (await client!.send(new RunMicrovmCommand({ imageIdentifier: ARN(app) }))).microvmId!;
    vms[app] = id;
    await reach(id, "RUNNING");
    assert.equal(sandboxPlatformOf(id), "ptrace", `the ${app} MicroVM's sandbox runs on ptrace`);
    assert.equal(await count(id), 1);
    assert.equal(await count(id), 2);
    await client!.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await reach(id, "SUSPENDED");
    assert.equal(stamp(join(dataDir, "microvms", id, "checkpoint")).platform, "ptrace", `the ${app} checkpoint is stamped ptrace`);
  }
  // The Python MicroVM resumes on ptrace with its memory; the Node one stays suspended across the platform change.
  await client!.send(new ResumeMicrovmCommand({ microvmIdentifier: vms.python }));
  await reach(vms.python, "RUNNING");
  assert.equal(sandboxPlatformOf(vms.python), "ptrace");
  assert.equal(await count(vms.python), 3, "the Python app kept its count across suspend and resume");
  await client!.send(new TerminateMicrovmCommand({ microvmIdentifier: vms.python }));
  await reach(vms.python, "TERMINATED");

  // The same data directory under a server on systrap (the default).
  await start();
  for (const app of Object.keys(APPS) as App[]) {
    await assert.rejects(client!.send(new RunMicrovmCommand({ imageIdentifier: ARN(app) })), (err: Error) => {
      assert.equal(err.name, "ConflictException");
      assert.match(err.message, /made on the gVisor platform ptrace, and this server runs sandboxes on systrap/);
      assert.match(err.message, /--platform ptrace/);
      return true;
    });
  }
  await assert.rejects(client!.send(new ResumeMicrovmCommand({ microvmIdentifier: vms.node })), (err: Error) => {
    assert.equal(err.name, "ConflictException");
    assert.match(err.message, /stays SUSPENDED, its checkpoint kept/);
    assert.match(err.message, /made on the gVisor platform ptrace, and this server runs sandboxes on systrap/);
    return true;
  });
  assert.equal((await client!.send(new GetMicrovmCommand({ microvmIdentifier: vms.node }))).state, "SUSPENDED");
  assert.ok(existsSync(join(dataDir, "microvms", vms.node, "checkpoint", "checkpoint.img")), "the refused resume kept the checkpoint");

  // Back on ptrace, the Node MicroVM resumes with its memory.
  await start("ptrace");
  await client!.send(new ResumeMicrovmCommand({ microvmIdentifier: vms.node }));
  await reach(vms.node, "RUNNING");
  assert.equal(sandboxPlatformOf(vms.node), "ptrace");
  assert.equal(await count(vms.node), 3, "the Node app kept its count across suspend, a refused resume and resume");
  await client!.send(new TerminateMicrovmCommand({ microvmIdentifier: vms.node }));
  await reach(vms.node, "TERMINATED");
});
