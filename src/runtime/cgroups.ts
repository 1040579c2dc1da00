// A sandbox's figures from its host cgroups: CPU time used, CFS throttling,
// memory in use, OOM kills; the CPU share of a claimed warm-pool clone; and
// the removal of cgroups runsc left behind. Nothing else in lmvm reads or
// writes /sys/fs/cgroup.
//
// Where runsc puts a sandbox's cgroup: runsc 20240729 sets an empty
// Linux.CgroupsPath to "/<container id>" and, without --systemd-cgroup (lmvm
// never passes it), creates that path itself (the "cgroupfs" driver):
// - cgroup v1 (and hybrid hosts, where runsc still uses v1 for every
//   controller): /sys/fs/cgroup/<controller>/<id>, one directory per
//   controller; cpuacct may be its own hierarchy or share cpu's
//   (cpu,cpuacct with symlinks), so it is read through its own name.
// - cgroup v2 only (a stock Debian 12 host): /sys/fs/cgroup/<id>, one
//   directory for every controller. With --systemd-cgroup it would be
//   /sys/fs/cgroup/system.slice/runsc-<id>.scope; that is looked at too.
// A host is v2-only when the root of its cgroup mount is the unified
// hierarchy (it has cgroup.controllers); on a hybrid host the unified
// hierarchy sits at /sys/fs/cgroup/unified without the cpu and memory
// controllers, so v1 is the one to read.

import { existsSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type CgroupLayout = "v1" | "v2";

/**
 * Waits until a sandbox is quiet: it used under `share` of a core over a
 * window of `windowMs` (by `usageMicros`, its CPU time so far) ending at least
 * `minMs` after the wait began, or `maxMs` have passed, or `stop` says so
 * (`signal` aborted, say); resolves with the ms waited. An idle sandbox is not
 * at zero: on `systrap` gVisor's own fast-path monitor alone takes about 4% of
 * a core (traced: 14-40 ms per 500 ms window), so a share of 0.1 is the usual
 * bar. Undefined usage (no cgroup) ends the wait.
 */
export async function untilQuiet(usageMicros: () => number | undefined, opts: { windowMs: number; share: number; maxMs: number; minMs?: number; stop?: () => boolean }): Promise<number> {
  const began = performance.now();
  let before = usageMicros();
  while (before !== undefined && performance.now() - began < opts.maxMs && !opts.stop?.()) {
    await new Promise((r) => setTimeout(r, opts.windowMs));
    const now = usageMicros();
    if (now === undefined) break;
    const quiet = now - before < opts.share * opts.windowMs * 1000;
    before = now;
    if (quiet && performance.now() - began >= (opts.minMs ?? 0)) break;
  }
  return Math.round(performance.now() - began);
}

export interface CpuThrottling {
  /** CFS scheduling periods the sandbox ran in. */
  periods: number;
  /** Periods in which its quota ran out and it was held back. */
  throttled: number;
}

export class SandboxCgroups {
  readonly layout: CgroupLayout;

  /** `root` is where the cgroup filesystems are mounted; tests point it at a fixture directory. */
  constructor(readonly root = "/sys/fs/cgroup") {
    this.layout = existsSync(join(root, "cgroup.controllers")) ? "v2" : "v1";
  }

  /** The sandbox's v2 cgroup directory, or where it would be. */
  private unified(id: string): string {
    const systemd = join(this.root, "system.slice", `runsc-${id}.scope`);
    const own = join(this.root, id);
    return !existsSync(own) && existsSync(systemd) ? systemd : own;
  }

  private read(path: string): string | undefined {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return undefined;
    }
  }

  /** CPU time the sandbox has used since it started, in microseconds; undefined when it has no cgroup. */
  cpuUsageMicros(id: string): number | undefined {
    if (this.layout === "v2") {
      const stat = this.read(join(this.unified(id), "cpu.stat"));
      return stat === undefined ? undefined : field(stat, "usage_usec");
    }
    const ns = this.read(join(this.root, "cpuacct", id, "cpuacct.usage"));
    return ns === undefined ? undefined : Number(ns.trim()) / 1000 || 0;
  }

  /** CFS bandwidth counters of the sandbox's CPU cgroup; undefined when it has none. */
  cpuThrottling(id: string): CpuThrottling | undefined {
    const stat = this.read(this.layout === "v2" ? join(this.unified(id), "cpu.stat") : join(this.root, "cpu", id, "cpu.stat"));
    return stat === undefined ? undefined : { periods: field(stat, "nr_periods"), throttled: field(stat, "nr_throttled") };
  }

  /**
   * Gives a sandbox made in the background (a warm-pool clone restored at the
   * least CPU share, SandboxSpec.background) the default share every other
   * sandbox has: cpu.shares 1024 (v1), cpu.weight 100 (v2). Throws naming the
   * file when it cannot be written.
   */
  foreground(id: string): void {
    const [file, value] = this.layout === "v2" ? [join(this.unified(id), "cpu.weight"), "100"] : [join(this.root, "cpu", id, "cpu.shares"), "1024"];
    try {
      writeFileSync(file, value);
    } catch (err) {
      throw new Error(`cannot give sandbox ${id} its CPU share (${file}): ${(err as Error).message}`);
    }
  }

  /** Bytes of memory the sandbox's cgroup holds now; 0 when it has none. */
  memoryInUse(id: string): number {
    const text = this.read(this.layout === "v2" ? join(this.unified(id), "memory.current") : join(this.root, "memory", id, "memory.usage_in_bytes"));
    return Number(text?.trim()) || 0;
  }

  /** Whether the kernel's OOM killer struck inside the sandbox's memory cgroup. */
  oomKilled(id: string): boolean {
    // v1 memory.oom_control and v2 memory.events both carry an "oom_kill <count>" line.
    const text = this.read(this.layout === "v2" ? join(this.unified(id), "memory.events") : join(this.root, "memory", id, "memory.oom_control"));
    return text !== undefined && field(text, "oom_kill") > 0;
  }

  /**
   * Removes the sandbox's empty cgroups: runsc leaves them behind when the
   * sandbox died on its own (killed, or a checkpoint that failed). A cgroup
   * still in use stays, harmlessly.
   */
  remove(id: string): void {
    const dirs = this.layout === "v2" ? [this.unified(id)] : this.controllers().map((c) => join(this.root, c, id));
    for (const dir of dirs) {
      try {
        rmdirSync(dir);
      } catch {
        // absent, or still in use
      }
    }
  }

  private controllers(): string[] {
    try {
      return readdirSync(this.root);
    } catch {
      return [];
    }
  }
}

/** The number after `name` at the start of a line of a flat-keyed cgroup file ("name 123"); 0 when absent. */
function field(text: string, name: string): number {
  return Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1] ?? 0);
}
