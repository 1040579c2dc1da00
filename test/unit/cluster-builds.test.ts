// Builds on agents (src/cluster/remote-builder.ts, agent-builds.ts) without gVisor or buildah: the
// server's RemoteBuilder against real agent services on 127.0.0.1, over real mutual TLS and a real
// PostgreSQL cluster store, each agent building with a stand-in ImageBuilder that writes log lines
// and waits until the test lets it finish (or its signal aborts). Covers the log streamed into the
// server's log, the file:// artifact sent from the server, placement spreading builds, cancellation
// reaching the agent, and a build placed again when its host is lost, never running on two hosts.

import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AgentBuilds, AgentService, initCluster, MAX_HOST_LOSSES, nodeCredentials, RemoteBuilder } from "../../src/cluster/index.js";
import { BuildFailure, NoSandboxes, type BuildJob, type ImageBuilder, type SnapshotBuild, type Store } from "../../src/core/index.js";
import type { BuildLogs, BuildSettings } from "../../src/builder/index.js";
import { LogFiles } from "../../src/os/index.js";
import { ClusterStore } from "../../src/store/index.js";
import { until, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { freshDatabase } from "../support/postgres.js";

/** A host without sandboxes that has nothing to reap or adopt (the agent service's start asks). */
class Empty extends NoSandboxes {
  override async reap(): Promise<void> {}
  override async adopt(): Promise<void> {}
  override async running(): Promise<Set<string>> {
    return new Set();
  }
}

/** The first value `get` answers within `ms`. */
async function found<T>(ms: number, what: string, get: () => Promise<T | undefined>, everyMs = 50): Promise<T> {
  let value: T | undefined;
  await until(ms, what, async () => (value = await get()) !== undefined, everyMs);
  return value!;
}

/** A port free on 127.0.0.1 now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().once("error", reject).listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

interface Run {
  job: BuildJob;
  settings: BuildSettings | undefined;
  signal: AbortSignal;
  finish: () => void;
}

/** An agent's builder that logs two lines, then waits for finish() or its signal. */
class HeldBuilder implements ImageBuilder {
  readonly runs: Run[] = [];
  recovered = 0;
  constructor(private readonly logs: BuildLogs, private readonly settings: (id: string) => BuildSettings | undefined) {}
  build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    const log = this.logs.open(job.build.buildId);
    const settings = this.settings(job.build.buildId);
    log.step(`Build ${job.build.buildId}`);
    const artifact = settings?.artifact;
    log.line(artifact && "path" in artifact ? `artifact: ${readFileSync(artifact.path, "utf8")}` : `artifact failure: ${artifact && "failure" in artifact ? artifact.failure : "none"}`);
    return new Promise((resolve, reject) => {
      const run: Run = { job, settings, signal, finish: () => resolve({ codeInstallSizeInBytes: 42 }) };
      this.runs.push(run);
      signal.addEventListener("abort", () => {
        log.step("FAILED: The build was cancelled.");
        reject(new BuildFailure("The build was cancelled."));
      }, { once: true });
    });
  }
  async discard(): Promise<void> {}
  async recover(): Promise<void> {
    this.recovered++;
  }
}

describe("builds on agents", { timeout: 180_000 }, () => {
  const dir = tempDir("lmvm-builds-unit-");
  let cluster: ClusterStore;
  let remote: RemoteBuilder;
  let serverLogs: LogFiles;
  const agents = new Map<string, { service: AgentService; builder: () => HeldBuilder }>();
  const log = () => undefined;
  /** What the server's builder logged. */
  const events: Record<string, unknown>[] = [];

  /** An agent service on 127.0.0.1; one without builds (`noBuilds`) answers a build 404, as an agent that takes none. */
  async function agentService(hostId: string, opts: { noBuilds?: boolean; freeMemoryMiB?: number } = {}): Promise<{ service: AgentService; builder: () => HeldBuilder }> {
    const port = await freePort();
    const tls = await nodeCredentials(join(dir, "cluster"), hostId, "agent", ["127.0.0.1"]);
    let held: HeldBuilder | undefined;
    const builds = opts.noBuilds ? undefined : new AgentBuilds({ dataDir: join(dir, hostId), builder: (logs, settings) => (held = new HeldBuilder(logs, settings)), discardLocal: async () => undefined, log });
    const runtime = new Empty("test host");
    const service = new AgentService({
      hostId, runtime, local: runtime, cluster, store: {} as Store, tls, log, ...(builds ? { builds } : {}), heartbeatMs: 200,
      capacity: () => ({ id: hostId, address: `127.0.0.1:${port}`, memoryMiB: 4096, freeMemoryMiB: opts.freeMemoryMiB ?? 2048, cpus: 2, diskMiB: 10_000, freeDiskMiB: 5000, architecture: "X86_64", runscVersion: "test", platform: "ptrace" }),
    });
    await service.start("127.0.0.1", port);
    return { service, builder: () => held! };
  }

  async function startAgent(hostId: string): Promise<void> {
    agents.set(hostId, await agentService(hostId));
  }

  function job(n: number, uri: string): BuildJob {
    const at = new Date();
    const imageArn = `arn:aws:lambda:us-east-1:000000000000:microvm-image:img${n}`;
    return {
      image: { arn: imageArn } as BuildJob["image"],
      version: { imageArn, version: "1.0", createdAt: at, config: { codeArtifact: { uri } } } as unknown as BuildJob["version"],
      build: { buildId: `00000000-0000-0000-0000-00000000000${n}`, imageArn, imageVersion: "1.0", architecture: "X86_64", attempts: 1, createdAt: at, updatedAt: at } as BuildJob["build"],
      egress: { internet: false, rules: [] } as unknown as BuildJob["egress"],
    };
  }

  const runOn = (hostId: string, buildId: string) => agents.get(hostId)!.builder().runs.find((r) => r.job.build.buildId === buildId && !r.signal.aborted);

  before(async () => {
    await initCluster(join(dir, "cluster"));
    cluster = await ClusterStore.open(await freshDatabase());
    serverLogs = new LogFiles(join(dir, "server-logs"));
    remote = new RemoteBuilder({
      cluster, tls: await nodeCredentials(join(dir, "cluster"), "server", "server", []), platform: "ptrace", architecture: "X86_64", logs: serverLogs,
      settings: { limits: { maxArtifactBytes: 1000, maxUncompressedBytes: 10_000, maxFiles: 10 }, phaseTimeouts: { buildah: 7 } }, log: (e) => void events.push(e), noHostWaitMs: 3000,
    });
    await startAgent("host-a");
    await startAgent("host-b");
  });

  after(async () => {
    remote?.stop();
    for (const a of agents.values()) await a.service.stop();
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the server's start clears the builds of every host that answers, and does not wait long for one that does not", async () => {
    // A black-holed host: its port takes connections and never answers (not even TLS). Another platform: never placed on.
    const held: Socket[] = [];
    const hole = createServer((s) => void held.push(s.on("error", () => undefined)));
    await new Promise<void>((r) => hole.listen(0, "127.0.0.1", () => r()));
    const address = `127.0.0.1:${(hole.address() as { port: number }).port}`;
    await cluster.registerHost({ id: "host-d", address, memoryMiB: 4096, freeMemoryMiB: 2048, cpus: 2, diskMiB: 10_000, freeDiskMiB: 5000, architecture: "X86_64", runscVersion: "test", platform: "other" });
    try {
      const before = ["host-a", "host-b"].map((h) => agents.get(h)!.builder().recovered);
      // Past the quick call's 5 s and a margin, well short of the clearing's own limit (10 min).
      await within(15_000, "the builds' recovery", remote.recover());
      assert.deepEqual(["host-a", "host-b"].map((h) => agents.get(h)!.builder().recovered), before.map((n) => n + 1));
      assert.ok(events.some((e) => e.hostId === "host-d" && e.level === "warn" && /did not clear its builds/.test(String(e.msg))), JSON.stringify(events));
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => hole.close(() => r()));
    }
  });

  test("builds placed at the same time go to different hosts; the agent gets the server's settings and file:// artifact, and its log lines reach the server's log", async () => {
    const zip = join(dir, "app.zip");
    writeFileSync(zip, "PK-the-zip");
    const one = job(1, `file://${zip}`);
    const two = job(2, `file://${join(dir, "missing.zip")}`);
    const done = [remote.build(one, new AbortController().signal), remote.build(two, new AbortController().signal)];
    const where = await found(20_000, "both builds running on agents", async () => {
      const a = ["host-a", "host-b"].find((h) => runOn(h, one.build.buildId));
      const b = ["host-a", "host-b"].find((h) => runOn(h, two.build.buildId));
      return a && b ? [a, b] : undefined;
    });
    assert.notEqual(where[0], where[1], "spread over the two hosts");
    const run = runOn(where[0]!, one.build.buildId)!;
    assert.deepEqual(run.settings?.phaseTimeouts, { buildah: 7 });
    assert.equal(run.settings?.limits?.maxArtifactBytes, 1000);
    assert.equal(remote.buildsOn(where[0]!), 1);
    run.finish();
    runOn(where[1]!, two.build.buildId)!.finish();
    assert.deepEqual(await within(10_000, "the builds' results", Promise.all(done)), [{ codeInstallSizeInBytes: 42 }, { codeInstallSizeInBytes: 42 }]);
    const text = readFileSync(serverLogs.path(one.build.buildId), "utf8");
    assert.match(text, new RegExp(`^\\[[^\\]]+\\] ==> Building on host ${where[0]} \\(127\\.0\\.0\\.1\\)\\n\\[[^\\]]+\\] ==> Build ${one.build.buildId}\\nartifact: PK-the-zip\\n$`));
    assert.match(readFileSync(serverLogs.path(two.build.buildId), "utf8"), /artifact failure: Code artifact file:\/\/.*missing\.zip does not exist on the lmvm host\./);
    assert.equal(remote.buildsOn(where[0]!), 0);
  });

  test("aborting the build's signal cancels it on its agent", async () => {
    const j = job(3, "s3://bucket/app.zip");
    const controller = new AbortController();
    const done = remote.build(j, controller.signal);
    const host = await found(20_000, "the build running", async () => ["host-a", "host-b"].find((h) => runOn(h, j.build.buildId)));
    const run = runOn(host, j.build.buildId)!;
    assert.equal(run.settings?.artifact, undefined, "an s3:// artifact is the agent's to fetch");
    controller.abort();
    await within(20_000, "the cancelled build", assert.rejects(done, /The build was cancelled/));
    // Rejected only once the agent says the build no longer runs there.
    assert.ok(run.signal.aborted, "the agent's build ended before the cancelled build was rejected");
    assert.match(readFileSync(serverLogs.path(j.build.buildId), "utf8"), /==> FAILED: The build was cancelled\.\n$/);
  });

  test("a build cancelled while it is being placed never reaches an agent", async () => {
    const zip = join(dir, "app7.zip");
    writeFileSync(zip, "PK-seven");
    const j = job(7, `file://${zip}`);
    const controller = new AbortController();
    const done = remote.build(j, controller.signal);
    // Aborted while placement awaits the candidates (after its loop's first check).
    controller.abort();
    await within(10_000, "the cancelled build", assert.rejects(done, /The build was cancelled/));
    for (const h of ["host-a", "host-b"]) assert.equal(agents.get(h)!.builder().runs.find((r) => r.job.build.buildId === j.build.buildId), undefined, `no run on ${h}`);
    assert.match(readFileSync(serverLogs.path(j.build.buildId), "utf8"), /==> FAILED: The build was cancelled\.\n$/);
  });

  test("a connection to the build's host that breaks: the build ends there, and only then is it placed again", async () => {
    const j = job(4, "s3://bucket/app.zip");
    const done = remote.build(j, new AbortController().signal);
    const first = await found(20_000, "the build running", async () => ["host-a", "host-b"].find((h) => runOn(h, j.build.buildId)));
    const run = runOn(first, j.build.buildId)!;
    // The connection breaks (the agent lives on): the agent sees it close and stops the build; the server asks it whether it still runs.
    (agents.get(first)!.service as unknown as { server: { closeAllConnections(): void } }).server.closeAllConnections();
    const again = await found(30_000, "the build placed again", async () => ["host-a", "host-b"].map((h) => runOn(h, j.build.buildId)).find((r) => r && r !== run));
    assert.ok(run.signal.aborted, "the first run was stopped before the build was placed again");
    again.finish();
    assert.deepEqual(await within(10_000, "the build's result", done), { codeInstallSizeInBytes: 42 });
    const text = readFileSync(serverLogs.path(j.build.buildId), "utf8");
    assert.match(text, new RegExp(`Building on host ${first}[\\s\\S]*Lost host ${first} during the build[\\s\\S]*Host ${first} no longer runs the build: building again[\\s\\S]*Building on host`), text);
  });

  test("a build whose host is lost MAX_HOST_LOSSES times fails saying so", async () => {
    const j = job(8, "s3://bucket/app.zip");
    const done = remote.build(j, new AbortController().signal);
    const outcome = done.then(() => "built", (err: Error) => err);
    for (let i = 0; i < MAX_HOST_LOSSES; i++) {
      const [host, run] = await found(30_000, `run ${i + 1} of the build`, async () => {
        for (const h of ["host-a", "host-b"]) {
          const r = runOn(h, j.build.buildId);
          if (r) return [h, r] as const;
        }
        return undefined;
      });
      (agents.get(host)!.service as unknown as { server: { closeAllConnections(): void } }).server.closeAllConnections();
      await until(10_000, `run ${i + 1} stopped by its agent`, async () => run.signal.aborted, 50);
    }
    const err = await within(30_000, "the build's failure", outcome);
    assert.ok(err instanceof BuildFailure && new RegExp(`host was lost ${MAX_HOST_LOSSES} times`).test(err.message), String(err));
    assert.match(readFileSync(serverLogs.path(j.build.buildId), "utf8"), /==> FAILED: The build's host was lost \d+ times[^\n]*\n$/);
  });

  test("an agent that answers a build with a plain error (takes no builds) is skipped, not taken for a lost host", async () => {
    // The most free memory: placement tries it first.
    const c = await agentService("host-c", { noBuilds: true, freeMemoryMiB: 4000 });
    try {
      const j = job(9, "s3://bucket/app.zip");
      const done = remote.build(j, new AbortController().signal);
      const run = await found(20_000, "the build running on a host that builds", async () => ["host-a", "host-b"].map((h) => runOn(h, j.build.buildId)).find((r) => r));
      run.finish();
      assert.deepEqual(await within(10_000, "the build's result", done), { codeInstallSizeInBytes: 42 });
      const text = readFileSync(serverLogs.path(j.build.buildId), "utf8");
      assert.match(text, /Building on host host-c[^\n]*\n[^\n]*Host host-c did not take or keep the build \(host host-c does not take builds \(status 404\): host host-c runs no builds\)/, text);
      assert.doesNotMatch(text, /Lost host/, text);
    } finally {
      await c.service.stop();
      await until(20_000, "host-c LOST", async () => {
        await cluster.markLost(1500);
        return (await cluster.host("host-c"))?.state === "LOST";
      }, 200);
    }
  });

  test("an agent's plain error before its builder starts fails the build, its log ending with the server's FAILED line", async () => {
    // An agent (its certificate) that reads a build's request and answers it 500 with a plain error, as one whose checks of the request fail.
    const tls = await nodeCredentials(join(dir, "cluster"), "host-e", "agent", ["127.0.0.1"]);
    const agent = createHttpsServer({ ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(500, { "content-type": "application/x-ndjson" });
        res.end(`${JSON.stringify({ error: { name: "Error", message: "the request is not one this agent builds" } })}\n`);
      });
    });
    await new Promise<void>((r) => agent.listen(0, "127.0.0.1", () => r()));
    const address = `127.0.0.1:${(agent.address() as { port: number }).port}`;
    // The most free memory and a fresh heartbeat: placement tries it first.
    await cluster.registerHost({ id: "host-e", address, memoryMiB: 4096, freeMemoryMiB: 4000, cpus: 2, diskMiB: 10_000, freeDiskMiB: 5000, architecture: "X86_64", runscVersion: "test", platform: "ptrace" });
    try {
      const j = job(10, "s3://bucket/app.zip");
      await within(20_000, "the build's failure", assert.rejects(remote.build(j, new AbortController().signal), (err: Error) =>
        err instanceof BuildFailure && err.message === `Internal error: host ${address}: the request is not one this agent builds`));
      const text = readFileSync(serverLogs.path(j.build.buildId), "utf8");
      assert.match(text, /Building on host host-e[^\n]*\n\[[^\]]+\] ==> FAILED: Internal error: host [^\n]*: the request is not one this agent builds\n$/, text);
    } finally {
      await new Promise<void>((r) => agent.close(() => r()));
      agent.closeAllConnections();
      await until(20_000, "host-e LOST", async () => {
        await cluster.markLost(1500);
        return (await cluster.host("host-e"))?.state === "LOST";
      }, 200);
    }
  });

  test("an agent that stops during a build stops it and says so: the build goes to the other host", async () => {
    const j = job(6, "s3://bucket/app.zip");
    const done = remote.build(j, new AbortController().signal);
    const first = await found(20_000, "the build running", async () => ["host-a", "host-b"].find((h) => runOn(h, j.build.buildId)));
    const other = first === "host-a" ? "host-b" : "host-a";
    const run = runOn(first, j.build.buildId)!;
    await agents.get(first)!.service.stop();
    assert.ok(run.signal.aborted, "the stopped agent's build was aborted");
    const again = await found(30_000, "the build placed again", async () => runOn(other, j.build.buildId));
    again.finish();
    assert.deepEqual(await within(10_000, "the build's result", done), { codeInstallSizeInBytes: 42 });
    const text = readFileSync(serverLogs.path(j.build.buildId), "utf8");
    assert.match(text, new RegExp(`Building on host ${first}[\\s\\S]*FAILED: The build was cancelled\\.[\\s\\S]*Host ${first} (did not take or keep the build|could not be reached|no longer runs the build)[\\s\\S]*Building on host ${other}`), text);
  });

  test("with no ACTIVE host the build waits, then fails saying why", async () => {
    for (const a of agents.values()) await a.service.stop();
    await until(20_000, "every host LOST", async () => {
      await cluster.markLost(1500);
      return (await cluster.listHosts()).every((h) => h.state === "LOST");
    }, 200);
    const j = job(5, "s3://bucket/app.zip");
    await within(20_000, "the build's failure", assert.rejects(remote.build(j, new AbortController().signal), (err: Error) =>
      err instanceof BuildFailure && /could not be placed: no ACTIVE host .* it waited 3 s/.test(err.message)));
    assert.match(readFileSync(serverLogs.path(j.build.buildId), "utf8"), /Waiting for a host to build on[\s\S]*FAILED: The build could not be placed/);
  });
});
