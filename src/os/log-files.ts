// Log files, one per build or MicroVM (<data-dir>/logs/builds/<buildId>.log,
// <data-dir>/logs/microvms/<microvmId>.log). Writers append; readers get what
// is there, and a follower keeps reading until its owner says it has finished.
// No log grows without bound: past its limit, the older half is dropped with a
// line that says so (boundFile), so a chatty build or app cannot fill the disk.

import {
  appendFileSync, closeSync, createReadStream, createWriteStream, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, statSync, type WriteStream,
} from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";

const MIB = 1024 * 1024;
/** Default size limit of one log file. */
export const MAX_LOG_BYTES = 64 * MIB;

/**
 * Keeps `file` under `maxBytes`: once past three quarters of it, keeps the
 * newest half (from a line start) after a line saying how much was dropped;
 * the quarter left is room for what is written until the next check. Writers
 * must append (O_APPEND), as runsc and LogWriter do, so their next write lands
 * at the new end; a line written during the trim itself may be lost. Returns
 * whether it trimmed.
 */
export function boundFile(file: string, maxBytes = MAX_LOG_BYTES): boolean {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return false;
  }
  if (size <= (maxBytes * 3) / 4) return false;
  const keep = Math.floor(maxBytes / 2);
  const fd = openSync(file, "r+");
  let tail: Buffer;
  try {
    const buf = Buffer.alloc(keep);
    const read = readSync(fd, buf, 0, keep, size - keep);
    tail = buf.subarray(0, read);
    tail = tail.subarray(tail.indexOf(10) + 1);
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  const dropped = size - tail.length;
  appendFileSync(file, Buffer.concat([Buffer.from(`[lmvm] ${dropped} bytes of older output were dropped: a log is kept under ${maxBytes >= MIB ? `${Math.round(maxBytes / MIB)} MiB` : `${Math.round(maxBytes / 1024)} KiB`}.\n`), tail]));
  return true;
}

export class LogWriter {
  private readonly stream: WriteStream;
  private written = 0;
  private failed = false;

  constructor(
    readonly file: string,
    private readonly maxBytes = MAX_LOG_BYTES,
  ) {
    this.stream = createWriteStream(file, { flags: "a" });
    // A full disk must not take the server down: the log stops, the work goes on.
    this.stream.on("error", () => (this.failed = true));
  }

  line(text: string): void {
    if (this.failed) return;
    this.stream.write(`${text}\n`);
    this.written += Buffer.byteLength(text) + 1;
    // Checked every eighth: at most 3/4 at a check, plus two eighths written around it.
    if (this.written > this.maxBytes / 8) {
      // Writes are queued: trim once what was asked is on disk.
      this.written = 0;
      this.stream.write("", () => boundFile(this.file, this.maxBytes));
    }
  }

  /** A progress line: timestamped, so a reader sees how long each step took. */
  step(text: string): void {
    this.line(`[${new Date().toISOString()}] ==> ${text}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.failed || this.stream.destroyed) return resolve();
      this.stream.end(resolve);
    });
  }
}

export class LogFiles {
  constructor(
    private readonly dir: string,
    private readonly maxBytes = MAX_LOG_BYTES,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  path(id: string): string {
    if (!/^[A-Za-z0-9-]+$/.test(id)) throw new Error(`bad log id ${id}`);
    return join(this.dir, `${id}.log`);
  }

  open(id: string): LogWriter {
    return new LogWriter(this.path(id), this.maxBytes);
  }

  /** Trims every log here that outgrew the limit; for files other processes write (MicroVM output). */
  boundAll(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      try {
        boundFile(join(this.dir, name), this.maxBytes);
      } catch {
        // removed meanwhile, or the disk is full: try again next time
      }
    }
  }

  exists(id: string): boolean {
    return existsSync(this.path(id));
  }

  /**
   * The log as a stream, from byte `from` on (a reader that lost its connection
   * resumes where it was). With `follow`, it keeps sending what is appended
   * until `finished()` says its owner is done and the file has been read to its end.
   */
  read(id: string, follow: boolean, finished: () => Promise<boolean>, signal?: AbortSignal, from = 0): Readable {
    const file = this.path(id);
    if (!follow) {
      const size = existsSync(file) ? statSync(file).size : 0;
      return from < size ? createReadStream(file, { start: from }) : Readable.from([]);
    }
    let offset = from;
    return Readable.from(
      (async function* () {
        for (;;) {
          if (signal?.aborted) return;
          const size = existsSync(file) ? statSync(file).size : 0;
          if (size < offset) offset = 0; // trimmed: what is left is newer than what was sent
          if (size > offset) {
            for await (const chunk of createReadStream(file, { start: offset, end: size - 1 })) yield chunk as Buffer;
            offset = size;
            continue;
          }
          if (await finished()) {
            const final = existsSync(file) ? statSync(file).size : 0;
            if (final <= offset) return;
            continue;
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })(),
    );
  }
}
