// Domain objects in the SDK's output shapes. Timestamps become epoch seconds,
// restJson1's default; absent optional fields are left out.

import type { Build, ImageConfig, ImageVersion, ManagedImageSummary, ManagedImageVersion, Microvm, MicrovmImage } from "../core/index.js";

export const epoch = (d: Date): number => d.getTime() / 1000;

/** The members of `o` that are not undefined (a plain loop: this runs for every item of every list answer). */
function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const key in o) {
    const value = o[key];
    if (value !== undefined) out[key] = value;
  }
  return out as Partial<T>;
}

function config(c: ImageConfig) {
  return defined({
    baseImageArn: c.baseImageArn,
    baseImageVersion: c.baseImageVersion,
    buildRoleArn: c.buildRoleArn,
    description: c.description,
    codeArtifact: c.codeArtifact,
    logging: c.logging,
    egressNetworkConnectors: c.egressNetworkConnectors,
    cpuConfigurations: c.cpuConfigurations,
    resources: c.resources,
    additionalOsCapabilities: c.additionalOsCapabilities,
    hooks: c.hooks,
    environmentVariables: c.environmentVariables,
  });
}

export function imageSummary(i: MicrovmImage) {
  return defined({
    imageArn: i.arn,
    name: i.name,
    state: i.state,
    createdAt: epoch(i.createdAt),
    latestActiveImageVersion: i.latestActiveImageVersion,
    latestFailedImageVersion: i.latestFailedImageVersion,
  });
}

export function image(i: MicrovmImage, tags: Record<string, string>) {
  return { ...imageSummary(i), tags, updatedAt: epoch(i.updatedAt) };
}

/** CreateMicrovmImage and UpdateMicrovmImage answer with the image and the version they started. */
export function imageWithVersion(i: MicrovmImage, v: ImageVersion, tags?: Record<string, string>) {
  return { ...imageSummary(i), ...config(v.config), imageVersion: v.version, updatedAt: epoch(i.updatedAt), ...(tags ? { tags } : {}) };
}

export function version(v: ImageVersion, tags: Record<string, string>) {
  return defined({
    ...config(v.config),
    imageArn: v.imageArn,
    imageVersion: v.version,
    state: v.state,
    status: v.status,
    createdAt: epoch(v.createdAt),
    updatedAt: epoch(v.updatedAt),
    stateReason: v.stateReason,
    tags,
  });
}

export function buildSummary(b: Build) {
  return defined({
    imageArn: b.imageArn,
    imageVersion: b.imageVersion,
    buildId: b.buildId,
    buildState: b.state,
    architecture: b.architecture,
    chipset: b.chipset,
    chipsetGeneration: b.chipsetGeneration,
    stateReason: b.stateReason,
    createdAt: epoch(b.createdAt),
  });
}

export function build(b: Build) {
  return { ...buildSummary(b), ...(b.snapshotBuild ? { snapshotBuild: b.snapshotBuild } : {}) };
}

export function managedImage(m: ManagedImageSummary) {
  return { imageArn: m.arn, createdAt: epoch(m.createdAt), updatedAt: epoch(m.updatedAt) };
}

export function managedImageVersion(arn: string, v: ManagedImageVersion) {
  return { imageArn: arn, imageVersion: v.version, status: v.status, createdAt: epoch(v.createdAt), updatedAt: epoch(v.updatedAt) };
}

export function microvmItem(m: Microvm) {
  return { microvmId: m.id, state: m.state, imageArn: m.imageArn, imageVersion: m.imageVersion, startedAt: epoch(m.startedAt) };
}

export function microvm(m: Microvm) {
  return defined({
    ...microvmItem(m),
    endpoint: m.endpoint,
    maximumDurationInSeconds: m.config.maximumDurationInSeconds,
    executionRoleArn: m.config.executionRoleArn,
    idlePolicy: m.config.idlePolicy,
    terminatedAt: m.terminatedAt && epoch(m.terminatedAt),
    stateReason: m.stateReason,
    ingressNetworkConnectors: m.config.ingressNetworkConnectors,
    egressNetworkConnectors: m.config.egressNetworkConnectors,
  });
}
