// MicroVMs on gVisor: the SandboxRuntime the core drives. RunMicrovm restores
// the version's build-time snapshot into a new sandbox in a new network
// namespace and calls /run; suspend calls /suspend and checkpoints to the
// MicroVM's directory; resume restores that checkpoint and calls /resume;
// terminate calls /terminate and frees everything.
//
// On disk: <data-dir>/microvms/<id>/
//   sandbox.json   where the sandbox is (network index and address) and its hooks
//   checkpoint/    memory and disk while SUSPENDED
//   sandbox/       bundle and overlay filestore of the running sandbox
// and the app's stdout and stderr, unless logging is disabled, in
// <data-dir>/logs/microvms/<id>.log, kept after the MicroVM ends.

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ImageVersion, Microvm, SandboxRuntime } from "../core/index.js";
import type { NetworkNamespaces, SandboxNetwork } from "../net/index.js";
import type { LogFiles } from "../os/index.js";
import { Gvisor, type ImageConfig, type SandboxSpec } from "./gvisor.js";
import { callHook, type HookName } from "./hooks.js";
import { DEFAULT_HOOK_PORT } from "./snapshots.js";

export interface BuiltVersion {
  rootfs: string;
  config: ImageConfig;
  snapshot: string;
}

export interface MicrovmRuntimeOptions {
  gvisor: Gvisor;
  nets: NetworkNamespaces;
  dataDir: string;
  /** Where a version's build left its rootfs, image config and snapshot. */
  locate: (imageArn: string, version: string) => BuiltVersion;
  /** Where each MicroVM's app output goes (<data-dir>/logs/microvms); it outlives the MicroVM. */
  logs: LogFiles;
  /** Memory the host keeps free: RunMicrovm answers InsufficientCapacityException below it (default 1024 MiB). */
  minFreeMiB?: number;
}

/** What a running MicroVM's sandbox needs to be found and driven again. */
export interface SandboxRecord {
  networkIndex: number;
  sandboxIp: string;
  rootfs: string;
  config: ImageConfig;
  hooks: NonNullable<ImageVersion["config"]["hooks"]>;
  logging: boolean;
}

const HOOK_TIMEOUT_DEFAULT = 1;

export class MicrovmRuntime implements SandboxRuntime {
  constructor(private readonly opts: MicrovmRuntimeOptions) {}

  dir(id: string): string {
    return join(this.opts.dataDir, "microvms", id);
  }

  /** The sandbox record of a MicroVM, e.g. to reach its app through its network namespace. */
  record(id: string): SandboxRecord | undefined {
    const file = join(this.dir(id), "sandbox.json");
    return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as SandboxRecord) : undefined;
  }

  private spec(vm: Microvm, rec: SandboxRecord, network: SandboxNetwork): SandboxSpec {
    return {
      id: vm.id,
      rootfs: rec.rootfs,
      config: rec.config,
      env: {},
      hostname: vm.id,
      network,
      dir: join(this.dir(vm.id), "sandbox"),
      logFile: rec.logging ? this.opts.logs.path(vm.id) : "/dev/null",
    };
  }

  private async hook(rec: SandboxRecord, hook: HookName, body = ""): Promise<void> {
    const m = rec.hooks.microvmHooks ?? {};
    const enabled = { run: m.run, resume: m.resume, suspend: m.suspend, terminate: m.terminate }[hook as "run"];
    if (enabled !== "ENABLED") return;
    const timeout = { run: m.runTimeoutInSeconds, resume: m.resumeTimeoutInSeconds, suspend: m.suspendTimeoutInSeconds, terminate: m.terminateTimeoutInSeconds }[hook as "run"];
    await callHook(rec.sandboxIp, rec.hooks.port ?? DEFAULT_HOOK_PORT, hook, { body, timeoutSeconds: timeout ?? HOOK_TIMEOUT_DEFAULT });
  }

  private save(id: string, rec: SandboxRecord): void {
    writeFileSync(join(this.dir(id), "sandbox.json"), JSON.stringify(rec, null, 2));
  }

  async run(vm: Microvm, version: ImageVersion): Promise<void> {
    const built = this.opts.locate(vm.imageArn, vm.imageVersion);
    mkdirSync(this.dir(vm.id), { recursive: true });
    const network = await this.opts.nets.create();
    const rec: SandboxRecord = {
      networkIndex: network.index,
      sandboxIp: network.sandboxIp,
      rootfs: built.rootfs,
      config: built.config,
      hooks: version.config.hooks ?? {},
      logging: !(vm.config.logging?.disabled ?? version.config.logging?.disabled),
    };
    this.save(vm.id, rec);
    await this.opts.gvisor.restore(this.spec(vm, rec, network), built.snapshot);
    await this.hook(rec, "run", vm.config.runHookPayload ?? "");
  }

  async suspend(vm: Microvm): Promise<void> {
    const rec = this.record(vm.id);
    if (!rec) throw new Error(`MicroVM ${vm.id} has no sandbox on this host`);
    await this.hook(rec, "suspend");
    const checkpoint = join(this.dir(vm.id), "checkpoint");
    rmSync(checkpoint, { recursive: true, force: true });
    await this.opts.gvisor.checkpoint(vm.id, checkpoint);
    Gvisor.forget({ dir: join(this.dir(vm.id), "sandbox") });
    await this.opts.nets.destroy(this.opts.nets.describe(rec.networkIndex));
  }

  async resume(vm: Microvm): Promise<void> {
    const rec = this.record(vm.id);
    if (!rec) throw new Error(`MicroVM ${vm.id} has no sandbox on this host`);
    const network = await this.opts.nets.create();
    const resumed = { ...rec, networkIndex: network.index, sandboxIp: network.sandboxIp };
    this.save(vm.id, resumed);
    await this.opts.gvisor.restore(this.spec(vm, resumed, network), join(this.dir(vm.id), "checkpoint"));
    rmSync(join(this.dir(vm.id), "checkpoint"), { recursive: true, force: true });
    await this.hook(resumed, "resume");
  }

  async terminate(vm: Microvm): Promise<void> {
    const rec = this.record(vm.id);
    const suspended = existsSync(join(this.dir(vm.id), "checkpoint"));
    if (rec && !suspended) await this.hook(rec, "terminate").catch(() => undefined); // best effort: it is going anyway
    await this.opts.gvisor.destroy(vm.id);
    if (rec) await this.opts.nets.destroy(this.opts.nets.describe(rec.networkIndex));
    rmSync(this.dir(vm.id), { recursive: true, force: true });
  }

  async inspect(vm: Microvm): Promise<"running" | "suspended" | "gone"> {
    if (existsSync(join(this.dir(vm.id), "checkpoint", "checkpoint.img"))) return "suspended";
    const live = await this.opts.gvisor.list().catch(() => []);
    return live.some((s) => s.id === vm.id && s.status === "running") ? "running" : "gone";
  }

  async reap(keep: Microvm[]): Promise<void> {
    const ids = new Set(keep.map((vm) => vm.id));
    for (const s of await this.opts.gvisor.list().catch(() => [])) if (!ids.has(s.id)) await this.opts.gvisor.destroy(s.id);
    const indexes = new Set(keep.map((vm) => this.record(vm.id)?.networkIndex).filter((i): i is number => i !== undefined));
    await this.opts.nets.reap(indexes);
    const root = join(this.opts.dataDir, "microvms");
    if (existsSync(root)) for (const d of readdirSync(root)) if (!ids.has(d)) rmSync(join(root, d), { recursive: true, force: true });
  }

  /** Room for one more MicroVM: the host keeps at least `minFreeMiB` of memory available (MemAvailable). */
  async hasCapacity(): Promise<boolean> {
    const meminfo = readFileSync("/proc/meminfo", "utf8");
    const availableKiB = Number(/^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
    return availableKiB / 1024 >= (this.opts.minFreeMiB ?? 1024);
  }
}
