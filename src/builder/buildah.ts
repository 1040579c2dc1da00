// buildah, the daemonless OCI builder, with its storage inside the data
// directory. Builds run inside fresh mount and PID namespaces (`unshare`): RUN
// steps see no host processes, and every mount a build makes dies with it.
// With chroot isolation a RUN step shares buildah's own network namespace, so
// the network of the whole buildah process is the network of the RUN steps:
// a fresh, empty one (`unshare --net`: no network at all, not even the host's
// loopback) when the image grants no egress, or the build's own sandbox
// network namespace (`nsenter --net`), attached to the egress gateway with the
// image's policy, when it does. buildah 1.28 refuses `--network none` with
// chroot isolation, hence the namespace around the whole process instead.
// A RUN step's /etc/resolv.conf is buildah's copy of the host's; with egress,
// `--dns` makes it name the sandbox resolver instead (measured with buildah
// 1.28.2: the step then reads exactly `nameserver 169.254.169.253`).
// Every buildah command runs in a private mount namespace: the overlay driver
// bind-mounts its storage directory on start, and that mount must not outlive
// the command (it would pin the data directory and leak into the host).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exec, killGrandchildren, processAlive, run, type ExecOptions } from "../os/index.js";
import { declareArgsInEveryStage } from "./dockerfile.js";

export interface OciConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, object>;
  Labels?: Record<string, string>;
}

/** The network a build's RUN steps get: a network namespace and the resolver inside it. */
export interface BuildNetwork {
  /** The namespace's path (/var/run/netns/<name>). */
  path: string;
  /** The address RUN steps' /etc/resolv.conf names. */
  dns: string;
}

/** How long buildah gets to end a build whose RUN steps were killed before it is killed too. */
const STOP_STEPS_MS = 3_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Buildah {
  private readonly global: string[];
  /** Builds and imports running now: working containers may only be swept when there are none. */
  private active = 0;
  /** Whether a killed build may have left working containers. */
  private leftovers = false;
  private sweeping: Promise<unknown> = Promise.resolve();

  /**
   * A store in `dir`. With `imageStore` (another Buildah's `storeDir`), that
   * store's images are usable here read-only (containers/storage's
   * `<driver>.imagestore`), as the managed base images are: made once per
   * base-image cache rather than copied into every data directory's store.
   */
  constructor(dir: string, opts: { imageStore?: string; driver?: string } = {}) {
    const driver = opts.driver ?? process.env.LMVM_BUILDAH_STORAGE_DRIVER ?? "overlay";
    this.storeDir = join(dir, "storage");
    mkdirSync(this.storeDir, { recursive: true });
    mkdirSync(join(dir, "run"), { recursive: true });
    if (opts.imageStore) mkdirSync(opts.imageStore, { recursive: true });
    this.global = [
      "--root", this.storeDir, "--runroot", join(dir, "run"), "--storage-driver", driver,
      ...(opts.imageStore ? ["--storage-opt", `${driver}.imagestore=${opts.imageStore}`] : []),
    ];
  }

  /** Where this store's images are; another store can read them (constructor's `imageStore`). */
  readonly storeDir: string;

  private command(args: string[]): string[] {
    return ["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "buildah", ...this.global, ...args];
  }

  private buildah(args: string[], opts: ExecOptions = {}) {
    return run("unshare", this.command(args), opts);
  }

  /** Like buildah(), but resolves with the exit status instead of failing. */
  private attempt(args: string[]) {
    return exec("unshare", this.command(args));
  }

  async hasImage(ref: string): Promise<boolean> {
    return (await this.attempt(["inspect", "--type", "image", ref])).code === 0;
  }

  /** Pulls an image into the store, with the host's network (a FROM image is the server's to fetch, not a RUN step's). */
  pull(ref: string, opts: ExecOptions): Promise<unknown> {
    return this.buildah(["pull", "--quiet", ref], opts);
  }

  /** Commits a root filesystem directory as image `ref`. */
  async importRootfs(rootfs: string, ref: string, config: { env: string[]; cmd: string[] }, opts: ExecOptions = {}): Promise<void> {
    // The store may be shared by several servers (a base-image cache): each process names its
    // own working container, and removes only those of processes that have ended.
    const prefix = `lmvm-import-${ref.replace(/[^a-z0-9]+/g, "-")}-`;
    const name = `${prefix}${process.pid}`;
    await this.enter();
    try {
      const listed = await this.attempt(["containers", "--format", "{{.ContainerName}}"]);
      for (const stale of listed.stdout.split("\n").filter((n) => n.startsWith(prefix))) {
        const pid = Number(stale.slice(prefix.length));
        if (stale === name || !Number.isInteger(pid) || !processAlive(pid)) await this.attempt(["rm", stale]);
      }
      await this.buildah(["from", "--name", name, "scratch"], opts);
      await this.buildah(["copy", name, rootfs, "/"], opts);
      await this.buildah(["config", ...config.env.flatMap((e) => ["--env", e]), "--cmd", JSON.stringify(config.cmd), name], opts);
      await this.buildah(["commit", "--quiet", "--rm", name, ref], opts);
    } catch (err) {
      await this.attempt(["rm", name]);
      throw err;
    } finally {
      this.active--;
      this.sweepIfIdle();
    }
  }

  tag(ref: string, ...more: string[]): Promise<unknown> {
    return this.buildah(["tag", ref, ...more]);
  }

  /**
   * Builds `context` as image `tag` and writes the final stage's root
   * filesystem to `rootfs`, with `env` in every RUN step's environment.
   * When `opts.signal` aborts, the RUN step's processes are killed first, so that the step fails and buildah removes
   * its working container itself (--force-rm); if buildah has not ended
   * after STOP_STEPS_MS, everything is killed, and the working containers it
   * leaves are removed as soon as no other build runs.
   * Without `network` the RUN steps have no network; with it, they run in the
   * network namespace at `network.path` and resolve names through `network.dns`.
   */
  async build(context: string, tag: string, rootfs: string, env: Record<string, string>, opts: ExecOptions, network?: BuildNetwork): Promise<unknown> {
    const dockerfile = join(context, "..", "Dockerfile.lmvm");
    writeFileSync(dockerfile, declareArgsInEveryStage(readFileSync(join(context, "Dockerfile"), "utf8"), Object.keys(env)));
    await this.enter();
    const hard = new AbortController();
    let pid: number | undefined;
    let ended = false;
    const stop = async () => {
      for (const started = Date.now(); !ended && Date.now() - started < STOP_STEPS_MS; await sleep(250)) {
        if (pid !== undefined) killGrandchildren(pid);
      }
      if (!ended) {
        this.leftovers = true;
        hard.abort();
      }
    };
    opts.signal?.addEventListener("abort", () => void stop(), { once: true });
    try {
      if (opts.signal?.aborted) throw new Error("aborted");
      // nsenter joins the namespace and execs unshare in the same process, so `pid` stays the one to kill under.
      const [command, ...prefix] = network ? ["nsenter", `--net=${network.path}`, "--", "unshare"] : ["unshare"];
      return await run(
        command!,
        [
          ...prefix,
          "--mount", "--propagation", "private", ...(network ? [] : ["--net"]), "--pid", "--fork", "--kill-child", "--mount-proc", "--",
          "buildah", ...this.global, "build",
          ...(network ? ["--dns", network.dns] : []),
          // --force-rm: a failed or stopped step's working container (and all it wrote) goes too.
          "--isolation", "chroot", "--pull=never", "--layers", "--force-rm",
          "--file", dockerfile, "--tag", tag,
          // Declared in every stage of Dockerfile.lmvm, so that every RUN step sees them.
          ...Object.entries(env).flatMap(([k, v]) => ["--build-arg", `${k}=${v}`]),
          "--output", `type=local,dest=${rootfs}`,
          context,
        ],
        {
          ...opts,
          signal: hard.signal,
          onSpawn: (p) => {
            pid = p;
            opts.onSpawn?.(p);
          },
        },
      );
    } finally {
      ended = true;
      this.active--;
      this.sweepIfIdle();
    }
  }

  /** Counts one more user of the store, once no sweep is under way. */
  private async enter(): Promise<void> {
    for (let sweep = this.sweeping; ; sweep = this.sweeping) {
      await sweep;
      if (sweep === this.sweeping) break;
    }
    this.active++;
  }

  /** Removes working containers that killed builds left, once no build or import is using the store. */
  private sweepIfIdle(): void {
    if (this.active > 0 || !this.leftovers) return;
    this.leftovers = false;
    this.sweeping = this.removeAllContainers().catch(() => undefined);
  }

  async config(ref: string): Promise<OciConfig> {
    const r = await this.buildah(["inspect", "--type", "image", ref]);
    return (JSON.parse(r.stdout) as { OCIv1?: { config?: OciConfig } }).OCIv1?.config ?? {};
  }

  /** Removes every working container, such as those of a build killed mid-way. */
  async removeAllContainers(): Promise<void> {
    await this.attempt(["rm", "--all"]);
  }

  async removeImage(ref: string): Promise<void> {
    await this.attempt(["rmi", "--force", ref]);
  }
}
