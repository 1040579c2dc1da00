// Build logs, one file per build under <data-dir>/logs/builds/<buildId>.log.
// Builds append; readers get what is there, and a follower keeps reading
// until the build says it has finished.

import { createReadStream, createWriteStream, existsSync, mkdirSync, statSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";

export class BuildLog {
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

export class BuildLogs {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  path(buildId: string): string {
    if (!/^[A-Za-z0-9-]+$/.test(buildId)) throw new Error(`bad build id ${buildId}`);
    return join(this.dir, `${buildId}.log`);
  }

  open(buildId: string): BuildLog {
    return new BuildLog(this.path(buildId));
  }

  exists(buildId: string): boolean {
    return existsSync(this.path(buildId));
  }

  /**
   * The log as a stream. With `follow`, it keeps sending what is appended until
   * `finished()` says the build is over and the file has been read to its end.
   */
  read(buildId: string, follow: boolean, finished: () => Promise<boolean>, signal?: AbortSignal): Readable {
    const file = this.path(buildId);
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
