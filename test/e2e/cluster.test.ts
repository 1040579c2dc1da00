// Many hosts (issue 16) on one machine: each agent in a network namespace of
// its own joined by a bridge (test/support/cluster-hosts.ts), with its own
// data directory and runsc root, a throwaway PostgreSQL, the real `lmvm`
// CLI for the cluster CA, the agents and `lmvm hosts`.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { until, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { freshDatabase } from "../support/postgres.js";
import { LMVM, lmvm } from "../support/processes.js";
import { simulatedHosts, type SimulatedHosts } from "../support/cluster-hosts.js";

interface AgentProcess {
  child: ChildProcess;
  output: () => string;
  dataDir: string;
  hostId: string;
}

interface HostRow {
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
}

/** `POST /v1/host` to an agent with the given TLS material; resolves with the status, or rejects when TLS refuses. */
function callAgent(address: string, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<{ status: number; body: string }> {
  const [host, port] = address.split(":");
  return within(10_000, `a call to the agent at ${address}`, new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method: "POST", path: "/v1/host", ...tls, servername: undefined }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end("{}");
  }));
}

describe("cluster", () => {
  let net: SimulatedHosts;
  let clusterDir: string;
  let otherCa: string;
  let database: string;
  const agents: AgentProcess[] = [];
  const dirs: string[] = [];

  const hosts = async (): Promise<HostRow[]> => {
    const r = await lmvm(["hosts", "list", "--database", database], {}, 30_000);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { Hosts: HostRow[] }).Hosts;
  };

  function startAgent(i: number, hostId: string): AgentProcess {
    const host = net.hosts[i]!;
    const dataDir = tempDir("lmvm-agent-");
    dirs.push(dataDir);
    const child = spawn("ip", ["netns", "exec", host.namespace, LMVM, "agent", "--database", database, "--data-dir", dataDir, "--cluster-dir", clusterDir,
      "--listen", `${host.ip}:7700`, "--host-id", hostId, "--platform", "ptrace"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const agent = { child, output: () => output, dataDir, hostId };
    agents.push(agent);
    return agent;
  }

  async function stopAgent(a: AgentProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (a.child.exitCode !== null || a.child.signalCode !== null) return;
    const exited = new Promise((r) => a.child.once("exit", r));
    a.child.kill(signal);
    await within(30_000, `agent ${a.hostId} to exit`, exited);
  }

  before(async () => {
    net = simulatedHosts(2);
    clusterDir = tempDir("lmvm-cluster-");
    otherCa = tempDir("lmvm-other-ca-");
    dirs.push(clusterDir, otherCa);
    database = await freshDatabase();
  });

  after(async () => {
    for (const a of agents) await stopAgent(a).catch(() => stopAgent(a, "SIGKILL")).catch(() => undefined);
    net?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test("lmvm cluster init makes the CA; issue refuses bad input and makes node certificates", async () => {
    const init = await lmvm(["cluster", "init", "--dir", clusterDir], {}, 30_000);
    assert.equal(init.code, 0, init.stderr);
    assert.equal(JSON.parse(init.stdout).created, true);
    const again = await lmvm(["cluster", "init", "--dir", clusterDir], {}, 30_000);
    assert.equal(JSON.parse(again.stdout).created, false, "a second init keeps the CA every node trusts");
    const bad = await lmvm(["cluster", "issue", "--dir", clusterDir, "--name", "Bad_Name", "--role", "agent"], {}, 30_000);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /node name/);
    const role = await lmvm(["cluster", "issue", "--dir", clusterDir, "--name", "x", "--role", "boss"], {}, 30_000);
    assert.equal(role.code, 252);
    assert.match(role.stderr, /--role must be server or agent/);
    const server = await lmvm(["cluster", "issue", "--dir", clusterDir, "--name", "server", "--role", "server", "--address", "172.30.0.1"], {}, 30_000);
    assert.equal(server.code, 0, server.stderr);
    assert.match(readFileSync(join(clusterDir, "nodes", "server.pem"), "utf8"), /BEGIN CERTIFICATE/);
    assert.equal((await lmvm(["cluster", "init", "--dir", otherCa], {}, 30_000)).code, 0);
    assert.equal((await lmvm(["cluster", "issue", "--dir", otherCa, "--name", "server", "--role", "server"], {}, 30_000)).code, 0);
  });

  test("agents in their own namespaces register and heartbeat; lmvm hosts lists them", async () => {
    startAgent(0, "host-a");
    startAgent(1, "host-b");
    await until(60_000, "both agents registered and ACTIVE", async () => {
      const rows = await hosts();
      return rows.length === 2 && rows.every((h) => h.State === "ACTIVE");
    }, 500);
    const rows = await hosts();
    assert.deepEqual(rows.map((h) => [h.HostId, h.Address]), [["host-a", "172.30.0.10:7700"], ["host-b", "172.30.0.11:7700"]]);
    for (const h of rows) {
      assert.ok(h.MemoryMiB > 0 && h.FreeMemoryMiB > 0 && h.FreeMemoryMiB <= h.MemoryMiB, JSON.stringify(h));
      assert.ok(h.Cpus >= 1 && h.DiskMiB > 0);
      assert.equal(h.Platform, "ptrace");
      assert.match(h.RunscVersion, /runsc version/);
      assert.match(h.Architecture, /X86_64|ARM_64/);
    }
    // Heartbeats keep the age low: read twice, several heartbeat periods apart.
    await new Promise((r) => setTimeout(r, 5000));
    for (const h of await hosts()) assert.ok(h.HeartbeatAgeSeconds < 5, `host ${h.HostId}'s heartbeat is ${h.HeartbeatAgeSeconds} s old`);
  });

  test("the agent's RPC takes only the cluster's server certificates (mutual TLS)", async () => {
    const ca = readFileSync(join(clusterDir, "ca.pem"));
    const server = { ca, cert: readFileSync(join(clusterDir, "nodes", "server.pem")), key: readFileSync(join(clusterDir, "nodes", "server.key")) };
    const ok = await callAgent("172.30.0.10:7700", server);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).result.hostId, "host-a");
    // No client certificate: the handshake fails.
    await assert.rejects(callAgent("172.30.0.10:7700", { ca }));
    // A certificate of another CA: refused.
    await assert.rejects(callAgent("172.30.0.10:7700", { ca, cert: readFileSync(join(otherCa, "nodes", "server.pem")), key: readFileSync(join(otherCa, "nodes", "server.key")) }));
    // The agent's certificate is not trusted by a client that trusts another CA.
    await assert.rejects(callAgent("172.30.0.10:7700", { ca: readFileSync(join(otherCa, "ca.pem")), cert: server.cert, key: server.key }));
    // Another agent's certificate (the cluster's CA, role agent) may not call.
    const peer = await callAgent("172.30.0.10:7700", { ca, cert: readFileSync(join(clusterDir, "nodes", "host-b.pem")), key: readFileSync(join(clusterDir, "nodes", "host-b.key")) });
    assert.equal(peer.status, 403);
  });

  test("lmvm hosts drain stops placement on a host and says so; an unknown host is an error", async () => {
    const drained = await lmvm(["hosts", "drain", "host-b", "--database", database], {}, 30_000);
    assert.equal(drained.code, 0, drained.stderr);
    assert.equal(JSON.parse(drained.stdout).State, "DRAINING");
    const missing = await lmvm(["hosts", "drain", "host-zz", "--database", database], {}, 30_000);
    assert.equal(missing.code, 254);
    assert.match(missing.stderr, /No host 'host-zz'/);
    const row = (await hosts()).find((h) => h.HostId === "host-b")!;
    assert.equal(row.State, "DRAINING", "a heartbeat keeps a drained host draining");
    assert.equal((await lmvm(["hosts", "undrain", "host-b", "--database", database], {}, 30_000)).code, 0);
    assert.equal((await hosts()).find((h) => h.HostId === "host-b")!.State, "ACTIVE");
  });
});
