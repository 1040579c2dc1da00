// Images and checkpoints kept in the object store (docs/design.md, "Object
// store"), which is their truth when one is configured: the data directory's
// images/ and microvms/<id>/checkpoint/ are caches of it.
//
// - A version's image is put once, when its build succeeds (ReplicatedBuilder:
//   a failed upload fails the build, naming the store); a host whose data
//   directory lacks it fetches it before it runs or resumes a MicroVM of it
//   (ReplicatedRuntime.shortage, run). Fetches of one version share one
//   transfer; the archive is checked (size and SHA-256), unpacked beside the
//   version's directory and renamed into place, so a partial fetch never
//   looks like a built image.
// - A suspend puts the MicroVM's checkpoint (memory and disk, its platform
//   stamp, and its sandbox record) before the MicroVM is SUSPENDED; when the
//   upload fails the MicroVM is resumed from its local copy and stays RUNNING
//   (NotBegun). A resume uses the local checkpoint only when it is the
//   store's latest (same incarnation), else it fetches it; after a resume the
//   store's copy is removed, as the local one is. Terminate removes the
//   MicroVM's checkpoints, a version's deletion its image.
// - Recovery: a SUSPENDED MicroVM whose checkpoint is in the store has one,
//   whichever host holds a copy; a store that cannot be reached makes the
//   MicroVM uninspectable, so it is left as recorded.
// Every transfer has a deadline and logs its progress (bytes, seconds).

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import {
  BuildFailure, NotBegun, parseArn, RuntimeUnavailable, type BuildJob, type GuestProcess, type ImageBuilder, type ImageVersion, type Microvm, type ObjectStore,
  type SandboxFound, type SandboxRuntime, type SnapshotBuild, type SpawnOptions, type WarmPoolTarget,
} from "../core/index.js";
import { removeTree } from "../os/index.js";
import { pack, unpack } from "./archive.js";
import { checkpointKey, checkpointPrefix, imageKey, imagePrefix, incarnationOf } from "./keys.js";

/** Default deadline of one upload or fetch: a few GiB on a slow link. */
export const TRANSFER_SECONDS = 900;
/** Deadline of a lookup, a listing or a deletion. */
const LOOKUP_SECONDS = 30;
const PROGRESS_EVERY_MS = 5_000;
/** What a built version's directory holds that a run needs (those present are archived). */
const IMAGE_ENTRIES = ["rootfs", "config.json", "snapshot", "snapshot-boot.log"];

export interface ReplicasOptions {
  store: ObjectStore;
  /** The host's architecture (X86_64, ARM_64): a version's image is one per architecture. */
  architecture: string;
  /** The local directory of a built version (<data-dir>/images/<name>/<version>/<arch>). */
  imageDir: (imageArn: string, version: string) => string;
  /** A MicroVM's local directory (<data-dir>/microvms/<id>), holding sandbox.json and checkpoint/. */
  microvmDir: (id: string) => string;
  /** Scratch space for archives on their way (emptied now). */
  stagingDir: string;
  log: (event: Record<string, unknown>) => void;
  /** Seconds each upload or fetch may take (default TRANSFER_SECONDS). */
  transferSeconds?: number;
}

function imageNameOf(imageArn: string): string {
  const name = parseArn(imageArn)?.resourceId;
  if (!name) throw new Error(`not an image ARN: ${imageArn}`);
  return name;
}

const mib = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

/** Moving images and checkpoints between the data directory and the object store. */
export class Replicas {
  private readonly fetches = new Map<string, Promise<void>>();

  constructor(private readonly opts: ReplicasOptions) {
    removeTree(opts.stagingDir);
    mkdirSync(opts.stagingDir, { recursive: true });
  }

  get url(): string {
    return this.opts.store.url;
  }

  private staged(): string {
    return join(this.opts.stagingDir, `${Date.now()}-${randomBytes(6).toString("hex")}.tar.zst`);
  }

  /** Runs one transfer under its deadline (and `outer`), logging bytes and seconds as it goes and when it ends. */
  private async transfer<T>(direction: "upload" | "fetch", key: string, outer: AbortSignal | undefined, work: (signal: AbortSignal, progress: (bytes: number) => void) => Promise<T>): Promise<T> {
    const seconds = this.opts.transferSeconds ?? TRANSFER_SECONDS;
    const deadline = AbortSignal.timeout(seconds * 1000);
    const signal = outer ? AbortSignal.any([deadline, outer]) : deadline;
    const started = performance.now();
    let bytes = 0;
    const elapsed = () => Math.round(performance.now() - started) / 1000;
    const ticker = setInterval(() => this.opts.log({ msg: `object store ${direction} in progress`, store: this.url, key, bytes, seconds: elapsed() }), PROGRESS_EVERY_MS);
    try {
      const out = await work(signal, (n) => (bytes = n));
      const s = elapsed();
      this.opts.log({ msg: `object store ${direction} done`, store: this.url, key, bytes, seconds: s, mibPerSecond: s > 0 ? mib(bytes / s) : undefined });
      return out;
    } catch (err) {
      this.opts.log({ level: "error", msg: `object store ${direction} failed`, store: this.url, key, bytes, seconds: elapsed(), err: (err as Error).message });
      if (deadline.aborted) throw new Error(`the ${direction} of ${key} did not finish within ${seconds} s (${bytes} bytes moved)`);
      throw err;
    } finally {
      clearInterval(ticker);
    }
  }

  private lookup(): AbortSignal {
    return AbortSignal.timeout(LOOKUP_SECONDS * 1000);
  }

  /** Puts the built version's image (everything a run on another host needs). */
  async putImage(imageArn: string, version: string, signal?: AbortSignal): Promise<void> {
    const dir = this.opts.imageDir(imageArn, version);
    const key = imageKey(imageNameOf(imageArn), version, this.opts.architecture);
    const file = this.staged();
    try {
      await this.transfer("upload", key, signal, async (s, progress) => {
        await pack(dir, IMAGE_ENTRIES.filter((e) => existsSync(join(dir, e))), file, s);
        this.opts.log({ msg: "object store archive made", key, bytes: statSync(file).size });
        await this.opts.store.put(key, file, s, progress);
      });
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** Makes sure the version's image is in the data directory, fetching it when it is not; one fetch per version at a time. */
  ensureImage(imageArn: string, version: string): Promise<void> {
    const dir = this.opts.imageDir(imageArn, version);
    if (existsSync(join(dir, "config.json"))) return Promise.resolve();
    let fetch = this.fetches.get(dir);
    if (!fetch) {
      fetch = this.fetchImage(imageArn, version, dir).finally(() => this.fetches.delete(dir));
      this.fetches.set(dir, fetch);
    }
    return fetch;
  }

  private async fetchImage(imageArn: string, version: string, dir: string): Promise<void> {
    const key = imageKey(imageNameOf(imageArn), version, this.opts.architecture);
    const file = this.staged();
    const parent = dirname(dir);
    const partial = join(parent, `.fetch-${randomBytes(6).toString("hex")}`);
    // What a fetch cut short by a killed server left (this one is the version's only fetch now).
    if (existsSync(parent)) for (const name of readdirSync(parent)) if (name.startsWith(".fetch-")) removeTree(join(parent, name));
    try {
      await this.transfer("fetch", key, undefined, async (s, progress) => {
        const got = await this.opts.store.get(key, file, s, progress);
        if (!got) throw new Error(`version ${version} of ${imageArn} is neither in this server's data directory nor in the object store ${this.url} (no ${key}): build a new version`);
        mkdirSync(partial, { recursive: true });
        await unpack(file, partial, s);
      });
      if (!existsSync(join(partial, "config.json"))) throw new Error(`the archive ${key} in ${this.url} holds no config.json: it is not a built image`);
      renameSync(partial, dir);
    } catch (err) {
      throw new Error(`Fetching the image of version ${version} of ${imageArn} from the object store ${this.url} failed: ${(err as Error).message}`);
    } finally {
      rmSync(file, { force: true });
      removeTree(partial);
    }
  }

  async deleteImage(imageArn: string, version: string): Promise<void> {
    const removed = await this.opts.store.deletePrefix(imagePrefix(imageNameOf(imageArn), version), this.lookup());
    if (removed) this.opts.log({ msg: "object store image removed", store: this.url, imageArn, version, objects: removed });
  }

  /** The newest checkpoint of the MicroVM in the store, or undefined. */
  async latestCheckpoint(id: string): Promise<{ key: string; incarnation: number } | undefined> {
    const found = (await this.opts.store.list(checkpointPrefix(id), this.lookup()))
      .map((o) => ({ key: o.key, incarnation: incarnationOf(o.key) }))
      .filter((o): o is { key: string; incarnation: number } => o.incarnation !== undefined)
      .sort((a, b) => a.incarnation - b.incarnation);
    return found.at(-1);
  }

  /** Puts the MicroVM's checkpoint of `incarnation`, then removes its older ones. */
  async putCheckpoint(id: string, incarnation: number): Promise<void> {
    const key = checkpointKey(id, incarnation);
    const file = this.staged();
    try {
      await this.transfer("upload", key, undefined, async (s, progress) => {
        await pack(this.opts.microvmDir(id), ["checkpoint", "sandbox.json"], file, s);
        await this.opts.store.put(key, file, s, progress);
      });
    } finally {
      rmSync(file, { force: true });
    }
    for (const o of await this.opts.store.list(checkpointPrefix(id), this.lookup())) if (o.key !== key) await this.opts.store.delete(o.key, this.lookup());
  }

  /** Replaces the MicroVM's local checkpoint and sandbox record with the store's `key`. */
  async fetchCheckpoint(id: string, key: string): Promise<void> {
    const dir = this.opts.microvmDir(id);
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) if (name.startsWith(".fetch-")) removeTree(join(dir, name));
    const file = this.staged();
    const partial = join(dir, `.fetch-${randomBytes(6).toString("hex")}`);
    try {
      await this.transfer("fetch", key, undefined, async (s, progress) => {
        const got = await this.opts.store.get(key, file, s, progress);
        if (!got) throw new Error(`no ${key} in ${this.url}`);
        mkdirSync(partial);
        await unpack(file, partial, s);
      });
      if (!existsSync(join(partial, "checkpoint", "checkpoint.img")) || !existsSync(join(partial, "sandbox.json"))) throw new Error(`the archive ${key} in ${this.url} is not a checkpoint (no checkpoint/checkpoint.img or sandbox.json)`);
      removeTree(join(dir, "checkpoint"));
      renameSync(join(partial, "checkpoint"), join(dir, "checkpoint"));
      renameSync(join(partial, "sandbox.json"), join(dir, "sandbox.json"));
    } finally {
      rmSync(file, { force: true });
      removeTree(partial);
    }
  }

  async deleteCheckpoints(id: string): Promise<number> {
    return this.opts.store.deletePrefix(checkpointPrefix(id), this.lookup());
  }
}

/** The builder, with each successful build's image put in the object store before the build counts as SUCCESSFUL. */
export class ReplicatedBuilder implements ImageBuilder {
  constructor(private readonly inner: ImageBuilder, private readonly replicas: Replicas) {}

  async build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    const built = await this.inner.build(job, signal);
    try {
      await this.replicas.putImage(job.version.imageArn, job.version.version, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      throw new BuildFailure(`The image was built, but uploading it to the object store ${this.replicas.url} failed: ${(err as Error).message}. Check the object store (lmvm server --object-store) and build a new version.`);
    }
    return built;
  }

  async discard(imageArn: string, version: string): Promise<void> {
    await this.inner.discard(imageArn, version);
    await this.replicas.deleteImage(imageArn, version);
  }

  recover(): Promise<void> {
    return this.inner.recover();
  }
}

/** What the runtime does for checkpoints that arrive from the object store. */
export interface CheckpointImport {
  /** The incarnation of the MicroVM's checkpoint or sandbox on this host, from its sandbox record; undefined when it has none. */
  incarnation(id: string): number | undefined;
  /** Takes up the sandbox record and checkpoint just fetched into the MicroVM's directory, as if this host had made them. */
  importCheckpoint(vm: Microvm): void;
}

/** The sandbox runtime, with images fetched before runs and checkpoints kept in the object store. */
export class ReplicatedRuntime implements SandboxRuntime {
  constructor(private readonly inner: SandboxRuntime & CheckpointImport, private readonly replicas: Replicas, private readonly opts: { microvmDir: (id: string) => string; log: (event: Record<string, unknown>) => void }) {}

  private localCheckpoint(id: string): boolean {
    return existsSync(join(this.opts.microvmDir(id), "checkpoint", "checkpoint.img"));
  }

  async run(vm: Microvm, version: ImageVersion): Promise<void> {
    await this.replicas.ensureImage(version.imageArn, version.version);
    return this.inner.run(vm, version);
  }

  async suspend(vm: Microvm): Promise<void> {
    await this.inner.suspend(vm);
    const incarnation = this.inner.incarnation(vm.id) ?? 0;
    try {
      await this.replicas.putCheckpoint(vm.id, incarnation);
    } catch (err) {
      const why = `its checkpoint could not be uploaded to the object store ${this.replicas.url} (${(err as Error).message})`;
      // The sandbox is gone; its local checkpoint brings it back, and a MicroVM whose checkpoint only this host holds is not SUSPENDED.
      try {
        await this.inner.resume(vm);
      } catch (resumeErr) {
        throw new Error(`${why}, and resuming it from its local checkpoint failed: ${(resumeErr as Error).message}`);
      }
      throw new NotBegun(`${why}; it was resumed from its local checkpoint`);
    }
  }

  async resume(vm: Microvm): Promise<void> {
    let latest: { key: string; incarnation: number } | undefined;
    try {
      // The image first: the checkpoint's sandbox record is made to name its rootfs here.
      await this.replicas.ensureImage(vm.imageArn, vm.imageVersion);
      latest = await this.replicas.latestCheckpoint(vm.id);
      const local = this.localCheckpoint(vm.id) ? this.inner.incarnation(vm.id) : undefined;
      // The store is the truth: a local copy another host has resumed (and suspended again) since is stale.
      if (latest && local !== latest.incarnation) {
        await this.replicas.fetchCheckpoint(vm.id, latest.key);
        this.inner.importCheckpoint(vm);
      }
      if (!latest && !this.localCheckpoint(vm.id)) throw new Error(`neither this host nor the object store ${this.replicas.url} holds its checkpoint`);
    } catch (err) {
      throw new NotBegun(`its checkpoint or image could not be fetched: ${(err as Error).message}`);
    }
    await this.inner.resume(vm);
    // Resumed: the checkpoint is spent here (the runtime removed its copy) and in the store.
    if (latest) await this.replicas.deleteCheckpoints(vm.id).catch((err: Error) => this.opts.log({ level: "error", msg: "removing a resumed MicroVM's checkpoint from the object store failed", microvmId: vm.id, err: err.message }));
  }

  async terminate(vm: Microvm): Promise<void> {
    await this.inner.terminate(vm);
    const removed = await this.replicas.deleteCheckpoints(vm.id);
    if (removed) this.opts.log({ msg: "object store checkpoints removed", microvmId: vm.id, objects: removed });
  }

  async shortage(version: ImageVersion): Promise<string | undefined> {
    // Room is measured with the version's snapshot, which must be here first. Without it this host can
    // start no MicroVM of the version: callers keep their records as they are (a resume leaves it SUSPENDED).
    await this.replicas.ensureImage(version.imageArn, version.version).catch((err: Error) => {
      throw new RuntimeUnavailable(err.message);
    });
    return this.inner.shortage(version);
  }

  unrunnable(version: ImageVersion): string | undefined {
    return this.inner.unrunnable?.(version);
  }

  async inspect(vm: Microvm): Promise<SandboxFound> {
    const found = await this.inner.inspect(vm);
    if (found.running) return found;
    // A SUSPENDED MicroVM's checkpoint may be only in the store (suspended on another host); a store that cannot be reached throws: not inspectable.
    if (!found.checkpoint && vm.state === "SUSPENDED") return { ...found, checkpoint: (await this.replicas.latestCheckpoint(vm.id)) !== undefined };
    // A server that died during a suspend, after the checkpoint: recovery makes the MicroVM SUSPENDED,
    // so its checkpoint goes to the store first (one that cannot be reached throws: left SUSPENDING, as recorded).
    if (found.checkpoint && vm.state === "SUSPENDING") {
      const incarnation = this.inner.incarnation(vm.id) ?? 0;
      if ((await this.replicas.latestCheckpoint(vm.id))?.incarnation !== incarnation) await this.replicas.putCheckpoint(vm.id, incarnation);
    }
    return found;
  }

  reap(keep: Microvm[]): Promise<void> {
    return this.inner.reap(keep);
  }

  adopt(running: Microvm[]): Promise<void> {
    return this.inner.adopt(running);
  }

  running(): Promise<Set<string>> {
    return this.inner.running();
  }

  exitReason(vm: Microvm): Promise<string | undefined> {
    return this.inner.exitReason(vm);
  }

  condition(vm: Microvm): Promise<string | undefined> {
    return this.inner.condition(vm);
  }

  address(microvmId: string): string | undefined {
    return this.inner.address(microvmId);
  }

  spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess> {
    return this.inner.spawn(microvmId, opts);
  }

  async warmPools(targets: WarmPoolTarget[]): Promise<void> {
    // Clones restore the version's snapshot: only versions whose image is here (or can be fetched) get a pool.
    const ready: WarmPoolTarget[] = [];
    for (const t of targets) {
      try {
        await this.replicas.ensureImage(t.version.imageArn, t.version.version);
        ready.push(t);
      } catch (err) {
        this.opts.log({ level: "error", msg: "no warm pool: the version's image could not be fetched", imageArn: t.version.imageArn, version: t.version.version, err: (err as Error).message });
      }
    }
    return this.inner.warmPools(ready);
  }

  closeWarmPools(): Promise<void> {
    return this.inner.closeWarmPools();
  }
}
