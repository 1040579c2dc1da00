// The Dockerfile builder of a host that builds images, composed once for both
// roles: `lmvm server` on one machine (platform.ts) and `lmvm agent` on each
// host of a cluster (agent.ts), where the server places builds.

import { readFileSync } from "node:fs";
import type { S3ClientConfig } from "@aws-sdk/client-s3";
import { DEFAULT_LIMITS, DockerfileBuilder, type BuildLogs, type BuildSettings, type PhaseTimeouts } from "../builder/index.js";
import type { EgressGateway, NetworkNamespaces } from "../net/index.js";
import { Gvisor, Snapshotter, type SandboxPlatform } from "../runtime/index.js";
import { NetworkNamespaces as Namespaces } from "../net/index.js";
import { paths } from "./data-paths.js";

export interface BuildHostConfig {
  dataDir: string;
  region: string;
  sandboxPlatform?: SandboxPlatform;
  microvmDiskMiB?: number;
  /** Where base image root filesystems are cached (default <data-dir>/base-images); may be shared. */
  baseImageCache?: string;
  debianMirror?: string;
  /** S3 endpoint for s3:// code artifacts (default: AWS's); credentials come from LMVM_S3_* or the AWS default chain. */
  s3Endpoint?: string;
  /** Credentials for s3:// artifacts; default LMVM_S3_ACCESS_KEY_ID/LMVM_S3_SECRET_ACCESS_KEY, else the AWS chain. */
  s3Credentials?: { accessKeyId: string; secretAccessKey: string };
  /** PEM file of extra CAs trusted for https:// code artifacts. */
  artifactCaFile?: string;
  /** Seconds each build phase may take (default DEFAULT_PHASE_TIMEOUTS in src/builder/phases.ts). */
  buildPhaseTimeouts?: Partial<PhaseTimeouts>;
  /** Size and count limits on code artifacts (default DEFAULT_LIMITS). */
  buildLimits?: typeof DEFAULT_LIMITS;
  /** Whether builds end with the gVisor snapshot (default true); without it they end at the root filesystem. */
  snapshots?: boolean;
}

export function dockerfileBuilder(config: BuildHostConfig, logs: BuildLogs, nets: NetworkNamespaces, egress: EgressGateway, settings?: (buildId: string) => BuildSettings | undefined): DockerfileBuilder {
  const dirs = paths(config.dataDir);
  const s3: S3ClientConfig = {};
  if (config.s3Endpoint) Object.assign(s3, { endpoint: config.s3Endpoint, forcePathStyle: true });
  const { LMVM_S3_ACCESS_KEY_ID: id, LMVM_S3_SECRET_ACCESS_KEY: secret, LMVM_S3_REGION: region } = process.env;
  if (config.s3Credentials) s3.credentials = config.s3Credentials;
  else if (id && secret) s3.credentials = { accessKeyId: id, secretAccessKey: secret };
  s3.region = region ?? config.region;
  return new DockerfileBuilder({
    dataDir: config.dataDir,
    imagesDir: dirs.images,
    buildsDir: dirs.builds,
    buildahDir: dirs.buildah,
    logs,
    baseImageCache: config.baseImageCache ?? dirs.baseImages,
    debianMirror: config.debianMirror ?? "http://deb.debian.org/debian",
    busyboxPath: "/bin/busybox",
    s3,
    ...(config.artifactCaFile ? { httpsCa: readFileSync(config.artifactCaFile, "utf8") } : {}),
    limits: config.buildLimits ?? DEFAULT_LIMITS,
    ...(config.buildPhaseTimeouts ? { phaseTimeouts: config.buildPhaseTimeouts } : {}),
    // RUN steps of images with egress connectors: namespaces of their own (marked apart from the runtime's), the same gateway.
    egress: { nets: new Namespaces(undefined, dirs.buildNetworks), gateway: egress },
    ...(config.snapshots === false ? {} : { snapshotter: new Snapshotter(new Gvisor({ stateRoot: dirs.runscBuilds, ...(config.sandboxPlatform ? { platform: config.sandboxPlatform } : {}), ...(config.microvmDiskMiB ? { diskMiB: config.microvmDiskMiB } : {}) }), nets, dirs.snapshotSandboxes, {}, egress) }),
    ...(settings ? { settings } : {}),
  });
}
