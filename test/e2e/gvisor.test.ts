// gVisor sandboxes: run a root filesystem in its own network namespace,
// checkpoint it, restore two clones into two new namespaces with their own
// addresses, and find memory and disk state kept, kernel randomness distinct,
// and nothing left on the host afterwards.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { connect, type Socket } from "node:net";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NetworkNamespaces, type SandboxNetwork } from "../../src/net/index.js";
import { Gvisor, SandboxCgroups, type SandboxSpec } from "../../src/runtime/index.js";
import { CAP_SYS_ADMIN, controlExec, pausedSandbox, runningSandbox } from "../../src/runtime/control-socket.js";
import { eventually, tempDir } from "../support/platform.js";
import { busyboxRootfs } from "../support/busybox-rootfs.js";

async function get(ip: string, path: string): Promise<string | undefined> {
  try {
    const res = await fetch(`http://${ip}:8080${path}`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? (await res.text()).trim() : undefined;
  } catch {
    return undefined;
  }
}

describe("gVisor sandboxes", { timeout: 120_000 }, () => {
  const dir = tempDir("lmvm-gvisor-");
  const BUSYBOX_ROOTFS = busyboxRootfs(dir);
  const gvisor = new Gvisor({ stateRoot: join(dir, "runsc") });
  const nets = new NetworkNamespaces("10.212.0.0/24", join(dir, "networks"));
  const made: { spec: SandboxSpec }[] = [];
  const networks: SandboxNetwork[] = [];

  const spec = (id: string, network: SandboxNetwork): SandboxSpec => ({
    id,
    rootfs: BUSYBOX_ROOTFS,
    // A counter in memory (the shell loop's variable) and on disk (/srv/count), served over HTTP.
    config: { Cmd: ["/bin/sh", "-c", "mkdir -p /srv; i=0; (while true; do i=$((i+1)); echo $i > /srv/count; sleep 0.1; done) & exec httpd -f -p 8080 -h /srv"], Env: ["PATH=/bin"] },
    env: { MICROVM_ID: id },
    hostname: id,
    network,
    dir: join(dir, id),
    logFile: join(dir, `${id}.log`),
  });

  before(async () => {
    for (let i = 0; i < 3; i++) networks.push(await nets.create());
  });
  after(async () => {
    for (const { spec: s } of made) await gvisor.destroy(s.id);
    for (const n of networks) await nets.destroy(n);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a checkpoint restores into two clones with their own addresses and the original's state", async () => {
    const original = spec("sbx-original", networks[0]!);
    made.push({ spec: original });
    await gvisor.run(original);
    // Read through exec, not HTTP: gVisor refuses to checkpoint while a TCP endpoint is
    // connected, and busybox httpd closes first, leaving TIME_WAIT in the sandbox for a minute.
    const count = async () => {
      const r = await gvisor.exec(original.id, ["/bin/cat", "/srv/count"]);
      return r.code === 0 && r.stdout.trim() ? Number(r.stdout.trim()) : undefined;
    };
    const before = await eventually(count, "the original to count", 20_000);
    assert.ok(before > 0);

    const image = join(dir, "checkpoint");
    await gvisor.checkpoint(original.id, image);
    assert.ok(existsSync(join(image, "checkpoint.img")));
    assert.equal(await get(networks[0]!.sandboxIp, "/count"), undefined, "the original is gone after the checkpoint");

    const clones = [spec("sbx-clone-a", networks[1]!), spec("sbx-clone-b", networks[2]!)];
    for (const c of clones) {
      made.push({ spec: c });
      await gvisor.restore(c, image);
    }
    for (const c of clones) {
      const count = Number(await eventually(() => get(c.network.sandboxIp, "/count"), `${c.id} to serve`, 20_000));
      assert.ok(count >= before, `${c.id} continues from ${before}, got ${count}`);
    }
    // Read for real on this host's layout (hybrid here: runsc uses the v1 hierarchies).
    const cgroups = new SandboxCgroups();
    for (const c of clones) {
      assert.ok((cgroups.cpuUsageMicros(c.id) ?? 0) > 0, `${c.id}'s CPU time is read from its ${cgroups.layout} cgroup`);
      assert.ok(cgroups.memoryInUse(c.id) > 0, `${c.id}'s memory is read from its ${cgroups.layout} cgroup`);
      assert.ok(cgroups.cpuThrottling(c.id), `${c.id}'s CPU throttling counters are read`);
      assert.equal(cgroups.oomKilled(c.id), false);
    }
    const random = await Promise.all(clones.map(async (c) => (await gvisor.exec(c.id, ["/bin/sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"])).stdout.trim()));
    assert.equal(random.length, 2);
    assert.ok(random[0] && random[1]);
    assert.notEqual(random[0], random[1], "clones read different kernel randomness");
    assert.deepEqual(readdirSync(BUSYBOX_ROOTFS).filter((f) => f.startsWith(".gvisor")), [], "the shared rootfs is untouched");
  });

  test("a paused sandbox's app stands still; resume (on its control socket, as a warm-pool claim does) sets it going, and runsc records it running", async () => {
    const clone = made.at(-1)!.spec;
    const status = async () => (await gvisor.list()).find((s) => s.id === clone.id)?.status;
    await gvisor.pause(clone.id);
    assert.equal(await status(), "paused");
    const refused = await gvisor.exec(clone.id, ["/bin/cat", "/srv/count"]).catch((err: Error) => ({ code: -1, stdout: err.message }));
    assert.notEqual(refused.code, 0, "runsc refuses to exec in a paused sandbox");
    assert.equal(await get(clone.network.sandboxIp, "/count"), undefined, "a paused app answers nothing");
    assert.ok(pausedSandbox(join(dir, "runsc"), clone.id)?.socket, "runsc's state file names the sandbox's control socket, so the resume starts no runsc");
    await gvisor.resume(clone.id);
    assert.equal(await status(), "running", "runsc's record says running, as after `runsc resume`");
    const first = Number(await eventually(() => get(clone.network.sandboxIp, "/count"), `${clone.id} to serve again`, 20_000));
    const later = Number(await eventually(async () => {
      const n = Number(await get(clone.network.sandboxIp, "/count"));
      return n > first ? n : undefined;
    }, `${clone.id}'s counter to go on`, 20_000));
    assert.ok(later > first);
    const r = await gvisor.exec(clone.id, ["/bin/cat", "/srv/count"]);
    assert.equal(r.code, 0, "runsc execs in it again");
  });

  test("a command run on the sandbox's control socket (as a restore names its MicroVM) gets its capability and exit status, and starts no runsc", async () => {
    const clone = made.at(-1)!.spec;
    const socket = runningSandbox(join(dir, "runsc"), clone.id);
    assert.ok(socket, "runsc's state file names the running sandbox's control socket");
    assert.equal(await controlExec(socket, clone.id, ["/bin/sh", "-c", "exit 3"], 0, 10_000), 3);
    assert.equal(await controlExec(socket, clone.id, ["/bin/sh", "-c", "kill -9 $$"], 0, 10_000), -1, "a signal's end is told apart");
    assert.notEqual(await controlExec(socket, clone.id, ["/bin/hostname", "without-capability"], 0, 10_000), 0, "without CAP_SYS_ADMIN the name cannot be set");
    assert.equal(await controlExec(socket, clone.id, ["/bin/hostname", "named-over-control"], CAP_SYS_ADMIN, 10_000), 0);
    assert.equal((await gvisor.exec(clone.id, ["/bin/hostname"])).stdout.trim(), "named-over-control");
    assert.ok(await gvisor.setHostname(clone.id, BUSYBOX_ROOTFS, clone.id));
    assert.equal((await gvisor.exec(clone.id, ["/bin/hostname"])).stdout.trim(), clone.id);
    await assert.rejects(controlExec(socket, clone.id, ["/no/such/program"], 0, 10_000), /ExecuteAsync failed/);
  });

  test("lmvm-init --sockets tells a checkpoint of TCP connections and of UDP sockets on the sandbox's own address; the checkpoint refuses the latter, naming them", async () => {
    const network = await nets.create();
    networks.push(network);
    // A DNS server on the host end that never answers: the sandbox's lookups keep a connected UDP socket open.
    const silent = createSocket("udp4");
    await new Promise<void>((resolve) => silent.bind(53, network.hostIp, resolve));
    const s: SandboxSpec = {
      ...spec("sbx-sockets", network),
      config: { Cmd: ["/bin/sh", "-c", `(while true; do nslookup example.com ${network.hostIp}; done) >/dev/null 2>&1 & (while true; do sleep 1000 | nc -l -p 9000; done) & exec sleep 100000`], Env: ["PATH=/bin"] },
    };
    made.push({ spec: s });
    try {
      await gvisor.run(s);
      const socket = runningSandbox(join(dir, "runsc"), s.id)!;
      const bits = () => controlExec(socket, s.id, ["/.lmvm-init", "--sockets"], 0, 10_000);
      await eventually(async () => ((await bits()) === 2 ? true : undefined), "a lookup's UDP socket, and no TCP connection but the listener", 20_000);
      // nc may not listen yet (bits 2 says only that no TCP socket but a listener is there): asked again until it does.
      const held = await eventually(() => new Promise<Socket | undefined>((resolve) => {
        const c = connect(9000, network.sandboxIp, () => resolve(c)).on("error", () => resolve(undefined));
      }), "nc to listen on port 9000", 20_000);
      try {
        await eventually(async () => ((await bits()) === 3 ? true : undefined), "the TCP connection too", 20_000);
      } finally {
        held.destroy();
      }
      await assert.rejects(
        gvisor.checkpoint(s.id, join(dir, "sockets-checkpoint"), { sandboxIp: network.sandboxIp, patienceMs: 2_000 }),
        new RegExp(`UDP sockets on its own address \\(${network.sandboxIp.replaceAll(".", "\\.")}:\\d+ -> ${network.hostIp.replaceAll(".", "\\.")}:53`),
      );
      assert.equal((await gvisor.list()).find((x) => x.id === s.id)?.status, "running", "a refused checkpoint leaves the sandbox running");
    } finally {
      silent.close();
    }
  });

  test("a namespace a killed server left before its owner marker is swept once old enough; namespaces with a veth or a process, and young ones, are kept", async () => {
    // Another server's namespaces (their markers are in a directory this one never reads).
    const other = new NetworkNamespaces("10.212.1.0/24", join(dir, "other-networks"));
    const inUse = await other.create();
    // What `ip netns add` leaves when its server is killed before writing the marker: only lo.
    const free = (n: number): number => (existsSync(`/var/run/netns/lmvm-${n}`) ? free(n + 1) : n);
    const stray = `lmvm-${free(9000)}`;
    execFileSync("ip", ["netns", "add", stray]);
    const busy = `lmvm-${free(9001)}`;
    execFileSync("ip", ["netns", "add", busy]);
    const sleeper = spawn("ip", ["netns", "exec", busy, "sleep", "60"], { stdio: "ignore" });
    try {
      await eventually(async () => (execFileSync("ip", ["netns", "pids", busy], { encoding: "utf8" }).trim() ? true : undefined), "the process in its namespace", 10_000);
      const early = await nets.sweepStray(60_000);
      assert.ok(!early.removed.includes(Number(stray.slice(5))), "the stray namespace is not old enough yet");
      assert.ok(early.young >= 1, "the stray namespace is counted as too young to judge");
      assert.ok(existsSync(`/var/run/netns/${stray}`));
      await new Promise((r) => setTimeout(r, 1100));
      const late = await nets.sweepStray(1000);
      assert.ok(late.removed.includes(Number(stray.slice(5))), `the stray namespace is removed: ${JSON.stringify(late)}`);
      assert.ok(!existsSync(`/var/run/netns/${stray}`));
      assert.ok(existsSync(inUse.path), "another server's namespace (with its veth) is kept");
      assert.ok(existsSync(`/var/run/netns/${busy}`), "a namespace with a process in it is kept");
      for (const n of networks) assert.ok(existsSync(n.path), "this server's own namespaces are kept");
    } finally {
      sleeper.kill("SIGKILL");
      await other.destroy(inUse);
      for (const n of [stray, busy]) if (existsSync(`/var/run/netns/${n}`)) execFileSync("ip", ["netns", "del", n]);
    }
  });

  test("destroying sandboxes and namespaces leaves nothing running", async () => {
    for (const { spec: s } of made.splice(0)) {
      await gvisor.destroy(s.id);
      Gvisor.forget(s);
    }
    assert.deepEqual(await gvisor.list(), []);
    const paths = networks.map((n) => n.path);
    for (const n of networks.splice(0)) await nets.destroy(n);
    // Only ours: other tests running at the same time have namespaces of their own.
    assert.deepEqual(nets.owned(), []);
    assert.deepEqual(paths.filter((p) => existsSync(p)), []);
    const procs = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir);
      } catch {
        return false;
      }
    });
    assert.deepEqual(procs, [], "no runsc process of this test survives");
  });
});
