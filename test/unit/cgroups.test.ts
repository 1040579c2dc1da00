// A sandbox's cgroup figures on both layouts runsc creates: cgroup v1 (and
// hybrid hosts) with one directory per controller, and a unified cgroup v2
// host (a stock Debian 12) with one directory for all. The fixtures hold the
// kernel's own file formats.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SandboxCgroups, untilQuiet } from "../../src/runtime/index.js";
import { tempDir } from "../support/platform.js";

const ID = "microvm-0123456789abcdef0";

function files(root: string, tree: Record<string, string>): string {
  for (const [path, text] of Object.entries(tree)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

/** A v1 host where cpu and cpuacct are separate hierarchies, as on this machine. */
function v1(): string {
  return files(tempDir(), {
    [`cpu/${ID}/cpu.stat`]: "nr_periods 40\nnr_throttled 30\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n",
    [`cpuacct/${ID}/cpuacct.usage`]: "4250000000\n",
    [`memory/${ID}/memory.usage_in_bytes`]: "283115520\n",
    [`memory/${ID}/memory.oom_control`]: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    "memory/cgroup.procs": "",
    "unified/cgroup.controllers": "hugetlb\n", // hybrid: the unified hierarchy exists but holds no cpu or memory
  });
}

const V2_CPU_STAT = "usage_usec 4250000\nuser_usec 4000000\nsystem_usec 250000\nnr_periods 40\nnr_throttled 30\nthrottled_usec 2500000\nnr_bursts 0\nburst_usec 0\n";
const V2_MEMORY_EVENTS = "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n";

/** A v2-only host: runsc's cgroupfs driver puts the sandbox at /sys/fs/cgroup/<id>. */
function v2(): string {
  return files(tempDir(), {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
    [`${ID}/cpu.stat`]: V2_CPU_STAT,
    [`${ID}/memory.current`]: "283115520\n",
    [`${ID}/memory.events`]: V2_MEMORY_EVENTS,
  });
}

for (const [layout, make] of [["v1", v1], ["v2", v2]] as const) {
  test(`cgroup ${layout}: CPU time, throttling, memory in use and an OOM kill are read`, () => {
    const cgroups = new SandboxCgroups(make());
    assert.equal(cgroups.layout, layout);
    assert.equal(cgroups.cpuUsageMicros(ID), 4_250_000);
    assert.deepEqual(cgroups.cpuThrottling(ID), { periods: 40, throttled: 30 });
    assert.equal(cgroups.memoryInUse(ID), 283_115_520);
    assert.equal(cgroups.oomKilled(ID), true);
  });

  test(`cgroup ${layout}: a warm-pool clone made at the least CPU share gets the default share at its claim`, () => {
    const root = make();
    const file = layout === "v2" ? join(root, ID, "cpu.weight") : join(root, "cpu", ID, "cpu.shares");
    writeFileSync(file, layout === "v2" ? "1\n" : "2\n"); // what runsc wrote from the spec's shares: 2
    new SandboxCgroups(root).foreground(ID);
    assert.equal(readFileSync(file, "utf8"), layout === "v2" ? "100" : "1024");
    assert.throws(() => new SandboxCgroups(root).foreground("microvm-fffffffffffffffff"), /cannot give sandbox microvm-f+ its CPU share \(.*microvm-f+.*\)/);
  });

  test(`cgroup ${layout}: a sandbox without cgroups reads as unknown, not as an error`, () => {
    const cgroups = new SandboxCgroups(make());
    const other = "microvm-fffffffffffffffff";
    assert.equal(cgroups.cpuUsageMicros(other), undefined);
    assert.equal(cgroups.cpuThrottling(other), undefined);
    assert.equal(cgroups.memoryInUse(other), 0);
    assert.equal(cgroups.oomKilled(other), false);
  });
}

test("cgroup v1: removing a dead sandbox's cgroups removes its empty directory in every controller", () => {
  const root = files(tempDir(), { "cpu/cgroup.procs": "", "cpuacct/cgroup.procs": "", "memory/cgroup.procs": "", "pids/cgroup.procs": "" });
  for (const c of ["cpu", "cpuacct", "memory"]) mkdirSync(join(root, c, ID));
  new SandboxCgroups(root).remove(ID);
  for (const c of ["cpu", "cpuacct", "memory"]) assert.ok(!existsSync(join(root, c, ID)), c);
});

test("cgroup v2: removing a dead sandbox's cgroup removes its one directory", () => {
  const root = files(tempDir(), { "cgroup.controllers": "cpu memory\n" });
  mkdirSync(join(root, ID));
  new SandboxCgroups(root).remove(ID);
  assert.ok(!existsSync(join(root, ID)));
});

test("cgroup v2 under runsc --systemd-cgroup: the sandbox's scope in system.slice is read", () => {
  const root = files(tempDir(), {
    "cgroup.controllers": "cpu memory\n",
    [`system.slice/runsc-${ID}.scope/cpu.stat`]: V2_CPU_STAT,
    [`system.slice/runsc-${ID}.scope/memory.events`]: V2_MEMORY_EVENTS,
  });
  const cgroups = new SandboxCgroups(root);
  assert.equal(cgroups.cpuUsageMicros(ID), 4_250_000);
  assert.equal(cgroups.oomKilled(ID), true);
});

test("this host's own cgroups are read with the layout it mounts", { skip: !existsSync("/sys/fs/cgroup") }, () => {
  const cgroups = new SandboxCgroups();
  const unifiedOnly = existsSync("/sys/fs/cgroup/cgroup.controllers");
  assert.equal(cgroups.layout, unifiedOnly ? "v2" : "v1");
});

test("untilQuiet ends at the first quiet window after minMs, or at maxMs while busy", async () => {
  const windowMs = 50;
  // A CPU counter busy (a whole core over the window) on the reads busy(n) names; n = 0 is the first read.
  const counter = (busy: (n: number) => boolean) => {
    let reads = 0;
    let micros = 0;
    const read = () => {
      if (reads > 0 && busy(reads)) micros += windowMs * 1000;
      reads++;
      return micros;
    };
    return { read, reads: () => reads };
  };
  const opts = { windowMs, share: 0.1 };
  const quiet = counter(() => false);
  await untilQuiet(quiet.read, { ...opts, maxMs: 5_000 });
  assert.equal(quiet.reads(), 2, "quiet from the start, no minMs: one window");
  const early = counter(() => false);
  assert.ok((await untilQuiet(early.read, { ...opts, minMs: 300, maxMs: 5_000 })) >= 300, "quiet windows before minMs do not end it");
  const busyFirst = counter((n) => n <= 5);
  await untilQuiet(busyFirst.read, { ...opts, minMs: 100, maxMs: 5_000 });
  assert.equal(busyFirst.reads(), 7, "busy for five windows past minMs: the first quiet window after them ends it");
  const busy = counter(() => true);
  assert.ok((await untilQuiet(busy.read, { ...opts, minMs: 100, maxMs: 300 })) >= 300, "busy all along: maxMs ends it");
  let reads = 0;
  await untilQuiet(() => (reads++, undefined), { ...opts, minMs: 300, maxMs: 5_000 });
  assert.equal(reads, 1, "no counter (no cgroup): no window waited");
});
