// A small filesystem of its own (a sparse ext4 image, loop-mounted), for tests
// that fill a data directory's disk without touching the host's.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { mountsUnder } from "../../src/os/index.js";
import { tempDir } from "./platform.js";

export interface SmallDisk {
  mountPoint: string;
  /** Detaches the filesystem; its temporary directory goes when the test process exits. */
  release(): void;
}

export function smallDisk(size: string): SmallDisk {
  const root = tempDir("lmvm-small-disk-");
  const image = join(root, "disk.img");
  const mountPoint = join(root, "disk");
  // A host tool that hangs (a stuck loop device) fails the test instead.
  const bounded = { timeout: 60_000 };
  execFileSync("truncate", ["-s", size, image], bounded);
  execFileSync("mkfs.ext4", ["-q", "-F", image], bounded);
  mkdirSync(mountPoint);
  execFileSync("mount", ["-o", "loop", image, mountPoint], bounded);
  return {
    mountPoint,
    release: () => {
      if (mountsUnder(mountPoint).length) execFileSync("umount", ["--lazy", mountPoint], bounded);
    },
  };
}
