// Managed base images, made on this host from Debian's packages: `debian12`
// with mmdebstrap, `busybox` from the busybox-static binary. Each version is
// made once into the base-image cache (a directory that may be shared by
// several data directories, such as every test of a CI run), then committed
// into buildah's store as lmvm/<name>:<version>, and lmvm/<name>:latest for
// the newest, so Dockerfiles can say `FROM lmvm/debian12`.

import { existsSync, mkdirSync, readdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { BuildFailure, MANAGED_IMAGES } from "../core/index.js";
import type { Buildah } from "./buildah.js";
import { ExecError, processAlive, run, withFileLock, type ExecOptions } from "../os/index.js";

export interface BaseImageOptions {
  cacheDir: string;
  debianMirror: string;
  busyboxPath: string;
}

type Recipe = (rootfs: string, opts: BaseImageOptions, exec: ExecOptions) => Promise<void>;

const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const recipes: Record<string, Record<string, Recipe>> = {
  debian12: {
    "1": async (rootfs, opts, exec) => {
      // In its own PID namespace, so apt and dpkg die with it if the server does.
      await run("unshare", ["--pid", "--fork", "--kill-child", "--mount-proc", "--", "mmdebstrap",
        "--variant=minbase",
        "--include=ca-certificates,nodejs,python3,bash",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
        "bookworm", rootfs, opts.debianMirror,
      ], exec);
    },
  },
  busybox: {
    "1": async (rootfs, opts, exec) => {
      if (!existsSync(opts.busyboxPath)) {
        throw new BuildFailure(`Making the busybox base image needs a static busybox at ${opts.busyboxPath} (Debian package busybox-static).`);
      }
      for (const d of ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "home", "var", "run"]) mkdirSync(join(rootfs, d), { recursive: true });
      await run("cp", [opts.busyboxPath, join(rootfs, "bin", "busybox")], exec);
      const applets = (await run(join(rootfs, "bin", "busybox"), ["--list"])).stdout.split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox");
      for (const applet of applets) symlinkSync("busybox", join(rootfs, "bin", applet));
      writeFileSync(join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
      writeFileSync(join(rootfs, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
      exec.onLine?.(`busybox rootfs with ${applets.length} applets`);
    },
  },
};

interface Making {
  done: Promise<string>;
  /** Stops the making when every build waiting for it has stopped waiting. */
  controller: AbortController;
  waiters: number;
}

/** How long a build waits for another process's import of the same base image (an import takes about a minute). */
const IMPORT_LOCK_MS = 20 * 60_000;

export class BaseImages {
  private readonly inFlight = new Map<string, Making>();
  /** Makings stopped because no build waited any more, until they have cleaned up. */
  private readonly stopping = new Map<string, Promise<unknown>>();

  constructor(
    private readonly buildah: Buildah,
    private readonly opts: BaseImageOptions,
  ) {}

  static ref(name: string, version: string): string {
    return `localhost/lmvm/${name}:${version}`;
  }

  latestVersion(name: string): string | undefined {
    return MANAGED_IMAGES.find((d) => d.name === name)?.versions.at(-1);
  }

  /**
   * Makes base image name:version if needed and returns its reference. Builds
   * asking at the same time share one making (its output goes to the first
   * one's log); a build whose `exec.signal` aborts stops waiting at once, and
   * the making stops when no build waits for it any more.
   */
  ensure(name: string, version: string, exec: ExecOptions): Promise<string> {
    const key = `${name}:${version}`;
    let making = this.inFlight.get(key);
    if (!making) {
      const controller = new AbortController();
      const previous = this.stopping.get(key) ?? Promise.resolve();
      const done = previous
        .then(() => this.make(name, version, { ...exec, signal: controller.signal }))
        .finally(() => {
          if (this.inFlight.get(key) === making) this.inFlight.delete(key);
        });
      done.catch(() => undefined);
      making = { done, controller, waiters: 0 };
      this.inFlight.set(key, making);
    }
    const shared = making;
    shared.waiters++;
    const signal = exec.signal;
    return new Promise<string>((resolve, reject) => {
      const leave = () => {
        if (--shared.waiters === 0) {
          shared.controller.abort();
          // The next build asking starts a new making, once this one has removed what it wrote.
          if (this.inFlight.get(key) === shared) this.inFlight.delete(key);
          const cleaned = shared.done.catch(() => undefined).finally(() => {
            if (this.stopping.get(key) === cleaned) this.stopping.delete(key);
          });
          this.stopping.set(key, cleaned);
        }
        reject(new Error("aborted"));
      };
      if (signal?.aborted) return leave();
      signal?.addEventListener("abort", leave, { once: true });
      shared.done.then(resolve, reject).finally(() => signal?.removeEventListener("abort", leave));
    });
  }

  private async make(name: string, version: string, exec: ExecOptions): Promise<string> {
    const recipe = recipes[name]?.[version];
    if (!recipe) throw new BuildFailure(`There is no managed base image ${name} version ${version}.`);
    const ref = BaseImages.ref(name, version);
    if (await this.buildah.hasImage(ref)) return ref;
    const dir = join(this.opts.cacheDir, name);
    const rootfs = join(dir, version);
    mkdirSync(dir, { recursive: true });
    if (!existsSync(rootfs)) {
      for (const stale of readdirSync(dir).filter((f) => f.startsWith(`${version}.partial-`))) {
        if (!processAlive(Number(stale.split("-").at(-1)))) await rm(join(dir, stale), { recursive: true, force: true });
      }
      const partial = join(dir, `${version}.partial-${process.pid}`);
      const started = Date.now();
      exec.onLine?.(`Creating base image ${name} version ${version}; this happens once per host and can take a few minutes.`);
      try {
        await recipe(partial, this.opts, exec);
      } catch (err) {
        await rm(partial, { recursive: true, force: true });
        if (err instanceof ExecError) throw new BuildFailure(`Creating base image ${name} version ${version} failed: ${err.message}`);
        throw err;
      }
      try {
        renameSync(partial, rootfs);
      } catch (err) {
        // Another process sharing the cache finished the same image first.
        await rm(partial, { recursive: true, force: true });
        if (!existsSync(rootfs)) throw err;
      }
      exec.onLine?.(`Base image ${name} version ${version} created in ${((Date.now() - started) / 1000).toFixed(1)} s.`);
    }
    // Servers sharing the cache import one at a time: two imports of the same ref would each
    // commit it, and the first one's image would stay behind untagged (hundreds of MB).
    await withFileLock(
      join(dir, `${version}.import-lock`),
      async () => {
        if (await this.buildah.hasImage(ref)) return;
        await this.buildah.importRootfs(rootfs, ref, { env: [PATH_ENV], cmd: ["/bin/sh"] }, exec);
        if (this.latestVersion(name) === version) await this.buildah.tag(ref, `localhost/lmvm/${name}:latest`);
      },
      {
        timeoutMs: IMPORT_LOCK_MS,
        ...(exec.signal ? { signal: exec.signal } : {}),
        onWait: (owner) => exec.onLine?.(`Waiting for process ${owner}, which is importing base image ${name} version ${version} into the shared cache.`),
      },
    );
    return ref;
  }
}
