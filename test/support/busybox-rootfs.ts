// A minimal root filesystem for tests that drive runsc directly: Debian's
// static busybox and a link per applet.

import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";

export function busyboxRootfs(dir: string): string {
  const rootfs = join(dir, "rootfs");
  mkdirSync(join(rootfs, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(rootfs, "bin", "busybox"));
  chmodSync(join(rootfs, "bin", "busybox"), 0o755);
  for (const applet of execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n").filter((a) => /^[a-z0-9]+$/.test(a) && a !== "busybox")) {
    symlinkSync("busybox", join(rootfs, "bin", applet));
  }
  return rootfs;
}
