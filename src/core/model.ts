// The resources lmvm manages, in the shapes and names of the SDK
// (@aws-sdk/client-lambda-microvms models_0.d.ts), plus the bookkeeping
// fields the platform needs. Timestamps are Dates; the API layer decides the
// wire format.

import type { EgressPolicy, EgressRule } from "./egress.js";

export type ImageState =
  | "CREATING" | "CREATED" | "CREATE_FAILED"
  | "UPDATING" | "UPDATED" | "UPDATE_FAILED"
  | "DELETING" | "DELETED" | "DELETE_FAILED";

export type VersionState =
  | "PENDING" | "IN_PROGRESS" | "SUCCESSFUL" | "FAILED"
  | "DELETING" | "DELETED" | "DELETE_FAILED";
export const VERSION_STATES: readonly VersionState[] = ["PENDING", "IN_PROGRESS", "SUCCESSFUL", "FAILED", "DELETING", "DELETED", "DELETE_FAILED"];

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

/** Lambda Core's network connector states (https://docs.aws.amazon.com/lambda/latest/lambda-core/API_GetNetworkConnector.html). */
export type ConnectorState = "PENDING" | "ACTIVE" | "INACTIVE" | "FAILED" | "DELETING" | "DELETE_FAILED";
export type ConnectorUpdateStatus = "InProgress" | "Successful" | "Failed";
/** Lambda Core's StateReasonCode and LastUpdateStatusReasonCode values. */
export type ConnectorReasonCode =
  | "DisallowedByVpcEncryptionControl" | "Ec2RequestLimitExceeded" | "InsufficientRolePermissions" | "InternalError"
  | "InvalidSecurityGroup" | "InvalidSubnet" | "SubnetOutOfIPAddresses";

/** AWS's VpcEgressConfiguration: accepted as sent, and failed at provisioning (lmvm has no VPCs). */
export interface VpcEgressConfiguration {
  SubnetIds: string[];
  SecurityGroupIds?: string[];
  NetworkProtocol?: string;
  AssociatedComputeResourceTypes?: string[];
}

/** One destination of lmvm's HostEgressConfiguration: a CIDR or a host name, a protocol, and for tcp/udp an optional port range. */
export interface HostEgressDestination {
  Cidr?: string;
  HostName?: string;
  Protocol: "tcp" | "udp" | "icmp" | "all";
  PortRange?: { From: number; To: number };
}

/** lmvm's member of the connector configuration union: what a plain host can grant. */
export interface HostEgressConfiguration {
  Destinations: HostEgressDestination[];
  NetworkProtocol: "IPv4";
  AssociatedComputeResourceTypes: string[];
}

/** A Smithy union: exactly one member is set. */
export interface ConnectorConfiguration {
  VpcEgressConfiguration?: VpcEgressConfiguration;
  HostEgressConfiguration?: HostEgressConfiguration;
}

export interface NetworkConnector {
  id: string;
  accountId: string;
  name: string;
  /** Unqualified ARN. */
  arn: string;
  state: ConnectorState;
  stateReason?: string;
  stateReasonCode?: ConnectorReasonCode;
  /** The version in force: the newest one whose provisioning succeeded (or the first, while it is provisioned). */
  latestVersion: number;
  /** The number the next version gets. */
  nextVersion: number;
  lastUpdateStatus?: ConnectorUpdateStatus;
  lastUpdateStatusReason?: string;
  lastUpdateStatusReasonCode?: ConnectorReasonCode;
  createdAt: Date;
  updatedAt: Date;
}

/** One immutable version of a connector: its configuration and, once provisioned, what it grants. */
export interface NetworkConnectorVersion {
  connectorId: string;
  version: number;
  state: ConnectorState;
  stateReason?: string;
  stateReasonCode?: ConnectorReasonCode;
  configuration: ConnectorConfiguration;
  operatorRole?: string;
  /** What the version grants, host names resolved; set once it is ACTIVE. */
  rules?: EgressRule[];
  createdAt: Date;
  updatedAt: Date;
}
