// MicroVMs on gVisor: the SandboxRuntime the core drives. RunMicrovm restores
// the version's build-time snapshot into a new sandbox in a new network
// namespace and calls /run; suspend calls /suspend and checkpoints to the
// MicroVM's directory; resume restores that checkpoint and calls /resume;
// terminate calls /terminate and frees everything.
//
// On disk: <data-dir>/microvms/<id>/
//   sandbox.json   where the sandbox is (network index and address) and its hooks;
//                  read only when the process starts, then kept in memory too
//   checkpoint/    memory and disk while SUSPENDED
//   sandbox/       bundle and overlay filestore of the running sandbox
// and the app's stdout and stderr, unless logging is disabled, in
// <data-dir>/logs/microvms/<id>.log, kept after the MicroVM ends.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { availableParallelism } from "node:os";
import { Duplex } from "node:stream";
import { join } from "node:path";
import { completeLimits, limitsOf, microvmArn, parseArn, NO_EGRESS, UNNAMED_HOOKS_PORT, NotBegun, type EgressPolicy, reservedEnvironment, RunHookFailed, type GuestProcess, type ImageVersion, type Microvm, type SandboxFound, type SandboxLimits, type SandboxRuntime, type SpawnOptions, type WarmPoolTarget } from "../core/index.js";
import { STRAY_NETWORK_AGE_MS, type EgressGateway, type NetworkCounters, type NetworkNamespaces, type SandboxNetwork } from "../net/index.js";
import type { MetadataSubject } from "../metadata/index.js";
import { diskUsage, removeTree, writeFileAtomic, type LogFiles } from "../os/index.js";
import { SandboxCgroups } from "./cgroups.js";
import { CpuRoom } from "./cpu-room.js";
import { Gvisor, SandboxSetupError, type ImageConfig, type SandboxPlatform, type SandboxSpec } from "./gvisor.js";
import { spawnGuest } from "./guest-process.js";
import { callHook, HookFailure, runHookBody, type HookName } from "./hooks.js";
import type { PreparedResources } from "./prepared.js";
import { memoryImageSize } from "./snapshots.js";
import { shapeOf, WarmPool, type Clone, type PoolFigures } from "./pool.js";

export interface BuiltVersion {
  rootfs: string;
  config: ImageConfig;
  snapshot: string;
}

export interface MicrovmRuntimeOptions {
  gvisor: Gvisor;
  nets: NetworkNamespaces;
  /** Enforces each MicroVM's egress policy and limits on its network namespace. */
  egress: EgressGateway;
  /** The data directory, checked for room for checkpoints; no path is made under it here. */
  dataDir: string;
  /** Where each MicroVM keeps its sandbox record, sandbox and checkpoint (<id>/). */
  microvmsDir: string;
  /** Where a version's build left its rootfs, image config and snapshot. */
  locate: (imageArn: string, version: string) => BuiltVersion;
  /** Where each MicroVM's app output goes (<data-dir>/logs/microvms); it outlives the MicroVM. */
  logs: LogFiles;
  /** Memory the host keeps free: RunMicrovm answers InsufficientCapacityException below it (default 1024 MiB). */
  minFreeMiB?: number;
  /** Where sandboxes' CPU usage is read (default: the host's cgroups). */
  cgroups?: SandboxCgroups;
  /** The host's cores for CPU room (default: availableParallelism()). */
  cores?: number;
  /** Network namespaces and scratch disks made ahead of time (none: each start makes its own). */
  prepared?: PreparedResources;
  /** Where warm-pool clones keep their sandboxes and logs (src/runtime/pool.ts); without it, no pools. */
  poolDir?: string;
  /** The server's log: the time of each RunMicrovm and ResumeMicrovm step, and the pools' progress. */
  log?: (event: Record<string, unknown>) => void;
}

/** What a running MicroVM's sandbox needs to be found and driven again. */
export interface SandboxRecord {
  networkIndex: number;
  sandboxIp: string;
  rootfs: string;
  config: ImageConfig;
  hooks: NonNullable<ImageVersion["config"]["hooks"]>;
  logging: boolean;
  limits: SandboxLimits;
  /** The version's environmentVariables and the reserved variables, which the app got at its build-time boot; processes exec'd later get them too. */
  env?: Record<string, string>;
  /** What the MicroVM may reach (RunConfig.egress at RunMicrovm), applied again at every resume and server restart; absent on records from before egress: none. */
  egress?: EgressPolicy;
  /** Network counters of the MicroVM's earlier sandboxes (before each suspend), so its figures keep growing across resumes. */
  network?: NetworkCounters;
  /** Set once a suspend has removed the sandbox's network: networkIndex may be another sandbox's by now. */
  networkReleased?: boolean;
  /**
   * The runsc id of the MicroVM's current sandbox, new for every incarnation (the MicroVM's id at
   * RunMicrovm, `<id>-r<n>` after its n-th resume), so removing one sandbox never delays the next;
   * absent on records from before incarnations: the MicroVM's id.
   */
  sandboxId?: string;
  /** That sandbox's directory (bundle, overlay, disk); absent: `<microvm dir>/sandbox`. */
  sandboxDir?: string;
  /** How many times the MicroVM has been resumed. */
  incarnation?: number;
  /**
   * The gVisor platform its current sandbox runs on (absent on records from before platforms:
   * systrap). A server restarted with another --platform keeps running sandboxes as they are, and
   * their checkpoints must say the platform that made them, not the server's.
   */
  platform?: SandboxPlatform;
}

export interface MicrovmNetworkCounters extends NetworkCounters {
  microvmId: string;
}

const NO_COUNTERS: NetworkCounters = { bytesOut: 0, bytesIn: 0, refused: 0, dnsQueries: 0 };
function addCounters(a: NetworkCounters | undefined, b: NetworkCounters | undefined): NetworkCounters {
  const x = a ?? NO_COUNTERS;
  const y = b ?? NO_COUNTERS;
  return { bytesOut: x.bytesOut + y.bytesOut, bytesIn: x.bytesIn + y.bytesIn, refused: x.refused + y.refused, dnsQueries: x.dnsQueries + y.dnsQueries };
}

/**
 * Whose credentials the MicroVM's metadata service hands out: its execution
 * role (RunConfig.executionRoleArn, fixed for its life), assumed for the
 * MicroVM's ARN with its id as the session name; no role, none.
 */
export function metadataSubject(vm: Microvm): MetadataSubject {
  const region = parseArn(vm.imageArn)?.region ?? "";
  return {
    ...(vm.config.executionRoleArn ? { roleArn: vm.config.executionRoleArn } : {}),
    sourceArn: microvmArn({ region, accountId: vm.accountId }, vm.id),
    sessionName: vm.id,
  };
}

const HOOK_TIMEOUT_DEFAULT = 1;
const RESERVATION_MS = 60_000;
/** How long running() trusts /proc with the pids of its last `runsc list`. */
const LIST_AT_LEAST_EVERY_MS = 60_000;
const MIB = 1024 * 1024;
/** Held back in this share of its CPU periods, a MicroVM is reported as using all the CPU it may. */
const THROTTLED_SHARE = 0.5;
/** Room kept in the data directory beyond a checkpoint's size: for logs, the database, sandbox disks' metadata. */
const MIN_FREE_DISK_BYTES = 256 * MIB;
const mib = (bytes: number) => Math.max(0, Math.round(bytes / MIB));
/** Deadlines of a MicroVM's runsc checkpoint and restore: a wedged sandbox must not hold its MicroVM's lock for ever. */
const CHECKPOINT_SECONDS = 120;
const RESTORE_SECONDS = 120;

/** Runs a runsc step under a deadline: past it, the step's runsc call is killed and the error says what did not finish. */
async function bounded<T>(what: string, seconds: number, step: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const signal = AbortSignal.timeout(seconds * 1000);
  try {
    return await step(signal);
  } catch (err) {
    if (signal.aborted) throw new Error(`${what} did not finish within ${seconds} s`);
    throw err;
  }
}

/**
 * A failed /run in AWS Lambda MicroVMs' words: its observed stateReason for an
 * error status, and the same form for a timeout and for an app that could not
 * be reached (those wordings are not published).
 */
function runFailureReason(err: HookFailure, timeoutSeconds: number): string {
  const advice = "Please check your hook endpoint and application logs for more details.";
  if (err.answer.status !== undefined) return `Run lifecycle hook returned HTTP status ${err.answer.status}. ${advice}`;
  if (err.answer.timedOut) return `Run lifecycle hook timed out after ${timeoutSeconds} seconds. ${advice}`;
  return `Run lifecycle hook could not reach the application (${err.message}). ${advice}`;
}

export class MicrovmRuntime implements SandboxRuntime {
  /** Room promised to starts under way: memory and vCPUs. */
  private reserved: { bytes: number; vcpus: number; until: number }[] = [];
  /** The CPU counters each MicroVM had at the last condition check. */
  private readonly cpuSamples = new Map<string, { periods: number; throttled: number }>();
  private readonly cpu: CpuRoom;
  private readonly cgroups: SandboxCgroups;
  /**
   * Every MicroVM's sandbox record, as the endpoint proxy asks for an address
   * on every request. sandbox.json is the truth; this is an exact copy, since
   * only this runtime writes the file and it changes the copy right after each
   * write. Loaded as the process starts, before recovery.
   */
  private readonly records = new Map<string, SandboxRecord>();
  private straySweep: NodeJS.Timeout | undefined;
  /** What the last `runsc list` said: the pid of each running sandbox and that process's start time (see running()). */
  private listed: { at: number; pids: Map<string, { pid: number; start: string | undefined }> } | undefined;
  /** Restored, paused clones RunMicrovm claims (src/runtime/pool.ts). */
  private readonly pool: WarmPool | undefined;

  constructor(private readonly opts: MicrovmRuntimeOptions) {
    const cgroups = (this.cgroups = opts.cgroups ?? new SandboxCgroups());
    if (opts.poolDir) {
      this.pool = new WarmPool({
        gvisor: opts.gvisor,
        nets: opts.nets,
        egress: opts.egress,
        dir: opts.poolDir,
        built: (v) => opts.locate(v.imageArn, v.version),
        reserve: (v) => this.reserveForPool(v),
        cpuUsageMicros: (id) => cgroups.cpuUsageMicros(id),
        ...(opts.log ? { log: opts.log } : {}),
      });
    }
    this.cpu = new CpuRoom({ cores: opts.cores ?? availableParallelism(), usageMicros: (id) => {
      const counter = this.sandboxOf(id);
      const micros = cgroups.cpuUsageMicros(counter);
      return micros === undefined ? undefined : { counter, micros };
    } });
    // Sandboxes a previous process left running hold their vCPUs until recovery says otherwise (reap).
    const root = opts.microvmsDir;
    if (existsSync(root)) {
      for (const id of readdirSync(root)) {
        const file = join(this.dir(id), "sandbox.json");
        let rec: SandboxRecord;
        try {
          rec = JSON.parse(readFileSync(file, "utf8")) as SandboxRecord;
        } catch {
          continue; // none, or cut short by a crash before its first write completed: nothing was started
        }
        // A record written before sizes and capabilities: its limits as they were enforced.
        rec.limits = completeLimits(rec.limits ?? { memoryMiB: 1024, vcpus: 1 }, opts.gvisor.diskMiB(undefined) ?? 10240);
        this.records.set(id, rec);
        if (!existsSync(join(this.dir(id), "checkpoint"))) this.cpu.hold(id, rec.limits.vcpus);
      }
    }
  }

  /** Changes the memory the host keeps free (minFreeMiB) from now on: RunMicrovm, resume and warm pools all respect it. */
  setMemoryReserve(mib: number): void {
    this.opts.minFreeMiB = mib;
  }

  dir(id: string): string {
    return join(this.opts.microvmsDir, id);
  }

  /** The runsc id of a MicroVM's current sandbox (each incarnation has its own). */
  sandboxOf(id: string): string {
    return this.records.get(id)?.sandboxId ?? id;
  }

  private sandboxDir(id: string, rec: SandboxRecord | undefined = this.records.get(id)): string {
    return rec?.sandboxDir ?? join(this.dir(id), "sandbox");
  }

  /** Removes the directories of a MicroVM's earlier sandboxes (all of them when `current` is undefined). */
  private forgetSandboxes(id: string, current?: string): void {
    const dir = this.dir(id);
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) if (/^sandbox(-r\d+)?$/.test(name) && join(dir, name) !== current) Gvisor.forget({ dir: join(dir, name) });
  }

  /** The sandbox record of a MicroVM, e.g. to reach its app through its network namespace. */
  record(id: string): SandboxRecord | undefined {
    return this.records.get(id);
  }

  private spec(vm: Microvm, rec: SandboxRecord, network: SandboxNetwork): SandboxSpec {
    return {
      id: rec.sandboxId ?? vm.id,
      rootfs: rec.rootfs,
      config: rec.config,
      env: {},
      hooksPort: rec.hooks.port ?? UNNAMED_HOOKS_PORT,
      hostname: vm.id,
      limits: rec.limits,
      network,
      dir: this.sandboxDir(vm.id, rec),
      logFile: rec.logging ? this.opts.logs.path(vm.id) : "/dev/null",
      preparedDisk: (sizeMiB) => this.opts.prepared?.takeDisk(sizeMiB),
    };
  }

  /** A network namespace for a new sandbox: a prepared one when ready. */
  private async network(): Promise<SandboxNetwork> {
    return this.opts.prepared?.takeNetwork() ?? (await this.opts.nets.create());
  }

  /** Milliseconds since `started` at each step, reported once the operation ends. */
  private steps(operation: string, id: string): { mark: (name: string) => void; report: () => void } {
    const started = performance.now();
    const at: Record<string, number> = {};
    return {
      mark: (name) => (at[name] = Math.round(performance.now() - started)),
      report: () => {
        this.opts.log?.({ msg: `${operation} steps (ms since it began)`, microvmId: id, ...at });
        void this.opts.prepared?.refill();
      },
    };
  }

  private async hook(id: string, rec: SandboxRecord, hook: HookName, body = ""): Promise<void> {
    const m = rec.hooks.microvmHooks ?? {};
    const enabled = { run: m.run, resume: m.resume, suspend: m.suspend, terminate: m.terminate }[hook as "run"];
    if (enabled !== "ENABLED") return;
    const timeout = { run: m.runTimeoutInSeconds, resume: m.resumeTimeoutInSeconds, suspend: m.suspendTimeoutInSeconds, terminate: m.terminateTimeoutInSeconds }[hook as "run"];
    // The image gives a port whenever it enables a hook (inputs.ts).
    await callHook(rec.sandboxIp, rec.hooks.port ?? UNNAMED_HOOKS_PORT, hook, { body, timeoutSeconds: timeout ?? HOOK_TIMEOUT_DEFAULT, microvmId: id });
  }

  /** Routes, firewall chain, DNS sockets, shaping and metadata service for the record's policy and limits and the MicroVM's execution role, before a restore into `network`. */
  private attach(network: SandboxNetwork, rec: SandboxRecord, vm: Microvm): Promise<void> {
    return this.opts.egress.attach(network, rec.egress ?? NO_EGRESS, rec.limits, metadataSubject(vm));
  }

  /**
   * Whether this server made the network `index` names and has not removed it:
   * indexes are unique on the host only while they are in use, and another
   * server's sandbox may hold one a record of ours names after a crash.
   */
  private owns(index: number): boolean {
    return this.opts.nets.owned().includes(index);
  }

  /** Counters of the MicroVMs this process runs (and of suspended ones, as of their suspend), for /metrics. */
  async networkCounters(): Promise<MicrovmNetworkCounters[]> {
    const live = await this.opts.egress.counters();
    const out: MicrovmNetworkCounters[] = [];
    for (const [id, rec] of this.records) out.push({ microvmId: id, ...addCounters(rec.network, rec.networkReleased ? undefined : live.get(rec.networkIndex)) });
    return out;
  }

  private save(id: string, rec: SandboxRecord): void {
    writeFileAtomic(join(this.dir(id), "sandbox.json"), JSON.stringify(rec, null, 2));
    this.records.set(id, rec);
  }

  /** Why a checkpoint of `bytes` would not fit in the data directory (with room to spare), or undefined. */
  private diskShortage(bytes: number, what: string): string | undefined {
    const disk = diskUsage(this.opts.dataDir);
    const needed = bytes + MIN_FREE_DISK_BYTES;
    if (disk && disk.freeBytes < needed) return `the data directory (${this.opts.dataDir}) has ${mib(disk.freeBytes)} MiB free, and ${what} needs about ${mib(needed)} MiB there`;
    return undefined;
  }

  /**
   * Why no MicroVM of the version can start on this server, whatever the room:
   * its snapshot was made on another gVisor platform (see Gvisor.mismatch). RunMicrovm refuses with it.
   */
  unrunnable(version: ImageVersion): string | undefined {
    let built: BuiltVersion;
    try {
      built = this.opts.locate(version.imageArn, version.version);
    } catch {
      return undefined; // no built image here: run() says why
    }
    if (!existsSync(join(built.snapshot, "checkpoint.img"))) return undefined; // run() says why
    const mismatch = this.opts.gvisor.mismatch(built.snapshot, "its snapshot");
    if (!mismatch) return undefined;
    if (mismatch.made === "unknown") return `${mismatch.message}. Build a new version (update-microvm-image).`;
    return `${mismatch.message}. Build a new version on this server (update-microvm-image), or run it on a server started with --platform ${mismatch.made}.`;
  }

  async run(vm: Microvm, version: ImageVersion): Promise<void> {
    const built = this.opts.locate(vm.imageArn, vm.imageVersion);
    if (!existsSync(join(built.snapshot, "checkpoint.img"))) {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), limitsOf(version.config).vcpus);
      throw new Error(`version ${vm.imageVersion} of ${vm.imageArn} has no snapshot to start from (it was built by a server started with --no-snapshots); build a new version on a server that snapshots, with update-microvm-image`);
    }
    const unrunnable = this.unrunnable(version);
    if (unrunnable) {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), limitsOf(version.config).vcpus);
      throw new Error(unrunnable);
    }
    mkdirSync(this.dir(vm.id), { recursive: true });
    const logging = !(vm.config.logging ?? version.config.logging)?.disabled;
    // The clone RunMicrovm claimed for this id (claimWarm), made with this MicroVM's hostname.
    const clone = this.pool?.take(vm.id);
    if (clone) {
      if (clone.shape === shapeOf(vm.config.egress ?? NO_EGRESS) && clone.logging === logging) return this.runClone(vm, version, built, clone, this.steps("RunMicrovm from a warm clone", vm.id));
      // The egress bound at the record differs from the one claimed with (a connector changed
      // meanwhile): the clone's routes do not fit. Its id is this MicroVM's, so no other run may have it.
      await this.pool!.destroy(clone);
    }
    const steps = this.steps("RunMicrovm", vm.id);
    const network = await this.network();
    steps.mark("network");
    const rec: SandboxRecord = {
      networkIndex: network.index,
      sandboxIp: network.sandboxIp,
      rootfs: built.rootfs,
      config: built.config,
      hooks: version.config.hooks ?? {},
      // RunMicrovm's logging, when given, decides (src/logs/naming.ts): {cloudWatch: {}} there turns on what the image disabled.
      logging: !(vm.config.logging ?? version.config.logging)?.disabled,
      limits: limitsOf(version.config),
      env: { ...version.config.environmentVariables, ...reservedEnvironment(version.imageArn, version.version) },
      egress: vm.config.egress ?? NO_EGRESS,
      sandboxId: vm.id,
      sandboxDir: join(this.dir(vm.id), "sandbox"),
      incarnation: 0,
      platform: this.opts.gvisor.platform,
    };
    this.save(vm.id, rec);
    try {
      // A failure from here on leaves the record naming the network: terminate removes it all.
      // The bundle and disk are made while the egress is attached; runsc starts after both.
      const attached = this.attach(network, rec, vm).then(() => steps.mark("attach"));
      attached.catch(() => undefined);
      await bounded("restoring the snapshot with runsc restore", RESTORE_SECONDS, (signal) => this.opts.gvisor.restore(this.spec(vm, rec, network), built.snapshot, signal, steps.mark, attached));
    } finally {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), rec.limits.vcpus);
      this.cpu.hold(vm.id, rec.limits.vcpus); // until terminate: a failed restore may have left a sandbox
    }
    await this.opts.gvisor.setHostname(this.sandboxOf(vm.id), rec.rootfs, vm.id);
    steps.mark("hostname");
    await this.hook(vm.id, rec, "run", runHookBody(vm.id, vm.config.runHookPayload)).catch((err: unknown) => {
      throw err instanceof HookFailure ? new RunHookFailed(runFailureReason(err, rec.hooks.microvmHooks?.runTimeoutInSeconds ?? HOOK_TIMEOUT_DEFAULT)) : err;
    });
    steps.mark("hook");
    steps.report();
  }

  /**
   * RunMicrovm from a warm-pool clone: the clone's sandbox becomes the
   * MicroVM's (its record names the clone's runsc id and directory), its log
   * the MicroVM's log, its network the MicroVM's egress, shaping and metadata
   * service; then, unpaused, it gets /run as a restore does (its hostname is
   * the MicroVM's id already: the clone was made for it).
   */
  private async runClone(vm: Microvm, version: ImageVersion, built: BuiltVersion, clone: Clone, steps: ReturnType<MicrovmRuntime["steps"]>): Promise<void> {
    const rec: SandboxRecord = {
      networkIndex: clone.network.index,
      sandboxIp: clone.network.sandboxIp,
      rootfs: built.rootfs,
      config: built.config,
      hooks: version.config.hooks ?? {},
      logging: clone.logging,
      limits: limitsOf(version.config),
      env: { ...version.config.environmentVariables, ...reservedEnvironment(version.imageArn, version.version) },
      egress: vm.config.egress ?? NO_EGRESS,
      sandboxId: clone.id,
      sandboxDir: clone.dir,
      incarnation: 0,
      platform: this.opts.gvisor.platform,
    };
    this.save(vm.id, rec);
    steps.mark("record");
    try {
      // runsc holds the file open: renamed, it goes on receiving the app's output as the MicroVM's log.
      if (clone.logFile) renameSync(clone.logFile, this.opts.logs.path(vm.id));
      // The routes are the clone's (they match the run's egress); the firewall chain, DNS, shaping and credentials become the MicroVM's.
      await this.opts.egress.adopt(clone.network, rec.egress ?? NO_EGRESS, rec.limits, metadataSubject(vm));
      steps.mark("attach");
      this.cgroups.foreground(clone.id); // restored at the least CPU share (src/runtime/pool.ts)
      await this.pool!.wake(clone);
      steps.mark("unpause");
    } finally {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), rec.limits.vcpus);
      this.cpu.hold(vm.id, rec.limits.vcpus);
    }
    this.opts.log?.({ msg: "warm pool clone claimed", microvmId: vm.id, sandboxId: clone.id, image: vm.imageArn, version: vm.imageVersion });
    // Its hostname is vm.id already: the clone was made for this id (src/runtime/pool.ts).
    await this.hook(vm.id, rec, "run", runHookBody(vm.id, vm.config.runHookPayload)).catch((err: unknown) => {
      throw err instanceof HookFailure ? new RunHookFailed(runFailureReason(err, rec.hooks.microvmHooks?.runTimeoutInSeconds ?? HOOK_TIMEOUT_DEFAULT)) : err;
    });
    steps.mark("hook");
    steps.report();
  }

  async claimWarm(version: ImageVersion, egress: EgressPolicy, logging: boolean): Promise<string | undefined> {
    return this.pool?.claim(version.imageArn, version.version, egress, logging);
  }

  async unclaimWarm(microvmId: string): Promise<void> {
    this.pool?.unclaim(microvmId);
  }

  async warmPools(targets: WarmPoolTarget[]): Promise<void> {
    await this.pool?.setTargets(targets);
  }

  async closeWarmPools(): Promise<void> {
    await this.pool?.close();
  }

  /** Pool sizes (target and ready) per image version, and claims that hit and missed, for /metrics. */
  poolFigures(): { pools: PoolFigures[]; hits: PoolFigures[]; misses: PoolFigures[] } {
    return this.pool?.figures() ?? { pools: [], hits: [], misses: [] };
  }

  async suspend(vm: Microvm): Promise<void> {
    const rec = this.record(vm.id);
    if (!rec) throw new Error(`MicroVM ${vm.id} has no sandbox on this host`);
    // A checkpoint cut short by a full disk can take the sandbox down with it.
    const sandbox = this.sandboxDir(vm.id, rec);
    const short = this.diskShortage(this.cgroups.memoryInUse(this.sandboxOf(vm.id)) + (Gvisor.diskUsage({ dir: sandbox })?.usedBytes ?? 0), "its checkpoint");
    if (short) throw new NotBegun(`${short}. Free some space and retry.`);
    const steps = this.steps("SuspendMicrovm", vm.id);
    await this.hook(vm.id, rec, "suspend");
    steps.mark("hook");
    const checkpoint = join(this.dir(vm.id), "checkpoint");
    rmSync(checkpoint, { recursive: true, force: true });
    await bounded("saving memory and disk with runsc checkpoint", CHECKPOINT_SECONDS, (signal) => this.opts.gvisor.checkpoint(this.sandboxOf(vm.id), checkpoint, { sandboxIp: rec.sandboxIp, signal, platform: rec.platform ?? "systrap", step: steps.mark })).catch((err: unknown) => {
      rmSync(checkpoint, { recursive: true, force: true }); // half an image must not pass for a suspended MicroVM
      throw err;
    });
    steps.mark("checkpoint");
    Gvisor.forget({ dir: sandbox });
    const network = this.opts.nets.describe(rec.networkIndex);
    const counted = (await this.opts.egress.counters().catch(() => undefined))?.get(rec.networkIndex);
    steps.mark("counters");
    await this.opts.egress.detach(network);
    steps.mark("detach");
    await this.opts.nets.destroy(network);
    steps.mark("network");
    this.save(vm.id, { ...rec, network: addCounters(rec.network, counted), networkReleased: true });
    this.cpuSamples.delete(vm.id); // a restored sandbox has new counters
    this.cpu.drop(vm.id);
    steps.report();
  }

  async resume(vm: Microvm): Promise<void> {
    const rec = this.record(vm.id);
    if (!rec) throw new Error(`MicroVM ${vm.id} has no sandbox on this host`);
    // A checkpoint of another platform is never handed to runsc: it would fail, and a failed restore ends the MicroVM.
    const mismatch = this.opts.gvisor.mismatch(join(this.dir(vm.id), "checkpoint"), "Its checkpoint");
    if (mismatch) {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), rec.limits.vcpus);
      throw new NotBegun(mismatch.made === "unknown"
        ? `${mismatch.message}. The checkpoint is kept: write the platform it was made on into that file, or terminate the MicroVM.`
        : `${mismatch.message}. Resume it on a server started with --platform ${mismatch.made} (the checkpoint is kept), or terminate it.`);
    }
    const steps = this.steps("ResumeMicrovm", vm.id);
    let network: SandboxNetwork | undefined;
    let resumed: SandboxRecord | undefined;
    let runscBegan = false;
    const mark = (name: string) => {
      if (name === "bundle and egress") runscBegan = true;
      steps.mark(name);
    };
    try {
      network = await this.network();
      steps.mark("network");
      // A new runsc id and directory: the last sandbox's removal (runsc delete, over a second after
      // its checkpoint) goes on beside this restore instead of before it.
      const incarnation = (rec.incarnation ?? 0) + 1;
      resumed = {
        ...rec, networkIndex: network.index, sandboxIp: network.sandboxIp, networkReleased: false,
        incarnation, sandboxId: `${vm.id}-r${incarnation}`, sandboxDir: join(this.dir(vm.id), `sandbox-r${incarnation}`), platform: this.opts.gvisor.platform,
      };
      this.save(vm.id, resumed);
      // The bundle and disk are made while the egress is attached; runsc starts after both.
      const attached = this.attach(network, resumed, vm).then(
        () => steps.mark("attach"),
        (err: Error) => {
          throw new SandboxSetupError(`Enforcing the MicroVM's egress on its network failed: ${err.message}`);
        },
      );
      attached.catch(() => undefined);
      await bounded("restoring the checkpoint with runsc restore", RESTORE_SECONDS, (signal) => this.opts.gvisor.restore(this.spec(vm, resumed!, network!), join(this.dir(vm.id), "checkpoint"), signal, mark, attached));
    } catch (err) {
      // Until runsc restore starts (after the bundle and the egress, which a deadline may cut short), the checkpoint is untouched.
      if (runscBegan) throw err;
      // Failing before runsc began leaves the checkpoint as good as it was: undo the rest, keep it.
      try {
        if (resumed?.sandboxDir) Gvisor.forget({ dir: resumed.sandboxDir });
        if (network) {
          await this.opts.egress.detach(network);
          await this.opts.nets.destroy(network);
        }
        this.save(vm.id, rec);
      } catch {
        throw err;
      }
      throw new NotBegun(`resuming could not begin: ${(err as Error).message}`);
    } finally {
      this.release(this.startingMemory(vm.imageArn, vm.imageVersion), rec.limits.vcpus);
    }
    this.cpu.hold(vm.id, rec.limits.vcpus);
    rmSync(join(this.dir(vm.id), "checkpoint"), { recursive: true, force: true });
    await this.hook(vm.id, resumed, "resume");
    steps.mark("hook");
    steps.report();
  }

  /** The incarnation of the MicroVM's sandbox or checkpoint on this host (0 after RunMicrovm), from its sandbox record. */
  incarnation(id: string): number | undefined {
    const rec = this.records.get(id);
    return rec ? rec.incarnation ?? 0 : undefined;
  }

  /**
   * Takes up a sandbox record and checkpoint another host made, just put in
   * the MicroVM's directory (src/objects): what names that host's paths (the
   * image's rootfs, the sandbox directory) is made this host's, and the
   * record says its network is released, as after a suspend here. With
   * `dir`, only the record in that directory (a fetch not yet in place) is rewritten.
   */
  importCheckpoint(vm: Microvm, dir?: string): void {
    const rec = JSON.parse(readFileSync(join(dir ?? this.dir(vm.id), "sandbox.json"), "utf8")) as SandboxRecord;
    const built = this.opts.locate(vm.imageArn, vm.imageVersion);
    const { sandboxDir: _elsewhere, ...kept } = rec;
    rec.limits = completeLimits(rec.limits ?? { memoryMiB: 1024, vcpus: 1 }, this.opts.gvisor.diskMiB(undefined) ?? 10240);
    const imported = { ...kept, limits: rec.limits, rootfs: built.rootfs, config: built.config, networkReleased: true };
    // A fetch's own directory: the record is rewritten there, before it is renamed into place (a crash leaves no other host's record).
    if (dir) return writeFileAtomic(join(dir, "sandbox.json"), JSON.stringify(imported, null, 2));
    this.save(vm.id, imported);
    this.cpu.drop(vm.id);
  }

  async terminate(vm: Microvm): Promise<void> {
    this.cpuSamples.delete(vm.id);
    // A clone claimed for a MicroVM that ended before its run() took it: its id was this MicroVM's.
    const unstarted = this.pool?.take(vm.id);
    if (unstarted) await this.pool!.destroy(unstarted);
    const rec = this.record(vm.id);
    const suspended = existsSync(join(this.dir(vm.id), "checkpoint"));
    if (rec && !suspended) await this.hook(vm.id, rec, "terminate").catch(() => undefined); // best effort: it is going anyway
    await this.opts.gvisor.destroy(this.sandboxOf(vm.id));
    this.cpu.drop(vm.id);
    // A suspended MicroVM's network went with its suspend, and its index may be another sandbox's now
    // (a record from before networkReleased: suspended means released).
    if (rec && !(rec.networkReleased ?? suspended) && this.owns(rec.networkIndex)) {
      const network = this.opts.nets.describe(rec.networkIndex);
      await this.opts.egress.detach(network);
      await this.opts.nets.destroy(network);
    }
    if (rec?.sandboxDir && !rec.sandboxDir.startsWith(this.dir(vm.id) + "/")) Gvisor.forget({ dir: rec.sandboxDir });
    removeTree(this.dir(vm.id));
    this.records.delete(vm.id);
  }

  /** Throws when runsc cannot list its sandboxes: "cannot look" must not read as "nothing there". */
  async inspect(vm: Microvm): Promise<SandboxFound> {
    const live = await this.opts.gvisor.list();
    return {
      running: live.some((s) => s.id === this.sandboxOf(vm.id) && s.status === "running") && (await this.opts.gvisor.responds(this.sandboxOf(vm.id))),
      checkpoint: existsSync(join(this.dir(vm.id), "checkpoint", "checkpoint.img")),
    };
  }

  /** Adopted sandboxes get their chain, shaping, DNS sockets and metadata service again (the sockets died with the last process). */
  async adopt(running: Microvm[]): Promise<void> {
    for (const vm of running) {
      const rec = this.record(vm.id);
      if (rec && this.owns(rec.networkIndex)) await this.opts.egress.adopt(this.opts.nets.describe(rec.networkIndex), rec.egress ?? NO_EGRESS, rec.limits, metadataSubject(vm));
    }
  }

  async reap(keep: Microvm[]): Promise<void> {
    const ids = new Set(keep.map((vm) => vm.id));
    const running = new Set(keep.filter((vm) => vm.state === "RUNNING").map((vm) => vm.id));
    // A server killed mid-suspend or mid-resume can leave a sandbox beside a checkpoint:
    // only a RUNNING MicroVM keeps its sandbox and namespace, only a SUSPENDED one its checkpoint.
    const pooled = this.pool?.held() ?? { ids: new Set<string>(), networks: new Set<number>(), dirs: new Set<string>() };
    const current = new Set([...[...running].map((id) => this.sandboxOf(id)), ...pooled.ids]);
    // What a killed server prepared goes first, whatever fails after. Preparing again waits for the
    // first start (its report()): a server that runs no MicroVM (most test servers, a build host) makes none.
    await this.opts.prepared?.recover();
    for (const s of await this.opts.gvisor.list().catch(() => [])) if (!current.has(s.id)) await this.opts.gvisor.destroy(s.id);
    for (const id of running) rmSync(join(this.dir(id), "checkpoint"), { recursive: true, force: true });
    // Only a RUNNING MicroVM's current sandbox keeps its directory (earlier incarnations', and a crashed resume's, go).
    for (const vm of keep) if (vm.state === "SUSPENDED" || vm.state === "RUNNING") this.forgetSandboxes(vm.id, vm.state === "RUNNING" ? this.sandboxDir(vm.id) : undefined);
    for (const id of this.cpu.holders()) if (!running.has(id)) this.cpu.drop(id);
    const indexes = new Set([...[...running].map((id) => this.record(id)?.networkIndex).filter((i): i is number => i !== undefined), ...pooled.networks]);
    // Clones a previous process left (their sandboxes went above), except those RUNNING MicroVMs claimed.
    this.pool?.sweep(new Set([...running].map((id) => this.sandboxDir(id))));
    for (const i of await this.opts.nets.reap(indexes)) await this.opts.egress.detach(this.opts.nets.describe(i));
    await this.opts.egress.sweep();
    await this.sweepStrayNetworks();
    const root = this.opts.microvmsDir;
    if (existsSync(root)) for (const d of readdirSync(root)) if (!ids.has(d)) removeTree(join(root, d));
    for (const id of this.records.keys()) if (!ids.has(id)) this.records.delete(id);
    this.opts.prepared?.expectDisks(this.opts.gvisor.diskMiB(limitsOf({})));
  }

  /**
   * Removes namespaces a killed process left between `ip netns add` and its
   * owner marker (NetworkNamespaces.sweepStray); those still too young to
   * judge are looked at again once they are old enough.
   */
  private async sweepStrayNetworks(): Promise<void> {
    clearTimeout(this.straySweep);
    const { removed, young } = await this.opts.nets.sweepStray().catch(() => ({ removed: [], young: 0 }));
    if (removed.length) this.opts.log?.({ msg: "removed network namespaces a killed process left", networks: removed });
    if (young) this.straySweep = setTimeout(() => void this.sweepStrayNetworks(), STRAY_NETWORK_AGE_MS).unref();
  }

  /** Removes the resources prepared ahead of time (the server is stopping). */
  async stop(): Promise<void> {
    clearTimeout(this.straySweep);
    await this.opts.prepared?.stop();
  }

  /**
   * Room for one more sandbox: after its starting memory, and that of every
   * start already promised room, the host keeps `minFreeMiB` available
   * (MemAvailable); its CPUs have room (CpuRoom: the vCPUs live and promised
   * sandboxes hold, and what their cgroups used over the last second); and
   * the data directory has room for a checkpoint of that size and then some.
   * A promise lasts until a run or resume of that size has its sandbox, or
   * RESERVATION_MS at most.
   */
  async shortage(version: ImageVersion): Promise<string | undefined> {
    // Warm pools give their memory back first: clones of other versions, then of this one.
    for (;;) {
      const short = this.shortageNow(version);
      if (!short || !this.pool || !(await this.pool.giveBack(version.imageArn, version.version))) return short;
    }
  }

  /** Host room for a warm-pool clone of the version above the reserve (memory and disk; a paused clone uses no CPU), held until the returned release. */
  private reserveForPool(version: ImageVersion): (() => void) | undefined {
    const memoryBytes = this.startingMemory(version.imageArn, version.version);
    const now = Date.now();
    this.reserved = this.reserved.filter((r) => r.until > now);
    const promised = this.reserved.reduce((n, r) => n + r.bytes, 0);
    const meminfo = readFileSync("/proc/meminfo", "utf8");
    const availableBytes = Number(/^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0) * 1024;
    if (availableBytes - promised - memoryBytes < (this.opts.minFreeMiB ?? 1024) * MIB) return undefined;
    if (this.diskShortage(memoryBytes, "a clone")) return undefined;
    const held = { bytes: memoryBytes, vcpus: 0, until: now + RESERVATION_MS };
    this.reserved.push(held);
    return () => {
      const i = this.reserved.indexOf(held);
      if (i >= 0) this.reserved.splice(i, 1);
    };
  }

  private shortageNow(version: ImageVersion): string | undefined {
    const memoryBytes = this.startingMemory(version.imageArn, version.version);
    const now = Date.now();
    this.reserved = this.reserved.filter((r) => r.until > now);
    const promised = this.reserved.reduce((n, r) => n + r.bytes, 0);
    const vcpus = limitsOf(version.config).vcpus;
    const meminfo = readFileSync("/proc/meminfo", "utf8");
    const availableBytes = Number(/^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0) * 1024;
    const keepFree = (this.opts.minFreeMiB ?? 1024) * MIB;
    if (availableBytes - promised - memoryBytes < keepFree) {
      return `it has ${mib(availableBytes - promised)} MiB of memory available, this MicroVM starts with ${mib(memoryBytes)} MiB, and the host keeps ${mib(keepFree)} MiB free`;
    }
    const cpuShort = this.cpu.shortage(vcpus, this.reserved.reduce((n, r) => n + r.vcpus, 0));
    if (cpuShort) return cpuShort;
    const short = this.diskShortage(memoryBytes, "a MicroVM's checkpoint");
    if (short) return short;
    this.reserved.push({ bytes: memoryBytes, vcpus, until: now + RESERVATION_MS });
    return undefined;
  }

  /**
   * The MicroVMs whose current sandbox runs. `runsc list` (a Go program: 10-20
   * ms of CPU a call) is asked only when what it said last time may no longer
   * hold: a MicroVM that is not suspended has no pid from it yet for its
   * current sandbox, or that process is gone (or its pid is another process's,
   * by its start time), or the last list is LIST_AT_LEAST_EVERY_MS old (runsc
   * says "stopped" once a sandbox's init is gone, which a lingering sandbox
   * process would hide from /proc). Otherwise the pids it gave are looked at in
   * /proc, which costs microseconds, so the core's check every few seconds
   * costs an idle host next to nothing.
   */
  async running(): Promise<Set<string>> {
    const known = this.listed;
    if (known && Date.now() - known.at < LIST_AT_LEAST_EVERY_MS) {
      const alive = new Set<string>();
      const holds = [...this.records].filter(([, rec]) => !rec.networkReleased); // a suspended MicroVM has no sandbox
      for (const [id] of holds) {
        const seen = known.pids.get(this.sandboxOf(id));
        if (seen?.start === undefined || processStart(seen.pid) !== seen.start) break;
        alive.add(id);
      }
      if (alive.size === holds.length) return alive;
    }
    const listed = (await this.opts.gvisor.list()).filter((s) => s.status === "running");
    this.listed = { at: Date.now(), pids: new Map(listed.map((s) => [s.id, { pid: s.pid, start: processStart(s.pid) }])) };
    const live = new Set(listed.map((s) => s.id));
    return new Set([...this.records.keys()].filter((id) => live.has(this.sandboxOf(id))));
  }

  /** What the app is up against now: a full disk, or its CPU limit since the last call. */
  async condition(vm: Microvm): Promise<string | undefined> {
    const found: string[] = [];
    const disk = Gvisor.diskUsage({ dir: this.sandboxDir(vm.id) });
    if (disk && disk.freeBytes <= Math.max(MIB, disk.sizeBytes / 100)) {
      const limits = this.record(vm.id)?.limits;
      const size = this.opts.gvisor.diskMiB(limits);
      const why = limits && size !== limits.diskMiB ? "lmvm server --microvm-disk-mib" : "its size's disk";
      found.push(`Its disk is full: the app has written ${Math.round(disk.usedBytes / MIB)} MiB of the ${size ?? Math.round(disk.sizeBytes / MIB)} MiB a MicroVM may (${why}); its writes fail with ENOSPC until it deletes files.`);
    }
    const cpu = this.cgroups.cpuThrottling(this.sandboxOf(vm.id));
    const before = this.cpuSamples.get(vm.id);
    if (cpu) this.cpuSamples.set(vm.id, cpu);
    if (cpu && before) {
      const periods = cpu.periods - before.periods;
      const share = periods > 0 ? (cpu.throttled - before.throttled) / periods : 0;
      // Ten 100 ms periods at least: a burst is not a condition.
      if (periods >= 10 && share >= THROTTLED_SHARE) {
        const vcpus = this.record(vm.id)?.limits?.peakVcpus;
        found.push(`It is using all the CPU it may${vcpus ? ` (${vcpus} vCPU)` : ""}: the kernel held it back in ${Math.round(share * 100)}% of its recent scheduling periods. A larger size (more memory in the image's resources) brings more vCPUs.`);
      }
    }
    return found.length ? found.join(" ") : undefined;
  }

  async exitReason(vm: Microvm): Promise<string | undefined> {
    const limits = this.record(vm.id)?.limits;
    return this.cgroups.oomKilled(this.sandboxOf(vm.id)) ? `it ran out of memory${limits ? ` (its limit is ${limits.peakMemoryMiB} MiB, the peak memory of its size, ${limits.memoryMiB} MiB baseline, which the image's resources.minimumMemoryInMiB chooses)` : ""} and was killed` : undefined;
  }

  address(id: string): string | undefined {
    return this.record(id)?.sandboxIp;
  }

  /** TCP to the app's port in the MicroVM's sandbox (its veth address); fails on the stream when it has none here. */
  connect(id: string, port: number): Duplex {
    const ip = this.address(id);
    if (!ip) {
      const stream = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
      process.nextTick(() => stream.destroy(new Error(`MicroVM ${id} has no running sandbox on this host`)));
      return stream;
    }
    const socket = tcpConnect({ host: ip, port });
    socket.setNoDelay(true);
    return socket;
  }

  async spawn(id: string, opts: SpawnOptions): Promise<GuestProcess> {
    const rec = this.record(id);
    if (!rec) throw new Error(`MicroVM ${id} has no sandbox on this host`);
    return spawnGuest({ gvisor: this.opts.gvisor, sandboxId: this.sandboxOf(id), rootfs: rec.rootfs, config: rec.config, env: rec.env ?? {}, dir: join(this.dir(id), "exec") }, opts);
  }

  /** Memory a sandbox of a version needs as it starts: its snapshot's pages (a MicroVM's own checkpoint is about as big). */
  private startingMemory(imageArn: string, version: string): number {
    return memoryImageSize(this.opts.locate(imageArn, version).snapshot);
  }

  /** The sandbox now holds its own memory and vCPUs (or failed to): its promised room is released. */
  private release(memoryBytes: number, vcpus: number): void {
    const i = this.reserved.findIndex((r) => r.bytes === memoryBytes && r.vcpus === vcpus);
    if (i >= 0) this.reserved.splice(i, 1);
  }
}

/** When a process started (field 22 of /proc/<pid>/stat, in clock ticks since boot); undefined when it is gone or a zombie. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}
