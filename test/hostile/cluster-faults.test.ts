// The hostile suite's fault part against the multi-host set-up (issue 16): a
// cluster of its own (PostgreSQL, a file:// object store, `lmvm server` in
// cluster mode and two agents, each in a network namespace of its own on a
// bridge; test/support/cluster-nodes.ts), one small image (busybox httpd on
// 8080), and real faults while runs, suspends, resumes and terminates are
// under way on both hosts:
//
// 1. `kill -9` of the server at random moments, N rounds (LMVM_CLUSTER_FAULT_ROUNDS,
//    default 8), restarted each time.
// 2. `kill -9` of an agent at random moments, N rounds: the agent of the host the
//    operation's MicroVM is leased to (a random one for runs), restarted at once on
//    the same data directory and host id.
// 3. `kill -9` of PostgreSQL's postmaster while calls are in flight, for longer
//    than an agent's serving deadline (10 s) and shorter than the server's
//    host-loss deadline (23 s), then started again on the same data directory.
// 4. A host cut off the bridge (its agent loses the server and PostgreSQL) while a
//    suspend, a resume and a run target it, for longer than the agent's serving
//    deadline and shorter than the loss deadline, then mended.
//
// "Consistent", checked after every fault (it must hold within a deadline: a
// restarted agent's sweep and the server's sandbox check run every 3 s):
// - every MicroVM is RUNNING, SUSPENDED or TERMINATED (nothing stuck half-way);
//   every host is ACTIVE again;
// - every RUNNING MicroVM has a lease naming a live host, and across ALL hosts'
//   runsc roots there is exactly one sandbox for it: its current one, on that host.
//   No other sandbox exists anywhere (nothing runs twice, nothing is left behind);
// - every RUNNING MicroVM answers through the server's endpoint proxy (a token,
//   HTTPS, the agent's tunnel);
// - every SUSPENDED MicroVM's current checkpoint is in the object store;
// - every TERMINATED MicroVM holds no lease, has no directory on any host and no
//   checkpoint in the object store, and has a reason unless the test terminated it;
// - on each host, one network namespace marker and one mounted disk per RUNNING
//   MicroVM it holds, none left over; the server's data directory holds none;
// - the image's version is still SUCCESSFUL.
// Faults 3 and 4 also check what a fault must not do: calls in flight end (an
// answer or an error, never a hang), calls made while PostgreSQL is down fail with
// a 5xx, the agents stop serving past their deadline, and every MicroVM RUNNING
// before the fault that no call targeted is RUNNING after it (nothing lost).

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import pg from "pg";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListMicrovmsCommand, ResumeMicrovmCommand,
  RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient, type MicrovmItem,
} from "@aws-sdk/client-lambda-microvms";
import { mountsUnder } from "../../src/os/index.js";
import type { SandboxRecord } from "../../src/runtime/index.js";
import { makeZip } from "../support/artifacts.js";
import { until, within } from "../support/deadline.js";
import { killPostgres, restartPostgres } from "../support/postgres.js";
import { eventually, readCredentials, sdkClient } from "../support/platform.js";
import { endpointGet, running, sandboxesUnder, TestCluster } from "../support/cluster-nodes.js";
import { record } from "./report.js";

const SUBNET = "172.30.3";
const ROUNDS = Number(process.env.LMVM_CLUSTER_FAULT_ROUNDS ?? 8);
const ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:web";
const DOMAIN = "microvm.localhost";
/** How long the state may take to settle after a fault (restarts, an agent's sweep and the server's sandbox check every 3 s, in-flight calls ending). */
const SETTLE_MS = 120_000;
/** How long a partition lasts once the cut-off agent has failed a heartbeat: with that, past its 10 s serving deadline, short of the server's 23 s loss deadline. */
const PARTITION_MS = 8_000;

describe("cluster faults", { timeout: 1_500_000 }, () => {
  let cluster: TestCluster;
  let client: LambdaMicrovmsClient;
  let db: pg.Pool;
  /** MicroVMs the test terminated itself: their TERMINATED record need not carry a reason. */
  const terminatedByTest = new Set<string>();
  /** TERMINATED MicroVMs' spent checkpoint copies seen left on a host (a known gap), by host:id. */
  const spentCopies = new Set<string>();
  let seed = 16;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;

  const connect = () => {
    client?.destroy();
    client = sdkClient(cluster.server!.url, readCredentials(cluster.serverDir));
  };
  const all = async () => (await client.send(new ListMicrovmsCommand({ maxResults: 1000 }))).items ?? [];
  const get = (id: string) => client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  const leases = async () => new Map((await db.query<{ microvm_id: string; host_id: string; epoch: number }>("SELECT microvm_id, host_id, epoch FROM leases")).rows.map((r) => [r.microvm_id, r]));

  /** GET / through the server's endpoint proxy (HTTPS, a fresh token): the app's answer. */
  const endpoint = async (id: string): Promise<{ status: number; body: string }> => {
    const token = (await client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 30, allowedPorts: [{ port: 8080 }] }))).authToken!["X-aws-proxy-auth"]!;
    return endpointGet({ port: cluster.server!.endpointPort, ca: readFileSync(join(cluster.serverDir, "tls", "ca.pem")), id, domain: DOMAIN, token, deadlineMs: 30_000 });
  };

  /** Whether the object store holds the MicroVM's current checkpoint (its head's incarnation, else any). */
  const storedCheckpoint = (id: string): boolean => {
    const dir = join(cluster.objects, "checkpoints", id);
    if (!existsSync(dir)) return false;
    const head = join(dir, "current.json");
    if (existsSync(head)) return existsSync(join(dir, `${(JSON.parse(readFileSync(head, "utf8")) as { incarnation: number }).incarnation}.tar.zst`));
    return readdirSync(dir).some((f) => f.endsWith(".tar.zst"));
  };

  /** One look at everything (the header's "consistent"); throws naming the first thing that does not hold. */
  const checkOnce = async (why: string) => {
    const vms = await all();
    const states = vms.map((v) => `${v.microvmId}=${v.state}`).join(", ");
    for (const v of vms) assert.ok(["RUNNING", "SUSPENDED", "TERMINATED"].includes(v.state!), `${why}: ${v.microvmId} is ${v.state}, not settled (${states})`);
    const hostStates = (await db.query<{ id: string; state: string }>("SELECT id, state FROM hosts ORDER BY id")).rows;
    assert.deepEqual(hostStates.map((h) => `${h.id}=${h.state}`), cluster.agents.map((a) => `${a.hostId}=ACTIVE`), `${why}: every host ACTIVE`);
    for (const a of cluster.agents) assert.ok(running(a.child), `${why}: agent ${a.hostId} is running`);
    const lease = await leases();
    const hostOf = new Map(cluster.agents.map((a) => [a.hostId, a]));
    const record = (dataDir: string, id: string) => JSON.parse(readFileSync(join(dataDir, "microvms", id, "sandbox.json"), "utf8")) as SandboxRecord;
    const runningVms = vms.filter((v) => v.state === "RUNNING");
    // Exactly the RUNNING MicroVMs' current sandboxes, each on its lease's host, and nothing else on any host.
    const expected: string[] = [];
    for (const v of runningVms) {
      const l = lease.get(v.microvmId!);
      const a = l && hostOf.get(l.host_id);
      assert.ok(a, `${why}: RUNNING ${v.microvmId} has a lease on a live host (lease ${JSON.stringify(l)}) (${states})`);
      expected.push(`${a.hostId}:${record(a.dataDir, v.microvmId!).sandboxId ?? v.microvmId}:running`);
    }
    const found = (await Promise.all([...cluster.agents.map((a) => ({ name: a.hostId, dir: a.dataDir })), { name: "server", dir: cluster.serverDir }].map(async (n) =>
      (await sandboxesUnder(n.dir)).map((x) => `${n.name}:${x.id}:${x.status}`)))).flat();
    assert.deepEqual(found.sort(), expected.sort(), `${why}: the sandboxes on all hosts are exactly the RUNNING MicroVMs' current ones, each on its lease's host (${states})`);
    await Promise.all(runningVms.map(async (v) => {
      const r = await endpoint(v.microvmId!);
      assert.equal(r.status, 200, `${why}: RUNNING ${v.microvmId} answers through the endpoint proxy: ${r.status} ${r.body}`);
      assert.equal(r.body, "ok\n");
    }));
    for (const v of vms.filter((x) => x.state === "SUSPENDED")) assert.ok(storedCheckpoint(v.microvmId!), `${why}: SUSPENDED ${v.microvmId}'s current checkpoint is in the object store`);
    for (const v of vms.filter((x) => x.state === "TERMINATED")) {
      const id = v.microvmId!;
      assert.ok(!lease.get(id)?.host_id, `${why}: TERMINATED ${id} holds no lease (${JSON.stringify(lease.get(id))})`);
      // Nothing of it on any host but, possibly, the local copy of a checkpoint it was resumed from on another host, which
      // stays until that host's agent restarts (docs/design.md, "Many hosts", Not built yet): counted, not failed.
      for (const a of cluster.agents) {
        const dir = join(a.dataDir, "microvms", id);
        if (!existsSync(dir)) continue;
        assert.deepEqual(readdirSync(dir).filter((f) => f !== "checkpoint" && f !== "sandbox.json"), [], `${why}: TERMINATED ${id} left nothing on ${a.hostId} but a spent checkpoint`);
        spentCopies.add(`${a.hostId}:${id}`);
      }
      const stored = join(cluster.objects, "checkpoints", id);
      assert.ok(!existsSync(stored) || !readdirSync(stored).some((f) => f.endsWith(".tar.zst")), `${why}: TERMINATED ${id} left no checkpoint in the object store (${existsSync(stored) ? readdirSync(stored).join(", ") : ""})`);
      if (!terminatedByTest.has(id)) {
        const reason = (await get(id)).stateReason ?? "";
        assert.ok(reason.length > 10, `${why}: TERMINATED ${id} says why: '${reason}'`);
      }
    }
    for (const a of cluster.agents) {
      const mine = runningVms.filter((v) => lease.get(v.microvmId!)?.host_id === a.hostId).map((v) => record(a.dataDir, v.microvmId!));
      const networks = existsSync(join(a.dataDir, "networks")) ? readdirSync(join(a.dataDir, "networks")).sort() : [];
      assert.deepEqual(networks, mine.map((r) => String(r.networkIndex)).sort(), `${why}: ${a.hostId} has one network namespace per RUNNING MicroVM it holds`);
      const disks = runningVms.filter((v) => lease.get(v.microvmId!)?.host_id === a.hostId).map((v) => join(record(a.dataDir, v.microvmId!).sandboxDir ?? join(a.dataDir, "microvms", v.microvmId!, "sandbox"), "overlay"));
      assert.deepEqual(mountsUnder(a.dataDir).sort(), disks.sort(), `${why}: ${a.hostId} has one mounted disk per RUNNING MicroVM it holds, none left over`);
    }
    assert.deepEqual(mountsUnder(cluster.serverDir), [], `${why}: nothing mounted under the server's data directory`);
    assert.equal((await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "1.0" }))).state, "SUCCESSFUL", `${why}: the image's version is still SUCCESSFUL`);
    return vms;
  };

  /** Waits until checkOnce holds (SETTLE_MS at most); fails with what still did not. */
  const consistent = async (why: string): Promise<MicrovmItem[]> => {
    let last: unknown;
    let vms: MicrovmItem[] = [];
    try {
      // A look that fails is tried again after a pause: each one asks every host and the endpoint of every MicroVM.
      await until(SETTLE_MS, `${why}: a consistent cluster`, async () => {
        try {
          vms = await checkOnce(why);
          return true;
        } catch (err) {
          last = err;
          return false;
        }
      }, 500);
    } catch (err) {
      throw last ?? err;
    }
    return vms;
  };

  before(async () => {
    cluster = await TestCluster.start({ subnet: SUBNET, hosts: 2 });
    db = new pg.Pool({ connectionString: cluster.database, max: 2 });
    db.on("error", () => undefined); // PostgreSQL is killed on purpose below
    connect();
    const artifact = join(cluster.serverDir, "app.zip");
    writeFileSync(artifact, makeZip([{ name: "Dockerfile", content: "FROM lmvm/busybox\nRUN mkdir -p /www && echo ok > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n" }]));
    await client.send(new CreateMicrovmImageCommand({ name: "web", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: `file://${artifact}` } }));
    const image = await eventually(async () => {
      const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: "web" }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, "the image", 300_000);
    assert.equal(image.state, "CREATED", `the image's build: ${(await client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "web", imageVersion: "1.0" }))).stateReason}`);
  });
  after(async () => {
    client?.destroy();
    await db?.end().catch(() => undefined);
    await cluster?.close();
  });

  /** One operation at random on the cluster's MicroVMs, and the MicroVM it targets (none for a run). */
  const operation = async () => {
    // Something to act on: at least two RUNNING MicroVMs (runs killed mid-way end, so they would never build up otherwise).
    let vms = await all();
    while (vms.filter((v) => v.state === "RUNNING").length < 2) {
      await runOne();
      vms = await all();
    }
    const ids = (s: string) => vms.filter((v) => v.state === s).map((v) => v.microvmId!);
    const [runningIds, suspended] = [ids("RUNNING"), ids("SUSPENDED")];
    const choices: [string, () => { target?: string; call: Promise<unknown> }][] = [];
    if (runningIds.length + suspended.length < 4) choices.push(["run", () => ({ call: client.send(new RunMicrovmCommand({ imageIdentifier: ARN })) })]);
    if (runningIds.length) choices.push(["suspend", () => {
      const target = pick(runningIds);
      return { target, call: client.send(new SuspendMicrovmCommand({ microvmIdentifier: target })) };
    }]);
    if (runningIds.length > 2) choices.push(["terminate", () => {
      const target = pick(runningIds);
      terminatedByTest.add(target);
      return { target, call: client.send(new TerminateMicrovmCommand({ microvmIdentifier: target })) };
    }]);
    if (suspended.length) choices.push(["resume", () => {
      const target = pick(suspended);
      return { target, call: client.send(new ResumeMicrovmCommand({ microvmIdentifier: target })) };
    }]);
    const [name, start] = pick(choices);
    const { target, call } = start();
    return { name, target, call: call.catch((err: Error) => err) }; // the call may fail with its node
  };

  const tally = (vms: MicrovmItem[]) => {
    const count = (s: string) => vms.filter((v) => v.state === s).length;
    return { "MicroVMs RUNNING at the end": count("RUNNING"), SUSPENDED: count("SUSPENDED"), TERMINATED: count("TERMINATED") };
  };

  test(`kill -9 of the server at random moments of runs, suspends, resumes and terminates on both hosts, ${ROUNDS} times`, async () => {
    const actions: Record<string, number> = {};
    let vms: MicrovmItem[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const { name } = await operation();
      actions[name] = (actions[name] ?? 0) + 1;
      await new Promise((r) => setTimeout(r, Math.floor(random() * 1500)));
      await cluster.server!.kill("SIGKILL");
      await cluster.startServer();
      connect();
      vms = await consistent(`server round ${round + 1} (killed during ${name})`);
    }
    record("cluster-faults", `kill -9 of the server mid-operation, ${ROUNDS} times (2 agents)`, "after every restart: each RUNNING MicroVM in exactly one sandbox, on its lease's host, answering through the endpoint; nothing left on any host; the image survived", {
      ...Object.fromEntries(Object.entries(actions).map(([k, v]) => [`killed during ${k}`, v])), ...tally(vms),
    });
  });

  test(`kill -9 of an agent at random moments of runs, suspends, resumes and terminates, ${ROUNDS} times, restarted on its data directory`, async () => {
    const actions: Record<string, number> = {};
    const outcomes: Record<string, number> = {};
    let vms: MicrovmItem[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const { name, target, call } = await operation();
      actions[name] = (actions[name] ?? 0) + 1;
      const held = target ? (await leases()).get(target)?.host_id : undefined;
      const victim = cluster.agents.find((a) => a.hostId === held) ?? pick(cluster.agents);
      await new Promise((r) => setTimeout(r, Math.floor(random() * 1500)));
      await cluster.stopAgent(victim.index, "SIGKILL");
      cluster.startAgent(victim.index);
      // The call itself ends: with its answer, or an error naming what failed.
      const answer = await within(SETTLE_MS, `the ${name} call of round ${round + 1}`, call);
      const outcome = answer instanceof Error ? `${name} failed` : `${name} answered`;
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      vms = await consistent(`agent round ${round + 1} (${victim.hostId} killed during ${name}${target ? ` of ${target}` : ""}${answer instanceof Error ? `; the call failed: ${answer.message}` : ""})`);
    }
    const lostEnds = vms.filter((v) => v.state === "TERMINATED" && !terminatedByTest.has(v.microvmId!)).length;
    record("cluster-faults", `kill -9 of an agent mid-operation, ${ROUNDS} times, restarted on the same data directory`, "after every restart: nothing ran twice, nothing left on either host, every MicroVM RUNNING and answering, SUSPENDED with its checkpoint stored, or TERMINATED with a reason", {
      ...Object.fromEntries(Object.entries(actions).map(([k, v]) => [`killed during ${k}`, v])), ...outcomes, "ended by the faults so far": lostEnds, ...tally(vms),
    });
  });

  /** Runs a MicroVM and waits until it is RUNNING; its id. */
  const runOne = async () => {
    const { microvmId } = await client.send(new RunMicrovmCommand({ imageIdentifier: ARN }));
    await eventually(async () => {
      const vm = await get(microvmId!);
      assert.ok(vm.state === "PENDING" || vm.state === "RUNNING", `${microvmId} went ${vm.state}: ${vm.stateReason}`);
      return vm.state === "RUNNING" ? true : undefined;
    }, `${microvmId} to be RUNNING`, 120_000);
    return microvmId!;
  };
  /** Runs a MicroVM on host `index` (the other host drained meanwhile); its id. */
  const runOn = async (index: number) => {
    const others = cluster.agents.filter((a) => a.index !== index);
    for (const o of others) await cluster.drain(o.index, true);
    try {
      return await runOne();
    } finally {
      for (const o of others) await cluster.drain(o.index, false);
    }
  };
  const suspendOne = async (id: string) => {
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await eventually(async () => ((await get(id)).state === "SUSPENDED" ? true : undefined), `${id} to be SUSPENDED`, 120_000);
  };
  /**
   * The MicroVMs a fault needs, from those the earlier ones left where they fit, else new ones: `kept`, one RUNNING on each
   * host; `toSuspend`, another RUNNING one, on host `busy` (0: host-a) when given; `toResume`, a SUSPENDED one whose
   * checkpoint host `busy` made. Every other MicroVM is terminated, so the next fault starts from a known few.
   */
  const cast = async (busyCount: number) => {
    const busy = busyCount === 1 ? 0 : undefined;
    const vms = await all();
    const lease = await leases();
    const on = (id: string) => cluster.agents.findIndex((a) => a.hostId === lease.get(id)?.host_id);
    const left = new Set(vms.filter((v) => v.state === "RUNNING" || v.state === "SUSPENDED").map((v) => v.microvmId!));
    const take = (state: string, host?: number) => {
      const v = vms.find((x) => x.state === state && left.has(x.microvmId!) && (host === undefined || on(x.microvmId!) === host));
      if (v) left.delete(v.microvmId!);
      return v?.microvmId;
    };
    const kept = [take("RUNNING", 0), take("RUNNING", 1)];
    const toSuspend = take("RUNNING", busy);
    const toResume = take("SUSPENDED", busy);
    for (const id of left) {
      terminatedByTest.add(id);
      await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    }
    for (let i = 0; i < 2; i++) kept[i] ??= await runOn(i);
    const result = {
      kept: kept as string[],
      toSuspend: toSuspend ?? (busy === undefined ? await runOne() : await runOn(busy)),
      toResume: toResume ?? (busy === undefined ? await runOne() : await runOn(busy)),
    };
    if (!toResume) await suspendOne(result.toResume);
    await consistent("before the next fault");
    return result;
  };
  /** What a failed SDK call says: its type, HTTP status and message. */
  const failure = (err: unknown) => {
    const e = err as Error & { $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode ?? 0, message: e.message };
  };

  test("kill -9 of PostgreSQL while MicroVMs run on both hosts and calls are in flight: calls fail with a 5xx, agents stop serving, and once it is back everything converges", async () => {
    // One RUNNING MicroVM on each host that no call targets, one more to suspend and a SUSPENDED one to resume (those the
    // earlier faults left, else new ones).
    const { kept, toSuspend, toResume } = await cast(2);
    const lease = await leases();
    assert.deepEqual(kept.map((id) => lease.get(id)!.host_id), ["host-a", "host-b"], "the two MicroVMs that no call targets run one on each host");
    // Calls in flight when PostgreSQL dies: a run, a suspend, a resume.
    const inFlight = [
      client.send(new RunMicrovmCommand({ imageIdentifier: ARN })),
      client.send(new SuspendMicrovmCommand({ microvmIdentifier: toSuspend })),
      client.send(new ResumeMicrovmCommand({ microvmIdentifier: toResume })),
    ].map((p) => p.then(() => "answered", (err: unknown) => `${failure(err).name} ${failure(err).status}`));
    await new Promise((r) => setTimeout(r, 200));
    await killPostgres();
    const down = Date.now();
    // Calls made while it is down fail, with a server error that says so, not a hang.
    const read = await within(60_000, "GetMicrovm while PostgreSQL is down", get(kept[0]!).then(() => undefined, failure));
    const run = await within(60_000, "RunMicrovm while PostgreSQL is down", client.send(new RunMicrovmCommand({ imageIdentifier: ARN })).then(() => undefined, failure));
    for (const f of [read, run]) {
      assert.ok(f, "a call made while PostgreSQL is down fails");
      assert.ok(f.status >= 500 && f.status < 600, `a 5xx: ${JSON.stringify(f)}`);
      assert.equal(f.name, "ServiceException", JSON.stringify(f));
      assert.match(f.message, /PostgreSQL|database/, "the error names the database");
    }
    const answers = await within(60_000, "the calls in flight when PostgreSQL died to end", Promise.all(inFlight));
    // Past their deadline (10 s without a heartbeat) the agents serve nothing.
    await until(30_000, "both agents to stop serving without PostgreSQL", async () => (await Promise.all(cluster.agents.map((a) => cluster.agentStatus(a.index)))).every((s) => !s.serving), 500);
    const outage = Date.now() - down;
    await restartPostgres();
    await until(60_000, "both agents to serve again once PostgreSQL is back", async () => (await Promise.all(cluster.agents.map((a) => cluster.agentStatus(a.index)))).every((s) => s.serving), 500);
    const vms = await consistent("after PostgreSQL came back");
    // Nothing lost: what no call targeted still runs.
    for (const id of kept) assert.equal(vms.find((v) => v.microvmId === id)?.state, "RUNNING", `${id}, which no call targeted, still RUNNING`);
    const fate = (id: string) => vms.find((v) => v.microvmId === id)?.state;
    record("cluster-faults", "kill -9 of PostgreSQL (the postmaster) with a run, a suspend and a resume in flight, restarted past the agents' 10 s deadline", `calls while down: ${read!.name} ${read!.status} "${read!.message.slice(0, 90)}"; both agents stopped serving, then served again; converged, untargeted MicroVMs kept RUNNING`, {
      "outage (s)": Math.round(outage / 1000), "in-flight run": answers[0]!, "in-flight suspend": `${answers[1]} (now ${fate(toSuspend)})`, "in-flight resume": `${answers[2]} (now ${fate(toResume)})`, ...tally(vms),
    });
  });

  test("a host cut off the bridge while a suspend, a resume and a run target it, then mended: nothing lost, nothing run twice", async () => {
    // host-b runs one MicroVM no call targets; host-a (the one cut off) one to suspend and one to resume, and the run goes there.
    const { kept, toSuspend, toResume } = await cast(1);
    const bystander = kept[1]!;
    await cluster.drain(1, true);
    const lease = await leases();
    assert.deepEqual([bystander, toSuspend].map((id) => lease.get(id)!.host_id), ["host-b", "host-a"]);
    const agent = cluster.agents[0]!;
    const logged = agent.output().length;
    const calls = [
      client.send(new SuspendMicrovmCommand({ microvmIdentifier: toSuspend })),
      client.send(new ResumeMicrovmCommand({ microvmIdentifier: toResume })),
      client.send(new RunMicrovmCommand({ imageIdentifier: ARN })),
    ].map((p) => p.then((r) => r, (err: unknown) => failure(err)));
    await new Promise((r) => setTimeout(r, 300));
    cluster.net.hosts[0]!.partition(true);
    try {
      // Past the agent's 10 s serving deadline, short of the server's 23 s loss deadline.
      await until(30_000, "host-a's agent to fail a heartbeat behind the partition", () => agent.output().slice(logged).includes("heartbeat failed"), 250);
      await new Promise((r) => setTimeout(r, PARTITION_MS));
    } finally {
      cluster.net.hosts[0]!.partition(false);
    }
    await cluster.drain(1, false);
    const [suspended, resumed, ran] = await within(SETTLE_MS, "the calls made across the partition to end", Promise.all(calls));
    const vms = await consistent("after the partition was mended");
    const state = (id: string) => vms.find((v) => v.microvmId === id);
    assert.equal(state(bystander)?.state, "RUNNING", "the other host's MicroVM kept running");
    assert.equal(state(kept[0]!)?.state, "RUNNING", "the cut-off host's MicroVM that no call targeted kept running (the cut was shorter than the loss deadline)");
    for (const id of [toSuspend, toResume]) assert.ok(["RUNNING", "SUSPENDED"].includes(state(id)!.state!), `${id} was not lost: ${state(id)!.state} ${(await get(id)).stateReason ?? ""}`);
    const newId = (ran as { microvmId?: string }).microvmId;
    record("cluster-faults", `a host cut off the bridge (server and PostgreSQL) for ${PARTITION_MS / 1000} s past its first failed heartbeat, a suspend, a resume and a run targeting it`, "nothing lost (the suspended and resumed MicroVMs RUNNING or SUSPENDED with their checkpoint), the other host's MicroVM untouched, each RUNNING MicroVM in one sandbox", {
      suspend: `${"name" in (suspended as object) ? (suspended as { name: string }).name : "answered"}, now ${state(toSuspend)!.state}`,
      resume: `${"name" in (resumed as object) ? (resumed as { name: string }).name : "answered"}, now ${state(toResume)!.state}`,
      run: newId ? `answered, now ${state(newId)?.state}` : `refused: ${(ran as { name: string }).name}`,
      ...tally(vms), "spent checkpoint copies of TERMINATED MicroVMs left on a host over the whole run (known gap)": spentCopies.size,
    });
  });
});
