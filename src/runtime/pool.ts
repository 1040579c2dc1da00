// Warm pools: for an image version with a pool size, clones of its build-time
// snapshot already restored, each into its own network namespace, cgroup and
// sandbox directory (runsc id pool-<random>, directory <pool dir>/<that id>),
// left to run for a while and until quiet (the app's own work after a restore
// is done off the claim's path: QUIET), then paused (`runsc pause`: no CPU
// while pooled), and unpaused at its claim
// by the call `runsc resume` makes, on the sandbox's control socket
// (control-socket.ts): starting runsc, a Go program, would cost 50-75 ms on an
// idle host and 200-300 ms on a busy one, on RunMicrovm's path. Not frozen
// with the cgroup freezer: `runsc list` hangs on a frozen sandbox, and the
// server lists its sandboxes. Each clone is made for a
// MicroVM id of its own, fresh and random like any (newMicrovmId): before it
// is paused its hostname is set to that id, as a restored sandbox's is, so
// that no `runsc exec` is left for the claim. RunMicrovm claims a clone before
// it records its MicroVM (claim), and records the MicroVM with the clone's id;
// run() of that MicroVM takes the clone (take): the MicroVM's record names the
// clone's sandbox, the clone's log file becomes the MicroVM's, its firewall
// chain, DNS, shaping and metadata service are made the MicroVM's, and it is
// unpaused and given /run exactly as a restored sandbox is. An id is handed
// out once: a clone claimed for a run that recorded no MicroVM goes back to
// the pool (unclaim) with its id still unused; one whose MicroVM is recorded
// is that MicroVM's or is destroyed, never handed to another run.
//
// What a restore fixes: gVisor takes the namespace's routes at restore, and
// routes added or removed later are not seen inside. A clone is therefore
// made with one routing shape (routesFor of an egress policy: a default route
// for INTERNET_EGRESS, each granted CIDR for connectors, the metadata address
// alone without egress) and only a run whose egress has the same routes may
// claim it; every other run is a miss and restores as without a pool. The
// shape clones are made with is that of the version's last RunMicrovm, or,
// before any, that of a run naming no connector (the server's default egress).
// A clone's firewall chain, DNS and shaping are those of the egress it is made
// with, from its restore on (as a restored MicroVM's are): a claim by a run of
// that very egress leaves them standing and only gives the metadata service
// the MicroVM's execution role (no credentials before the claim).
// Whether the app's output is kept is fixed at restore too (runsc holds the
// file): a clone is made with the version's logging, and a run asking
// otherwise misses.
//
// The pool is in this process's memory only: a crash leaves clones that the
// next start's reap destroys (sandboxes no RUNNING MicroVM owns, namespaces
// not kept, directories under the pool dir no record names).

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { limitsOf, newMicrovmId, UNNAMED_HOOKS_PORT, type EgressPolicy, type ImageVersion, type WarmPoolTarget } from "../core/index.js";
import { routesFor, type EgressGateway, type NetworkNamespaces, type SandboxNetwork } from "../net/index.js";
import { inBackground, removeTree } from "../os/index.js";
import { untilQuiet } from "./cgroups.js";
import type { Gvisor } from "./gvisor.js";

/** What a MicroVM needs from a clone to make it its sandbox. */
export interface Clone {
  /** runsc id, `pool-<random>`. */
  id: string;
  /** The MicroVM id the clone was made for: its hostname, and the id of the MicroVM that claims it. */
  microvmId: string;
  /** The sandbox's directory (bundle, overlay, disk). */
  dir: string;
  /** The app's output so far, to become the MicroVM's log; absent when the clone's logging is off. */
  logFile?: string;
  network: SandboxNetwork;
  /** routesFor(the egress it was restored with), joined. */
  shape: string;
  logging: boolean;
}

interface Pooled extends Clone {
  key: string;
  /** How long it ran after its restore before it was quiet and paused (untilQuiet). */
  settledMs?: number;
  /** Not paused: maturing, or claimed while it was (its claim needs no unpause). */
  running: boolean;
  /** Its pause is under way: not to be claimed or discarded until it is ready. */
  pausing?: boolean;
  /** Its mature() task, while it runs. */
  matured?: Promise<void>;
}

export interface PoolFigures {
  imageArn: string;
  version: string;
  target: number;
  ready: number;
  /** Restored and running until quiet, to be paused and ready (pools only). */
  maturing?: number;
}

export interface WarmPoolOptions {
  gvisor: Gvisor;
  nets: NetworkNamespaces;
  egress: EgressGateway;
  /** Where clones keep their sandbox directories and logs. */
  dir: string;
  /** The version's rootfs, image config and snapshot directory. */
  built: (version: ImageVersion) => { rootfs: string; config: import("./gvisor.js").ImageConfig; snapshot: string };
  /**
   * Holds host room for one more sandbox of this version when there is room
   * above the capacity reserve (memory and disk), returning a release; or
   * returns undefined. A pool never takes the host below its reserve.
   */
  reserve: (version: ImageVersion) => (() => void) | undefined;
  /** CPU time a sandbox has used since it started, in microseconds (its cgroup); undefined when unknown. */
  cpuUsageMicros: (id: string) => number | undefined;
  log?: (event: Record<string, unknown>) => void;
}

const RESTORE_SECONDS = 120;
/** How long the refill waits before looking again when the host had no room. */
const NO_ROOM_RETRY_MS = 5_000;
/**
 * A claim's refill begins this long after the claim: the claimed clone's
 * unpause, /run and first requests get the host's CPUs, not a restore beside them.
 */
const REFILL_AFTER_CLAIM_MS = 1_500;
/**
 * A restored clone runs at least 10 s, and then until it is quiet (untilQuiet:
 * under 10% of a core over 500 ms; at most 30 s in all), before it is paused:
 * the app's own work after a restore is done then, in the background, and not
 * on the first requests after a claim. A restore makes the timers that came
 * due while the app was saved fire at once, and runtimes re-arm their
 * housekeeping from there: V8's memory reducer looks again 8 s later and then
 * runs a full garbage collection (0.75-0.85 s for the snapshots bench's 90 MB
 * heap, traced with --trace-gc). A clone paused at its first quiet moment ran
 * it on the first request after its claim, which then waited 0.3-3 s; and a
 * clone's wait in the pool makes every timer of the app come due. Clones mature
 * side by side (mature()): the next restore does not wait for one, and a claim
 * with no paused clone takes a maturing one rather than restoring.
 */
const QUIET = { windowMs: 500, share: 0.1, minMs: 10_000, maxMs: 30_000 };

export const keyOf = (imageArn: string, version: string) => `${imageArn}\u0000${version}`;
/** The image ARN and version keyOf joined. */
const versionOf = (key: string) => key.split("\u0000") as [string, string];
export const shapeOf = (egress: EgressPolicy | undefined) => routesFor(egress).slice().sort().join(",");

export class WarmPool {
  private targets = new Map<string, WarmPoolTarget>();
  /** The egress of each version's last RunMicrovm: the shape its clones are made with. */
  private readonly lastEgress = new Map<string, EgressPolicy>();
  private readonly ready: Pooled[] = [];
  /** Restored and running until they are quiet (mature()), then paused and ready. */
  private readonly maturing: Pooled[] = [];
  /** Clones claimed for a RunMicrovm, by the MicroVM id they were made for, until its run() takes them. */
  private readonly claimed = new Map<string, Pooled>();
  private refilling: Promise<void> | undefined;
  private again = false;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly hits = new Map<string, number>();
  private readonly misses = new Map<string, number>();

  constructor(private readonly opts: WarmPoolOptions) {}

  /** runsc ids and network indexes of the clones, which reap must not take for orphans. */
  held(): { ids: Set<string>; networks: Set<number>; dirs: Set<string> } {
    const all = [...this.ready, ...this.maturing, ...this.claimed.values()];
    return {
      ids: new Set(all.map((c) => c.id)),
      networks: new Set(all.map((c) => c.network.index)),
      dirs: new Set(all.map((c) => c.dir)),
    };
  }

  private shapeFor(target: WarmPoolTarget): string {
    return shapeOf(this.lastEgress.get(keyOf(target.version.imageArn, target.version.version)) ?? target.egress);
  }

  private egressFor(target: WarmPoolTarget): EgressPolicy {
    return this.lastEgress.get(keyOf(target.version.imageArn, target.version.version)) ?? target.egress;
  }

  /** Clones not wanted any more: of versions without a target, of another shape or logging, beyond a size (ready ones kept first). */
  private unwanted(): Pooled[] {
    const out: Pooled[] = [];
    const kept = new Map<string, number>();
    for (const c of [...this.ready, ...this.maturing.filter((m) => !m.pausing)]) {
      const t = this.targets.get(c.key);
      const n = kept.get(c.key) ?? 0;
      if (!t || c.shape !== this.shapeFor(t) || c.logging !== !t.version.config.logging?.disabled || n >= t.size) out.push(c);
      else kept.set(c.key, n + 1);
    }
    return out;
  }

  async setTargets(targets: WarmPoolTarget[]): Promise<void> {
    if (this.closed) return;
    this.targets = new Map(targets.filter((t) => t.size > 0).map((t) => [keyOf(t.version.imageArn, t.version.version), t]));
    // A clone being paused is ready in a moment: then it is judged with the others.
    await Promise.all(this.maturing.filter((c) => c.pausing).map((c) => c.matured));
    for (const c of this.unwanted()) await this.discard(c, "no longer wanted");
    this.kick();
  }

  /**
   * Claims a ready clone of this version whose routes and logging match the
   * run's, counting a hit, and answers the MicroVM id it was made for (take()
   * hands the clone over to that MicroVM); a miss when the version has a pool
   * but none fits.
   */
  claim(imageArn: string, version: string, egress: EgressPolicy, logging: boolean): string | undefined {
    const key = keyOf(imageArn, version);
    this.lastEgress.set(key, egress);
    const shape = shapeOf(egress);
    const fits = (c: Pooled) => c.key === key && c.shape === shape && c.logging === logging && !c.pausing;
    // A paused clone first; else one still maturing (restored, its housekeeping maybe not done) rather than a restore.
    const list = this.ready.some(fits) ? this.ready : this.maturing;
    const i = list.findIndex(fits);
    if (i < 0) {
      if (this.targets.has(key)) {
        this.misses.set(key, (this.misses.get(key) ?? 0) + 1);
        this.kick(); // the shape may have changed: clones of the old one go, the new one's are made
      }
      return undefined;
    }
    const [clone] = list.splice(i, 1);
    this.claimed.set(clone!.microvmId, clone!);
    this.hits.set(key, (this.hits.get(key) ?? 0) + 1);
    this.kickSoon();
    return clone!.microvmId;
  }

  /** The clone claimed for this MicroVM id, now the MicroVM's (or undefined); nobody else can take it. */
  take(microvmId: string): Clone | undefined {
    const clone = this.claimed.get(microvmId);
    this.claimed.delete(microvmId);
    return clone;
  }

  /** A claimed clone whose id no MicroVM got: back to the ready clones, its id still unused, and the hit not counted. */
  unclaim(microvmId: string): void {
    const clone = this.claimed.get(microvmId);
    if (!clone) return;
    this.claimed.delete(microvmId);
    this.hits.set(clone.key, Math.max(0, (this.hits.get(clone.key) ?? 0) - 1));
    if (this.closed) {
      void this.destroy(clone).catch((err: Error) => this.opts.log?.({ level: "error", msg: "warm pool clone not freed", sandboxId: clone.id, err: err.message }));
      return;
    }
    if (clone.running) this.startMaturing(clone); // claimed while it matured: it matures again, to be paused
    else this.ready.push(clone);
    this.kick(); // beyond the size, or of a shape no longer wanted: the refill destroys it
  }

  /**
   * Destroys one clone to give its memory back, of another version than
   * `prefer`'s first; false when the pool holds none.
   */
  async giveBack(imageArn: string, version: string): Promise<boolean> {
    const key = keyOf(imageArn, version);
    const all = [...this.ready, ...this.maturing.filter((m) => !m.pausing)];
    const c = all.find((x) => x.key !== key) ?? all[0];
    if (!c) return false;
    await this.discard(c, "memory needed for a MicroVM");
    return true;
  }

  figures(): { pools: PoolFigures[]; hits: PoolFigures[]; misses: PoolFigures[] } {
    const keys = new Set([...this.targets.keys(), ...this.ready.map((c) => c.key), ...this.maturing.map((c) => c.key)]);
    const pools = [...keys].map((k) => ({ imageArn: versionOf(k)[0], version: versionOf(k)[1], target: this.targets.get(k)?.size ?? 0, ready: this.ready.filter((c) => c.key === k).length, maturing: this.maturing.filter((c) => c.key === k).length }));
    const counted = (m: Map<string, number>) => [...m].map(([k, n]) => ({ imageArn: versionOf(k)[0], version: versionOf(k)[1], target: 0, ready: n }));
    return { pools, hits: counted(this.hits), misses: counted(this.misses) };
  }

  /** Stops refilling and destroys every clone. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    await this.refilling;
    await Promise.all(this.maturing.map((c) => c.matured));
    for (const c of [...this.ready, ...this.maturing]) await this.discard(c, "server stopping");
    // Claimed for runs that have not taken them: those runs restore instead.
    for (const [microvmId, c] of [...this.claimed]) {
      this.claimed.delete(microvmId);
      await this.destroy(c);
    }
  }

  private kick(): void {
    if (this.closed) return;
    if (this.refilling) {
      this.again = true;
      return;
    }
    if (this.retry) {
      clearTimeout(this.retry);
      this.retry = undefined;
    }
    // Its commands fork on a thread of their own: a refill's two dozen must not stall the event loop a claim needs.
    this.refilling = inBackground(() => this.refill())
      .catch((err: Error) => this.opts.log?.({ level: "error", msg: "warm pool refill failed", err: err.message }))
      .finally(() => {
        this.refilling = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Refills after REFILL_AFTER_CLAIM_MS; a refill under way or already due goes on as it is. */
  private kickSoon(): void {
    if (this.closed || this.retry) return;
    if (this.refilling) {
      this.kick();
      return;
    }
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.kick();
    }, REFILL_AFTER_CLAIM_MS);
    this.retry.unref();
  }

  /** Looks again after NO_ROOM_RETRY_MS (no room, or a clone that failed: a version that cannot be restored must not spin). */
  private later(): void {
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.kick();
    }, NO_ROOM_RETRY_MS);
    this.retry.unref();
  }

  /** One clone at a time, until every pool is full or the host has no room. */
  private async refill(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      for (const c of this.unwanted()) await this.discard(c, "no longer wanted");
      // A version snapshotted on another gVisor platform cannot be restored here (RunMicrovm refuses it too): it gets no clones.
      const short = [...this.targets.values()].find((t) => [...this.ready, ...this.maturing].filter((c) => c.key === keyOf(t.version.imageArn, t.version.version)).length < t.size && !this.opts.gvisor.mismatch(this.opts.built(t.version).snapshot, "its snapshot"));
      if (!short) return;
      const release = this.opts.reserve(short.version);
      if (!release) {
        this.opts.log?.({ msg: "warm pool waits for room", image: short.version.imageArn, version: short.version.version, ready: this.ready.length });
        this.later();
        return;
      }
      try {
        const clone = await this.make(short);
        if (this.closed) {
          await this.destroy(clone);
          return;
        }
        this.startMaturing(clone);
      } catch (err) {
        this.opts.log?.({ level: "error", msg: "warm pool clone failed", image: short.version.imageArn, version: short.version.version, err: (err as Error).message });
        // A version that cannot be restored must not spin: wait as for room.
        this.later();
        return;
      } finally {
        release();
      }
    }
  }

  private async make(target: WarmPoolTarget): Promise<Pooled> {
    const { version } = target;
    const built = this.opts.built(version);
    const egress = this.egressFor(target);
    const logging = !version.config.logging?.disabled;
    const limits = limitsOf(version.config);
    const id = `pool-${randomBytes(6).toString("hex")}`;
    const microvmId = newMicrovmId();
    const dir = join(this.opts.dir, id);
    mkdirSync(this.opts.dir, { recursive: true });
    const network = await this.opts.nets.create();
    const clone: Pooled = { id, microvmId, dir, network, key: keyOf(version.imageArn, version.version), shape: shapeOf(egress), logging, running: true, ...(logging ? { logFile: join(this.opts.dir, `${id}.log`) } : {}) };
    try {
      // The egress (routes, firewall chain, DNS, shaping) is the one the version's runs get, so that
      // a run of that egress finds it standing and only the metadata service's subject changes at
      // the claim (EgressGateway.adopt); the metadata service serves no one's credentials until then.
      await this.opts.egress.attach(network, egress, limits);
      const signal = AbortSignal.timeout(RESTORE_SECONDS * 1000);
      await this.opts.gvisor.restore(
        { id, rootfs: built.rootfs, config: built.config, env: {}, hooksPort: version.config.hooks?.port ?? UNNAMED_HOOKS_PORT, hostname: id, limits, network, dir, logFile: clone.logFile ?? "/dev/null", background: true },
        built.snapshot,
        signal,
      );
      // The identity a restored MicroVM is given after its restore, given now, off RunMicrovm's path:
      // the hostname (the snapshot holds the build's). The app's environment is the version's, as for every MicroVM.
      await this.opts.gvisor.setHostname(id, built.rootfs, microvmId);
      return clone;
    } catch (err) {
      await this.destroy(clone);
      throw err;
    }
  }

  /** A restored clone runs (QUIET) beside the refill's next restore, and is paused and ready when it is quiet. */
  private startMaturing(clone: Pooled): void {
    this.maturing.push(clone);
    const done = this.mature(clone)
      .catch((err: Error) => this.opts.log?.({ level: "error", msg: "warm pool clone failed", sandboxId: clone.id, err: err.message }))
      .finally(() => {
        if (clone.matured === done) delete clone.matured;
      });
    clone.matured = done;
  }

  private async mature(clone: Pooled): Promise<void> {
    const mine = () => this.maturing.includes(clone);
    const ran = await untilQuiet(() => this.opts.cpuUsageMicros(clone.id), { ...QUIET, stop: () => this.closed || !mine() });
    if (this.closed || !mine()) return; // claimed or discarded meanwhile; close() frees the rest
    clone.settledMs = (clone.settledMs ?? 0) + ran;
    clone.pausing = true;
    try {
      await this.opts.gvisor.pause(clone.id);
    } catch (err) {
      this.maturing.splice(this.maturing.indexOf(clone), 1);
      await this.destroy(clone);
      if (!this.retry && !this.closed) this.later(); // made again later, as after a failed restore
      throw err;
    } finally {
      clone.pausing = false;
    }
    this.maturing.splice(this.maturing.indexOf(clone), 1);
    clone.running = false;
    this.ready.push(clone);
    this.opts.log?.({ msg: "warm pool clone ready", image: versionOf(clone.key)[0], version: versionOf(clone.key)[1], sandboxId: clone.id, settledMs: clone.settledMs, ready: this.ready.filter((c) => c.key === clone.key).length, target: this.targets.get(clone.key)?.size ?? 0 });
    // Beyond the size, or of a shape no longer wanted meanwhile: the refill destroys it. Otherwise the
    // refill has nothing to do for it (maturing clones count towards the size), and a refill a claim
    // put off (REFILL_AFTER_CLAIM_MS) stays put off.
    if (this.unwanted().length > 0) this.kick();
  }

  private async discard(c: Pooled, why: string): Promise<void> {
    const list = this.ready.includes(c) ? this.ready : this.maturing;
    const i = list.indexOf(c);
    if (i < 0 || c.pausing) return;
    list.splice(i, 1);
    await this.destroy(c);
    this.opts.log?.({ msg: "warm pool clone destroyed", why, sandboxId: c.id, ready: this.ready.filter((x) => x.key === c.key).length });
  }

  /** Sets a claimed clone going again (unpauses it; one claimed while it matured runs already). */
  async wake(c: Clone): Promise<void> {
    if ((c as Pooled).running) return;
    await this.opts.gvisor.resume(c.id);
    (c as Pooled).running = true;
  }

  /** Frees a clone that no MicroVM claimed: its sandbox, network, directory and log. */
  async destroy(c: Clone): Promise<void> {
    await this.opts.gvisor.destroy(c.id);
    await this.opts.egress.detach(c.network);
    await this.opts.nets.destroy(c.network);
    removeTree(c.dir);
    if (c.logFile) removeTree(c.logFile);
  }

  /** Removes what clones of a previous process left in the pool dir, except the directories in `keep` (claimed clones of RUNNING MicroVMs). */
  sweep(keep: Set<string>): void {
    if (!existsSync(this.opts.dir)) return;
    const live = this.held().dirs;
    for (const name of readdirSync(this.opts.dir)) {
      const path = join(this.opts.dir, name);
      if (keep.has(path) || live.has(path) || live.has(path.replace(/\.log$/, ""))) continue;
      removeTree(path);
    }
  }
}
