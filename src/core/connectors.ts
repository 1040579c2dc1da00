// Network connectors for private networks: the Lambda Core API's
// CreateNetworkConnector family (https://docs.aws.amazon.com/lambda/latest/lambda-core/API_Operations.html)
// and binding connectors into an EgressPolicy. A connector is provisioned
// asynchronously (PENDING, then ACTIVE or FAILED); every update makes a new
// immutable version and leaves the connector ACTIVE while LastUpdateStatus
// goes InProgress, then Successful or Failed. lmvm has no VPCs: a
// VpcEgressConfiguration is accepted and fails at provisioning with
// InvalidSubnet; HostEgressConfiguration says what a plain host can grant.

import { randomBytes } from "node:crypto";
import { networkConnectorArn, type Scope } from "./arn.js";
import { InvalidInput, NotFound, ResourceInUse, StateConflict } from "./errors.js";
import { NO_EGRESS, type EgressPolicy, type EgressRule } from "./egress.js";
import { once } from "./idempotency.js";
import type {
  ConnectorConfiguration, ConnectorReasonCode, ConnectorState, HostEgressConfiguration, HostEgressDestination, MicrovmState,
  NetworkConnector, NetworkConnectorVersion, Page, PageRequest,
} from "./model.js";
import { NameNotFound, type Clock, type NameResolver, type Store } from "./ports.js";

export const CONNECTOR_NAME_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;
const CONNECTOR_ID_PATTERN = /^nc-[0-9a-f]{17}$/;
const STATES: ConnectorState[] = ["PENDING", "ACTIVE", "INACTIVE", "FAILED", "DELETING", "DELETE_FAILED"];
const MAX_DESTINATIONS = 100;
const MAX_TAGS = 50;
const RESOLVE_DEADLINE_MS = 10_000;
const LIVE_MICROVM_STATES: MicrovmState[] = ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED", "TERMINATING"];
const ROLE_ARN = /^arn:aws[a-z-]*:iam::[0-9]{12}:role\/[A-Za-z0-9+=,.@_\/-]{1,512}$/;
const HOST_NAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
export const INTERNET_EGRESS = "INTERNET_EGRESS";

export function connectorArn(scope: Scope, name: string, version?: number): string {
  return `arn:aws:lambda:${scope.region}:${scope.accountId}:network-connector:${name}${version === undefined ? "" : `:${version}`}`;
}

export interface CreateConnectorInput {
  Name?: unknown;
  Configuration?: unknown;
  OperatorRole?: unknown;
  ClientToken?: unknown;
  Tags?: unknown;
}

export interface UpdateConnectorInput {
  Configuration?: unknown;
  OperatorRole?: unknown;
  ClientToken?: unknown;
}

/** A connector as one version shows it: the view GetNetworkConnector returns. */
export interface ConnectorView {
  connector: NetworkConnector;
  version: NetworkConnectorVersion;
  /** Whether the caller asked for this version by a version-qualified ARN. */
  qualified: boolean;
  tags: Record<string, string>;
}

// ---------------------------------------------------------------------------
// Validation

function fail(message: string): never {
  throw new InvalidInput(message);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

function onlyKeys(v: Record<string, unknown>, allowed: string[], where: string): void {
  const extra = Object.keys(v).filter((k) => !allowed.includes(k));
  if (extra.length) fail(`${where}: unknown member${extra.length > 1 ? "s" : ""} ${extra.map((k) => `'${k}'`).join(", ")}; the members are ${allowed.join(", ")}.`);
}

function stringList(v: unknown, where: string, min: number, max: number): string[] {
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || !s.length)) fail(`${where} must be a list of non-empty strings.`);
  if (v.length < min || v.length > max) fail(`${where} must have ${min} to ${max} entries; got ${v.length}.`);
  return v as string[];
}

function ipv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) return undefined;
  return parts.map(Number);
}

/**
 * Destinations no connector may grant, in whole or in part: "this network",
 * a sandbox's own loopback, link-local (lmvm's DNS and metadata addresses, and
 * a cloud host's metadata service), multicast and reserved.
 */
const UNGRANTABLE: readonly { base: number; prefix: number; why: string }[] = [
  { base: 0, prefix: 8, why: "0.0.0.0/8, which is no destination" },
  { base: 127 * 2 ** 24, prefix: 8, why: "loopback (127.0.0.0/8: a MicroVM's loopback is its own)" },
  { base: (169 * 256 + 254) * 2 ** 16, prefix: 16, why: "link-local (169.254.0.0/16 holds lmvm's own DNS resolver and metadata addresses, and a cloud host's metadata service)" },
  { base: 224 * 2 ** 24, prefix: 3, why: "multicast and reserved space (224.0.0.0/3)" },
];

/** What a CIDR overlaps that no connector may grant, or undefined: ranges overlap when either contains the other's base. */
function ungrantable(value: number, prefix: number): string | undefined {
  const end = value + 2 ** (32 - prefix);
  const hits = UNGRANTABLE.filter((r) => r.base < end && value < r.base + 2 ** (32 - r.prefix));
  return hits.length ? hits.map((r) => r.why).join(", and ") : undefined;
}

/** Checks an IPv4 CIDR: dotted quad, prefix 0-32, no host bits set. */
export function checkCidr(cidr: string, where: string): string {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(cidr);
  const octets = m ? ipv4(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || !octets || !(prefix >= 0 && prefix <= 32) || (m[2]!.length > 1 && m[2]!.startsWith("0"))) {
    fail(`${where}: '${cidr}' is not an IPv4 CIDR; write it as address/prefix, such as 10.77.0.0/24 or 10.77.0.5/32 (IPv6 is not supported).`);
  }
  const value = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (value % size !== 0) {
    const base = value - (value % size);
    const text = [24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join(".");
    fail(`${where}: '${cidr}' has host bits set; the network is ${text}/${prefix}.`);
  }
  const why = ungrantable(value, prefix);
  if (why) fail(`${where}: '${cidr}' includes ${why}; a network connector cannot grant it. Grant the networks you mean (the public internet is INTERNET_EGRESS).`);
  return cidr;
}

function checkDestination(d: unknown, where: string): HostEgressDestination {
  if (!isObject(d)) fail(`${where} must be an object with Cidr or HostName, Protocol and optionally PortRange.`);
  onlyKeys(d, ["Cidr", "HostName", "Protocol", "PortRange"], where);
  const hasCidr = d.Cidr !== undefined;
  const hasName = d.HostName !== undefined;
  if (hasCidr === hasName) fail(`${where} must set exactly one of Cidr (such as 10.77.0.0/24) or HostName (such as db.internal.example).`);
  const out = {} as HostEgressDestination;
  if (hasCidr) {
    if (typeof d.Cidr !== "string") fail(`${where}.Cidr must be a string such as 10.77.0.0/24.`);
    out.Cidr = checkCidr(d.Cidr, `${where}.Cidr`);
  } else {
    if (typeof d.HostName !== "string" || !HOST_NAME.test(d.HostName) || ipv4(d.HostName)) {
      fail(`${where}.HostName: '${String(d.HostName)}' is not a host name: use letters, digits and '-' in dot-separated labels of at most 63 characters (253 in all); write an address as Cidr with /32.`);
    }
    out.HostName = d.HostName.replace(/\.$/, "").toLowerCase();
  }
  if (!["tcp", "udp", "icmp", "all"].includes(d.Protocol as string)) fail(`${where}.Protocol must be one of tcp, udp, icmp or all; got '${String(d.Protocol)}'.`);
  out.Protocol = d.Protocol as HostEgressDestination["Protocol"];
  if (d.PortRange !== undefined) {
    if (out.Protocol !== "tcp" && out.Protocol !== "udp") fail(`${where}.PortRange applies only to Protocol tcp or udp; ${out.Protocol} has no ports. Remove PortRange or change Protocol.`);
    const r = d.PortRange;
    if (!isObject(r)) fail(`${where}.PortRange must be {"From": port, "To": port}.`);
    onlyKeys(r, ["From", "To"], `${where}.PortRange`);
    for (const k of ["From", "To"] as const) {
      if (!Number.isInteger(r[k]) || (r[k] as number) < 1 || (r[k] as number) > 65535) fail(`${where}.PortRange.${k} must be a port from 1 to 65535; got ${JSON.stringify(r[k])}.`);
    }
    if ((r.From as number) > (r.To as number)) fail(`${where}.PortRange: From (${String(r.From)}) must not be greater than To (${String(r.To)}).`);
    out.PortRange = { From: r.From as number, To: r.To as number };
  }
  return out;
}

function checkCompute(v: unknown, where: string): string[] {
  const types = stringList(v, where, 1, 1);
  if (types[0] !== "MicroVm") fail(`${where}: the only compute resource type is MicroVm; got '${types[0]}'.`);
  return types;
}

/** Checks a Configuration union: exactly one of VpcEgressConfiguration or HostEgressConfiguration. */
export function checkConfiguration(v: unknown): ConnectorConfiguration {
  if (!isObject(v)) fail("Configuration must be an object with exactly one member: HostEgressConfiguration (what lmvm can provide) or VpcEgressConfiguration.");
  const keys = Object.keys(v).filter((k) => v[k] !== undefined && v[k] !== null);
  if (keys.length !== 1) fail(`Configuration must set exactly one member, HostEgressConfiguration or VpcEgressConfiguration; got ${keys.length ? keys.join(", ") : "none"}.`);
  onlyKeys(v, ["HostEgressConfiguration", "VpcEgressConfiguration"], "Configuration");
  if (keys[0] === "VpcEgressConfiguration") {
    const c = v.VpcEgressConfiguration;
    const w = "Configuration.VpcEgressConfiguration";
    if (!isObject(c)) fail(`${w} must be an object.`);
    onlyKeys(c, ["SubnetIds", "SecurityGroupIds", "NetworkProtocol", "AssociatedComputeResourceTypes"], w);
    const out = { SubnetIds: stringList(c.SubnetIds, `${w}.SubnetIds`, 1, 16) } as ConnectorConfiguration["VpcEgressConfiguration"] & object;
    if (c.SecurityGroupIds !== undefined) out.SecurityGroupIds = stringList(c.SecurityGroupIds, `${w}.SecurityGroupIds`, 0, 5);
    if (c.NetworkProtocol !== undefined) {
      if (c.NetworkProtocol !== "IPv4" && c.NetworkProtocol !== "DualStack") fail(`${w}.NetworkProtocol must be IPv4 or DualStack; got '${String(c.NetworkProtocol)}'.`);
      out.NetworkProtocol = c.NetworkProtocol;
    }
    if (c.AssociatedComputeResourceTypes !== undefined) out.AssociatedComputeResourceTypes = checkCompute(c.AssociatedComputeResourceTypes, `${w}.AssociatedComputeResourceTypes`);
    return { VpcEgressConfiguration: out };
  }
  const c = v.HostEgressConfiguration;
  const w = "Configuration.HostEgressConfiguration";
  if (!isObject(c)) fail(`${w} must be an object: {"Destinations": [...], "NetworkProtocol": "IPv4", "AssociatedComputeResourceTypes": ["MicroVm"]}.`);
  onlyKeys(c, ["Destinations", "NetworkProtocol", "AssociatedComputeResourceTypes"], w);
  if (!Array.isArray(c.Destinations) || c.Destinations.length < 1 || c.Destinations.length > MAX_DESTINATIONS) {
    fail(`${w}.Destinations must list 1 to ${MAX_DESTINATIONS} destinations, such as {"Cidr": "10.77.0.0/24", "Protocol": "tcp", "PortRange": {"From": 5432, "To": 5432}}.`);
  }
  const np = c.NetworkProtocol ?? "IPv4";
  if (np !== "IPv4") fail(`${w}.NetworkProtocol must be IPv4 (lmvm's MicroVMs have no IPv6 egress); got '${String(np)}'.`);
  const out: HostEgressConfiguration = {
    Destinations: c.Destinations.map((d, i) => checkDestination(d, `${w}.Destinations[${i}]`)),
    NetworkProtocol: "IPv4",
    AssociatedComputeResourceTypes: c.AssociatedComputeResourceTypes === undefined ? ["MicroVm"] : checkCompute(c.AssociatedComputeResourceTypes, `${w}.AssociatedComputeResourceTypes`),
  };
  return { HostEgressConfiguration: out };
}

function checkRole(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || !ROLE_ARN.test(v)) fail(`OperatorRole must be an IAM role ARN such as arn:aws:iam::123456789012:role/NetworkConnectorOperator; got '${String(v)}'.`);
  return v;
}

function checkToken(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v.length < 1 || v.length > 64 || !/^[\x21-\x7e]+$/.test(v)) fail("ClientToken must be 1 to 64 printable ASCII characters without spaces.");
  return v;
}

function checkTags(v: unknown): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) fail('Tags must be a map of key to value, such as {"team": "data"}.');
  const entries = Object.entries(v);
  if (entries.length > MAX_TAGS) fail(`Tags: a connector can have at most ${MAX_TAGS} tags; got ${entries.length}.`);
  for (const [k, val] of entries) {
    if (k.length < 1 || k.length > 128 || k.startsWith("aws:")) fail(`Tags: key '${k}' must be 1 to 128 characters and must not start with 'aws:'.`);
    if (typeof val !== "string" || val.length > 256) fail(`Tags: the value of '${k}' must be a string of at most 256 characters.`);
  }
  return v as Record<string, string>;
}

// ---------------------------------------------------------------------------

export interface ConnectorServiceDeps {
  store: Store;
  clock: Clock;
  scope: Scope;
  resolver?: NameResolver;
  log?: (event: Record<string, unknown>) => void;
}

/** An egressNetworkConnectors list bound to what it grants. */
export interface BoundEgress {
  /** The connectors as recorded: the managed ARN, and version-qualified ARNs of the account's connectors. */
  arns: string[];
  policy: EgressPolicy;
}

export class ConnectorService {
  /** Provisioning under way, so that stop() and tests can wait for it. */
  private readonly work = new Set<Promise<void>>();

  constructor(private readonly deps: ConnectorServiceDeps) {}

  private get scope(): Scope {
    return this.deps.scope;
  }

  private track(p: Promise<void>): void {
    const t = p.catch((err: unknown) => this.deps.log?.({ msg: "network connector work failed", err: String(err) })).finally(() => this.work.delete(t));
    this.work.add(t);
  }

  /** Waits for provisioning and deletions under way. */
  async settle(): Promise<void> {
    while (this.work.size) await Promise.allSettled([...this.work]);
  }

  /** Finishes what a previous process left: provisioning of PENDING versions, deletion of DELETING connectors. */
  async recover(): Promise<void> {
    const { store } = this.deps;
    for (const v of await store.connectorVersionsInState("PENDING")) this.track(this.provision(v.connectorId, v.version));
    for (const c of await store.connectorsInState("DELETING")) this.track(store.deleteConnector(c.id));
  }

  /** Resolves an Identifier (id, name, unqualified or version-qualified ARN) to the connector and, if qualified, the version. */
  private async find(identifier: unknown, tx: Store = this.deps.store): Promise<{ connector: NetworkConnector; version?: number }> {
    if (typeof identifier !== "string" || identifier.length < 1 || identifier.length > 140) fail("Identifier must be a network connector id, name or ARN of 1 to 140 characters.");
    const missing = () => new NotFound("NetworkConnector", identifier, `Network connector '${identifier}' does not exist in ${this.scope.region}. List connectors with list-network-connectors.`);
    if (identifier.startsWith("arn:")) {
      const m = /^arn:aws:lambda:([a-z0-9-]+):([0-9]{12}|aws):network-connector:([a-zA-Z0-9_-]+)(?::([1-9][0-9]{0,17}))?$/.exec(identifier);
      if (!m) fail(`'${identifier}' is not a network connector ARN (${connectorArn(this.scope, "<name>")}, optionally followed by :<version>).`);
      if (m[1] !== this.scope.region || m[2] !== this.scope.accountId) throw missing();
      const connector = await tx.findConnectorByName(this.scope.accountId, m[3]!);
      if (!connector) throw missing();
      return { connector, ...(m[4] ? { version: Number(m[4]) } : {}) };
    }
    if (!CONNECTOR_NAME_PATTERN.test(identifier)) fail(`'${identifier}' is not a network connector id, name (letters, digits, '-' and '_', at most 64) or ARN.`);
    const byId = CONNECTOR_ID_PATTERN.test(identifier) ? await tx.getConnector(identifier) : undefined;
    const connector = byId && byId.accountId === this.scope.accountId ? byId : await tx.findConnectorByName(this.scope.accountId, identifier);
    if (!connector) throw missing();
    return { connector };
  }

  private async view(connector: NetworkConnector, versionNumber: number | undefined, tx: Store = this.deps.store): Promise<ConnectorView> {
    const number = versionNumber ?? connector.latestVersion;
    const version = await tx.getConnectorVersion(connector.id, number);
    if (!version) {
      throw new NotFound("NetworkConnector", connectorArn(this.scope, connector.name, number), `Network connector ${connector.arn} has no version ${number}. List its versions with list-network-connector-versions.`);
    }
    return { connector, version, qualified: versionNumber !== undefined, tags: await tx.getTags(connector.arn) };
  }

  /** The canonical ARN (':<version>' when qualified) of the connector an Identifier names; undefined if none exists. */
  async canonicalArn(identifier: unknown): Promise<string | undefined> {
    try {
      const { connector, version } = await this.find(identifier);
      return version === undefined ? connector.arn : `${connector.arn}:${version}`;
    } catch (err) {
      if (err instanceof NotFound) return undefined;
      throw err;
    }
  }

  async get(identifier: unknown): Promise<ConnectorView> {
    const { connector, version } = await this.find(identifier);
    return this.view(connector, version);
  }

  async create(input: CreateConnectorInput): Promise<ConnectorView> {
    const { store, clock } = this.deps;
    if (typeof input.Name !== "string" || !CONNECTOR_NAME_PATTERN.test(input.Name)) {
      fail(`Name must be 1 to 64 letters, digits, '-' or '_'; got ${input.Name === undefined ? "none" : `'${String(input.Name)}'`}.`);
    }
    if (input.Configuration === undefined) fail("Configuration is required: set HostEgressConfiguration (or VpcEgressConfiguration).");
    const name = input.Name;
    const configuration = checkConfiguration(input.Configuration);
    const operatorRole = checkRole(input.OperatorRole);
    const clientToken = checkToken(input.ClientToken);
    const tags = checkTags(input.Tags);
    const request = { Name: name, Configuration: configuration, OperatorRole: operatorRole, Tags: tags };
    const { id } = await once(store, clock, { accountId: this.scope.accountId, operation: "CreateNetworkConnector", clientToken }, request, async (tx) => {
      const existing = await tx.findConnectorByName(this.scope.accountId, name);
      if (existing) throw new ResourceInUse(`A network connector named '${name}' already exists (${existing.arn}, ${existing.state}). Choose another name, or update that one with update-network-connector.`);
      const now = clock.now();
      const id = `nc-${randomBytes(9).toString("hex").slice(0, 17)}`;
      await tx.insertConnector({
        id, accountId: this.scope.accountId, name, arn: connectorArn(this.scope, name), state: "PENDING",
        stateReason: "The connector is being provisioned.", latestVersion: 1, nextVersion: 2, createdAt: now, updatedAt: now,
      });
      await tx.insertConnectorVersion({
        connectorId: id, version: 1, state: "PENDING", configuration, ...(operatorRole ? { operatorRole } : {}), createdAt: now, updatedAt: now,
      });
      await tx.putTags(connectorArn(this.scope, name), tags);
      return { id };
    });
    const connector = await store.getConnector(id);
    if (!connector) throw new NotFound("NetworkConnector", id, `Network connector '${name}' was deleted.`);
    const view = await this.view(connector, undefined);
    if (view.version.state === "PENDING" && !this.provisioning.has(`${id}:1`)) this.track(this.provision(id, 1));
    return view;
  }

  private readonly provisioning = new Set<string>();

  async update(identifier: unknown, input: UpdateConnectorInput): Promise<ConnectorView> {
    const { store, clock } = this.deps;
    const { connector, version: qualified } = await this.find(identifier);
    if (qualified !== undefined) fail(`Update a connector by its unqualified identifier (${connector.arn}); versions are immutable.`);
    if (input.Configuration === undefined && input.OperatorRole === undefined) fail("Give Configuration, OperatorRole or both: an update with neither changes nothing.");
    const configurationIn = input.Configuration === undefined ? undefined : checkConfiguration(input.Configuration);
    const operatorRoleIn = checkRole(input.OperatorRole);
    const clientToken = checkToken(input.ClientToken);
    const request = { Identifier: connector.id, Configuration: configurationIn, OperatorRole: operatorRoleIn };
    const { version } = await once(store, clock, { accountId: this.scope.accountId, operation: "UpdateNetworkConnector", clientToken }, request, async (tx) => {
      const current = await tx.getConnector(connector.id);
      if (!current) throw new NotFound("NetworkConnector", connector.arn);
      if (current.state !== "ACTIVE") {
        throw new StateConflict("NetworkConnector", current.arn, `Network connector ${current.arn} is ${current.state}; only an ACTIVE connector can be updated.${current.state === "FAILED" ? " Delete it and create it again with a working configuration." : ""}`);
      }
      if (current.lastUpdateStatus === "InProgress") {
        throw new StateConflict("NetworkConnector", current.arn, `An update of network connector ${current.arn} is in progress (version ${current.nextVersion - 1}); wait until its LastUpdateStatus is Successful or Failed.`);
      }
      const base = await tx.getConnectorVersion(current.id, current.latestVersion);
      const now = clock.now();
      const number = current.nextVersion;
      const operatorRole = operatorRoleIn ?? base?.operatorRole;
      await tx.insertConnectorVersion({
        connectorId: current.id, version: number, state: "PENDING", configuration: configurationIn ?? base!.configuration,
        ...(operatorRole ? { operatorRole } : {}), createdAt: now, updatedAt: now,
      });
      await tx.updateConnector(current.id, {
        nextVersion: number + 1, lastUpdateStatus: "InProgress", lastUpdateStatusReason: `Version ${number} is being provisioned.`,
        lastUpdateStatusReasonCode: undefined, updatedAt: now,
      });
      return { version: number };
    });
    const pending = await store.getConnectorVersion(connector.id, version);
    if (pending?.state === "PENDING" && !this.provisioning.has(`${connector.id}:${version}`)) this.track(this.provision(connector.id, version));
    const now = await store.getConnector(connector.id);
    return this.view(now ?? connector, undefined);
  }

  /**
   * Provisions one version: resolves its host names into /32 CIDRs. The
   * first version decides the connector's state; a later one its
   * LastUpdateStatus, and on success it becomes the version in force.
   */
  private async provision(connectorId: string, number: number): Promise<void> {
    const key = `${connectorId}:${number}`;
    if (this.provisioning.has(key)) return;
    this.provisioning.add(key);
    try {
      const { store, clock } = this.deps;
      const version = await store.getConnectorVersion(connectorId, number);
      if (!version || version.state !== "PENDING") return;
      let outcome: { ok: true; rules: EgressRule[]; note: string } | { ok: false; code: ConnectorReasonCode; reason: string };
      const vpc = version.configuration.VpcEgressConfiguration;
      if (vpc) {
        outcome = {
          ok: false,
          code: "InvalidSubnet",
          reason:
            `lmvm runs on a plain host and has no VPCs, so subnet${vpc.SubnetIds.length > 1 ? "s" : ""} ${vpc.SubnetIds.join(", ")} cannot be used. ` +
            'Describe the network with HostEgressConfiguration instead, for example {"HostEgressConfiguration": {"Destinations": [{"Cidr": "10.77.0.0/24", "Protocol": "tcp", "PortRange": {"From": 5432, "To": 5432}}], "NetworkProtocol": "IPv4", "AssociatedComputeResourceTypes": ["MicroVm"]}}.',
        };
      } else {
        outcome = await this.resolveDestinations(version.configuration.HostEgressConfiguration!);
      }
      await store.transaction(async (tx) => {
        const connector = await tx.getConnector(connectorId);
        const current = await tx.getConnectorVersion(connectorId, number);
        if (!connector || !current || current.state !== "PENDING" || connector.state === "DELETING") return;
        const now = clock.now();
        if (outcome.ok) {
          await tx.updateConnectorVersion(connectorId, number, { state: "ACTIVE", stateReason: outcome.note, stateReasonCode: undefined, rules: outcome.rules, updatedAt: now });
        } else {
          await tx.updateConnectorVersion(connectorId, number, { state: "FAILED", stateReason: outcome.reason, stateReasonCode: outcome.code, updatedAt: now });
        }
        if (number === 1 || connector.state === "PENDING") {
          await tx.updateConnector(connectorId, outcome.ok
            ? { state: "ACTIVE", stateReason: outcome.note, stateReasonCode: undefined, latestVersion: number, updatedAt: now }
            : { state: "FAILED", stateReason: outcome.reason, stateReasonCode: outcome.code, updatedAt: now });
        } else {
          await tx.updateConnector(connectorId, outcome.ok
            ? { latestVersion: number, lastUpdateStatus: "Successful", lastUpdateStatusReason: `Version ${number} is in force. ${outcome.note}`, lastUpdateStatusReasonCode: undefined, updatedAt: now }
            : { lastUpdateStatus: "Failed", lastUpdateStatusReason: `Version ${number} failed, so version ${connector.latestVersion} stays in force: ${outcome.reason}`, lastUpdateStatusReasonCode: outcome.code, updatedAt: now });
        }
      });
      this.deps.log?.({ msg: "network connector provisioned", connectorId, version: number, ok: outcome.ok });
    } finally {
      this.provisioning.delete(key);
    }
  }

  private async resolveDestinations(config: HostEgressConfiguration): Promise<{ ok: true; rules: EgressRule[]; note: string } | { ok: false; code: ConnectorReasonCode; reason: string }> {
    const rules: EgressRule[] = [];
    const notes: string[] = [];
    for (const d of config.Destinations) {
      const rule: EgressRule = { cidrs: [], protocol: d.Protocol, ...(d.PortRange ? { ports: { from: d.PortRange.From, to: d.PortRange.To } } : {}) };
      if (d.Cidr) rule.cidrs.push(d.Cidr);
      else {
        const name = d.HostName!;
        let addresses: string[];
        try {
          if (!this.deps.resolver) throw new Error("this lmvm server has no name resolver");
          addresses = await deadline(this.deps.resolver.resolve4(name), RESOLVE_DEADLINE_MS, `looking up ${name} took longer than ${RESOLVE_DEADLINE_MS / 1000} s`);
        } catch (err) {
          if (err instanceof NameNotFound) return { ok: false, code: "InvalidSubnet", reason: `Host name ${name} does not resolve to an IPv4 address on this host: ${err.message}. Fix the name (or the host's DNS), or give the destination as a Cidr.` };
          return { ok: false, code: "InternalError", reason: `Host name ${name} could not be looked up: ${(err as Error).message}. Check the host's DNS resolver, then create the connector again (or update it).` };
        }
        const unique = [...new Set(addresses)].sort();
        for (const a of unique) {
          const why = ungrantable((ipv4(a) ?? [0, 0, 0, 0]).reduce((acc, o) => acc * 256 + o, 0), 32);
          if (why) return { ok: false, code: "InvalidSubnet", reason: `Host name ${name} resolves to ${a}, in ${why}; a network connector cannot grant it. Use a name of the private network, or a Cidr.` };
        }
        rule.hostName = name;
        rule.cidrs.push(...unique.map((a) => `${a}/32`));
        notes.push(`${name} resolved to ${unique.join(", ")}`);
      }
      rules.push(rule);
    }
    return { ok: true, rules, note: notes.length ? `Provisioned: ${notes.join("; ")}.` : "Provisioned." };
  }

  /** The account's connectors, each with its version in force. */
  async list(state: unknown, page: PageRequest): Promise<Page<{ connector: NetworkConnector; version?: NetworkConnectorVersion }>> {
    const result = await this.deps.store.listConnectors(this.scope.accountId, checkState(state), page);
    const items = await Promise.all(result.items.map(async (connector) => {
      const version = await this.deps.store.getConnectorVersion(connector.id, connector.latestVersion);
      return { connector, ...(version ? { version } : {}) };
    }));
    return { items, ...(result.next ? { next: result.next } : {}) };
  }

  async listVersions(identifier: unknown, state: unknown, page: PageRequest): Promise<{ connector: NetworkConnector; page: Page<NetworkConnectorVersion> }> {
    const { connector, version } = await this.find(identifier);
    if (version !== undefined) fail(`List versions with the connector's unqualified identifier (${connector.arn}), not a version-qualified ARN.`);
    return { connector, page: await this.deps.store.listConnectorVersions(connector.id, checkState(state), page) };
  }

  /** Who uses the connector (any version, or only `version`): MicroVMs not TERMINATED bound to it, and builds queued or running whose image version names it. */
  private async users(tx: Store, connector: NetworkConnector, version?: number): Promise<string[]> {
    const matches = (arn: string) => {
      const m = parseConnectorRef(arn);
      if (!m || m.name !== connector.name || m.region !== this.scope.region || m.account !== this.scope.accountId) return false;
      return version === undefined || m.version === version || (m.version === undefined && version === connector.latestVersion);
    };
    const users: string[] = [];
    for (const vm of await tx.microvmsInStates(LIVE_MICROVM_STATES)) {
      if (vm.accountId === this.scope.accountId && (vm.config.egressNetworkConnectors ?? []).some(matches)) users.push(`MicroVM ${vm.id} (${vm.state})`);
    }
    for (const state of ["PENDING", "IN_PROGRESS"] as const) {
      for (const build of await tx.buildsInState(state)) {
        const v = await tx.getVersion(build.imageArn, build.imageVersion);
        if (v && (v.config.egressNetworkConnectors ?? []).some(matches)) users.push(`build ${build.buildId} of ${build.imageArn} version ${build.imageVersion} (${state})`);
      }
    }
    return users;
  }

  async delete(identifier: unknown): Promise<ConnectorView> {
    const { store, clock } = this.deps;
    const found = await this.find(identifier);
    const result = await store.transaction(async (tx) => {
      const connector = await tx.getConnector(found.connector.id);
      if (!connector) throw new NotFound("NetworkConnector", found.connector.arn);
      if (found.version !== undefined) {
        if (found.version === connector.latestVersion) {
          throw new StateConflict("NetworkConnector", connector.arn, `Version ${found.version} is the version of ${connector.arn} in force; it cannot be deleted on its own. Delete the connector (${connector.arn}) to remove it.`);
        }
        const view = await this.view(connector, found.version, tx);
        if (view.version.state === "PENDING") throw new StateConflict("NetworkConnector", connector.arn, `Version ${found.version} of ${connector.arn} is still being provisioned; wait until its LastUpdateStatus is Successful or Failed.`);
        const users = await this.users(tx, connector, found.version);
        if (users.length) throw new ResourceInUse(`Version ${found.version} of network connector ${connector.arn} is in use by ${users.join(", ")}. Terminate those MicroVMs (or wait for those builds) first.`);
        await tx.deleteConnectorVersion(connector.id, found.version);
        return { ...view, version: { ...view.version, state: "DELETING" as const } };
      }
      const view = await this.view(connector, undefined, tx);
      if (connector.state === "DELETING") return view;
      if (connector.state === "PENDING" || connector.lastUpdateStatus === "InProgress") {
        throw new StateConflict("NetworkConnector", connector.arn, `Network connector ${connector.arn} is being provisioned; it can be deleted once it is ACTIVE or FAILED (and no update is in progress).`);
      }
      const users = await this.users(tx, connector);
      if (users.length) throw new ResourceInUse(`Network connector ${connector.arn} is in use by ${users.join(", ")}. Terminate those MicroVMs (or wait for those builds) first.`);
      await tx.updateConnector(connector.id, { state: "DELETING", stateReason: "The connector is being deleted.", stateReasonCode: undefined, updatedAt: clock.now() });
      return { ...view, connector: { ...connector, state: "DELETING" as const } };
    });
    if (found.version === undefined) this.track(store.deleteConnector(found.connector.id));
    return result;
  }

  // -------------------------------------------------------------------------
  // Binding

  /**
   * Resolves an egressNetworkConnectors list into the policy it grants: the
   * managed INTERNET_EGRESS, and the account's connectors, each bound to one
   * version (the one in force when unqualified), which must be ACTIVE.
   * `field` names the input member in messages.
   */
  async bind(connectors: readonly string[], field: string, tx: Store = this.deps.store): Promise<BoundEgress> {
    const arns: string[] = [];
    const rules: EgressRule[] = [];
    let internet = false;
    const managed = networkConnectorArn(this.scope.region, "INTERNET_EGRESS");
    for (const value of connectors) {
      if (value === managed) {
        internet = true;
        if (!arns.includes(value)) arns.push(value);
        continue;
      }
      const ref = this.accountRef(value, field);
      const connector = await tx.findConnectorByName(this.scope.accountId, ref.name);
      if (!connector) fail(`${field}: network connector ${value} does not exist. Create it with create-network-connector, or list the account's with list-network-connectors.`);
      if (connector.state !== "ACTIVE") {
        throw new StateConflict("NetworkConnector", connector.arn, `${field}: network connector ${connector.arn} is ${connector.state}${connector.stateReason ? ` (${connector.stateReason})` : ""}; only an ACTIVE connector can be used.`);
      }
      const number = ref.version ?? connector.latestVersion;
      const version = await tx.getConnectorVersion(connector.id, number);
      if (!version) fail(`${field}: network connector ${connector.arn} has no version ${number}. List its versions with list-network-connector-versions.`);
      if (version.state !== "ACTIVE") {
        throw new StateConflict("NetworkConnector", connectorArn(this.scope, connector.name, number), `${field}: version ${number} of network connector ${connector.arn} is ${version.state}${version.stateReason ? ` (${version.stateReason})` : ""}; only an ACTIVE version can be used.`);
      }
      const qualified = connectorArn(this.scope, connector.name, number);
      if (arns.includes(qualified)) continue;
      arns.push(qualified);
      rules.push(...(version.rules ?? []).map((r) => ({ ...r, cidrs: [...r.cidrs] })));
    }
    return { arns, policy: { internet, rules, connectors: [...arns] } };
  }

  /** Checks that each connector an image names is the managed INTERNET_EGRESS or one of the account's existing connectors (any state; bound when a build starts). */
  async checkExist(connectors: readonly string[], field: string): Promise<string[]> {
    const managed = networkConnectorArn(this.scope.region, "INTERNET_EGRESS");
    const out: string[] = [];
    for (const value of connectors) {
      if (value !== managed) {
        const ref = this.accountRef(value, field);
        const connector = await this.deps.store.findConnectorByName(this.scope.accountId, ref.name);
        if (!connector) fail(`${field}: network connector ${value} does not exist. Create it with create-network-connector, or list the account's with list-network-connectors.`);
        if (ref.version !== undefined && !(await this.deps.store.getConnectorVersion(connector.id, ref.version))) fail(`${field}: network connector ${connector.arn} has no version ${ref.version}.`);
      }
      if (!out.includes(value)) out.push(value);
    }
    return out;
  }

  /** The policy a build's RUN steps get: NO_EGRESS without connectors, else what they grant now. */
  async forBuild(connectors: readonly string[] | undefined): Promise<EgressPolicy> {
    if (!connectors?.length) return NO_EGRESS;
    return (await this.bind(connectors, "egressNetworkConnectors")).policy;
  }

  private accountRef(value: string, field: string): { name: string; version?: number } {
    const managedExample = networkConnectorArn(this.scope.region, "INTERNET_EGRESS");
    const ref = parseConnectorRef(value);
    if (!ref) {
      const hint = value === INTERNET_EGRESS ? ` Pass the connector's ARN, ${managedExample}.` : ` Connectors are ARNs such as ${managedExample} or ${connectorArn(this.scope, "my-connector")}.`;
      fail(`${field}: Malformed network connector ARN: '${value}'.${hint}`);
    }
    if (ref.account === "aws") fail(`${field}: '${value}' is not a known connector in ${this.scope.region}. Available managed egress connector: ${managedExample}; or the account's own connectors (list-network-connectors).`);
    if (ref.region !== this.scope.region || ref.account !== this.scope.accountId) {
      fail(`${field}: network connector ${value} belongs to another ${ref.region !== this.scope.region ? "region" : "account"}; use a connector of ${this.scope.accountId} in ${this.scope.region}.`);
    }
    return { name: ref.name, ...(ref.version !== undefined ? { version: ref.version } : {}) };
  }
}

function checkState(state: unknown): ConnectorState | undefined {
  if (state === undefined) return undefined;
  if (!STATES.includes(state as ConnectorState)) fail(`State must be one of ${STATES.join(", ")}; got '${String(state)}'.`);
  return state as ConnectorState;
}

/** Parses a network connector ARN, managed or the account's, optionally version-qualified. */
export function parseConnectorRef(value: string): { region: string; account: string; name: string; version?: number } | undefined {
  const managed = /^arn:aws:lambda:([a-z0-9-]+):aws:network-connector:aws-network-connector:([A-Za-z0-9_-]+)$/.exec(value);
  if (managed) return { region: managed[1]!, account: "aws", name: managed[2]! };
  const m = /^arn:aws:lambda:([a-z0-9-]+):([0-9]{12}):network-connector:([a-zA-Z0-9_-]{1,64})(?::([1-9][0-9]{0,17}))?$/.exec(value);
  if (!m) return undefined;
  return { region: m[1]!, account: m[2]!, name: m[3]!, ...(m[4] ? { version: Number(m[4]) } : {}) };
}

function deadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); })]).finally(() => clearTimeout(timer));
}

