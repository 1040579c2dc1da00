// `lmvm logs build … --follow` as a user runs it, against a real server whose
// builder is scripted (a build ends when the test says so): it says when the
// build waits in the queue, follows it until it ends, and its exit code and
// stderr tell a FAILED build from a SUCCESSFUL one. The log route itself sends
// its headers at once for a queued build and resumes from a byte offset.

import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, ListMicrovmImageBuildsCommand } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { startLmvm } from "../support/cli-process.js";
import { within } from "../support/deadline.js";
import { ScriptedBuilder } from "../support/scripted.js";

/** A signed GET of a log route; resolves once the response's headers arrive, with the body read to its end by `body()`. */
async function openLog(t: TestPlatform, path: string, query: Record<string, string>) {
  const url = new URL(t.platform.url);
  const signer = new SignatureV4({ credentials: t.credentials, region: "us-east-1", service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: "http:", hostname: url.hostname, port: Number(url.port), path, query, headers: { host: url.host } }));
  return new Promise<{ status: number; body: () => Promise<string>; close: () => void }>((resolve, reject) => {
    const req = request({ hostname: url.hostname, port: url.port, path: `${path}?${new URLSearchParams(query)}`, headers: signed.headers }, (res) => {
      const chunks: Buffer[] = [];
      const done = new Promise<string>((r) => res.on("data", (c: Buffer) => chunks.push(c)).on("end", () => r(Buffer.concat(chunks).toString("utf8"))));
      resolve({ status: res.statusCode ?? 0, body: () => done, close: () => req.destroy() });
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * A TCP relay to the server that cuts the first log connection once the
 * server has sent `cutAfter` through it, as a flaky network would.
 */
async function flakyRelay(target: URL, cutAfter: string) {
  let cut = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let isLog = false;
    let seen = "";
    client.on("data", (d: Buffer) => {
      if (d.toString("latin1").includes("/logs")) isLog = true;
      upstream.write(d);
    });
    upstream.on("data", (d: Buffer) => {
      client.write(d);
      seen += d.toString("latin1");
      if (isLog && !cut && seen.includes(cutAfter)) {
        cut = true;
        client.destroy();
        upstream.destroy();
      }
    });
    for (const s of [client, upstream]) s.on("error", () => {}).on("close", () => (client.destroy(), upstream.destroy()));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    wasCut: () => cut,
    close: () => new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

describe("lmvm logs build --follow", { timeout: 180_000 }, () => {
  let t: TestPlatform;
  let builder: ScriptedBuilder;
  let env: Record<string, string>;
  before(async () => {
    builder = new ScriptedBuilder();
    t = await startTestPlatform({ builder, buildConcurrency: 1 });
    env = { LMVM_DATA_DIR: t.dataDir };
  });
  after(() => t.stop());

  async function buildIdOf(name: string): Promise<string> {
    const builds = await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }));
    return builds.items![0]!.buildId!;
  }

  test("says the build waits in the queue, follows it through, and exits 0 when it succeeds or 255 with the reason when it fails", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("first")));
    await eventually(async () => (builder.calls.length === 1 ? true : undefined), "the first build to start");
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("queued")));
    const first = startLmvm(["logs", "build", "first", "1.0", "--follow"], env);
    const queued = startLmvm(["logs", "build", "queued", "1.0", "--follow"], env);
    await eventually(async () => (queued.stderr().includes("is PENDING") ? true : undefined), "the CLI to say the build is queued", 30_000);
    assert.match(queued.stderr(), new RegExp(`Build ${await buildIdOf("queued")} of queued 1\\.0 is PENDING: waiting for a build slot`));
    assert.doesNotMatch(first.stderr(), /PENDING/);

    await builder.succeed();
    const firstResult = await first.result;
    assert.equal(firstResult.code, 0, firstResult.stderr);
    // Still following: the queued build has only now started.
    assert.equal(queued.child.exitCode, null, queued.stderr());

    await eventually(async () => (builder.calls.length === 2 ? true : undefined), "the queued build to start", 30_000);
    await builder.fail("RUN step 2 of the Dockerfile exited with 1");
    const queuedResult = await queued.result;
    assert.equal(queuedResult.code, 255);
    assert.match(queuedResult.stderr, /Build \S+ of queued 1\.0 FAILED: .*RUN step 2 of the Dockerfile exited with 1/);
  });

  test("the log route answers a followed queued build at once, and resumes from ?offset=", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("blocker")));
    await eventually(async () => (builder.calls.length === 3 ? true : undefined), "the blocker build to start");
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("waiting")));
    const buildId = await buildIdOf("waiting");
    const path = `/lmvm/2025-09-09/microvm-images/waiting/versions/1.0/builds/${buildId}/logs`;
    // Headers first, though the queued build has written nothing: a client must not wait minutes to learn the log exists.
    const followed = await within(10_000, "headers of a followed queued build's log", openLog(t, path, { follow: "true" }));
    assert.equal(followed.status, 200);
    followed.close();

    const logs = join(t.dataDir, "logs", "builds");
    mkdirSync(logs, { recursive: true });
    writeFileSync(join(logs, `${buildId}.log`), "0123456789abcdef\n");
    const resumed = await within(10_000, "the log from offset 10", openLog(t, path, { offset: "10" }));
    assert.equal(await resumed.body(), "abcdef\n");
    const bad = await within(10_000, "a bad offset", openLog(t, path, { offset: "-1" }));
    assert.equal(bad.status, 400);
    assert.match(await bad.body(), /'offset' must be a byte offset/);

    await builder.succeed();
    await eventually(async () => (builder.calls.length === 4 ? true : undefined), "the waiting build to start");
    await builder.succeed();
  });

  test("a follower whose connection breaks reconnects and goes on where it stopped, printing nothing twice", async () => {
    const before = builder.calls.length;
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("flaky")));
    await eventually(async () => (builder.calls.length === before + 1 ? true : undefined), "the flaky build to start");
    const buildId = await buildIdOf("flaky");
    const log = join(t.dataDir, "logs", "builds", `${buildId}.log`);
    mkdirSync(join(t.dataDir, "logs", "builds"), { recursive: true });
    writeFileSync(log, "part one\n");
    const relay = await flakyRelay(new URL(t.platform.url), "part one");
    try {
      const follower = startLmvm(["logs", "build", "flaky", "1.0", "--follow", "--endpoint-url", relay.url], env);
      await eventually(async () => (relay.wasCut() ? true : undefined), "the relay to cut the log connection", 30_000);
      appendFileSync(log, "part two\n");
      await eventually(async () => (follower.stdout().includes("part two") ? true : undefined), "the follower to reconnect and print what came next", 30_000);
      await builder.succeed();
      const r = await follower.result;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "part one\npart two\n");
    } finally {
      await relay.close();
    }
  });
});
