// Files that are never seen half-written, even when the disk fills mid-write.

import { renameSync, rmSync, writeFileSync } from "node:fs";

/** Writes a file so that readers see the old or the new content, never half of it; a failed write leaves the old one. */
export function writeFileAtomic(file: string, content: string | Buffer, mode = 0o600): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, content, { mode });
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
