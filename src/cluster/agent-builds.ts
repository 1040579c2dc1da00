// Image builds on an agent (docs/design.md, "Many hosts"): the server places
// a build here with `POST /v1/build` (remote-builder.ts) and this host runs it
// with its own Dockerfile builder, wrapped so the image is in the object
// store before the answer. The request is one JSON line (the build job, the
// server's settings for it, and what the server says of the code artifact)
// followed by the artifact's bytes when it is a file on the server's host.
// The answer streams the build log's lines as they are written, one JSON
// line each ({"log": …}), and ends with {"result": …} or {"error": …}.
//
// A build stops when its request's connection closes (the server cancelled
// it, stopped, or died), when this host stops serving (its heartbeat past
// its deadline: the server re-places it once it declares the host lost), and
// when the agent stops; `recover` at start clears what builds left.

import { createWriteStream, mkdirSync, rmSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { finished } from "node:stream/promises";
import type { BuildJob, ImageBuilder } from "../core/index.js";
import type { BuildLogs, BuildLogWriter, BuildSettings } from "../builder/index.js";
import { errorToWire, LeaseLost, reviveJob } from "./wire.js";

/** The largest first line of a build request (the job and settings as JSON). */
const MAX_HEADER = 4 * 1024 * 1024;

/** The first line of `POST /v1/build`. */
export interface BuildRequest {
  job: BuildJob;
  settings: Omit<BuildSettings, "artifact">;
  /** A file:// artifact: its size (its bytes follow the line), or why the server could not read it. */
  artifact?: { bytes: number } | { failure: string };
}

export interface AgentBuildsOptions {
  /** The data directory: received artifacts go under it. */
  dataDir: string;
  /** Makes the host's builder (the Dockerfile builder in the object store's wrapper) over these logs and settings. */
  builder: (logs: BuildLogs, settings: (buildId: string) => BuildSettings | undefined) => ImageBuilder;
  /** Frees a version's build on this host only (its local image and buildah tag); the server deletes the object store's copy. */
  discardLocal: (imageArn: string, version: string) => Promise<void>;
  log: (event: Record<string, unknown>) => void;
}

/** Forwards a build's lines to its request's answer. */
class StreamedLog implements BuildLogWriter {
  constructor(private readonly sink: ((text: string) => void) | undefined) {}
  line(text: string): void {
    this.sink?.(text);
  }
  step(text: string): void {
    this.line(`[${new Date().toISOString()}] ==> ${text}`);
  }
  async close(): Promise<void> {}
}

export class AgentBuilds {
  private readonly builder: ImageBuilder;
  private readonly sinks = new Map<string, (text: string) => void>();
  private readonly settings = new Map<string, BuildSettings>();
  private readonly running = new Map<string, { controller: AbortController; done: Promise<unknown>; stopped?: string }>();
  private readonly receivedDir: string;

  constructor(private readonly opts: AgentBuildsOptions) {
    this.receivedDir = join(opts.dataDir, "build-artifacts");
    const logs: BuildLogs = { open: (id, o) => new StreamedLog(o?.discard ? undefined : this.sinks.get(id)) };
    this.builder = opts.builder(logs, (id) => this.settings.get(id));
  }

  get size(): number {
    return this.running.size;
  }

  isRunning(buildId: string): boolean {
    return this.running.has(buildId);
  }

  /** Cancels every build here and waits for them to end (the host stopped serving, or the agent stops). */
  async abortAll(why: string): Promise<void> {
    if (this.running.size) this.opts.log({ level: "warn", msg: `builds cancelled: ${why}`, builds: [...this.running.keys()] });
    for (const r of this.running.values()) {
      r.stopped ??= why;
      r.controller.abort();
    }
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  /** At the agent's start, and when a restarted server asks: no build of a previous process runs, so what builds left goes. */
  async recover(): Promise<void> {
    await this.abortAll("the server recovers its builds");
    rmSync(this.receivedDir, { recursive: true, force: true });
    await this.builder.recover();
  }

  discard(imageArn: string, version: string): Promise<void> {
    return this.opts.discardLocal(imageArn, version);
  }

  /** Serves `POST /v1/build`: `ready` says whether this host takes a build now (serving, ACTIVE). */
  async serve(req: IncomingMessage, res: ServerResponse, ready: () => string | undefined): Promise<void> {
    const controller = new AbortController();
    // The server cancelled, stopped or died: the build stops.
    res.once("close", () => controller.abort());
    let started = false;
    const fail = (err: unknown) => {
      const line = `${JSON.stringify({ error: errorToWire(err) })}\n`;
      if (!started) {
        res.writeHead(500, { "content-type": "application/x-ndjson" });
        started = true;
      }
      res.end(line);
    };
    let request: BuildRequest;
    let received: string | undefined;
    try {
      const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      let head = Buffer.alloc(0);
      let nl: number;
      while ((nl = head.indexOf(10)) < 0) {
        const next = await it.next();
        if (next.done) throw new Error("the build request ended before its first line");
        head = Buffer.concat([head, next.value]);
        if (head.length > MAX_HEADER) throw new Error("the build request's first line is too long");
      }
      request = JSON.parse(head.subarray(0, nl).toString("utf8")) as BuildRequest;
      const job = reviveJob(request.job);
      request.job = job;
      const why = ready();
      if (why) throw new LeaseLost(why);
      const buildId = job.build.buildId;
      if (!/^[A-Za-z0-9-]+$/.test(buildId)) throw new Error(`not a build id: ${buildId}`);
      // The same build placed here again (after a lost connection): the old run ends first.
      const old = this.running.get(buildId);
      if (old) {
        old.controller.abort();
        await old.done.catch(() => undefined);
      }
      const artifact = request.artifact;
      let sent: BuildSettings["artifact"];
      if (artifact && "failure" in artifact) sent = { failure: artifact.failure };
      else if (artifact) {
        mkdirSync(this.receivedDir, { recursive: true, mode: 0o700 });
        received = join(this.receivedDir, `${buildId}.zip`);
        const out = createWriteStream(received);
        let got = 0;
        const write = (b: Buffer) => {
          got += b.length;
          if (got > artifact.bytes) throw new Error(`the server sent more than the ${artifact.bytes} bytes of the code artifact it announced`);
          return out.write(b) ? undefined : new Promise<void>((r) => out.once("drain", () => r()));
        };
        await write(head.subarray(nl + 1));
        for (let next = await it.next(); !next.done; next = await it.next()) await write(next.value);
        out.end();
        await finished(out);
        if (got !== artifact.bytes) throw new Error(`the server announced ${artifact.bytes} bytes of the code artifact and sent ${got}`);
        sent = { path: received };
      } else {
        // Nothing follows the line: read the request to its end, so it counts as received.
        let extra = head.length - nl - 1;
        for (let next = await it.next(); !next.done; next = await it.next()) extra += next.value.length;
        if (extra) throw new Error(`the build request has ${extra} bytes after its first line and announced no code artifact`);
      }
      this.settings.set(buildId, { ...request.settings, ...(sent ? { artifact: sent } : {}) });
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      started = true;
      this.sinks.set(buildId, (text) => void (res.writableEnded || res.write(`${JSON.stringify({ log: text })}\n`)));
      this.opts.log({ msg: "build started", buildId, imageArn: job.build.imageArn, version: job.build.imageVersion });
      const done = this.builder.build(job, controller.signal);
      const entry: { controller: AbortController; done: Promise<unknown>; stopped?: string } = { controller, done };
      this.running.set(buildId, entry);
      try {
        const result = await done.catch((err: unknown) => {
          // Stopped by this host (it stopped serving, or the agent stops), not by the build: it ended here, so the server places it elsewhere.
          throw entry.stopped ? new LeaseLost(`host stopped the build: ${entry.stopped}`) : err;
        });
        this.opts.log({ msg: "build done", buildId });
        res.end(`${JSON.stringify({ result })}\n`);
      } finally {
        if (this.running.get(buildId) === entry) {
          this.running.delete(buildId);
          this.sinks.delete(buildId);
          this.settings.delete(buildId);
        }
      }
    } catch (err) {
      this.opts.log({ level: controller.signal.aborted ? "info" : "warn", msg: "build ended with an error", err: (err as Error).message, cancelled: controller.signal.aborted });
      if (!res.writableEnded) fail(err);
    } finally {
      if (received) rmSync(received, { force: true });
    }
  }
}
