// Images and checkpoints in an object store, so a MicroVM suspended on one
// host resumes on another (issue 16). Two `lmvm server`s share a PostgreSQL
// database, a server key and an S3-compatible object store (s3rver, in its
// own process), each with a data directory of its own, one at a time (a
// database takes one server). Server A builds a Python and a Node example,
// runs one MicroVM of each, counts requests in them and suspends them; A
// stops. Server B, on a fresh data directory, started with a store it cannot
// reach, leaves them as recorded; on another gVisor platform it refuses to
// resume them (the checkpoint is platform-bound, and kept); on the same
// platform it resumes them with their counters where they were, runs new
// MicroVMs of the Python version (its image fetched once for both), and
// suspends one again. Back on A, whose own copy of that checkpoint is now
// stale, the store's newer one is resumed; terminating and deleting remove
// what the store held. Last, a suspend whose upload fails leaves its MicroVM
// RUNNING.

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, DeleteMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ResumeMicrovmCommand,
  RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import { EXAMPLES_DIR, zipExample } from "../support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { freshDatabase } from "../support/postgres.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { startS3Process, type S3Process } from "../support/s3-server.js";

const BUCKET = "lmvm-cluster";
const STORE = `s3://${BUCKET}/site-1`;
const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
const DOMAIN = "microvm.localhost";
const arnOf = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;
const APPS = [{ name: "py", example: "python" }, { name: "node", example: "hello" }] as const;

describe("a MicroVM suspended on one server resumes on another through the object store", { timeout: 900_000 }, () => {
  let s3: S3Process;
  let database: string;
  const dirA = tempDir("lmvm-obj-a-");
  const dirB = tempDir("lmvm-obj-b-");
  let server: ServerProcess | undefined;
  let client: LambdaMicrovmsClient;
  let dir = dirA;
  const vms = new Map<string, string>();

  const start = async (dataDir: string, args: string[] = []) => {
    await stop(); // one server per database: a test that failed may have left its server up
    dir = dataDir;
    server = await spawnServer(dataDir, { builds: true, args: ["--database", database, "--object-store", STORE, ...args], env: s3.env });
    client = sdkClient(server.url, readCredentials(dataDir));
  };
  /** The output of the servers stopped so far on B's data directory. */
  let earlierOnB = "";
  const stop = async () => {
    if (server && dir === dirB) earlierOnB += server.output();
    client?.destroy();
    await server?.kill();
    server = undefined;
  };
  const keys = async (prefix: string) =>
    ((await s3.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `site-1/${prefix}` }))).Contents ?? []).map((o) => ({ key: o.Key!.slice("site-1/".length), size: o.Size! }));
  const state = async (id: string) => client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  const until = (id: string, want: string) => eventually(async () => {
    const vm = await state(id);
    assert.ok(vm.state !== "TERMINATED" || want === "TERMINATED", `${id} was TERMINATED while waiting for ${want}: ${vm.stateReason}`);
    return vm.state === want ? vm : undefined;
  }, `${id} to be ${want}`, 180_000);
  /** The app's request counter, through the endpoint proxy of the server now running. */
  const requests = async (id: string): Promise<number> => {
    const token = (await client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] as never }))).authToken!["X-aws-proxy-auth"]!;
    const ca = readFileSync(join(dir, "tls", "ca.pem"));
    const port = server!.endpointPort;
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: "/", ca, servername: `${id}.${DOMAIN}`, agent: false, headers: { host: `${id}.${DOMAIN}:${port}`, "x-aws-proxy-auth": token } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET / on ${id}: ${res.statusCode} ${text}`))));
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`GET / on ${id}: no answer within 30 s`)));
      req.on("error", reject);
      req.end();
    });
    return (JSON.parse(body) as { requests: number }).requests;
  };
  /** The server's log lines of finished transfers of `key`. */
  const transfers = (direction: "upload" | "fetch", key: string, output = server!.output()) =>
    output.split("\n").filter((l) => l.includes(`"object store ${direction} done"`) && l.includes(`"key":"${key}"`)).map((l) => JSON.parse(l) as { bytes: number; seconds: number });

  before(async () => {
    s3 = await startS3Process();
    await s3.createBucket(BUCKET);
    database = await freshDatabase();
  });
  after(async () => {
    await stop().catch(() => undefined);
    for (const d of [dirA, dirB]) {
      await freeSandboxes(d);
      rmSync(d, { recursive: true, force: true });
    }
    await s3?.close();
  });

  test("server A builds both apps and each version's image is uploaded once, before the version is SUCCESSFUL", async () => {
    await start(dirA);
    for (const app of APPS) {
      const zip = join(dirA, `${app.example}.zip`);
      writeFileSync(zip, zipExample(app.example));
      const config = JSON.parse(readFileSync(join(EXAMPLES_DIR, app.example, "microvm-image.json"), "utf8")) as Record<string, unknown>;
      await client.send(new CreateMicrovmImageCommand({ ...config, name: app.name, buildRoleArn: ROLE, codeArtifact: { uri: `file://${zip}` } } as never));
    }
    for (const app of APPS) {
      const image = await eventually(async () => {
        const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: app.name }));
        return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
      }, `${app.name} to build`, 600_000);
      if (image.state !== "CREATED") {
        const v = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: arnOf(app.name), imageVersion: "1.0" }));
        assert.fail(`${app.name} did not build: ${v.stateReason}`);
      }
      const key = `images/${app.name}/1.0/X86_64.tar.zst`;
      assert.deepEqual((await keys(`images/${app.name}/`)).map((o) => o.key), [key]);
      const up = transfers("upload", key);
      assert.equal(up.length, 1, `one upload of ${key}`);
      console.log(`uploaded ${key}: ${up[0]!.bytes} bytes in ${up[0]!.seconds} s`);
    }
  });

  test("server A runs one MicroVM of each, counts three requests in each, and suspends them: their checkpoints are in the store before they are SUSPENDED", async () => {
    for (const app of APPS) {
      const id = (await client.send(new RunMicrovmCommand({ imageIdentifier: arnOf(app.name) }))).microvmId!;
      vms.set(app.name, id);
      await until(id, "RUNNING");
      for (const n of [1, 2, 3]) assert.equal(await requests(id), n, `${app.name}: request ${n}`);
    }
    for (const app of APPS) await client.send(new SuspendMicrovmCommand({ microvmIdentifier: vms.get(app.name)! }));
    for (const app of APPS) {
      const id = vms.get(app.name)!;
      await until(id, "SUSPENDED");
      const key = `checkpoints/${id}/0.tar.zst`;
      // Beside it, the head object naming the incarnation that is current (0: never resumed).
      assert.deepEqual((await keys(`checkpoints/${id}/`)).map((o) => o.key), [key, `checkpoints/${id}/current.json`]);
      const up = transfers("upload", key);
      assert.equal(up.length, 1);
      console.log(`uploaded ${key}: ${up[0]!.bytes} bytes in ${up[0]!.seconds} s`);
    }
    await stop();
  });

  test("server B, whose object store cannot be reached, starts and leaves the SUSPENDED MicroVMs as recorded, refusing to resume them", async () => {
    // The same server key and root credentials as A: servers sharing a database share them (docs/design.md).
    mkdirSync(join(dirB, "secrets"), { recursive: true, mode: 0o700 });
    copyFileSync(join(dirA, "secrets", "server.key"), join(dirB, "secrets", "server.key"));
    copyFileSync(join(dirA, "credentials"), join(dirB, "credentials"));
    await start(dirB, ["--object-store-endpoint", "http://127.0.0.1:9"]);
    assert.match(server!.output(), /cannot be reached now/);
    for (const app of APPS) {
      const id = vms.get(app.name)!;
      assert.equal((await state(id)).state, "SUSPENDED");
      assert.match(server!.output(), new RegExp(`"microvm kept as recorded: the runtime cannot inspect it","microvmId":"${id}"`));
    }
    await assert.rejects(client.send(new ResumeMicrovmCommand({ microvmIdentifier: vms.get("py")! })), (err: Error) => {
      assert.equal(err.name, "ConflictException", err.message);
      assert.match(err.message, /stays SUSPENDED: Fetching the image of version 1\.0 .* from the object store s3:\/\/lmvm-cluster\/site-1\/ failed/);
      return true;
    });
    assert.equal((await state(vms.get("py")!)).state, "SUSPENDED");
    await stop();
  });

  test("server B, on another gVisor platform, keeps them SUSPENDED at start and refuses to resume them: the checkpoint says its platform, and is kept", async () => {
    await start(dirB, ["--platform", "ptrace", "--object-store-endpoint", s3.endpoint]);
    for (const app of APPS) assert.equal((await state(vms.get(app.name)!)).state, "SUSPENDED", "recovery keeps a MicroVM whose checkpoint is only in the object store");
    const id = vms.get("node")!;
    await assert.rejects(client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })), (err: Error) => {
      assert.equal(err.name, "ConflictException", err.message);
      assert.match(err.message, /stays SUSPENDED.*made on the gVisor platform systrap.*ptrace/);
      return true;
    });
    assert.equal((await state(id)).state, "SUSPENDED");
    assert.deepEqual((await keys(`checkpoints/${id}/`)).map((o) => o.key), [`checkpoints/${id}/0.tar.zst`, `checkpoints/${id}/current.json`], "the checkpoint stays in the store, and current");
    await stop();
  });

  test("server B resumes both with their state, runs new MicroVMs of a fetched image, suspends one again, and terminate removes checkpoints", async () => {
    await start(dirB, ["--object-store-endpoint", s3.endpoint]);
    // Two new MicroVMs of the Python version at once: its image is fetched once, for both.
    const fresh = await Promise.all([0, 1].map(async () => (await client.send(new RunMicrovmCommand({ imageIdentifier: arnOf("py") }))).microvmId!));
    for (const id of fresh) {
      await until(id, "RUNNING");
      assert.equal(await requests(id), 1, "a new MicroVM starts from the version's snapshot");
    }
    const fetched = transfers("fetch", "images/py/1.0/X86_64.tar.zst");
    assert.equal(fetched.length, 1, "one fetch of the image for two runs");
    console.log(`fetched images/py/1.0/X86_64.tar.zst: ${fetched[0]!.bytes} bytes in ${fetched[0]!.seconds} s`);

    // Resumed with the real CLI (Python) and the SDK (Node; its image is fetched by the resume).
    const py = vms.get("py")!;
    const node = vms.get("node")!;
    const cli = await lmvm(["resume-microvm", "--microvm-identifier", py], { LMVM_DATA_DIR: dirB });
    assert.equal(cli.code, 0, cli.stderr);
    await client.send(new ResumeMicrovmCommand({ microvmIdentifier: node }));
    for (const id of [py, node]) {
      await until(id, "RUNNING");
      assert.equal(await requests(id), 4, `${id} counts on from where it was suspended on server A`);
      // The Node one was fetched by the refused resume on ptrace, and that copy is used: it is the store's latest.
      const f = transfers("fetch", `checkpoints/${id}/0.tar.zst`, earlierOnB + server!.output());
      assert.equal(f.length, 1, `one fetch of ${id}'s checkpoint`);
      console.log(`fetched checkpoints/${id}/0.tar.zst: ${f[0]!.bytes} bytes in ${f[0]!.seconds} s`);
      assert.deepEqual((await keys(`checkpoints/${id}/`)).map((o) => o.key), [`checkpoints/${id}/current.json`], "a resumed MicroVM's checkpoint is spent; its head names the live incarnation");
    }
    assert.equal(transfers("fetch", "images/node/1.0/X86_64.tar.zst", earlierOnB + server!.output()).length, 1, "the Node image was fetched once, for the refused resume");

    // Suspended on B after one more request, its new checkpoint (incarnation 1) goes up and replaces the spent one.
    assert.equal(await requests(node), 5);
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: node }));
    await until(node, "SUSPENDED");
    assert.deepEqual((await keys(`checkpoints/${node}/`)).map((o) => o.key), [`checkpoints/${node}/1.tar.zst`, `checkpoints/${node}/current.json`]);
    for (const id of [...fresh, py]) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    for (const id of [...fresh, py]) await until(id, "TERMINATED");
    assert.deepEqual((await keys("checkpoints/")).map((o) => o.key), [`checkpoints/${node}/1.tar.zst`, `checkpoints/${node}/current.json`], "terminated MicroVMs leave no checkpoint in the store");
    assert.deepEqual(readdirSync(join(dirB, "objects")), [], "no archive is left in the staging directory");
    await stop();
  });

  test("back on server A, whose own copy of the Node checkpoint is stale, the store's newer one is resumed; terminate and delete empty the store", async () => {
    await start(dirA);
    const node = vms.get("node")!;
    assert.equal((await state(node)).state, "SUSPENDED");
    await client.send(new ResumeMicrovmCommand({ microvmIdentifier: node }));
    await until(node, "RUNNING");
    assert.equal(await requests(node), 6, "the state B left (five requests), not A's older copy (three)");
    assert.equal(transfers("fetch", `checkpoints/${node}/1.tar.zst`).length, 1);
    await client.send(new TerminateMicrovmCommand({ microvmIdentifier: node }));
    await until(node, "TERMINATED");
    assert.deepEqual(await keys("checkpoints/"), [], "terminated MicroVMs leave no checkpoint in the store");

    await client.send(new DeleteMicrovmImageCommand({ imageIdentifier: arnOf("py") }));
    await eventually(async () => ((await keys("images/py/")).length === 0 ? true : undefined), "the deleted image's objects to go", 60_000);
    assert.deepEqual((await keys("images/")).map((o) => o.key), ["images/node/1.0/X86_64.tar.zst"]);

    // A suspend whose upload fails leaves the MicroVM RUNNING, restored from its local checkpoint, with the reason.
    const last = (await client.send(new RunMicrovmCommand({ imageIdentifier: arnOf("node") }))).microvmId!;
    await until(last, "RUNNING");
    assert.equal(await requests(last), 1);
    rmSync(join(s3.directory, BUCKET), { recursive: true, force: true }); // the bucket is gone
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: last }));
    const back = await eventually(async () => {
      const vm = await state(last);
      return vm.state === "RUNNING" && vm.stateReason ? vm : undefined;
    }, "the MicroVM to be RUNNING again", 120_000);
    assert.match(back.stateReason!, /Suspending could not begin.*could not be uploaded to the object store s3:\/\/lmvm-cluster\/site-1\/.*resumed from its local checkpoint/);
    assert.equal(await requests(last), 2, "its state survived the suspend that did not happen");
    await client.send(new TerminateMicrovmCommand({ microvmIdentifier: last }));
    await until(last, "TERMINATED");
  });
});
