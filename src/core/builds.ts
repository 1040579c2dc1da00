// The build queue. Builds are durable jobs: a PENDING build waits in the
// store until a builder slot is free; claiming it records IN_PROGRESS before
// the builder starts. After a crash, `recover` puts interrupted builds back in
// the queue (or fails them after MAX_ATTEMPTS) and finishes interrupted
// deletions, so nothing stays IN_PROGRESS or DELETING forever.
// `concurrency` is the host's: how many builds run at once here. How many an
// account may have queued or running is the concurrent-builds quota, which
// CreateMicrovmImage and UpdateMicrovmImage enforce (src/core/images.ts) by
// refusing, as the service does, so this queue never holds more than that.

import type { ImageService } from "./images.js";
import type { Build, ImageVersion } from "./model.js";
import { BuildFailure, type Clock, type ImageBuilder, type Store } from "./ports.js";
import { NO_EGRESS, type EgressPolicy } from "./egress.js";
import { DomainError } from "./errors.js";

export const MAX_ATTEMPTS = 3;

/**
 * How long a cancelled build may take to stop. The builder stops its phases
 * within seconds; past this the queue records the build's end and frees its
 * slot anyway, so a builder that ignores its signal cannot block the queue,
 * a deletion or a shutdown.
 */
export const STOP_WAIT_MS = 15_000;

/** Settles like `work`, or rejects once `signal` has been aborted for STOP_WAIT_MS without `work` settling. */
function abandonAfterAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      timer = setTimeout(() => reject(new BuildFailure(`The build was cancelled and did not stop within ${STOP_WAIT_MS / 1000} s; what it started is cleared at the next server start.`)), STOP_WAIT_MS);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    });
  });
}

export interface BuildSchedulerOptions {
  store: Store;
  clock: Clock;
  images: ImageService;
  builder?: ImageBuilder;
  concurrency: number;
  log?: (event: Record<string, unknown>) => void;
  /** What a version's egressNetworkConnectors grant its RUN steps, bound when its build starts (default: none). */
  egressFor?: (version: ImageVersion) => Promise<EgressPolicy>;
}

export class BuildScheduler {
  private readonly running = new Map<string, { build: Build; controller: AbortController; done: Promise<void> }>();
  private pumping: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly opts: BuildSchedulerOptions) {}

  /** Binds the version's connectors; a connector gone or not ACTIVE fails the build, naming it. */
  private async egressOf(version: ImageVersion): Promise<EgressPolicy> {
    if (!this.opts.egressFor) return NO_EGRESS;
    try {
      return await this.opts.egressFor(version);
    } catch (err) {
      if (err instanceof DomainError) throw new BuildFailure(`The image version's network connectors cannot be used: ${err.message}`);
      throw err;
    }
  }

  /** Looks for work soon; cheap to call after every change. */
  kick(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = (async () => {
      do {
        this.again = false;
        await this.finishDeletions();
        await this.startBuilds();
      } while (this.again && !this.stopped);
    })()
      .catch((err) => this.opts.log?.({ msg: "build scheduler error", err: String(err) }))
      .finally(() => {
        this.pumping = undefined;
      });
  }

  /** Settles what a previous process left half done. Call once at startup, before kick(). */
  async recover(): Promise<void> {
    const { store, images } = this.opts;
    await this.opts.builder?.recover();
    for (const build of await store.buildsInState("IN_PROGRESS")) {
      await store.transaction(async (tx) => {
        if (build.attempts >= MAX_ATTEMPTS) {
          await images.moveBuild(tx, build, "FAILED", {
            stateReason: `The build was interrupted ${build.attempts} times by a server restart; giving up. Update the image to try again.`,
          });
        } else {
          await images.moveBuild(tx, build, "PENDING", { stateReason: "Interrupted by a server restart; queued to run again." });
        }
      });
    }
  }

  /** Aborts running builds and waits for them to stop (at most STOP_WAIT_MS); interrupted builds are re-queued by the next start's recover(). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const { controller } of this.running.values()) controller.abort();
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
    await this.pumping;
  }

  private async startBuilds(): Promise<void> {
    const { builder, store, concurrency } = this.opts;
    if (!builder) return;
    while (this.running.size < concurrency && !this.stopped) {
      const claimed = await store.transaction(async (tx) => {
        for (const candidate of await tx.buildsInState("PENDING")) {
          if (this.running.has(candidate.buildId)) continue;
          const version = await tx.getVersion(candidate.imageArn, candidate.imageVersion);
          if (!version || version.state === "DELETING") continue;
          await this.opts.images.moveBuild(tx, candidate, "IN_PROGRESS", { attempts: candidate.attempts + 1, stateReason: undefined });
          return { ...candidate, state: "IN_PROGRESS" as const, attempts: candidate.attempts + 1 };
        }
        return undefined;
      });
      if (!claimed) return;
      this.launch(builder, claimed);
    }
  }

  private launch(builder: ImageBuilder, build: Build): void {
    const { store, images } = this.opts;
    const controller = new AbortController();
    const done = (async () => {
      let outcome: { to: "SUCCESSFUL" | "FAILED"; patch: Partial<Build> };
      try {
        const image = await store.getImage(build.imageArn);
        const version = await store.getVersion(build.imageArn, build.imageVersion);
        if (!image || !version) throw new BuildFailure("The image version was deleted while its build was queued.");
        const egress = await this.egressOf(version);
        const snapshotBuild = await abandonAfterAbort(builder.build({ image, version, build, egress }, controller.signal), controller.signal);
        outcome = { to: "SUCCESSFUL", patch: { snapshotBuild } };
      } catch (err) {
        if (this.stopped) return; // a restart re-queues it
        const reason = err instanceof BuildFailure ? err.message : `Internal error while building: ${String(err)}`;
        outcome = { to: "FAILED", patch: { stateReason: reason } };
      }
      await store.transaction(async (tx) => {
        const current = await tx.getBuild(build.buildId);
        if (current?.state === "IN_PROGRESS") await images.moveBuild(tx, current, outcome.to, outcome.patch);
      });
    })()
      .catch((err) => this.opts.log?.({ msg: "build bookkeeping failed", buildId: build.buildId, err: String(err) }))
      .finally(() => {
        this.running.delete(build.buildId);
        this.kick();
      });
    this.running.set(build.buildId, { build, controller, done });
  }

  /** Aborts the running builds `match` selects and waits until they have stopped. */
  private async cancel(match: (build: Build) => boolean): Promise<void> {
    const victims = [...this.running.values()].filter((r) => match(r.build));
    for (const v of victims) v.controller.abort();
    await Promise.allSettled(victims.map((v) => v.done));
  }

  /** Cancels builds of deleted versions and images, frees their files, then forgets them. */
  private async finishDeletions(): Promise<void> {
    const { store, builder } = this.opts;
    for (const doomed of await store.versionsInState("DELETING")) {
      try {
        await this.cancel((b) => b.imageArn === doomed.imageArn && b.imageVersion === doomed.version);
        await builder?.discard(doomed.imageArn, doomed.version);
        await store.deleteVersion(doomed.imageArn, doomed.version);
      } catch (err) {
        await store.updateVersion(doomed.imageArn, doomed.version, { state: "DELETE_FAILED", stateReason: `Could not free the version's files: ${String(err)}` });
      }
    }
    for (const image of await store.imagesInState("DELETING")) {
      try {
        await this.cancel((b) => b.imageArn === image.arn);
        for (const v of (await store.listVersions(image.arn, { limit: 100_000 })).items) await builder?.discard(image.arn, v.version);
        await store.deleteImage(image.arn);
      } catch (err) {
        await store.updateImage(image.arn, { state: "DELETE_FAILED", stateReason: `Could not free the image's files: ${String(err)}` });
      }
    }
  }
}
