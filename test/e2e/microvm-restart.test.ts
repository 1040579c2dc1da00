// `lmvm server` killed with SIGKILL while MicroVMs run and sleep: on restart
// it adopts the running sandbox, keeps the suspended one resumable, marks a
// MicroVM whose sandbox died TERMINATED with the reason, and leaves no
// namespace or sandbox that belongs to nothing. A restart with build flags
// (--no-builder, --no-snapshots) changes nothing for MicroVMs.

import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, GetMicrovmCommand, TerminateMicrovmCommand, GetMicrovmImageCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
  type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { Gvisor, type SandboxRecord } from "../../src/runtime/index.js";
import { makeZip } from "../support/artifacts.js";
import { readServerInfo } from "../../src/server/index.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const dataDir = tempDir();
let server: ServerProcess | undefined;
after(async () => {
  await server?.kill();
  await freeSandboxes(dataDir); // MicroVMs outlive their server by design; the test's must not outlive it
  rmSync(dataDir, { recursive: true, force: true });
});

async function serves(ip: string): Promise<boolean> {
  try {
    return (await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

test("after kill -9 the server adopts live MicroVMs, keeps suspended ones, and ends lost ones with a reason", { timeout: 600_000 }, async () => {
  const artifact = join(dataDir, "app.zip");
  writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /www && echo ok > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" }]));
  server = await spawnServer(dataDir, { builds: true });
  let client: LambdaMicrovmsClient = sdkClient(server.url, readCredentials(dataDir));
  await client.send(new CreateMicrovmImageCommand({ name: "web", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${artifact}` } }));
  await eventually(async () => ((await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }))).state === "CREATED" ? true : undefined), "image", 300_000);
  const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id })));
  const until = (id: string, want: string) => eventually(async () => ((await state(id)).state === want ? true : undefined), want, 60_000);
  const arn = "arn:aws:lambda:us-east-1:000000000000:microvm-image:web";
  const [running, sleeping, doomed] = await Promise.all([0, 1, 2].map(async () => (await client.send(new RunMicrovmCommand({ imageIdentifier: arn }))).microvmId!));
  for (const id of [running!, sleeping!, doomed!]) await until(id, "RUNNING");
  await client.send(new SuspendMicrovmCommand({ microvmIdentifier: sleeping! }));
  await until(sleeping!, "SUSPENDED");

  await server.kill("SIGKILL");
  client.destroy();
  // While the server is down, one sandbox dies.
  await new Gvisor({ stateRoot: join(dataDir, "runsc", "microvms") }).destroy(doomed!);

  server = await spawnServer(dataDir, { builds: true });
  client = sdkClient(server.url, readCredentials(dataDir));
  const record = (id: string) => JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
  assert.equal((await state(running!)).state, "RUNNING");
  assert.ok(await serves(record(running!).sandboxIp), "the adopted MicroVM still serves");
  assert.equal((await state(sleeping!)).state, "SUSPENDED");
  await client.send(new ResumeMicrovmCommand({ microvmIdentifier: sleeping! }));
  assert.ok(await serves(record(sleeping!).sandboxIp), "the suspended MicroVM resumes after the restart");
  const lost = await state(doomed!);
  assert.equal(lost.state, "TERMINATED");
  assert.match(lost.stateReason!, /sandbox was lost while the server was down/);
  assert.ok(!existsSync(join(dataDir, "microvms", doomed!)));
  client.destroy();
});

/** The HTTP status of GET / on a MicroVM's endpoint, through the endpoint proxy of the server now running. */
async function throughEndpoint(client: LambdaMicrovmsClient, dir: string, id: string): Promise<number> {
  const info = readServerInfo(dir)!;
  const token = (await client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] as never }))).authToken!["X-aws-proxy-auth"]!;
  return new Promise((resolve) => {
    execFile("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", info.caFile!, "--connect-to", `::127.0.0.1:${info.endpointPort}`,
      "-H", `X-aws-proxy-auth: ${token}`, `https://${id}.microvm.localhost:${info.endpointPort}/`], (_err, stdout) => resolve(Number(stdout) || 0));
  });
}

test("a restart with --no-builder, then with --no-snapshots, keeps RUNNING and SUSPENDED MicroVMs as they were", { timeout: 600_000 }, async () => {
  const dir = tempDir();
  let current: ServerProcess | undefined;
  try {
    const artifact = join(dir, "app.zip");
    writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /www && echo ok > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" }]));
    current = await spawnServer(dir, { builds: true });
    let client: LambdaMicrovmsClient = sdkClient(current.url, readCredentials(dir));
    await client.send(new CreateMicrovmImageCommand({ name: "web", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${artifact}` } }));
    await eventually(async () => ((await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }))).state === "CREATED" ? true : undefined), "image", 300_000);
    const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
    const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), `${id} ${want}`, 60_000);
    const arn = "arn:aws:lambda:us-east-1:000000000000:microvm-image:web";
    const [awake, asleep] = await Promise.all([0, 1].map(async () => (await client.send(new RunMicrovmCommand({ imageIdentifier: arn }))).microvmId!));
    for (const id of [awake!, asleep!]) await until(id, "RUNNING");
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: asleep! }));
    await until(asleep!, "SUSPENDED");

    for (const restart of [{ builds: false }, { builds: true, args: ["--no-snapshots"] }]) {
      const how = restart.builds ? "--no-snapshots" : "--no-builder";
      await current.kill();
      client.destroy();
      current = await spawnServer(dir, restart);
      client = sdkClient(current.url, readCredentials(dir));
      assert.equal(await state(awake!), "RUNNING", `after a restart with ${how}`);
      assert.equal(await throughEndpoint(client, dir, awake!), 200, `the RUNNING MicroVM still answers on its endpoint after a restart with ${how}`);
      assert.equal(await state(asleep!), "SUSPENDED", `after a restart with ${how}`);
      await client.send(new ResumeMicrovmCommand({ microvmIdentifier: asleep! }));
      assert.equal(await state(asleep!), "RUNNING");
      assert.equal(await throughEndpoint(client, dir, asleep!), 200, `the SUSPENDED MicroVM resumes after a restart with ${how}`);
      await client.send(new SuspendMicrovmCommand({ microvmIdentifier: asleep! }));
      await until(asleep!, "SUSPENDED");
    }
    for (const id of [awake!, asleep!]) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    for (const id of [awake!, asleep!]) await until(id, "TERMINATED");
    client.destroy();
  } finally {
    await current?.kill();
    await freeSandboxes(dir);
    rmSync(dir, { recursive: true, force: true });
  }
});
