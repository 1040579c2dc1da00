// Many hosts (issue 16) on one machine: each agent in a network namespace of
// its own joined by a bridge (test/support/cluster-hosts.ts), with its own
// data directory and runsc root, a throwaway PostgreSQL, the real `lmvm`
// CLI for the cluster CA, the agents and `lmvm hosts`.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { Gvisor } from "../../src/runtime/gvisor.js";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { until, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { freshDatabase } from "../support/postgres.js";
import { LMVM, lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { writeFileSync } from "node:fs";
import { BASE_IMAGE_CACHE, makeZip, zipExample } from "../support/artifacts.js";
import { eventually } from "../support/platform.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { relayDatabase, simulatedHosts, type SimulatedHosts } from "../support/cluster-hosts.js";
import { endpointGet, endpointH2Get, type HostRow } from "../support/cluster-nodes.js";
import type { Server as NetServer } from "node:net";

interface AgentProcess {
  child: ChildProcess;
  output: () => string;
  dataDir: string;
  hostId: string;
}

/** The bridge's /24; LMVM_TEST_CLUSTER_SUBNET (e.g. 172.30.1) lets two copies of this test run at once. */
const SUBNET = process.env.LMVM_TEST_CLUSTER_SUBNET ?? "172.30.0";

const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
/** The simulated hosts' agents, in the order of net.hosts. */
const HOST_IDS = ["host-a", "host-b", "host-c"];
const DOMAIN = "microvm.localhost";
const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";

/** Run in a Python MicroVM: its execution role's credentials from the instance-metadata service (IMDSv2), printed as "<role> <Code> <key prefix> <has token>". */
const PY_METADATA_CREDENTIALS = [
  "import json, urllib.request as u",
  "b = 'http://169.254.169.254/latest/'",
  "t = u.urlopen(u.Request(b + 'api/token', method='PUT', headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'}), timeout=10).read().decode()",
  "h = {'X-aws-ec2-metadata-token': t}",
  "name = u.urlopen(u.Request(b + 'meta-data/iam/security-credentials/', headers=h), timeout=10).read().decode().strip()",
  "d = json.loads(u.urlopen(u.Request(b + 'meta-data/iam/security-credentials/' + name, headers=h), timeout=10).read())",
  "print(name, d['Code'], d['AccessKeyId'][:4], len(d['Token']) > 0)",
].join("\n");

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

describe("cluster", { timeout: 1_500_000 }, () => {
  let net: SimulatedHosts;
  let clusterDir: string;
  let otherCa: string;
  let database: string;
  /** The same database as agents reach it: over TCP across the bridge, so a partition cuts them off it too. */
  let agentDatabase: string;
  let relay: NetServer | undefined;
  let objects: string;
  let server: ServerProcess | undefined;
  let serverDir: string;
  const agents: AgentProcess[] = [];
  const dirs: string[] = [];

  const hosts = async (): Promise<HostRow[]> => {
    const r = await lmvm(["hosts", "list", "--database", database], {}, 30_000);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { Hosts: HostRow[] }).Hosts;
  };

  function startAgent(i: number, hostId: string): AgentProcess {
    const dataDir = tempDir("lmvm-agent-");
    dirs.push(dataDir);
    return startAgentOn(i, hostId, dataDir);
  }

  function startAgentOn(i: number, hostId: string, dataDir: string): AgentProcess {
    const host = net.hosts[i]!;
    // nsenter, not `ip netns exec`: the latter mounts a sysfs of the namespace over /sys, which hides the cgroup tree runsc needs.
    const child = spawn("nsenter", [`--net=/run/netns/${host.namespace}`, "--", LMVM, "agent", "--database", agentDatabase, "--data-dir", dataDir, "--cluster-dir", clusterDir,
      "--listen", `${host.ip}:7700`, "--host-id", hostId, "--server", `${SUBNET}.1:7710`, "--platform", "ptrace", "--object-store", `file://${objects}`,
      "--base-image-cache", BASE_IMAGE_CACHE], { stdio: ["ignore", "pipe", "pipe"] });
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
    net = simulatedHosts(3, SUBNET);
    clusterDir = tempDir("lmvm-cluster-");
    otherCa = tempDir("lmvm-other-ca-");
    dirs.push(clusterDir, otherCa);
    objects = tempDir("lmvm-objects-");
    serverDir = tempDir("lmvm-cluster-server-");
    dirs.push(objects, serverDir);
    database = await freshDatabase();
    ({ relay, agentDatabase } = await relayDatabase(database, net.bridgeIp));
  });

  after(async () => {
    // LMVM_TEST_LOG_DIR keeps the server's and agents' output for a look after the run.
    const keep = process.env.LMVM_TEST_LOG_DIR;
    if (keep) {
      if (server) writeFileSync(join(keep, "cluster-server.log"), server.output());
      for (const a of agents) writeFileSync(join(keep, `cluster-${a.hostId}-${a.child.pid}.log`), a.output());
    }
    await server?.kill().catch(() => undefined);
    for (const a of agents) await stopAgent(a).catch(() => stopAgent(a, "SIGKILL")).catch(() => undefined);
    relay?.close();
    net?.close();
    for (const a of agents) await freeSandboxes(a.dataDir).catch(() => undefined);
    if (serverDir) await freeSandboxes(serverDir).catch(() => undefined);
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
    const server = await lmvm(["cluster", "issue", "--dir", clusterDir, "--name", "server", "--role", "server", "--address", `${SUBNET}.1`], {}, 30_000);
    assert.equal(server.code, 0, server.stderr);
    assert.match(readFileSync(join(clusterDir, "nodes", "server.pem"), "utf8"), /BEGIN CERTIFICATE/);
    assert.equal((await lmvm(["cluster", "init", "--dir", otherCa], {}, 30_000)).code, 0);
    assert.equal((await lmvm(["cluster", "issue", "--dir", otherCa, "--name", "server", "--role", "server"], {}, 30_000)).code, 0);
  });

  test("agents in their own namespaces register and heartbeat; lmvm hosts lists them", async () => {
    startAgent(0, "host-a");
    startAgent(1, "host-b");
    startAgent(2, "host-c");
    await until(180_000, "the three agents registered and ACTIVE", async () => {
      const rows = await hosts();
      return rows.length === 3 && rows.every((h) => h.State === "ACTIVE");
    }, 500);
    const rows = await hosts();
    assert.deepEqual(rows.map((h) => [h.HostId, h.Address]), [["host-a", `${SUBNET}.10:7700`], ["host-b", `${SUBNET}.11:7700`], ["host-c", `${SUBNET}.12:7700`]]);
    for (const h of rows) {
      assert.ok(h.MemoryMiB > 0 && h.FreeMemoryMiB > 0 && h.FreeMemoryMiB <= h.MemoryMiB, JSON.stringify(h));
      assert.ok(h.Cpus >= 1 && h.DiskMiB > 0);
      assert.equal(h.Platform, "ptrace");
      assert.match(h.RunscVersion, /runsc version/);
      assert.match(h.Architecture, /X86_64|ARM_64/);
    }
    const table = await lmvm(["hosts", "list", "--database", database, "--output", "table"], {}, 30_000);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /host-a[\s\S]*host-b[\s\S]*host-c/);
    const usage = await lmvm(["agent", "--database", database, "--listen", "127.0.0.1:7700"], {}, 30_000);
    assert.equal(usage.code, 252);
    assert.match(usage.stderr, /--cluster-dir/);
    // A wildcard cluster listener names no address agents could check the server's certificate against.
    const wildcard = await lmvm(["server", "--data-dir", join(clusterDir, "unused"), "--database", database, "--cluster-dir", clusterDir, "--cluster-listen", "0.0.0.0:7710"], {}, 30_000);
    assert.equal(wildcard.code, 252, wildcard.stderr);
    assert.match(wildcard.stderr, /--cluster-listen needs the address agents reach/);
    // Heartbeats keep the age low: read twice, several heartbeat periods apart.
    await new Promise((r) => setTimeout(r, 5000));
    for (const h of await hosts()) assert.ok(h.HeartbeatAgeSeconds < 5, `host ${h.HostId}'s heartbeat is ${h.HeartbeatAgeSeconds} s old`);
  });

  test("the agent's RPC takes only the cluster's server certificates (mutual TLS)", async () => {
    const ca = readFileSync(join(clusterDir, "ca.pem"));
    const server = { ca, cert: readFileSync(join(clusterDir, "nodes", "server.pem")), key: readFileSync(join(clusterDir, "nodes", "server.key")) };
    const ok = await callAgent(`${SUBNET}.10:7700`, server);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).result.hostId, "host-a");
    // No client certificate: the handshake fails.
    await assert.rejects(callAgent(`${SUBNET}.10:7700`, { ca }));
    // A certificate of another CA: refused.
    await assert.rejects(callAgent(`${SUBNET}.10:7700`, { ca, cert: readFileSync(join(otherCa, "nodes", "server.pem")), key: readFileSync(join(otherCa, "nodes", "server.key")) }));
    // The agent's certificate is not trusted by a client that trusts another CA.
    await assert.rejects(callAgent(`${SUBNET}.10:7700`, { ca: readFileSync(join(otherCa, "ca.pem")), cert: server.cert, key: server.key }));
    // Another agent's certificate (the cluster's CA, role agent) may not call.
    const peer = await callAgent(`${SUBNET}.10:7700`, { ca, cert: readFileSync(join(clusterDir, "nodes", "host-b.pem")), key: readFileSync(join(clusterDir, "nodes", "host-b.key")) });
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

  describe("MicroVMs on agents", () => {
    let env: Record<string, string>;
    let ca: Buffer;
    const arns = new Map<string, string>();
    const cli = async (args: string[]): Promise<string> => {
      const r = await lmvm(args, env);
      assert.equal(r.code, 0, `lmvm ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      return r.stdout.trim();
    };
    const stateOf = async (id: string) => JSON.parse(await cli(["get-microvm", "--microvm-identifier", id])) as { state: string; stateReason?: string };
    const reach = (id: string, want: string, ms = 180_000) =>
      eventually(async () => {
        const s = await stateOf(id);
        assert.ok(s.state === want || !["TERMINATED", "FAILED"].includes(s.state), `${id} went ${s.state} (${s.stateReason}) while waiting for ${want}`);
        return s.state === want ? s : undefined;
      }, `${id} to be ${want}`, ms);
    const hostOf = async (id: string) => (await hosts()).find((h) => h.Microvms.includes(id))?.HostId;
    const get = (id: string, token: string, path: string): Promise<{ status: number; body: string }> =>
      endpointGet({ port: server!.endpointPort, ca, id, domain: DOMAIN, token, path });
    /** An HTTP/2 request (TLS, ALPN h2) to the endpoint proxy. */
    const h2get = (id: string, token: string, extra: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
      endpointH2Get({ port: server!.endpointPort, ca, id, domain: DOMAIN, token, headers: extra });
    const requests = async (id: string, token: string): Promise<number> => {
      const r = await get(id, token, "/");
      assert.equal(r.status, 200, `GET / on ${id}: ${r.status} ${r.body}`);
      return (JSON.parse(r.body) as { requests: number }).requests;
    };
    const token = (id: string) => cli(["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080}]', "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"]);
    const run = async (app: string, extra: string[] = []) => {
      const id = await cli(["run-microvm", "--image-identifier", arns.get(app)!, ...extra, "--query", "microvmId", "--output", "text"]);
      await reach(id, "RUNNING");
      return id;
    };

    before(async () => {
      server = await spawnServer(serverDir, { builds: true, args: ["--database", database, "--cluster-dir", clusterDir, "--cluster-listen", `${SUBNET}.1:7710`, "--object-store", `file://${objects}`, "--platform", "ptrace"] });
      env = { LMVM_DATA_DIR: serverDir };
      ca = readFileSync(join(serverDir, "tls", "ca.pem"));
      // Each image is built once, both at once, each on an agent.
      await Promise.all(["python", "hello"].map(async (name) => {
        const zip = join(serverDir, `${name}.zip`);
        writeFileSync(zip, zipExample(name));
        const arn = await cli(["create-microvm-image", "--name", `cluster-${name}`, "--build-role-arn", ROLE, "--code-artifact", JSON.stringify({ uri: `file://${zip}` }),
          "--cli-input-json", `file://${join(import.meta.dirname, "..", "..", "..", "examples", name, "microvm-image.json")}`, "--query", "imageArn", "--output", "text"]);
        const state = await eventually(async () => {
          const s = await cli(["get-microvm-image", "--image-identifier", `cluster-${name}`, "--query", "state", "--output", "text"]);
          return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
        }, `cluster-${name} to build`, 1_200_000);
        if (state !== "CREATED") assert.fail(`cluster-${name} did not build (${state}):\n${(await lmvm(["logs", "build", `cluster-${name}`, "1.0"], env)).stdout}`);
        arns.set(name, arn);
      }));
    });

    /** The host a build ran on last, from the line the server writes at the top of each placement in its log. */
    const buildHost = (log: string): string | undefined => [...log.matchAll(/==> Building on host (host-[a-z]) \(([0-9.]+)\)/g)].at(-1)?.[1];

    test("the two images (Python and Node) were built on agents, on different hosts, and lmvm logs build shows the agents' output", async () => {
      const on: string[] = [];
      for (const name of ["python", "hello"]) {
        const r = await lmvm(["logs", "build", `cluster-${name}`, "1.0"], env);
        assert.equal(r.code, 0, r.stderr);
        const m = /==> Building on host (host-[a-z]) \(([0-9.]+)\)/.exec(r.stdout);
        assert.ok(m, `the build log names its host:\n${r.stdout}`);
        assert.equal(m[2], `${SUBNET}.${10 + HOST_IDS.indexOf(m[1]!)}`, "with the host's address");
        // What the agent's builder wrote, in order: its steps, buildah's own output, the snapshot, the end.
        assert.match(r.stdout, /==> Building on host[\s\S]*==> Build [0-9a-f-]+ of [\s\S]*==> Fetching code artifact file:\/\/[\s\S]*STEP 1\/\d+: FROM[\s\S]*==> Snapshotting the initialised app[\s\S]*==> Done: root filesystem of \d+ bytes/, r.stdout);
        const agent = agents.find((a) => a.hostId === m[1])!;
        assert.match(agent.output(), /"msg":"build done"/, `host ${m[1]}'s agent ran a build`);
        on.push(m[1]!);
      }
      assert.notEqual(on[0], on[1], "builds placed at the same time went to different hosts");
      // The server built nothing itself: no buildah store or build scratch space in its data directory.
      assert.ok(!existsSync(join(serverDir, "buildah")) || readdirSync(join(serverDir, "buildah")).length === 0, "no buildah store on the server");
    });

    test("a build whose agent is killed (kill -9) mid-build is placed again on another host and succeeds; the agent back does not resume it", async () => {
      // The Node app with a slow RUN step: the kill comes while it sleeps.
      const zip = join(serverDir, "slow.zip");
      const dockerfile = readFileSync(join(import.meta.dirname, "..", "..", "..", "examples", "hello", "Dockerfile"), "utf8").replace("WORKDIR /app", "WORKDIR /app\nRUN sleep 45");
      const serverJs = readFileSync(join(import.meta.dirname, "..", "..", "..", "examples", "hello", "server.js"), "utf8");
      writeFileSync(zip, makeZip([{ name: "Dockerfile", content: dockerfile }, { name: "server.js", content: serverJs }]));
      const arn = await cli(["create-microvm-image", "--name", "cluster-slow", "--build-role-arn", ROLE, "--code-artifact", JSON.stringify({ uri: `file://${zip}` }),
        "--cli-input-json", `file://${join(import.meta.dirname, "..", "..", "..", "examples", "hello", "microvm-image.json")}`, "--query", "imageArn", "--output", "text"]);
      const logOf = async () => (await lmvm(["logs", "build", "cluster-slow", "1.0"], env)).stdout;
      const first = await eventually(async () => {
        const log = await logOf();
        return /RUN sleep 45/.test(log) ? buildHost(log) : undefined;
      }, "the slow build's RUN step to start on an agent", 300_000);
      assert.ok(first && HOST_IDS.includes(first), `the build runs on a host: ${first}`);
      const victim = agents.find((a) => a.hostId === first && a.child.exitCode === null && a.child.signalCode === null)!;
      await stopAgent(victim, "SIGKILL");
      const state = await eventually(async () => {
        const st = await cli(["get-microvm-image", "--image-identifier", "cluster-slow", "--query", "state", "--output", "text"]);
        return st === "CREATED" || st === "CREATE_FAILED" ? st : undefined;
      }, "the slow build to end", 600_000);
      const log = await logOf();
      assert.equal(state, "CREATED", log);
      assert.match(log, new RegExp(`Lost host ${first} during the build[\\s\\S]*Host ${first} no longer runs the build: building again`), log);
      const second = buildHost(log);
      assert.ok(second && second !== first, `built again on another host than ${first}: ${second}`);
      assert.equal((await hosts()).find((h) => h.HostId === first)!.State, "LOST");
      // The agent back on the same data directory clears what the build left and does not run it again.
      const back = startAgentOn(HOST_IDS.indexOf(first!), first!, victim.dataDir);
      await until(180_000, `host ${first} ACTIVE again`, async () => (await hosts()).find((h) => h.HostId === first)!.State === "ACTIVE", 500);
      assert.doesNotMatch(back.output(), /"msg":"build started"/, "the agent back runs no build");
      const scratch = join(back.dataDir, "builds");
      assert.ok(!existsSync(scratch) || readdirSync(scratch).length === 0, "the killed build's scratch space is gone");
      // A MicroVM of the image built on the second host runs (its image from the object store wherever it is placed).
      const id = await cli(["run-microvm", "--image-identifier", arn, "--ingress-network-connectors", HTTP, "--query", "microvmId", "--output", "text"]);
      await reach(id, "RUNNING");
      assert.ok(await requests(id, await token(id)) >= 1);
      await cli(["terminate-microvm", "--microvm-identifier", id]);
      await reach(id, "TERMINATED");
      await cli(["delete-microvm-image", "--image-identifier", arn]);
    });

    test("MicroVMs placed one after another spread over the three hosts", async () => {
      // Placement ranks by each host's last heartbeat's free memory less what it was promised since; the simulated hosts share one
      // machine, whose free memory other work moves between heartbeats by more than one MicroVM's: so up to six runs, not exactly three.
      const ids: string[] = [];
      const on = new Set<string | undefined>();
      for (let i = 0; i < 6 && on.size < 3; i++) {
        const id = await run(i % 2 ? "python" : "hello");
        ids.push(id);
        on.add(await hostOf(id));
      }
      assert.deepEqual([...on].sort(), HOST_IDS, `MicroVMs on every host: ${ids.length} runs went to ${[...on].join(", ")}`);
      for (const id of ids) {
        await cli(["terminate-microvm", "--microvm-identifier", id]);
        await reach(id, "TERMINATED");
      }
    });

    test("MicroVMs (Python and Node) are placed on both hosts and their endpoints answer through the server", async () => {
      const py = await run("python", ["--ingress-network-connectors", HTTP, SHELL]);
      const first = await hostOf(py);
      assert.ok(first && HOST_IDS.includes(first), `the Python MicroVM's lease names a host: ${first}`);
      // A drained host takes nothing new: the Node MicroVM goes to another one.
      assert.equal((await lmvm(["hosts", "drain", first, "--database", database], {}, 30_000)).code, 0);
      const node = await run("hello", ["--ingress-network-connectors", HTTP, SHELL]);
      const second = await hostOf(node);
      assert.ok(second && second !== first, `placed on a host that is not draining, not ${first}: ${second}`);
      assert.equal((await lmvm(["hosts", "undrain", first, "--database", database], {}, 30_000)).code, 0);
      for (const id of [py, node]) {
        const t = await token(id);
        const a = await requests(id, t);
        assert.equal(await requests(id, t), a + 1, `${id}'s app counts its requests: the same sandbox answers`);
        // HTTP/2 from the client reaches the app (HTTP/1.1) through the agent's tunnel.
        const h2 = await h2get(id, t);
        assert.equal(h2.status, 200, `HTTP/2 GET on ${id}: ${h2.body}`);
        assert.equal((JSON.parse(h2.body) as { requests: number }).requests, a + 2);
        // Cleartext HTTP/2 to an app that speaks only HTTP/1.1 (X-aws-proxy-force-h2): a 502 that says so, and the server lives on.
        const forced = await h2get(id, t, { "x-aws-proxy-force-h2": "true" });
        assert.equal(forced.status, 502, forced.body);
        assert.match(forced.body, /did not answer over HTTP\/2/);
        assert.equal(await requests(id, t), a + 3, "the server still proxies after the failed HTTP/2 exchange");
      }
      // Processes in them (lmvm exec) go through their host's agent too.
      const pyExec = await lmvm(["exec", py, "--", "python3", "-c", "import sys; print(6 * 7); print('to stderr', file=sys.stderr); sys.exit(3)"], env);
      assert.equal(pyExec.stdout, "42\n");
      assert.match(pyExec.stderr, /to stderr/);
      assert.equal(pyExec.code, 3, "the exit status comes back");
      const nodeExec = await lmvm(["exec", node, "--", "node", "-e", "console.log(process.argv.length, require('os').hostname().length > 0)"], env);
      assert.equal(nodeExec.code, 0, nodeExec.stderr);
      assert.equal(nodeExec.stdout, "1 true\n");
      await cli(["terminate-microvm", "--microvm-identifier", py]);
      await reach(py, "TERMINATED");
      assert.equal(await hostOf(py), undefined, "a terminated MicroVM holds no lease");
      await cli(["terminate-microvm", "--microvm-identifier", node]);
      await reach(node, "TERMINATED");
    });

    test("a warm pool on the hosts: RunMicrovm takes an agent's paused clone, made for the MicroVM's id, and its endpoint answers", async () => {
      const arn = arns.get("hello")!;
      const unclaimed = async (a: AgentProcess) => {
        const vms = join(a.dataDir, "microvms");
        const claimed = new Set((existsSync(vms) ? readdirSync(vms) : []).map((id) => {
          const f = join(vms, id, "sandbox.json");
          return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as { sandboxId?: string }).sandboxId : undefined;
        }));
        return (await new Gvisor({ stateRoot: join(a.dataDir, "runsc", "microvms") }).list()).filter((s) => s.id.startsWith("pool-") && !claimed.has(s.id) && s.status === "paused");
      };
      await cli(["tag-resource", "--resource", arn, "--tags", "lmvm:warm-pool=1"]);
      try {
        // The server sends the pool's size to every host; each agent makes and pauses its clone.
        await until(300_000, "a paused clone on each host", async () => (await Promise.all(agents.filter((a) => a.child.exitCode === null).map(unclaimed))).every((l) => l.length === 1));
        const id = await run("hello", ["--ingress-network-connectors", HTTP, SHELL]);
        const on = agents.find((a) => a.child.exitCode === null && existsSync(join(a.dataDir, "microvms", id, "sandbox.json")))!;
        assert.ok(on, `${id} has a sandbox record on one of the hosts`);
        assert.equal(await hostOf(id), on.hostId, "its lease names the host whose clone it took");
        const record = JSON.parse(readFileSync(join(on.dataDir, "microvms", id, "sandbox.json"), "utf8")) as { sandboxId: string };
        assert.match(record.sandboxId, /^pool-/, "the MicroVM's sandbox is the host's warm clone, not a new restore");
        const t = await token(id);
        const a = await requests(id, t);
        assert.equal(await requests(id, t), a + 1, "the claimed clone's app answers through the server");
        const hostname = await lmvm(["exec", id, "--", "node", "-e", "console.log(require('os').hostname())"], env);
        assert.equal(hostname.stdout, `${id}\n`, `the clone was made for this MicroVM's id: its hostname is the id (${hostname.stderr})`);
        await cli(["terminate-microvm", "--microvm-identifier", id]);
        await reach(id, "TERMINATED");
      } finally {
        await cli(["untag-resource", "--resource", arn, "--tag-keys", "lmvm:warm-pool"]);
      }
      // Without the tag the hosts destroy their clones.
      await until(120_000, "the hosts' clones to go", async () => (await Promise.all(agents.filter((a) => a.child.exitCode === null).map(unclaimed))).every((l) => l.length === 0));
    });

    test("a MicroVM suspended on one host resumes on the other with its state (the checkpoint through the object store)", async () => {
      const id = await run("python");
      const t = await token(id);
      const before = await requests(id, t);
      const from = (await hostOf(id))!;
      await cli(["suspend-microvm", "--microvm-identifier", id]);
      await reach(id, "SUSPENDED");
      assert.equal((await lmvm(["hosts", "drain", from, "--database", database], {}, 30_000)).code, 0);
      await cli(["resume-microvm", "--microvm-identifier", id]);
      await reach(id, "RUNNING");
      const to = await hostOf(id);
      assert.ok(to && to !== from, `resumed on another host than ${from}: ${to}`);
      assert.equal(await requests(id, t), before + 1, "the app's memory came along: its counter goes on");
      assert.equal((await lmvm(["hosts", "undrain", from, "--database", database], {}, 30_000)).code, 0);
      await cli(["terminate-microvm", "--microvm-identifier", id]);
      await reach(id, "TERMINATED");
    });

    test("MicroVMs on agents get their execution role's credentials from the instance-metadata service (Python and Node)", async () => {
      const trust = JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" }] });
      await cli(["iam", "create-role", "--role-name", "cluster-exec", "--assume-role-policy-document", trust]);
      const role = "arn:aws:iam::000000000000:role/cluster-exec";
      const py = await run("python", ["--ingress-network-connectors", HTTP, SHELL, "--execution-role-arn", role]);
      const node = await run("hello", ["--ingress-network-connectors", HTTP, SHELL, "--execution-role-arn", role]);
      const p = await lmvm(["exec", py, "--", "python3", "-c", PY_METADATA_CREDENTIALS], env);
      assert.equal(p.code, 0, p.stderr);
      assert.equal(p.stdout, "execution_role Success ASIA True\n");
      const nodeScript = `(async () => {
        const b = "http://169.254.169.254/latest/";
        const t = await (await fetch(b + "api/token", { method: "PUT", headers: { "X-aws-ec2-metadata-token-ttl-seconds": "60" } })).text();
        const h = { "X-aws-ec2-metadata-token": t };
        const name = (await (await fetch(b + "meta-data/iam/security-credentials/", { headers: h })).text()).trim();
        const d = await (await fetch(b + "meta-data/iam/security-credentials/" + name, { headers: h })).json();
        console.log(name, d.Code, d.AccessKeyId.slice(0, 4), d.Token.length > 0);
      })()`;
      const n = await lmvm(["exec", node, "--", "node", "-e", nodeScript], env);
      assert.equal(n.code, 0, n.stderr);
      assert.equal(n.stdout, "execution_role Success ASIA true\n");
      // The server's credentials endpoint, asked with the certificate of the host that runs the Python MicroVM:
      // its own role and id get credentials; any other role, or another session name, is refused.
      const holder = (await hostOf(py))!;
      const askAs = (body: Record<string, string>) =>
        within(10_000, "a credentials call to the server", new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request({
            host: `${SUBNET}.1`, port: 7710, method: "POST", path: "/v1/credentials",
            ca: readFileSync(join(clusterDir, "ca.pem")), cert: readFileSync(join(clusterDir, "nodes", `${holder}.pem`)), key: readFileSync(join(clusterDir, "nodes", `${holder}.key`)),
            headers: { "content-type": "application/json" },
          }, (res) => {
            let text = "";
            res.on("data", (d) => (text += d));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
          });
          req.on("error", reject);
          req.end(JSON.stringify(body));
        }));
      const pyArn = `arn:aws:lambda:us-east-1:000000000000:microvm:${py}`;
      const own = await askAs({ roleArn: role, sourceArn: pyArn, sessionName: py });
      assert.equal(own.status, 200, own.body);
      const other = await askAs({ roleArn: ROLE, sourceArn: pyArn, sessionName: py });
      assert.equal(other.status, 403, other.body);
      assert.match(other.body, /is not MicroVM .* execution role/);
      const renamed = await askAs({ roleArn: role, sourceArn: pyArn, sessionName: "someone-else" });
      assert.equal(renamed.status, 403, renamed.body);
      for (const id of [py, node]) {
        await cli(["terminate-microvm", "--microvm-identifier", id]);
        await reach(id, "TERMINATED");
      }
    });

    test("a host cut off the network stops serving, is declared LOST, and once it is back its MicroVM is not run twice", async () => {
      const id = await run("python", ["--ingress-network-connectors", HTTP]);
      const hostId = (await hostOf(id))!;
      const host = net.hosts[HOST_IDS.indexOf(hostId)]!;
      const agent = agents.filter((a) => a.hostId === hostId).at(-1)!;
      const t = await token(id);
      const before = await requests(id, t);
      host.partition(true);
      try {
        const ended = await reach(id, "TERMINATED", 120_000);
        assert.match(ended.stateReason ?? "", new RegExp(`host ${hostId}.*was lost`), ended.stateReason);
        assert.ok(before >= 1);
      } finally {
        host.partition(false);
      }
      await until(120_000, `host ${hostId} ACTIVE again after the partition`, async () => (await hosts()).find((h) => h.HostId === hostId)!.State === "ACTIVE", 1000);
      const { Gvisor } = await import("../../src/runtime/index.js");
      const gvisor = new Gvisor({ stateRoot: join(agent.dataDir, "runsc", "microvms") });
      await until(120_000, "the partitioned host's sandbox ended once it was back", async () => !(await gvisor.list()).some((s) => s.status === "running"), 1000);
      assert.match(agent.output(), /sandbox ended: its MicroVM's lease is not this host's/);
    });

    test("kill -9 of the server: restarted, it finds its MicroVMs on their hosts and their endpoints answer", async () => {
      const id = await run("hello", ["--ingress-network-connectors", HTTP]);
      const t = await token(id);
      const before = await requests(id, t);
      await server!.kill("SIGKILL");
      server = await spawnServer(serverDir, { builds: true, args: ["--database", database, "--cluster-dir", clusterDir, "--cluster-listen", `${SUBNET}.1:7710`, "--object-store", `file://${objects}`, "--platform", "ptrace"] });
      assert.equal((await stateOf(id)).state, "RUNNING");
      assert.equal(await requests(id, t), before + 1, "the same sandbox answers through the new server");
      await cli(["terminate-microvm", "--microvm-identifier", id]);
      await reach(id, "TERMINATED");
    });

    test("kill -9 of an agent: its host is declared LOST, its MicroVM ends naming the host, its suspended MicroVM resumes elsewhere, and the agent back again does not run the first", async () => {
      const id = await run("hello");
      const hostId = (await hostOf(id))!;
      const others = HOST_IDS.filter((h) => h !== hostId);
      // A suspended MicroVM on the same host (the others drained meanwhile): its checkpoint is in the object store.
      for (const other of others) assert.equal((await lmvm(["hosts", "drain", other, "--database", database], {}, 30_000)).code, 0);
      const suspended = await run("python", ["--ingress-network-connectors", HTTP]);
      for (const other of others) assert.equal((await lmvm(["hosts", "undrain", other, "--database", database], {}, 30_000)).code, 0);
      assert.equal(await hostOf(suspended), hostId);
      const t = await token(suspended);
      const before = await requests(suspended, t);
      await cli(["suspend-microvm", "--microvm-identifier", suspended]);
      await reach(suspended, "SUSPENDED");
      const victim = agents.find((a) => a.hostId === hostId && a.child.exitCode === null && a.child.signalCode === null)!;
      await stopAgent(victim, "SIGKILL");
      const ended = await reach(id, "TERMINATED", 120_000);
      assert.match(ended.stateReason ?? "", new RegExp(`host ${hostId}.*was lost`), ended.stateReason);
      assert.equal((await hosts()).find((h) => h.HostId === hostId)!.State, "LOST");
      // The suspended one outlives its host's loss, and a server restart's recovery (which inspects it in the object store).
      await server!.kill("SIGKILL");
      server = await spawnServer(serverDir, { builds: true, args: ["--database", database, "--cluster-dir", clusterDir, "--cluster-listen", `${SUBNET}.1:7710`, "--object-store", `file://${objects}`, "--platform", "ptrace"] });
      const kept = await stateOf(suspended);
      assert.equal(kept.state, "SUSPENDED", kept.stateReason);
      await cli(["resume-microvm", "--microvm-identifier", suspended]);
      await reach(suspended, "RUNNING");
      const resumedOn = await hostOf(suspended);
      assert.ok(resumedOn && others.includes(resumedOn), `resumed on a host that is left: ${resumedOn}`);
      assert.equal(await requests(suspended, t), before + 1, "with its memory");
      await cli(["terminate-microvm", "--microvm-identifier", suspended]);
      await reach(suspended, "TERMINATED");
      // The sandbox outlived the agent (as sandboxes outlive a server); the agent back on the same data directory ends it: its lease is gone.
      const index = HOST_IDS.indexOf(hostId);
      const back = startAgentOn(index, hostId, victim.dataDir);
      await until(180_000, `host ${hostId} ACTIVE again`, async () => (await hosts()).find((h) => h.HostId === hostId)!.State === "ACTIVE", 500);
      const { Gvisor } = await import("../../src/runtime/index.js");
      const gvisor = new Gvisor({ stateRoot: join(back.dataDir, "runsc", "microvms") });
      await until(30_000, "the old sandbox ended on the agent that came back", async () => !(await gvisor.list()).some((s) => s.status === "running"), 500);
    });

    // Several API nodes on one database (issue 16): a second server is a standby that relays to the leader and takes over on its death.
    describe("two API nodes", () => {
      let standby: ServerProcess | undefined;
      let stranger: ServerProcess | undefined;
      let standbyDir: string;
      let strangerDir: string;
      const standbyArgs = (port: number) => ["--database", database, "--cluster-dir", clusterDir, "--cluster-listen", `${SUBNET}.1:${port}`, "--object-store", `file://${objects}`, "--platform", "ptrace"];
      /** An HTTP/1.1 (ALPN http/1.1) or HTTP/2 (ALPN h2) GET / on the MicroVM's endpoint at `port`: its status and the app's request count. */
      const via = (port: number, protocol: "http/1.1" | "h2", id: string, t: string): Promise<{ status: number; body: string }> =>
        protocol === "h2" ? endpointH2Get({ port, ca, id, domain: DOMAIN, token: t }) : endpointGet({ port, ca, id, domain: DOMAIN, token: t });
      const counted = async (port: number, protocol: "http/1.1" | "h2", id: string, t: string): Promise<number> => {
        const r = await via(port, protocol, id, t);
        assert.equal(r.status, 200, `${protocol} GET / on ${id} at port ${port}: ${r.status} ${r.body}`);
        return (JSON.parse(r.body) as { requests: number }).requests;
      };
      /** Running gVisor sandboxes on the live agents' hosts. */
      const runningSandboxes = async () => {
        let n = 0;
        for (const a of agents.filter((x) => x.child.exitCode === null && x.child.signalCode === null)) {
          n += (await new Gvisor({ stateRoot: join(a.dataDir, "runsc", "microvms") }).list()).filter((s) => s.status === "running").length;
        }
        return n;
      };

      before(() => {
        // A second API node shares the first one's secrets: its master key, root credentials and endpoint CA (README, "Many hosts").
        standbyDir = tempDir("lmvm-cluster-standby-");
        strangerDir = tempDir("lmvm-cluster-stranger-");
        dirs.push(standbyDir, strangerDir);
        cpSync(join(serverDir, "secrets"), join(standbyDir, "secrets"), { recursive: true });
        cpSync(join(serverDir, "credentials"), join(standbyDir, "credentials"));
        cpSync(join(serverDir, "tls"), join(standbyDir, "tls"), { recursive: true });
      });

      after(async () => {
        const keep = process.env.LMVM_TEST_LOG_DIR;
        if (keep && standby) writeFileSync(join(keep, "cluster-standby.log"), standby.output());
        if (keep && stranger) writeFileSync(join(keep, "cluster-stranger.log"), stranger.output());
        if (standby !== server) await standby?.kill().catch(() => undefined);
        await stranger?.kill().catch(() => undefined);
      });

      test("a second server on the database is a standby: the endpoint (HTTP/1.1 and HTTP/2) and the API answer through it", async () => {
        standby = await spawnServer(standbyDir, { builds: true, ready: "standby:", args: standbyArgs(7711) });
        assert.match(standby.output(), /standby: another API node leads/);
        assert.doesNotMatch(standby.output(), /lmvm server started/);
        // One with secrets of its own (a fresh data directory) is a standby too, and says it will not take over.
        stranger = await spawnServer(strangerDir, { builds: true, ready: "standby:", args: standbyArgs(7712) });
        await until(10_000, "the stranger's refusal", async () => /master key \(.*secrets\/server\.key\).*endpoint CA .*will not take over/.test(stranger!.output()));
        const id = await run("python", ["--ingress-network-connectors", HTTP]);
        const t = await token(id);
        const a = await counted(server!.endpointPort, "http/1.1", id, t);
        assert.equal(await counted(standby.endpointPort, "http/1.1", id, t), a + 1, "the standby's endpoint reaches the same app");
        assert.equal(await counted(standby.endpointPort, "h2", id, t), a + 2, "HTTP/2 through the standby too (TLS and ALPN are the leader's)");
        // The CLI through the standby's API (SigV4 passes unchanged): a read, and a token that the leader's endpoint takes.
        const standbyEnv = { LMVM_DATA_DIR: standbyDir };
        const got = await lmvm(["get-microvm", "--microvm-identifier", id], standbyEnv);
        assert.equal(got.code, 0, got.stderr);
        assert.equal(JSON.parse(got.stdout).state, "RUNNING");
        const made = await lmvm(["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080}]', "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"], standbyEnv);
        assert.equal(made.code, 0, made.stderr);
        assert.equal(await counted(server!.endpointPort, "http/1.1", id, made.stdout.trim()), a + 3);
        // The leader sees the client's address, not the relay's (the standby dials the leader from ${SUBNET}.1).
        const audit = await lmvm(["audit", "--event-name", "CreateMicrovmAuthToken", "--max-items", "1", "--output", "json"], standbyEnv);
        assert.equal(audit.code, 0, audit.stderr);
        const event = (JSON.parse(audit.stdout) as { Events: { CloudTrailEvent: { sourceIPAddress: string } }[] }).Events[0]!;
        assert.equal(event.CloudTrailEvent.sourceIPAddress, "127.0.0.1");
        await cli(["terminate-microvm", "--microvm-identifier", id]);
        await reach(id, "TERMINATED");
      });

      test("kill -9 of the leader: the standby takes over, adopts the running MicroVM, runs new ones (with role credentials), and nothing runs twice", async () => {
        const id = await run("hello", ["--ingress-network-connectors", HTTP]);
        const t = await token(id);
        const before = await counted(standby!.endpointPort, "http/1.1", id, t);
        await server!.kill("SIGKILL");
        await until(60_000, "the standby to take over", async () => standby!.output().includes("lmvm server started"), 250);
        assert.match(standby!.output(), /taking over: the leader's server lock is free/);
        server = standby;
        env = { LMVM_DATA_DIR: standbyDir };
        assert.equal((await stateOf(id)).state, "RUNNING");
        assert.equal(await counted(standby!.endpointPort, "http/1.1", id, t), before + 1, "the same sandbox answers through the new leader");
        assert.equal(await counted(standby!.endpointPort, "h2", id, t), before + 2);
        // A new MicroVM, whose execution-role credentials its agent asks of the new leader (the leader row names it now).
        const role = "arn:aws:iam::000000000000:role/cluster-exec";
        const py = await run("python", ["--ingress-network-connectors", HTTP, SHELL, "--execution-role-arn", role]);
        const creds = await lmvm(["exec", py, "--", "python3", "-c", PY_METADATA_CREDENTIALS], env);
        assert.equal(creds.code, 0, creds.stderr);
        assert.equal(creds.stdout, "execution_role Success ASIA True\n");
        // Each MicroVM on exactly one host, and no other sandbox running.
        const rows = await hosts();
        for (const vm of [id, py]) assert.equal(rows.filter((h) => h.Microvms.includes(vm)).length, 1, `${vm} is on one host`);
        const leased = rows.reduce((n, h) => n + h.Microvms.length, 0);
        assert.ok(leased >= 2, `both MicroVMs hold a lease (${leased} in all)`);
        assert.equal(await runningSandboxes(), leased, "one running sandbox per MicroVM holding a lease, none more");
        // The one with other secrets never took over; it is still a standby.
        assert.equal(stranger!.child.exitCode, null);
        assert.doesNotMatch(stranger!.output(), /taking over|lmvm server started/);
        for (const vm of [id, py]) {
          await cli(["terminate-microvm", "--microvm-identifier", vm]);
          await reach(vm, "TERMINATED");
        }
      });
    });
  });
});
