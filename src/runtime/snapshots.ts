// The build-time snapshot: boot the image's app once in a sandbox, wait for
// its /ready hook (or a settle time when the hook is off), checkpoint memory
// and disk, then restore the checkpoint once and require /validate to pass.
// The checkpoint is what every RunMicrovm restores.
//
// Each phase has a deadline: boot (runsc run), ready (the /ready hook, or the
// settle time), checkpoint, and validate (the restore and /validate). When one
// passes, or the request's signal aborts, the phase's runsc and hook calls are
// killed, and the sandboxes, network namespaces and sandbox disks the snapshot
// made are removed before it fails.
//
// On disk, next to the built rootfs (images/<name>/<version>/<arch>/):
//   snapshot/            the checkpoint (checkpoint.img, pages*.img)
//   snapshot-boot.log    the app's output while it booted and validated

import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { hasEgress, NO_EGRESS, UNNAMED_HOOKS_PORT, type EgressPolicy, type SandboxLimits } from "../core/index.js";
import type { EgressGateway, NetworkNamespaces, SandboxNetwork } from "../net/index.js";
import type { MetadataSubject } from "../metadata/index.js";
import { boundFile, removeTree } from "../os/index.js";
import { SandboxCgroups, untilQuiet } from "./cgroups.js";
import { Gvisor, type ImageConfig } from "./gvisor.js";
import { callHook, HookAborted, pause } from "./hooks.js";

/** When the /ready hook is DISABLED, the app gets this long to initialise before the checkpoint. */
export const SETTLE_SECONDS = 2;
/** A restored app that used at least half a core in each 500 ms window for 1.5 s, with no request, is spinning. */
const SPIN_CHECK = { windowMs: 500, share: 0.5, maxMs: 1_500 };
/** How many times a snapshot whose restored app spins is taken. */
const SNAPSHOT_ATTEMPTS = 3;

export interface SnapshotHooks {
  port?: number;
  microvmImageHooks?: { ready?: string; readyTimeoutInSeconds?: number; validate?: string; validateTimeoutInSeconds?: number };
}

export interface SnapshotRequest {
  id: string;
  rootfs: string;
  config: ImageConfig;
  env: Record<string, string>;
  hooks?: SnapshotHooks;
  limits: SandboxLimits;
  /** What the app may reach while it boots and validates: the build's egress (BuildJob.egress); default NO_EGRESS. */
  egress?: EgressPolicy;
  /** Whose credentials the app's metadata service hands out while it boots and validates: the image's build role, for the image's ARN, the build id as the session name. */
  metadata?: MetadataSubject;
  /** The build's directory; the snapshot goes in <dir>/snapshot. */
  dir: string;
  log: (line: string) => void;
  /** Aborting it stops the snapshot at once: what it started is stopped and removed, and it rejects with SnapshotCancelled. */
  signal: AbortSignal;
}

export type SnapshotPhase = "boot" | "ready" | "checkpoint" | "validate";

/**
 * Seconds each phase may take, beyond the image's own hook timeout for ready
 * and validate. A 300 MB Node app checkpoints in about 0.5 s and restores in
 * about 0.5 s on an idle host; these leave room for a loaded one and a large
 * memory image.
 */
export const SNAPSHOT_PHASE_SECONDS: Record<SnapshotPhase, number> = { boot: 60, ready: 15, checkpoint: 120, validate: 120 };

export interface SnapshotSizes {
  memorySnapshotSizeInBytes: number;
  diskSnapshotSizeInBytes: number;
}

/** Bytes of a checkpoint's memory image. */
export function memoryImageSize(checkpoint: string): number {
  return existsSync(checkpoint) ? sizeOf(checkpoint, (f) => f.startsWith("pages")) : 0;
}

export class SnapshotFailure extends Error {}

/** The request's signal aborted the snapshot. */
export class SnapshotCancelled extends Error {
  constructor() {
    super("The snapshot was cancelled.");
  }
}

/** How long a phase that was told to stop may take to stop before the snapshot cleans up regardless. */
const STOP_GRACE_MS = 5_000;

const WHAT: Record<SnapshotPhase, string> = {
  boot: "starting the app's sandbox with runsc run",
  ready: "waiting for the app to be ready",
  checkpoint: "saving memory and disk with runsc checkpoint",
  validate: "restoring the snapshot with runsc restore and calling /validate",
};

/**
 * Runs `work` under its own signal, aborted when `seconds` pass or `outer`
 * aborts. Rejects at once then, after giving `work` STOP_GRACE_MS to end what
 * it started (every runsc and hook call under the signal is killed).
 */
async function runPhase<T>(phase: SnapshotPhase, seconds: number, outer: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new SnapshotFailure(`The ${phase} phase did not finish within ${seconds} s (${WHAT[phase]}).`)), seconds * 1000);
  const cancel = () => ctl.abort(new SnapshotCancelled());
  if (outer?.aborted) cancel();
  outer?.addEventListener("abort", cancel, { once: true });
  const task = ctl.signal.aborted ? Promise.reject(ctl.signal.reason) : work(ctl.signal);
  try {
    return await Promise.race([
      task,
      new Promise<never>((_, reject) => {
        const stop = () => {
          const grace = setTimeout(() => reject(ctl.signal.reason), STOP_GRACE_MS);
          task.catch(() => undefined).finally(() => (clearTimeout(grace), reject(ctl.signal.reason)));
        };
        if (ctl.signal.aborted) stop();
        else ctl.signal.addEventListener("abort", stop, { once: true });
      }),
    ]).catch((err: unknown) => {
      // Whatever a killed command reported, the reason is the deadline or the cancellation.
      throw ctl.signal.aborted ? ctl.signal.reason : err;
    });
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener("abort", cancel);
  }
}

function sizeOf(dir: string, match: (name: string) => boolean): number {
  return readdirSync(dir).filter(match).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

export class Snapshotter {
  private readonly deadlines: Record<SnapshotPhase, number>;
  private readonly cgroups = new SandboxCgroups();

  constructor(
    private readonly gvisor: Gvisor,
    private readonly nets: NetworkNamespaces,
    private readonly workDir: string,
    /** Seconds per phase; SNAPSHOT_PHASE_SECONDS for those not given. */
    deadlines: Partial<Record<SnapshotPhase, number>> = {},
    /** Enforces the request's egress and limits on each sandbox's namespace; without it, a request with egress is refused (the host firewall lets a sandbox without a chain reach nothing). */
    private readonly gateway?: EgressGateway,
  ) {
    this.deadlines = { ...SNAPSHOT_PHASE_SECONDS, ...deadlines };
  }

  /** Removes the sandboxes of snapshots a killed server left behind; call before any build runs. */
  async recover(): Promise<void> {
    for (const s of await this.gvisor.list().catch(() => [])) await this.gvisor.destroy(s.id);
    removeTree(this.workDir);
  }

  /**
   * Boots the app, waits for /ready, checkpoints it and restores the snapshot
   * once to validate it. A snapshot whose restored app keeps a core busy with
   * no request (spinning(): runsc 20240729 can leave a socket the app had closed
   * in its epoll set, and every MicroVM of the image would then spin) is taken
   * again, up to SNAPSHOT_ATTEMPTS times; the last one is kept with a warning
   * in the build log (an app may be busy after a restore on purpose).
   */
  async snapshot(req: SnapshotRequest): Promise<SnapshotSizes> {
    for (let attempt = 1; ; attempt++) {
      const { sizes, busy } = await this.attempt(req);
      if (!busy) return sizes;
      if (attempt >= SNAPSHOT_ATTEMPTS) {
        req.log(`Warning: the restored app still kept a CPU core busy with no request after ${SNAPSHOT_ATTEMPTS} snapshots; keeping the last one. Every MicroVM of this version will use that CPU while idle: check what the app does after a restore.`);
        return sizes;
      }
      req.log(`The restored app kept a CPU core busy with no request (runsc can keep a socket the app had closed at the checkpoint in its epoll set, and the app then spins in every MicroVM): taking the snapshot again (attempt ${attempt + 1} of ${SNAPSHOT_ATTEMPTS})`);
    }
  }

  /** Whether the sandbox used at least half a core in every window of SPIN_CHECK, with no request: a spinning app. */
  private async spinning(id: string, signal: AbortSignal): Promise<boolean> {
    return (await untilQuiet(() => this.cgroups.cpuUsageMicros(id), { ...SPIN_CHECK, stop: () => signal.aborted })) >= SPIN_CHECK.maxMs && !signal.aborted;
  }

  private async attempt(req: SnapshotRequest): Promise<{ sizes: SnapshotSizes; busy: boolean }> {
    // The image must give a port when it enables any hook (inputs.ts); without one, no relay is needed.
    const port = req.hooks?.port ?? UNNAMED_HOOKS_PORT;
    const image = req.hooks?.microvmImageHooks ?? {};
    const snapshot = join(req.dir, "snapshot");
    rmSync(snapshot, { recursive: true, force: true });
    // The app writes this file directly (through runsc); it is kept bounded while the app runs.
    const bootLog = join(req.dir, "snapshot-boot.log");
    const sandbox = (suffix: string, network: SandboxNetwork) => ({
      id: `${req.id}-${suffix}`,
      rootfs: req.rootfs,
      config: req.config,
      env: req.env,
      hooksPort: port,
      hostname: "localhost",
      network,
      dir: join(this.workDir, `${req.id}-${suffix}`),
      logFile: bootLog,
      limits: req.limits,
    });
    const egress = req.egress ?? NO_EGRESS;
    if (hasEgress(egress) && !this.gateway) throw new SnapshotFailure("This snapshotter cannot give the app network egress (it has no egress gateway).");
    const networks: SandboxNetwork[] = [];
    const attach = async (net: SandboxNetwork) => {
      if (this.gateway) await this.gateway.attach(net, egress, req.limits, req.metadata);
    };
    const specs: { id: string; dir: string }[] = [];
    const phase = <T>(name: SnapshotPhase, hookSeconds: number, work: (signal: AbortSignal) => Promise<T>) => runPhase(name, this.deadlines[name] + hookSeconds, req.signal, work);
    const hookFailed = (hook: string) => (err: Error) => {
      throw err instanceof HookAborted ? err : new SnapshotFailure(`The /${hook} hook failed: ${err.message}.${hook === "ready" ? " See the app's output in the build log." : ""}`);
    };
    const bounding = setInterval(() => boundFile(bootLog), 1000);
    try {
      const bootNet = await phase("boot", 0, async (signal) => {
        const net = await this.nets.create();
        networks.push(net);
        await attach(net);
        const boot = sandbox("boot", net);
        specs.push(boot);
        req.log(`Booting the app in a sandbox (${net.sandboxIp})`);
        await this.gvisor.run(boot, signal);
        return net;
      });
      const bootId = specs[0]!.id;
      if (image.ready === "ENABLED") {
        const timeout = image.readyTimeoutInSeconds ?? 30;
        req.log(`Waiting for /ready on port ${port} (up to ${timeout} s)`);
        await phase("ready", timeout, (signal) => callHook(bootNet.sandboxIp, port, "ready", { timeoutSeconds: timeout, poll: true, signal }).catch(hookFailed("ready")));
      } else {
        req.log(`The /ready hook is disabled: giving the app ${SETTLE_SECONDS} s to initialise`);
        await phase("ready", SETTLE_SECONDS, (signal) => pause(SETTLE_SECONDS * 1000, signal));
      }
      req.log("Checkpointing memory and disk");
      await phase("checkpoint", 0, (signal) =>
        this.gvisor.checkpoint(bootId, snapshot, { sandboxIp: bootNet.sandboxIp, signal }).catch((err: Error) => {
          throw signal.aborted ? err : new SnapshotFailure(`Checkpointing the app failed: ${err.message}`);
        }),
      );

      const validateSeconds = image.validate === "ENABLED" ? image.validateTimeoutInSeconds ?? 30 : 0;
      const busy = await phase("validate", validateSeconds, async (signal) => {
        const net = await this.nets.create();
        networks.push(net);
        await attach(net);
        const check = sandbox("validate", net);
        specs.push(check);
        req.log("Restoring the snapshot once to validate it");
        await this.gvisor.restore(check, snapshot, signal).catch((err: Error) => {
          throw signal.aborted ? err : new SnapshotFailure(`Restoring the snapshot failed: ${err.message}`);
        });
        if (image.validate === "ENABLED") {
          req.log(`Calling /validate on port ${port} (up to ${validateSeconds} s)`);
          await callHook(net.sandboxIp, port, "validate", { timeoutSeconds: validateSeconds, poll: true, signal }).catch(hookFailed("validate"));
        }
        return this.spinning(check.id, signal);
      });
      return {
        sizes: { memorySnapshotSizeInBytes: memoryImageSize(snapshot), diskSnapshotSizeInBytes: sizeOf(snapshot, (f) => f === "checkpoint.img") },
        busy,
      };
    } catch (err) {
      rmSync(snapshot, { recursive: true, force: true });
      throw err;
    } finally {
      clearInterval(bounding);
      for (const s of specs) {
        await this.gvisor.destroy(s.id);
        Gvisor.forget(s);
      }
      for (const n of networks) {
        await this.gateway?.detach(n);
        await this.nets.destroy(n);
      }
    }
  }
}
