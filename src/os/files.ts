// Files that are never seen half-written, even when the disk fills mid-write.

import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { processAlive } from "./exec.js";

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

/**
 * Runs `fn` while holding a lock shared by every process on the host: a file
 * created exclusively, holding the owner's pid. A lock whose owner has died is
 * taken over. Waiting ends with the signal or after `timeoutMs`, with an error
 * naming the lock file and its owner.
 */
export async function withFileLock<T>(file: string, fn: () => Promise<T>, opts: { timeoutMs: number; signal?: AbortSignal; onWait?: (owner: number) => void }): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let told = false;
  for (;;) {
    try {
      writeFileSync(file, String(process.pid), { flag: "wx", mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    let owner = NaN;
    try {
      owner = Number(readFileSync(file, "utf8"));
    } catch {
      continue; // released meanwhile
    }
    if (!Number.isInteger(owner) || owner <= 0 || !processAlive(owner)) {
      // Its owner died (or was caught between creating and writing it: then the next look sees a live pid).
      if (Number.isInteger(owner) && owner > 0) {
        // Looked at again just before: another waiter may have taken it over meanwhile.
        if (readIfThere(file) === String(owner)) rmSync(file, { force: true });
      } else await pause(100, opts.signal);
      continue;
    }
    if (!told) {
      opts.onWait?.(owner);
      told = true;
    }
    if (Date.now() > deadline) throw new Error(`Waited ${Math.round(opts.timeoutMs / 1000)} s for the lock ${file}, held by process ${owner}.`);
    await pause(250, opts.signal);
  }
  try {
    return await fn();
  } finally {
    rmSync(file, { force: true });
  }
}

function readIfThere(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error("aborted"));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason ?? new Error("aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
