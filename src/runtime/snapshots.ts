// The build-time snapshot: boot the image's app once in a sandbox, wait for
// its /ready hook (or a settle time when the hook is off), checkpoint memory
// and disk, then restore the checkpoint once and require /validate to pass.
// The checkpoint is what every RunMicrovm restores.
//
// On disk, next to the built rootfs (images/<name>/<version>/<arch>/):
//   snapshot/            the checkpoint (checkpoint.img, pages*.img)
//   snapshot-boot.log    the app's output while it booted and validated

import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { SandboxLimits } from "../core/index.js";
import type { NetworkNamespaces, SandboxNetwork } from "../net/index.js";
import { boundFile, removeTree } from "../os/index.js";
import { Gvisor, type ImageConfig } from "./gvisor.js";
import { callHook } from "./hooks.js";

/** When the /ready hook is DISABLED, the app gets this long to initialise before the checkpoint. */
export const SETTLE_SECONDS = 2;
/** The hooks port when the image does not say (the app's default port). */
export const DEFAULT_HOOK_PORT = 8080;

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
  /** The build's directory; the snapshot goes in <dir>/snapshot. */
  dir: string;
  log: (line: string) => void;
}

export interface SnapshotSizes {
  memorySnapshotSizeInBytes: number;
  diskSnapshotSizeInBytes: number;
}

/** Bytes of a checkpoint's memory image. */
export function memoryImageSize(checkpoint: string): number {
  return existsSync(checkpoint) ? sizeOf(checkpoint, (f) => f.startsWith("pages")) : 0;
}

export class SnapshotFailure extends Error {}

function sizeOf(dir: string, match: (name: string) => boolean): number {
  return readdirSync(dir).filter(match).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

export class Snapshotter {
  constructor(
    private readonly gvisor: Gvisor,
    private readonly nets: NetworkNamespaces,
    private readonly workDir: string,
  ) {}

  /** Removes the sandboxes of snapshots a killed server left behind; call before any build runs. */
  async recover(): Promise<void> {
    for (const s of await this.gvisor.list().catch(() => [])) await this.gvisor.destroy(s.id);
    removeTree(this.workDir);
  }

  async snapshot(req: SnapshotRequest): Promise<SnapshotSizes> {
    const port = req.hooks?.port ?? DEFAULT_HOOK_PORT;
    const image = req.hooks?.microvmImageHooks ?? {};
    const snapshot = join(req.dir, "snapshot");
    rmSync(snapshot, { recursive: true, force: true });
    // The app writes this file directly (through runsc); it is kept bounded while the app runs.
    const bootLog = join(req.dir, "snapshot-boot.log");
    const sandbox = async (suffix: string, network: SandboxNetwork) => ({
      id: `${req.id}-${suffix}`,
      rootfs: req.rootfs,
      config: req.config,
      env: req.env,
      hostname: "localhost",
      network,
      dir: join(this.workDir, `${req.id}-${suffix}`),
      logFile: bootLog,
      limits: req.limits,
    });
    const networks: SandboxNetwork[] = [];
    const specs: { id: string; dir: string }[] = [];
    const bounding = setInterval(() => boundFile(bootLog), 1000);
    try {
      const bootNet = await this.nets.create();
      networks.push(bootNet);
      const boot = await sandbox("boot", bootNet);
      specs.push(boot);
      req.log(`Booting the app in a sandbox (${bootNet.sandboxIp})`);
      await this.gvisor.run(boot);
      if (image.ready === "ENABLED") {
        const timeout = image.readyTimeoutInSeconds ?? 30;
        req.log(`Waiting for /ready on port ${port} (up to ${timeout} s)`);
        await callHook(bootNet.sandboxIp, port, "ready", { timeoutSeconds: timeout, poll: true }).catch((err: Error) => {
          throw new SnapshotFailure(`The /ready hook failed: ${err.message}. See the app's output in the build log.`);
        });
      } else {
        req.log(`The /ready hook is disabled: giving the app ${SETTLE_SECONDS} s to initialise`);
        await new Promise((r) => setTimeout(r, SETTLE_SECONDS * 1000));
      }
      req.log("Checkpointing memory and disk");
      await this.gvisor.checkpoint(boot.id, snapshot, { sandboxIp: bootNet.sandboxIp }).catch((err: Error) => {
        throw new SnapshotFailure(`Checkpointing the app failed: ${err.message}`);
      });

      const validateNet = await this.nets.create();
      networks.push(validateNet);
      const check = await sandbox("validate", validateNet);
      specs.push(check);
      req.log("Restoring the snapshot once to validate it");
      await this.gvisor.restore(check, snapshot).catch((err: Error) => {
        throw new SnapshotFailure(`Restoring the snapshot failed: ${err.message}`);
      });
      if (image.validate === "ENABLED") {
        const timeout = image.validateTimeoutInSeconds ?? 30;
        req.log(`Calling /validate on port ${port} (up to ${timeout} s)`);
        await callHook(validateNet.sandboxIp, port, "validate", { timeoutSeconds: timeout, poll: true }).catch((err: Error) => {
          throw new SnapshotFailure(`The /validate hook failed: ${err.message}`);
        });
      }
      return {
        memorySnapshotSizeInBytes: memoryImageSize(snapshot),
        diskSnapshotSizeInBytes: sizeOf(snapshot, (f) => f === "checkpoint.img"),
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
      for (const n of networks) await this.nets.destroy(n);
    }
  }
}
