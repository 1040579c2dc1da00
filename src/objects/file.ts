// The object store as a shared directory (file:///path: an NFS mount every
// host sees, say). Each object is two files: <key> (its bytes) and
// <key>.lmvm-object.json ({size, sha256}). A put writes both beside their
// final names and renames them, bytes first: an object exists once its
// description does, and a reader checks the bytes against it.

import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
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

export class FileObjectStore implements ObjectStore {
  readonly url: string;

  constructor(private readonly root: string) {
    this.url = `file://${root}`;
    if (!existsSync(root) || !statSync(root).isDirectory()) throw new ObjectStoreUnavailable(`--object-store file://${root}: the directory ${root} does not exist; create it (a directory every host mounts) or give another file:// URL.`);
  }

  private path(key: string): string {
    return join(this.root, checkKey(key));
  }

  private wrap<T>(what: string, work: () => Promise<T>): Promise<T> {
    return work().catch((err: Error) => {
      if (err instanceof ObjectStoreUnavailable) throw err;
      throw new ObjectStoreUnavailable(`${what} in ${this.url} failed: ${err.message}`);
    });
  }

  async put(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo> {
    const target = this.path(key);
    return this.wrap(`Putting ${key}`, async () => {
      mkdirSync(dirname(target), { recursive: true });
      const tmp = `${target}${TEMP}${randomBytes(6).toString("hex")}`;
      try {
        const { size, sha256 } = await copyHashing(createReadStream(file), tmp, signal, progress);
        const info: ObjectInfo = { key, size, sha256 };
        writeFileSync(`${tmp}${META}`, JSON.stringify({ size, sha256 }));
        rmSync(`${target}${META}`, { force: true }); // no description names bytes being replaced
        renameSync(tmp, target);
        renameSync(`${tmp}${META}`, `${target}${META}`);
        return info;
      } finally {
        rmSync(tmp, { force: true });
        rmSync(`${tmp}${META}`, { force: true });
      }
    });
  }

  private describe(key: string): ObjectInfo | undefined {
    let text: string;
    try {
      text = readFileSync(`${this.path(key)}${META}`, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const meta = JSON.parse(text) as { size: number; sha256: string };
    return { key, size: meta.size, sha256: meta.sha256 };
  }

  async get(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo | undefined> {
    return this.wrap(`Getting ${key}`, async () => {
      const info = this.describe(key);
      if (!info) return undefined;
      const tmp = `${file}${TEMP}${randomBytes(6).toString("hex")}`;
      try {
        const got = await copyHashing(createReadStream(this.path(key)), tmp, signal, progress);
        if (got.size !== info.size || got.sha256 !== info.sha256) throw new ObjectStoreUnavailable(`${key} in ${this.url} is not what was put (${got.size} bytes, sha256 ${got.sha256}; it should be ${info.size} bytes, sha256 ${info.sha256}): it is being replaced or was damaged.`);
        renameSync(tmp, file);
        return info;
      } finally {
        rmSync(tmp, { force: true });
      }
    });
  }

  async head(key: string, _signal: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.wrap(`Looking up ${key}`, async () => this.describe(key));
  }

  async list(prefix: string, _signal: AbortSignal): Promise<ObjectInfo[]> {
    checkPrefix(prefix);
    return this.wrap(`Listing ${prefix}`, async () => {
      const out: ObjectInfo[] = [];
      const walk = (dir: string, rel: string) => {
        if (!existsSync(dir)) return;
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          const key = rel ? `${rel}/${entry.name}` : entry.name;
          if (entry.isDirectory()) walk(join(dir, entry.name), key);
          else if (entry.name.endsWith(META) && !entry.name.includes(TEMP)) {
            const info = this.describe(key.slice(0, -META.length));
            if (info && info.key.startsWith(prefix)) out.push(info);
          }
        }
      };
      // Only the directory the prefix names is walked.
      const base = prefix.slice(0, prefix.lastIndexOf("/", prefix.length - 1) + 1);
      walk(join(this.root, base), base.replace(/\/$/, ""));
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async delete(key: string, _signal: AbortSignal): Promise<void> {
    const target = this.path(key);
    return this.wrap(`Deleting ${key}`, async () => {
      rmSync(`${target}${META}`, { force: true });
      rmSync(target, { force: true });
    });
  }

  async deletePrefix(prefix: string, signal: AbortSignal): Promise<number> {
    checkPrefix(prefix);
    if (prefix === "") throw new ObjectStoreUnavailable("Deleting every object at once is refused: give a prefix.");
    const doomed = await this.list(prefix, signal);
    for (const o of doomed) await this.delete(o.key, signal);
    // Directories left empty go too; partial files of a put cut short with them.
    await this.wrap(`Deleting ${prefix}`, async () => rmSync(join(this.root, prefix), { recursive: true, force: true }));
    return doomed.length;
  }
}
