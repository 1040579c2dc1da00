// The ObjectStore port, the same tests on every adapter: the S3 one against
// a real S3-compatible server (s3rver, in its own process) and the shared
// directory one. Also the archives images and checkpoints travel in (sparse
// files stay sparse).

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { execFileSync } from "node:child_process";
import { ObjectStoreUnavailable, type ObjectStore } from "../../src/core/index.js";
import { FileObjectStore, openObjectStore, pack, unpack } from "../../src/objects/index.js";
import { startS3Process, type S3Process } from "../support/s3-server.js";
import { tempDir } from "../support/platform.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const t = () => AbortSignal.timeout(60_000);

interface Subject {
  store: ObjectStore;
  /** The file holding the bytes of `key` in the backing storage, to damage it. */
  backing(key: string): string;
}

function conformance(name: string, setup: () => Promise<Subject>, teardown: () => Promise<void>) {
  describe(`ObjectStore: ${name}`, () => {
    let s: Subject;
    let work: string;
    before(async () => {
      s = await setup();
      work = tempDir("lmvm-objects-");
    });
    after(teardown);

    const file = (bytes: Buffer) => {
      const f = join(work, `in-${randomBytes(4).toString("hex")}`);
      writeFileSync(f, bytes);
      return f;
    };

    test("a put file comes back byte for byte, with its size and SHA-256", async () => {
      const bytes = randomBytes(100_000);
      const put = await s.store.put("images/app/1/X86_64.tar.zst", file(bytes), t());
      assert.deepEqual(put, { key: "images/app/1/X86_64.tar.zst", size: bytes.length, sha256: sha(bytes) });
      assert.deepEqual(await s.store.head("images/app/1/X86_64.tar.zst", t()), put);
      const out = join(work, "out-small");
      const got = await s.store.get("images/app/1/X86_64.tar.zst", out, t());
      assert.deepEqual(got, put);
      assert.ok(readFileSync(out).equals(bytes));
    });

    test("a file larger than one part (multipart on S3) comes back whole, and progress reaches its size", async () => {
      const bytes = randomBytes(40 * 1024 * 1024 + 12345);
      const seen: number[] = [];
      const put = await s.store.put("checkpoints/vm-big/0.tar.zst", file(bytes), t(), (n) => seen.push(n));
      assert.equal(put.size, bytes.length);
      assert.equal(Math.max(...seen), bytes.length);
      const out = join(work, "out-big");
      const got: number[] = [];
      await s.store.get("checkpoints/vm-big/0.tar.zst", out, t(), (n) => got.push(n));
      assert.equal(sha(readFileSync(out)), sha(bytes));
      assert.equal(Math.max(...got), bytes.length);
      assert.equal(readdirSync(work).filter((f) => f.includes("partial")).length, 0, "no partial file is left");
    });

    test("an empty file is an object too", async () => {
      const put = await s.store.put("images/empty/1/X86_64.tar.zst", file(Buffer.alloc(0)), t());
      assert.equal(put.size, 0);
      const out = join(work, "out-empty");
      assert.equal((await s.store.get("images/empty/1/X86_64.tar.zst", out, t()))?.size, 0);
      assert.equal(statSync(out).size, 0);
    });

    test("a missing object is undefined for get and head, and get writes nothing", async () => {
      const out = join(work, "out-missing");
      assert.equal(await s.store.get("images/none/1/X86_64.tar.zst", out, t()), undefined);
      assert.equal(await s.store.head("images/none/1/X86_64.tar.zst", t()), undefined);
      assert.equal(existsSync(out), false);
    });

    test("a second put replaces the object", async () => {
      await s.store.put("images/re/1/X86_64.tar.zst", file(Buffer.from("first")), t());
      await s.store.put("images/re/1/X86_64.tar.zst", file(Buffer.from("second, longer")), t());
      const out = join(work, "out-re");
      await s.store.get("images/re/1/X86_64.tar.zst", out, t());
      assert.equal(readFileSync(out, "utf8"), "second, longer");
    });

    test("list gives the objects under a prefix in key order, and only those", async () => {
      for (const k of ["checkpoints/vm-l/2.tar.zst", "checkpoints/vm-l/10.tar.zst", "checkpoints/vm-l/1.tar.zst", "checkpoints/vm-l2/0.tar.zst"]) await s.store.put(k, file(Buffer.from(k)), t());
      const listed = await s.store.list("checkpoints/vm-l/", t());
      assert.deepEqual(listed.map((o) => o.key), ["checkpoints/vm-l/1.tar.zst", "checkpoints/vm-l/10.tar.zst", "checkpoints/vm-l/2.tar.zst"]);
      assert.deepEqual(listed.map((o) => o.size), ["checkpoints/vm-l/1.tar.zst", "checkpoints/vm-l/10.tar.zst", "checkpoints/vm-l/2.tar.zst"].map((k) => k.length));
      assert.deepEqual(await s.store.list("checkpoints/none/", t()), []);
    });

    test("delete removes one object (and a missing one is no error); deletePrefix removes a prefix and counts", async () => {
      await s.store.put("checkpoints/vm-d/0.tar.zst", file(Buffer.from("a")), t());
      await s.store.put("checkpoints/vm-d/1.tar.zst", file(Buffer.from("b")), t());
      await s.store.put("checkpoints/vm-d2/0.tar.zst", file(Buffer.from("c")), t());
      await s.store.delete("checkpoints/vm-d/0.tar.zst", t());
      await s.store.delete("checkpoints/vm-d/0.tar.zst", t());
      assert.equal(await s.store.head("checkpoints/vm-d/0.tar.zst", t()), undefined);
      assert.equal(await s.store.deletePrefix("checkpoints/vm-d/", t()), 1);
      assert.deepEqual(await s.store.list("checkpoints/vm-d/", t()), []);
      assert.ok(await s.store.head("checkpoints/vm-d2/0.tar.zst", t()), "a key that only starts like the prefix stays");
      await assert.rejects(s.store.deletePrefix("", t()), /give a prefix/);
      await assert.rejects(s.store.deletePrefix("checkpoints", t()), /must end with '\/'/);
    });

    test("keys that are not relative paths are refused", async () => {
      for (const bad of ["../x", "/abs", "a//b", "a/./b", "a b", ""]) {
        await assert.rejects(s.store.put(bad, file(Buffer.from("x")), t()), (err: Error) => err instanceof ObjectStoreUnavailable && /not a valid object key/.test(err.message), bad);
      }
    });

    test("bytes damaged in the store are refused by get, which leaves no file", async () => {
      const bytes = randomBytes(5000);
      await s.store.put("images/bad/1/X86_64.tar.zst", file(bytes), t());
      const damaged = Buffer.from(bytes);
      damaged[100] = damaged[100]! ^ 0xff;
      writeFileSync(s.backing("images/bad/1/X86_64.tar.zst"), damaged);
      const out = join(work, "out-bad");
      await assert.rejects(s.store.get("images/bad/1/X86_64.tar.zst", out, t()), (err: Error) => err instanceof ObjectStoreUnavailable && /not what was put/.test(err.message));
      assert.equal(existsSync(out), false);
    });

    test("a transfer past its deadline fails with ObjectStoreUnavailable and leaves nothing", async () => {
      const big = file(randomBytes(8 * 1024 * 1024));
      await assert.rejects(s.store.put("images/late/1/X86_64.tar.zst", big, AbortSignal.abort(new Error("deadline"))), ObjectStoreUnavailable);
      assert.equal(await s.store.head("images/late/1/X86_64.tar.zst", t()), undefined);
    });
  });
}

let s3: S3Process;
conformance(
  "s3:// on a real S3-compatible server (s3rver)",
  async () => {
    s3 = await startS3Process();
    await s3.createBucket("lmvm-objects");
    const store = openObjectStore({ url: "s3://lmvm-objects/team/a", endpoint: s3.endpoint, credentials: s3.credentials, region: "us-east-1" });
    assert.equal(store.url, "s3://lmvm-objects/team/a/");
    // s3rver keeps each object's bytes in <dir>/<bucket>/<key>._S3rver_object.
    return { store, backing: (key) => join(s3.directory, "lmvm-objects", "team", "a", `${key}._S3rver_object`) };
  },
  async () => s3?.close(),
);

let root: string;
conformance(
  "file:// on a shared directory",
  async () => {
    root = tempDir("lmvm-objects-shared-");
    const store = openObjectStore({ url: `file://${root}` });
    assert.ok(store instanceof FileObjectStore);
    return { store, backing: (key) => join(root, key) };
  },
  async () => undefined,
);

describe("object store URLs and reachability", () => {
  test("a URL that names no adapter is refused with the forms it may take; a file:// directory that does not exist fails the startup probe", async () => {
    for (const bad of ["http://x/y", "s3://", "s3://A_B/x", "file://relative", "/abs/path"]) {
      assert.throws(() => openObjectStore({ url: bad }), /--object-store must be s3:\/\/bucket\[\/prefix\].*file:\/\/\/absolute\/path/, bad);
    }
    const missing = openObjectStore({ url: "file:///no/such/dir/for/lmvm" });
    assert.ok(missing instanceof FileObjectStore);
    await assert.rejects(missing.probe(t()), (err: Error) => err instanceof ObjectStoreUnavailable && /the directory \/no\/such\/dir\/for\/lmvm does not exist; create it/.test(err.message));
    assert.throws(() => openObjectStore({ url: "s3://bucket/x", endpoint: "ftp://x" }), /--object-store-endpoint must be an http/);
  });

  test("an S3 endpoint nobody listens on is ObjectStoreUnavailable, naming the store", async () => {
    const store = openObjectStore({ url: "s3://lmvm-none/p", endpoint: "http://127.0.0.1:9", credentials: { accessKeyId: "x", secretAccessKey: "y" } });
    await assert.rejects(store.head("images/a/1/X86_64.tar.zst", t()), (err: Error) => err instanceof ObjectStoreUnavailable && /s3:\/\/lmvm-none\/p\//.test(err.message));
  });
});

describe("archives", () => {
  test("a sparse file stays sparse through pack and unpack, modes and contents intact", async () => {
    const dir = tempDir("lmvm-archive-");
    mkdirSync(join(dir, "src", "checkpoint"), { recursive: true });
    const disk = join(dir, "src", "checkpoint", "disk.img");
    execFileSync("truncate", ["-s", "2G", disk]);
    const data = randomBytes(1024 * 1024);
    const fd = openSync(disk, "r+");
    writeSync(fd, data, 0, data.length, 1024 * 1024 * 1024);
    closeSync(fd);
    writeFileSync(join(dir, "src", "sandbox.json"), "{}", { mode: 0o600 });
    const archive = join(dir, "a.tar.zst");
    await pack(join(dir, "src"), ["checkpoint", "sandbox.json"], archive, t());
    assert.ok(statSync(archive).size < 4 * 1024 * 1024, `the archive of a 2 GiB sparse file is ${statSync(archive).size} bytes`);
    mkdirSync(join(dir, "dst"));
    await unpack(archive, join(dir, "dst"), t());
    const back = statSync(join(dir, "dst", "checkpoint", "disk.img"));
    assert.equal(back.size, 2 * 1024 * 1024 * 1024);
    assert.ok(back.blocks * 512 < 8 * 1024 * 1024, `unpacked, it takes ${back.blocks * 512} bytes on disk`);
    const got = Buffer.alloc(data.length);
    const rfd = openSync(join(dir, "dst", "checkpoint", "disk.img"), "r");
    readSync(rfd, got, 0, got.length, 1024 * 1024 * 1024);
    closeSync(rfd);
    assert.ok(got.equals(data));
    assert.equal(statSync(join(dir, "dst", "sandbox.json")).mode & 0o777, 0o600);
  });
});
