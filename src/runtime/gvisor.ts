// Sandboxes on gVisor (runsc): run an image's root filesystem, checkpoint
// memory and disk, restore a checkpoint into a new sandbox (as often as
// wanted), exec into one, destroy it. Facts this relies on, measured on these
// hosts (ARCHITECTURE.md):
// - runsc refuses to start "with network enabled in root network namespace"
//   after reading /proc/sys/net; runsc therefore runs in a private mount
//   namespace with a tmpfs over /proc/sys/net, and joins the sandbox's own
//   network namespace through the OCI spec.
// - Sub-commands find a sandbox through an abstract unix socket, which is
//   network-namespace scoped: they run in the host's namespace, like `run`.
// - Writes go to a gVisor overlay whose filestore lives in the sandbox's own
//   directory (--overlay2=root:dir=…), so one image rootfs serves every clone
//   untouched. Checkpoints are uncompressed: restoring them is about 3x faster.
// - After a checkpoint, `runsc list` still says running: the sandbox is deleted.

import { spawn } from "node:child_process";
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { SandboxNetwork } from "../net/index.js";
import { exec, ExecError, run, type ExecResult } from "../os/index.js";

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
  hostname: string;
  network: SandboxNetwork;
  /** Where this sandbox keeps its bundle and overlay filestore. */
  dir: string;
  /** Receives the app's stdout and stderr; /dev/null when logging is off. */
  logFile: string;
  memoryMiB?: number;
}

export interface GvisorOptions {
  /** runsc --root: where runsc keeps sandbox state. */
  stateRoot: string;
  platform?: string;
}

function userOf(rootfs: string, user: string | undefined): { uid: number; gid: number } {
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

export class Gvisor {
  private readonly global: string[];

  constructor(private readonly opts: GvisorOptions) {
    mkdirSync(opts.stateRoot, { recursive: true });
    this.global = ["--root", opts.stateRoot, "--platform", opts.platform ?? "systrap"];
  }

  private writeBundle(spec: SandboxSpec): string {
    const bundle = join(spec.dir, "bundle");
    mkdirSync(bundle, { recursive: true });
    mkdirSync(join(spec.dir, "overlay"), { recursive: true });
    const args = [...(spec.config.Entrypoint ?? []), ...(spec.config.Cmd ?? [])];
    if (!args.length) throw new Error("the image has neither ENTRYPOINT nor CMD: nothing to run");
    const env = [...(spec.config.Env ?? []), ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`)];
    const oci = {
      ociVersion: "1.0.2",
      process: { terminal: false, user: userOf(spec.rootfs, spec.config.User), args, env, cwd: spec.config.WorkingDir || "/" },
      root: { path: spec.rootfs, readonly: false },
      hostname: spec.hostname,
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/dev", type: "tmpfs", source: "tmpfs" },
        { destination: "/sys", type: "sysfs", source: "sysfs", options: ["ro"] },
      ],
      linux: {
        namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network", path: spec.network.path }],
        ...(spec.memoryMiB ? { resources: { memory: { limit: spec.memoryMiB * 1024 * 1024 } } } : {}),
      },
    };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(oci, null, 2));
    return bundle;
  }

  /** Starts runsc detached, its sandbox writing the app's output to the log file. */
  private detached(spec: SandboxSpec, subcommand: string[]): Promise<void> {
    const log = openSync(spec.logFile, "a");
    const diag = join(spec.dir, "runsc.log");
    const runsc = ["runsc", ...this.global, `--overlay2=root:dir=${join(spec.dir, "overlay")}`, ...subcommand].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
    return new Promise((resolve, reject) => {
      const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", `mount -t tmpfs none /proc/sys/net && exec ${runsc} 2>>'${diag}'`], { stdio: ["ignore", log, log] });
      closeSync(log);
      child.once("error", reject);
      child.once("exit", (code) => {
        if (code === 0) return resolve();
        const why = existsSync(diag) ? readFileSync(diag, "utf8").trim().split("\n").filter((l) => !/^\s/.test(l)).slice(-3).join(" | ") : "";
        reject(new Error(`runsc ${subcommand[0]} failed (exit ${code}): ${why}`));
      });
    });
  }

  async run(spec: SandboxSpec): Promise<void> {
    const bundle = this.writeBundle(spec);
    await this.detached(spec, ["run", "--bundle", bundle, "--detach", spec.id]);
  }

  /**
   * Saves the sandbox's memory and disk to `imageDir`, then removes the sandbox.
   * gVisor refuses while any TCP connection in the sandbox is open or closing
   * ("endpoint cannot be saved in connected state"), and the refusal kills the
   * sandbox, so first wait (up to `patienceMs`) until /proc/net/tcp shows only
   * listening sockets, when the image has a `cat` to read it with.
   */
  async checkpoint(id: string, imageDir: string, patienceMs = 10_000): Promise<void> {
    const deadline = Date.now() + patienceMs;
    await this.settleConnections(id, patienceMs / 2);
    for (;;) {
      rmSync(imageDir, { recursive: true, force: true });
      mkdirSync(imageDir, { recursive: true });
      try {
        await run("runsc", [...this.global, "checkpoint", "--image-path", imageDir, "--compression=none", id], { keepLines: 2000 }); // the reason precedes a long stack dump
        break;
      } catch (err) {
        // A refusal over a connection that is still closing sometimes leaves the sandbox running
        // (not always: then it is lost, and the error stands). While it runs, wait and try again.
        const closing = err instanceof ExecError && err.result.tail.some((l) => l.includes("tcp.Endpoint") || l.includes("connected state"));
        const alive = closing && (await this.list().catch(() => [])).some((s) => s.id === id && s.status === "running");
        if (!alive || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await this.destroy(id);
  }

  /** Waits until the sandbox has no TCP connection but listening ones; gives up quietly after `patienceMs`. */
  private async settleConnections(id: string, patienceMs: number): Promise<void> {
    const deadline = Date.now() + patienceMs;
    for (;;) {
      const r = await this.exec(id, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]);
      if (r.code !== 0) return; // no cat in this image: nothing to wait with
      // Column 4 is the state; 0A is LISTEN.
      const busy = r.stdout.split("\n").slice(1).filter((l) => /^\s*\d+:/.test(l) && l.trim().split(/\s+/)[3] !== "0A");
      if (!busy.length || Date.now() > deadline) return;
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  /** Starts a new sandbox from a checkpoint; `spec.network` may differ from the original's. */
  async restore(spec: SandboxSpec, imageDir: string): Promise<void> {
    const bundle = this.writeBundle(spec);
    await this.detached(spec, ["restore", "--image-path", imageDir, "--bundle", bundle, "--detach", spec.id]);
  }

  exec(id: string, argv: string[]): Promise<ExecResult> {
    return exec("runsc", [...this.global, "exec", id, ...argv]);
  }

  async pause(id: string): Promise<void> {
    await run("runsc", [...this.global, "pause", id]);
  }

  async resume(id: string): Promise<void> {
    await run("runsc", [...this.global, "resume", id]);
  }

  /** Stops and forgets the sandbox; safe for one that is already gone. */
  async destroy(id: string): Promise<void> {
    await exec("runsc", [...this.global, "delete", "--force", id]);
  }

  async list(): Promise<{ id: string; status: string; pid: number }[]> {
    const r = await run("runsc", [...this.global, "list", "--format", "json"]);
    const items = JSON.parse(r.stdout || "null") as { id: string; status: string; pid: number }[] | null;
    return items ?? [];
  }

  /** Removes a sandbox's directory (bundle, overlay filestore). */
  static forget(spec: Pick<SandboxSpec, "dir">): void {
    rmSync(spec.dir, { recursive: true, force: true });
  }
}
