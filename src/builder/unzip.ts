// Unpacks a code artifact without trusting it: no entry may land outside the
// build context (zip-slip, absolute paths, symlinks pointing out), and the
// entry count and the bytes actually written are capped (zip bombs), whatever
// the archive's headers claim.

import { createWriteStream } from "node:fs";
import { lstat, mkdir, symlink } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize, posix, relative } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import yauzl, { type Entry, type ZipFile } from "yauzl";
import { BuildFailure } from "../core/index.js";

export interface UnzipLimits {
  maxFiles: number;
  maxUncompressedBytes: number;
}

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;

function openZip(file: string): Promise<ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, autoClose: true, strictFileNames: true, validateEntrySizes: true }, (err, zip) =>
      err ? reject(new BuildFailure(`The code artifact is not a valid zip archive: ${err.message}`)) : resolve(zip!),
    ),
  );
}

function readStream(zip: ZipFile, entry: Entry): Promise<NodeJS.ReadableStream> {
  return new Promise((resolve, reject) => zip.openReadStream(entry, (err, s) => (err ? reject(err) : resolve(s!))));
}

/** The entry's path inside `root`, or a BuildFailure naming why it may not be written. */
function safeTarget(root: string, name: string): string {
  if (name.includes("\\")) throw new BuildFailure(`The code artifact has an entry with a backslash in its path: '${name}'. Use / as the separator.`);
  if (posix.isAbsolute(name) || /^[A-Za-z]:/.test(name)) throw new BuildFailure(`The code artifact has an entry with an absolute path: '${name}'. Paths must be relative to the zip's root.`);
  const target = normalize(join(root, name));
  const rel = relative(root, target);
  if (rel.startsWith("..") || isAbsolute(rel)) throw new BuildFailure(`The code artifact has an entry that escapes the archive (zip-slip): '${name}'.`);
  return target;
}

/** yauzl checks entry names itself; its findings get the same wording as ours. */
function describeZipError(err: Error): BuildFailure {
  const relative = /invalid relative path: (.*)$/.exec(err.message);
  if (relative) return new BuildFailure(`The code artifact has an entry that escapes the archive (zip-slip): '${relative[1]}'.`);
  const absolute = /absolute path: (.*)$/.exec(err.message);
  if (absolute) return new BuildFailure(`The code artifact has an entry with an absolute path: '${absolute[1]}'. Paths must be relative to the zip's root.`);
  if (/invalid characters in fileName/.test(err.message)) return new BuildFailure(`The code artifact has an entry with a backslash in its path (${err.message}). Use / as the separator.`);
  return new BuildFailure(`The code artifact could not be unpacked: ${err.message}`);
}

/** Refuses to write through a symlink the archive made earlier: chained links could otherwise lead out. */
async function refuseSymlinkParents(root: string, target: string, name: string): Promise<void> {
  let dir = root;
  for (const part of relative(root, dirname(target)).split("/").filter(Boolean)) {
    dir = join(dir, part);
    const info = await lstat(dir).catch(() => undefined);
    if (info?.isSymbolicLink()) throw new BuildFailure(`The code artifact writes '${name}' through a symlink it contains; that could lead outside the archive.`);
  }
}

/** Extracts `file` into `root` (which must exist) and checks that a Dockerfile sits at its root. */
export async function safeUnzip(file: string, root: string, limits: UnzipLimits, signal?: AbortSignal): Promise<{ files: number; bytes: number }> {
  const zip = await openZip(file);
  if (zip.entryCount > limits.maxFiles) {
    zip.close();
    throw new BuildFailure(`The code artifact has ${zip.entryCount} entries; at most ${limits.maxFiles} are allowed.`);
  }
  let files = 0;
  let bytes = 0;
  let dockerfile = false;
  await new Promise<void>((resolve, reject) => {
    const fail = (err: unknown) => {
      zip.close();
      reject(err instanceof BuildFailure ? err : describeZipError(err as Error));
    };
    zip.on("error", fail);
    zip.on("end", () => resolve());
    signal?.addEventListener("abort", () => fail(new BuildFailure("Unpacking the code artifact was stopped.")), { once: true });
    zip.on("entry", (entry: Entry) => {
      (async () => {
        const target = safeTarget(root, entry.fileName);
        await refuseSymlinkParents(root, target, entry.fileName);
        const mode = (entry.externalFileAttributes >>> 16) & 0xffff;
        if (entry.fileName.endsWith("/")) {
          await mkdir(target, { recursive: true });
        } else if ((mode & S_IFMT) === S_IFLNK) {
          const stream = await readStream(zip, entry);
          let link = "";
          for await (const chunk of stream) link += chunk.toString();
          const resolved = normalize(join(dirname(target), link));
          const rel = relative(root, resolved);
          if (isAbsolute(link) || rel.startsWith("..") || isAbsolute(rel)) {
            throw new BuildFailure(`The code artifact has a symlink pointing outside the archive: '${entry.fileName}' -> '${link}'.`);
          }
          await mkdir(dirname(target), { recursive: true });
          await symlink(link, target);
        } else {
          files += 1;
          if (entry.fileName === "Dockerfile") dockerfile = true;
          await mkdir(dirname(target), { recursive: true });
          const stream = await readStream(zip, entry);
          const counter = new Transform({
            transform(chunk: Buffer, _e, done) {
              bytes += chunk.length;
              if (bytes > limits.maxUncompressedBytes) {
                done(new BuildFailure(`The code artifact unpacks to more than ${limits.maxUncompressedBytes} bytes (a zip bomb?); the limit is ${limits.maxUncompressedBytes}.`));
              } else done(null, chunk);
            },
          });
          await pipeline(stream, counter, createWriteStream(target, { mode: (mode & 0o777) || 0o644 }), ...(signal ? [{ signal }] : []));
        }
        if (!signal?.aborted) zip.readEntry();
      })().catch(fail);
    });
    zip.readEntry();
  });
  if (!dockerfile) {
    throw new BuildFailure("The code artifact has no Dockerfile at its root. Put the Dockerfile at the top of the zip, not in a subfolder.");
  }
  return { files, bytes };
}

