// Whether the host's CPUs have room for one more MicroVM, judged from the
// MicroVMs themselves, never from the load average. The 1-minute load average
// lags by a minute, counts every process on the host and rises with runnable
// threads that barely run (a burst of 50 restores left an idle 2-core host
// refusing MicroVMs for a minute at "load average 24.2"). Two figures instead:
// - Given: the baseline vCPUs of the live sandboxes (their size's baseline,
//   a quarter of a vCPU for the smallest; their CFS quota is the size's peak,
//   up to four times that, what a burst may use) plus those promised to
//   starts under way. The host gives out VCPUS_PER_CORE baseline vCPUs per core:
//   an idle sandbox under systrap uses 3.5-5% of a core (bench/idle.ts; all
//   but a trace of it is gVisor's sentry, not the app), so
//   eight of them take a third of a core and leave the rest for bursts. Past
//   that, a host of busy MicroVMs would run each far below what it was given.
// - Used: the CPU time their cgroups used over each of the last sampling
//   windows (about SAMPLE_MS each). When it reaches SATURATED_SHARE of every
//   core in SATURATED_WINDOWS windows in a row, a new MicroVM would only slow
//   the others down. One window is not enough: a restored Node app runs a full
//   garbage collection of V8's memory reducer a few seconds after its restore
//   (0.75-0.85 s at 95-130% of a core for a 90 MB heap), and two or three
//   MicroVMs resumed together can fill one 1 s window of a 2-core host that way
//   (the most likely cause, inferred and not traced, of two bench runs refused
//   with "used 1.9 of its 2 cores" and no request in flight).
// The window is sampled on a timer while any sandbox lives, so a RunMicrovm
// never waits for a sample; reading a few cgroup files a second costs nothing
// a sandbox would notice.

export const VCPUS_PER_CORE = 8;
const SATURATED_SHARE = 0.9;
const SATURATED_WINDOWS = 3;
const SAMPLE_MS = 1000;
/** A usage figure older than this says nothing about now. */
const STALE_MS = 3 * SAMPLE_MS;

export interface CpuRoomOptions {
  cores: number;
  /**
   * CPU time a MicroVM's sandbox has used since it started, in microseconds (its cgroup's
   * counter), and which counter that is (the sandbox's id): a MicroVM gets a new sandbox, with a
   * counter from zero, at each resume, and two readings of different counters say nothing.
   */
  usageMicros: (id: string) => { counter: string; micros: number } | undefined;
  now?: () => number;
  /** Samples on a timer of this period while sandboxes live; 0 leaves sampling to `sample()` (tests). */
  sampleEveryMs?: number;
}

interface Sample {
  at: number;
  usage: Map<string, number>;
}

export class CpuRoom {
  /** vCPUs of each live sandbox. */
  private readonly given = new Map<string, number>();
  private last: Sample | undefined;
  /** Cores each live sandbox used over each of the last SATURATED_WINDOWS windows, oldest first (by holder id; those with two readings). */
  private recent: { windowMs: number; at: number; byHolder: Map<string, number> }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: CpuRoomOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** A sandbox of `vcpus` baseline vCPUs now lives. */
  hold(id: string, vcpus: number): void {
    this.given.set(id, vcpus);
    const every = this.opts.sampleEveryMs ?? SAMPLE_MS;
    if (!this.timer && every > 0) {
      this.sample();
      this.timer = setInterval(() => this.sample(), every);
      this.timer.unref();
    }
  }

  /**
   * The sandbox is gone (suspended or terminated): its share of the last window goes with it. A
   * suspend's checkpoint runs in the sandbox and may take every core for a second; that use says
   * nothing about the room left once the sandbox is gone, and a resume right after the suspend
   * was refused for it ("its CPUs are saturated").
   */
  drop(id: string): void {
    this.given.delete(id);
    for (const w of this.recent) w.byHolder.delete(id);
    if (this.given.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.last = undefined;
      this.recent = [];
    }
  }

  /** Ids of the live sandboxes. */
  holders(): string[] {
    return [...this.given.keys()];
  }

  /** Reads every live sandbox's CPU counter, and their usage since the previous reading. */
  sample(): void {
    const at = this.now();
    const usage = new Map<string, number>();
    const counters = new Map<string, string>();
    for (const id of this.given.keys()) {
      const read = this.opts.usageMicros(id);
      if (read === undefined) continue;
      usage.set(read.counter, read.micros);
      counters.set(id, read.counter);
    }
    const prev = this.last;
    this.last = { at, usage };
    if (!prev || at <= prev.at) return;
    const windowMs = at - prev.at;
    const byHolder = new Map<string, number>();
    // A sandbox missing from either reading started or ended within the window (a resumed
    // MicroVM's new sandbox among them): its share is unknown.
    for (const [id, counter] of counters) {
      const micros = usage.get(counter)!;
      const before = prev.usage.get(counter);
      if (before === undefined || micros < before) continue;
      byHolder.set(id, (micros - before) / 1000 / windowMs);
    }
    this.recent = [...this.recent, { windowMs, at, byHolder }].slice(-SATURATED_WINDOWS);
  }

  /** Why one more sandbox of `vcpus` does not fit, given `promised` vCPUs for starts under way; undefined when it fits. */
  shortage(vcpus: number, promised: number): string | undefined {
    const cores = this.opts.cores;
    const held = [...this.given.values()].reduce((n, v) => n + v, 0) + promised;
    const limit = cores * VCPUS_PER_CORE;
    if (held + vcpus > limit + 1e-9) {
      return `its CPUs are all given out: its MicroVMs hold ${figure(held)} baseline vCPUs, this one needs ${figure(vcpus)}, and the host gives out at most ${limit} (${VCPUS_PER_CORE} per core on ${cores} cores)`;
    }
    const windows = this.recent;
    const fresh = windows.length === SATURATED_WINDOWS && this.now() - windows.at(-1)!.at <= STALE_MS;
    const used = windows.map((w) => [...w.byHolder.values()].reduce((n, c) => n + c, 0));
    if (fresh && used.every((u) => u >= cores * SATURATED_SHARE)) {
      const ms = windows.reduce((n, w) => n + w.windowMs, 0);
      const mean = windows.reduce((n, w, i) => n + used[i]! * w.windowMs, 0) / ms;
      return `its CPUs are saturated: its MicroVMs used ${mean.toFixed(1)} of its ${cores} cores over the last ${(ms / 1000).toFixed(1)} s`;
    }
    return undefined;
  }
}

/** A vCPU count as people write it: 16, 0.25, 3.75. */
function figure(vcpus: number): string {
  return String(Math.round(vcpus * 100) / 100);
}
