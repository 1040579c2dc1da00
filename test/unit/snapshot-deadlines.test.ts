// The build-time snapshot's phases end by their deadlines, or at once when the
// build's signal aborts, and remove what they started either way. runsc is
// replaced by a stand-in that never finishes what it is asked unless killed.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { limitsOf } from "../../src/core/index.js";
import type { NetworkNamespaces, SandboxNetwork } from "../../src/net/index.js";
import { SnapshotCancelled, SnapshotFailure, Snapshotter, type Gvisor, type SnapshotRequest } from "../../src/runtime/index.js";
import { udpOnOwnAddress } from "../../src/runtime/gvisor.js";
import { tempDir } from "../support/platform.js";

/** A runsc whose `stuck` command waits until its signal aborts (as a killed process would end), recording what is left running. */
function fakeRuntime(stuck: "run" | "checkpoint" | "restore", deaf = false) {
  const running = new Set<string>();
  const nets = new Set<number>();
  let next = 0;
  // A deaf one ignores the kill, as a process stuck in the kernel would.
  const wait = (signal?: AbortSignal) =>
    new Promise<void>((_, reject) => deaf || signal?.addEventListener("abort", () => reject(new Error("runsc killed")), { once: true }));
  const gvisor = {
    async run(spec: { id: string; dir: string }, signal?: AbortSignal) {
      mkdirSync(spec.dir, { recursive: true });
      running.add(spec.id);
      if (stuck === "run") await wait(signal);
    },
    async checkpoint(id: string, dir: string, opts: { signal?: AbortSignal }) {
      if (stuck === "checkpoint") await wait(opts.signal);
      mkdirSync(dir, { recursive: true });
      running.delete(id);
    },
    async restore(spec: { id: string; dir: string }, _dir: string, signal?: AbortSignal) {
      mkdirSync(spec.dir, { recursive: true });
      running.add(spec.id);
      if (stuck === "restore") await wait(signal);
    },
    async destroy(id: string) {
      running.delete(id);
    },
    async list() {
      return [...running].map((id) => ({ id, status: "running", pid: 0 }));
    },
  } as unknown as Gvisor;
  const namespaces = {
    async create(): Promise<SandboxNetwork> {
      const index = next++;
      nets.add(index);
      return { index, name: `n${index}`, path: "", hostInterface: "", sandboxInterface: "", hostIp: "192.0.2.1", sandboxIp: "192.0.2.2", prefixLength: 30 };
    },
    async destroy(net: SandboxNetwork) {
      nets.delete(net.index);
    },
  } as unknown as NetworkNamespaces;
  return { gvisor, namespaces, running, nets };
}

function request(dir: string, signal?: AbortSignal): SnapshotRequest {
  return { id: "b1", rootfs: dir, config: { Cmd: ["app"] }, env: {}, limits: limitsOf({}), dir, log: () => {}, signal: signal ?? new AbortController().signal };
}

for (const [phase, stuck] of [["boot", "run"], ["checkpoint", "checkpoint"], ["validate", "restore"]] as const) {
  test(`a ${phase} phase that passes its deadline fails the snapshot naming the phase, and leaves no sandbox, namespace or directory`, { timeout: 30_000 }, async () => {
    const work = tempDir("lmvm-snapdl-");
    const fake = fakeRuntime(stuck);
    const snapshotter = new Snapshotter(fake.gvisor, fake.namespaces, join(work, "sandboxes"), { [phase]: 1, ready: 1 });
    await assert.rejects(snapshotter.snapshot(request(work)), (err: Error) => {
      assert.ok(err instanceof SnapshotFailure, err.message);
      assert.match(err.message, new RegExp(`^The ${phase} phase did not finish within 1 s \\(.+\\)\\.$`));
      return true;
    });
    assert.deepEqual([...fake.running], [], "no sandbox left");
    assert.deepEqual([...fake.nets], [], "no network namespace left");
    assert.ok(!existsSync(join(work, "sandboxes", `b1-boot`)) && !existsSync(join(work, "sandboxes", "b1-validate")), "no sandbox directory left");
    assert.ok(!existsSync(join(work, "snapshot")), "no half snapshot left");
  });
}

test("a phase whose command ignores the kill is given up on after a short grace, and the snapshot still cleans up", { timeout: 30_000 }, async () => {
  const work = tempDir("lmvm-snapdl-");
  const fake = fakeRuntime("checkpoint", true);
  const snapshotter = new Snapshotter(fake.gvisor, fake.namespaces, join(work, "sandboxes"), { checkpoint: 1 });
  await assert.rejects(snapshotter.snapshot(request(work)), (err: Error) => err instanceof SnapshotFailure && /^The checkpoint phase did not finish within 1 s/.test(err.message));
  assert.deepEqual([...fake.running], []);
  assert.deepEqual([...fake.nets], []);
});

test("aborting the request's signal stops a snapshot at once and removes what it started", { timeout: 30_000 }, async () => {
  const work = tempDir("lmvm-snapdl-");
  const fake = fakeRuntime("checkpoint");
  const ctl = new AbortController();
  const snapshotter = new Snapshotter(fake.gvisor, fake.namespaces, join(work, "sandboxes"));
  const pending = snapshotter.snapshot(request(work, ctl.signal));
  // The /ready hook is off: the app gets SETTLE_SECONDS, then the checkpoint hangs until killed.
  setTimeout(() => ctl.abort(), 2500);
  await assert.rejects(pending, SnapshotCancelled);
  assert.deepEqual([...fake.running], []);
  assert.deepEqual([...fake.nets], []);
});

test("a signal aborted before the snapshot starts runs nothing", { timeout: 30_000 }, async () => {
  const work = tempDir("lmvm-snapdl-");
  const fake = fakeRuntime("run");
  const snapshotter = new Snapshotter(fake.gvisor, fake.namespaces, join(work, "sandboxes"));
  await assert.rejects(snapshotter.snapshot(request(work, AbortSignal.abort())), SnapshotCancelled);
  assert.deepEqual([...fake.running], []);
  assert.deepEqual([...fake.nets], []);
});

test("UDP sockets on the sandbox's own address are found in /proc/net/udp and udp6; unbound, loopback and unconnected wildcard ones are not", () => {
  const udp = [
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
    "    5: 0200D50A:E476 35FFFF0A:0035 01 00000000:00000000 00:00000000 00000000     0        0        6 2 0000000000000000 0",
    "    6: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0        6 2 0000000000000000 0",
    "    7: 0100007F:1F90 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0        6 2 0000000000000000 0",
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
    "    8: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0",
    "    9: 0000000000000000FFFF00000200D50A:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0",
  ].join("\n");
  assert.deepEqual(udpOnOwnAddress(udp), ["10.213.0.2:58486 -> 10.255.255.53:53", "10.213.0.2:53 -> unconnected"]);
});
