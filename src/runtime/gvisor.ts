// Sandboxes on gVisor (runsc): run an image's root filesystem, checkpoint
// memory and disk, restore a checkpoint into a new sandbox (as often as
// wanted), exec into one, destroy it. Facts this relies on, measured on these
// hosts (docs/design.md, "Facts about gVisor"):
// - runsc refuses to start "with network enabled in root network namespace"
//   after reading /proc/sys/net; runsc therefore runs in a private mount
//   namespace with a tmpfs over /proc/sys/net, and joins the sandbox's own
//   network namespace through the OCI spec.
// - Sub-commands find a sandbox through an abstract unix socket, which is
//   network-namespace scoped: they run in the host's namespace, like `run`.
// - Writes go to a gVisor overlay whose filestore lives in the sandbox's own
//   directory (--overlay2=root:dir=…), so one image rootfs serves every clone
//   untouched. That directory can be a size-limited filesystem of the
//   sandbox's own: a full one gives the app ENOSPC and the sandbox lives on.
//   Checkpoints are uncompressed: restoring them is about 3x faster. They leave
//   out committed pages that hold only zeros (--exclude-committed-zero-pages):
//   a restore maps those as fresh zero pages, so the image is smaller and
//   writing and reading it cost less.
// - After a checkpoint, `runsc list` still says running: the sandbox is deleted.
// - A restore gets a new address; runsc 20240729 cannot restore a UDP socket
//   on the old one (it panics, and the restore fails with "EOF"), so the
//   checkpoint refuses such sockets, naming them.
// - The app's capabilities are the OCI spec's process.capabilities; without
//   any there, it has none. A restore keeps the capabilities the checkpointed
//   processes had, whatever the new spec says; a `runsc exec` process gets the
//   spec's (the restore's), so a restore's spec names the build's set.
// - runsc drops CAP_NET_RAW from every process unless --net-raw; with it, raw
//   sockets work in the sandbox's own network stack (ping), and the host's
//   firewall drops what a sandbox sends from an address not its own.
// - The guest's MemTotal is the spec's memory limit, at run and at restore.
//   Its CPU count (--cpu-num-from-quota) is the CPU quota rounded up, but at
//   least 2 and at most the host's cores.
// - `df /` inside shows no size (gVisor's overlay reports 2^53 blocks); the
//   disk's size shows as ENOSPC once it is full.
// - Every sandbox's /etc/resolv.conf is a read-only bind mount of one file
//   naming DNS_RESOLVER_ADDRESS, the same for every clone of a snapshot (the
//   mount is part of the checkpoint; the file's contents are read from the
//   host at each access).
// - Every runsc call can be cut short with an AbortSignal; `delete` and `list`
//   have deadlines of their own, as clean-up must end too.

import { spawn } from "node:child_process";
import { lstatSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_CAPABILITIES, DNS_RESOLVER_ADDRESS, type SandboxLimits } from "../core/index.js";
import type { SandboxNetwork } from "../net/index.js";
import { SandboxCgroups } from "./cgroups.js";
import { CAP_SYS_ADMIN, controlCall, controlExec, pausedSandbox, recordRunning, runningSandbox } from "./control-socket.js";
import { GUEST_PATH, guestInitMount, underGuestInit } from "./guest-init/guest-init.js";
import { diskUsage, exec, mountScratchDisk, mountsUnder, processAlive, removeTree, run, writeFileAtomic, type ExecResult } from "../os/index.js";

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
}

export interface SandboxSpec {
  /** runsc container id; also names the sandbox's directory. */
  id: string;
  /** The image's root filesystem, shared read-only by every sandbox of the image. */
  rootfs: string;
  config: ImageConfig;
  env: Record<string, string>;
  /** The app's hooks port, where lmvm-init relays HOOK_RELAY_PORT; none (0): no relay. */
  hooksPort?: number;
  hostname: string;
  network: SandboxNetwork;
  /** Where this sandbox keeps its bundle and overlay filestore. */
  dir: string;
  /** Receives the app's stdout and stderr; /dev/null when logging is off. */
  logFile: string;
  /**
   * Peak memory and vCPUs enforced through the sandbox's cgroups (a restore
   * needs at least the checkpoint's memory), its disk and its capabilities;
   * without them, no cgroup limits, the server's disk and the standard capabilities.
   */
  limits?: SandboxLimits;
  /**
   * A formatted scratch disk of `sizeMiB` made ahead of time (src/runtime/prepared.ts),
   * moved into the sandbox's directory instead of making one; undefined: none ready.
   */
  preparedDisk?: (sizeMiB: number) => string | undefined;
  /**
   * Made ahead of a claim (a warm-pool clone): its CPU cgroup gets the lowest
   * share, so that its restore takes only CPU that running sandboxes leave
   * (a claimed clone's unpause and /run among them), until
   * SandboxCgroups.foreground gives it a MicroVM's share at its claim.
   */
  background?: boolean;
}

/** The sandbox's directory, bundle or disk could not be made: runsc never started. */
/**
 * Why runsc failed, from its log: the last lines it wrote, and when the sandbox
 * panicked, the panic's own line first (a Go panic ends in a stack trace, whose
 * last lines name only the goroutine that reported it).
 */
function runscFailure(diag: string): string {
  if (!existsSync(diag)) return "";
  const lines = readFileSync(diag, "utf8").trim().split("\n");
  const last = lines.filter((l) => !/^\s/.test(l)).slice(-3);
  const panic = [...lines].reverse().find((l) => /^(panic|fatal error): /.test(l) || /\bpanic: /.test(l));
  return [...(panic && !last.includes(panic) ? [panic.trim().slice(0, 500)] : []), ...last].join(" | ");
}

export class SandboxSetupError extends Error {}

/** A runsc command was cut short by its caller's AbortSignal. */
export class SandboxAborted extends Error {}

/** How long `runsc delete` and `runsc list` may take before the sandbox's process is killed instead. */
const DELETE_TIMEOUT_MS = 30_000;
/** How long a quick control call (events, exec of a small tool, kill) may take: a wedged sandbox must not stall its caller. */
const CONTROL_TIMEOUT_MS = 10_000;

/** The gVisor platforms lmvm runs sandboxes on (runsc --platform); see docs/design.md, "gVisor platform". */
export const SANDBOX_PLATFORMS = ["systrap", "ptrace"] as const;
export type SandboxPlatform = (typeof SANDBOX_PLATFORMS)[number];
export const DEFAULT_SANDBOX_PLATFORM: SandboxPlatform = "systrap";

/**
 * What a checkpoint was made with, kept beside it (lmvm-platform.json): gVisor
 * restores a checkpoint only on the platform that made it. A checkpoint
 * without the file was made before lmvm recorded it, when systrap was the only
 * platform lmvm used.
 */
export interface CheckpointStamp {
  platform: string;
  /** `runsc --version`'s first line, for the operator's diagnosis (checkpoints are not promised to survive a runsc upgrade either). */
  runsc: string;
}
const STAMP_FILE = "lmvm-platform.json";

/** The checkpoint was made on another gVisor platform than this server runs sandboxes on: runsc cannot restore it. */
export class PlatformMismatch extends Error {
  constructor(
    readonly made: string,
    readonly current: string,
    what: string,
    /** Why the platform that made it is not known (an unreadable stamp). */
    unreadable?: string,
  ) {
    super(unreadable
      ? `${what} cannot be restored safely: ${unreadable}`
      : `${what} was made on the gVisor platform ${made}, and this server runs sandboxes on ${current}; gVisor restores a checkpoint only on the platform that made it`);
  }
}

let runscVersionText: Promise<string> | undefined;
/** `runsc --version`'s first line ("runsc version 0.0~20240729.0"), or "unknown"; asked once, without blocking. */
export function runscVersion(): Promise<string> {
  runscVersionText ??= exec("runsc", ["--version"], { signal: AbortSignal.timeout(10_000) }).then(
    (r) => (r.code === 0 && r.stdout.split("\n")[0]!.trim()) || "unknown",
    () => "unknown",
  );
  return runscVersionText;
}

export interface GvisorOptions {
  /** runsc --root: where runsc keeps sandbox state. */
  stateRoot: string;
  /** runsc --platform for every sandbox (DEFAULT_SANDBOX_PLATFORM when not given); checkpoints are stamped with it. */
  platform?: SandboxPlatform;
  /**
   * Caps what each sandbox can write (its overlay filestore) at this many MiB,
   * on a loop-mounted filesystem of its own: the operator's cap
   * (--microvm-disk-mib). A sandbox whose limits give a disk gets the smaller
   * of the two; without either, writes are bounded only by the host's disk.
   */
  diskMiB?: number;
}

export function userOf(rootfs: string, user: string | undefined): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const [name, group] = user.split(":");
  const lookup = (file: string, key: string, field: number): number | undefined => {
    if (/^\d+$/.test(key)) return Number(key);
    try {
      const line = readFileSync(join(rootfs, "etc", file), "utf8").split("\n").find((l) => l.split(":")[0] === key);
      return line ? Number(line.split(":")[field]) : undefined;
    } catch {
      return undefined;
    }
  };
  const uid = lookup("passwd", name!, 2);
  if (uid === undefined) throw new Error(`the image's USER '${user}' is not in its /etc/passwd`);
  const gid = group ? lookup("group", group, 2) : lookup("passwd", name!, 3);
  return { uid, gid: gid ?? uid };
}

function lexists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

const CPU_PERIOD_US = 100_000;
/** cpu.shares of a sandbox made ahead of a claim (SandboxSpec.background): the kernel's least. */
const BACKGROUND_CPU_SHARES = 2;

/** The sandbox's cgroup limits: the size's peak, what the app may burst to. */
function resourcesOf(limits: SandboxLimits, background = false) {
  const bytes = limits.peakMemoryMiB * 1024 * 1024;
  return {
    memory: { limit: bytes, swap: bytes }, // swap equal to the limit: no swapping past it
    // shares 2: the kernel's least (runsc gives cgroup v2 the matching cpu.weight); without, the default 1024.
    cpu: { quota: Math.round(limits.peakVcpus * CPU_PERIOD_US), period: CPU_PERIOD_US, ...(background ? { shares: BACKGROUND_CPU_SHARES } : {}) },
  };
}

/**
 * The OCI process capabilities of a sandbox's app (and of a `runsc exec`
 * process, which takes the spec's). As in Docker, none are ambient: root
 * keeps the set across execve, an image's non-root USER drops them at its
 * first execve.
 */
export function capabilitiesOf(limits: SandboxLimits | undefined) {
  const caps = [...(limits?.capabilities ?? DEFAULT_CAPABILITIES)];
  return { bounding: caps, effective: caps, permitted: caps, inheritable: caps };
}

/** `local -> remote` of each UDP socket in /proc/net/udp{,6} text whose local address is neither unspecified nor loopback. */
export function udpOnOwnAddress(procNetUdp: string): string[] {
  const ip = (hex: string): string => {
    if (hex.length === 8) return [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(".");
    if (/^0{16}FFFF0{4}/i.test(hex)) return ip(hex.slice(24)); // IPv4-mapped
    return `[${hex.match(/.{8}/g)!.join(":")}]`;
  };
  const ownAddress = (hex: string) => !/^0+$/.test(hex) && !/^0{24}01000000$/.test(hex) && !ip(hex).startsWith("127.");
  const held: string[] = [];
  for (const line of procNetUdp.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (!/^\d+:$/.test(f[0] ?? "") || !f[1] || !f[2]) continue;
    const [local, localPort] = f[1].split(":") as [string, string];
    const [remote, remotePort] = f[2].split(":") as [string, string];
    if (!ownAddress(local)) continue;
    held.push(`${ip(local)}:${parseInt(localPort, 16)} -> ${/^0+$/.test(remote) ? "unconnected" : `${ip(remote)}:${parseInt(remotePort, 16)}`}`);
  }
  return held;
}

/** The bits of `lmvm-init --sockets`' exit status (src/runtime/guest-init/init.c). */
const TCP_NOT_LISTENING = 1;
const UDP_ON_OWN_ADDRESS = 2;

export class Gvisor {
  private readonly global: string[];
  /** runsc --platform of every sandbox this runtime starts. */
  readonly platform: SandboxPlatform;
  /** Sandboxes being removed after their checkpoint. */
  private readonly removals = new Map<string, Promise<void>>();
  private readonly cgroups = new SandboxCgroups();
  /** The file every sandbox sees, read-only, as /etc/resolv.conf. */
  private readonly resolvConf: string;

  constructor(private readonly opts: GvisorOptions) {
    mkdirSync(opts.stateRoot, { recursive: true });
    // --net-disconnect-ok: a checkpoint resets connections still open or closing (a
    // TIME_WAIT left by an app that closed first, say) instead of refusing to save.
    // --net-raw: CAP_NET_RAW stays in the capabilities it is given in (the standard set has it, like Docker's).
    this.resolvConf = join(opts.stateRoot, "resolv.conf");
    writeFileSync(this.resolvConf, `# lmvm: the sandbox's DNS resolver (forwarded by the host; see docs/design.md)\nnameserver ${DNS_RESOLVER_ADDRESS}\n`, { mode: 0o444 });
    this.platform = opts.platform ?? DEFAULT_SANDBOX_PLATFORM;
    this.global = ["--root", opts.stateRoot, "--platform", this.platform, "--cpu-num-from-quota", "--net-disconnect-ok", "--net-raw"];
  }

  /**
   * What the checkpoint in `imageDir` was made with (a checkpoint from before stamps, which has
   * none: systrap). A stamp that cannot be read fails, naming the file: guessing could hand runsc a
   * checkpoint of another platform, whose restore hangs rather than failing.
   */
  static stampOf(imageDir: string): CheckpointStamp {
    const file = join(imageDir, STAMP_FILE);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { platform: "systrap", runsc: "unknown" };
      throw new Error(`The checkpoint's platform file ${file} cannot be read: ${(err as Error).message}`);
    }
    let s: Partial<CheckpointStamp>;
    try {
      s = JSON.parse(text) as Partial<CheckpointStamp>;
    } catch (err) {
      throw new Error(`The checkpoint's platform file ${file} is not JSON (${(err as Error).message}); it should say {"platform": "systrap" or "ptrace", "runsc": ...}`);
    }
    if (typeof s.platform !== "string") throw new Error(`The checkpoint's platform file ${file} names no platform; it should say {"platform": "systrap" or "ptrace", "runsc": ...}`);
    return { platform: s.platform, runsc: typeof s.runsc === "string" ? s.runsc : "unknown" };
  }

  /** Why this runtime cannot restore the checkpoint in `imageDir` (`what` names it), or undefined when it can. */
  mismatch(imageDir: string, what: string): PlatformMismatch | undefined {
    let made: string;
    try {
      made = Gvisor.stampOf(imageDir).platform;
    } catch (err) {
      return new PlatformMismatch("unknown", this.platform, what, (err as Error).message);
    }
    return made === this.platform ? undefined : new PlatformMismatch(made, this.platform, what);
  }

  /** What a sandbox of `limits` may write, in MiB: its size's disk, within the operator's cap; undefined when only the host's disk bounds it. */
  diskMiB(limits: SandboxLimits | undefined): number | undefined {
    const sizes = [limits?.diskMiB, this.opts.diskMiB].filter((n): n is number => n !== undefined);
    return sizes.length ? Math.min(...sizes) : undefined;
  }

  private async writeBundle(spec: SandboxSpec): Promise<string> {
    try {
      return await this.makeBundle(spec);
    } catch (err) {
      Gvisor.forget(spec);
      throw new SandboxSetupError(`Preparing the sandbox in ${spec.dir} failed: ${(err as Error).message}`);
    }
  }

  private async makeBundle(spec: SandboxSpec): Promise<string> {
    const bundle = join(spec.dir, "bundle");
    mkdirSync(bundle, { recursive: true });
    const overlay = join(spec.dir, "overlay");
    removeTree(overlay);
    const diskMiB = this.diskMiB(spec.limits);
    if (diskMiB) await mountScratchDisk(join(spec.dir, "disk.img"), overlay, diskMiB, spec.preparedDisk?.(diskMiB));
    else mkdirSync(overlay, { recursive: true });
    const args = [...(spec.config.Entrypoint ?? []), ...(spec.config.Cmd ?? [])];
    if (!args.length) throw new Error("the image has neither ENTRYPOINT nor CMD: nothing to run");
    // One entry per name, the later source winning: with a name twice, which one a program reads depends on its libc.
    const vars = new Map<string, string>();
    for (const e of spec.config.Env ?? []) if (e.indexOf("=") > 0) vars.set(e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1));
    for (const [k, v] of Object.entries(spec.env)) vars.set(k, v);
    const env = [...vars].map(([k, v]) => `${k}=${v}`);
    const oci = {
      ociVersion: "1.0.2",
      process: { terminal: false, user: userOf(spec.rootfs, spec.config.User), args: underGuestInit(args, spec.hooksPort ?? 0), env, cwd: spec.config.WorkingDir || "/", capabilities: capabilitiesOf(spec.limits) },
      root: { path: spec.rootfs, readonly: false },
      hostname: spec.hostname,
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/dev", type: "tmpfs", source: "tmpfs" },
        { destination: "/sys", type: "sysfs", source: "sysfs", options: ["ro"] },
        guestInitMount(),
        { destination: "/etc/resolv.conf", type: "bind", source: this.resolvConf, options: ["rbind", "ro"] },
      ],
      linux: {
        namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network", path: spec.network.path }],
        ...(spec.limits ? { resources: resourcesOf(spec.limits, spec.background) } : {}),
      },
    };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(oci, null, 2));
    return bundle;
  }

  /**
   * Starts runsc detached, its sandbox writing the app's output to the log file.
   * An abort kills runsc's process group; what it had started is left for
   * `destroy`, which the caller owes the sandbox either way.
   */
  private detached(spec: SandboxSpec, subcommand: string[], signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new SandboxAborted(`runsc ${subcommand[0]} was cancelled`));
    const log = openSync(spec.logFile, "a");
    const diag = join(spec.dir, "runsc.log");
    const runsc = ["runsc", ...this.global, `--overlay2=root:dir=${join(spec.dir, "overlay")}`, ...subcommand].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
    return new Promise((resolve, reject) => {
      const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", `mount -t tmpfs none /proc/sys/net && exec ${runsc} 2>>'${diag}'`], { stdio: ["ignore", log, log], detached: true });
      closeSync(log);
      const kill = () => {
        try {
          if (child.pid) process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
        reject(new SandboxAborted(`runsc ${subcommand[0]} was cancelled`));
      };
      signal?.addEventListener("abort", kill, { once: true });
      child.once("error", reject);
      child.once("exit", (code) => {
        signal?.removeEventListener("abort", kill);
        if (code === 0) return resolve();
        reject(new Error(`runsc ${subcommand[0]} failed (exit ${code}): ${runscFailure(diag)}`));
      });
    });
  }

  /** Boots the image's entrypoint in a new sandbox; runsc starts once `after` (set-up done meanwhile) has resolved. */
  async run(spec: SandboxSpec, signal?: AbortSignal, after?: Promise<unknown>): Promise<void> {
    const bundle = await this.writeBundle(spec);
    await after;
    await this.detached(spec, ["run", "--bundle", bundle, "--detach", spec.id], signal);
  }

  /**
   * Saves the sandbox's memory and disk to `imageDir`, then removes the sandbox.
   * Without --net-disconnect-ok, gVisor refuses while any TCP endpoint in the
   * sandbox is connected or still closing ("endpoint cannot be saved in
   * connected state"), and the refusal usually takes the sandbox down; with it,
   * such connections are reset by the save. Either way, first give connections
   * being closed (up to half of `patienceMs`) the time to end cleanly:
   * host-side sockets to `sandboxIp` all in TIME-WAIT (the host closed first and
   * sent its last ACK), and inside, /proc/net/tcp listing only listeners.
   * gVisor's /proc/net/tcp omits endpoints whose file descriptor the app has
   * closed, so the host's view is the one that sees connections still closing.
   * Those still open then are reset from the host (see settleConnections).
   * Then UDP sockets on the sandbox's own address get the other half to close,
   * or the checkpoint is refused (see refuseUnrestorableSockets). Every wait
   * ends by its deadline, and `signal` kills whatever runsc call is under way.
   */
  async checkpoint(id: string, imageDir: string, opts: { sandboxIp?: string; patienceMs?: number; signal?: AbortSignal; platform?: SandboxPlatform; step?: (name: string) => void } = {}): Promise<void> {
    await this.settleConnections(id, opts.sandboxIp, (opts.patienceMs ?? 4_000) / 2, opts.signal);
    opts.step?.("connections");
    await this.refuseUnrestorableSockets(id, (opts.patienceMs ?? 4_000) / 2, opts.signal);
    opts.step?.("sockets");
    rmSync(imageDir, { recursive: true, force: true });
    mkdirSync(imageDir, { recursive: true });
    // Stamped before runsc writes anything: a crash at any point leaves a checkpoint (complete or
    // not) that says its platform, the platform its sandbox runs on, which need not be this server's.
    const stamp: CheckpointStamp = { platform: opts.platform ?? this.platform, runsc: await runscVersion() };
    writeFileAtomic(join(imageDir, STAMP_FILE), JSON.stringify(stamp) + "\n");
    // The reason precedes a long stack dump. An abort kills runsc; the sandbox is then the caller's to destroy.
    await run("runsc", [...this.global, "checkpoint", "--image-path", imageDir, "--compression=none", "--exclude-committed-zero-pages", id], { keepLines: 2000, ...(opts.signal ? { signal: opts.signal } : {}) });
    // The image is complete: the sandbox's removal (`runsc delete` takes over a second
    // after a checkpoint) goes on in the background; a restore or destroy of the same id waits for it.
    const removal = this.destroy(id).finally(() => this.removals.delete(id));
    this.removals.set(id, removal);
  }

  /**
   * Waits until the sandbox has no TCP connection but listening ones; gives up
   * quietly after `patienceMs`, each look included (a `runsc exec` into a busy
   * sandbox can take its time).
   */
  private async settleConnections(id: string, sandboxIp: string | undefined, patienceMs: number, signal?: AbortSignal): Promise<void> {
    let deadline = Date.now() + patienceMs;
    const bounded = () => (signal ? AbortSignal.any([signal, AbortSignal.timeout(Math.max(1, deadline - Date.now()))]) : AbortSignal.timeout(Math.max(1, deadline - Date.now())));
    const busyOnHost = async () => {
      if (!sandboxIp) return false;
      const r = await exec("ss", ["-Htn", "state", "all", "dst", sandboxIp], { signal: bounded() });
      return r.stdout.split("\n").some((l) => l.trim() && !l.startsWith("TIME-WAIT"));
    };
    const busyInside = async () => {
      const bits = await this.socketBits(id, deadline);
      if (bits !== undefined) return (bits & TCP_NOT_LISTENING) !== 0;
      const r = await this.exec(id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"], [], bounded());
      if (r.code !== 0) return false; // no cat in this image (or no answer in time): nothing to look with
      // Column 4 is the state; 0A is LISTEN.
      return r.stdout.split("\n").slice(1).some((l) => /^\s*\d+:/.test(l) && l.trim().split(/\s+/)[3] !== "0A");
    };
    while (Date.now() < deadline && !signal?.aborted && ((await busyOnHost()) || (await busyInside()))) await new Promise((res) => setTimeout(res, 50));
    if (signal?.aborted) throw new SandboxAborted("the checkpoint was cancelled");
    // Connections still open now (an idle keep-alive, say) would be reset by the save, and
    // a Node app restored with such a reset connection spins on it: runsc 20240729 keeps
    // the closed socket in the app's epoll set (epoll_pwait reports it, EPOLL_CTL_DEL says
    // EBADF) and the app answered nothing for 30 s to minutes, on ptrace and systrap alike.
    // Reset them from the host side instead (ss -K), so the app sees and closes them before the save.
    deadline = Date.now() + 1_000;
    if (sandboxIp && (await busyOnHost())) {
      await exec("ss", ["-K", "-Htn", "state", "connected", "exclude", "time-wait", "dst", sandboxIp], { signal: bounded() });
      while (Date.now() < deadline && !signal?.aborted && (await busyInside())) await new Promise((res) => setTimeout(res, 50));
      if (signal?.aborted) throw new SandboxAborted("the checkpoint was cancelled");
    }
    // The host's last ACK is on its way; let the sandbox take it.
    if (sandboxIp) await new Promise((res) => setTimeout(res, 20));
  }

  /**
   * Throws, naming them, while the sandbox holds UDP sockets on its own
   * address (connected ones, such as a DNS query in flight, or bound to it),
   * after waiting up to `patienceMs` for them to close. Every restore gets a
   * new address, and runsc 20240729 panics restoring such a socket where its
   * address is gone (tcpip/transport/internal/network Endpoint.Resume; newer
   * runsc closes the socket instead): the checkpoint would never restore, and
   * the restore would fail with only `containerManager.Restore failed: EOF`.
   */
  private async refuseUnrestorableSockets(id: string, patienceMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + patienceMs;
    for (;;) {
      // lmvm-init says whether there is any; `cat` names them (for the refusal), or looks when lmvm-init cannot be asked.
      const bits = await this.socketBits(id, Math.max(deadline, Date.now() + 1_000));
      if (signal?.aborted) throw new SandboxAborted("the checkpoint was cancelled");
      if (bits !== undefined && (bits & UDP_ON_OWN_ADDRESS) === 0) return;
      if (bits !== undefined && Date.now() < deadline) {
        await new Promise((res) => setTimeout(res, 100));
        continue;
      }
      const bounded = AbortSignal.timeout(Math.max(1_000, deadline - Date.now()));
      const r = await this.exec(id, ["cat", "/proc/net/udp", "/proc/net/udp6"], [], signal ? AbortSignal.any([signal, bounded]) : bounded);
      if (signal?.aborted) throw new SandboxAborted("the checkpoint was cancelled");
      // No cat in this image: lmvm-init's word stands, unnamed; without either, nothing to look with.
      const held = r.code === 0 ? udpOnOwnAddress(r.stdout) : bits !== undefined ? ["not named: the image has no cat to list them"] : [];
      if (!held.length) return;
      if (Date.now() >= deadline) {
        throw new Error(
          `the app holds UDP sockets on its own address (${held.join(", ")}), a DNS lookup or a connected UDP client, say. A sandbox is restored at another address, where runsc cannot bring such a socket back. Close them before the checkpoint (before /ready answers for a build's snapshot, in /suspend for a suspend) and open them again in /run or /resume.`,
        );
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  /**
   * What `lmvm-init --sockets` reports of the sandbox's sockets (TCP_NOT_LISTENING,
   * UDP_ON_OWN_ADDRESS), run on its control socket by `until` at the latest;
   * undefined when it cannot be asked (a sandbox not running, a control call
   * failing), and the caller then looks with `runsc exec cat`.
   */
  private async socketBits(id: string, until: number): Promise<number | undefined> {
    const socket = runningSandbox(this.opts.stateRoot, id);
    if (!socket) return undefined;
    const code = await controlExec(socket, id, [GUEST_PATH, "--sockets"], 0, Math.max(1, Math.min(CONTROL_TIMEOUT_MS, until - Date.now()))).catch(() => undefined);
    return code !== undefined && code >= 0 && code <= (TCP_NOT_LISTENING | UDP_ON_OWN_ADDRESS) ? code : undefined;
  }

  /** Whether the sandbox's control server answers: runsc can list a sandbox that is already going down. */
  async responds(id: string): Promise<boolean> {
    return (await exec("runsc", [...this.global, "events", "--stats", id], { signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) })).code === 0;
  }

  /**
   * Starts a new sandbox from a checkpoint; `spec.network` may differ from the original's.
   * `step` is told when the bundle and disk are ready ("bundle") and when runsc restore ends ("restore");
   * runsc starts once `after` (set-up done meanwhile, e.g. the network's egress) has resolved.
   */
  async restore(spec: SandboxSpec, imageDir: string, signal?: AbortSignal, step?: (name: string) => void, after?: Promise<unknown>): Promise<void> {
    // Refused before anything is made: runsc would fail on it after the bundle, network and disk were set up.
    const mismatch = this.mismatch(imageDir, "The checkpoint");
    if (mismatch) throw mismatch;
    await this.removals.get(spec.id);
    const bundle = await this.writeBundle(spec);
    step?.("bundle");
    await after; // what the sandbox's network needs first (its egress), made meanwhile
    if (signal?.aborted) throw new SandboxAborted("runsc restore was cancelled before it began");
    step?.("bundle and egress");
    await this.detached(spec, ["restore", "--image-path", imageDir, "--bundle", bundle, "--detach", spec.id], signal);
    step?.("restore");
  }

  /** Runs a command in the sandbox; an abort kills `runsc exec` (the result then has no exit code). */
  exec(id: string, argv: string[], flags: string[] = [], signal?: AbortSignal): Promise<ExecResult> {
    return exec("runsc", [...this.global, "exec", ...flags, id, ...argv], signal ? { signal } : {});
  }

  /**
   * Names the sandbox `name` with the image's own `hostname` command, when it
   * has one: a restored sandbox keeps the hostname its checkpoint was taken
   * with, whatever the spec says. Returns whether it could.
   */
  async setHostname(id: string, rootfs: string, name: string): Promise<boolean> {
    const tool = ["bin/hostname", "usr/bin/hostname"].find((p) => lexists(join(rootfs, p)));
    if (!tool) return false;
    // On RunMicrovm's path: asked of the control server directly (runsc's own start costs 50-300 ms);
    // through `runsc exec` when the state file names no running sandbox or the call fails.
    const socket = runningSandbox(this.opts.stateRoot, id);
    if (socket) {
      const code = await controlExec(socket, id, [`/${tool}`, name], CAP_SYS_ADMIN, CONTROL_TIMEOUT_MS).catch(() => undefined);
      if (code !== undefined) return code === 0;
    }
    return (await this.exec(id, [`/${tool}`, name], ["--cap", "CAP_SYS_ADMIN"], AbortSignal.timeout(CONTROL_TIMEOUT_MS))).code === 0;
  }

  /**
   * The command line of `runsc exec` for a process described by an OCI
   * process file (for a terminal: "terminal": true, run under a host pty);
   * runsc writes the process's pid inside the sandbox to `pidFile`.
   */
  execCommand(id: string, processFile: string, pidFile: string): string[] {
    return ["runsc", ...this.global, "exec", "--process", processFile, "--internal-pid-file", pidFile, id];
  }

  /** Sends a signal to one process inside the sandbox. */
  async kill(id: string, pid: number, signal: string): Promise<void> {
    await run("runsc", [...this.global, "kill", "--pid", String(pid), id, signal], { signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) });
  }

  /** The processes inside the sandbox (`runsc ps`): pid, parent and controlling terminal ("?" for none). */
  async processes(id: string): Promise<{ pid: number; ppid: number; tty: string }[]> {
    const r = await run("runsc", [...this.global, "ps", id], { signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) });
    // UID PID PPID C TTY STIME TIME CMD
    return r.stdout.split("\n").slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 5).map((f) => ({ pid: Number(f[1]), ppid: Number(f[2]), tty: f[4]! }));
  }

  /** Pauses the sandbox (a warm-pool clone: its kernel stopped, no CPU until resumed). */
  async pause(id: string): Promise<void> {
    await run("runsc", [...this.global, "pause", id], { signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) });
  }

  /**
   * Unpauses a paused sandbox: the call `runsc resume` makes, on the sandbox's control socket, then
   * its record in runsc's state file, so no runsc process starts on RunMicrovm's path
   * (control-socket.ts); through `runsc resume` when the state file is not as expected.
   */
  async resume(id: string): Promise<void> {
    const paused = pausedSandbox(this.opts.stateRoot, id);
    if (!paused) {
      await run("runsc", [...this.global, "resume", id], { signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS) });
      return;
    }
    await controlCall(paused.socket, "containerManager.Resume", null, CONTROL_TIMEOUT_MS);
    recordRunning(this.opts.stateRoot, id, paused.state);
  }

  /**
   * Stops and forgets the sandbox; safe for one that is already gone. runsc
   * leaves the sandbox's cgroups behind when the sandbox died on its own (killed,
   * or a checkpoint that failed), so empty ones named after it are removed too.
   */
  async destroy(id: string): Promise<void> {
    const pending = this.removals.get(id);
    if (pending) return pending;
    const r = await exec("runsc", [...this.global, "delete", "--force", id], { signal: AbortSignal.timeout(DELETE_TIMEOUT_MS) });
    if (r.code === null) {
      // `runsc delete` itself hung (a sandbox wedged mid-restore, say): kill the sandbox's
      // process, which takes its gofer with it, and let runsc clear its state.
      const sandbox = (await this.list().catch(() => [])).find((s) => s.id === id);
      if (sandbox?.pid) {
        try {
          process.kill(sandbox.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await exec("runsc", [...this.global, "delete", "--force", id], { signal: AbortSignal.timeout(DELETE_TIMEOUT_MS) });
    }
    this.cgroups.remove(id);
  }

  /**
   * The sandboxes runsc knows. runsc still says "running" for a sandbox whose
   * process was killed (by the OOM killer, say); those are reported "stopped".
   */
  async list(): Promise<{ id: string; status: string; pid: number }[]> {
    const r = await run("runsc", [...this.global, "list", "--format", "json"], { signal: AbortSignal.timeout(DELETE_TIMEOUT_MS) });
    const items = (JSON.parse(r.stdout || "null") as { id: string; status: string; pid: number }[] | null) ?? [];
    return items.map((s) => (s.status === "running" && !processAlive(s.pid) ? { ...s, status: "stopped" } : s));
  }

  /** Removes a sandbox's directory (bundle, overlay filestore and its disk). */
  static forget(spec: Pick<SandboxSpec, "dir">): void {
    removeTree(spec.dir);
  }

  /** How full a sandbox's own disk is; undefined when it has none (no `diskMiB`) or is gone. */
  static diskUsage(spec: Pick<SandboxSpec, "dir">): { usedBytes: number; freeBytes: number; sizeBytes: number } | undefined {
    const overlay = join(spec.dir, "overlay");
    return mountsUnder(overlay).includes(overlay) ? diskUsage(overlay) : undefined;
  }
}
