// The composition root: opens the data directory, the store and the secrets,
// builds the core with whatever builder and runtime this host has, and serves
// the control API. `lmvm server` and the tests start the platform here.
// Whether the host runs MicroVMs depends only on runsc being there, never on
// the build flags (--no-builder, --no-snapshots): MicroVMs outlive a restart
// with any of them.

import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { authenticateRequest, buildApi, cloudTrailApi, iamApi, Metrics, PageTokens, SigV4Verifier, stsApi } from "../api/index.js";
import { DEFAULT_ASSETS_DIR, registerConsole } from "../console/index.js";
import { builtImageDir, DEFAULT_LIMITS } from "../builder/index.js";
import { dockerfileBuilder, type BuildHostConfig } from "./build-host.js";
import { LogFiles, writeFileAtomic } from "../os/index.js";
import { CloudWatchLogsService, LogCatalog } from "../logs/index.js";
import { DEFAULT_SANDBOX_PLATFORM, Gvisor, MicrovmRuntime, type SandboxPlatform } from "../runtime/index.js";
import { EndpointProxy, ensureCertificates, MicrovmTokens, type EndpointLimitsConfig } from "../proxy/index.js";
import { AuditTrail, DEFAULT_AUDIT_RETENTION_DAYS, VERSION_STATES, ControlPlane, IdentityService, NoSandboxes, systemClock, type Clock, type DefaultEgress, type ImageBuilder, type Quotas, type SandboxRuntime } from "../core/index.js";
import { ShellIngress } from "../shell/index.js";
import { ClusterStore, PostgresStore, SqliteStore } from "../store/index.js";
import { nodeCredentials, RemoteBuilder, RemoteRuntime, serveCredentials, type RelayTarget } from "../cluster/index.js";
import type { TLSSocket } from "node:tls";
import { leadOrStandBy, secretChecks } from "./api-nodes.js";
import { parseHostPort } from "./agent.js";
import { FileObjectStore, openObjectStore, Replicas, ReplicatedBuilder, ReplicatedRuntime, type ObjectStoreConfig } from "../objects/index.js";
import { deriveKey, paths, rootCredentials, serverKey, type ServerInfo } from "./data-dir.js";
import { hostPlatform } from "./host.js";
import { composeSandboxHost } from "./sandbox-host.js";
import { hostNameResolver } from "./name-resolver.js";
import { AesGcmBox } from "./secret-box.js";

/** The build settings (base images, artifacts, phase deadlines, limits, snapshots) are the build host's (build-host.ts), shared with agents. */
export interface PlatformConfig extends Omit<BuildHostConfig, "dataDir" | "region" | "sandboxPlatform" | "microvmDiskMiB"> {
  dataDir: string;
  /**
   * Cluster mode (docs/design.md, "Many hosts"): the cluster directory (its CA, and this server's
   * certificate or the CA key to issue it). MicroVMs then run on the agents registered in the
   * database (which must be PostgreSQL), none on this host.
   */
  clusterDir?: string;
  /** Cluster mode: ip:port where agents ask for their MicroVMs' execution-role credentials (mutual TLS). */
  clusterListen?: string;
  /** A postgres:// URL: state is kept in that PostgreSQL database instead of <dataDir>/lmvm.db (SQLite). */
  database?: string;
  apiHost: string;
  apiPort: number;
  region: string;
  accountId: string;
  endpointDomain: string;
  endpointPort: number;
  /** Where the endpoint proxy listens (default 127.0.0.1; 0.0.0.0 to serve other machines). */
  endpointHost?: string;
  buildConcurrency: number;
  /** At most what each MicroVM can write to its disk, in MiB; each gets its size's disk (8-32 GiB) within it. Default: no cap. */
  microvmDiskMiB?: number;
  /**
   * The gVisor platform (runsc --platform) of every sandbox: builds' snapshots and MicroVMs
   * (default systrap). Checkpoints are stamped with it; one made on another platform is refused
   * with a reason, never restored (docs/design.md, "gVisor platform").
   */
  sandboxPlatform?: SandboxPlatform;
  clock?: Clock;
  log?: (event: Record<string, unknown>) => void;
  /** Replaces the Dockerfile builder; null runs without one (builds wait in the queue). */
  builder?: ImageBuilder | null;
  /** Replaces the gVisor runtime (tests); default: gVisor where runsc is installed, else NoSandboxes. */
  runtime?: SandboxRuntime;
  /** The endpoint's per-MicroVM connection and request-rate limits (default: the service's, AWS_ENDPOINT_LIMITS). */
  endpointLimits?: EndpointLimitsConfig;
  /** Quota values over AWS's defaults (DEFAULT_QUOTAS in src/core/quotas.ts). */
  quotas?: Partial<Quotas>;
  /** Requests per second per operation over AWS's defaults (DEFAULT_RATE_LIMITS in src/core/rate-limits.ts); `*` sets all. */
  rateLimits?: Partial<Record<string, number>>;
  /** What a MicroVM gets when RunMicrovm names no egress connector (default internet, as documented). */
  defaultEgress?: DefaultEgress;
  /** Warm clones kept of each image without an `lmvm:warm-pool` tag (lmvm server --warm-pool; default 0). */
  warmPool?: number;
  /** Upstream resolvers sandboxes' DNS queries are relayed to (default: the host's /etc/resolv.conf nameservers). */
  dnsResolvers?: string[];
  /**
   * Where built images and suspended MicroVMs' checkpoints are kept for every host (s3://bucket/prefix
   * or file:///shared/dir); the data directory then caches them (docs/design.md, "Object store").
   */
  objectStore?: ObjectStoreConfig;
  /** Days audit events are kept (default DEFAULT_AUDIT_RETENTION_DAYS, 90, as CloudTrail's event history). */
  auditRetentionDays?: number;
}

export const DEFAULTS = {
  apiHost: "127.0.0.1",
  apiPort: 7600,
  region: "us-east-1",
  accountId: "000000000000",
  endpointDomain: "microvm.localhost",
  endpointPort: 7643,
  endpointHost: "127.0.0.1",
  buildConcurrency: 2,
};

export interface Platform {
  /** Base URL of the control API, e.g. http://127.0.0.1:7600 */
  url: string;
  /** Port of the endpoint proxy (the configured one, or the one picked for 0). */
  endpointPort: number;
  controlPlane: ControlPlane;
  /**
   * Users, roles, policies and sessions: the API authenticates and authorises through it
   * (Identities), IAM and STS administer it (IamAdministration), the metadata service asks it
   * for role credentials (RoleCredentialSource).
   */
  identities: IdentityService;
  /** The sandbox runtime (MicrovmRuntime where runsc is installed). */
  runtime: SandboxRuntime;
  stop(): Promise<void>;
}

export function jsonLog(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: "info", ...event })}\n`);
}

export async function startPlatform(config: PlatformConfig): Promise<Platform> {
  const log = config.log ?? jsonLog;
  const clock = config.clock ?? systemClock;
  if (!/^[0-9]{12}$/.test(config.accountId)) throw new Error(`--account-id must be 12 digits; got '${config.accountId}'.`);
  if (config.auditRetentionDays !== undefined && (!Number.isInteger(config.auditRetentionDays) || config.auditRetentionDays < 1)) {
    throw new Error(`--audit-retention-days must be a whole number of days of at least 1; got '${config.auditRetentionDays}'.`);
  }
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(config.region)) throw new Error(`--region must look like us-east-1; got '${config.region}'.`);
  // A URL that names no store stops the start; a store that cannot be reached now does not (its outage must not keep
  // this host's MicroVMs from being served): it is logged, and what needs it waits or is refused with the reason.
  const objects = config.objectStore ? openObjectStore(config.objectStore) : undefined;
  // A file:// directory that is missing stops the start (under a deadline: a hung mount must not hang it).
  if (objects instanceof FileObjectStore) await objects.probe(AbortSignal.timeout(10_000));
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const files = paths(config.dataDir);
  const creds = rootCredentials(config.dataDir);
  const master = serverKey(config.dataDir);
  if (config.clusterDir && !config.database) throw new Error("Cluster mode (--cluster-dir) keeps hosts and leases in PostgreSQL: give --database postgres://...");
  // Images are built on one agent and run on others, checkpoints resume on another host: both go through the object store.
  if (config.clusterDir && !config.objectStore) throw new Error("Cluster mode (--cluster-dir) keeps images and checkpoints where every host reaches them: give --object-store s3://bucket[/prefix] (or file:///dir, a directory every host mounts).");
  const store = config.database ? await PostgresStore.open(config.database, log) : await SqliteStore.open(files.database);
  if (store instanceof PostgresStore) {
    // The server lock's session ended (PostgreSQL restarted, the connection cut) and another API node
    // took the lock before this one could take it again: two servers must never act on one database.
    // This one stops at once (its MicroVMs outlive it by design); restarted by its supervisor, it stands by.
    store.onServerLockLost((why) => {
      log({ level: "error", msg: `this API node lost the server lock to another API node; exiting at once so that only one server acts on the database (restarted, it stands by): ${why}` });
      process.exit(75);
    });
  }
  // Cluster mode: the hosts and leases (and the leader row), the cluster listener's address, and this server's certificate.
  const clusterListen = config.clusterListen ? parseHostPort("cluster-listen", config.clusterListen) : undefined;
  let cluster: ClusterStore | undefined;
  let serverTls: Awaited<ReturnType<typeof nodeCredentials>> | undefined;
  const tls = await ensureCertificates(files.tls, config.endpointDomain);
  let apiPort = config.apiPort;
  let endpointPort = config.endpointPort;
  const writeInfo = (apiUrl: string, port: number) => {
    const info: ServerInfo = {
      apiEndpoint: apiUrl, region: config.region, accountId: config.accountId, pid: process.pid,
      endpointDomain: config.endpointDomain, endpointPort: port, endpointHost: config.endpointHost ?? DEFAULTS.endpointHost, caFile: tls.caCert,
    };
    writeFileAtomic(files.serverInfo, JSON.stringify(info, null, 2), 0o644);
  };
  try {
    if (store instanceof PostgresStore && config.clusterDir) {
      cluster = await ClusterStore.open(config.database!, log);
      serverTls = await nodeCredentials(config.clusterDir, "server", "server", clusterListen ? [clusterListen.host] : []);
      // The leader, or a standby relaying to it until it can take over (api-nodes.ts).
      ({ apiPort, endpointPort } = await leadOrStandBy({
        store,
        cluster,
        checks: secretChecks(master, creds, tls.caCert),
        files: { serverKey: files.serverKey, credentials: files.credentials, tls: files.tls },
        ...(config.clusterListen ? { clusterListen: config.clusterListen } : {}),
        tls: serverTls,
        api: { host: config.apiHost, port: config.apiPort },
        endpoint: { host: config.endpointHost ?? DEFAULTS.endpointHost, port: config.endpointPort },
        log,
        standing: (ports) => writeInfo(`http://${config.apiHost}:${ports.apiPort}`, ports.endpointPort),
      }));
    } else if (store instanceof PostgresStore) {
      await store.claimServer(config.database!);
    }
  } catch (err) {
    await cluster?.close().catch(() => undefined);
    await store.close();
    throw err;
  }
  const identities = await IdentityService.open({
    store,
    clock,
    accountId: config.accountId,
    root: creds,
    secrets: new AesGcmBox(deriveKey(master, "iam-secrets")),
    sessions: new AesGcmBox(deriveKey(master, "sts-session")),
    log,
  });

  const scope = { region: config.region, accountId: config.accountId };
  const buildLogs = new LogFiles(files.buildLogs);
  const host = hostPlatform();
  // The sandboxes' side of this host, composed as an agent composes its own (sandbox-host.ts).
  const sandboxes = composeSandboxHost({
    dataDir: config.dataDir,
    ...(config.sandboxPlatform ? { sandboxPlatform: config.sandboxPlatform } : {}),
    ...(config.microvmDiskMiB ? { microvmDiskMiB: config.microvmDiskMiB } : {}),
    ...(config.dnsResolvers ? { dnsResolvers: config.dnsResolvers } : {}),
    region: config.region,
    log,
    credentials: identities,
    host,
    // No gVisor runtime where MicroVMs run elsewhere: on agents (cluster mode), or in a runtime the caller gives (tests).
    ...(config.clusterDir || config.runtime ? { microvms: false } : {}),
  });
  // Cluster mode: the runtime is the agents', over mutual TLS (src/cluster).
  // Where agents get their MicroVMs' execution-role credentials (the identity service is here), and standbys relay to.
  // Cluster mode builds on the agents (src/cluster/remote-builder.ts); made below, with the build logs.
  let remoteBuilder: RemoteBuilder | undefined;
  let relayTo: ((target: RelayTarget, socket: TLSSocket) => void) | undefined;
  const credentialsListener = cluster && clusterListen
    ? await serveCredentials({ tls: serverTls!, cluster, source: identities, microvm: (id) => store.getMicrovm(id), buildRole: (hostId, imageArn, buildId) => remoteBuilder?.buildRole(hostId, imageArn, buildId), host: clusterListen.host, port: clusterListen.port, log, relay: () => relayTo })
    : undefined;
  // The object store's replicas (made below, with the runtime): the remote runtime asks them about suspended MicroVMs of lost hosts.
  let replicaSet: Replicas | undefined;
  const replicasOf = (): Replicas => {
    if (!replicaSet) throw new Error("the object store is not open yet");
    return replicaSet;
  };
  const remote = cluster
    ? new RemoteRuntime({
        cluster,
        tls: serverTls!,
        platform: config.sandboxPlatform ?? DEFAULT_SANDBOX_PLATFORM,
        architecture: host.architecture,
        log,
        sharedCheckpoints: objects !== undefined,
        ...(objects ? { storedCheckpoint: (id: string) => replicasOf().storedCheckpoint(id), dropCheckpoints: (id: string) => replicasOf().deleteCheckpoints(id) } : {}),
        // Builds are on this host: their snapshots' platform stamps say whether the cluster's platform restores them.
        unrunnable: (version) => {
          const snapshot = join(builtImageDir(files.images, version.imageArn, version.version, host.architecture), "snapshot");
          if (!existsSync(join(snapshot, "checkpoint.img"))) return undefined;
          const mismatch = new Gvisor({ stateRoot: files.runscMicrovms, ...(config.sandboxPlatform ? { platform: config.sandboxPlatform } : {}) }).mismatch(snapshot, "its snapshot");
          if (!mismatch) return undefined;
          return mismatch.made === "unknown" ? `${mismatch.message}. Build a new version (update-microvm-image).` : `${mismatch.message}. Build a new version (update-microvm-image), or run the cluster with --platform ${mismatch.made}.`;
        },
      })
    : undefined;
  const { nets, egress, microvmLogs } = sandboxes;
  const logCatalog = new LogCatalog({ microvms: microvmLogs, builds: buildLogs, lookup: store });
  // Cluster mode: each build is placed on an agent, which uploads its image to the object store before it answers.
  const localBuilder = config.builder !== undefined ? config.builder
    : cluster
      ? (remoteBuilder = new RemoteBuilder({
          cluster,
          tls: serverTls!,
          platform: config.sandboxPlatform ?? DEFAULT_SANDBOX_PLATFORM,
          architecture: host.architecture,
          logs: buildLogs,
          settings: { ...(config.buildPhaseTimeouts ? { phaseTimeouts: config.buildPhaseTimeouts } : {}), limits: config.buildLimits ?? DEFAULT_LIMITS, ...(config.snapshots === false ? { snapshots: false } : {}) },
          ...(objects ? { discardStored: (imageArn: string, version: string) => replicasOf().deleteImage(imageArn, version) } : {}),
          log,
        }))
      : dockerfileBuilder(config, buildLogs, nets, egress);
  const localRuntime: SandboxRuntime = config.runtime ?? remote ?? sandboxes.runtime
    ?? new NoSandboxes("runsc (gVisor) is not installed or not on PATH; install it (see docs/design.md, host prerequisites) and restart lmvm server.");
  // With an object store, builds put their images there and MicroVMs' checkpoints go there on suspend (src/objects).
  // In cluster mode each agent wraps its own runtime and builder so (src/server/agent.ts).
  let builder = localBuilder;
  let runtime: SandboxRuntime = localRuntime;
  if (objects) {
    const replicas = (replicaSet = new Replicas({
      store: objects,
      architecture: host.architecture,
      imageDir: (imageArn, version) => builtImageDir(files.images, imageArn, version, host.architecture),
      microvmDir: (id) => join(files.microvms, id),
      stagingDir: files.objects,
      markerFile: join(config.dataDir, "object-store.json"),
      log,
    }));
    // The store's marker (lmvm-store.json), written on first use; until it is found, nothing the store lacks counts as gone.
    await replicas.checkMarker(AbortSignal.timeout(10_000)).catch((err: Error) => {
      log({ level: "error", msg: `--object-store ${objects.url} cannot be reached now, or is not the store this server used: ${err.message}. Check that the bucket or directory exists, the endpoint (--object-store-endpoint), and the AWS credentials and region in the environment. Until it can, builds fail at their upload, suspends keep MicroVMs running, and suspended MicroVMs whose checkpoint is not here stay as recorded.` });
    });
    if (builder && !remoteBuilder) builder = new ReplicatedBuilder(builder, replicas);
    if (localRuntime instanceof MicrovmRuntime) runtime = new ReplicatedRuntime(localRuntime, replicas, { microvmDir: (id) => localRuntime.dir(id), log });
    log({ msg: "object store", url: objects.url });
  }
  const metrics = new Metrics(store, localRuntime instanceof MicrovmRuntime ? () => localRuntime.networkCounters() : undefined, localRuntime instanceof MicrovmRuntime ? () => localRuntime.poolFigures() : undefined);
  const tokens = new MicrovmTokens(deriveKey(master, "microvm-tokens"));
  // What sandboxes may reach: the host's shared nftables table (base chains), IPv4 forwarding, and no chains of sandboxes that are gone.
  if (localRuntime instanceof MicrovmRuntime || (config.builder === undefined && !cluster)) await egress.install();
  const controlPlane = new ControlPlane({
    store,
    clock,
    scope,
    host,
    tokens,
    endpointFor: (id) => `https://${id}.${config.endpointDomain}:${endpointPort}`,
    timings: metrics,
    buildConcurrency: config.buildConcurrency,
    log,
    ...(builder ? { builder } : {}),
    runtime,
    ...(config.quotas ? { quotas: config.quotas } : {}),
    ...(config.rateLimits ? { rateLimits: config.rateLimits } : {}),
    resolver: hostNameResolver,
    ...(config.defaultEgress ? { defaultEgress: config.defaultEgress } : {}),
    ...(config.warmPool !== undefined ? { warmPool: config.warmPool } : {}),
  });
  const shell = new ShellIngress({ spawn: (id, o) => runtime.spawn(id, o), activity: (id) => controlPlane.policies.activity(id), log });
  const proxy = new EndpointProxy({
    tls,
    domain: config.endpointDomain,
    tokens,
    metrics,
    log,
    shell,
    ...(config.endpointLimits ? { limits: config.endpointLimits } : {}),
    directory: {
      peek: (id) => controlPlane.microvms.peek(id),
      imageConfig: async (vm) => (await controlPlane.images.getVersion(vm.imageArn, vm.imageVersion)).version.config,
      resume: (id) => controlPlane.microvms.resume(id),
      activity: (id) => controlPlane.policies.activity(id),
      address: (id) => runtime.address(id),
      connect: (id, port) => runtime.connect(id, port),
    },
  });
  controlPlane.microvms.attachIngress(proxy);
  await controlPlane.start();
  endpointPort = await proxy.listen(endpointPort, config.endpointHost ?? DEFAULTS.endpointHost);

  const verifier = new SigV4Verifier(identities, config.region, clock, "lambda");
  /** Who signed an IAM or STS request (POST /, the signature covering the form body). */
  const callerFor = (service: "iam" | "sts" | "cloudtrail") => {
    const v = new SigV4Verifier(identities, config.region, clock, service);
    return async (req: FastifyRequest, body: Buffer) => (await authenticateRequest(v, req, body)).caller;
  };
  const pageTokens = new PageTokens(deriveKey(master, "page-tokens"));
  // Every API call's event, committed before its answer leaves (src/api/audit-recorder.ts).
  const trail = new AuditTrail(store);
  const app: FastifyInstance = await buildApi({
    controlPlane,
    verifier,
    identities,
    pageTokens,
    audit: { trail, clock, region: config.region, accountId: config.accountId },
    log,
    buildLog: (buildId, follow, finished, signal, from) => buildLogs.read(buildId, follow, finished, signal, from),
    microvmLog: (id, follow, finished, signal, from) => microvmLogs.read(id, follow, finished, signal, from),
    logs: {
      service: new CloudWatchLogsService(logCatalog, { region: config.region }),
      verifier: new SigV4Verifier(identities, config.region, clock, "logs"),
      identities,
      scope,
    },
    postRoot: [
      iamApi({ admin: identities, identities, scope, authenticate: callerFor("iam"), rootCreated: statSync(files.credentials).mtime, log }),
      stsApi({ admin: identities, scope, authenticate: callerFor("sts"), log }),
      cloudTrailApi({ trail, pageTokens, authenticate: callerFor("cloudtrail"), authorize: (caller, request) => identities.authorize(caller, request), log }),
    ],
    metrics: metrics.registry,
  });
  // The web console and its code uploads (src/console), on the API's port and origin.
  registerConsole(app, {
    assetsDir: DEFAULT_ASSETS_DIR,
    uploadsDir: files.uploads,
    verifier,
    identities,
    scope,
    tagsOf: (arn) => store.getTags(arn),
    imageExists: (name) => controlPlane.getMicrovmImage({ imageIdentifier: name }).then(() => true, () => false),
    maxUploadBytes: (config.buildLimits ?? DEFAULT_LIMITS).maxArtifactBytes,
    artifactsInUse: async () => {
      const uris = new Set<string>();
      for (const state of VERSION_STATES) for (const v of await store.versionsInState(state)) uris.add(v.config.codeArtifact.uri);
      return uris;
    },
  });
  await app.listen({ host: config.apiHost, port: apiPort });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : apiPort;
  const url = `http://${config.apiHost}:${port}`;
  writeInfo(url, endpointPort);
  // Standby API nodes' relayed connections (src/cluster/relay.ts): the client's bytes, with its address on the socket.
  relayTo = (target, socket) => {
    if (target === "api") app.server.emit("connection", socket);
    else proxy.accept(socket, { address: socket.remoteAddress ?? "0.0.0.0", port: socket.remotePort ?? 0 });
  };
  log({ msg: "lmvm server started", api: url, endpoints: `https://<microvmId>.${config.endpointDomain}:${endpointPort}`, ca: tls.caCert, dataDir: config.dataDir, sandboxPlatform: config.sandboxPlatform ?? DEFAULT_SANDBOX_PLATFORM, region: config.region, accountId: config.accountId, quotas: controlPlane.quotas, rateLimits: controlPlane.rates.limits });

  // MicroVMs' output goes straight from runsc to their log files: bound them from here,
  // and stamp each second what they gained, so each line gets its time (src/os/log-files.ts).
  const logBounds = setInterval(() => microvmLogs.boundAll(), 5000);
  const logStamps = setInterval(() => logCatalog.sweep(), 1000);
  // Audit events older than the retention period go at start and every hour after, on the writer's thread.
  const retentionDays = config.auditRetentionDays ?? DEFAULT_AUDIT_RETENTION_DAYS;
  let stopping = false;
  const expireAudit = () => {
    trail.expire(clock.now(), retentionDays).then(
      (removed) => removed && log({ msg: "audit events past their retention removed", removed, retentionDays }),
      (err: Error) => stopping || log({ level: "error", msg: "removing expired audit events failed", err: err.message }),
    );
  };
  expireAudit();
  const auditExpiry = setInterval(expireAudit, 3_600_000);
  auditExpiry.unref();
  return {
    url,
    endpointPort,
    controlPlane,
    identities,
    runtime,
    async stop() {
      clearInterval(logBounds);
      clearInterval(logStamps);
      clearInterval(auditExpiry);
      stopping = true;
      relayTo = undefined;
      shell.stop();
      // Builds are aborted while the listeners close: a client following a
      // build's log holds its request open until that build ends.
      const core = controlPlane.stop();
      const cut = setTimeout(() => app.server.closeAllConnections(), 2000);
      await Promise.allSettled([proxy.stop(), app.close()]);
      clearTimeout(cut);
      try {
        await core;
        await trail.drain();
      } finally {
        // Each step runs whatever failed before it. Prepared namespaces and disks belong to no MicroVM: they go.
        // Running sandboxes keep their chains and shaping; the next start re-binds their DNS sockets and metadata listeners.
        const steps = [() => (localRuntime instanceof MicrovmRuntime ? localRuntime.stop() : undefined), () => remote?.stop(), () => remoteBuilder?.stop(), () => credentialsListener?.close(), () => cluster?.close(), () => egress.close(), () => store.close()];
        let failure: unknown;
        for (const step of steps) await Promise.resolve().then(step).catch((err: unknown) => (failure ??= err));
        if (failure !== undefined) throw failure;
      }
    },
  };
}
