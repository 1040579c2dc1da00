// A whole cluster (issue 16) for tests, on this machine: a throwaway
// PostgreSQL with its TCP relay on the simulated hosts' bridge, a file://
// object store, the cluster's CA (`lmvm cluster init`), one `lmvm server` in
// cluster mode (its own data directory, builds on) and an `lmvm agent` per
// simulated host, each in its host's network namespace with its own data
// directory (and so its own runsc root) and host id (`host-a`, `host-b`, ...).
// Servers and agents are real processes, killed and started again by the
// tests (an agent restarted keeps its data directory and host id); close()
// stops them all and frees every sandbox, namespace and mount they left.
// LMVM_TEST_LOG_DIR=<dir> keeps their output there.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as h2Connect } from "node:http2";
import { request } from "node:https";
import type { Server as NetServer } from "node:net";
import { join } from "node:path";
import { Gvisor } from "../../src/runtime/index.js";
import { relayDatabase, simulatedHosts, type SimulatedHosts } from "./cluster-hosts.js";
import { until, within } from "./deadline.js";
import { tempDir } from "./platform.js";
import { freshDatabase } from "./postgres.js";
import { LMVM, lmvm, spawnServer, type ServerProcess } from "./processes.js";
import { freeSandboxes } from "./sandboxes.js";

/** A host's row as `lmvm hosts list` prints it. */
export interface HostRow {
  HostId: string;
  Address: string;
  State: string;
  StateReason?: string;
  MemoryMiB: number;
  FreeMemoryMiB: number;
  Cpus: number;
  DiskMiB: number;
  Architecture: string;
  RunscVersion: string;
  Platform: string;
  HeartbeatAgeSeconds: number;
  Microvms: string[];
}

export interface AgentNode {
  /** The simulated host it runs on (its index in `cluster.net.hosts`). */
  index: number;
  hostId: string;
  dataDir: string;
  child: ChildProcess;
  output: () => string;
}

/** Whether a child process is still running. */
export const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

/** The sandboxes (any status) of every runsc state root under a data directory (`<data-dir>/runsc/*`). */
export async function sandboxesUnder(dataDir: string): Promise<{ id: string; status: string }[]> {
  const roots = join(dataDir, "runsc");
  if (!existsSync(roots)) return [];
  const all: { id: string; status: string }[] = [];
  for (const root of readdirSync(roots)) all.push(...(await new Gvisor({ stateRoot: join(roots, root) }).list()));
  return all;
}

export class TestCluster {
  readonly net: SimulatedHosts;
  readonly subnet: string;
  readonly clusterDir = tempDir("lmvm-cluster-");
  readonly objects = tempDir("lmvm-objects-");
  readonly serverDir = tempDir("lmvm-cluster-server-");
  /** The database as the server and the CLI reach it (the test PostgreSQL's Unix socket). */
  database = "";
  /** The same database as agents reach it: over TCP across the bridge, so a partition cuts them off it too. */
  agentDatabase = "";
  server: ServerProcess | undefined;
  /** The agent now running (or last run) on each simulated host, by index. */
  readonly agents: AgentNode[] = [];
  /** Every server and agent process started, for their logs. */
  private readonly servers: ServerProcess[] = [];
  private readonly started: AgentNode[] = [];
  private relay: NetServer | undefined;

  private constructor(subnet: string, hosts: number) {
    this.subnet = subnet;
    this.net = simulatedHosts(hosts, subnet);
  }

  /** Makes the cluster and starts its server and one agent per host; resolves once every host is ACTIVE. */
  static async start(opts: { subnet: string; hosts: number }): Promise<TestCluster> {
    const c = new TestCluster(opts.subnet, opts.hosts);
    try {
      c.database = await freshDatabase();
      ({ relay: c.relay, agentDatabase: c.agentDatabase } = await relayDatabase(c.database, c.net.bridgeIp));
      const init = await lmvm(["cluster", "init", "--dir", c.clusterDir], {}, 30_000);
      if (init.code !== 0) throw new Error(`lmvm cluster init failed: ${init.stderr}`);
      await c.startServer();
      for (let i = 0; i < opts.hosts; i++) c.startAgent(i);
      await c.untilActive(60_000);
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  hostId(index: number): string {
    return `host-${"abcdefghij"[index]}`;
  }

  /** `lmvm server` in cluster mode on the server's data directory (again, after a kill: it recovers first). */
  async startServer(): Promise<ServerProcess> {
    this.server = await spawnServer(this.serverDir, {
      builds: true,
      args: ["--database", this.database, "--cluster-dir", this.clusterDir, "--cluster-listen", `${this.subnet}.1:7710`, "--object-store", `file://${this.objects}`, "--platform", "ptrace"],
    });
    this.servers.push(this.server);
    return this.server;
  }

  /** `lmvm agent` on host `index`, with that host's data directory and id (made on first start, kept after). */
  startAgent(index: number): AgentNode {
    const host = this.net.hosts[index]!;
    const dataDir = this.agents[index]?.dataDir ?? tempDir("lmvm-agent-");
    const hostId = this.hostId(index);
    // nsenter, not `ip netns exec`: the latter mounts a sysfs of the namespace over /sys, which hides the cgroup tree runsc needs.
    const child = spawn("nsenter", [`--net=/run/netns/${host.namespace}`, "--", LMVM, "agent", "--database", this.agentDatabase, "--data-dir", dataDir, "--cluster-dir", this.clusterDir,
      "--listen", `${host.ip}:7700`, "--host-id", hostId, "--server", `${this.subnet}.1:7710`, "--platform", "ptrace", "--object-store", `file://${this.objects}`], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const agent = { index, hostId, dataDir, child, output: () => output };
    this.agents[index] = agent;
    this.started.push(agent);
    return agent;
  }

  /** Signals host `index`'s agent and waits for it to exit (SIGKILL: a crash; its sandboxes outlive it). */
  async stopAgent(index: number, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const a = this.agents[index];
    if (!a || !running(a.child)) return;
    const exited = new Promise((r) => a.child.once("exit", r));
    a.child.kill(signal);
    await within(30_000, `agent ${a.hostId} to exit after ${signal}`, exited);
  }

  /** The hosts' rows (`lmvm hosts list`). */
  async hosts(): Promise<HostRow[]> {
    const r = await lmvm(["hosts", "list", "--database", this.database], {}, 30_000);
    if (r.code !== 0) throw new Error(`lmvm hosts list failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { Hosts: HostRow[] }).Hosts;
  }

  /** `lmvm hosts drain|undrain <host>`: no new MicroVMs there, or again. */
  async drain(index: number, drained: boolean): Promise<void> {
    const r = await lmvm(["hosts", drained ? "drain" : "undrain", this.hostId(index), "--database", this.database], {}, 30_000);
    if (r.code !== 0) throw new Error(`lmvm hosts ${drained ? "drain" : "undrain"} ${this.hostId(index)} failed: ${r.stderr}`);
  }

  /** Host `index`'s agent's own account of itself (`POST /v1/host` with the server's certificate): whether it serves now. */
  agentStatus(index: number): Promise<{ hostId: string; state: string; serving: boolean }> {
    const tls = { ca: readFileSync(join(this.clusterDir, "ca.pem")), cert: readFileSync(join(this.clusterDir, "nodes", "server.pem")), key: readFileSync(join(this.clusterDir, "nodes", "server.key")) };
    return within(10_000, `a call to ${this.hostId(index)}'s agent`, new Promise((resolve, reject) => {
      const req = request({ host: this.net.hosts[index]!.ip, port: 7700, method: "POST", path: "/v1/host", agent: false, ...tls }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => (res.statusCode === 200 ? resolve((JSON.parse(body) as { result: { hostId: string; state: string; serving: boolean } }).result) : reject(new Error(`the agent answered ${res.statusCode}: ${body}`))));
      });
      req.on("error", reject);
      req.end("{}");
    }));
  }

  /** Waits until every host is registered and ACTIVE. */
  async untilActive(ms: number): Promise<void> {
    await until(ms, `all ${this.net.hosts.length} hosts registered and ACTIVE`, async () => {
      const rows = await this.hosts();
      return rows.length === this.net.hosts.length && rows.every((h) => h.State === "ACTIVE");
    }, 250);
  }

  async close(): Promise<void> {
    const keep = process.env.LMVM_TEST_LOG_DIR;
    if (keep) {
      this.servers.forEach((s, i) => writeFileSync(join(keep, `cluster-server-${i}.log`), s.output()));
      for (const a of this.started) writeFileSync(join(keep, `cluster-${a.hostId}-${a.child.pid}.log`), a.output());
    }
    await this.server?.kill().catch(() => this.server?.kill("SIGKILL")).catch(() => undefined);
    for (const a of this.agents) await this.stopAgent(a.index).catch(() => this.stopAgent(a.index, "SIGKILL")).catch(() => undefined);
    this.relay?.close();
    this.net.close();
    for (const a of this.agents) await freeSandboxes(a.dataDir).catch(() => undefined);
    await freeSandboxes(this.serverDir).catch(() => undefined);
    for (const d of [this.clusterDir, this.objects, this.serverDir, ...this.agents.map((a) => a.dataDir)]) rmSync(d, { recursive: true, force: true });
  }
}

/** A GET through an endpoint proxy on 127.0.0.1 (HTTPS, the MicroVM's name as SNI and Host, its token), within a deadline: the status and body. */
export function endpointGet(o: { port: number; ca: Buffer; id: string; domain: string; token: string; path?: string; deadlineMs?: number }): Promise<{ status: number; body: string }> {
  const path = o.path ?? "/";
  return within(o.deadlineMs ?? 60_000, `GET ${path} on ${o.id} through the endpoint proxy at port ${o.port}`, new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1", port: o.port, path, ca: o.ca, servername: `${o.id}.${o.domain}`, agent: false,
      headers: { host: `${o.id}.${o.domain}:${o.port}`, "x-aws-proxy-auth": o.token },
    }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  }));
}

/** The same GET / over HTTP/2 (ALPN h2), with extra request headers: the status and body. */
export function endpointH2Get(o: { port: number; ca: Buffer; id: string; domain: string; token: string; headers?: Record<string, string>; deadlineMs?: number }): Promise<{ status: number; body: string }> {
  return within(o.deadlineMs ?? 60_000, `an HTTP/2 GET on ${o.id} through the endpoint proxy at port ${o.port}`, new Promise((resolve, reject) => {
    const session = h2Connect(`https://127.0.0.1:${o.port}`, { ca: o.ca, servername: `${o.id}.${o.domain}` });
    session.on("error", reject);
    const req = session.request({ ":path": "/", ":authority": `${o.id}.${o.domain}:${o.port}`, "x-aws-proxy-auth": o.token, ...o.headers });
    let status = 0;
    let body = "";
    req.setEncoding("utf8");
    req.on("response", (h) => (status = Number(h[":status"])));
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      session.close();
      resolve({ status, body });
    });
    req.on("error", (err) => {
      session.destroy();
      reject(err);
    });
    req.end();
  }));
}
