// The resources lmvm manages, in the shapes and names of the SDK
// (@aws-sdk/client-lambda-microvms models_0.d.ts), plus the bookkeeping
// fields the platform needs. Timestamps are Dates; the API layer decides the
// wire format.

import type { EgressPolicy } from "./egress.js";

export type ImageState =
  | "CREATING" | "CREATED" | "CREATE_FAILED"
  | "UPDATING" | "UPDATED" | "UPDATE_FAILED"
  | "DELETING" | "DELETED" | "DELETE_FAILED";

export type VersionState =
  | "PENDING" | "IN_PROGRESS" | "SUCCESSFUL" | "FAILED"
  | "DELETING" | "DELETED" | "DELETE_FAILED";

export type VersionStatus = "ACTIVE" | "INACTIVE";
export type BuildState = "PENDING" | "IN_PROGRESS" | "SUCCESSFUL" | "FAILED";
export type MicrovmState = "PENDING" | "RUNNING" | "SUSPENDING" | "SUSPENDED" | "TERMINATING" | "TERMINATED";
export type HookState = "ENABLED" | "DISABLED";

export interface MicrovmHooks {
  run?: HookState; runTimeoutInSeconds?: number;
  resume?: HookState; resumeTimeoutInSeconds?: number;
  suspend?: HookState; suspendTimeoutInSeconds?: number;
  terminate?: HookState; terminateTimeoutInSeconds?: number;
}

export interface MicrovmImageHooks {
  ready?: HookState; readyTimeoutInSeconds?: number;
  validate?: HookState; validateTimeoutInSeconds?: number;
}

export interface Hooks {
  port?: number;
  microvmHooks?: MicrovmHooks;
  microvmImageHooks?: MicrovmImageHooks;
}

/** A Smithy union: inputs.ts guarantees exactly one member is set. */
export interface Logging {
  disabled?: Record<string, never>;
  cloudWatch?: { logGroup?: string; logStream?: string };
}

/** A Smithy union: inputs.ts guarantees exactly one member is set. */
export interface PortSpecification {
  port?: number;
  range?: { startPort: number; endPort: number };
  allPorts?: Record<string, never>;
}

export interface IdlePolicy {
  maxIdleDurationSeconds: number;
  suspendedDurationSeconds: number;
  autoResumeEnabled: boolean;
}

export interface SnapshotBuild {
  memorySnapshotSizeInBytes?: number;
  codeInstallSizeInBytes?: number;
  diskSnapshotSizeInBytes?: number;
}

/** Everything a CreateMicrovmImage or UpdateMicrovmImage asks to build; kept per version. */
export interface ImageConfig {
  baseImageArn: string;
  baseImageVersion?: string;
  buildRoleArn: string;
  description?: string;
  codeArtifact: { uri: string };
  logging?: Logging;
  egressNetworkConnectors?: string[];
  cpuConfigurations?: { architecture: string }[];
  resources?: { minimumMemoryInMiB: number }[];
  additionalOsCapabilities?: string[];
  hooks?: Hooks;
  environmentVariables?: Record<string, string>;
}

export interface MicrovmImage {
  arn: string;
  accountId: string;
  name: string;
  state: ImageState;
  stateReason?: string;
  createdAt: Date;
  updatedAt: Date;
  latestActiveImageVersion?: string;
  latestFailedImageVersion?: string;
  /** Version that the image's current operation (create or update) is building. */
  currentVersion: string;
  /** Major number the next UpdateMicrovmImage gets. */
  nextMajor: number;
}

export type VersionOrigin = "CREATE" | "UPDATE";

export interface ImageVersion {
  imageArn: string;
  version: string;
  origin: VersionOrigin;
  state: VersionState;
  status: VersionStatus;
  stateReason?: string;
  config: ImageConfig;
  createdAt: Date;
  updatedAt: Date;
}

export interface Build {
  buildId: string;
  imageArn: string;
  imageVersion: string;
  state: BuildState;
  architecture: string;
  chipset: string;
  chipsetGeneration: string;
  stateReason?: string;
  attempts: number;
  snapshotBuild?: SnapshotBuild;
  createdAt: Date;
  updatedAt: Date;
}

/** What RunMicrovm asked for; fixed for the MicroVM's life. */
export interface RunConfig {
  ingressNetworkConnectors: string[];
  egressNetworkConnectors: string[];
  /** What egressNetworkConnectors granted when the MicroVM was run (src/core/egress.ts); absent on MicroVMs run before egress existed, which have none. */
  egress?: EgressPolicy;
  executionRoleArn?: string;
  idlePolicy?: IdlePolicy;
  logging?: Logging;
  runHookPayload?: string;
  maximumDurationInSeconds: number;
}

export interface Microvm {
  id: string;
  accountId: string;
  imageArn: string;
  imageVersion: string;
  state: MicrovmState;
  stateReason?: string;
  endpoint: string;
  config: RunConfig;
  startedAt: Date;
  updatedAt: Date;
  terminatedAt?: Date;
}

export interface ManagedImageVersion {
  name: string;
  version: string;
  status: "AVAILABLE" | "DEPRECATED";
  createdAt: Date;
  updatedAt: Date;
}

export interface Page<T> {
  items: T[];
  /** Opaque position after the last item; absent on the last page. */
  next?: string;
}

export interface PageRequest {
  limit: number;
  after?: string;
}
