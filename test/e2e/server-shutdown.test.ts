// `lmvm server` stops on SIGTERM even while a build hangs and a user follows
// its log: it aborts the build, exits within its shutdown deadline, leaves no
// process behind, and the next start queues the interrupted build again.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmImageBuildCommand, ListMicrovmImageBuildsCommand } from "@aws-sdk/client-lambda-microvms";
import { makeZip } from "../support/artifacts.js";
import { BUSYBOX, ROLE } from "../support/builds.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { within } from "../support/deadline.js";
import { LMVM, processesWith, spawnServer, type ServerProcess } from "../support/processes.js";

let server: ServerProcess | undefined;
const dataDir = tempDir();
after(async () => {
  await server?.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

test("SIGTERM stops lmvm server while a build hangs and its log is followed; the build is queued again at the next start", { timeout: 600_000 }, async () => {
  const artifact = join(dataDir, "app.zip");
  writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN sleep 987654\n" }]));
  server = await spawnServer(dataDir, { builds: true, args: ["--no-snapshots"] });
  let client = sdkClient(server.url, readCredentials(dataDir));
  await client.send(new CreateMicrovmImageCommand({ name: "hangs", baseImageArn: BUSYBOX, buildRoleArn: ROLE, codeArtifact: { uri: `file://${artifact}` } }));
  const buildId = (await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "hangs", imageVersion: "1.0" }))).items![0]!.buildId!;
  await eventually(async () => (processesWith("sleep 987654").length ? true : undefined), "the RUN step to run", 300_000);

  // A user follows the build's log, holding a request open on the API.
  const follower = spawn(LMVM, ["logs", "build", "hangs", "1.0", "--follow", "--data-dir", dataDir, "--endpoint-url", server.url], { stdio: ["ignore", "pipe", "pipe"] });
  let followed = "";
  follower.stdout.on("data", (d) => (followed += d));
  const followerExited = new Promise<void>((resolve) => follower.once("exit", () => resolve()));
  await eventually(async () => (followed.includes("RUN sleep 987654") ? true : undefined), "the follower to print the log", 30_000);

  const child = server.child;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  const code = await within(60_000, `lmvm server to exit after SIGTERM (its output: ${server.output().slice(-2000)})`, exited);
  // It exits 0 once everything stopped, or 1 when its shutdown deadline cut a slow stop short (a loaded host).
  assert.ok(code === 0 || (code === 1 && /did not stop within/.test(server.output())), `exit ${code}: ${server.output().slice(-2000)}`);
  assert.match(server.output(), /lmvm server stopping/);
  // The follower itself names the data directory; it may wait to reconnect to the next server.
  const leftovers = () => [...processesWith("sleep 987654"), ...processesWith(dataDir)].filter((p) => Number(p) !== follower.pid);
  await eventually(async () => (leftovers().length === 0 ? true : undefined), "the build's processes to be gone", 10_000);
  follower.kill();
  await within(10_000, "the log follower to end when killed", followerExited);
  client.destroy();

  server = await spawnServer(dataDir, { builds: true, args: ["--no-snapshots"] });
  client = sdkClient(server.url, readCredentials(dataDir));
  await eventually(async () => (readFileSync(join(dataDir, "logs", "builds", `${buildId}.log`), "utf8").includes("attempt 2") ? true : undefined), "the interrupted build to run again", 120_000);
  const again = await client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "hangs", imageVersion: "1.0", buildId }));
  assert.equal(again.buildState, "IN_PROGRESS", again.stateReason);
  client.destroy();
});
