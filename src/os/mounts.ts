// Size-limited scratch filesystems, and removing directory trees that may
// hold one. A sandbox's writes land in a file on the host (gVisor's overlay
// filestore); putting that file on a loop-mounted filesystem of a fixed size
// caps what one sandbox can write: the app gets ENOSPC, the host's disk stays
// free. The image is sparse, so it costs only what is written.

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, renameSync, rmSync, statfsSync } from "node:fs";
import { resolve, sep } from "node:path";
import { run } from "./exec.js";

/** Mount points at or below `dir`, deepest first, read from the kernel's table. */
export function mountsUnder(dir: string): string[] {
  const root = resolve(dir);
  let table: string;
  try {
    table = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return table
    .split("\n")
    .map((line) => unescape(line.split(" ")[4] ?? ""))
    .filter((point) => point === root || point.startsWith(root + sep))
    .sort((a, b) => b.length - a.length);
}

/**
 * Detaches every filesystem mounted at or below `dir`, lazily: a sandbox still
 * going down may hold one; the kernel frees it and its loop device when the
 * last user goes.
 */
export function unmountUnder(dir: string): void {
  for (const point of mountsUnder(dir)) {
    try {
      execFileSync("umount", ["--lazy", point], { stdio: "ignore" });
    } catch {
      // already gone
    }
  }
}

/** Removes `dir` and everything in it, sandbox disks mounted inside included. */
export function removeTree(dir: string): void {
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Makes a sparse ext4 image of `sizeMiB` at `image`, unmounted (what a
 * sandbox disk prepared ahead of time is: mounting it is then the only step
 * left when a sandbox needs it).
 */
export async function formatScratchDisk(image: string, sizeMiB: number): Promise<void> {
  await run("truncate", ["-s", `${sizeMiB}M`, image]);
  // No journal and no reserved blocks: the disk lives exactly as long as its sandbox.
  // Few inodes: gVisor keeps all of a sandbox's files in one filestore file.
  await run("mkfs.ext4", ["-q", "-F", "-m", "0", "-N", "64", "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", image]);
}

/**
 * Mounts a sparse ext4 image of `sizeMiB` at `image` on `mountPoint`: `prepared`,
 * an image of that size made by formatScratchDisk on the same filesystem, is
 * moved to `image`; without one, the image is made here.
 */
export async function mountScratchDisk(image: string, mountPoint: string, sizeMiB: number, prepared?: string): Promise<void> {
  mkdirSync(mountPoint, { recursive: true });
  if (prepared) renameSync(prepared, image);
  else await formatScratchDisk(image, sizeMiB);
  // Not noexec: gVisor maps the filestore into the app's address space, executable pages included.
  await run("mount", ["-o", "loop,nosuid,nodev", image, mountPoint]);
}

/** Bytes used and free on the filesystem holding `path`, or undefined when it is gone. */
export function diskUsage(path: string): { usedBytes: number; freeBytes: number; sizeBytes: number } | undefined {
  try {
    const s = statfsSync(path);
    return { usedBytes: (s.blocks - s.bfree) * s.bsize, freeBytes: s.bavail * s.bsize, sizeBytes: s.blocks * s.bsize };
  } catch {
    return undefined;
  }
}
