// Log files, one per build or MicroVM (<data-dir>/logs/builds/<buildId>.log,
// <data-dir>/logs/microvms/<microvmId>.log). Writers append; readers get what
// is there, and a follower keeps reading until its owner says it has finished.

import { createReadStream, createWriteStream, existsSync, mkdirSync, statSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";

export class LogWriter {
  private readonly stream: WriteStream;

  constructor(readonly file: string) {
    this.stream = createWriteStream(file, { flags: "a" });
  }

  line(text: string): void {
    this.stream.write(`${text}\n`);
  }

  /** A progress line: timestamped, so a reader sees how long each step took. */
  step(text: string): void {
    this.line(`[${new Date().toISOString()}] ==> ${text}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(resolve));
  }
}

export class LogFiles {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  path(id: string): string {
    if (!/^[A-Za-z0-9-]+$/.test(id)) throw new Error(`bad log id ${id}`);
    return join(this.dir, `${id}.log`);
  }

  open(id: string): LogWriter {
    return new LogWriter(this.path(id));
  }

  exists(id: string): boolean {
    return existsSync(this.path(id));
  }

  /**
   * The log as a stream. With `follow`, it keeps sending what is appended until
   * `finished()` says its owner is done and the file has been read to its end.
   */
  read(id: string, follow: boolean, finished: () => Promise<boolean>, signal?: AbortSignal): Readable {
    const file = this.path(id);
    if (!follow) return existsSync(file) ? createReadStream(file) : Readable.from([]);
    let offset = 0;
    return Readable.from(
      (async function* () {
        for (;;) {
          if (signal?.aborted) return;
          const size = existsSync(file) ? statSync(file).size : 0;
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
