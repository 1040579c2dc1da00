// A server killed with SIGKILL in the middle of a build: on restart the build
// is queued again and finishes, and the killed attempt leaves nothing behind,
// not even the network namespace its RUN steps got from the image's
// INTERNET_EGRESS (removed by the builder's recovery).

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { CreateMicrovmImageCommand, GetMicrovmImageBuildCommand, ListMicrovmImageBuildsCommand } from "@aws-sdk/client-lambda-microvms";
import { makeZip } from "../support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";

let server: ServerProcess | undefined;
const dataDir = tempDir();
after(async () => {
  await server?.kill();
  rmSync(dataDir, { recursive: true, force: true });
});

test("a build interrupted by kill -9 is retried after the restart and succeeds", { timeout: 300_000 }, async () => {
  const artifact = join(dataDir, "app.zip");
  writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN sleep 10 && echo slow step done > /done.txt\n" }]));
  server = await spawnServer(dataDir, { builds: true, args: ["--no-snapshots"] });
  let client = sdkClient(server.url, readCredentials(dataDir));
  await client.send(new CreateMicrovmImageCommand({
    name: "slow", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox",
    buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${artifact}` },
    egressNetworkConnectors: ["arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS"],
  }));
  const buildId = (await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "slow", imageVersion: "1.0" }))).items![0]!.buildId!;
  const get = () => client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "slow", imageVersion: "1.0", buildId }));
  await eventually(async () => (readFileSync(join(dataDir, "logs", "builds", `${buildId}.log`), "utf8").includes("RUN sleep 10") ? true : undefined), "the RUN step to start", 120_000);
  assert.equal((await get()).buildState, "IN_PROGRESS");
  // The RUN steps' namespace, by the marker this server keeps and the namespace's identity (its nsfs inode).
  const buildNetworks = join(dataDir, "build-networks");
  const markers = readdirSync(buildNetworks);
  assert.equal(markers.length, 1, "the build's RUN steps have a namespace of their own");
  const namespace = `/var/run/netns/lmvm-${markers[0]}`;
  const identity = statSync(namespace).ino;
  await server.kill("SIGKILL");
  client.destroy();
  const survivors = () => readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dataDir);
    } catch {
      return false;
    }
  });
  await eventually(async () => (survivors().length === 0 ? true : undefined), "the killed server's build processes to die", 3_000);

  server = await spawnServer(dataDir, { builds: true, args: ["--no-snapshots"] });
  client = sdkClient(server.url, readCredentials(dataDir));
  const done = await eventually(async () => {
    const b = await get();
    return b.buildState === "SUCCESSFUL" || b.buildState === "FAILED" ? b : undefined;
  }, "the retried build", 120_000);
  assert.equal(done.buildState, "SUCCESSFUL", done.stateReason);
  const log = readFileSync(join(dataDir, "logs", "builds", `${buildId}.log`), "utf8");
  assert.match(log, /attempt 1[\s\S]*attempt 2/, "the log shows both attempts");
  assert.deepEqual(existsSync(join(dataDir, "builds")) ? readdirSync(join(dataDir, "builds")) : [], []);
  assert.deepEqual(readdirSync(buildNetworks), [], "no build namespace is left");
  // Another test may have made a namespace of the same name since; it is not the killed build's.
  assert.ok(!existsSync(namespace) || statSync(namespace).ino !== identity, "the killed build's namespace was removed at the restart");
  assert.equal(readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(dataDir)).length, 0, "no mounts left");
  client.destroy();
});
