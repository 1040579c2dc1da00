// Images and checkpoints between hosts through the object store (src/objects/replicas.ts), with the
// real file:// adapter in a temporary directory shared by two "hosts" (A and B: their own data
// directories). The sandbox runtime under ReplicatedRuntime is a small stand-in that keeps a
// MicroVM's "memory" (a string) in its checkpoint and its incarnation in sandbox.json as the real
// one does, so what these tests look at is which copy each host uses, uploads or refuses.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { InvalidInput, NotBegun, ObjectStoreUnavailable, type ImageVersion, type Microvm, type ObjectInfo, type SandboxFound } from "../../src/core/index.js";
import { checkpointKey, FileObjectStore, openObjectStore, Replicas, ReplicatedRuntime, type CheckpointImport } from "../../src/objects/index.js";
import { checkpointHeadKey, imageKey, MARKER_KEY } from "../../src/objects/keys.js";
import { startS3Process, type S3Process } from "../support/s3-server.js";
import { tempDir } from "../support/platform.js";

const IMAGE = "arn:aws:lambda:us-east-1:123456789012:microvm-image:app";
const t = () => AbortSignal.timeout(30_000);

/** A store whose puts or deletes can be made to fail, or whose every call fails and is counted. */
class FaultyStore extends FileObjectStore {
  failPut?: (key: string) => boolean;
  failDelete = false;
  down = false;
  calls = 0;
  override async put(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo> {
    this.calls++;
    if (this.down || this.failPut?.(key)) throw new ObjectStoreUnavailable(`Putting ${key} in ${this.url} failed: injected`);
    return super.put(key, file, signal, progress);
  }
  override async get(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo | undefined> {
    this.calls++;
    if (this.down) throw new ObjectStoreUnavailable(`Getting ${key} in ${this.url} failed: injected`);
    return super.get(key, file, signal, progress);
  }
  override async head(key: string, signal: AbortSignal): Promise<ObjectInfo | undefined> {
    this.calls++;
    if (this.down) throw new ObjectStoreUnavailable(`Looking up ${key} in ${this.url} failed: injected`);
    return super.head(key, signal);
  }
  override async delete(key: string, signal: AbortSignal): Promise<void> {
    this.calls++;
    if (this.down || this.failDelete) throw new ObjectStoreUnavailable(`Deleting ${key} in ${this.url} failed: injected`);
    return super.delete(key, signal);
  }
}

/** One host's sandboxes: memory in a map while running, in checkpoint/checkpoint.img while suspended. */
class HostSandboxes implements CheckpointImport {
  readonly live = new Map<string, string>();
  shortages: string[] = [];
  roomFor: string | undefined;
  resumeFails?: "NotBegun" | "after-start";
  importCrash = false;
  constructor(readonly name: string, readonly root: string) {}
  dir(id: string) {
    return join(this.root, "microvms", id);
  }
  private rec(id: string): { incarnation: number; host: string } | undefined {
    const f = join(this.dir(id), "sandbox.json");
    return existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : undefined;
  }
  private save(id: string, rec: { incarnation: number; host: string }) {
    writeFileSync(join(this.dir(id), "sandbox.json"), JSON.stringify(rec));
  }
  incarnation(id: string) {
    return this.rec(id)?.incarnation;
  }
  importCheckpoint(vm: Microvm, dir?: string) {
    if (!dir && this.importCrash) throw new Error("the server died before it took up the checkpoint");
    const file = join(dir ?? this.dir(vm.id), "sandbox.json");
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), host: this.name }));
  }
  async run(vm: Microvm, _v: ImageVersion) {
    mkdirSync(this.dir(vm.id), { recursive: true });
    this.save(vm.id, { incarnation: 0, host: this.name });
    this.live.set(vm.id, "booted");
  }
  async suspend(vm: Microvm) {
    mkdirSync(join(this.dir(vm.id), "checkpoint"), { recursive: true });
    writeFileSync(join(this.dir(vm.id), "checkpoint", "checkpoint.img"), this.live.get(vm.id)!);
    this.live.delete(vm.id);
  }
  async resume(vm: Microvm) {
    if (this.resumeFails === "NotBegun") throw new NotBegun("no network left");
    const rec = this.rec(vm.id)!;
    this.save(vm.id, { ...rec, incarnation: rec.incarnation + 1 });
    if (this.resumeFails === "after-start") throw new Error("runsc restore failed");
    this.live.set(vm.id, readFileSync(join(this.dir(vm.id), "checkpoint", "checkpoint.img"), "utf8"));
    rmSync(join(this.dir(vm.id), "checkpoint"), { recursive: true, force: true });
  }
  async inspect(vm: Microvm): Promise<SandboxFound> {
    return { running: this.live.has(vm.id), checkpoint: existsSync(join(this.dir(vm.id), "checkpoint", "checkpoint.img")) };
  }
  async shortage(v: ImageVersion) {
    this.shortages.push(v.version);
    return this.roomFor;
  }
  async terminate(vm: Microvm) {
    rmSync(this.dir(vm.id), { recursive: true, force: true });
    this.live.delete(vm.id);
  }
}

interface Host {
  sandboxes: HostSandboxes;
  replicas: Replicas;
  runtime: ReplicatedRuntime;
  events: Record<string, unknown>[];
  imageDir: string;
}

function host(name: string, store: FileObjectStore, markerFile?: string): Host {
  const root = tempDir(`lmvm-replicas-${name}-`);
  const sandboxes = new HostSandboxes(name, root);
  const events: Record<string, unknown>[] = [];
  const log = (e: Record<string, unknown>) => events.push(e);
  const imageDir = join(root, "images", "app", "1.0", "X86_64");
  const replicas = new Replicas({
    store, architecture: "X86_64", imageDir: () => imageDir, microvmDir: (id) => sandboxes.dir(id), stagingDir: join(root, "objects"), log,
    ...(markerFile ? { markerFile } : {}),
  });
  const runtime = new ReplicatedRuntime(sandboxes as never, replicas, { microvmDir: (id) => sandboxes.dir(id), log });
  return { sandboxes, replicas, runtime, events, imageDir };
}

const version = { imageArn: IMAGE, version: "1.0", config: {} } as unknown as ImageVersion;
let n = 0;
const microvm = (state: Microvm["state"] = "RUNNING") => ({ id: `microvm-${(++n).toString(16).padStart(17, "0")}`, imageArn: IMAGE, imageVersion: "1.0", state }) as Microvm;
const at = (vm: Microvm, state: Microvm["state"]) => ({ ...vm, state }) as Microvm;

function build(h: Host, code: string) {
  rmSync(h.imageDir, { recursive: true, force: true });
  mkdirSync(join(h.imageDir, "rootfs"), { recursive: true });
  writeFileSync(join(h.imageDir, "config.json"), JSON.stringify({ code }));
}

function shared(): FaultyStore {
  return new FaultyStore(tempDir("lmvm-replicas-store-"));
}

/** Runs a MicroVM on `h` (image built there) and gives it some memory. */
async function running(h: Host, memory: string): Promise<Microvm> {
  build(h, "v1");
  await h.replicas.putImage(IMAGE, "1.0");
  const vm = microvm();
  await h.runtime.run(vm, version);
  h.sandboxes.live.set(vm.id, memory);
  return vm;
}

describe("object store replicas between hosts", () => {
  test("a version's local image is used only while the store's object is the one it was copied from (an image deleted and made again)", async () => {
    const store = shared();
    const a = host("a", store);
    const b = host("b", store);
    const first = new Date("2026-11-30T05:00:00.123Z");
    const second = new Date("2026-11-30T05:30:00.456Z");
    build(a, "deleted image's code");
    await a.replicas.putImage(IMAGE, "1.0", undefined, first);
    // A copy built for the version row is used without asking the store (an outage does not stop it).
    store.down = true;
    await a.replicas.ensureImage(IMAGE, "1.0", first);
    store.down = false;
    // The image is deleted (its objects go) and made again on B: versions restart at 1.0, same key.
    await b.replicas.deleteImage(IMAGE, "1.0");
    build(b, "new image's code");
    await b.replicas.putImage(IMAGE, "1.0", undefined, second);
    // A's copy is of another row: not used (the store cannot say which it is while it is down).
    store.down = true;
    await assert.rejects(a.replicas.ensureImage(IMAGE, "1.0", second), /injected/);
    store.down = false;
    await a.replicas.ensureImage(IMAGE, "1.0", second);
    assert.deepEqual(JSON.parse(readFileSync(join(a.imageDir, "config.json"), "utf8")), { code: "new image's code" });
    // Without the row (a server that has not seen it), the stored object's hash decides: A's copy is the store's now.
    store.calls = 0;
    await a.replicas.ensureImage(IMAGE, "1.0");
    assert.equal(store.calls, 1, "one lookup, no fetch");
    // A copy with no stamp (from before stamps) is not trusted: fetched again.
    build(a, "unstamped");
    await a.replicas.ensureImage(IMAGE, "1.0");
    assert.deepEqual(JSON.parse(readFileSync(join(a.imageDir, "config.json"), "utf8")), { code: "new image's code" });
    // Deleted with no new one: the local copy is not used, and the message says what to do.
    await b.replicas.deleteImage(IMAGE, "1.0");
    await assert.rejects(a.runtime.shortage(version), (err: Error) => {
      assert.ok(err instanceof InvalidInput, `${err.name}: ${err.message}`);
      assert.match(err.message, /The image of version 1\.0 of .* is missing from the object store file:\/\/.* \(no images\/app\/1\.0\/X86_64\.tar\.zst\): build a new version/);
      return true;
    });
  });

  test("a host whose stale copy of a checkpoint is of an earlier incarnation neither uploads nor resumes it (the other host died mid-suspend)", async () => {
    const store = shared();
    const a = host("a", store);
    const b = host("b", store);
    const vm = await running(a, "incarnation 0");
    await a.runtime.suspend(at(vm, "SUSPENDING")); // A keeps its local copy of incarnation 0
    await b.runtime.resume(at(vm, "SUSPENDED"));
    assert.equal(b.sandboxes.live.get(vm.id), "incarnation 0");
    b.sandboxes.live.set(vm.id, "incarnation 1, after more requests");
    // B dies mid-suspend: its checkpoint is written, not uploaded.
    await b.sandboxes.suspend(vm);
    assert.equal(await b.replicas.latestCheckpoint(vm.id), undefined);
    // A restarts and sees SUSPENDING: its copy is stale, and it cannot tell what B has.
    await assert.rejects(a.runtime.inspect(at(vm, "SUSPENDING")), /names incarnation 1 as its current one/);
    assert.equal(await a.replicas.latestCheckpoint(vm.id), undefined, "A uploaded its stale incarnation 0");
    await assert.rejects(a.runtime.resume(at(vm, "SUSPENDED")), (err: Error) => err instanceof NotBegun && /incarnation 1/.test(err.message));
    // B restarts: its copy is current, it goes up, and A then resumes B's state.
    assert.deepEqual(await b.runtime.inspect(at(vm, "SUSPENDING")), { running: false, checkpoint: true });
    assert.equal((await b.replicas.latestCheckpoint(vm.id))?.incarnation, 1);
    assert.deepEqual(await a.runtime.inspect(at(vm, "SUSPENDED")), { running: false, checkpoint: true });
    await a.runtime.resume(at(vm, "SUSPENDED"));
    assert.equal(a.sandboxes.live.get(vm.id), "incarnation 1, after more requests");
    assert.equal(a.sandboxes.incarnation(vm.id), 2);
    assert.deepEqual(JSON.parse(readFileSync(join(a.sandboxes.dir(vm.id), "sandbox.json"), "utf8")).host, "a");
  });

  test("a host that died after its resume removed the stored checkpoint leaves the others unable to resume their stale copy", async () => {
    const store = shared();
    const a = host("a", store);
    const b = host("b", store);
    const vm = await running(a, "incarnation 0");
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    await b.runtime.resume(at(vm, "SUSPENDED")); // B's server dies before RUNNING is recorded: the row says SUSPENDED
    assert.equal(await b.replicas.latestCheckpoint(vm.id), undefined);
    await assert.rejects(a.runtime.resume(at(vm, "SUSPENDED")), (err: Error) => err instanceof NotBegun && /incarnation 1/.test(err.message));
    assert.equal(a.sandboxes.live.has(vm.id), false);
    await assert.rejects(a.runtime.inspect(at(vm, "SUSPENDED")), /may be running or being suspended on another server/);
  });

  test("a resume that never started its sandbox moves the head back: the checkpoint stays usable", async () => {
    const store = shared();
    const a = host("a", store);
    const vm = await running(a, "state");
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    a.sandboxes.resumeFails = "NotBegun";
    await assert.rejects(a.runtime.resume(at(vm, "SUSPENDED")), NotBegun);
    const head = join(tempDir("lmvm-replicas-head-"), "head");
    await store.get(checkpointHeadKey(vm.id), head, t());
    assert.deepEqual(JSON.parse(readFileSync(head, "utf8")), { incarnation: 0 });
    a.sandboxes.resumeFails = undefined;
    await a.runtime.resume(at(vm, "SUSPENDED"));
    assert.equal(a.sandboxes.live.get(vm.id), "state");
    assert.equal(await a.replicas.latestCheckpoint(vm.id), undefined, "the spent checkpoint stayed in the store");
  });

  test("a store that looks empty (another directory than the one this host used) makes absent checkpoints uninspectable, not gone", async () => {
    const store = shared();
    const markerFile = join(tempDir("lmvm-replicas-marker-"), "object-store.json");
    const a = host("a", store, markerFile);
    await a.replicas.checkMarker();
    assert.ok(await store.head(MARKER_KEY, t()));
    const vm = await running(a, "state");
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    rmSync(join(a.sandboxes.dir(vm.id), "checkpoint"), { recursive: true }); // only the store holds it
    // Restarted with the store's path unmounted: an empty directory.
    const empty = host("a-again", shared(), markerFile);
    await assert.rejects(empty.replicas.checkMarker(), /has no lmvm-store\.json, but this server has used the store/);
    await assert.rejects(empty.runtime.inspect(at(vm, "SUSPENDED")), /looks empty/);
    // The right store again: found.
    const again = host("a-back", store, markerFile);
    assert.deepEqual(await again.runtime.inspect(at(vm, "SUSPENDED")), { running: false, checkpoint: true });
  });

  test("a checkpoint that was put means SUSPENDED even when removing older copies fails", async () => {
    const store = shared();
    const a = host("a", store);
    const vm = await running(a, "state");
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    store.failDelete = true; // the resume's cleanup fails (only logged), so the suspend below has an older copy to remove
    await a.runtime.resume(at(vm, "SUSPENDED")); // incarnation 1
    assert.ok(await store.head(checkpointKey(vm.id, 0), t()));
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    assert.equal(a.sandboxes.live.has(vm.id), false, "the MicroVM was resumed after its checkpoint was stored");
    assert.ok(await store.head(checkpointKey(vm.id, 1), t()));
    assert.ok(a.events.some((e) => e.level === "error" && /spent checkpoints/.test(String(e.msg))));
  });

  test("an upload that fails resumes the MicroVM from its local copy after reserving room; no room or a failed resume keeps it SUSPENDED on that copy", async () => {
    const store = shared();
    const a = host("a", store);
    const vm = await running(a, "state");
    store.failPut = (key) => key.endsWith(".tar.zst") && key.startsWith("checkpoints/");
    await assert.rejects(a.runtime.suspend(at(vm, "SUSPENDING")), (err: Error) => err instanceof NotBegun && /resumed from its local checkpoint/.test(err.message));
    assert.equal(a.sandboxes.live.get(vm.id), "state");
    assert.deepEqual(a.sandboxes.shortages, ["1.0"], "no room was reserved before the fallback resume");
    // Restored here as incarnation 1: the head follows (the store answers heads, not checkpoints, in this test).
    const head = join(tempDir("lmvm-replicas-head-"), "head");
    await store.get(checkpointHeadKey(vm.id), head, t());
    assert.deepEqual(JSON.parse(readFileSync(head, "utf8")), { incarnation: 1 });
    // No room: not resumed, and the suspend counts (the MicroVM is SUSPENDED on this host's copy).
    a.sandboxes.roomFor = "no memory";
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    assert.equal(a.sandboxes.live.has(vm.id), false);
    assert.ok(existsSync(join(a.sandboxes.dir(vm.id), "checkpoint", "checkpoint.img")));
    a.sandboxes.roomFor = undefined;
    await a.runtime.resume(at(vm, "SUSPENDED"));
    // The fallback resume fails after runsc began: still SUSPENDED on the local copy, its record as it was.
    a.sandboxes.resumeFails = "after-start";
    const before = a.sandboxes.incarnation(vm.id);
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    assert.equal(a.sandboxes.incarnation(vm.id), before);
    assert.ok(existsSync(join(a.sandboxes.dir(vm.id), "checkpoint", "checkpoint.img")));
    a.sandboxes.resumeFails = undefined;
    store.failPut = undefined;
    assert.deepEqual(await a.runtime.inspect(at(vm, "SUSPENDING")), { running: false, checkpoint: true });
    assert.ok(await store.head(checkpointKey(vm.id, before!), t()), "recovery did not upload the current local copy");
  });

  test("a fetched checkpoint's sandbox record is this host's before it is renamed into place (a crash before the import)", async () => {
    const store = shared();
    const a = host("a", store);
    const b = host("b", store);
    const vm = await running(a, "state");
    await a.runtime.suspend(at(vm, "SUSPENDING"));
    b.sandboxes.importCrash = true;
    await assert.rejects(b.runtime.resume(at(vm, "SUSPENDED")));
    assert.equal(JSON.parse(readFileSync(join(b.sandboxes.dir(vm.id), "sandbox.json"), "utf8")).host, "b");
  });

  test("recovery against a store that cannot be reached tries it once, then leaves the rest uninspected at once", async () => {
    const store = shared();
    const a = host("a", store);
    const vms: Microvm[] = [];
    for (let i = 0; i < 3; i++) {
      const vm = await running(a, "state");
      await a.runtime.suspend(at(vm, "SUSPENDING"));
      vms.push(vm);
    }
    store.down = true;
    store.calls = 0;
    const recovering = host("a-restarted", store);
    for (const vm of vms) await assert.rejects(recovering.runtime.inspect(at(vm, "SUSPENDED")), ObjectStoreUnavailable);
    assert.equal(store.calls, 1);
  });
});

describe("object store adapters: failures", () => {
  let s3: S3Process | undefined;
  after(async () => s3?.close());

  test("file://: a call ends at its deadline even when the directory does not answer, and the event loop keeps turning", async () => {
    const root = tempDir("lmvm-replicas-hung-");
    const store = new FileObjectStore(root);
    mkdirSync(join(root, "images"));
    // A FIFO without a writer: opening it blocks, as a read from a hung mount does.
    execFileSync("mkfifo", [join(root, "images", "x.lmvm-object.json")]);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 20);
    try {
      await assert.rejects(store.head("images/x", AbortSignal.timeout(500)), (err: Error) => err instanceof ObjectStoreUnavailable && /did not finish in time/.test(err.message));
      assert.ok(ticks >= 5, `the event loop turned ${ticks} times in 500 ms`);
    } finally {
      clearInterval(ticker);
      closeSync(openSync(join(root, "images", "x.lmvm-object.json"), "w")); // let the blocked open end
    }
    await assert.rejects(new FileObjectStore(join(root, "nope")).probe(t()), /the directory .*nope does not exist; create it/);
  });

  test("s3://: a bucket that does not exist is named as missing, not read as an absent object", async () => {
    s3 = await startS3Process();
    const store = openObjectStore({ url: "s3://no-such-bucket/lmvm", endpoint: s3.endpoint, credentials: s3.credentials });
    const file = join(tempDir("lmvm-replicas-s3-"), "out");
    await assert.rejects(store.get(imageKey("app", "1.0", "X86_64"), file, t()), /the bucket 'no-such-bucket' does not exist/);
    await assert.rejects(store.list("images/", t()), /the bucket 'no-such-bucket' does not exist/);
  });

  test("s3://: when one part of a multipart upload fails, the other parts stop before the upload is aborted", async () => {
    s3 ??= await startS3Process();
    await s3.createBucket("parts");
    const store = openObjectStore({ url: "s3://parts/lmvm", endpoint: s3.endpoint, credentials: s3.credentials });
    const file = join(tempDir("lmvm-replicas-parts-"), "big");
    writeFileSync(file, Buffer.alloc(5 * 16 * 1024 * 1024 + 1, 7));
    let settled = false;
    let lateProgress = 0;
    // The first finished part cuts the file short: the fifth part cannot be read.
    const progress = () => {
      if (settled) lateProgress++;
      else truncateSync(file, 16 * 1024 * 1024);
    };
    await assert.rejects(store.put("checkpoints/vm-parts/0.tar.zst", file, t(), progress), /shrank while it was uploaded/);
    settled = true;
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(lateProgress, 0, "parts went on uploading after the put had failed");
    assert.equal(await store.head("checkpoints/vm-parts/0.tar.zst", t()), undefined);
  });
});
