// Python apps snapshot like Node ones. examples/python (http.server on the
// standard library, hooks on a port of their own, HTTP/1.0 hook answers that
// close their connections first) builds to a snapshot, runs, and keeps its
// state across suspend and resume. Every snapshot phase has a deadline: a
// /ready that never answers fails the build naming the phase, with nothing
// left behind. Its MicroVM's shell works through the service's protocol and
// lmvm's exec protocol.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, GetMicrovmImageBuildCommand, GetMicrovmImageVersionCommand, ListMicrovmImageBuildsCommand, ResumeMicrovmCommand,
  RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import WebSocket from "ws";
import { localhostLookup } from "../../src/cli/shell-command.js";
import type { SandboxRecord } from "../../src/runtime/index.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { ROLE } from "../support/builds.js";
import { event } from "../support/deadline.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { checkHangUp, checkServiceShell, openServiceShell } from "../support/service-shell.js";

// Answers /ready with a 503 whose body never ends: a byte every half second,
// so the connection is never idle. Before hook calls had a deadline of their
// own, such an answer kept a build waiting at /ready forever.
const TRICKLING_HOOKS = `import socket, threading, time
def answer(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.0 503 Service Unavailable\\r\\n\\r\\nwarming up")
    try:
        while True:
            time.sleep(0.5)
            conn.sendall(b".")
    except OSError:
        conn.close()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 9000))
server.listen()
print("hooks listening on 9000", flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=answer, args=(conn,), daemon=True).start()
`;

const EXAMPLE = join(import.meta.dirname, "..", "..", "..", "examples", "python");
const DEBIAN12 = "arn:aws:lambda:us-east-1:aws:microvm-image:debian12";
const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";

/** One request on its own connection; the client resets it once answered, if the app has not closed it, so the sandbox can be checkpointed later. */
function call(ip: string, method: string, path: string, body = ""): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port: 8080, method, path, timeout: 10_000, headers: { "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        // The app speaks HTTP/1.0 and closes first; then Node has already answered with its own FIN.
        if (!res.socket.destroyed && !res.socket.writableEnded) res.socket.resetAndDestroy();
        resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

describe("Python apps in snapshots", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  const dir = tempDir("lmvm-python-");
  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
  });
  after(() => t.stop());

  async function build(name: string, files: { name: string; content: string }[], hooks: Record<string, unknown>, waitMs = 600_000) {
    const file = join(dir, `${name}.zip`);
    writeFileSync(file, makeZip(files));
    await t.client.send(new CreateMicrovmImageCommand({ name, baseImageArn: DEBIAN12, buildRoleArn: ROLE, codeArtifact: { uri: `file://${file}` }, hooks }));
    const version = await eventually(async () => {
      const v = await t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
      return v.state === "SUCCESSFUL" || v.state === "FAILED" ? v : undefined;
    }, `build of ${name}`, waitMs);
    const id = (await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }))).items![0]!.buildId!;
    const b = await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: name, imageVersion: "1.0", buildId: id }));
    return { version, build: b, log: readFileSync(join(t.dataDir, "logs", "builds", `${id}.log`), "utf8") };
  }

  const example = () => readdirSync(EXAMPLE).filter((name) => name !== "microvm-image.json").map((name) => ({ name, content: readFileSync(join(EXAMPLE, name), "utf8") }));
  /** The example's own hooks (microvm-image.json), plus the MicroVM hooks it also answers. */
  const exampleHooks = () => ({
    ...(JSON.parse(readFileSync(join(EXAMPLE, "microvm-image.json"), "utf8")) as { hooks: Record<string, unknown> }).hooks,
    microvmHooks: { run: "ENABLED", runTimeoutInSeconds: 5, suspend: "ENABLED", suspendTimeoutInSeconds: 5, resume: "ENABLED", resumeTimeoutInSeconds: 5 },
  });

  const until = async (id: string, want: string) => {
    let last: { state?: string; stateReason?: string } = {};
    await eventually(async () => {
      last = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
      return last.state === want ? true : undefined;
    }, `${id} to be ${want}`, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; it is ${last.state}: ${last.stateReason ?? "no reason given"}`);
    });
  };
  const ipOf = (id: string) => (JSON.parse(readFileSync(join(t.dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord).sandboxIp;

  /** examples/python's image, built once for the tests that run it. */
  let exampleBuild: ReturnType<typeof build> | undefined;
  const exampleImage = () => (exampleBuild ??= build("python-example", example(), exampleHooks()));

  test("examples/python builds to a snapshot through /ready and /validate, runs, and keeps its state across suspend and resume", async () => {
    const { version, build: b, log } = await exampleImage();
    assert.equal(version.state, "SUCCESSFUL", version.stateReason);
    assert.ok((b.snapshotBuild?.memorySnapshotSizeInBytes ?? 0) > 1_000_000, "the memory snapshot holds the Python heap");
    assert.match(log, /Waiting for \/ready on port 9000[\s\S]*Checkpointing memory and disk[\s\S]*Calling \/validate on port 9000/);

    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:python-example" }));
    const id = microvmId!;
    await until(id, "RUNNING");
    const first = await call(ipOf(id), "GET", "/");
    assert.equal(first.json.language, "python");
    assert.equal(first.json.requests, 1, "the app starts from the snapshot: no request was served before");
    assert.equal((await call(ipOf(id), "PUT", "/items/greeting", "hello from before the suspend")).status, 200);

    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "SUSPENDED");
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "RUNNING");
    assert.deepEqual((await call(ipOf(id), "GET", "/items")).json, { greeting: "hello from before the suspend" });
    const after = await call(ipOf(id), "GET", "/");
    assert.equal(after.json.requests, 4, "the request counter went on from 3");
    assert.deepEqual(after.json.hooks, ["run", "suspend", "resume"]);

    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
  });

  test("the service's shell protocol, subprotocols only (port 8022 entry included), in the Python app's MicroVM; and lmvm's exec protocol with an exit status", async () => {
    assert.equal((await exampleImage()).version.state, "SUCCESSFUL");
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:python-example", ingressNetworkConnectors: [SHELL] }));
    const id = microvmId!;
    await until(id, "RUNNING");
    const endpoint = (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).endpoint!;
    const ca = readFileSync(join(t.dataDir, "tls", "ca.pem"));
    const shellToken = async () => (await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5 }))).authToken!["X-aws-proxy-auth"]!;
    await checkServiceShell(await openServiceShell(endpoint, await shellToken(), ca, { port8022: true }));
    await checkHangUp(async () => openServiceShell(endpoint, await shellToken(), ca));

    // lmvm's exec protocol: a command, its stdout and stderr apart, its exit status.
    const query = new URLSearchParams([["tty", "0"], ["command", "python3"], ["command", "-c"], ["command", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(6)"]]);
    const ws = new WebSocket(`${endpoint.replace(/^https:/, "wss:")}/shell?${query}`, ["lambda-microvms", `lambda-microvms.authentication.${await shellToken()}`, "lmvm.exec.v1"], { ca, lookup: localhostLookup as never });
    const streams: Record<number, string> = { 1: "", 2: "" };
    let exit: number | undefined;
    ws.on("message", (d: Buffer, binary: boolean) => {
      if (binary) streams[d[0]!] += d.subarray(1).toString();
      else if (JSON.parse(d.toString()).type === "exit") exit = JSON.parse(d.toString()).code;
    });
    const [code] = await event<[number]>(30_000, "the command's WebSocket to close", ws, "close");
    assert.deepEqual({ code, exit, streams }, { code: 1000, exit: 6, streams: { 1: "out\n", 2: "err\n" } });

    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await until(id, "TERMINATED");
  });

  test("a /ready that never answers 200 (a 503 whose body never ends) fails the build when its timeout passes, naming the hook, with no sandbox, namespace or mount left", async () => {
    const { version, build: b } = await build("python-never-ready", [
      { name: "Dockerfile", content: 'FROM lmvm/debian12\nWORKDIR /app\nCOPY hooks.py .\nCMD ["python3", "-u", "hooks.py"]\n' },
      { name: "hooks.py", content: TRICKLING_HOOKS },
    ], { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 5 } }, 240_000); // the rootfs build takes about a minute on a busy host
    assert.equal(version.state, "FAILED");
    assert.match(b.stateReason!, /The \/ready hook failed: \/ready hook on port 9000 did not answer 200 within 5 s \(last: HTTP 503: warming up/);
    const { Gvisor } = await import("../../src/runtime/index.js");
    assert.deepEqual(await new Gvisor({ stateRoot: join(t.dataDir, "runsc", "builds") }).list(), [], "no snapshot sandbox left");
    const networks = join(t.dataDir, "networks");
    assert.deepEqual(existsSync(networks) ? readdirSync(networks) : [], [], "no network namespace left");
    assert.deepEqual(readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), [], "no sandbox disk left mounted");
  });
});
