// Hostile code artifacts and builds: zip bombs, zip-slip, absolute paths,
// symlinks out of the archive, RUN steps that print hundreds of megabytes,
// with and without newlines, and a RUN step that tries to fill the disk. Each
// bad archive fails its build with a reason that names the entry and leaves
// nothing behind; a chatty build succeeds with its log bounded on disk and the
// server's memory bounded; the disk filler is stopped with room left, and what
// it wrote is gone.
// (RUN steps that try to reach the host are in isolation.test.ts.)

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { MAX_LOG_BYTES } from "../../src/os/index.js";
import { BASE_IMAGE_CACHE, makeZip, type ZipEntry } from "../support/artifacts.js";
import { buildToEnd } from "../support/builds.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { smallDisk, type SmallDisk } from "../support/small-disk.js";
import { record } from "./report.js";

const MIB = 1024 * 1024;
const LIMITS = { maxArtifactBytes: 8 * MIB, maxUncompressedBytes: 32 * MIB, maxFiles: 100 };
const DOCKERFILE = { name: "Dockerfile", content: "FROM lmvm/busybox\n" };

/** Bytes under a directory, following nothing. */
function treeBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += statSync(join(e.parentPath, e.name)).size;
  return n;
}

describe("hostile artifacts", { timeout: 900_000 }, () => {
  let t: TestPlatform;

  before(async () => {
    t = await startTestPlatform({ builder: undefined, snapshots: false, baseImageCache: BASE_IMAGE_CACHE, buildLimits: LIMITS });
  });
  after(() => t.stop());

  /** Builds `entries` as image `name`; samples the server's memory and the build's scratch space meanwhile. */
  async function build(name: string, entries: ZipEntry[]) {
    const file = join(tempDir("lmvm-artifact-"), "app.zip");
    writeFileSync(file, makeZip(entries));
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    let scratchPeak = 0;
    const sampler = setInterval(() => {
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
      scratchPeak = Math.max(scratchPeak, treeBytes(join(t.dataDir, "builds")));
    }, 100);
    try {
      const ended = await buildToEnd(t.client, name, `file://${file}`);
      return { ...ended, growthMiB: (rssPeak - rssBefore) / MIB, scratchPeakMiB: scratchPeak / MIB };
    } finally {
      clearInterval(sampler);
    }
  }

  const assertClean = (name: string) => {
    assert.deepEqual(existsSync(join(t.dataDir, "builds")) ? readdirSync(join(t.dataDir, "builds")) : [], [], "no build scratch space is left behind");
    assert.deepEqual(readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(t.dataDir)), [], "no mount is left behind");
    assert.ok(!existsSync(join(t.dataDir, "images", name)), "no half-built image is kept");
  };

  const bad: [string, ZipEntry[], RegExp][] = [
    ["a zip bomb (64 MiB of zeros in a few KiB)", [DOCKERFILE, { name: "bomb.bin", zeros: 64 * MIB }], /unpacks to more than 33554432 bytes/],
    ["zip-slip (../../escaped.txt)", [DOCKERFILE, { name: "../../escaped.txt", content: "x" }], /escapes the archive \(zip-slip\): '\.\.\/\.\.\/escaped\.txt'/],
    ["an absolute path (/etc/cron.d/evil)", [DOCKERFILE, { name: "/etc/cron.d/evil", content: "x" }], /absolute path: '\/etc\/cron\.d\/evil'/],
    ["a symlink to /etc/hosts", [DOCKERFILE, { name: "hosts", symlink: "/etc/hosts" }], /symlink pointing outside the archive: 'hosts' -> '\/etc\/hosts'/],
    ["a symlink to ../../..", [DOCKERFILE, { name: "up", symlink: "../../.." }], /symlink pointing outside/],
    ["a symlink, then a file written through it", [DOCKERFILE, { name: "link", symlink: "/tmp" }, { name: "link/planted", content: "x" }], /symlink pointing outside/],
    ["too many files (121)", [DOCKERFILE, ...Array.from({ length: 120 }, (_, i) => ({ name: `f${i}`, content: "x" }))], /has 121 entries; at most 100/],
  ];
  for (const [what, entries, reason] of bad) {
    test(`${what} fails the build with a reason naming it, and leaves nothing behind`, async () => {
      const name = `bad-${what.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "").slice(0, 40)}`;
      const r = await build(name, entries);
      assert.equal(r.version.state, "FAILED");
      assert.equal(r.build.buildState, "FAILED");
      assert.match(r.build.stateReason!, reason);
      assert.match(r.version.stateReason!, reason, "the version's reason carries the build's");
      assert.ok(!existsSync("/tmp/planted") && !existsSync("/escaped.txt"), "nothing was written outside the build");
      assertClean(name);
      record("artifacts", what, `FAILED: "${r.build.stateReason!.slice(0, 110)}"`, { "peak scratch MiB": r.scratchPeakMiB.toFixed(1), "server memory growth MiB": r.growthMiB.toFixed(0) });
    });
  }

  test("RUN steps printing 190 MB of lines and 100 MB without a newline: the build succeeds, its log stays bounded, and so does the server's memory", async () => {
    const dockerfile = [
      "FROM lmvm/busybox",
      "RUN yes 'lmvm build output, again and again and again' | head -n 4000000",
      "RUN head -c 100000000 /dev/zero | tr '\\0' x",
      "RUN echo the-last-step",
    ].join("\n");
    const r = await build("chatty", [{ name: "Dockerfile", content: `${dockerfile}\n` }]);
    assert.equal(r.version.state, "SUCCESSFUL", r.version.stateReason);
    const log = join(t.dataDir, "logs", "builds", `${r.build.buildId}.log`);
    const size = statSync(log).size;
    assert.ok(size <= MAX_LOG_BYTES, `the build log holds ${size} bytes`);
    const text = readFileSync(log, "utf8");
    assert.match(text, /bytes of older output were dropped: a log is kept under 64 MiB/);
    assert.match(text.slice(-4096), /the-last-step/, "the newest output is kept");
    // A bound, not a timing: the output went to disk, not into the server's memory.
    assert.ok(r.growthMiB < 256, `the server's memory grew by ${r.growthMiB.toFixed(0)} MiB`);
    record("artifacts", "RUN steps printing 190 MB of lines, then 100 MB without a newline", "SUCCESSFUL; the log trimmed to its newest part", {
      "log on disk MiB": (size / MIB).toFixed(1), "log limit MiB": MAX_LOG_BYTES / MIB, "server memory growth MiB": r.growthMiB.toFixed(0),
    });
  });
});

describe("a build that fills the disk", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  let disk: SmallDisk;

  before(async () => {
    disk = smallDisk("3G");
    t = await startTestPlatform({ builder: undefined, snapshots: false, baseImageCache: BASE_IMAGE_CACHE, dataDir: join(disk.mountPoint, "data") });
  });
  after(async () => {
    await t.stop();
    disk.release();
  });

  const free = () => statfsSync(disk.mountPoint).bavail * statfsSync(disk.mountPoint).bsize;
  const buildOf = async (name: string, dockerfile: string) => {
    const file = join(tempDir("lmvm-artifact-"), "app.zip");
    writeFileSync(file, makeZip([{ name: "Dockerfile", content: dockerfile }]));
    return (await buildToEnd(t.client, name, `file://${file}`)).version;
  };

  test("a RUN step writing 8 GB into a 3 GiB data directory is stopped with 1 GiB left, and what it wrote is removed", async () => {
    await buildOf("warm", "FROM lmvm/busybox\nRUN true\n"); // the base image in buildah's store, so the figures below are the filler's alone
    const before = free();
    let lowest = before;
    const sampler = setInterval(() => (lowest = Math.min(lowest, free())), 100);
    const version = await buildOf("filler", "FROM lmvm/busybox\nRUN dd if=/dev/zero of=/fill bs=1M count=8000\n").finally(() => clearInterval(sampler));
    assert.equal(version.state, "FAILED");
    assert.match(version.stateReason ?? "", /build was stopped: it brought the data directory .* down to \d+ MiB free, and lmvm keeps 1024 MiB free there/);
    assert.ok(lowest > 256 * MIB, `the disk kept room: at its lowest ${Math.round(lowest / MIB)} MiB free`);
    const after = await eventually(async () => (free() >= before - 64 * MIB ? free() : undefined), "the filler's data to be removed", 30_000);
    const next = await buildOf("after", "FROM lmvm/busybox\nRUN echo fine > /fine\n");
    assert.equal(next.state, "SUCCESSFUL", next.stateReason);
    record("artifacts", "a RUN step writing 8 GB into a 3 GiB data directory", `FAILED: "${version.stateReason!.slice(0, 90)}…"; the next build succeeded`, {
      "free before MiB": Math.round(before / MIB), "lowest free MiB": Math.round(lowest / MIB), "free after MiB": Math.round(after / MIB),
    });
  });
});
