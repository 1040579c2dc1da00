// `lmvm server`: runs the platform in the foreground until SIGINT or SIGTERM.

import { parseArgs } from "node:util";
import { defaultDataDir, DEFAULTS, startPlatform } from "../server/index.js";
import { UsageError } from "./flags.js";

export const SERVER_HELP = `NAME
    server

DESCRIPTION
    Starts the lmvm platform: the control API (AWS Lambda MicroVMs, SigV4-signed)
    and everything behind it. Runs in the foreground; logs are JSON lines on stdout.

SYNOPSIS
    lmvm server [--api-port <port>] [--api-host <addr>] [--data-dir <dir>]
                [--region <region>] [--account-id <12 digits>]
                [--endpoint-domain <domain>] [--endpoint-port <port>] [--endpoint-host <addr>]
                [--build-concurrency <n>] [--microvm-disk-mib <MiB>] [--s3-endpoint <url>]
                [--base-image-cache <dir>] [--debian-mirror <url>]
                [--artifact-ca-file <pem>] [--no-builder] [--no-snapshots]

OPTIONS
    --api-port           Control API port (default ${DEFAULTS.apiPort}).
    --api-host           Address to listen on (default ${DEFAULTS.apiHost}).
    --data-dir           Where everything is kept (default LMVM_DATA_DIR, else /var/lib/lmvm as root).
    --region             Region in ARNs and signatures (default ${DEFAULTS.region}).
    --account-id         Account in ARNs (default ${DEFAULTS.accountId}).
    --endpoint-domain    Domain of MicroVM endpoints (default ${DEFAULTS.endpointDomain}).
    --endpoint-port      Port of MicroVM endpoints (default ${DEFAULTS.endpointPort}).
    --endpoint-host      Address the endpoint proxy listens on (default ${DEFAULTS.endpointHost};
                         0.0.0.0 serves other machines).
    --build-concurrency  Image builds run at once (default ${DEFAULTS.buildConcurrency}).
    --microvm-disk-mib   What each MicroVM may write to its disk, in MiB (default ${DEFAULTS.microvmDiskMiB}).
                         Past it, writes fail with ENOSPC and the MicroVM's stateReason says so.
    --s3-endpoint        S3-compatible endpoint for s3:// code artifacts (default: AWS).
                         Credentials: LMVM_S3_ACCESS_KEY_ID and LMVM_S3_SECRET_ACCESS_KEY,
                         else the AWS SDK's default chain.
    --base-image-cache   Where managed base images are made and kept (default <data-dir>/base-images).
    --debian-mirror      Debian mirror for the debian12 base image (default http://deb.debian.org/debian).
    --artifact-ca-file   Extra CA certificates (PEM) trusted for https:// code artifacts.
    --no-builder         Do not build images on this host; builds wait in the queue.
    --no-snapshots       End builds at the root filesystem, without booting and checkpointing the app.

    Root credentials are written to <data-dir>/credentials on first start, from
    LMVM_ROOT_ACCESS_KEY_ID and LMVM_ROOT_SECRET_ACCESS_KEY when both are set.
`;

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
        "api-port": { type: "string" }, "api-host": { type: "string" }, "data-dir": { type: "string" },
        region: { type: "string" }, "account-id": { type: "string" }, "endpoint-domain": { type: "string" },
        "endpoint-port": { type: "string" }, "endpoint-host": { type: "string" }, "build-concurrency": { type: "string" }, "microvm-disk-mib": { type: "string" }, help: { type: "boolean" },
        "s3-endpoint": { type: "string" }, "base-image-cache": { type: "string" }, "debian-mirror": { type: "string" },
        "artifact-ca-file": { type: "string" }, "no-builder": { type: "boolean" }, "no-snapshots": { type: "boolean" },
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
  const diskMiB = Number(values["microvm-disk-mib"] ?? DEFAULTS.microvmDiskMiB);
  if (!Number.isInteger(diskMiB) || diskMiB < 16) throw new UsageError(`--microvm-disk-mib must be a whole number of MiB, at least 16; got '${values["microvm-disk-mib"]}'.`);
  const platform = await startPlatform({
    dataDir: values["data-dir"] ?? defaultDataDir(),
    apiHost: values["api-host"] ?? DEFAULTS.apiHost,
    apiPort: port("api-port", values["api-port"], DEFAULTS.apiPort),
    region: values.region ?? DEFAULTS.region,
    accountId: values["account-id"] ?? DEFAULTS.accountId,
    endpointDomain: values["endpoint-domain"] ?? DEFAULTS.endpointDomain,
    endpointPort: port("endpoint-port", values["endpoint-port"], DEFAULTS.endpointPort),
    endpointHost: values["endpoint-host"] ?? DEFAULTS.endpointHost,
    buildConcurrency: concurrency,
    microvmDiskMiB: diskMiB,
    ...(values["s3-endpoint"] ? { s3Endpoint: values["s3-endpoint"] } : {}),
    ...(values["base-image-cache"] ? { baseImageCache: values["base-image-cache"] } : {}),
    ...(values["debian-mirror"] ? { debianMirror: values["debian-mirror"] } : {}),
    ...(values["artifact-ca-file"] ? { artifactCaFile: values["artifact-ca-file"] } : {}),
    ...(values["no-builder"] ? { builder: null } : {}),
    ...(values["no-snapshots"] ? { snapshots: false } : {}),
  });
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      platform.stop().then(resolve, resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
