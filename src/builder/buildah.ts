// buildah, the daemonless OCI builder, with its storage inside the data
// directory. Builds run inside fresh mount, network and PID namespaces
// (`unshare`): RUN steps reach no network (not even the host's loopback), see
// no host processes, and every mount a build makes dies with it.
// buildah 1.28 refuses `--network none` with chroot isolation, hence the
// empty network namespace around the whole buildah process instead.
// Every buildah command runs in a private mount namespace: the overlay driver
// bind-mounts its storage directory on start, and that mount must not outlive
// the command (it would pin the data directory and leak into the host).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { exec, run, type ExecOptions } from "../os/index.js";

export interface OciConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, object>;
  Labels?: Record<string, string>;
}

export class Buildah {
  private readonly global: string[];

  constructor(dir: string, driver = process.env.LMVM_BUILDAH_STORAGE_DRIVER ?? "overlay") {
    mkdirSync(join(dir, "storage"), { recursive: true });
    mkdirSync(join(dir, "run"), { recursive: true });
    this.global = ["--root", join(dir, "storage"), "--runroot", join(dir, "run"), "--storage-driver", driver];
  }

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

  /** Pulls an image into the store, with the host's network (builds themselves have none). */
  pull(ref: string, opts: ExecOptions): Promise<unknown> {
    return this.buildah(["pull", "--quiet", ref], opts);
  }

  /** Commits a root filesystem directory as image `ref`. */
  async importRootfs(rootfs: string, ref: string, config: { env: string[]; cmd: string[] }, opts: ExecOptions = {}): Promise<void> {
    const name = `lmvm-import-${ref.replace(/[^a-z0-9]+/g, "-")}`;
    await this.attempt(["rm", name]);
    await this.buildah(["from", "--name", name, "scratch"], opts);
    try {
      await this.buildah(["copy", name, rootfs, "/"], opts);
      await this.buildah(["config", ...config.env.flatMap((e) => ["--env", e]), "--cmd", JSON.stringify(config.cmd), name], opts);
      await this.buildah(["commit", "--quiet", "--rm", name, ref], opts);
    } catch (err) {
      await this.attempt(["rm", name]);
      throw err;
    }
  }

  tag(ref: string, ...more: string[]): Promise<unknown> {
    return this.buildah(["tag", ref, ...more]);
  }

  /** Builds `context` as image `tag` and writes the final stage's root filesystem to `rootfs`. */
  build(context: string, tag: string, rootfs: string, opts: ExecOptions): Promise<unknown> {
    return run(
      "unshare",
      [
        "--mount", "--propagation", "private", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
        "buildah", ...this.global, "build",
        // --force-rm: a failed or stopped step's working container (and all it wrote) goes too.
        "--isolation", "chroot", "--pull=never", "--layers", "--force-rm",
        "--file", join(context, "Dockerfile"), "--tag", tag,
        "--output", `type=local,dest=${rootfs}`,
        context,
      ],
      opts,
    );
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
