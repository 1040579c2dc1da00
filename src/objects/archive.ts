// Directories as single files for the object store: GNU tar with -S (sparse
// files stay sparse, and are read and written fast), numeric owners, extended
// attributes (file capabilities), compressed with zstd at a fast level on
// every core. Extraction goes to a directory of the caller's, which renames
// it into place only once tar has finished.

import { run } from "../os/index.js";

const ZSTD = "zstd -1 -T0";

/** Archives `entries` (relative to `dir`) into `file`. */
export async function pack(dir: string, entries: string[], file: string, signal: AbortSignal): Promise<void> {
  await run("tar", ["--create", "--sparse", "--numeric-owner", "--xattrs", "--xattrs-include=*", `--use-compress-program=${ZSTD}`, "--file", file, "--directory", dir, "--", ...entries], { signal });
}

/** Extracts `file` into `dir` (which exists), keeping owners, modes and extended attributes. */
export async function unpack(file: string, dir: string, signal: AbortSignal): Promise<void> {
  await run("tar", ["--extract", "--numeric-owner", "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*", "--use-compress-program=zstd -d", "--file", file, "--directory", dir], { signal });
}
