// Images and checkpoints kept in the object store (docs/design.md, "Object
// store"), which is their truth when one is configured: the data directory's
// images/ and microvms/<id>/checkpoint/ are caches of it.
//
// - A version's image is put once, when its build succeeds (ReplicatedBuilder:
//   a failed upload fails the build, naming the store). An image deleted and
//   made again restarts at version 1.0 under the same key, so a local copy is
//   used only when it was built for the version row being run (its createdAt,
//   in lmvm-version.json, in the archive too) or its stamp (lmvm-object.json)
//   names the stored object's SHA-256: otherwise, or when the data directory
//   lacks it, it is fetched before a run or resume (ReplicatedRuntime.shortage,
//   run). Fetches of one version share one transfer; the archive is checked
//   (size and SHA-256), unpacked beside the version's directory and renamed
//   into place, so a partial fetch never looks like a built image.
// - checkpoints/<id>/current.json names the MicroVM's incarnation now live or
//   saved. A resume moves it to the new incarnation before the new sandbox
//   starts (and back when the sandbox never started); a suspend writes it with
//   its upload. A checkpoint, local or stored, is used or uploaded only when
//   its incarnation is the current one; a host that holds neither a copy of
//   it nor the sandbox that is it cannot inspect the MicroVM.
// - A suspend puts the MicroVM's checkpoint before the MicroVM is SUSPENDED;
//   once the put succeeded it is SUSPENDED (removing older copies is only
//   logged when it fails). When the upload fails, the MicroVM is resumed from
//   its local copy (room reserved first) and stays RUNNING (NotBegun); when
//   there is no room or that resume fails, it stays SUSPENDED on this host's
//   copy. After a resume the spent checkpoints are removed from the store.
// - lmvm-store.json marks the store: until this host has found the marker it
//   saw before (or written the first one), nothing absent counts as gone.
// - Recovery: a store that cannot be reached makes the MicroVM uninspectable,
//   so it is left as recorded; after one failure, the next MicroVMs are not
//   tried against the store for STORE_DOWN_SECONDS.
// Every transfer has a deadline and logs its progress (bytes, seconds).

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Duplex } from "node:stream";
import {
  BuildFailure, InvalidInput, NotBegun, ObjectStoreUnavailable, parseArn, RuntimeUnavailable, type BuildJob, type GuestProcess, type ImageBuilder, type ImageVersion, type Microvm, type ObjectStore,
  type SandboxFound, type SandboxRuntime, type EgressPolicy, type SnapshotBuild, type SpawnOptions, type WarmPoolTarget,
} from "../core/index.js";
import { removeTree } from "../os/index.js";
import { pack, unpack } from "./archive.js";
import { checkpointHeadKey, checkpointKey, checkpointPrefix, imageKey, imagePrefix, incarnationOf, MARKER_KEY } from "./keys.js";

/** Default deadline of one upload or fetch: a few GiB on a slow link. */
export const TRANSFER_SECONDS = 900;
/** Deadline of a lookup, a listing or a deletion. */
const LOOKUP_SECONDS = 30;
/** After the store could not be reached during an inspection, how long further inspections do not try it. */
const STORE_DOWN_SECONDS = 60;
const PROGRESS_EVERY_MS = 5_000;
/** What a built version's directory holds that a run needs (those present are archived). */
const IMAGE_ENTRIES = ["rootfs", "config.json", "snapshot", "snapshot-boot.log", "lmvm-version.json"];
/** The stamp in a version's local directory: which stored object it is a copy of. */
const IMAGE_STAMP = "lmvm-object.json";
/** In the archive too: which version row (its createdAt) the image was built for. */
const VERSION_STAMP = "lmvm-version.json";

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
  /** Where this host keeps the id of the store's marker it has seen (default: kept in memory only). */
  markerFile?: string;
}

/** The version's image is in neither the data directory nor the object store. */
export class ImageMissing extends Error {}

function imageNameOf(imageArn: string): string {
  const name = parseArn(imageArn)?.resourceId;
  if (!name) throw new Error(`not an image ARN: ${imageArn}`);
  return name;
}

const mib = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

/** Moving images and checkpoints between the data directory and the object store. */
export class Replicas {
  private readonly fetches = new Map<string, Promise<void>>();
  private markerSeen: string | undefined;
  private markerChecked = false;

  constructor(private readonly opts: ReplicasOptions) {
    removeTree(opts.stagingDir);
    mkdirSync(opts.stagingDir, { recursive: true });
    if (opts.markerFile) this.markerSeen = (readJson(opts.markerFile) as { storeId?: string } | undefined)?.storeId;
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

  /** A small JSON object of the store, or undefined when there is none. */
  private async getJson(key: string, signal: AbortSignal): Promise<unknown> {
    const file = this.staged();
    try {
      if (!(await this.opts.store.get(key, file, signal))) return undefined;
      try {
        return JSON.parse(readFileSync(file, "utf8"));
      } catch {
        throw new ObjectStoreUnavailable(`${key} in ${this.url} is not JSON`);
      }
    } finally {
      rmSync(file, { force: true });
    }
  }

  private async putJson(key: string, value: unknown, signal: AbortSignal): Promise<void> {
    const file = this.staged();
    try {
      writeFileSync(file, JSON.stringify(value));
      await this.opts.store.put(key, file, signal);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /**
   * Checks the store's marker (lmvm-store.json), writing it on first use: a store this host has
   * used before that has no marker now, or another's, looks empty because it is the wrong place
   * (an unmounted directory, a mistyped bucket or prefix). Throws ObjectStoreUnavailable then.
   */
  async checkMarker(signal: AbortSignal = this.lookup()): Promise<void> {
    const found = (await this.getJson(MARKER_KEY, signal)) as { storeId?: unknown } | undefined;
    const id = typeof found?.storeId === "string" ? found.storeId : undefined;
    if (found && !id) throw new ObjectStoreUnavailable(`${MARKER_KEY} in ${this.url} names no storeId: it is not lmvm's marker`);
    if (id && this.markerSeen && id !== this.markerSeen) {
      throw new ObjectStoreUnavailable(`${this.url} is marked as the store ${id}, but this server has used the store ${this.markerSeen}: check --object-store (a wrong bucket, prefix or mount); objects it lacks are not taken as gone`);
    }
    if (!id && this.markerSeen) {
      throw new ObjectStoreUnavailable(`${this.url} has no ${MARKER_KEY}, but this server has used the store ${this.markerSeen} there: it looks empty (an unmounted directory, a wrong bucket or prefix?); objects it lacks are not taken as gone until the marker is back`);
    }
    const storeId = id ?? `${Date.now().toString(36)}-${randomBytes(8).toString("hex")}`;
    if (!id) {
      await this.putJson(MARKER_KEY, { storeId, created: new Date().toISOString() }, signal);
      this.opts.log({ msg: "object store marked for first use", store: this.url, storeId });
    }
    if (this.opts.markerFile && this.markerSeen !== storeId) {
      mkdirSync(dirname(this.opts.markerFile), { recursive: true });
      writeFileSync(this.opts.markerFile, JSON.stringify({ storeId, url: this.url }));
    }
    this.markerSeen = storeId;
    this.markerChecked = true;
  }

  /** Resolves once the marker has been found (checked once per server); throws while it cannot be. */
  async ensureMarker(): Promise<void> {
    if (!this.markerChecked) await this.checkMarker();
  }

  /** Puts the built version's image (everything a run on another host needs), and stamps the local copy with the stored object's hash. */
  async putImage(imageArn: string, version: string, signal?: AbortSignal, createdAt?: Date): Promise<void> {
    const dir = this.opts.imageDir(imageArn, version);
    const key = imageKey(imageNameOf(imageArn), version, this.opts.architecture);
    const file = this.staged();
    if (createdAt) writeFileSync(join(dir, VERSION_STAMP), JSON.stringify({ createdAt: createdAt.toISOString() }));
    try {
      const info = await this.transfer("upload", key, signal, async (s, progress) => {
        await pack(dir, IMAGE_ENTRIES.filter((e) => existsSync(join(dir, e))), file, s);
        this.opts.log({ msg: "object store archive made", key, bytes: statSync(file).size });
        return this.opts.store.put(key, file, s, progress);
      });
      writeFileSync(join(dir, IMAGE_STAMP), JSON.stringify({ key: info.key, sha256: info.sha256 }));
    } finally {
      rmSync(file, { force: true });
    }
  }

  /**
   * Makes sure the data directory holds the version's image: a local copy built for the version row
   * created at `createdAt` is used as it is; else one whose stamp names the stored object's SHA-256;
   * else the image is fetched (one fetch per version at a time). Throws ImageMissing when the store
   * has none.
   */
  ensureImage(imageArn: string, version: string, createdAt?: Date): Promise<void> {
    const dir = this.opts.imageDir(imageArn, version);
    if (createdAt && existsSync(join(dir, "config.json")) && (readJson(join(dir, VERSION_STAMP)) as { createdAt?: string } | undefined)?.createdAt === createdAt.toISOString()) return Promise.resolve();
    let fetch = this.fetches.get(dir);
    if (!fetch) {
      fetch = this.refreshImage(imageArn, version, dir).finally(() => this.fetches.delete(dir));
      this.fetches.set(dir, fetch);
    }
    return fetch;
  }

  private async refreshImage(imageArn: string, version: string, dir: string): Promise<void> {
    const key = imageKey(imageNameOf(imageArn), version, this.opts.architecture);
    const stored = await this.opts.store.head(key, this.lookup()).catch((err: Error) => {
      throw new Error(`Fetching the image of version ${version} of ${imageArn} from the object store ${this.url} failed: ${err.message}`);
    });
    if (!stored) {
      await this.ensureMarker();
      throw new ImageMissing(`The image of version ${version} of ${imageArn} is missing from the object store ${this.url} (no ${key}): build a new version of the image.`);
    }
    if (existsSync(join(dir, "config.json"))) {
      const stamp = readJson(join(dir, IMAGE_STAMP)) as { sha256?: string } | undefined;
      if (stamp?.sha256 === stored.sha256) return;
      this.opts.log({ msg: "the local copy of a version's image is not the store's (an image deleted and made again?): fetching it", imageArn, version, store: this.url, key, local: stamp?.sha256 ?? null, stored: stored.sha256 });
    }
    await this.fetchImage(imageArn, version, dir, key);
  }

  private async fetchImage(imageArn: string, version: string, dir: string, key: string): Promise<void> {
    const file = this.staged();
    const parent = dirname(dir);
    const partial = join(parent, `.fetch-${randomBytes(6).toString("hex")}`);
    // What a fetch cut short by a killed server left (this one is the version's only fetch now).
    if (existsSync(parent)) for (const name of readdirSync(parent)) if (name.startsWith(".fetch-")) removeTree(join(parent, name));
    try {
      let info: { key: string; sha256: string } | undefined;
      await this.transfer("fetch", key, undefined, async (s, progress) => {
        info = await this.opts.store.get(key, file, s, progress);
        if (!info) throw new ImageMissing(`The image of version ${version} of ${imageArn} is missing from the object store ${this.url} (no ${key}): build a new version of the image.`);
        mkdirSync(partial, { recursive: true });
        await unpack(file, partial, s);
      });
      if (!existsSync(join(partial, "config.json"))) throw new Error(`the archive ${key} in ${this.url} holds no config.json: it is not a built image`);
      writeFileSync(join(partial, IMAGE_STAMP), JSON.stringify({ key, sha256: info!.sha256 }));
      // A stale copy (another image's under the same name and version) goes aside first, and is removed with the partial ones.
      if (existsSync(dir)) renameSync(dir, join(parent, `.fetch-stale-${randomBytes(6).toString("hex")}`));
      renameSync(partial, dir);
    } catch (err) {
      if (err instanceof ImageMissing) throw err;
      throw new Error(`Fetching the image of version ${version} of ${imageArn} from the object store ${this.url} failed: ${(err as Error).message}`);
    } finally {
      rmSync(file, { force: true });
      removeTree(partial);
      if (existsSync(parent)) for (const name of readdirSync(parent)) if (name.startsWith(".fetch-stale-")) removeTree(join(parent, name));
    }
  }

  async deleteImage(imageArn: string, version: string): Promise<void> {
    const removed = await this.opts.store.deletePrefix(imagePrefix(imageNameOf(imageArn), version), this.lookup());
    if (removed) this.opts.log({ msg: "object store image removed", store: this.url, imageArn, version, objects: removed });
  }

  /** The newest checkpoint of the MicroVM in the store, or undefined. */
  async latestCheckpoint(id: string): Promise<{ key: string; incarnation: number } | undefined> {
    return (await this.storedCheckpoints(id)).at(-1);
  }

  private async storedCheckpoints(id: string): Promise<{ key: string; incarnation: number }[]> {
    return (await this.opts.store.list(checkpointPrefix(id), this.lookup()))
      .map((o) => ({ key: o.key, incarnation: incarnationOf(o.key) }))
      .filter((o): o is { key: string; incarnation: number } => o.incarnation !== undefined)
      .sort((a, b) => a.incarnation - b.incarnation);
  }

  /** Whether the store holds the MicroVM's current checkpoint (by its head object, else its newest); throws when the store cannot tell. */
  async storedCheckpoint(id: string): Promise<boolean> {
    await this.ensureMarker();
    const head = await this.currentIncarnation(id);
    if (head.named) return this.hasCheckpoint(id, head.incarnation);
    return (await this.latestCheckpoint(id)) !== undefined;
  }

  /** Whether the store holds the MicroVM's checkpoint of `incarnation`. */
  async hasCheckpoint(id: string, incarnation: number): Promise<boolean> {
    return (await this.opts.store.head(checkpointKey(id, incarnation), this.lookup())) !== undefined;
  }

  /**
   * The MicroVM's current incarnation (live or saved) by its head object; `named` is false when the
   * store has none (a MicroVM never resumed since it ran: incarnation 0).
   */
  async currentIncarnation(id: string): Promise<{ incarnation: number; named: boolean }> {
    const head = (await this.getJson(checkpointHeadKey(id), this.lookup())) as { incarnation?: unknown } | undefined;
    if (head === undefined) return { incarnation: 0, named: false };
    if (typeof head.incarnation !== "number" || !Number.isInteger(head.incarnation)) throw new ObjectStoreUnavailable(`${checkpointHeadKey(id)} in ${this.url} names no incarnation`);
    return { incarnation: head.incarnation, named: true };
  }

  /** Moves the MicroVM's head object to `incarnation`. */
  async setCurrentIncarnation(id: string, incarnation: number): Promise<void> {
    await this.putJson(checkpointHeadKey(id), { incarnation }, this.lookup());
  }

  /**
   * Puts the MicroVM's checkpoint of `incarnation` and its head. Once the checkpoint is stored the
   * suspend has succeeded: failing to write the head (which already names it) or to remove older
   * checkpoints is logged, not thrown.
   */
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
    await this.setCurrentIncarnation(id, incarnation).catch((err: Error) => this.opts.log({ level: "error", msg: "writing a suspended MicroVM's head object failed (it named this incarnation already)", microvmId: id, incarnation, store: this.url, err: err.message }));
    await this.removeCheckpointsBut(id, incarnation);
  }

  /** Removes the MicroVM's stored checkpoints other than `keep`'s (the head object stays); failures are logged. */
  async removeCheckpointsBut(id: string, keep: number): Promise<void> {
    try {
      for (const o of await this.storedCheckpoints(id)) if (o.incarnation !== keep) await this.opts.store.delete(o.key, this.lookup());
    } catch (err) {
      this.opts.log({ level: "error", msg: "removing a MicroVM's spent checkpoints from the object store failed", microvmId: id, store: this.url, err: (err as Error).message });
    }
  }

  /**
   * Replaces the MicroVM's local checkpoint and sandbox record with the store's `key`. `prepare`
   * rewrites what was fetched (in its own directory) before it is renamed into place, so a crash
   * never leaves another host's sandbox record in the MicroVM's directory.
   */
  async fetchCheckpoint(id: string, key: string, prepare?: (fetchedDir: string) => void): Promise<void> {
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
      prepare?.(partial);
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
      await this.replicas.putImage(job.version.imageArn, job.version.version, signal, job.version.createdAt);
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
  /**
   * Takes up the sandbox record and checkpoint just fetched into the MicroVM's directory, as if this
   * host had made them. With `dir` (a fetch's own directory, before it is renamed into place), only
   * rewrites the sandbox record there.
   */
  importCheckpoint(vm: Microvm, dir?: string): void;
}

/** The sandbox runtime, with images fetched before runs and checkpoints kept in the object store. */
export class ReplicatedRuntime implements SandboxRuntime {
  /** Versions seen by run and shortage, for the room a fallback resume reserves. */
  private readonly versions = new Map<string, ImageVersion>();
  /** When an inspection last failed to reach the store. */
  private storeDownAt: number | undefined;

  constructor(private readonly inner: SandboxRuntime & CheckpointImport, private readonly replicas: Replicas, private readonly opts: { microvmDir: (id: string) => string; log: (event: Record<string, unknown>) => void }) {}

  private localCheckpoint(id: string): boolean {
    return existsSync(join(this.opts.microvmDir(id), "checkpoint", "checkpoint.img"));
  }

  private remember(version: ImageVersion): void {
    this.versions.set(`${version.imageArn} ${version.version}`, version);
  }

  /** The version's image, here and the store's; a missing one is the caller's to fix (build a new version), an unreachable store this host's. */
  private async image(imageArn: string, version: string): Promise<void> {
    await this.replicas.ensureImage(imageArn, version, this.versions.get(`${imageArn} ${version}`)?.createdAt).catch((err: Error) => {
      throw err instanceof ImageMissing ? new InvalidInput(err.message) : new RuntimeUnavailable(err.message);
    });
  }

  async run(vm: Microvm, version: ImageVersion): Promise<void> {
    this.remember(version);
    await this.image(version.imageArn, version.version);
    return this.inner.run(vm, version);
  }

  async suspend(vm: Microvm): Promise<void> {
    await this.inner.suspend(vm);
    const incarnation = this.inner.incarnation(vm.id) ?? 0;
    try {
      await this.replicas.putCheckpoint(vm.id, incarnation);
    } catch (err) {
      const why = `its checkpoint could not be uploaded to the object store ${this.replicas.url} (${(err as Error).message})`;
      // The sandbox is gone; its local checkpoint brings it back, and a MicroVM whose checkpoint only this host holds is not SUSPENDED
      // while it can run. Room is reserved first (the resume releases what it reserved, never another start's).
      const version = this.versions.get(`${vm.imageArn} ${vm.imageVersion}`);
      const short = version
        ? await this.inner.shortage(version).catch((e: Error) => e.message)
        : "this server has not seen the version's configuration since it started, so it cannot reserve room for it";
      const keep = (reason: string) => this.opts.log({ level: "error", msg: "suspended on this host only: the checkpoint is not in the object store", microvmId: vm.id, incarnation, reason });
      if (short) {
        keep(`${why}; not resumed: ${short}`);
        return;
      }
      const record = join(this.opts.microvmDir(vm.id), "sandbox.json");
      const saved = readFileSync(record);
      try {
        await this.inner.resume(vm);
      } catch (resumeErr) {
        // Still a checkpoint here: the MicroVM stays SUSPENDED on it (its head names this incarnation), never ended.
        if (!(resumeErr instanceof NotBegun)) {
          writeFileSync(record, saved);
          this.inner.importCheckpoint(vm);
        }
        keep(`${why}; resuming it from its local checkpoint failed: ${(resumeErr as Error).message}`);
        return;
      }
      // The head follows when the store lets it (heads only move forward with resumes, so a local
      // incarnation above the head's is this host's newest either way).
      await this.replicas.setCurrentIncarnation(vm.id, this.inner.incarnation(vm.id) ?? incarnation + 1).catch(() => undefined);
      throw new NotBegun(`${why}; it was resumed from its local checkpoint`);
    }
  }

  async resume(vm: Microvm): Promise<void> {
    let current: number;
    try {
      // The image first: the checkpoint's sandbox record is made to name its rootfs here.
      await this.image(vm.imageArn, vm.imageVersion);
      await this.replicas.ensureMarker();
      const local = this.localCheckpoint(vm.id) ? this.inner.incarnation(vm.id) : undefined;
      ({ current } = await this.current(vm.id, local));
      // The head is the truth: a local copy of an earlier incarnation (resumed elsewhere since) is stale.
      // One above it was made here after a failed upload, when the head could not be moved.
      if (local !== undefined && local > current) current = local;
      if (local !== current) {
        if (!(await this.replicas.hasCheckpoint(vm.id, current))) {
          throw new Error(`the object store ${this.replicas.url} names incarnation ${current} as the MicroVM's current one, and neither holds its checkpoint nor does this host (${local === undefined ? "no copy here" : `its copy is of incarnation ${local}`}): it may be running or being suspended on another server`);
        }
        await this.replicas.fetchCheckpoint(vm.id, checkpointKey(vm.id, current), (dir) => this.inner.importCheckpoint(vm, dir));
        this.inner.importCheckpoint(vm);
      }
      // Before the new sandbox starts: from now on no other copy of the old incarnation is used.
      await this.replicas.setCurrentIncarnation(vm.id, current + 1);
    } catch (err) {
      throw new NotBegun(`its checkpoint or image could not be fetched: ${(err as Error).message}`);
    }
    try {
      await this.inner.resume(vm);
    } catch (err) {
      // The new sandbox never started: the checkpoint is current again.
      if (err instanceof NotBegun) {
        await this.replicas.setCurrentIncarnation(vm.id, current).catch((e: Error) => this.opts.log({ level: "error", msg: "moving a MicroVM's head object back after a resume that did not begin failed: no host resumes it until it is written", microvmId: vm.id, incarnation: current, err: e.message }));
      }
      throw err;
    }
    // Resumed: the checkpoint is spent here (the runtime removed its copy) and, the head having moved, in the store.
    await this.replicas.removeCheckpointsBut(vm.id, current + 1);
  }

  async terminate(vm: Microvm): Promise<void> {
    try {
      await this.inner.terminate(vm);
    } finally {
      // The MicroVM ends even when its host could not be told (killed mid-call): its checkpoints are of no use any more.
      const removed = await this.replicas.deleteCheckpoints(vm.id);
      if (removed) this.opts.log({ msg: "object store checkpoints removed", microvmId: vm.id, objects: removed });
    }
  }

  async shortage(version: ImageVersion): Promise<string | undefined> {
    this.remember(version);
    // Room is measured with the version's snapshot, which must be here first. Without it this host can
    // start no MicroVM of the version: callers keep their records as they are (a resume leaves it SUSPENDED).
    await this.image(version.imageArn, version.version);
    return this.inner.shortage(version);
  }

  unrunnable(version: ImageVersion): string | undefined {
    return this.inner.unrunnable?.(version);
  }

  async inspect(vm: Microvm): Promise<SandboxFound> {
    const found = await this.inner.inspect(vm);
    if (found.running || (vm.state !== "SUSPENDED" && vm.state !== "SUSPENDING")) return found;
    // One store that cannot be reached costs one deadline, not one per MicroVM.
    if (this.storeDownAt !== undefined && Date.now() - this.storeDownAt < STORE_DOWN_SECONDS * 1000) {
      throw new ObjectStoreUnavailable(`the object store ${this.replicas.url} could not be reached ${Math.round((Date.now() - this.storeDownAt) / 1000)} s ago`);
    }
    try {
      const checkpoint = await this.checkpointOf(vm, found.checkpoint);
      this.storeDownAt = undefined;
      return { ...found, checkpoint };
    } catch (err) {
      if (err instanceof ObjectStoreUnavailable) this.storeDownAt = Date.now();
      throw err;
    }
  }

  /**
   * The MicroVM's current incarnation by its head object. Without one (a MicroVM suspended before heads
   * were written, or never resumed): the local checkpoint's, else the store's newest, else 0.
   */
  private async current(id: string, local: number | undefined): Promise<{ current: number; named: boolean }> {
    const head = await this.replicas.currentIncarnation(id);
    if (head.named) return { current: head.incarnation, named: true };
    return { current: local ?? (await this.replicas.latestCheckpoint(id))?.incarnation ?? 0, named: false };
  }

  /**
   * Whether the not-running MicroVM has a checkpoint to resume: the current incarnation's, here or
   * in the store. A server that died during a suspend, after the checkpoint, has its checkpoint put
   * first (recovery then makes the MicroVM SUSPENDED). Throws when this host cannot tell: the store
   * unreachable or unmarked, or the current incarnation is one this host neither has a copy of nor ran.
   */
  private async checkpointOf(vm: Microvm, localCheckpoint: boolean): Promise<boolean> {
    await this.replicas.ensureMarker();
    const here = this.inner.incarnation(vm.id);
    const { current, named } = await this.current(vm.id, localCheckpoint ? here : undefined);
    if (localCheckpoint && here !== undefined && here >= current) {
      if (vm.state === "SUSPENDING" && !(await this.replicas.hasCheckpoint(vm.id, here))) await this.replicas.putCheckpoint(vm.id, here);
      return true;
    }
    if (await this.replicas.hasCheckpoint(vm.id, current)) return true;
    // This host ran the current incarnation (or none was ever resumed) and holds no checkpoint of it: it is gone.
    if (here === current || !named) return false;
    throw new Error(`the object store ${this.replicas.url} names incarnation ${current} as its current one, which neither it nor this host (${localCheckpoint ? `holding a stale copy of incarnation ${here}` : "holding no copy"}) has a checkpoint of: it may be running or being suspended on another server`);
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

  connect(microvmId: string, port: number): Duplex {
    return this.inner.connect(microvmId, port);
  }

  spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess> {
    return this.inner.spawn(microvmId, opts);
  }

  async warmPools(targets: WarmPoolTarget[]): Promise<void> {
    // Clones restore the version's snapshot: only versions whose image is here (or can be fetched) get a pool.
    const ready: WarmPoolTarget[] = [];
    for (const t of targets) {
      try {
        this.remember(t.version);
        await this.replicas.ensureImage(t.version.imageArn, t.version.version, t.version.createdAt);
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

  // A clone exists only for a version whose image is here (warmPools above), so a claim needs no fetch.
  claimWarm(version: ImageVersion, egress: EgressPolicy, logging: boolean): Promise<string | undefined> {
    return this.inner.claimWarm(version, egress, logging);
  }

  unclaimWarm(microvmId: string): Promise<void> {
    return this.inner.unclaimWarm(microvmId);
  }
}
