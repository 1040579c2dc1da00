// Many hosts (issue 16): RunMicrovm throughput and latency with one, two and
// three agents, side by side in one run. One `lmvm server` (cluster mode,
// PostgreSQL, a file:// object store) and three `lmvm agent`s, each a process
// of its own, each agent in a network namespace of its own joined by a bridge
// (test/support/cluster-hosts.ts, as the cluster e2e test, on a /24 of its own). A configuration of
// k agents is the three with all but k drained (`lmvm hosts drain`): drained
// hosts take no new MicroVM (their agents stay up and heartbeat, which costs
// next to nothing). Each round sends N RunMicrovm calls at once through the
// SDK and times, for each MicroVM, the call to its first HTTP answer through
// the server's endpoint proxy (latency: median and p90 of the round), and N
// over the time until the last one answered (throughput); then every MicroVM
// is terminated and the next configuration runs. Configurations alternate
// round by round; each line prints the median and spread (min–max) of the
// rounds and the ratio against one agent.
//
// On one machine the agents share its CPUs: the figures measure the
// cluster's own overhead and its placement, not added capacity.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import type { Server as NetServer } from "node:net";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, RunMicrovmCommand, TerminateMicrovmCommand,
  type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { zipExample } from "../test/support/artifacts.js";
import { relayDatabase, simulatedHosts, type SimulatedHosts } from "../test/support/cluster-hosts.js";
import { within } from "../test/support/deadline.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { freshDatabase } from "../test/support/postgres.js";
import { LMVM, lmvm, spawnServer, type ServerProcess } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { median, spread } from "./stats.js";

const ROUNDS = Number(process.env.LMVM_BENCH_ROUNDS ?? 3);
/** RunMicrovm calls sent at once in each round. */
const N = Number(process.env.LMVM_BENCH_CLUSTER_N ?? 6);
const AGENTS = 3;
/** A /24 of its own, not the cluster e2e test's 172.30.0.0/24, so both can run at once. */
const SUBNET = "172.30.9";
const HOST_IDS = ["bench-a", "bench-b", "bench-c"];
const DOMAIN = "microvm.localhost";
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";
/** Every wait has a deadline; a MicroVM on a loaded machine may take a while. */
const ANSWER_MS = 300_000;

interface Agent {
  child: ChildProcess;
  output: () => string;
  dataDir: string;
}

function p90(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)]!;
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const line = (xs: number[], unit: string, base?: number[]) =>
  `${fmt(median(xs))} ${unit} (${spread(xs)})${base ? `, ${(median(xs) / median(base)).toFixed(2)}x one agent` : ""}`;

export async function clusterBench(): Promise<string[]> {
  const started = performance.now();
  const load0 = loadavg();
  let net: SimulatedHosts | undefined;
  let relay: NetServer | undefined;
  let server: ServerProcess | undefined;
  let client: LambdaMicrovmsClient | undefined;
  const agents: Agent[] = [];
  const dirs: string[] = [];
  const live = new Set<string>();
  let cleaned: Promise<void> | undefined;

  const stopChild = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await within(30_000, "an agent to exit", exited).catch(async () => {
      child.kill("SIGKILL");
      await within(10_000, "an agent to exit after SIGKILL", exited).catch(() => undefined);
    });
  };
  const cleanup = () =>
    (cleaned ??= (async () => {
      if (client) {
        for (const id of live) await within(30_000, `TerminateMicrovm ${id}`, client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }))).catch(() => undefined);
        client.destroy();
      }
      await server?.kill().catch(() => undefined);
      for (const a of agents) await stopChild(a.child);
      relay?.close();
      net?.close();
      for (const a of agents) await freeSandboxes(a.dataDir).catch(() => undefined);
      for (const d of dirs) {
        await freeSandboxes(d).catch(() => undefined);
        rmSync(d, { recursive: true, force: true });
      }
    })());
  // Children die with the bench whatever ends it; on a signal the whole cluster is taken down first.
  const killChildren = () => {
    for (const a of agents) if (a.child.exitCode === null) a.child.kill("SIGKILL");
    if (server?.child.exitCode === null) server.child.kill("SIGKILL");
  };
  process.once("exit", killChildren);
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`bench cluster: ${sig}, cleaning up`);
    void within(120_000, "the cluster bench's clean-up", cleanup()).catch(() => undefined).finally(() => process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGHUP" ? 1 : 15)));
  };

  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const sig of signals) process.once(sig, onSignal);
  try {
    if (execFileSync("ip", ["-br", "addr"], { encoding: "utf8", timeout: 10_000 }).includes(` ${SUBNET}.`)) {
      throw new Error(`${SUBNET}.0/24 is already on an interface of this machine (another cluster bench running?)`);
    }
    net = simulatedHosts(AGENTS, SUBNET);
    const clusterDir = tempDir("lmvm-bench-cluster-");
    const objects = tempDir("lmvm-bench-objects-");
    const serverDir = tempDir("lmvm-bench-cluster-server-");
    dirs.push(clusterDir, objects, serverDir);
    const database = await freshDatabase();
    // The test PostgreSQL's own signal handlers exit at once; ours takes the cluster down first
    // and then exits, and PostgreSQL's exit handler stops it.
    for (const sig of signals) for (const l of process.listeners(sig)) if (l !== onSignal) process.off(sig, l as never);
    const relayed = await relayDatabase(database, net.bridgeIp);
    relay = relayed.relay;
    const agentDatabase = relayed.agentDatabase;

    const cli = async (args: string[]) => {
      const r = await lmvm(args, {}, 60_000);
      if (r.code !== 0) throw new Error(`lmvm ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      return r.stdout;
    };
    await cli(["cluster", "init", "--dir", clusterDir]);
    await cli(["cluster", "issue", "--dir", clusterDir, "--name", "server", "--role", "server", "--address", net.bridgeIp]);
    for (const [i, host] of net.hosts.entries()) {
      const dataDir = tempDir("lmvm-bench-agent-");
      dirs.push(dataDir);
      // nsenter, not `ip netns exec` (which mounts the namespace's sysfs over /sys and hides runsc's cgroups).
      const child = spawn("nsenter", [`--net=/run/netns/${host.namespace}`, "--", LMVM, "agent", "--database", agentDatabase, "--data-dir", dataDir,
        "--cluster-dir", clusterDir, "--listen", `${host.ip}:7700`, "--host-id", HOST_IDS[i]!, "--server", `${net.bridgeIp}:7710`, "--platform", "ptrace",
        "--object-store", `file://${objects}`], { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout!.on("data", (d) => (output += d));
      child.stderr!.on("data", (d) => (output += d));
      agents.push({ child, output: () => output, dataDir });
    }
    const hosts = async () => (JSON.parse(await cli(["hosts", "list", "--database", database])) as { Hosts: { HostId: string; State: string; Microvms: string[] }[] }).Hosts;
    await eventually(async () => {
      for (const a of agents) if (a.child.exitCode !== null) throw new Error(`an agent exited:\n${a.output()}`);
      const rows = await hosts();
      return rows.length === AGENTS && rows.every((h) => h.State === "ACTIVE") ? true : undefined;
    }, "the three agents to register", 120_000);

    server = await spawnServer(serverDir, { builds: true, args: ["--database", database, "--cluster-dir", clusterDir, "--cluster-listen", `${net.bridgeIp}:7710`,
      "--object-store", `file://${objects}`, "--platform", "ptrace"] });
    client = sdkClient(server.url, readCredentials(serverDir));
    const c = client;
    const ca = readFileSync(join(serverDir, "tls", "ca.pem"));
    const endpointPort = server.endpointPort;

    // The image, built once on the server's host (examples/hello, the Node quick-start app).
    const zip = join(serverDir, "hello.zip");
    writeFileSync(zip, zipExample("hello"));
    const spec = JSON.parse(readFileSync(join(import.meta.dirname, "..", "..", "examples", "hello", "microvm-image.json"), "utf8")) as Record<string, unknown>;
    const buildStarted = performance.now();
    const { imageArn } = await c.send(new CreateMicrovmImageCommand({
      ...spec, name: "bench-cluster", buildRoleArn: "arn:aws:iam::000000000000:role/MicroVMBuildRole", codeArtifact: { uri: `file://${zip}` },
    } as never));
    const image = await eventually(async () => {
      const i = await c.send(new GetMicrovmImageCommand({ imageIdentifier: "bench-cluster" }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, "the image build", 1_200_000);
    if (image.state !== "CREATED") {
      const log = await lmvm(["logs", "build", "bench-cluster", "1.0"], { LMVM_DATA_DIR: serverDir }, 60_000);
      throw new Error(`the bench image failed to build (${image.state}):\n${log.stdout}${log.stderr}`);
    }
    const buildMs = performance.now() - buildStarted;

    /** One GET through the endpoint proxy; true when the app answered 200. */
    const get = (id: string, token: string) =>
      new Promise<boolean>((resolve) => {
        const req = request({
          host: "127.0.0.1", port: endpointPort, path: "/", ca, servername: `${id}.${DOMAIN}`, agent: false, timeout: 5_000,
          headers: { host: `${id}.${DOMAIN}:${endpointPort}`, "x-aws-proxy-auth": token },
        }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode === 200));
        });
        req.on("error", () => resolve(false));
        req.on("timeout", () => req.destroy());
        req.end();
      });
    /** RunMicrovm, then its auth token, then GETs until the app answers; ms from the call to the answer. */
    const runOne = async (): Promise<{ id: string; ms: number }> => {
      const t0 = performance.now();
      const { microvmId } = await c.send(new RunMicrovmCommand({ imageIdentifier: imageArn!, ingressNetworkConnectors: [HTTP] }));
      const id = microvmId!;
      live.add(id);
      const token = (await c.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 30, allowedPorts: [{ port: 8080 }] as never })))
        .authToken!["X-aws-proxy-auth"]!;
      const deadline = Date.now() + ANSWER_MS;
      for (;;) {
        if (await get(id, token)) return { id, ms: performance.now() - t0 };
        if (Date.now() > deadline) throw new Error(`MicroVM ${id} never answered`);
        const s = (await c.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
        if (s === "TERMINATED" || s === "TERMINATING") throw new Error(`MicroVM ${id} went ${s}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const terminateAll = async () => {
      const ids = [...live];
      await Promise.all(ids.map((id) => c.send(new TerminateMicrovmCommand({ microvmIdentifier: id }))));
      for (const id of ids) {
        await eventually(async () => ((await c.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state === "TERMINATED" ? true : undefined), `${id} to terminate`, 120_000);
        live.delete(id);
      }
    };
    const use = async (k: number) => {
      for (const [i, id] of HOST_IDS.entries()) await cli(["hosts", i < k ? "undrain" : "drain", id, "--database", database]);
    };
    const round = async (k: number) => {
      await use(k);
      const t0 = performance.now();
      const runs = await Promise.all(Array.from({ length: N }, runOne));
      const wallMs = performance.now() - t0;
      const placed = await hosts();
      const spreadOver = new Set(runs.map((r) => placed.find((h) => h.Microvms.includes(r.id))?.HostId)).size;
      await terminateAll();
      return { latencies: runs.map((r) => r.ms), perSecond: N / (wallMs / 1000), hostsUsed: spreadOver };
    };

    // A warm-up round with all three, not counted: every agent fetches the image from the object store once.
    const warm = await round(AGENTS);
    const configs = [1, 2, 3];
    const results = new Map(configs.map((k) => [k, { medians: [] as number[], p90s: [] as number[], rates: [] as number[], used: [] as number[] }]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const k of configs) {
        const res = await round(k);
        const acc = results.get(k)!;
        acc.medians.push(median(res.latencies));
        acc.p90s.push(p90(res.latencies));
        acc.rates.push(res.perSecond);
        acc.used.push(res.hostsUsed);
      }
    }
    const load1 = loadavg();
    const base = results.get(1)!;
    const out = [
      `Cluster (issue 16): ${N} RunMicrovm calls at once through the SDK, time to each MicroVM's first answer through the endpoint proxy; ` +
        `${ROUNDS} rounds per configuration, alternating; median (min–max) of the rounds.`,
      `NOTE: one machine with ${cpus().length} CPUs: the agents share the same CPUs, so these figures measure the cluster's overhead and placement, not added capacity.`,
      `One lmvm server and ${AGENTS} lmvm agents (each a process of its own, each agent in its own network namespace, --platform ptrace), PostgreSQL store, file:// object store; ` +
        `k agents = the others drained. Image examples/hello built once (${(buildMs / 1000).toFixed(0)} s); warm-up round (not counted) used ${warm.hostsUsed} hosts.`,
    ];
    for (const k of configs) {
      const acc = results.get(k)!;
      const first = k === 1 ? undefined : base;
      out.push(`  ${k} agent${k > 1 ? "s" : ""} (each round's ${N} MicroVMs landed on ${[...new Set(acc.used)].join(" or ")} host(s)):`);
      out.push(`    latency median ${line(acc.medians, "ms", first?.medians)}`);
      out.push(`    latency p90    ${line(acc.p90s, "ms", first?.p90s)}`);
      out.push(`    throughput     ${line(acc.rates, "MicroVMs/s", first?.rates)}`);
    }
    if (configs.some((k) => k > 1 && Math.max(...results.get(k)!.used) < k)) {
      out.push("  Placement put a round's burst on fewer hosts than were active: it orders hosts by the free memory of their last heartbeat (every 2 s; " +
        "on one machine all agents report the same MemAvailable), so calls sent at once go to the same host until its own shortage() says no.");
    }
    out.push(`  load average ${load0.map((x) => x.toFixed(1)).join(" ")} at the start, ${load1.map((x) => x.toFixed(1)).join(" ")} at the end; ` +
      `the bench took ${((performance.now() - started) / 60_000).toFixed(1)} min.`);
    return out;
  } catch (err) {
    const logs = process.env.LMVM_BENCH_LOG_DIR;
    if (logs) {
      if (server) writeFileSync(join(logs, "bench-cluster-server.log"), server.output());
      for (const [i, a] of agents.entries()) writeFileSync(join(logs, `bench-cluster-agent-${i}.log`), a.output());
    }
    throw err;
  } finally {
    await cleanup();
    process.off("exit", killChildren);
    for (const sig of signals) process.off(sig, onSignal);
  }
}
