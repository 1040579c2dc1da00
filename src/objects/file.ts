// The object store as a shared directory (file:///path: an NFS mount every
// host sees, say). Each object is two files: <key> (its bytes) and
// <key>.lmvm-object.json ({size, sha256}). A put writes both beside their
// final names and renames them, bytes first: an object exists once its
// description does, and a reader checks the bytes against it.
//
// Every file operation is asynchronous (fs/promises), so a hung mount holds
// libuv's worker threads, never the server's event loop, and every call ends
// at its signal (its deadline) even when the operation under it does not.

import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ObjectStoreUnavailable, type ObjectInfo, type ObjectStore } from "../core/index.js";
import { checkKey, checkPrefix } from "./keys.js";

const META = ".lmvm-object.json";
const TEMP = ".lmvm-partial-";

/** Copies `from` to `to` through a SHA-256, reporting bytes as they go; resolves with the size and hash. */
export async function copyHashing(from: NodeJS.ReadableStream, to: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      progress?.(size);
      done(null, chunk);
    },
  });
  await pipeline(from, tap, createWriteStream(to), { signal });
  return { size, sha256: hash.digest("hex") };
}

/** Settles with `work`, or rejects once `signal` aborts (what is under way is left to finish on its own). */
function bounded<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  work.catch(() => undefined); // what it ends with after the deadline is nobody's to handle
  if (signal.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
    signal.addEventListener("abort", stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", stop));
  });
}

const absent = (err: unknown) => (err as NodeJS.ErrnoException).code === "ENOENT";

export class FileObjectStore implements ObjectStore {
  readonly url: string;

  constructor(private readonly root: string) {
    this.url = `file://${root}`;
  }

  /** Throws unless the directory exists (by `signal`'s deadline: a hung mount is an error, not a wait). */
  async probe(signal: AbortSignal): Promise<void> {
    const missing = () => new ObjectStoreUnavailable(`--object-store file://${this.root}: the directory ${this.root} does not exist; create it (a directory every host mounts) or give another file:// URL.`);
    let found;
    try {
      found = await bounded(stat(this.root), signal);
    } catch (err) {
      if (absent(err)) throw missing();
      throw new ObjectStoreUnavailable(`--object-store file://${this.root}: the directory ${this.root} cannot be read: ${signal.aborted ? "it did not answer in time (a hung mount?)" : (err as Error).message}`);
    }
    if (!found.isDirectory()) throw missing();
  }

  private path(key: string): string {
    return join(this.root, checkKey(key));
  }

  private wrap<T>(what: string, signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    return bounded(work(), signal).catch((err: Error) => {
      if (err instanceof ObjectStoreUnavailable) throw err;
      if (signal.aborted) throw new ObjectStoreUnavailable(`${what} in ${this.url} did not finish in time (${String((signal.reason as Error)?.message ?? signal.reason)})`);
      throw new ObjectStoreUnavailable(`${what} in ${this.url} failed: ${err.message}`);
    });
  }

  async put(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo> {
    const target = this.path(key);
    return this.wrap(`Putting ${key}`, signal, async () => {
      await mkdir(dirname(target), { recursive: true });
      const tmp = `${target}${TEMP}${randomBytes(6).toString("hex")}`;
      try {
        const { size, sha256 } = await copyHashing(createReadStream(file), tmp, signal, progress);
        const info: ObjectInfo = { key, size, sha256 };
        await writeFile(`${tmp}${META}`, JSON.stringify({ size, sha256 }), { signal });
        signal.throwIfAborted();
        await rm(`${target}${META}`, { force: true }); // no description names bytes being replaced
        await rename(tmp, target);
        await rename(`${tmp}${META}`, `${target}${META}`);
        return info;
      } finally {
        await rm(tmp, { force: true }).catch(() => undefined);
        await rm(`${tmp}${META}`, { force: true }).catch(() => undefined);
      }
    });
  }

  private async describe(key: string, signal: AbortSignal): Promise<ObjectInfo | undefined> {
    let text: string;
    try {
      text = await readFile(`${this.path(key)}${META}`, { encoding: "utf8", signal });
    } catch (err) {
      if (absent(err)) return undefined;
      throw err;
    }
    const meta = JSON.parse(text) as { size: number; sha256: string };
    return { key, size: meta.size, sha256: meta.sha256 };
  }

  async get(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo | undefined> {
    return this.wrap(`Getting ${key}`, signal, async () => {
      const info = await this.describe(key, signal);
      if (!info) return undefined;
      const tmp = `${file}${TEMP}${randomBytes(6).toString("hex")}`;
      try {
        const got = await copyHashing(createReadStream(this.path(key)), tmp, signal, progress);
        if (got.size !== info.size || got.sha256 !== info.sha256) throw new ObjectStoreUnavailable(`${key} in ${this.url} is not what was put (${got.size} bytes, sha256 ${got.sha256}; it should be ${info.size} bytes, sha256 ${info.sha256}): it is being replaced or was damaged.`);
        await rename(tmp, file);
        return info;
      } finally {
        await rm(tmp, { force: true }).catch(() => undefined);
      }
    });
  }

  async head(key: string, signal: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.wrap(`Looking up ${key}`, signal, () => this.describe(key, signal));
  }

  async list(prefix: string, signal: AbortSignal): Promise<ObjectInfo[]> {
    checkPrefix(prefix);
    return this.wrap(`Listing ${prefix}`, signal, async () => {
      const out: ObjectInfo[] = [];
      const walk = async (dir: string, rel: string): Promise<void> => {
        signal.throwIfAborted();
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch (err) {
          if (absent(err)) return;
          throw err;
        }
        for (const entry of entries) {
          const key = rel ? `${rel}/${entry.name}` : entry.name;
          if (entry.isDirectory()) await walk(join(dir, entry.name), key);
          else if (entry.name.endsWith(META) && !entry.name.includes(TEMP)) {
            const info = await this.describe(key.slice(0, -META.length), signal);
            if (info && info.key.startsWith(prefix)) out.push(info);
          }
        }
      };
      // Only the directory the prefix names is walked.
      const base = prefix.slice(0, prefix.lastIndexOf("/", prefix.length - 1) + 1);
      await walk(join(this.root, base), base.replace(/\/$/, ""));
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async delete(key: string, signal: AbortSignal): Promise<void> {
    const target = this.path(key);
    return this.wrap(`Deleting ${key}`, signal, async () => {
      await rm(`${target}${META}`, { force: true });
      await rm(target, { force: true });
    });
  }

  async deletePrefix(prefix: string, signal: AbortSignal): Promise<number> {
    checkPrefix(prefix);
    if (prefix === "") throw new ObjectStoreUnavailable("Deleting every object at once is refused: give a prefix.");
    const doomed = await this.list(prefix, signal);
    for (const o of doomed) await this.delete(o.key, signal);
    // Directories left empty go too; partial files of a put cut short with them.
    await this.wrap(`Deleting ${prefix}`, signal, () => rm(join(this.root, prefix), { recursive: true, force: true }));
    return doomed.length;
  }
}
