// Builds always end: a build that stalls fails at its phase's deadline and
// frees its slot in the queue, and deleting a version or an image stops its
// build at once. Either way nothing the build started is left: no process,
// no buildah working container, no mount, no scratch directory.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { ServerResponse } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, DeleteMicrovmImageCommand, DeleteMicrovmImageVersionCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand,
  ListMicrovmImageBuildsCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { BUSYBOX, ROLE } from "../support/builds.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { within } from "../support/deadline.js";
import { processesWith } from "../support/processes.js";

const DEBIAN = "arn:aws:lambda:us-east-1:aws:microvm-image:debian12";

function artifact(files: Record<string, string>): string {
  const file = join(tempDir("lmvm-artifact-"), "app.zip");
  writeFileSync(file, makeZip(Object.entries(files).map(([name, content]) => ({ name, content }))));
  return `file://${file}`;
}

function buildahContainers(dataDir: string): string[] {
  const dir = join(dataDir, "buildah");
  const out = execFileSync("unshare", ["--mount", "--propagation", "private", "buildah", "--root", join(dir, "storage"), "--runroot", join(dir, "run"),
    "--storage-driver", process.env.LMVM_BUILDAH_STORAGE_DRIVER ?? "overlay", "containers", "--quiet"], { encoding: "utf8" });
  return out.split("\n").filter(Boolean);
}

async function assertNothingLeft(t: TestPlatform, marker: string) {
  await eventually(async () => (processesWith(marker).length === 0 && processesWith(t.dataDir).length === 0 ? true : undefined), `the build's processes (${marker}) to be gone`, 30_000);
  assert.deepEqual(buildahContainers(t.dataDir), [], "no buildah working container is left");
  assert.deepEqual(readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), [], "no mount is left");
  assert.deepEqual(existsSync(join(t.dataDir, "builds")) ? readdirSync(join(t.dataDir, "builds")) : [], [], "no build scratch space is left");
}

async function create(client: LambdaMicrovmsClient, name: string, uri: string, extra: Record<string, unknown> = {}, baseImageArn = BUSYBOX) {
  await client.send(new CreateMicrovmImageCommand({ name, baseImageArn, buildRoleArn: ROLE, codeArtifact: { uri }, ...extra }));
}

async function settledVersion(client: LambdaMicrovmsClient, name: string) {
  return eventually(async () => {
    const v = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
    return v.state === "SUCCESSFUL" || v.state === "FAILED" ? v : undefined;
  }, `build of ${name} to end`, 300_000);
}

async function gone(what: string, get: () => Promise<unknown>) {
  await eventually(async () => {
    try {
      await get();
      return undefined;
    } catch (err) {
      if ((err as Error).name === "ResourceNotFoundException") return true;
      throw err;
    }
  }, `${what} to be deleted`, 60_000);
}

describe("a stalled build", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  before(async () => {
    // One build at a time, so the second image can only build once the stalled one has freed the slot.
    t = await startTestPlatform({ builder: undefined, snapshots: false, buildConcurrency: 1, buildPhaseTimeouts: { buildah: 15 }, baseImageCache: BASE_IMAGE_CACHE });
  });
  after(() => t.stop());

  test("fails at the buildah phase's deadline, naming the phase, stops its RUN step and frees its slot for the next build", async () => {
    await create(t.client, "stalls", artifact({ Dockerfile: "FROM lmvm/busybox\nRUN sleep 987651\n" }));
    await create(t.client, "queued-behind", artifact({ Dockerfile: "FROM lmvm/busybox\nRUN echo built > /built.txt\n" }));
    const stalled = await settledVersion(t.client, "stalls");
    assert.equal(stalled.state, "FAILED");
    assert.match(stalled.stateReason!, /The buildah phase did not finish within 15 seconds; a RUN step may be waiting/);
    assert.match(stalled.stateReason!, /--build-phase-timeouts buildah=/, "the reason says how to change the deadline");
    const behind = await settledVersion(t.client, "queued-behind");
    assert.equal(behind.state, "SUCCESSFUL", behind.stateReason);
    await assertNothingLeft(t, "sleep 987651");
  });
});

describe("a stalled fetch", { timeout: 300_000 }, () => {
  // An HTTPS artifact server that announces a large body and trickles it, a byte a second:
  // the socket never goes idle, so only the fetch phase's deadline can end the build.
  const certDir = tempDir("lmvm-cert-");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", join(certDir, "key.pem"), "-out", join(certDir, "cert.pem")], { stdio: "ignore" });
  const trickling = new Set<ServerResponse>();
  const server = createHttpsServer({ key: readFileSync(join(certDir, "key.pem")), cert: readFileSync(join(certDir, "cert.pem")) }, (_req, res) => {
    res.writeHead(200, { "content-length": 10_000_000 });
    trickling.add(res);
    const drip = setInterval(() => res.write("x"), 1000);
    res.on("close", () => {
      clearInterval(drip);
      trickling.delete(res);
    });
  });
  let t: TestPlatform;
  before(async () => {
    await within(10_000, "the trickling artifact server to listen", new Promise<void>((r) => server.listen(0, "127.0.0.1", r)));
    t = await startTestPlatform({ builder: undefined, snapshots: false, buildPhaseTimeouts: { fetch: 3 }, artifactCaFile: join(certDir, "cert.pem"), baseImageCache: BASE_IMAGE_CACHE });
  });
  after(async () => {
    await t.stop();
    for (const res of trickling) res.destroy();
    server.close();
  });

  test("fails at the fetch phase's deadline, naming the phase, and drops the download", async () => {
    const port = (server.address() as { port: number }).port;
    await create(t.client, "slow-artifact", `https://127.0.0.1:${port}/app.zip`);
    const version = await settledVersion(t.client, "slow-artifact");
    assert.equal(version.state, "FAILED");
    assert.match(version.stateReason!, /The fetch phase did not finish within 3 seconds/);
    await eventually(async () => (trickling.size === 0 ? true : undefined), "the download's connection to be closed", 30_000);
  });
});

describe("deleting during a build", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE });
  });
  after(() => t.stop());

  async function waitForProcess(marker: string) {
    await eventually(async () => (processesWith(marker).length ? true : undefined), `${marker} to run`, 300_000);
  }

  test("a version deleted while its RUN step runs reaches DELETED, and its processes are gone", async () => {
    await create(t.client, "delete-version", artifact({ Dockerfile: "FROM lmvm/busybox\nRUN sleep 987652\n" }));
    await waitForProcess("sleep 987652");
    await t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "delete-version", imageVersion: "1.0" }));
    await gone("version 1.0", () => t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "delete-version", imageVersion: "1.0" })));
    const image = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "delete-version" }));
    assert.equal(image.state, "CREATE_FAILED");
    await assertNothingLeft(t, "sleep 987652");
  });

  test("an image deleted while its build runs is deleted, and its processes are gone", async () => {
    await create(t.client, "delete-image", artifact({ Dockerfile: "FROM lmvm/busybox\nRUN sleep 987653\n" }));
    await waitForProcess("sleep 987653");
    await t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: "delete-image" }));
    await gone("the image", () => t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "delete-image" })));
    await assertNothingLeft(t, "sleep 987653");
  });

  test("a Python app whose /ready never answers: its version, deleted mid-snapshot, reaches DELETED and its sandbox is gone", async () => {
    // /ready accepts the connection and never answers, within a generous timeout the build would otherwise wait out.
    const app = [
      "import http.server, time",
      "class Hooks(http.server.BaseHTTPRequestHandler):",
      "    def do_GET(self):",
      "        time.sleep(100000)",
      "http.server.ThreadingHTTPServer(('0.0.0.0', 9000), Hooks).serve_forever()",
      "",
    ].join("\n");
    await create(t.client, "never-ready", artifact({ Dockerfile: "FROM lmvm/debian12\nCOPY app.py /app.py\nCMD [\"python3\", \"-u\", \"/app.py\"]\n", "app.py": app }),
      { hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 600 } } }, DEBIAN);
    const buildId = (await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "never-ready", imageVersion: "1.0" }))).items![0]!.buildId!;
    const log = join(t.dataDir, "logs", "builds", `${buildId}.log`);
    await eventually(async () => (existsSync(log) && readFileSync(log, "utf8").includes("Waiting for /ready") ? true : undefined), "the build to wait for /ready", 300_000);
    await t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "never-ready", imageVersion: "1.0" }));
    await gone("version 1.0", () => t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "never-ready", imageVersion: "1.0" })));
    // The app runs inside gVisor's sentry: on the host, its sandbox's processes are runsc's, which name the data directory.
    await assertNothingLeft(t, t.dataDir);
    const sandboxes = join(t.dataDir, "sandboxes");
    assert.deepEqual((existsSync(sandboxes) ? readdirSync(sandboxes) : []).filter((d) => d.startsWith("build-")), [], "the boot sandbox's directory is removed");
  });
});
