// Faults: `lmvm server` killed with SIGKILL at random moments of runs,
// suspends, resumes, terminates and builds, 20 times; a sandbox process killed
// under a RUNNING MicroVM; a corrupted checkpoint. After each: the restarted
// server's records match the host, nothing leaks, every MicroVM works or is
// TERMINATED with a reason, and no SUCCESSFUL image is lost.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statfsSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListMicrovmsCommand, ResumeMicrovmCommand, RunMicrovmCommand,
  SuspendMicrovmCommand, TerminateMicrovmCommand, UpdateMicrovmImageCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { mountsUnder } from "../../src/os/index.js";
import { Gvisor, type SandboxRecord } from "../../src/runtime/index.js";
import { makeZip } from "../support/artifacts.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { smallDisk, type SmallDisk } from "../support/small-disk.js";
import { record } from "./report.js";

/** `npm run reliability` runs 20; `npm test` fewer (LMVM_FAULT_ROUNDS in scripts/test.sh), to keep the whole run under an hour. */
const ROUNDS = Number(process.env.LMVM_FAULT_ROUNDS ?? 20);
const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:web";

async function serves(ip: string): Promise<boolean> {
  try {
    return (await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

const BUILD = { baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R" };

/** Builds image "web" (busybox httpd on 8080) from an artifact kept in the data directory. */
async function buildWeb(client: LambdaMicrovmsClient, dataDir: string): Promise<void> {
  const artifact = join(dataDir, "app.zip");
  writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /www && echo ok > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" }]));
  await client.send(new CreateMicrovmImageCommand({ name: "web", ...BUILD, codeArtifact: { uri: `file://${artifact}` } }));
  const image = await eventually(async () => {
    const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }));
    return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
  }, "the image", 300_000);
  if (image.state !== "CREATED") {
    const version = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "1.0" }));
    assert.fail(`the image's build failed: ${version.stateReason}`);
  }
}

/** Stops the server and frees every sandbox it left: MicroVMs outlive their server by design. */
async function stopAll(client: LambdaMicrovmsClient | undefined, server: ServerProcess | undefined, dataDir: string): Promise<void> {
  client?.destroy();
  await server?.kill();
  await freeSandboxes(dataDir);
}

interface Host {
  dataDir: string;
  client: LambdaMicrovmsClient;
  server: ServerProcess;
  gvisor: Gvisor;
}

/** The records against the host: what must hold after every fault. */
async function checkConsistent({ dataDir, client, server, gvisor }: Host, why: string): Promise<void> {
  const sandboxRecord = (id: string) => JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
  // A build the kill interrupted runs again after the restart; its snapshot sandboxes have namespaces too.
  await eventually(async () => (["CREATING", "UPDATING"].includes((await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }))).state!) ? undefined : true), `${why}: the image's build to finish`, 300_000);
  const vms = (await client.send(new ListMicrovmsCommand({ maxResults: 1000 }))).items ?? [];
  const live = (await gvisor.list()).filter((s) => s.status === "running").map((s) => s.id).sort();
  const running = vms.filter((v) => v.state === "RUNNING").map((v) => v.microvmId!).sort();
  // Each incarnation has its own runsc id (the MicroVM's id, then <id>-r<n> after its n-th resume).
  const current = (id: string) => sandboxRecord(id).sandboxId ?? id;
  assert.deepEqual(live, running.map(current).sort(), `${why}: the running sandboxes are exactly the RUNNING MicroVMs' current ones`);
  for (const id of running) assert.ok(await serves(sandboxRecord(id).sandboxIp), `${why}: RUNNING ${id} serves`);
  for (const v of vms.filter((x) => x.state === "SUSPENDED")) assert.ok(existsSync(join(dataDir, "microvms", v.microvmId!, "checkpoint", "checkpoint.img")), `${why}: SUSPENDED ${v.microvmId} has its checkpoint`);
  for (const v of vms.filter((x) => x.state === "TERMINATED")) {
    const full = await client.send(new GetMicrovmCommand({ microvmIdentifier: v.microvmId! }));
    assert.ok(!existsSync(join(dataDir, "microvms", v.microvmId!)), `${why}: TERMINATED ${v.microvmId} left no files`);
    if (full.stateReason) assert.ok(full.stateReason.length > 10, `${why}: a reason that says something`);
  }
  const networks = readdirSync(join(dataDir, "networks")).sort();
  const expected = running.map((id) => String(sandboxRecord(id).networkIndex)).sort();
  assert.deepEqual(networks, expected, `${why}: one network namespace per RUNNING MicroVM; MicroVMs: ${vms.map((v) => `${v.microvmId}=${v.state}`).join(", ")}; server log: ${server.output().slice(-1500)}`);
  const disks = running.map((id) => join(sandboxRecord(id).sandboxDir ?? join(dataDir, "microvms", id, "sandbox"), "overlay")).sort();
  assert.deepEqual(mountsUnder(dataDir).sort(), disks, `${why}: one mounted disk per RUNNING MicroVM, none left over`);
  for (const v of vms) assert.ok(["RUNNING", "SUSPENDED", "TERMINATED"].includes(v.state!), `${why}: ${v.microvmId} settled, not ${v.state}`);
  const first = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "1.0" }));
  assert.equal(first.state, "SUCCESSFUL", `${why}: the SUCCESSFUL version is still there`);
  assert.ok(existsSync(join(dataDir, "images", "web", "1.0")), `${why}: and its files`);
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
  const all = async () => (await client.send(new ListMicrovmsCommand({ maxResults: 1000 }))).items ?? [];
  const get = (id: string) => client.send(new GetMicrovmCommand({ microvmIdentifier: id }));

  const consistent = (why: string) => checkConsistent({ dataDir, client, server, gvisor }, why);

  before(async () => {
    await start();
    await buildWeb(client, dataDir);
  });
  after(async () => {
    await stopAll(client, server, dataDir);
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
      if (round % 5 === 4) choices.splice(0, choices.length, ["build", () => client.send(new UpdateMicrovmImageCommand({ imageIdentifier: "web", ...BUILD, codeArtifact: { uri: `file://${join(dataDir, "app.zip")}` } }))]);
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

describe("a full data directory", { timeout: 900_000 }, () => {
  // The data directory gets a small disk of its own (a loop-mounted ext4 image), which the test then fills.
  let disk: SmallDisk;
  let mountPoint: string;
  let dataDir: string;
  let server: ServerProcess;
  let client: LambdaMicrovmsClient;
  let gvisor: Gvisor; // made once the disk is mounted: it creates its state directory
  const start = async () => {
    server = await spawnServer(dataDir, { builds: true, args: ["--microvm-disk-mib", "64"] });
    client = sdkClient(server.url, readCredentials(dataDir));
  };
  const get = (id: string) => client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  const until = (id: string, state: string) => eventually(async () => ((await get(id)).state === state ? true : undefined), `${id} ${state}`, 120_000);
  const run = async () => {
    const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: ARN }));
    await until(microvmId!, "RUNNING");
    return microvmId!;
  };
  const fillers = () => [join(mountPoint, "filler-1"), join(mountPoint, "filler-2")];
  /** Takes every free byte of the data directory's disk. */
  const fill = () => {
    let bytes = statfsSync(mountPoint).bavail * statfsSync(mountPoint).bsize;
    for (; bytes > 0; ) {
      try {
        execFileSync("fallocate", ["-l", String(bytes), fillers()[0]!], { stdio: "ignore" });
        break;
      } catch {
        bytes -= 1 << 20;
      }
    }
    execFileSync("sh", ["-c", `dd if=/dev/zero of=${fillers()[1]} bs=4k 2>/dev/null; true`]);
    return statfsSync(mountPoint).bavail * statfsSync(mountPoint).bsize;
  };

  before(async () => {
    disk = smallDisk("2G"); // a build needs 1 GiB free
    mountPoint = disk.mountPoint;
    dataDir = join(mountPoint, "data");
    gvisor = new Gvisor({ stateRoot: join(dataDir, "runsc", "microvms") });
    await start();
    await buildWeb(client, dataDir);
  });
  after(async () => {
    await stopAll(client, server, dataDir);
    disk.release();
  });

  test("runs, resumes, suspends and builds are refused or fail cleanly, nothing is lost, and all works again once space is freed", async () => {
    const running = await run();
    const suspended = await run();
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: suspended }));
    await until(suspended, "SUSPENDED");
    const left = fill();
    assert.ok(left < 1 << 20, `the disk is full (${left} bytes left)`);

    // A new MicroVM: refused, naming the data directory.
    const runError = await client.send(new RunMicrovmCommand({ imageIdentifier: ARN })).then(() => undefined, (e: Error) => e);
    assert.equal(runError?.name, "InsufficientCapacityException", String(runError));
    assert.match(runError!.message, /data directory .* has 0 MiB free/);
    // Resuming: refused, the MicroVM stays SUSPENDED with its checkpoint.
    const resumeError = await client.send(new ResumeMicrovmCommand({ microvmIdentifier: suspended })).then(() => undefined, (e: Error) => e);
    assert.equal(resumeError?.name, "ConflictException", String(resumeError));
    assert.match(resumeError!.message, /stays SUSPENDED.*data directory/);
    assert.equal((await get(suspended)).state, "SUSPENDED");
    // Suspending: refused outright when even its record cannot be written (ServiceException), else
    // accepted and undone, since the checkpoint would not fit (found before it starts, or when it fails);
    // either way the MicroVM goes on RUNNING and serves. Whether the record still fits depends on the
    // room left in the database's write-ahead log, which the audit trail's writes also use.
    const suspend = await client.send(new SuspendMicrovmCommand({ microvmIdentifier: running })).then(() => undefined, (e: Error) => e);
    let suspendOutcome: string;
    if (suspend) {
      assert.equal(suspend.name, "ServiceException", String(suspend));
      assert.match(suspend.message, /data directory is full/);
      assert.equal((await get(running)).state, "RUNNING");
      suspendOutcome = `ServiceException "${suspend.message.slice(0, 60)}…", stayed RUNNING`;
    } else {
      const kept = await eventually(async () => {
        const vm = await get(running);
        return vm.state === "RUNNING" && /Suspending (failed|could not begin)/.test(vm.stateReason ?? "") ? vm : undefined;
      }, "the suspend to be undone", 60_000);
      assert.match(kept.stateReason!, /Suspending (failed|could not begin), so the MicroVM kept running: .*data directory .* MiB free/);
      suspendOutcome = `accepted, then kept RUNNING: "${kept.stateReason!.slice(0, 80)}…"`;
    }
    // A build: refused with a ServiceException that says the disk is full, or accepted and FAILED with the reason.
    const update = await client.send(new UpdateMicrovmImageCommand({ imageIdentifier: "web", ...BUILD, codeArtifact: { uri: `file://${join(dataDir, "app.zip")}` } })).then(() => undefined, (e: Error) => e);
    let buildOutcome: string;
    if (update) {
      assert.equal(update.name, "ServiceException", String(update));
      assert.match(update.message, /data directory is full/);
      buildOutcome = `UpdateMicrovmImage: ServiceException "${update.message.slice(0, 60)}…"`;
    } else {
      const version = await eventually(async () => {
        const v = await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "2.0" }));
        return v.state === "FAILED" || v.state === "SUCCESSFUL" ? v : undefined;
      }, "the build on a full disk", 300_000);
      assert.equal(version.state, "FAILED");
      assert.match(version.stateReason ?? "", /No space left on device|data directory/i);
      buildOutcome = `build FAILED: "${(version.stateReason ?? "").slice(0, 80)}…"`;
    }
    assert.equal(server.child.exitCode, null, `the server is still up: ${server.output().slice(-800)}`);

    // Space again: everything works, nothing was lost.
    for (const f of fillers()) rmSync(f, { force: true });
    await client.send(new ResumeMicrovmCommand({ microvmIdentifier: suspended }));
    await until(suspended, "RUNNING");
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: running }));
    await until(running, "SUSPENDED");
    const fresh = await run();
    await checkConsistent({ dataDir, client, server, gvisor }, "after the disk was freed");
    // And a restart finds the same.
    await server.kill("SIGKILL");
    client.destroy();
    await start();
    await checkConsistent({ dataDir, client, server, gvisor }, "after a restart");
    assert.equal((await get(fresh)).state, "RUNNING");
    record("faults", "the data directory's disk filled up (2 GiB disk, every byte taken)", "refused or failed cleanly; the server stayed up; all worked again once freed, restart included", {
      RunMicrovm: runError!.name, ResumeMicrovm: `${resumeError!.name}, stayed SUSPENDED`, SuspendMicrovm: suspendOutcome, build: buildOutcome,
    });
  });
});
