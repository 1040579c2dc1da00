// Warm pools as an operator setting: which image versions keep how many
// restored, paused clones for RunMicrovm to claim. An image's `lmvm:warm-pool`
// tag (0 to 50) sets its size, the server's --warm-pool the size of images
// without the tag (default 0); the pool is for the version RunMicrovm runs
// when it names none (the image's latest SUCCESSFUL, ACTIVE version). The
// runtime keeps the clones (SandboxPools); this tells it what is wanted, after
// every tag change and every few seconds (builds finishing, versions deleted or
// made INACTIVE, images deleted).

import { InvalidInput } from "./errors.js";
import { NO_EGRESS, type DefaultEgress, type EgressPolicy } from "./egress.js";
import type { ImageState } from "./model.js";
import type { SandboxRuntime, Store, WarmPoolTarget } from "./ports.js";

export const WARM_POOL_TAG = "lmvm:warm-pool";
export const MAX_WARM_POOL = 50;
/** How often the wanted pools are worked out again without a tag change. */
const REFRESH_MS = 2_000;

/** The pool size a tag value sets; refuses anything but a whole number from 0 to MAX_WARM_POOL. */
export function warmPoolSize(value: string): number {
  if (!/^\d{1,2}$/.test(value.trim()) || Number(value) > MAX_WARM_POOL) {
    throw new InvalidInput(`Tag '${WARM_POOL_TAG}' must be a whole number of warm clones from 0 to ${MAX_WARM_POOL}; got '${value}'.`);
  }
  return Number(value);
}

/** Refuses a bad `lmvm:warm-pool` value among tags about to be set. */
export function checkWarmPoolTags(tags: Record<string, string> | undefined): void {
  if (tags && WARM_POOL_TAG in tags) warmPoolSize(tags[WARM_POOL_TAG]!);
}

const LIVE_IMAGE_STATES: ImageState[] = ["CREATED", "UPDATING", "UPDATED", "UPDATE_FAILED"];

export interface WarmPoolsDeps {
  store: Store;
  runtime: SandboxRuntime;
  /** The size of images without the tag (lmvm server --warm-pool; default 0). */
  defaultSize: number;
  /** What a MicroVM whose RunMicrovm names no egress connector gets: the network shape clones start with. */
  defaultEgress: DefaultEgress;
  log?: (event: Record<string, unknown>) => void;
}

export class WarmPools {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly deps: WarmPoolsDeps) {}

  private get egress(): EgressPolicy {
    return this.deps.defaultEgress === "internet" ? { internet: true, rules: [], connectors: [] } : NO_EGRESS;
  }

  /** The pools wanted now, from the store. */
  async targets(): Promise<WarmPoolTarget[]> {
    const { store } = this.deps;
    const out: WarmPoolTarget[] = [];
    for (const state of LIVE_IMAGE_STATES) {
      for (const image of await store.imagesInState(state)) {
        if (!image.latestActiveImageVersion) continue;
        const tags = await store.getTags(image.arn);
        let size = this.deps.defaultSize;
        if (tags[WARM_POOL_TAG] !== undefined) {
          try {
            size = warmPoolSize(tags[WARM_POOL_TAG]);
          } catch {
            continue; // refused when tagged; a value from before validation keeps no pool
          }
        }
        if (size <= 0) continue;
        const version = await store.getVersion(image.arn, image.latestActiveImageVersion);
        if (!version || version.state !== "SUCCESSFUL" || version.status !== "ACTIVE") continue;
        out.push({ version, size, egress: this.egress });
      }
    }
    return out;
  }

  /** Tells the runtime what is wanted now; concurrent calls coalesce into one more pass. */
  refresh(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        const targets = await this.targets();
        if (this.stopped) return;
        await this.deps.runtime.warmPools(targets);
      } while (this.again && !this.stopped);
    })()
      .catch((err: Error) => this.deps.log?.({ level: "error", msg: "warm pool update failed", err: err.message }))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  start(): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
  }

  /** Stops and destroys every clone. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
    await this.deps.runtime.closeWarmPools();
  }
}
