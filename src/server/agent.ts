// `lmvm agent`'s composition root (docs/design.md, "Many hosts"): the same
// sandbox host as a single server's (sandbox-host.ts: namespaces, egress,
// metadata service, log files, the gVisor runtime), registered in the
// cluster's PostgreSQL database and served to the server over mutual TLS by
// the agent service (src/cluster).

import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statfsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isIP } from "node:net";
import { join } from "node:path";
import { AgentBuilds, AgentService, nodeCredentials, ServerCredentials } from "../cluster/index.js";
import { writeFileAtomic } from "../os/index.js";
import { DEFAULT_SANDBOX_PLATFORM, runscVersion, type SandboxPlatform } from "../runtime/index.js";
import { ClusterStore, PostgresStore } from "../store/index.js";
import { openObjectStore, Replicas, ReplicatedBuilder, ReplicatedRuntime, type ObjectStoreConfig } from "../objects/index.js";
import { builtImageDir, type DockerfileBuilder } from "../builder/index.js";
import { dockerfileBuilder } from "./build-host.js";
import { paths } from "./data-paths.js";
import type { SandboxRuntime } from "../core/index.js";
import { hostPlatform } from "./host.js";
import { composeSandboxHost } from "./sandbox-host.js";

export interface AgentConfig {
  database: string;
  dataDir: string;
  clusterDir: string;
  /** ip:port the RPC listens on. */
  listen: string;
  /** ip:port the server dials (default: listen). */
  advertise?: string;
  /** The host's id in the cluster (default: the one kept in <data-dir>/host-id, made on first start). */
  hostId?: string;
  sandboxPlatform?: SandboxPlatform;
  microvmDiskMiB?: number;
  dnsResolvers?: string[];
  region: string;
  /** ip:port of the server's cluster listener (lmvm server --cluster-listen), where execution-role credentials come from. */
  server?: string;
  /** The cluster's object store (the server's --object-store): images and checkpoints this host lacks come from it. */
  objectStore?: ObjectStoreConfig;
  /** Builds placed here (the server's phase deadlines and limits come with each): where managed base images are made and kept (default <data-dir>/base-images). */
  baseImageCache?: string;
  debianMirror?: string;
  /** S3-compatible endpoint for s3:// code artifacts (default: AWS's); credentials from LMVM_S3_* or the AWS default chain. */
  s3Endpoint?: string;
  /** PEM file of extra CAs trusted for https:// code artifacts. */
  artifactCaFile?: string;
  log: (event: Record<string, unknown>) => void;
}

export interface Agent {
  hostId: string;
  /** The address the server dials, ip:port. */
  address: string;
  stop(): Promise<void>;
}

export function parseHostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(value);
  const host = m?.[1]?.replace(/^\[(.*)\]$/, "$1");
  const port = Number(m?.[2]);
  if (!m || !host || !isIP(host) || port > 65535) throw new Error(`--${flag} must be <ip>:<port>, e.g. 10.0.0.5:7700; got '${value}'.`);
  return { host, port };
}

function meminfo(field: string): number {
  const text = readFileSync("/proc/meminfo", "utf8");
  return Math.floor(Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) / 1024);
}

function hostIdOf(dataDir: string, given: string | undefined): string {
  const file = join(dataDir, "host-id");
  if (given) {
    if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(given)) throw new Error(`--host-id is 1 to 63 lower-case letters, digits or '-'; got '${given}'.`);
    return given;
  }
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const id = `host-${randomBytes(6).toString("hex")}`;
  writeFileAtomic(file, `${id}\n`, 0o644);
  return id;
}

export async function startAgent(config: AgentConfig): Promise<Agent> {
  const log = config.log;
  const listen = parseHostPort("listen", config.listen);
  const advertise = parseHostPort("advertise", config.advertise ?? config.listen);
  if (config.server) parseHostPort("server", config.server);
  if (advertise.host === "0.0.0.0" || advertise.host === "::") throw new Error(`--advertise must be an address the server can dial; got '${config.advertise ?? config.listen}'. Give --advertise <ip>:<port> when --listen is a wildcard.`);
  if (!config.objectStore) throw new Error("An agent gets the images it runs and the checkpoints it resumes from the cluster's object store: give --object-store, the same as the server's.");
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const hostId = hostIdOf(config.dataDir, config.hostId);
  const tls = await nodeCredentials(config.clusterDir, hostId, "agent", [advertise.host]);
  // Opened below, after the sandbox side; the credentials source reads the leader row through it.
  let cluster: ClusterStore | undefined;
  const host = hostPlatform();
  const sandboxes = composeSandboxHost({
    dataDir: config.dataDir,
    ...(config.sandboxPlatform ? { sandboxPlatform: config.sandboxPlatform } : {}),
    ...(config.microvmDiskMiB ? { microvmDiskMiB: config.microvmDiskMiB } : {}),
    ...(config.dnsResolvers ? { dnsResolvers: config.dnsResolvers } : {}),
    region: config.region,
    log,
    // Execution roles' credentials come from the server, which holds the identity service (src/cluster/credentials.ts).
    // The leader row names the API node that leads now (a standby may have taken over); --server is the fallback before any has recorded itself.
    credentials: new ServerCredentials(tls, async () => {
      const address = (await cluster?.leader().catch(() => undefined))?.address ?? config.server;
      if (!address) throw new Error("no lmvm server has recorded its --cluster-listen address in the database, and this agent was started without --server <ip:port>, so it cannot get execution-role credentials");
      return address;
    }),
    host,
  });
  const local = sandboxes.runtime;
  if (!local) throw new Error("runsc (gVisor) is not installed or not on PATH: an agent runs sandboxes, so it needs it (see docs/design.md, host prerequisites).");
  const runtime = local;
  // Images and checkpoints this host lacks come from the object store, as for a server with --object-store.
  let served: SandboxRuntime = local;
  let replicas: Replicas | undefined;
  if (config.objectStore) {
    const objects = openObjectStore(config.objectStore);
    // As for the server: a store that cannot be reached now is logged, not fatal (this host's running MicroVMs must stay served).
    await objects.list("images/", AbortSignal.timeout(10_000)).catch((err: Error) => {
      log({ level: "error", msg: `--object-store ${objects.url} cannot be reached now: ${err.message}. Until it can, MicroVMs whose image or checkpoint is not on this host are refused here with the reason.` });
    });
    const files = paths(config.dataDir);
    replicas = new Replicas({
      store: objects,
      architecture: host.architecture,
      imageDir: (imageArn, version) => builtImageDir(files.images, imageArn, version, host.architecture),
      microvmDir: (id) => join(files.microvms, id),
      stagingDir: files.objects,
      log,
    });
    served = new ReplicatedRuntime(local, replicas, { microvmDir: (id) => local.dir(id), log });
  }
  // The builds the server places here: this host's Dockerfile builder, its images uploaded to the object store before the server hears of them.
  let docker: DockerfileBuilder | undefined;
  const builds = new AgentBuilds({
    dataDir: config.dataDir,
    builder: (logs, settings) => {
      docker = dockerfileBuilder({
        dataDir: config.dataDir,
        region: config.region,
        ...(config.sandboxPlatform ? { sandboxPlatform: config.sandboxPlatform } : {}),
        ...(config.microvmDiskMiB ? { microvmDiskMiB: config.microvmDiskMiB } : {}),
        ...(config.baseImageCache ? { baseImageCache: config.baseImageCache } : {}),
        ...(config.debianMirror ? { debianMirror: config.debianMirror } : {}),
        ...(config.s3Endpoint ? { s3Endpoint: config.s3Endpoint } : {}),
        ...(config.artifactCaFile ? { artifactCaFile: config.artifactCaFile } : {}),
      }, logs, sandboxes.nets, sandboxes.egress, settings);
      return replicas ? new ReplicatedBuilder(docker, replicas) : docker;
    },
    discardLocal: (imageArn, version) => docker!.discard(imageArn, version),
    log,
  });
  cluster = await ClusterStore.open(config.database, log);
  let store: PostgresStore | undefined;
  let service: AgentService | undefined;
  try {
    store = await PostgresStore.open(config.database, log);
    const runsc = (await runscVersion()).split("\n")[0]?.trim() ?? "unknown";
    const platform = config.sandboxPlatform ?? DEFAULT_SANDBOX_PLATFORM;
    const address = `${advertise.host}:${advertise.port}`;
    const capacity = () => {
      const fs = statfsSync(config.dataDir);
      return {
        id: hostId,
        address,
        memoryMiB: meminfo("MemTotal"),
        freeMemoryMiB: meminfo("MemAvailable"),
        cpus: availableParallelism(),
        diskMiB: Math.floor((fs.blocks * fs.bsize) / 1048576),
        freeDiskMiB: Math.floor((fs.bavail * fs.bsize) / 1048576),
        architecture: host.architecture,
        runscVersion: runsc,
        platform,
      };
    };
    await sandboxes.egress.install();
    // What builds of a previous process left (none runs now).
    await builds.recover();
    service = new AgentService({ hostId, runtime: served, local, cluster, store, tls, capacity, log, builds });
    await service.start(listen.host, listen.port);
    log({ msg: "lmvm agent started", hostId, listen: config.listen, advertise: address, dataDir: config.dataDir, platform, runsc, objectStore: config.objectStore?.url ?? null });
  } catch (err) {
    await service?.stop().catch(() => undefined);
    await runtime.stop().catch(() => undefined);
    await sandboxes.egress.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    await cluster.close().catch(() => undefined);
    throw err;
  }
  const s = service;
  const st = store;
  return {
    hostId,
    address: `${advertise.host}:${advertise.port}`,
    async stop() {
      const steps = [() => s.stop(), () => runtime.stop(), () => sandboxes.egress.close(), () => st.close(), () => cluster.close()];
      let failure: unknown;
      for (const step of steps) await Promise.resolve().then(step).catch((err: unknown) => (failure ??= err));
      if (failure !== undefined) throw failure;
    },
  };
}
