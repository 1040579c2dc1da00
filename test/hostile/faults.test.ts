// Faults: `lmvm server` killed with SIGKILL at random moments of runs,
// suspends, resumes, terminates and builds, 20 times; a sandbox process killed
// under a RUNNING MicroVM; a corrupted checkpoint. After each: the restarted
// server's records match the host, nothing leaks, every MicroVM works or is
// TERMINATED with a reason, and no SUCCESSFUL image is lost.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListMicrovmsCommand, ResumeMicrovmCommand, RunMicrovmCommand,
  SuspendMicrovmCommand, TerminateMicrovmCommand, UpdateMicrovmImageCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { Gvisor, type SandboxRecord } from "../../src/runtime/index.js";
import { makeZip } from "../support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { record } from "./report.js";

const ROUNDS = 20;
const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:web";

async function serves(ip: string): Promise<boolean> {
  try {
    return (await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

describe("faults", { timeout: 1_200_000 }, () => {
  const dataDir = tempDir("lmvm-faults-");
  let server: ServerProcess;
  let client: LambdaMicrovmsClient;
  const gvisor = new Gvisor({ stateRoot: join(dataDir, "runsc", "microvms") });
  const start = async () => {
    server = await spawnServer(dataDir, { builds: true });
    client = sdkClient(server.url, readCredentials(dataDir));
  };
  const sandboxRecord = (id: string) => JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
  const all = async () => (await client.send(new ListMicrovmsCommand({ maxResults: 1000 }))).items ?? [];
  const get = (id: string) => client.send(new GetMicrovmCommand({ microvmIdentifier: id }));

  /** The records against the host: what must hold after every fault. */
  const consistent = async (why: string) => {
    // A build the kill interrupted runs again after the restart; its snapshot sandboxes have namespaces too.
    await eventually(async () => (["CREATING", "UPDATING"].includes((await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }))).state!) ? undefined : true), `${why}: the image's build to finish`, 300_000);
    const vms = await all();
    const live = (await gvisor.list()).filter((s) => s.status === "running").map((s) => s.id).sort();
    const running = vms.filter((v) => v.state === "RUNNING").map((v) => v.microvmId!).sort();
    assert.deepEqual(live, running, `${why}: the running sandboxes are exactly the RUNNING MicroVMs`);
    for (const id of running) assert.ok(await serves(sandboxRecord(id).sandboxIp), `${why}: RUNNING ${id} serves`);
    for (const v of vms.filter((x) => x.state === "SUSPENDED")) assert.ok(existsSync(join(dataDir, "microvms", v.microvmId!, "checkpoint", "checkpoint.img")), `${why}: SUSPENDED ${v.microvmId} has its checkpoint`);
    for (const v of vms.filter((x) => x.state === "TERMINATED")) {
      const full = await get(v.microvmId!);
      assert.ok(!existsSync(join(dataDir, "microvms", v.microvmId!)), `${why}: TERMINATED ${v.microvmId} left no files`);
      if (full.stateReason) assert.ok(full.stateReason.length > 10, `${why}: a reason that says something`);
    }
    const networks = readdirSync(join(dataDir, "networks")).sort();
    const expected = running.map((id) => String(sandboxRecord(id).networkIndex)).sort();
    assert.deepEqual(networks, expected, `${why}: one network namespace per RUNNING MicroVM; MicroVMs: ${vms.map((v) => `${v.microvmId}=${v.state}`).join(", ")}; server log: ${server.output().slice(-1500)}`);
    for (const v of vms) assert.ok(["RUNNING", "SUSPENDED", "TERMINATED"].includes(v.state!), `${why}: ${v.microvmId} settled, not ${v.state}`);
    const first = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "1.0" }));
    assert.equal(first.state, "SUCCESSFUL", `${why}: the SUCCESSFUL version is still there`);
    assert.ok(existsSync(join(dataDir, "images", "web", "1.0")), `${why}: and its files`);
  };

  before(async () => {
    await start();
    const artifact = join(dataDir, "app.zip");
    writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /www && echo ok > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" }]));
    await client.send(new CreateMicrovmImageCommand({ name: "web", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${artifact}` } }));
    await eventually(async () => ((await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }))).state === "CREATED" ? true : undefined), "the image", 300_000);
  });
  after(async () => {
    client?.destroy();
    await server?.kill();
    await freeSandboxes(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });

  test(`kill -9 at random moments of runs, suspends, resumes, terminates and builds, ${ROUNDS} times`, async () => {
    const actions: Record<string, number> = {};
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < ROUNDS; round++) {
      const vms = await all();
      const running = vms.filter((v) => v.state === "RUNNING").map((v) => v.microvmId!);
      const suspended = vms.filter((v) => v.state === "SUSPENDED").map((v) => v.microvmId!);
      const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
      const choices: [string, () => Promise<unknown>][] = [["run", () => client.send(new RunMicrovmCommand({ imageIdentifier: ARN }))]];
      if (running.length) choices.push(["suspend", () => client.send(new SuspendMicrovmCommand({ microvmIdentifier: pick(running) }))]);
      if (running.length > 2) choices.push(["terminate", () => client.send(new TerminateMicrovmCommand({ microvmIdentifier: pick(running) }))]);
      if (suspended.length) choices.push(["resume", () => client.send(new ResumeMicrovmCommand({ microvmIdentifier: pick(suspended) }))]);
      if (round % 5 === 4) choices.splice(0, choices.length, ["build", () => client.send(new UpdateMicrovmImageCommand({ imageIdentifier: "web", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${join(dataDir, "app.zip")}` } }))]);
      const [name, act] = pick(choices);
      actions[name] = (actions[name] ?? 0) + 1;
      void act().catch(() => undefined); // the server may die mid-call
      await new Promise((r) => setTimeout(r, Math.floor(random() * 1500)));
      await server.kill("SIGKILL");
      client.destroy();
      await start();
      await consistent(`round ${round + 1} (killed during ${name})`);
    }
    const vms = await all();
    const count = (s: string) => vms.filter((v) => v.state === s).length;
    record("faults", `kill -9 of the server mid-operation, ${ROUNDS} times`, "records matched the host after every restart; nothing leaked; the image survived", {
      ...Object.fromEntries(Object.entries(actions).map(([k, v]) => [`killed during ${k}`, v])),
      "MicroVMs RUNNING at the end": count("RUNNING"), SUSPENDED: count("SUSPENDED"), TERMINATED: count("TERMINATED"),
    });
  });

  test("a sandbox process killed under a RUNNING MicroVM: TERMINATED with a reason", async () => {
    const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: ARN }));
    await eventually(async () => ((await get(microvmId!)).state === "RUNNING" ? true : undefined), "RUNNING", 60_000);
    const pid = (await gvisor.list()).find((s) => s.id === microvmId)!.pid;
    execFileSync("kill", ["-9", String(pid)]);
    const ended = await eventually(async () => {
      const vm = await get(microvmId!);
      return vm.state === "TERMINATED" ? vm : undefined;
    }, "TERMINATED", 30_000);
    assert.match(ended.stateReason ?? "", /stopped/);
    await consistent("after a killed sandbox");
    record("faults", "the sandbox process of a RUNNING MicroVM killed (SIGKILL)", `TERMINATED: "${ended.stateReason}"`);
  });

  test("a corrupted checkpoint: the resume fails cleanly, the MicroVM is TERMINATED with the reason, the server stays up", async () => {
    const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: ARN }));
    await eventually(async () => ((await get(microvmId!)).state === "RUNNING" ? true : undefined), "RUNNING", 60_000);
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: microvmId! }));
    await eventually(async () => ((await get(microvmId!)).state === "SUSPENDED" ? true : undefined), "SUSPENDED", 60_000);
    const image = join(dataDir, "microvms", microvmId!, "checkpoint", "checkpoint.img");
    truncateSync(image, Math.floor(readFileSync(image).length / 2));
    await assert.rejects(client.send(new ResumeMicrovmCommand({ microvmIdentifier: microvmId! })), (e: Error) => e.name === "ConflictException" && /Resuming MicroVM .* failed/.test(e.message));
    const vm = await get(microvmId!);
    assert.equal(vm.state, "TERMINATED");
    assert.match(vm.stateReason ?? "", /Resuming failed/);
    await consistent("after a corrupted checkpoint");
    record("faults", "a suspended MicroVM's checkpoint cut in half, then resumed", `ConflictException; TERMINATED: "${(vm.stateReason ?? "").slice(0, 120)}…"`);
  });
});
