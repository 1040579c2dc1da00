// Log files, one per build or MicroVM (<data-dir>/logs/builds/<buildId>.log,
// <data-dir>/logs/microvms/<microvmId>.log). Writers append; readers get what
// is there, and a follower keeps reading until its owner says it has finished.
// No log grows without bound: past its limit, the older half is dropped with a
// line that says so (boundFile), so a chatty build or app cannot fill the disk.
//
// Each log has a timestamp index beside it (<id>.stamps): the log file stays
// the raw bytes its writer sent (runsc writes a MicroVM's output straight into
// it, from a process that outlives the server), and the index says when lmvm
// first saw each stretch of bytes: "base <n>" then lines "<end> <ms>", meaning
// bytes up to logical offset <end> were there at <ms> (epoch milliseconds).
// A line's timestamp is that of the first stretch that reaches into it. Logical
// offsets count every byte ever written: byte p of the file is logical base+p,
// and trimming raises the base, so an offset (an event's id, a reader's
// position) keeps naming the same line after older ones were dropped. The
// index is trimmed with its log, and is bounded too (MAX_STAMPS_SHARE).

import {
  appendFileSync, closeSync, createReadStream, createWriteStream, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, type WriteStream,
} from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";

const MIB = 1024 * 1024;
/** Default size limit of one log file. */
export const MAX_LOG_BYTES = 64 * MIB;

/** One index entry takes about 24 bytes: the index may hold this many per byte of the log's limit. */
const STAMP_BYTES = 24;
/** The index may use up to this share of a log's limit before its older half (and the log bytes it stamps) is dropped. */
const MAX_STAMPS_SHARE = 1 / 8;

/** The timestamp index of a log file. */
export function stampsFile(file: string): string {
  return file.replace(/\.log$/, "") + ".stamps";
}

export interface Stamps {
  /** Logical offset of the file's first byte: the bytes dropped so far, net of the lines that said so. */
  base: number;
  /** [logical end, epoch ms], both ascending. */
  entries: [number, number][];
}

export function readStamps(file: string): Stamps {
  let text: string;
  try {
    text = readFileSync(stampsFile(file), "utf8");
  } catch {
    return { base: 0, entries: [] };
  }
  const stamps: Stamps = { base: 0, entries: [] };
  for (const line of text.split("\n")) {
    const m = /^(base )?(\d+)(?: (\d+))?$/.exec(line);
    if (!m) continue; // a line cut short by a crash
    if (m[1]) stamps.base = Number(m[2]);
    else if (m[3] !== undefined) stamps.entries.push([Number(m[2]), Number(m[3])]);
  }
  return stamps;
}

/** Per log file: its base and the logical end it has stamped, so a stamp is a stat and, when it grew, one append. */
const stamped = new Map<string, { base: number; end: number; ms: number; count: number }>();

function stampState(file: string): { base: number; end: number; ms: number; count: number } {
  let state = stamped.get(file);
  if (!state) {
    const s = readStamps(file);
    const last = s.entries.at(-1);
    state = { base: s.base, end: Math.max(s.base, last?.[0] ?? 0), ms: last?.[1] ?? 0, count: s.entries.length };
    stamped.set(file, state);
  }
  return state;
}

/**
 * Notes that the bytes the log has now were there at `now`: the bytes written
 * since the last stamp get `now` as their time. Cheap when nothing changed.
 */
export function stampFile(file: string, now = Date.now()): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return;
  }
  const state = stampState(file);
  const end = state.base + size;
  if (end <= state.end) return;
  const ms = Math.max(now, state.ms); // the clock may step back; timestamps may not
  try {
    if (!existsSync(stampsFile(file))) appendFileSync(stampsFile(file), `base ${state.base}\n`);
    appendFileSync(stampsFile(file), `${end} ${ms}\n`);
  } catch {
    return; // the disk is full: the next stamp covers these bytes too
  }
  state.end = end;
  state.ms = ms;
  state.count++;
}

/**
 * Keeps `file` under `maxBytes`: once past three quarters of it, keeps the
 * newest half (from a line start) after a line saying how much was dropped;
 * the quarter left is room for what is written until the next check. Writers
 * must append (O_APPEND), as runsc and LogWriter do, so their next write lands
 * at the new end; a line written during the trim itself may be lost. The
 * timestamp index follows: its base rises by what was dropped, and its entries
 * for dropped bytes go; and an index past its own share of the limit (a log
 * that grows a few bytes a second for months) drops its older half, with the
 * bytes those entries stamped. Returns whether it trimmed.
 */
export function boundFile(file: string, maxBytes = MAX_LOG_BYTES): boolean {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return false;
  }
  const maxStamps = Math.max(16, Math.floor((maxBytes * MAX_STAMPS_SHARE) / STAMP_BYTES));
  const state = stampState(file);
  let stamps: Stamps | undefined;
  let keep: number;
  if (size > (maxBytes * 3) / 4) keep = Math.floor(maxBytes / 2);
  else {
    if (state.count <= maxStamps) return false; // most checks end here, without reading the index
    stamps = readStamps(file);
    if (stamps.entries.length <= maxStamps) return false;
    const middle = stamps.entries[Math.floor(stamps.entries.length / 2)]![0];
    keep = Math.max(0, state.base + size - middle);
  }
  const fd = openSync(file, "r+");
  let tail: Buffer;
  try {
    const buf = Buffer.alloc(Math.min(keep, size));
    const read = readSync(fd, buf, 0, buf.length, size - buf.length);
    tail = buf.subarray(0, read);
    if (keep < size) tail = tail.subarray(tail.indexOf(10) + 1);
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  const dropped = size - tail.length;
  const header = Buffer.from(`[lmvm] ${dropped} bytes of older output were dropped: a log is kept under ${maxBytes >= MIB ? `${Math.round(maxBytes / MIB)} MiB` : `${Math.round(maxBytes / 1024)} KiB`}.\n`);
  appendFileSync(file, Buffer.concat([header, tail]));
  // Logical offsets stay: old byte `dropped` is new byte header.length.
  const cut = state.base + dropped;
  const base = cut - header.length;
  stamps ??= readStamps(file);
  const entries = stamps.entries.filter(([end]) => end > cut);
  try {
    const tmp = `${stampsFile(file)}.tmp`;
    writeFileSync(tmp, `base ${base}\n${entries.map(([end, ms]) => `${end} ${ms}\n`).join("")}`);
    renameSync(tmp, stampsFile(file));
  } catch {
    // the disk is full: the index is rebuilt from scratch below
    rmSync(stampsFile(file), { force: true });
  }
  stamped.delete(file);
  return true;
}

/** One line of a log, with when lmvm first saw it. */
export interface LogLine {
  /** Logical offset of the line's first byte: stays the line's name after older lines are dropped. */
  offset: number;
  /** Epoch milliseconds when lmvm first saw the line. */
  timestamp: number;
  message: string;
}

/** A last line without its newline is held back this long, in case the rest is on its way. */
const PARTIAL_LINE_MS = 2_000;

/**
 * The lines of a log file with their timestamps, from logical offset `from`
 * (a line starting before it is left out) and skipping those certainly older
 * than `since` (epoch ms). Stamps the file first, so every byte has a time.
 * Empty lines are left out.
 */
export function readLines(file: string, opts: { from?: number; since?: number; now?: number } = {}): LogLine[] {
  const now = opts.now ?? Date.now();
  stampFile(file, now);
  const { base, entries } = readStamps(file);
  let start = Math.max(0, (opts.from ?? 0) - base);
  if (opts.since !== undefined) {
    // Bytes up to the end of the last stretch seen before `since` are all older.
    let older = 0;
    for (const [end, ms] of entries) {
      if (ms >= opts.since) break;
      older = end - base;
    }
    start = Math.max(start, older);
  }
  let data: Buffer;
  try {
    const fd = openSync(file, "r");
    try {
      const size = statSync(file).size;
      if (start >= size) return [];
      // Back up to the start of the line `start` falls in, unless it is one.
      let from = start;
      if (from > 0) {
        const look = Buffer.alloc(1);
        readSync(fd, look, 0, 1, from - 1);
        if (look[0] !== 10) {
          // mid-line: that line began before `start`, so it is not wanted; skip to the next
          const rest = Buffer.alloc(size - from);
          readSync(fd, rest, 0, rest.length, from);
          const nl = rest.indexOf(10);
          if (nl < 0) return [];
          from += nl + 1;
          data = rest.subarray(nl + 1);
          return linesOf(data, base + from, entries, now);
        }
      }
      data = Buffer.alloc(size - from);
      readSync(fd, data, 0, data.length, from);
      return linesOf(data, base + from, entries, now);
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

function linesOf(data: Buffer, logicalStart: number, entries: [number, number][], now: number): LogLine[] {
  const lines: LogLine[] = [];
  let e = 0;
  let pos = 0;
  while (pos < data.length) {
    let nl = data.indexOf(10, pos);
    const complete = nl >= 0;
    if (!complete) nl = data.length;
    const offset = logicalStart + pos;
    while (e < entries.length && entries[e]![0] <= offset) e++;
    const timestamp = entries[e]?.[1] ?? now;
    if (!complete && now - timestamp < PARTIAL_LINE_MS) break;
    let message = data.subarray(pos, nl).toString("utf8");
    if (message.endsWith("\r")) message = message.slice(0, -1);
    if (message.length) lines.push({ offset, timestamp, message });
    pos = nl + 1;
  }
  return lines;
}

export class LogWriter {
  private readonly stream: WriteStream;
  private written = 0;
  private failed = false;
  private stampPending = false;

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
    // Stamped as it reaches the file, so a build's lines get the time they were written: one
    // stamp per flush rather than per line (a stat and an append each, and a closure held by
    // every queued write), so a RUN step printing millions of lines costs neither time nor memory.
    if (this.stampPending) this.stream.write(`${text}\n`);
    else {
      this.stampPending = true;
      this.stream.write(`${text}\n`, () => {
        this.stampPending = false;
        stampFile(this.file);
      });
    }
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
      this.stream.end(() => {
        stampFile(this.file); // the lines written since the last stamp
        resolve();
      });
    });
  }
}

/** The writer of a build whose image has logging disabled: nothing is kept. */
class DiscardingWriter extends LogWriter {
  constructor() {
    super("/dev/null");
  }

  override step(): void {}

  override line(): void {}
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

  /** A writer of the log; with `discard` (logging disabled), one that keeps nothing and makes no file. */
  open(id: string, opts: { discard?: boolean } = {}): LogWriter {
    return opts.discard ? new DiscardingWriter() : new LogWriter(this.path(id), this.maxBytes);
  }

  /** The ids of the logs here. */
  ids(): string[] {
    try {
      return readdirSync(this.dir).filter((n) => n.endsWith(".log")).map((n) => n.slice(0, -4));
    } catch {
      return [];
    }
  }

  /** Trims every log here that outgrew the limit; for files other processes write (MicroVM output). */
  boundAll(): void {
    for (const id of this.ids()) {
      try {
        boundFile(this.path(id), this.maxBytes);
      } catch {
        // removed meanwhile, or the disk is full: try again next time
      }
    }
  }

  /** Stamps what every log here gained since the last look; for files other processes write (MicroVM output). */
  stampAll(now = Date.now()): void {
    for (const id of this.ids()) stampFile(this.path(id), now);
  }

  /** The log's lines with their timestamps (see readLines). */
  lines(id: string, opts: { from?: number; since?: number; now?: number } = {}): LogLine[] {
    return readLines(this.path(id), opts);
  }

  /** Size, logical end and first and last stamp times of a log; undefined when it has none. */
  stats(id: string): { bytes: number; first?: number; last?: number; created: number } | undefined {
    const file = this.path(id);
    let size: number;
    let created: number;
    try {
      const st = statSync(file);
      size = st.size;
      created = st.birthtimeMs || st.ctimeMs;
    } catch {
      return undefined;
    }
    stampFile(file);
    const { entries } = readStamps(file);
    return { bytes: size, created: Math.min(created, entries[0]?.[1] ?? created), ...(entries.length ? { first: entries[0]![1], last: entries.at(-1)![1] } : {}) };
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
