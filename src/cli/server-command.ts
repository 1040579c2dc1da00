// `lmvm server`: runs the platform in the foreground until SIGINT or SIGTERM,
// then stops within SHUTDOWN_DEADLINE_MS and exits, whatever is still running.

import { isIP } from "node:net";
import { parseArgs } from "node:util";
// The leaf module, not the builder's face: help and flag parsing need no builder.
import { DEFAULT_PHASE_TIMEOUTS, describeDuration, parsePhaseTimeouts, PHASES } from "../builder/phases.js";
import { defaultDataDir, DEFAULTS, jsonLog, startPlatform } from "../server/index.js";
import { parseEndpointLimits } from "../proxy/limits.js";
import { UsageError } from "./flags.js";
import { redactUrl } from "../store/index.js";
import { SANDBOX_PLATFORMS, type SandboxPlatform } from "../runtime/index.js";
// The leaf modules, not the core's face: parsing the flags needs nothing else.
import { DEFAULT_QUOTAS, parseQuotas } from "../core/quotas.js";
import { parseRateLimits } from "../core/rate-limits.js";
import { MAX_WARM_POOL } from "../core/warm-pools.js";

export const SERVER_HELP = `NAME
    server

DESCRIPTION
    Starts the lmvm platform: the control API (AWS Lambda MicroVMs, SigV4-signed)
    and everything behind it. Runs in the foreground; logs are JSON lines on stdout.

SYNOPSIS
    lmvm server [--api-port <port>] [--api-host <addr>] [--data-dir <dir>] [--database <postgres://...>]
                [--region <region>] [--account-id <12 digits>]
                [--endpoint-domain <domain>] [--endpoint-port <port>] [--endpoint-host <addr>]
                [--build-concurrency <n>] [--microvm-disk-mib <MiB>] [--s3-endpoint <url>]
                [--base-image-cache <dir>] [--debian-mirror <url>]
                [--artifact-ca-file <pem>] [--build-phase-timeouts <phase=duration,...>]
                [--endpoint-limits <aws|off|name=N,...>] [--quotas <key=value,...>]
                [--rate-limits <Operation=rate,...>] [--default-egress internet|none]
                [--dns-resolvers <addr,...>] [--audit-retention-days <days>] [--warm-pool <n>]
                [--platform systrap|ptrace] [--no-builder] [--no-snapshots] [--cluster-dir <dir>] [--cluster-listen <ip:port>]
                [--object-store s3://bucket[/prefix]|file:///dir] [--object-store-endpoint <url>]
                [--object-store-path-style true|false]

OPTIONS
    --api-port           Control API port (default ${DEFAULTS.apiPort}).
    --api-host           Address to listen on (default ${DEFAULTS.apiHost}).
    --data-dir           Where everything is kept (default LMVM_DATA_DIR, else /var/lib/lmvm as root).
    --database           PostgreSQL database for the platform's state, as postgres://user[:password]@host[:port]/db
                         (default LMVM_DATABASE, else SQLite in <data-dir>/lmvm.db). Credentials, keys,
                         logs, images and sandboxes stay in --data-dir.
    --region             Region in ARNs and signatures (default ${DEFAULTS.region}).
    --account-id         Account in ARNs (default ${DEFAULTS.accountId}).
    --endpoint-domain    Domain of MicroVM endpoints (default ${DEFAULTS.endpointDomain}).
    --endpoint-port      Port of MicroVM endpoints (default ${DEFAULTS.endpointPort}).
    --endpoint-host      Address the endpoint proxy listens on (default ${DEFAULTS.endpointHost};
                         0.0.0.0 serves other machines).
    --build-concurrency  Image builds run at once (default ${DEFAULTS.buildConcurrency}).
    --microvm-disk-mib   At most what each MicroVM may write to its disk, in MiB (default: no cap;
                         each MicroVM gets its size's disk, 8 to 32 GiB, or this if smaller).
                         Past it, writes fail with ENOSPC and the MicroVM's stateReason says so.
    --s3-endpoint        S3-compatible endpoint for s3:// code artifacts (default: AWS).
                         Credentials: LMVM_S3_ACCESS_KEY_ID and LMVM_S3_SECRET_ACCESS_KEY,
                         else the AWS SDK's default chain.
    --base-image-cache   Where managed base images are made and kept (default <data-dir>/base-images).
    --debian-mirror      Debian mirror for the debian12 base image (default http://deb.debian.org/debian).
    --artifact-ca-file   Extra CA certificates (PEM) trusted for https:// code artifacts.
    --build-phase-timeouts
                         How long each phase of a build may take, as phase=duration pairs
                         (units s, m, h; seconds when none), e.g. buildah=1h,base-image=45m.
                         Past it the build fails naming the phase, and all it started is stopped.
                         Defaults: ${PHASES.slice(0, 3).map((p) => `${p} ${describeDuration(DEFAULT_PHASE_TIMEOUTS[p])}`).join(", ")},
                         ${PHASES.slice(3).map((p) => `${p} ${describeDuration(DEFAULT_PHASE_TIMEOUTS[p])}`).join(", ")}, plus the image's
                         /ready and /validate timeouts for the snapshot phase.
    --endpoint-limits    Per-MicroVM limits at the endpoint (default aws: 8 open connections and
                         10 requests per second per vCPU of the MicroVM's size, as the service).
                         off, or any of connections-per-vcpu=N, requests-per-second-per-vcpu=N,
                         queue-ms=N (how long a request past the connection limit waits, default
                         5000); 0 turns a limit off. Past a limit: 429 with Retry-After.
    --quotas             Account quotas over AWS's defaults, as key=value pairs: microvm-memory-mib
                         (${DEFAULT_QUOTAS["microvm-memory-mib"]}), images (${DEFAULT_QUOTAS.images}), versions-per-image (${DEFAULT_QUOTAS["versions-per-image"]}),
                         concurrent-builds (${DEFAULT_QUOTAS["concurrent-builds"]}), e.g. microvm-memory-mib=819200,images=200.
    --rate-limits        Requests per second per operation over AWS's defaults (burst = rate), as
                         Operation=rate pairs, '*' for every operation, e.g. RunMicrovm=20,GetMicrovm=500.
                         Defaults: RunMicrovm 5, ResumeMicrovm 5, SuspendMicrovm 2, TerminateMicrovm 10,
                         GetMicrovm 100, CreateMicrovmAuthToken 50, CreateMicrovmShellAuthToken 5;
                         other reads 100, other writes 15. The server's start log lists them all.
    --default-egress     What a MicroVM may reach when run-microvm names no egress connector:
                         internet (default, as the documentation says: INTERNET_EGRESS is recorded
                         on the MicroVM) or none. An explicit empty list always means no egress.
    --warm-pool          Warm clones (restored, paused sandboxes that run-microvm claims instead of
                         restoring) kept of each image's latest version, for images without an
                         lmvm:warm-pool tag (0 to 50; default 0). The tag, 0 to 50, sets an image's own.
    --dns-resolvers      Upstream resolvers for MicroVMs' DNS (169.254.169.253 inside), as IP
                         addresses, e.g. 10.0.0.2,1.1.1.1 (default: the nameservers of the host's
                         /etc/resolv.conf).
    --audit-retention-days
                         Days the audit trail (lmvm audit, CloudTrail LookupEvents) keeps each
                         API call's event (default 90, as CloudTrail's event history); older
                         events are removed at start and hourly.
    --platform           gVisor platform of every sandbox (runsc --platform): systrap (default;
                         faster system calls, but each idle MicroVM burns about 4% of a core in
                         runsc 20240729's fast-path monitor) or ptrace (idles near 0%; slower
                         system calls). Snapshots and suspended MicroVMs' checkpoints restore
                         only on the platform that made them: a version snapshotted on another
                         one is refused by run-microvm (build a new version with
                         update-microvm-image, or restart with that platform), and so is a
                         suspended MicroVM's resume; its checkpoint is kept.
    --cluster-dir        Cluster mode (needs --database): MicroVMs run on the hosts of lmvm agents
                         registered in the database, none here; the server reaches them over mutual
                         TLS with the cluster CA in this directory ('lmvm cluster init'), as node
                         'server' (nodes/server.pem, issued at start where ca.key is). Builds stay
                         on this host. 'lmvm cluster help'.
    --cluster-listen     Cluster mode: where agents ask, over mutual TLS, for the execution-role
                         credentials of the MicroVMs they run, and where standby API nodes relay
                         their clients' connections, as <ip>:<port>. A server started while another
                         leads the database is a standby: it relays its API and endpoint ports to
                         the leader and takes over when the leader dies (it needs --cluster-listen,
                         and a copy of the leader's secrets/, credentials and tls/ in its data dir).
    --no-builder         Do not build images on this host; builds wait in the queue.
    --object-store       Where built images and suspended MicroVMs' checkpoints are kept for every
                         server sharing the database (default LMVM_OBJECT_STORE, else none):
                         s3://bucket[/prefix] (credentials and region from the AWS SDK's chain:
                         AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION...) or file:///dir (a directory
                         every host mounts). A version's image is uploaded when its build succeeds
                         and fetched by a server that lacks it; a suspend uploads the checkpoint,
                         so any server may resume it. The data directory then only caches them.
    --object-store-endpoint
                         An S3-compatible server for s3:// (default AWS_ENDPOINT_URL_S3, else
                         AWS_ENDPOINT_URL, else AWS).
    --object-store-path-style
                         Path-style S3 addressing, http://host/bucket/key (default true with an
                         endpoint, false for AWS).
    --no-snapshots       End builds at the root filesystem, without booting and checkpointing the app.

    Root credentials are written to <data-dir>/credentials on first start, from
    LMVM_ROOT_ACCESS_KEY_ID and LMVM_ROOT_SECRET_ACCESS_KEY when both are set.
`;

/** How long `lmvm server` may take to stop after SIGTERM or SIGINT. */
const SHUTDOWN_DEADLINE_MS = 20_000;

function port(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${flag} must be a port number (0-65535); got '${value}'.`);
  return n;
}

export async function serverCommand(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        "api-port": { type: "string" }, "api-host": { type: "string" }, "data-dir": { type: "string" }, database: { type: "string" },
        region: { type: "string" }, "account-id": { type: "string" }, "endpoint-domain": { type: "string" },
        "endpoint-port": { type: "string" }, "endpoint-host": { type: "string" }, "build-concurrency": { type: "string" }, "microvm-disk-mib": { type: "string" }, help: { type: "boolean" },
        "s3-endpoint": { type: "string" }, "base-image-cache": { type: "string" }, "debian-mirror": { type: "string" },
        "artifact-ca-file": { type: "string" }, "no-builder": { type: "boolean" }, "no-snapshots": { type: "boolean" }, platform: { type: "string" },
        "build-phase-timeouts": { type: "string" }, "endpoint-limits": { type: "string" }, quotas: { type: "string" }, "rate-limits": { type: "string" },
        "default-egress": { type: "string" }, "audit-retention-days": { type: "string" },
        "dns-resolvers": { type: "string" }, "warm-pool": { type: "string" }, "cluster-dir": { type: "string" }, "cluster-listen": { type: "string" },
        "object-store": { type: "string" }, "object-store-endpoint": { type: "string" }, "object-store-path-style": { type: "string" },
      },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${SERVER_HELP}`);
  }
  if (values.help) {
    process.stdout.write(SERVER_HELP);
    return;
  }
  const concurrency = Number(values["build-concurrency"] ?? DEFAULTS.buildConcurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError("--build-concurrency must be a whole number of at least 1.");
  const diskMiB = values["microvm-disk-mib"] === undefined ? undefined : Number(values["microvm-disk-mib"]);
  if (diskMiB !== undefined && (!Number.isInteger(diskMiB) || diskMiB < 16)) throw new UsageError(`--microvm-disk-mib must be a whole number of MiB, at least 16; got '${values["microvm-disk-mib"]}'.`);
  let phaseTimeouts;
  try {
    phaseTimeouts = values["build-phase-timeouts"] === undefined ? undefined : parsePhaseTimeouts(values["build-phase-timeouts"]);
  } catch (err) {
    throw new UsageError(`--build-phase-timeouts: ${(err as Error).message}`);
  }
  let endpointLimits;
  try {
    endpointLimits = values["endpoint-limits"] === undefined ? undefined : parseEndpointLimits(values["endpoint-limits"]);
  } catch (err) {
    throw new UsageError(`--endpoint-limits: ${(err as Error).message}`);
  }
  let quotas, rateLimits;
  try {
    quotas = values.quotas === undefined ? undefined : parseQuotas(values.quotas);
  } catch (err) {
    throw new UsageError(`--quotas: ${(err as Error).message}`);
  }
  try {
    rateLimits = values["rate-limits"] === undefined ? undefined : parseRateLimits(values["rate-limits"]);
  } catch (err) {
    throw new UsageError(`--rate-limits: ${(err as Error).message}`);
  }
  const defaultEgress = values["default-egress"];
  if (defaultEgress !== undefined && defaultEgress !== "internet" && defaultEgress !== "none") {
    throw new UsageError(`--default-egress must be internet or none; got '${defaultEgress}'.`);
  }
  const dnsResolvers = values["dns-resolvers"]?.split(",").map((a) => a.trim()).filter(Boolean);
  if (dnsResolvers && (!dnsResolvers.length || dnsResolvers.some((a) => !isIP(a)))) throw new UsageError(`--dns-resolvers must be IP addresses separated by commas, e.g. 10.0.0.2,1.1.1.1; got '${values["dns-resolvers"]}'.`);
  const retention = values["audit-retention-days"];
  if (retention !== undefined && !/^[1-9]\d{0,4}$/.test(retention)) throw new UsageError(`--audit-retention-days must be a whole number of days from 1 to 99999; got '${retention}'.`);
  const warmPool = values["warm-pool"];
  if (warmPool !== undefined && (!/^\d{1,2}$/.test(warmPool) || Number(warmPool) > MAX_WARM_POOL)) throw new UsageError(`--warm-pool must be a whole number of warm clones from 0 to ${MAX_WARM_POOL}; got '${warmPool}'.`);
  const database = values.database ?? (process.env.LMVM_DATABASE || undefined);
  if (values["cluster-listen"] && !values["cluster-dir"]) throw new UsageError("--cluster-listen needs --cluster-dir (cluster mode).");
  const listenHost = values["cluster-listen"]?.replace(/:\d*$/, "").replace(/^\[(.*)\]$/, "$1");
  if (listenHost !== undefined && ["0.0.0.0", "::", ""].includes(listenHost)) {
    throw new UsageError(`--cluster-listen needs the address agents reach this server at (its certificate names it, and agents check it), not '${values["cluster-listen"]}': give one of this host's own addresses, e.g. --cluster-listen 10.0.0.5:7710.`);
  }
  if (values["cluster-dir"] && !values["cluster-listen"]) {
    throw new UsageError("--cluster-dir (cluster mode) needs --cluster-listen <ip:port>: the leader records it in the database, and that is where the agents ask for execution-role credentials and standby API nodes relay to; without it every standby and agent would be left with no address, e.g. --cluster-listen 10.0.0.5:7710.");
  }
  if (values["cluster-dir"] && database === undefined) throw new UsageError("--cluster-dir (cluster mode) needs --database postgres://...: the hosts, their heartbeats and the MicroVMs' leases are kept there.");
  if (database !== undefined && !/^postgres(ql)?:\/\/./.test(database)) {
    throw new UsageError(`--database must be a PostgreSQL URL, postgres://user[:password]@host[:port]/database; got '${redactUrl(database)}'.`);
  }
  const sandboxPlatform = values.platform;
  if (sandboxPlatform !== undefined && !(SANDBOX_PLATFORMS as readonly string[]).includes(sandboxPlatform)) {
    throw new UsageError(`--platform must be one of ${SANDBOX_PLATFORMS.join(", ")}; got '${sandboxPlatform}'.`);
  }
  const objectStoreUrl = values["object-store"] ?? (process.env.LMVM_OBJECT_STORE || undefined);
  if (objectStoreUrl !== undefined && !/^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.*)$/.test(objectStoreUrl)) {
    throw new UsageError(`--object-store must be s3://bucket[/prefix] or file:///absolute/path; got '${objectStoreUrl}'.`);
  }
  const objectStoreEndpoint = values["object-store-endpoint"];
  if (objectStoreEndpoint !== undefined && !/^https?:\/\/[^/]+/.test(objectStoreEndpoint)) throw new UsageError(`--object-store-endpoint must be an http:// or https:// URL; got '${objectStoreEndpoint}'.`);
  if (objectStoreEndpoint !== undefined && !objectStoreUrl?.startsWith("s3://")) throw new UsageError("--object-store-endpoint needs --object-store s3://bucket[/prefix].");
  const pathStyle = values["object-store-path-style"];
  if (pathStyle !== undefined && pathStyle !== "true" && pathStyle !== "false") throw new UsageError(`--object-store-path-style must be true or false; got '${pathStyle}'.`);
  if (pathStyle !== undefined && !objectStoreUrl?.startsWith("s3://")) throw new UsageError("--object-store-path-style needs --object-store s3://bucket[/prefix].");
  const platform = await startPlatform({
    ...(objectStoreUrl ? { objectStore: { url: objectStoreUrl, ...(objectStoreEndpoint ? { endpoint: objectStoreEndpoint } : {}), ...(pathStyle ? { pathStyle: pathStyle === "true" } : {}) } } : {}),
    dataDir: values["data-dir"] ?? defaultDataDir(),
    ...(database ? { database } : {}),
    ...(values["cluster-dir"] ? { clusterDir: values["cluster-dir"] } : {}),
    ...(values["cluster-listen"] ? { clusterListen: values["cluster-listen"] } : {}),
    apiHost: values["api-host"] ?? DEFAULTS.apiHost,
    apiPort: port("api-port", values["api-port"], DEFAULTS.apiPort),
    region: values.region ?? DEFAULTS.region,
    accountId: values["account-id"] ?? DEFAULTS.accountId,
    endpointDomain: values["endpoint-domain"] ?? DEFAULTS.endpointDomain,
    endpointPort: port("endpoint-port", values["endpoint-port"], DEFAULTS.endpointPort),
    endpointHost: values["endpoint-host"] ?? DEFAULTS.endpointHost,
    buildConcurrency: concurrency,
    ...(diskMiB === undefined ? {} : { microvmDiskMiB: diskMiB }),
    ...(values["s3-endpoint"] ? { s3Endpoint: values["s3-endpoint"] } : {}),
    ...(values["base-image-cache"] ? { baseImageCache: values["base-image-cache"] } : {}),
    ...(values["debian-mirror"] ? { debianMirror: values["debian-mirror"] } : {}),
    ...(values["artifact-ca-file"] ? { artifactCaFile: values["artifact-ca-file"] } : {}),
    ...(phaseTimeouts ? { buildPhaseTimeouts: phaseTimeouts } : {}),
    ...(endpointLimits ? { endpointLimits } : {}),
    ...(quotas ? { quotas } : {}),
    ...(rateLimits ? { rateLimits } : {}),
    ...(defaultEgress ? { defaultEgress } : {}),
    ...(dnsResolvers ? { dnsResolvers } : {}),
    ...(warmPool !== undefined ? { warmPool: Number(warmPool) } : {}),
    ...(retention ? { auditRetentionDays: Number(retention) } : {}),
    ...(values["no-builder"] ? { builder: null } : {}),
    ...(values["no-snapshots"] ? { snapshots: false } : {}),
    ...(sandboxPlatform ? { sandboxPlatform: sandboxPlatform as SandboxPlatform } : {}),
  });
  const signal = await stopSignal();
  jsonLog({ msg: "lmvm server stopping", signal, deadlineSeconds: SHUTDOWN_DEADLINE_MS / 1000 });
  // A second signal, or the deadline, ends the process at once. Builds still
  // running are recorded IN_PROGRESS and queued again at the next start; the
  // tools they run die with this process (setpriv --pdeathsig).
  const now = () => process.exit(1);
  process.once("SIGINT", now);
  process.once("SIGTERM", now);
  const stopped = await Promise.race([
    platform.stop().then(
      () => true,
      (err: Error) => (jsonLog({ level: "error", msg: "lmvm server stop failed", err: err.message }), true),
    ),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), SHUTDOWN_DEADLINE_MS)),
  ]);
  if (!stopped) jsonLog({ level: "warn", msg: `lmvm server did not stop within ${SHUTDOWN_DEADLINE_MS / 1000} s; exiting anyway` });
  else jsonLog({ msg: "lmvm server stopped" });
  // Whatever still holds the event loop (a stalled hook call, a client's open connection) must not keep the process alive.
  process.exit(stopped ? 0 : 1);
}

/** Resolves with the first SIGINT or SIGTERM, the way an operator or systemd stops a server or agent. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise<NodeJS.Signals>((resolve) => {
    const stop = (name: NodeJS.Signals) => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve(name);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
