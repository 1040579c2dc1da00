// Test doubles for the two ports whose real implementations come with the
// image-build and snapshot-runtime work (src/builder, src/runtime). They let the
// control-plane tests drive every state transition deterministically: each
// call waits until the test releases it with success or a failure reason.
// The product never uses them.

import { connect as tcpConnect } from "node:net";
import { Duplex } from "node:stream";
import { within } from "./deadline.js";
import {
  BuildFailure, type BuildJob, type GuestProcess, type ImageBuilder, type ImageVersion, type Microvm, type SandboxFound, type SandboxRuntime, type SnapshotBuild, type WarmPoolTarget,
} from "../../src/core/index.js";

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

/** Calls queue up; `succeed` / `fail` settle the oldest. `auto` settles them at once. */
class Script<T> {
  readonly calls: string[] = [];
  private readonly waiting: Pending<T>[] = [];
  private readonly arrived: (() => void)[] = [];
  auto: { value: T } | { error: string } | undefined;

  call(label: string, makeError: (msg: string) => Error): Promise<T> {
    this.calls.push(label);
    if (this.auto) return "value" in this.auto ? Promise.resolve(this.auto.value) : Promise.reject(makeError(this.auto.error));
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.arrived.splice(0).forEach((f) => f());
    });
  }

  /** The oldest waiting call; fails if none arrives within `ms` (the code under test never made it). */
  async next(ms = 30_000): Promise<Pending<T>> {
    await within(ms, "a call to the scripted builder or runtime, for the test to settle", (async () => {
      while (!this.waiting.length) await new Promise<void>((r) => this.arrived.push(r));
    })());
    return this.waiting.shift()!;
  }
}

export class ScriptedBuilder implements ImageBuilder {
  private readonly script = new Script<SnapshotBuild>();
  readonly discarded: string[] = [];
  recovered = 0;

  get calls(): string[] {
    return this.script.calls;
  }

  /** Every build succeeds (or fails with `error`) immediately. */
  always(outcome: { snapshot: SnapshotBuild } | { error: string }): void {
    this.script.auto = "snapshot" in outcome ? { value: outcome.snapshot } : { error: outcome.error };
  }

  build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    const p = this.script.call(`${job.build.imageArn}:${job.version.version}`, (m) => new BuildFailure(m));
    return new Promise((resolve, reject) => {
      signal.addEventListener("abort", () => reject(new BuildFailure("cancelled")), { once: true });
      p.then(resolve, reject);
    });
  }

  async succeed(snapshot: SnapshotBuild = { memorySnapshotSizeInBytes: 1, diskSnapshotSizeInBytes: 2, codeInstallSizeInBytes: 3 }): Promise<void> {
    (await this.script.next()).resolve(snapshot);
  }

  async fail(reason: string): Promise<void> {
    (await this.script.next()).reject(new BuildFailure(reason));
  }

  async discard(imageArn: string, version: string): Promise<void> {
    this.discarded.push(`${imageArn}:${version}`);
  }

  async recover(): Promise<void> {
    this.recovered++;
  }
}

export class ScriptedRuntime implements SandboxRuntime {
  readonly calls: string[] = [];
  capacity = true;
  /** The next call of that kind fails with this message, or this error. */
  failNext: Partial<Record<"run" | "suspend" | "resume", string | Error>> = {};
  /** The next such call does its work, then fails with this (its answer lost, as when its host is cut off meanwhile). */
  failAfter: Partial<Record<"run" | "suspend" | "resume", string>> = {};
  /** While set, inspect fails with this (its host unreached, say). */
  failInspect: string | undefined;
  /** Standing troubles to report, by MicroVM id. */
  readonly conditions = new Map<string, string>();
  /** Why a sandbox died, by MicroVM id. */
  readonly exitReasons = new Map<string, string>();
  /** Where each MicroVM's app answers, by id; none unless a test sets one. */
  readonly addresses = new Map<string, string>();
  private readonly alive = new Set<string>();
  private readonly checkpoints = new Set<string>();
  /** The warm pools the core asked for last ("<image arn> <version>=<size>"), and whether they were closed. */
  poolTargets: string[] = [];
  poolsClosed = false;

  async warmPools(targets: WarmPoolTarget[]): Promise<void> {
    this.poolTargets = targets.map((t) => `${t.version.imageArn} ${t.version.version}=${t.size}`);
  }

  async closeWarmPools(): Promise<void> {
    this.poolsClosed = true;
  }

  /** No clones are made here: every run is a miss. */
  async claimWarm(): Promise<undefined> {
    return undefined;
  }

  async unclaimWarm(): Promise<void> {}

  private act(what: "run" | "suspend" | "resume", vm: Microvm): Promise<void> {
    this.calls.push(`${what} ${vm.id}`);
    const failure = this.failNext[what];
    if (failure) {
      delete this.failNext[what];
      return Promise.reject(failure instanceof Error ? failure : new Error(failure));
    }
    if (what === "suspend") {
      this.alive.delete(vm.id);
      this.checkpoints.add(vm.id);
    } else {
      this.alive.add(vm.id);
      this.checkpoints.delete(vm.id);
    }
    const lost = this.failAfter[what];
    if (lost) {
      delete this.failAfter[what];
      return Promise.reject(new Error(lost));
    }
    return Promise.resolve();
  }

  /** The sandbox dies under its MicroVM, as the OOM killer would do it. */
  kill(id: string, reason?: string): void {
    this.alive.delete(id);
    if (reason) this.exitReasons.set(id, reason);
  }

  async inspect(vm: Microvm): Promise<SandboxFound> {
    this.calls.push(`inspect ${vm.id}`);
    if (this.failInspect) throw new Error(this.failInspect);
    return { running: this.alive.has(vm.id), checkpoint: this.checkpoints.has(vm.id) };
  }
  async adopt(running: Microvm[]): Promise<void> {
    this.calls.push(`adopt ${running.map((vm) => vm.id).join(",")}`);
  }
  async reap(keep: Microvm[]): Promise<void> {
    this.calls.push(`reap ${keep.map((vm) => vm.id).join(",")}`);
    const running = new Set(keep.filter((vm) => vm.state === "RUNNING").map((vm) => vm.id));
    const suspended = new Set(keep.filter((vm) => vm.state === "SUSPENDED").map((vm) => vm.id));
    for (const id of this.alive) if (!running.has(id)) this.alive.delete(id);
    for (const id of this.checkpoints) if (!suspended.has(id)) this.checkpoints.delete(id);
  }
  async exitReason(vm: Microvm): Promise<string | undefined> {
    return this.exitReasons.get(vm.id);
  }
  address(id: string): string | undefined {
    return this.alive.has(id) ? this.addresses.get(id) : undefined;
  }
  /** TCP to the address a test set for the MicroVM; fails on the stream when it has none. */
  connect(id: string, port: number): Duplex {
    const ip = this.address(id);
    if (!ip) {
      const stream = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
      process.nextTick(() => stream.destroy(new Error(`MicroVM ${id} is not running in the scripted runtime`)));
      return stream;
    }
    return tcpConnect({ host: ip, port });
  }
  async spawn(id: string): Promise<GuestProcess> {
    throw new Error(`the scripted runtime starts no processes (asked for one in ${id}); shell tests use the gVisor runtime`);
  }

  async running(): Promise<Set<string>> {
    return new Set(this.alive);
  }
  async condition(vm: Microvm): Promise<string | undefined> {
    return this.conditions.get(vm.id);
  }

  run(vm: Microvm, _version: ImageVersion): Promise<void> {
    return this.act("run", vm);
  }
  suspend(vm: Microvm): Promise<void> {
    return this.act("suspend", vm);
  }
  resume(vm: Microvm): Promise<void> {
    return this.act("resume", vm);
  }
  async terminate(vm: Microvm): Promise<void> {
    this.calls.push(`terminate ${vm.id}`);
    this.alive.delete(vm.id);
    this.checkpoints.delete(vm.id);
  }
  async shortage(_version: ImageVersion): Promise<string | undefined> {
    return this.capacity ? undefined : "the test says it is full";
  }
}
