// The image builder: code artifact → safe unzip → Dockerfile build with
// buildah → root filesystem and image config on disk. Every step is written
// to the build's log as it happens; a failure names the step and quotes the
// last lines of its output in the build's stateReason. Each phase (fetch,
// unpack, base-image, buildah, snapshot) runs under its own deadline and
// stops what it started when the deadline passes or the build is cancelled
// (phases.ts).
//
// On disk, under the data directory:
//   builds/<buildId>/            scratch space of a running build, removed after it
//   images/<name>/<version>/<architecture>/rootfs        the built root filesystem
//   images/<name>/<version>/<architecture>/config.json   entrypoint, cmd, env, workdir, user, ports
//   logs/builds/<buildId>.log    the build log

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { S3ClientConfig } from "@aws-sdk/client-s3";
import {
  BuildFailure,
  DNS_RESOLVER_ADDRESS,
  hasEgress,
  METADATA_ADDRESS,
  limitsOf,
  networkConnectorArn,
  parseArn,
  reservedEnvironment,
  type BuildJob,
  type EgressPolicy,
  type ImageBuilder,
  type SandboxLimits,
  type SnapshotBuild,
} from "../core/index.js";
import { copyArtifact, fetchArtifact } from "./artifacts.js";
import { BaseImages } from "./base-images.js";
import { Buildah, type OciConfig } from "./buildah.js";
import { fromImages } from "./dockerfile.js";
import { diskUsage, ExecError, killGrandchildren } from "../os/index.js";
import { BuildCancelled, DEFAULT_PHASE_TIMEOUTS, runPhase, type PhaseTimeouts } from "./phases.js";
import { safeUnzip } from "./unzip.js";
import type { Snapshotter } from "../runtime/index.js";
import type { NetworkNamespaces, SandboxNetwork } from "../net/index.js";
import type { MetadataSubject } from "../metadata/index.js";

/** What gives a build's RUN steps the network its image's egress policy grants, and the build role's metadata service (src/net's EgressGateway). */
export interface BuildEgressGateway {
  attach(net: SandboxNetwork, policy: EgressPolicy, limits: SandboxLimits, metadata?: MetadataSubject): Promise<unknown>;
  /** Safe to call for a namespace that was never attached, or whose attachment a killed server left. */
  detach(net: SandboxNetwork): Promise<unknown>;
}

/** One build's log as the builder writes it: LogFiles' writer on one host; an agent's streams it to the server (src/cluster). */
export interface BuildLogWriter {
  line(text: string): void;
  /** A progress line, timestamped. */
  step(text: string): void;
  close(): Promise<void>;
}

/** Where builds' logs go (LogFiles, or an agent's stream to the server). */
export interface BuildLogs {
  open(id: string, opts?: { discard?: boolean }): BuildLogWriter;
}

/**
 * What one build takes from whoever placed it, over the builder's own settings: the server's
 * phase deadlines, limits and --no-snapshots for a build on an agent, and the code artifact the
 * server sent (a file:// artifact is on the server's host): its local copy, or why the server
 * could not read it.
 */
export interface BuildSettings {
  phaseTimeouts?: Partial<PhaseTimeouts>;
  limits?: { maxArtifactBytes: number; maxUncompressedBytes: number; maxFiles: number };
  snapshots?: boolean;
  artifact?: { path: string } | { failure: string };
}

export interface BuilderOptions {
  /** The data directory, watched for free space while buildah runs; no path is made under it here. */
  dataDir: string;
  /** Where built versions go (<name>/<version>/<architecture>/). */
  imagesDir: string;
  /** Scratch space of running builds. */
  buildsDir: string;
  /** buildah's store. */
  buildahDir: string;
  logs: BuildLogs;
  /** Where base image root filesystems are cached; may be shared between data directories. */
  baseImageCache: string;
  debianMirror: string;
  busyboxPath: string;
  s3?: S3ClientConfig;
  httpsCa?: string;
  limits: { maxArtifactBytes: number; maxUncompressedBytes: number; maxFiles: number };
  /** Boots the built app and checkpoints it (src/runtime); without one, builds end at the root filesystem. */
  snapshotter?: Snapshotter;
  /** Seconds each build phase may take (default DEFAULT_PHASE_TIMEOUTS). */
  phaseTimeouts?: Partial<PhaseTimeouts>;
  /**
   * The network namespaces of builds whose image grants egress (their own
   * owner directory, so that recover() removes every one a killed server
   * left), and the gateway that attaches the image's policy to them. Without
   * it, a build whose image names egress connectors fails.
   */
  egress?: { nets: NetworkNamespaces; gateway: BuildEgressGateway };
  /** A build's settings from whoever placed it (an agent's builds: the server's), looked up by build id when it starts. */
  settings?: (buildId: string) => BuildSettings | undefined;
}

const MIB = 1024 * 1024;
/** Room a build must leave in the data directory (for MicroVMs' checkpoints, logs, the database). */
const MIN_FREE_DISK_MIB = 1024;

export const DEFAULT_LIMITS = { maxArtifactBytes: 256 * 1024 * 1024, maxUncompressedBytes: 1024 * 1024 * 1024, maxFiles: 50_000 };

export interface BuiltImage {
  rootfs: string;
  config: OciConfig;
}

function imageName(imageArn: string): string {
  const name = parseArn(imageArn)?.resourceId;
  if (!name || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`not an image ARN: ${imageArn}`);
  return name;
}

/** Where a version's build for one architecture keeps its result. */
export function builtImageDir(imagesDir: string, imageArn: string, version: string, architecture: string): string {
  return join(imagesDir, imageName(imageArn), version, architecture);
}

export function readBuiltImage(imagesDir: string, imageArn: string, version: string, architecture: string): BuiltImage {
  const dir = builtImageDir(imagesDir, imageArn, version, architecture);
  return { rootfs: join(dir, "rootfs"), config: JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as OciConfig };
}

async function treeSize(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const current = stack.pop()!;
    for (const entry of await readdir(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) stack.push(path);
      else if (entry.isFile()) total += (await lstat(path)).size;
    }
  }
  return total;
}

/**
 * The buildah tag of a version's build. It stays until the version is
 * deleted: removing a tagged image also removes its untagged intermediate
 * images, which are the layer cache the next build of the app reuses.
 */
function buildTag(imageArn: string, version: string, architecture: string): string {
  const id = createHash("sha256").update(imageArn).digest("hex").slice(0, 20);
  return `localhost/lmvm-build/${id}:${version}-${architecture.toLowerCase()}`;
}

/** Output lines that say a program could not reach the network or resolve a name (curl, wget, apt, pip, Python, Node, getent). */
const NETWORK_FAILURE =
  /Network is unreachable|ENETUNREACH|EHOSTUNREACH|No route to host|Temporary failure in name resolution|Temporary failure resolving|Could not resolve|Name or service not known|Name does not resolve|unable to resolve host|EAI_AGAIN|ENOTFOUND|getaddrinfo|bad address '|Failed to establish a new connection|Could not connect to/i;

export function showsNetworkFailure(lines: readonly string[]): boolean {
  return lines.some((l) => NETWORK_FAILURE.test(l));
}

/** What a build's RUN steps may reach, for the build log. */
function describeEgress(policy: EgressPolicy): string {
  const parts = policy.internet ? [`the internet (public IPv4 over TCP) and DNS through ${DNS_RESOLVER_ADDRESS}`] : [`DNS through ${DNS_RESOLVER_ADDRESS}`];
  for (const r of policy.rules) parts.push(`${r.hostName ?? r.cidrs.join(", ")} (${r.protocol}${r.ports ? ` port${r.ports.from === r.ports.to ? ` ${r.ports.from}` : `s ${r.ports.from}-${r.ports.to}`}` : ""})`);
  return parts.join("; ");
}

/**
 * Why a failed RUN step may have failed for want of network. Without egress,
 * every failed RUN step says that RUN steps have no network and how to grant
 * it; when the step's output shows a network failure, that comes first, as
 * the likely cause. With egress, a network failure is explained by what the
 * image's connectors grant.
 */
function networkHint(imageArn: string, policy: EgressPolicy, netFailure: boolean): { lead: string; tail: string } {
  const internet = networkConnectorArn(parseArn(imageArn)?.region ?? "us-east-1", "INTERNET_EGRESS");
  if (!hasEgress(policy)) {
    const why = `RUN steps have no network, because the image names no egressNetworkConnectors. If the step needs the internet (a download, apt-get, pip or npm install), add INTERNET_EGRESS (${internet}) to the image's egressNetworkConnectors with UpdateMicrovmImage, then it builds again.`;
    return netFailure ? { lead: ` Its output shows a network failure: ${why}`, tail: "" } : { lead: "", tail: `\n(${why})` };
  }
  if (!netFailure) return { lead: "", tail: "" };
  return {
    lead: ` Its output shows a network failure: RUN steps reach only what the image's egressNetworkConnectors grant (${describeEgress(policy)}); private addresses, the host and link-local addresses stay unreachable unless a connector grants them.`,
    tail: "",
  };
}

/** The step a failed buildah build was at, from its output. */
function failedStep(lines: string[]): string | undefined {
  const step = [...lines].reverse().find((l) => /STEP \d+\/\d+: /.test(l));
  // Counted as in the user's Dockerfile: buildah counts the ARG lmvm declares as each stage's step 2 (buildah.ts).
  return step?.replace(/^.*STEP (\d+)\/(\d+): /, (_, k: string, m: string) => `step ${Number(k) > 2 ? Number(k) - 1 : Number(k)}/${Number(m) - 1}: `);
}

/** Whose credentials a build's metadata service hands out: the image's build role, assumed for the image's ARN with the build id as the session name. */
export function buildMetadataSubject(job: BuildJob): MetadataSubject {
  const role = job.version.config.buildRoleArn;
  return { ...(role ? { roleArn: role } : {}), sourceArn: job.build.imageArn, sessionName: job.build.buildId };
}

export class DockerfileBuilder implements ImageBuilder {
  private readonly buildah: Buildah;
  private readonly baseImages: BaseImages;
  private readonly phaseTimeouts: PhaseTimeouts;

  constructor(private readonly opts: BuilderOptions) {
    this.phaseTimeouts = { ...DEFAULT_PHASE_TIMEOUTS, ...opts.phaseTimeouts };
    // Base images live in a store of the base-image cache, which several data directories may
    // share (every test of a CI run does); each data directory's store reads them from there.
    const baseStore = new Buildah(join(opts.baseImageCache, "buildah"));
    this.buildah = new Buildah(opts.buildahDir, { imageStore: baseStore.storeDir });
    this.baseImages = new BaseImages(baseStore, { cacheDir: opts.baseImageCache, debianMirror: opts.debianMirror, busyboxPath: opts.busyboxPath });
  }

  async build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild> {
    const { build, version } = job;
    // An image with logging disabled keeps no build output (RunMicrovm's MicroVMs keep none either).
    const log = this.opts.logs.open(build.buildId, { discard: version.config.logging?.disabled !== undefined });
    const work = join(this.opts.buildsDir, build.buildId);
    const out = builtImageDir(this.opts.imagesDir, build.imageArn, build.imageVersion, build.architecture);
    const tag = buildTag(build.imageArn, build.imageVersion, build.architecture);
    await rm(work, { recursive: true, force: true });
    mkdirSync(join(work, "context"), { recursive: true });
    const onLine = (line: string) => log.line(line);
    const settings = this.opts.settings?.(build.buildId);
    const deadline = { ...this.phaseTimeouts, ...settings?.phaseTimeouts };
    const limits = settings?.limits ?? this.opts.limits;
    try {
      log.step(`Build ${build.buildId} of ${build.imageArn} version ${build.imageVersion} (${build.architecture}), attempt ${build.attempts}`);
      const uri = version.config.codeArtifact.uri;
      log.step(`Fetching code artifact ${uri}`);
      const zip = join(work, "artifact.zip");
      const source = { maxBytes: limits.maxArtifactBytes, ...(this.opts.s3 ? { s3: this.opts.s3 } : {}), ...(this.opts.httpsCa ? { httpsCa: this.opts.httpsCa } : {}) };
      const sent = settings?.artifact;
      await runPhase("fetch", deadline.fetch, signal, (phase) => {
        if (!sent) return fetchArtifact(uri, zip, source, phase);
        if ("failure" in sent) throw new BuildFailure(sent.failure);
        return copyArtifact(uri, sent.path, zip, source, phase);
      });

      log.step("Unpacking the code artifact");
      const unpacked = await runPhase("unpack", deadline.unpack, signal, (phase) => safeUnzip(zip, join(work, "context"), limits, phase));
      log.line(`${unpacked.files} files, ${unpacked.bytes} bytes`);

      log.step("Preparing the images the Dockerfile starts FROM");
      const froms = fromImages(readFileSync(join(work, "context", "Dockerfile"), "utf8"));
      await runPhase("base-image", deadline["base-image"], signal, async (phase) => {
        const exec = { signal: phase, onLine };
        const base = version.config.baseImageArn.split(":").at(-1)!;
        await this.baseImages.ensure(base, version.config.baseImageVersion ?? this.baseImages.latestVersion(base)!, exec);
        for (const from of froms) {
          if (from.managed) {
            const v = from.managed.version ?? this.baseImages.latestVersion(from.managed.name);
            if (!v) throw new BuildFailure(`Dockerfile: FROM ${from.ref} names no managed image; managed images are lmvm/debian12 and lmvm/busybox.`);
            await this.baseImages.ensure(from.managed.name, v, exec);
          } else if (!(await this.buildah.hasImage(from.ref))) {
            log.line(`Pulling ${from.ref}`);
            await this.buildah.pull(from.ref, exec).catch((err: Error) => {
              throw new BuildFailure(`Dockerfile: FROM ${from.ref}: the image is not in the local store and pulling it failed: ${err.message}`);
            });
          }
        }
      });

      const egress = job.egress;
      // The build role's credentials, as AWS serves them to RUN steps and to the snapshot boot's /ready and /validate.
      const metadata = buildMetadataSubject(job);
      const imds = metadata.roleArn && this.opts.egress ? `the instance metadata service at http://${METADATA_ADDRESS} (the build role's credentials)` : "";
      log.step(
        hasEgress(egress)
          ? `Building the Dockerfile (buildah; RUN steps reach ${describeEgress(egress)}${imds ? `; ${imds}` : ""})`
          : `Building the Dockerfile (buildah; RUN steps have no network${imds ? ` beyond ${imds}` : ""}: the image names no egressNetworkConnectors)`,
      );
      const staging = join(work, "rootfs");
      await runPhase("buildah", deadline.buildah, signal, async (phase) => {
        const guard = this.diskGuard();
        let network: SandboxNetwork | undefined;
        try {
          // The image's size limits hold for its RUN steps as for its MicroVMs (bandwidth, connections).
          // Every build with a build role gets a namespace of its own, for its metadata service; one without egress reaches nothing else.
          if (hasEgress(egress) || (metadata.roleArn && this.opts.egress)) network = await this.openNetwork(egress, limitsOf(version.config), metadata);
          await this.buildah.build(
            join(work, "context"),
            tag,
            staging,
            reservedEnvironment(build.imageArn, build.imageVersion),
            { signal: phase, onLine, keepLines: 60, onSpawn: guard.watch },
            network && { path: network.path, dns: DNS_RESOLVER_ADDRESS },
          );
        } catch (err) {
          if (guard.tripped) throw new BuildFailure(guard.tripped);
          if (!(err instanceof ExecError)) throw err;
          const lines = err.result.tail.filter((l) => l.trim());
          const step = failedStep(lines) ?? "the Dockerfile";
          const hint = /^step \d+\/\d+: RUN /i.test(step) ? networkHint(build.imageArn, egress, showsNetworkFailure(lines)) : { lead: "", tail: "" };
          const last = lines.slice(-12).join("\n").slice(-1500);
          throw new BuildFailure(`Dockerfile ${step} failed (${err.result.code === null ? `signal ${err.result.signal}` : `exit status ${err.result.code}`}).${hint.lead} Last lines of its output:\n${last}${hint.tail}`);
        } finally {
          guard.stop();
          // Runs once buildah has ended (its RUN steps are killed first on abort), so nothing is left in the namespace.
          if (network) await this.closeNetwork(network);
        }
      });

      log.step("Saving the root filesystem and image config");
      const config = await this.buildah.config(tag);
      await rm(out, { recursive: true, force: true });
      mkdirSync(out, { recursive: true });
      renameSync(staging, join(out, "rootfs"));
      writeFileSync(join(out, "config.json"), JSON.stringify(config, null, 2));
      const codeInstallSizeInBytes = await treeSize(join(out, "rootfs"));
      log.step(`Root filesystem of ${codeInstallSizeInBytes} bytes saved`);
      let sizes = {};
      const snapshotter = settings?.snapshots === false ? undefined : this.opts.snapshotter;
      if (snapshotter) {
        log.step("Snapshotting the initialised app");
        // The image's own hook timeouts come on top of the phase's deadline.
        const hooks = version.config.hooks?.microvmImageHooks;
        const hookSeconds = (hooks?.ready === "ENABLED" ? hooks.readyTimeoutInSeconds ?? 30 : 0) + (hooks?.validate === "ENABLED" ? hooks.validateTimeoutInSeconds ?? 30 : 0);
        sizes = await runPhase("snapshot", deadline.snapshot + hookSeconds, signal, (phase) => {
          const request = {
            id: `build-${build.buildId.slice(0, 13)}`,
            rootfs: join(out, "rootfs"),
            config,
            env: { ...version.config.environmentVariables, ...reservedEnvironment(build.imageArn, build.imageVersion) },
            ...(version.config.hooks ? { hooks: version.config.hooks } : {}),
            limits: limitsOf(version.config),
            // The app boots under the build's policy and role, as its RUN steps ran.
            egress: job.egress,
            metadata,
            dir: out,
            log: onLine,
            signal: phase,
          };
          return snapshotter.snapshot(request);
        }).catch((err: Error) => {
          if (err instanceof BuildCancelled) throw err;
          const boot = existsSync(join(out, "snapshot-boot.log")) ? readFileSync(join(out, "snapshot-boot.log"), "utf8").trim().split("\n").slice(-8).join("\n") : "";
          if (boot) log.line(`The app's last output:\n${boot}`);
          throw new BuildFailure(`${err.message}${boot ? `\nLast lines of the app's output:\n${boot.slice(-1000)}` : ""}`);
        });
      }
      log.step(`Done: root filesystem of ${codeInstallSizeInBytes} bytes`);
      return { codeInstallSizeInBytes, ...sizes };
    } catch (err) {
      const reason = err instanceof BuildFailure ? err.message : signal.aborted || err instanceof BuildCancelled ? "The build was cancelled." : `Internal error: ${(err as Error).message}`;
      log.step(`FAILED: ${reason}`);
      await rm(out, { recursive: true, force: true });
      throw err instanceof BuildFailure ? err : new BuildFailure(reason);
    } finally {
      await rm(work, { recursive: true, force: true });
      await log.close();
    }
  }

  /**
   * Stops a Dockerfile's RUN steps when the data directory runs low, keeping
   * MIN_FREE_DISK_MIB free for everything else: its processes are killed, so
   * the step fails and buildah itself removes the working container (--force-rm)
   * and what it wrote.
   */
  private diskGuard() {
    const state = { tripped: undefined as string | undefined, pid: undefined as number | undefined, kills: 0 };
    const timer = setInterval(() => {
      // A few rounds catch processes forked meanwhile; then buildah is left to clean up.
      if (state.kills >= 4 || state.pid === undefined) return;
      const disk = diskUsage(this.opts.dataDir);
      if (!state.tripped && (!disk || disk.freeBytes >= MIN_FREE_DISK_MIB * MIB)) return;
      state.kills++;
      state.tripped ??= `The Dockerfile's build was stopped: it brought the data directory (${this.opts.dataDir}) down to ${Math.round((disk?.freeBytes ?? 0) / MIB)} MiB free, and lmvm keeps ${MIN_FREE_DISK_MIB} MiB free there. A RUN step may be writing far too much; otherwise free some space, then update the image to build again.`;
      killGrandchildren(state.pid);
    }, 250);
    return {
      get tripped() {
        return state.tripped;
      },
      watch: (pid: number) => (state.pid = pid),
      stop: () => clearInterval(timer),
    };
  }

  /** A network namespace for a build's RUN steps, attached to the egress gateway with the image's policy and limits, and its build role's metadata service. */
  private async openNetwork(policy: EgressPolicy, limits: SandboxLimits, metadata: MetadataSubject): Promise<SandboxNetwork> {
    const egress = this.opts.egress;
    if (!egress) throw new Error("this server's builder has no egress gateway, so it cannot give RUN steps the network the image's egressNetworkConnectors grant");
    const net = await egress.nets.create();
    try {
      await egress.gateway.attach(net, policy, limits, metadata);
    } catch (err) {
      await this.closeNetwork(net);
      throw err;
    }
    return net;
  }

  private async closeNetwork(net: SandboxNetwork): Promise<void> {
    const egress = this.opts.egress!;
    await egress.gateway.detach(net).catch(() => undefined);
    await egress.nets.destroy(net);
  }

  async recover(): Promise<void> {
    await this.opts.snapshotter?.recover();
    await rm(this.opts.buildsDir, { recursive: true, force: true });
    // The RUN steps' namespaces of builds a killed server left, and their gateway state.
    if (this.opts.egress) for (const index of this.opts.egress.nets.owned()) await this.closeNetwork(this.opts.egress.nets.describe(index));
    await this.buildah.removeAllContainers();
  }

  async discard(imageArn: string, version: string): Promise<void> {
    for (const architecture of ["X86_64", "ARM_64"]) await this.buildah.removeImage(buildTag(imageArn, version, architecture));
    const image = join(this.opts.imagesDir, imageName(imageArn));
    await rm(join(image, version), { recursive: true, force: true });
    if (existsSync(image) && (await readdir(image)).length === 0) await rm(image, { recursive: true, force: true });
  }
}
