// The server's ImageBuilder in cluster mode (docs/design.md, "Many hosts"):
// every build runs on an agent. The core's build queue (src/core/builds.ts)
// still claims builds and records their states, on the server only; this
// builder places each one it is handed on an ACTIVE host with a fresh
// heartbeat, the cluster's platform and architecture (the least busy with
// this server's builds first, then the most free memory: rankHosts), and
// asks that host's agent over the mutual-TLS RPC to build it (agent-builds.ts).
// The agent's answer streams the build log, which is written here, where
// `lmvm logs build` and the logs API read it, as on one host.
//
// - A host that cannot be reached when the build is placed, or whose agent
//   refuses it before starting (not serving, not ACTIVE, takes no builds):
//   the next host. Another error before the agent's builder starts fails it.
// - A host lost during the build (the connection broke, or it is declared
//   LOST): the build waits until the host is LOST or its agent answers that
//   the build is not running there (a restarted agent, or one that saw the
//   connection close), then is placed again: it never runs on two hosts.
//   After MAX_HOST_LOSSES losses it fails.
// - No placeable host: the build waits up to NO_HOST_WAIT_MS for one (from
//   when that wait starts), then fails saying so.
// - Cancelled: the call ends, and the build is rejected once its agent says
//   it stopped (at most STOP_WAIT_MS).
// A build the server fails has a log ending `FAILED: <reason>`, as on one host.

import { createReadStream, type ReadStream } from "node:fs";
import { pipeline } from "node:stream";
import { Agent as HttpsAgent, request } from "node:https";
import { BuildFailure, MAX_ATTEMPTS, STOP_WAIT_MS, type BuildJob, type ImageBuilder, type SnapshotBuild } from "../core/index.js";
import type { ClusterStore, HostRecord } from "../store/index.js";
import { artifactPath, checkFileArtifact, type BuildLogs, type BuildLogWriter, type BuildSettings } from "../builder/index.js";
import { checkNodeIdentity, type NodeCredentials } from "./ca.js";
import { FRESH_MS, HOST_LOST_MS, rankHosts } from "./remote-runtime.js";
import type { BuildRequest } from "./agent-builds.js";
import { agentCall, deliveredFlag, errorFromWire, LeaseLost, RPC_PREFIX, splitAddress, Unreached, type WireError } from "./wire.js";

/** How long a build waits for a placeable host before it fails. */
export const NO_HOST_WAIT_MS = 60_000;
const POLL_MS = 2_000;
const QUICK_CALL_MS = 5_000;
/** How often a cancelled build's host is asked whether the build still runs there. */
const STOPPED_POLL_MS = 250;
const CONTROL_CALL_MS = 10 * 60_000;
/** How many times a build's host may be lost before the build fails (as many as the core's attempts at a build). */
export const MAX_HOST_LOSSES = MAX_ATTEMPTS;
/** How long a build whose host was lost waits to learn that it no longer runs there: past the loss deadline and a margin, it fails. */
const SETTLE_MS = HOST_LOST_MS + 30_000;

export interface RemoteBuilderOptions {
  cluster: ClusterStore;
  tls: NodeCredentials;
  platform: string;
  architecture: string;
  /** The server's build logs (LogFiles): the agents' lines are written there. */
  logs: BuildLogs;
  /** The server's settings every build takes: phase deadlines, artifact limits, --no-snapshots. */
  settings: Omit<BuildSettings, "artifact"> & { limits: NonNullable<BuildSettings["limits"]> };
  /** Deletes a version's image from the object store (the server's copy of it). */
  discardStored?: (imageArn: string, version: string) => Promise<void>;
  log: (event: Record<string, unknown>) => void;
  noHostWaitMs?: number;
}

/** Thrown when the connection to the build's host broke after it was delivered: the build may still run there. */
class HostLost extends Error {}

/** The host's agent answered the build with an error before starting it, one that says it takes no builds (an agent without them, or of an older version, or a refused certificate): the next host's turn. */
class Refused extends Error {}

/** A build's log that knows whether its last line says the build FAILED (a line from the agent's builder, or the server's). */
class FailureAware implements BuildLogWriter {
  endsFailed = false;
  constructor(private readonly inner: BuildLogWriter) {}
  line(text: string): void {
    this.endsFailed = /^\[[^\]]*\] ==> FAILED: /.test(text);
    this.inner.line(text);
  }
  step(text: string): void {
    this.endsFailed = text.startsWith("FAILED: ");
    this.inner.step(text);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The largest error answer read from an agent that did not start a build. */
const MAX_REFUSAL = 64 * 1024;

/** The error of an agent's answer to a build that is not 200 (it answers 200 before it starts a build): a JSON line or a plain JSON body { error }. */
function refusal(host: HostRecord, status: number | undefined, text: string): Error {
  let wire: WireError | undefined;
  try {
    wire = (JSON.parse(text.trim()) as { error?: WireError }).error;
  } catch {
    // Not JSON: said below.
  }
  if (!wire || typeof wire.message !== "string") return new Refused(`host ${host.id} answered the build with status ${status} and no error it names`);
  const err = errorFromWire(wire, host.address);
  if (err instanceof LeaseLost) return err;
  if (status === 403 || status === 404 || /no such call|runs no builds/.test(wire.message)) return new Refused(`host ${host.id} does not take builds (status ${status}): ${wire.message}`);
  return err;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

export class RemoteBuilder implements ImageBuilder {
  private readonly agent: HttpsAgent;
  /** The builds running on each host now, by build id: placement ranks by them, and a build's metadata credentials are checked against them. */
  private readonly running = new Map<string, { hostId: string; imageArn: string; roleArn?: string }>();

  constructor(private readonly opts: RemoteBuilderOptions) {
    const { ca, cert, key } = opts.tls;
    // TCP keep-alive probes from HOST_LOST_MS of silence on, as RemoteRuntime's (see its comment): at Node's default (1 s) a cut
    // of ~11 s broke a build's call, which a build then took for a lost host while the host was not lost.
    this.agent = new HttpsAgent({ ca, cert, key, keepAlive: true, keepAliveMsecs: HOST_LOST_MS, maxSockets: 64, minVersion: "TLSv1.3", checkServerIdentity: checkNodeIdentity("agent") });
  }

  /** The build role a build running on the host may get credentials of (for the instance-metadata service of its RUN steps), if that build runs there. */
  buildRole(hostId: string, imageArn: string, buildId: string): string | undefined {
    const r = this.running.get(buildId);
    return r && r.hostId === hostId && r.imageArn === imageArn ? r.roleArn : undefined;
  }

  /** How many of this server's builds run on each host. */
  buildsOn(hostId: string): number {
    let n = 0;
    for (const r of this.running.values()) if (r.hostId === hostId) n++;
    return n;
  }

  stop(): void {
    this.agent.destroy();
  }

  async build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    const log = new FailureAware(this.opts.logs.open(job.build.buildId, { discard: job.version.config.logging?.disabled !== undefined }));
    try {
      return await this.place(job, signal, log);
    } catch (err) {
      // As the single-host builder says its failure (DockerfileBuilder); unless the agent's builder said it already, the log ends with it.
      const reason = signal.aborted ? "The build was cancelled." : err instanceof BuildFailure ? err.message : `Internal error: ${(err as Error).message}`;
      if (!log.endsFailed) log.step(`FAILED: ${reason}`);
      throw err instanceof BuildFailure && !signal.aborted ? err : new BuildFailure(reason);
    } finally {
      await log.close();
    }
  }

  private async place(job: BuildJob, signal: AbortSignal, log: BuildLogWriter): Promise<SnapshotBuild> {
    const { buildId } = job.build;
    const unreachable: string[] = [];
    const skip = new Set<string>();
    const noHostWaitMs = this.opts.noHostWaitMs ?? NO_HOST_WAIT_MS;
    // Set when a wait for a host starts, cleared when the build is placed again after losing its host: a re-placement gets a wait of its own.
    let waitUntil: number | undefined;
    let losses = 0;
    for (;;) {
      if (signal.aborted) throw new BuildFailure("The build was cancelled.");
      const hosts = (await this.opts.cluster.candidates({ platform: this.opts.platform, architecture: this.opts.architecture, freshMs: FRESH_MS })).filter((h) => !skip.has(h.id));
      // Cancelled while the candidates were read: nothing is placed.
      if (signal.aborted) throw new BuildFailure("The build was cancelled.");
      // Ranked and recorded with no await in between, so builds placed at the same time see each other.
      const host = rankHosts(hosts, () => 0, (id) => this.buildsOn(id))[0];
      if (!host) {
        const why = unreachable.length
          ? `no host could take it: ${unreachable.join("; ")}`
          : `no ACTIVE host with a heartbeat in the last ${FRESH_MS / 1000} s builds for ${this.opts.platform} sandboxes on ${this.opts.architecture} (lmvm hosts list)`;
        if (waitUntil === undefined) {
          waitUntil = Date.now() + noHostWaitMs;
          log.step(`Waiting for a host to build on: ${why}`);
        } else if (Date.now() >= waitUntil) {
          throw new BuildFailure(`The build could not be placed: ${why}; it waited ${Math.round(noHostWaitMs / 1000)} s. Start or undrain an agent (lmvm agent), then update the image to build again.`);
        }
        unreachable.length = 0;
        skip.clear();
        await sleep(POLL_MS, signal);
        continue;
      }
      this.running.set(buildId, { hostId: host.id, imageArn: job.build.imageArn, ...(job.version.config.buildRoleArn ? { roleArn: job.version.config.buildRoleArn } : {}) });
      try {
        log.step(`Building on host ${host.id} (${splitAddress(host.address)[0]})`);
        this.opts.log({ msg: "build placed", buildId, hostId: host.id });
        return await this.buildOn(host, job, signal, log);
      } catch (err) {
        if (signal.aborted) {
          // The call reached the host: the build is rejected once it no longer runs there, so the core's discard of the version does not race its upload.
          if (!(err instanceof Unreached)) await this.stopped(host, buildId);
          throw err;
        }
        // Not delivered, or the agent refused it before starting (not serving, not ACTIVE): nothing of it began there.
        if (err instanceof Unreached || err instanceof LeaseLost || err instanceof Refused) {
          log.step(err instanceof Unreached ? `Host ${host.id} could not be reached (${err.message}): placing the build on another host` : `Host ${host.id} did not take or keep the build (${err.message}): placing it on another host`);
          unreachable.push(`${host.id}: ${err.message}`);
          skip.add(host.id);
          continue;
        }
        if (!(err instanceof HostLost)) throw err;
        log.step(`Lost host ${host.id} during the build (${err.message}): the build is placed again once that host is declared LOST or says it no longer runs it`);
        this.opts.log({ level: "warn", msg: "build's host lost", buildId, hostId: host.id, err: err.message });
        await this.settle(host, buildId, signal);
        if (++losses >= MAX_HOST_LOSSES) {
          throw new BuildFailure(`The build's host was lost ${losses} times (the last, host ${host.id}: ${err.message}). Update the image to build again.`);
        }
        log.step(`Host ${host.id} no longer runs the build: building again`);
        waitUntil = undefined;
        unreachable.length = 0;
        skip.clear();
      } finally {
        if (this.running.get(buildId)?.hostId === host.id) this.running.delete(buildId);
      }
    }
  }

  /** Waits until the build no longer runs on the host: it is LOST (its agent has stopped serving), or its agent says so. */
  private async settle(host: HostRecord, buildId: string, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + SETTLE_MS;
    for (;;) {
      if (signal.aborted) throw new BuildFailure("The build was cancelled.");
      const h = await this.opts.cluster.host(host.id);
      if (!h || h.state === "LOST") return;
      const answer = await agentCall<{ running: boolean }>(this.agent, host.address, "building", { buildId }, QUICK_CALL_MS).catch(() => undefined);
      if (answer && !answer.running) return;
      if (Date.now() >= deadline) throw new BuildFailure(`The build's host ${host.id} stopped answering during the build and was neither declared LOST nor said the build had stopped within ${SETTLE_MS / 1000} s. Update the image to build again.`);
      await sleep(POLL_MS, signal);
    }
  }

  /** After a cancelled build's call ended: waits (at most STOP_WAIT_MS) until the host's agent says the build no longer runs there. */
  private async stopped(host: HostRecord, buildId: string): Promise<void> {
    const deadline = Date.now() + STOP_WAIT_MS;
    let why = "";
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        const answer = await agentCall<{ running: boolean }>(this.agent, host.address, "building", { buildId }, Math.min(QUICK_CALL_MS, left));
        if (!answer.running) return;
        why = "it still runs there";
      } catch (err) {
        why = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, Math.min(STOPPED_POLL_MS, Math.max(0, deadline - Date.now()))));
    }
    this.opts.log({ level: "warn", msg: `a cancelled build's host did not say it stopped within ${STOP_WAIT_MS / 1000} s`, buildId, hostId: host.id, err: why });
  }

  /** `POST /v1/build` to the host's agent: the job, then a file:// artifact's bytes; its answer's log lines go to the server's log. */
  private async buildOn(host: HostRecord, job: BuildJob, signal: AbortSignal, log: BuildLogWriter): Promise<SnapshotBuild> {
    const uri = job.version.config.codeArtifact.uri;
    let artifact: BuildRequest["artifact"];
    if (uri.startsWith("file://")) {
      // The file is on this host: it goes with the request (its checks' failures as fetching it on one host says them).
      artifact = await checkFileArtifact(uri, this.opts.settings.limits.maxArtifactBytes).then(
        (bytes) => ({ bytes }),
        (err: Error) => ({ failure: err instanceof BuildFailure ? err.message : `Code artifact ${uri} cannot be read: ${err.message}` }),
      );
      // Cancelled while the file was checked: the call is not made.
      if (signal.aborted) throw new BuildFailure("The build was cancelled.");
    }
    const head: BuildRequest = { job, settings: this.opts.settings, ...(artifact ? { artifact } : {}) };
    const [ip, port] = splitAddress(host.address);
    return new Promise<SnapshotBuild>((resolve, reject) => {
      let settled = false;
      let file: ReadStream | undefined;
      const settle = (err: Error | undefined, value?: SnapshotBuild) => {
        if (settled) return;
        settled = true;
        clearInterval(watch);
        clearTimeout(connecting);
        signal.removeEventListener("abort", onAbort);
        // An answer before the whole request was sent (a refusal, an error): the upload and its file end with the call.
        file?.destroy();
        if (err) req.destroy();
        if (err) reject(err);
        else resolve(value!);
      };
      let answered = false;
      const req = request({ host: ip, port, method: "POST", path: `${RPC_PREFIX}build`, agent: this.agent, headers: { "content-type": "application/octet-stream" } }, (res) => {
        answered = true;
        let buffered = "";
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          // The agent did not start the build: its error, not a lost host (which would wait for the build to end there).
          res.on("data", (chunk: string) => {
            if (buffered.length < MAX_REFUSAL) buffered += chunk;
          });
          res.on("error", (err) => settle(new Refused(`host ${host.id}'s answer (status ${res.statusCode}) broke: ${err.message}`)));
          res.on("end", () => settle(refusal(host, res.statusCode, buffered)));
          return;
        }
        res.on("data", (chunk: string) => {
          buffered += chunk;
          let nl: number;
          while ((nl = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            let msg: { log?: string; result?: SnapshotBuild; error?: WireError };
            try {
              msg = JSON.parse(line) as typeof msg;
            } catch {
              return req.destroy(new HostLost(`host ${host.id} answered the build with a line that is not JSON`));
            }
            if (typeof msg.log === "string") log.line(msg.log);
            else if (msg.result) settle(undefined, msg.result);
            else if (msg.error) settle(errorFromWire(msg.error, host.address));
          }
        });
        res.on("error", (err) => settle(new HostLost(err.message)));
        res.on("end", () => settle(new HostLost(`host ${host.id}'s answer ended before the build did`)));
      });
      const delivered = deliveredFlag(req);
      req.on("error", (err) => {
        if (err instanceof HostLost || err instanceof Unreached || err instanceof Refused || err instanceof BuildFailure) return settle(err);
        // A kept-alive connection the agent closed as idle just as the call went out on it is reset before the agent read
        // the call (Node's keep-alive race: req.reusedSocket): nothing of it reached the host, which is not lost. (Had the
        // agent read it and then gone, the build went with the connection: the agent stops a build whose call closes.)
        const code = (err as NodeJS.ErrnoException).code;
        if (req.reusedSocket && !answered && (code === "ECONNRESET" || code === "EPIPE")) return settle(new Unreached(`host ${host.id} closed an idle kept-alive connection as the call was sent on it (${err.message})`));
        settle(delivered() ? new HostLost(`the connection to host ${host.id} broke: ${err.message}`) : new Unreached(`cannot reach host ${host.id} at ${host.address}: ${err.message}`));
      });
      // A host that cannot be reached at all is the next host's turn; one that is declared LOST meanwhile (a partition: no reset comes) ends the call.
      const connecting = setTimeout(() => {
        if (!delivered()) req.destroy(new Unreached(`no connection to host ${host.id} at ${host.address} within ${QUICK_CALL_MS / 1000} s`));
      }, QUICK_CALL_MS);
      const watch = setInterval(() => {
        void this.opts.cluster.host(host.id).then((h) => {
          if (!h || h.state === "LOST") req.destroy(new HostLost(`host ${host.id} was declared LOST`));
        }, () => undefined);
      }, POLL_MS);
      // Not yet delivered: nothing of it runs there (Unreached, so the build does not wait for the host to say so).
      const onAbort = () => req.destroy(delivered() ? new BuildFailure("The build was cancelled.") : new Unreached(`the build was cancelled before its call reached host ${host.id}`));
      signal.addEventListener("abort", onAbort, { once: true });
      // Aborted before the listener was added (an abort event does not come twice): the call ends before anything is sent.
      if (signal.aborted) return onAbort();
      req.write(`${JSON.stringify(head)}\n`);
      if (artifact && "bytes" in artifact) {
        file = createReadStream(artifactPath(uri));
        // This host's own file failed: the build's failure, not its host's (said before the pipeline destroys the call with it).
        file.on("error", (err) => settle(new BuildFailure(`Code artifact ${uri} cannot be read: ${err.message}`)));
        // The call's own errors are its "error" listener's; either stream's end destroys the other.
        pipeline(file, req, () => undefined);
      } else req.end();
    });
  }

  /** Frees the version on every host that may have built it, and its copy in the object store. */
  async discard(imageArn: string, version: string): Promise<void> {
    for (const host of await this.opts.cluster.listHosts()) {
      if (host.state === "LOST") continue;
      await agentCall(this.agent, host.address, "discardBuild", { imageArn, version }, CONTROL_CALL_MS).catch((err: Error) =>
        this.opts.log({ level: "warn", msg: "a host did not free a deleted version's build (it stays on its disk)", hostId: host.id, imageArn, version, err: err.message }));
    }
    await this.opts.discardStored?.(imageArn, version);
  }

  /**
   * At the server's start no build of it runs: each host that answers clears what builds left (an agent does so at its own
   * start too). Hosts are asked at once, each first whether it answers within QUICK_CALL_MS (a black-holed host does not
   * hold the server's start for the clearing's long limit); one that does not is logged and left to clear at its own start.
   */
  async recover(): Promise<void> {
    const hosts = (await this.opts.cluster.listHosts()).filter((h) => h.state !== "LOST");
    await Promise.all(hosts.map(async (host) => {
      try {
        await agentCall(this.agent, host.address, "host", {}, QUICK_CALL_MS);
        await agentCall(this.agent, host.address, "recoverBuilds", {}, CONTROL_CALL_MS);
      } catch (err) {
        this.opts.log({ level: "warn", msg: "a host did not clear its builds (it does at its own start)", hostId: host.id, err: (err as Error).message });
      }
    }));
  }
}
