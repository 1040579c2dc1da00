// What the core needs from the outside, as interfaces. src/store implements
// Store, src/builder the ImageBuilder, src/runtime the SandboxRuntime and
// src/proxy the TokenIssuer. The core imports none of them.

import type {
  Build, BuildState, ConnectorState, ImageState, ImageVersion, VersionState, ManagedImageVersion, Microvm, MicrovmImage, MicrovmState,
  NetworkConnector, NetworkConnectorVersion, Page, PageRequest, PortSpecification, SnapshotBuild,
} from "./model.js";
import type { Duplex } from "node:stream";
import type { EgressPolicy } from "./egress.js";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export interface IdempotencyRecord {
  accountId: string;
  operation: string;
  clientToken: string;
  requestHash: string;
  response: unknown;
  createdAt: Date;
}

export interface MicrovmFilter {
  imageArn?: string;
  imageVersion?: string;
}

export interface BuildFilter {
  architecture?: string;
  chipset?: string;
  chipsetGeneration?: string;
}

/** Durable state. Every method is atomic; `transaction` groups several. */
export interface Store {
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;

  insertImage(image: MicrovmImage): Promise<void>;
  getImage(arn: string): Promise<MicrovmImage | undefined>;
  /** The live (not DELETED) image of that name, if any. */
  findImageByName(accountId: string, name: string): Promise<MicrovmImage | undefined>;
  updateImage(arn: string, patch: Partial<MicrovmImage>): Promise<void>;
  listImages(accountId: string, nameFilter: string | undefined, page: PageRequest): Promise<Page<MicrovmImage>>;
  imagesInState(state: ImageState): Promise<MicrovmImage[]>;
  /** Forgets the image with its versions, builds and tags. */
  deleteImage(arn: string): Promise<void>;

  insertVersion(version: ImageVersion): Promise<void>;
  getVersion(imageArn: string, version: string): Promise<ImageVersion | undefined>;
  updateVersion(imageArn: string, version: string, patch: Partial<ImageVersion>): Promise<void>;
  /** Live (not DELETED) versions, oldest first. */
  listVersions(imageArn: string, page: PageRequest): Promise<Page<ImageVersion>>;
  versionsInState(state: VersionState): Promise<ImageVersion[]>;
  /** Forgets the version with its builds. */
  deleteVersion(imageArn: string, version: string): Promise<void>;

  insertBuild(build: Build): Promise<void>;
  getBuild(buildId: string): Promise<Build | undefined>;
  updateBuild(buildId: string, patch: Partial<Build>): Promise<void>;
  listBuilds(imageArn: string, version: string, filter: BuildFilter, page: PageRequest): Promise<Page<Build>>;
  buildsInState(state: BuildState): Promise<Build[]>;

  insertMicrovm(vm: Microvm): Promise<void>;
  getMicrovm(id: string): Promise<Microvm | undefined>;
  updateMicrovm(id: string, patch: Partial<Microvm>): Promise<void>;
  listMicrovms(accountId: string, filter: MicrovmFilter, page: PageRequest): Promise<Page<Microvm>>;
  microvmsInStates(states: MicrovmState[], filter?: MicrovmFilter): Promise<Microvm[]>;
  /** How many MicroVMs and builds are in each state, for metrics. */
  countByState(): Promise<{ microvms: Partial<Record<MicrovmState, number>>; builds: Partial<Record<BuildState, number>> }>;

  getTags(resourceArn: string): Promise<Record<string, string>>;
  putTags(resourceArn: string, tags: Record<string, string>): Promise<void>;
  removeTags(resourceArn: string, keys: string[]): Promise<void>;

  getIdempotencyRecord(accountId: string, operation: string, clientToken: string): Promise<IdempotencyRecord | undefined>;
  putIdempotencyRecord(record: IdempotencyRecord): Promise<void>;

  insertConnector(connector: NetworkConnector): Promise<void>;
  getConnector(id: string): Promise<NetworkConnector | undefined>;
  findConnectorByName(accountId: string, name: string): Promise<NetworkConnector | undefined>;
  updateConnector(id: string, patch: Partial<NetworkConnector>): Promise<void>;
  listConnectors(accountId: string, state: ConnectorState | undefined, page: PageRequest): Promise<Page<NetworkConnector>>;
  connectorsInState(state: ConnectorState): Promise<NetworkConnector[]>;
  /** Forgets the connector with its versions and tags. */
  deleteConnector(id: string): Promise<void>;
  insertConnectorVersion(version: NetworkConnectorVersion): Promise<void>;
  getConnectorVersion(connectorId: string, version: number): Promise<NetworkConnectorVersion | undefined>;
  updateConnectorVersion(connectorId: string, version: number, patch: Partial<NetworkConnectorVersion>): Promise<void>;
  /** Oldest first. */
  listConnectorVersions(connectorId: string, state: ConnectorState | undefined, page: PageRequest): Promise<Page<NetworkConnectorVersion>>;
  connectorVersionsInState(state: ConnectorState): Promise<NetworkConnectorVersion[]>;
  deleteConnectorVersion(connectorId: string, version: number): Promise<void>;

  upsertManagedImageVersion(version: ManagedImageVersion): Promise<void>;
  listManagedImageVersions(name: string | undefined, page: PageRequest): Promise<Page<ManagedImageVersion>>;
}

/** A host name that has no IPv4 address (NXDOMAIN, or no A record). */
export class NameNotFound extends Error {}

/**
 * Turns the host names of network connectors into IPv4 addresses when a
 * connector version is provisioned. Rejects with NameNotFound when the name
 * has no address, with any other error when it could not be looked up.
 */
export interface NameResolver {
  resolve4(hostName: string): Promise<string[]>;
}

/** The failure of one build, with the reason users will read in `stateReason`. */
export class BuildFailure extends Error {}

/**
 * A runtime operation that could not begin (no space in the data directory,
 * say) and left the MicroVM exactly as it was: it is safe to retry later.
 */
export class NotBegun extends Error {}

/**
 * The app's /run hook did not answer 200 in time: the MicroVM ends, and the
 * message, in the service's words, is its stateReason.
 */
export class RunHookFailed extends Error {}

export interface BuildJob {
  image: MicrovmImage;
  version: ImageVersion;
  build: Build;
  /** What the version's egressNetworkConnectors grant its RUN steps and snapshot boot, resolved when the build starts; NO_EGRESS without connectors. */
  egress: EgressPolicy;
}

/** Turns an image version into a runnable snapshot for one architecture. */
export interface ImageBuilder {
  /** Resolves with the snapshot sizes, or rejects with BuildFailure. Must stop when `signal` aborts. */
  build(job: BuildJob, signal: AbortSignal): Promise<SnapshotBuild>;
  /** Frees whatever the version's builds left on disk. */
  discard(imageArn: string, version: string): Promise<void>;
  /** Clears what builds a previous process was running left behind; called once at startup, before any build. */
  recover(): Promise<void>;
}

/**
 * The runtime cannot answer at all: this host runs no sandboxes (NoSandboxes),
 * so it knows nothing of what is there. Callers keep their records as they
 * are rather than read it as "nothing there".
 */
export class RuntimeUnavailable extends Error {}

/** Starts, saves and ends sandboxes. */
export interface SandboxLifecycle {
  /** Restores the version's snapshot into a new sandbox and calls /run. */
  run(vm: Microvm, version: ImageVersion): Promise<void>;
  /** Saves the sandbox to a checkpoint and frees it; throws NotBegun when it left the sandbox running untouched. */
  suspend(vm: Microvm): Promise<void>;
  /** Restores the checkpoint; throws NotBegun when it left the checkpoint untouched. */
  resume(vm: Microvm): Promise<void>;
  /** Frees everything the MicroVM holds. Safe to call for a MicroVM the runtime no longer knows. */
  terminate(vm: Microvm): Promise<void>;
  /**
   * Why one more sandbox of this version does not fit on this host now (short
   * of memory, CPU or disk, or no sandboxes here at all), or undefined when it
   * fits. A fit holds that room for the run or resume that follows, so
   * concurrent callers cannot all be told yes for the same room.
   */
  shortage(version: ImageVersion): Promise<string | undefined>;
  /**
   * Why no MicroVM of this version can start on this host, whatever the room
   * (its snapshot was made by another kind of sandbox, say), or undefined.
   */
  unrunnable?(version: ImageVersion): string | undefined;
}

/**
 * How many warm clones of one image version the runtime keeps (RunMicrovm
 * claims one instead of restoring): the version RunMicrovm without a version
 * runs, its image's `lmvm:warm-pool` tag or the server's default size, and
 * the egress a MicroVM of it gets when RunMicrovm names no connector (clones
 * are made with that network shape until runs of the version ask another).
 */
export interface WarmPoolTarget {
  version: ImageVersion;
  size: number;
  egress: EgressPolicy;
}

/** Warm pools of restored, paused sandboxes, owned by the runtime (in its memory only). */
export interface SandboxPools {
  /**
   * The pools wanted now, every one not listed being empty: clones of versions
   * not listed (deleted, superseded, untagged) and clones beyond a size are
   * destroyed before this resolves; refills go on in the background.
   */
  warmPools(targets: WarmPoolTarget[]): Promise<void>;
  /** Destroys every clone and stops refilling (at server stop). */
  closeWarmPools(): Promise<void>;
  /**
   * Takes a warm clone of the version for a RunMicrovm about to be recorded,
   * when one fits the run's egress and logging, and answers the MicroVM id the
   * clone was made for (a fresh random id, its hostname already): the run
   * records its MicroVM with that id, and run() of it uses the clone. Each id
   * is answered once. Undefined: no clone fits (a miss), any id will do.
   */
  claimWarm(version: ImageVersion, egress: EgressPolicy, logging: boolean): Promise<string | undefined>;
  /**
   * A clone claimed for an id that no MicroVM got (the run was refused, or a
   * retried request answered with an earlier MicroVM): back to its pool.
   */
  unclaimWarm(microvmId: string): Promise<void>;
}

/** What is on the host for a MicroVM, as a restart finds it. */
export interface SandboxFound {
  running: boolean;
  checkpoint: boolean;
}

/** What a restart finds on the host, and freeing what belongs to no MicroVM. */
export interface SandboxRecovery {
  /** A live sandbox, a saved checkpoint, or neither. Throws (never answers "neither") when it cannot look. */
  inspect(vm: Microvm): Promise<SandboxFound>;
  /**
   * Frees every sandbox, namespace and file not belonging to the MicroVMs in
   * `keep`, as their states now say: a sandbox only for a RUNNING one, a
   * checkpoint only for a SUSPENDED one.
   */
  reap(keep: Microvm[]): Promise<void>;
  /**
   * Takes over the live sandboxes of RUNNING MicroVMs a previous process left
   * (what died with it, such as their DNS sockets, is made again); ends and
   * frees nothing, so it runs even when some MicroVMs could not be inspected.
   */
  adopt(running: Microvm[]): Promise<void>;
}

/** How live sandboxes are doing. */
export interface SandboxHealth {
  /** Ids of the sandboxes alive now; cheap enough to ask every few seconds. Throws when it cannot look. */
  running(): Promise<Set<string>>;
  /** Why a MicroVM's sandbox died, when the runtime can tell (out of memory, say). */
  exitReason(vm: Microvm): Promise<string | undefined>;
  /** A standing trouble of a live sandbox that its users should read (its disk is full, say), or undefined. */
  condition(vm: Microvm): Promise<string | undefined>;
}

/** The way into a RUNNING MicroVM: its network address and processes started inside it. */
export interface SandboxAccess {
  /** Where a RUNNING MicroVM's app can be reached from this host (an IP address); undefined when it has no sandbox here. */
  address(microvmId: string): string | undefined;
  /**
   * A connection to a port of a RUNNING MicroVM's app: TCP to its sandbox on this host, or in
   * cluster mode a tunnel through the sandbox's host's agent (`address` then only says the
   * MicroVM is placed). Callers always connect through it. It returns at once; a failure to
   * connect is an 'error' on the stream.
   */
  connect(microvmId: string, port: number): Duplex;
  /** Starts a process in a RUNNING MicroVM, under a terminal when `tty`. */
  spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess>;
}

/** Sandboxes that MicroVMs run in. The core never learns how they are isolated. Every adapter implements all of it. */
export interface SandboxRuntime extends SandboxLifecycle, SandboxRecovery, SandboxHealth, SandboxAccess, SandboxPools {}

export interface SpawnOptions {
  /** The command and its arguments; a login shell when empty. */
  argv: string[];
  tty: boolean;
  cols?: number;
  rows?: number;
  env?: Record<string, string>;
}

/** A process inside a MicroVM, as the shell ingress drives it. */
export interface GuestProcess {
  write(data: Uint8Array | string): void;
  /** No more input (non-terminal processes only). */
  endInput(): void;
  resize(cols: number, rows: number): void;
  signal(name: string): void;
  onOutput(listener: (stream: "stdout" | "stderr", data: Buffer) => void): void;
  onExit(listener: (code: number) => void): void;
  /** Ends it now; its exit listeners still run. */
  kill(): void;
}

/**
 * The way in to MicroVMs (the endpoint proxy and shell ingress). Connections
 * into a sandbox must be gone before it is checkpointed, and users told why.
 */
export interface Ingress {
  close(microvmId: string, reason: string): Promise<void>;
}

/** How long the runtime's slow operations took, for metrics. */
export interface RuntimeTimings {
  observe(operation: "run" | "suspend" | "resume" | "terminate", seconds: number, outcome: "ok" | "error"): void;
}

export type TokenKind = "endpoint" | "shell";

export interface TokenClaims {
  microvmId: string;
  kind: TokenKind;
  allowedPorts: PortSpecification[];
  expiresAt: Date;
}

export interface TokenIssuer {
  issue(claims: TokenClaims): Promise<string>;
}

/** The machine builds run on; builds are recorded per architecture. */
export interface HostPlatform {
  architecture: string;
  chipset: string;
  chipsetGeneration: string;
}

/** Seals and opens secrets with an authenticated cipher; `open` throws on anything it did not seal. */
export interface SecretBox {
  seal(plain: string): string;
  open(sealed: string): string;
}

export interface IamUserRecord {
  userName: string;
  userId: string;
  path: string;
  createdAt: Date;
  tags: Record<string, string>;
}

export interface IamAccessKeyRecord {
  accessKeyId: string;
  userName: string;
  status: "Active" | "Inactive";
  /** The secret, sealed (SecretBox): never stored in clear. */
  sealedSecret: string;
  createdAt: Date;
}

export interface IamRoleRecord {
  roleName: string;
  roleId: string;
  path: string;
  createdAt: Date;
  trustPolicy: string;
  description?: string;
  maxSessionDuration: number;
  tags: Record<string, string>;
}

export interface IamPolicyRecord {
  ownerKind: "user" | "role";
  ownerName: string;
  policyName: string;
  document: string;
}

/** IAM's durable state: users, their access keys, roles and inline policies. Names are unique regardless of case. */
export interface IdentityStore {
  /** Everything, for the identity service's in-memory copy (it is the only writer). */
  loadIdentities(): Promise<{ users: IamUserRecord[]; accessKeys: IamAccessKeyRecord[]; roles: IamRoleRecord[]; policies: IamPolicyRecord[] }>;
  insertIamUser(user: IamUserRecord): Promise<void>;
  deleteIamUser(userName: string): Promise<void>;
  insertAccessKey(key: IamAccessKeyRecord): Promise<void>;
  updateAccessKeyStatus(accessKeyId: string, status: "Active" | "Inactive"): Promise<void>;
  deleteAccessKey(accessKeyId: string): Promise<void>;
  insertIamRole(role: IamRoleRecord): Promise<void>;
  updateIamRoleTrust(roleName: string, trustPolicy: string): Promise<void>;
  deleteIamRole(roleName: string): Promise<void>;
  /** Creates or replaces the policy of that owner and name. */
  putIamPolicy(policy: IamPolicyRecord): Promise<void>;
  deleteIamPolicy(ownerKind: "user" | "role", ownerName: string, policyName: string): Promise<void>;
}

/** What an object store knows of one object. */
export interface ObjectInfo {
  key: string;
  size: number;
  /** Hex SHA-256 of the object's bytes, recorded when it was put (every adapter records it). */
  sha256: string;
}

/** The object store could not be reached or refused the request (not "the object is absent"). */
export class ObjectStoreUnavailable extends Error {}

/**
 * Files kept under relative keys in a store shared by hosts (an S3 bucket, a
 * shared directory), for images and checkpoints that any host may fetch.
 * Keys are relative paths of letters, digits, `.`, `_`, `-` and `/`; every
 * adapter implements all of it. Each call ends by `signal` (its deadline).
 * Errors other than "absent" are ObjectStoreUnavailable.
 */
export interface ObjectStore {
  /** Where it is, for messages and logs (s3://bucket/prefix, file:///path). */
  readonly url: string;
  /** Stores the local file under `key`, replacing any object there; readers see the old object or the new one, never a part. */
  put(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo>;
  /**
   * Writes the object to the local file `file` (replaced only once every byte
   * is there and its size and SHA-256 match what was put); undefined when there is no such object.
   */
  get(key: string, file: string, signal: AbortSignal, progress?: (bytes: number) => void): Promise<ObjectInfo | undefined>;
  /** The object's size and hash, or undefined when there is none. */
  head(key: string, signal: AbortSignal): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix` (empty, or ending with `/`), in key order, with its size. */
  list(prefix: string, signal: AbortSignal): Promise<{ key: string; size: number }[]>;
  /** Removes the object; nothing when there is none. */
  delete(key: string, signal: AbortSignal): Promise<void>;
  /** Removes every object whose key starts with `prefix` (which must end with `/`); how many went. */
  deletePrefix(prefix: string, signal: AbortSignal): Promise<number>;
}
