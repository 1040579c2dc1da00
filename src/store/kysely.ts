// The store both databases share: every query of the core's Store port,
// IdentityStore and the audit trail's lookups, written once with Kysely, and
// the mapping between rows and core types (here and nowhere else; JSON
// columns hold the SDK-shaped configs). What differs per database lives in
// sqlite.ts (connection, pragmas, hot reads, the audit writer thread) and
// postgres.ts (pool, SERIALIZABLE transactions with retries, audit writes).

import type { Expression, ExpressionBuilder, Generated, Kysely, Selectable, SqlBool, Transaction } from "kysely";
import { eventUsername, resourceNames, type AuditEvent, type AuditLog, type AuditQuery } from "../core/index.js";
import type { AuditRow } from "./audit-worker.js";
import type {
  Build, BuildFilter, BuildState, ConnectorState, IdempotencyRecord, ImageState, ImageVersion, ManagedImageVersion, Microvm,
  MicrovmFilter, MicrovmImage, MicrovmState, NetworkConnector, NetworkConnectorVersion, Page, PageRequest, Store, VersionState,
  IamAccessKeyRecord, IamPolicyRecord, IamRoleRecord, IamUserRecord, IdentityStore,
} from "../core/index.js";

export interface ImagesTable {
  seq: Generated<number>; arn: string; account_id: string; name: string; state: string; state_reason: string | null;
  latest_active_version: string | null; latest_failed_version: string | null; current_version: string;
  next_major: number; created_at: number; updated_at: number;
}
export interface VersionsTable {
  seq: Generated<number>; image_arn: string; version: string; origin: string; state: string; status: string;
  state_reason: string | null; config: string; created_at: number; updated_at: number;
}
interface BuildsTable {
  seq: Generated<number>; build_id: string; image_arn: string; image_version: string; state: string; architecture: string;
  chipset: string; chipset_generation: string; state_reason: string | null; attempts: number;
  snapshot_build: string | null; created_at: number; updated_at: number;
}
export interface MicrovmsTable {
  seq: Generated<number>; id: string; account_id: string; image_arn: string; image_version: string; state: string;
  state_reason: string | null; endpoint: string; config: string; started_at: number; updated_at: number;
  terminated_at: number | null;
}
interface TagsTable { resource_arn: string; key: string; value: string }
interface IdempotencyTable {
  account_id: string; operation: string; client_token: string; request_hash: string; response: string; created_at: number;
}
interface ManagedTable { seq: Generated<number>; name: string; version: string; status: string; created_at: number; updated_at: number }

interface ConnectorsTable {
  seq: Generated<number>; id: string; account_id: string; name: string; arn: string; state: string; state_reason: string | null;
  state_reason_code: string | null; latest_version: number; next_version: number; last_update_status: string | null;
  last_update_status_reason: string | null; last_update_status_reason_code: string | null; created_at: number; updated_at: number;
}
interface ConnectorVersionsTable {
  seq: Generated<number>; connector_id: string; version: number; state: string; state_reason: string | null;
  state_reason_code: string | null; configuration: string; operator_role: string | null; rules: string | null;
  created_at: number; updated_at: number;
}

interface AuditEventsTable {
  seq: Generated<number>; event_id: string; event_time: number; event_source: string; event_name: string; read_only: number;
  username: string | null; access_key_id: string | null; error_code: string | null; record: string;
}
interface AuditResourcesTable { event_seq: number; resource_type: string; resource_name: string }

interface IamUsersTable { user_name: string; user_id: string; path: string; tags: string; created_at: number }
interface IamAccessKeysTable { access_key_id: string; user_name: string; status: string; sealed_secret: string; created_at: number }
interface IamRolesTable {
  role_name: string; role_id: string; path: string; trust_policy: string; description: string | null;
  max_session_duration: number; tags: string; created_at: number;
}
interface IamPoliciesTable { owner_kind: string; owner_name: string; policy_name: string; document: string }

export interface Tables {
  audit_events: AuditEventsTable;
  audit_resources: AuditResourcesTable;
  iam_users: IamUsersTable;
  iam_access_keys: IamAccessKeysTable;
  iam_roles: IamRolesTable;
  iam_policies: IamPoliciesTable;
  network_connectors: ConnectorsTable;
  network_connector_versions: ConnectorVersionsTable;
  images: ImagesTable;
  image_versions: VersionsTable;
  builds: BuildsTable;
  microvms: MicrovmsTable;
  tags: TagsTable;
  idempotency: IdempotencyTable;
  managed_image_versions: ManagedTable;
}


export type Db = Kysely<Tables> | Transaction<Tables>;

const time = (d: Date | undefined): number | null => (d ? d.getTime() : null);

export function toImage(r: Selectable<ImagesTable>): MicrovmImage {
  return {
    arn: r.arn, accountId: r.account_id, name: r.name, state: r.state as ImageState,
    ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    ...(r.latest_active_version !== null ? { latestActiveImageVersion: r.latest_active_version } : {}),
    ...(r.latest_failed_version !== null ? { latestFailedImageVersion: r.latest_failed_version } : {}),
    currentVersion: r.current_version, nextMajor: r.next_major,
    createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
  };
}

export function toVersion(r: Selectable<VersionsTable>): ImageVersion {
  return {
    imageArn: r.image_arn, version: r.version, origin: r.origin as ImageVersion["origin"],
    state: r.state as VersionState, status: r.status as ImageVersion["status"],
    ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    config: JSON.parse(r.config), createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
  };
}

function toBuild(r: Selectable<BuildsTable>): Build {
  return {
    buildId: r.build_id, imageArn: r.image_arn, imageVersion: r.image_version, state: r.state as BuildState,
    architecture: r.architecture, chipset: r.chipset, chipsetGeneration: r.chipset_generation,
    ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    attempts: r.attempts,
    ...(r.snapshot_build !== null ? { snapshotBuild: JSON.parse(r.snapshot_build) } : {}),
    createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
  };
}

export function toMicrovm(r: Selectable<MicrovmsTable>): Microvm {
  return {
    id: r.id, accountId: r.account_id, imageArn: r.image_arn, imageVersion: r.image_version,
    state: r.state as MicrovmState, ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    endpoint: r.endpoint, config: JSON.parse(r.config), startedAt: new Date(r.started_at),
    updatedAt: new Date(r.updated_at), ...(r.terminated_at !== null ? { terminatedAt: new Date(r.terminated_at) } : {}),
  };
}

function toConnector(r: Selectable<ConnectorsTable>): NetworkConnector {
  return {
    id: r.id, accountId: r.account_id, name: r.name, arn: r.arn, state: r.state as ConnectorState,
    ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    ...(r.state_reason_code !== null ? { stateReasonCode: r.state_reason_code as NetworkConnector["stateReasonCode"] } : {}),
    latestVersion: r.latest_version, nextVersion: r.next_version,
    ...(r.last_update_status !== null ? { lastUpdateStatus: r.last_update_status as NetworkConnector["lastUpdateStatus"] } : {}),
    ...(r.last_update_status_reason !== null ? { lastUpdateStatusReason: r.last_update_status_reason } : {}),
    ...(r.last_update_status_reason_code !== null ? { lastUpdateStatusReasonCode: r.last_update_status_reason_code as NetworkConnector["stateReasonCode"] } : {}),
    createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
  };
}

function toConnectorVersion(r: Selectable<ConnectorVersionsTable>): NetworkConnectorVersion {
  return {
    connectorId: r.connector_id, version: r.version, state: r.state as ConnectorState,
    ...(r.state_reason !== null ? { stateReason: r.state_reason } : {}),
    ...(r.state_reason_code !== null ? { stateReasonCode: r.state_reason_code as NetworkConnectorVersion["stateReasonCode"] } : {}),
    configuration: JSON.parse(r.configuration),
    ...(r.operator_role !== null ? { operatorRole: r.operator_role } : {}),
    ...(r.rules !== null ? { rules: JSON.parse(r.rules) } : {}),
    createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
  };
}

/** Maps a partial core object to column updates; a key present with `undefined` clears the column. */
function columns(patch: object, map: Record<string, [string, (v: never) => unknown]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(patch)) {
    const m = map[key];
    if (!m) throw new Error(`store: no column for field '${key}'`);
    out[m[0]] = value === undefined ? null : m[1](value as never);
  }
  return out;
}

const same = (v: unknown) => v;
export const ms = (d: Date) => d.getTime();
const json = (v: unknown) => JSON.stringify(v);

const imageColumns = {
  state: ["state", same], stateReason: ["state_reason", same], latestActiveImageVersion: ["latest_active_version", same],
  latestFailedImageVersion: ["latest_failed_version", same], currentVersion: ["current_version", same],
  nextMajor: ["next_major", same], updatedAt: ["updated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;
const versionColumns = {
  state: ["state", same], status: ["status", same], stateReason: ["state_reason", same], updatedAt: ["updated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;
const buildColumns = {
  state: ["state", same], stateReason: ["state_reason", same], attempts: ["attempts", same],
  snapshotBuild: ["snapshot_build", json], updatedAt: ["updated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;
const microvmColumns = {
  state: ["state", same], stateReason: ["state_reason", same], updatedAt: ["updated_at", ms],
  terminatedAt: ["terminated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;

const connectorColumns = {
  state: ["state", same], stateReason: ["state_reason", same], stateReasonCode: ["state_reason_code", same],
  latestVersion: ["latest_version", same], nextVersion: ["next_version", same], lastUpdateStatus: ["last_update_status", same],
  lastUpdateStatusReason: ["last_update_status_reason", same], lastUpdateStatusReasonCode: ["last_update_status_reason_code", same],
  updatedAt: ["updated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;
const connectorVersionColumns = {
  state: ["state", same], stateReason: ["state_reason", same], stateReasonCode: ["state_reason_code", same],
  rules: ["rules", json], updatedAt: ["updated_at", ms],
} as Record<string, [string, (v: never) => unknown]>;

export function cursor(page: PageRequest): number {
  return page.after ? Number(page.after) : 0;
}

export function paged<R extends { seq: number }, T>(rows: R[], page: PageRequest, map: (r: R) => T): Page<T> {
  const more = rows.length > page.limit;
  const slice = more ? rows.slice(0, page.limit) : rows;
  const last = slice.at(-1);
  return { items: slice.map(map), ...(more && last ? { next: String(last.seq) } : {}) };
}

/** Each event as the audit tables hold it: its lookup columns, its record, and its resources' [type, name] rows. */
export function auditRows(events: AuditEvent[]): AuditRow[] {
  return events.map((e): AuditRow => [
    e.eventID, Date.parse(e.eventTime), e.eventSource, e.eventName, e.readOnly ? 1 : 0, storable(eventUsername(e)),
    storable(e.userIdentity.accessKeyId), e.errorCode ?? null, JSON.stringify(e),
    (e.resources ?? []).flatMap((r) => resourceNames(r).map((name): [string, string] => [r.type, storable(name)!])),
  ]);
}

/**
 * A caller's value as an audit column may hold it: U+0000 (which PostgreSQL's text refuses, and
 * which a request for a resource may carry however its API checks it) written as the six
 * characters `\u0000`, as in the event's JSON. Without it, one caller's request could fail a
 * whole batch of other callers' events.
 */
function storable(value: string | undefined): string | null {
  return value === undefined ? null : value.replaceAll("\0", "\\u0000");
}

export abstract class KyselyStore implements Store, IdentityStore, AuditLog {
  protected constructor(
    protected readonly db: Db,
    protected readonly inTransaction: boolean,
  ) {}

  abstract transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  abstract appendAuditEvents(events: AuditEvent[]): Promise<void>;
  abstract expireAuditEvents(before: Date): Promise<number>;
  abstract close(): Promise<void>;

  /** Rows of a hot read kept by the database's own fast path, or undefined to query through Kysely (sqlite.ts). */
  protected hotRows<R>(_sql: string, ..._params: unknown[]): R[] | undefined {
    return undefined;
  }

  /** `column` contains `text` (case-sensitive): instr() on SQLite, strpos() on PostgreSQL. */
  protected abstract contains(eb: ExpressionBuilder<Tables, "images">, column: "name", text: string): Expression<SqlBool>;

  // Images
  async insertImage(i: MicrovmImage): Promise<void> {
    await this.db.insertInto("images").values({
      arn: i.arn, account_id: i.accountId, name: i.name, state: i.state, state_reason: i.stateReason ?? null,
      latest_active_version: i.latestActiveImageVersion ?? null, latest_failed_version: i.latestFailedImageVersion ?? null,
      current_version: i.currentVersion, next_major: i.nextMajor, created_at: ms(i.createdAt), updated_at: ms(i.updatedAt),
    }).execute();
  }

  async getImage(arn: string): Promise<MicrovmImage | undefined> {
    const hot = this.hotRows<Selectable<ImagesTable>>("select * from images where arn = ?", arn);
    if (hot) return hot[0] && toImage(hot[0]);
    const r = await this.db.selectFrom("images").selectAll().where("arn", "=", arn).executeTakeFirst();
    return r && toImage(r);
  }

  async findImageByName(accountId: string, name: string): Promise<MicrovmImage | undefined> {
    const r = await this.db.selectFrom("images").selectAll().where("account_id", "=", accountId).where("name", "=", name).executeTakeFirst();
    return r && toImage(r);
  }

  async updateImage(arn: string, patch: Partial<MicrovmImage>): Promise<void> {
    await this.db.updateTable("images").set(columns(patch, imageColumns)).where("arn", "=", arn).execute();
  }

  async listImages(accountId: string, nameFilter: string | undefined, page: PageRequest): Promise<Page<MicrovmImage>> {
    const text = `select * from images where account_id = ? and seq > ?${nameFilter ? " and instr(name, ?) > 0" : ""} order by seq limit ?`;
    const hot = this.hotRows<Selectable<ImagesTable>>(text, accountId, cursor(page), ...(nameFilter ? [nameFilter] : []), page.limit + 1);
    if (hot) return paged(hot, page, toImage);
    let q = this.db.selectFrom("images").selectAll().where("account_id", "=", accountId).where("seq", ">", cursor(page));
    if (nameFilter) q = q.where((eb) => this.contains(eb, "name", nameFilter));
    return paged(await q.orderBy("seq").limit(page.limit + 1).execute(), page, toImage);
  }

  async imagesInState(state: ImageState): Promise<MicrovmImage[]> {
    return (await this.db.selectFrom("images").selectAll().where("state", "=", state).orderBy("seq").execute()).map(toImage);
  }

  async deleteImage(arn: string): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as KyselyStore).db;
      await db.deleteFrom("builds").where("image_arn", "=", arn).execute();
      await db.deleteFrom("image_versions").where("image_arn", "=", arn).execute();
      await db.deleteFrom("tags").where("resource_arn", "=", arn).execute();
      await db.deleteFrom("images").where("arn", "=", arn).execute();
    });
  }

  // Versions
  async insertVersion(v: ImageVersion): Promise<void> {
    await this.db.insertInto("image_versions").values({
      image_arn: v.imageArn, version: v.version, origin: v.origin, state: v.state, status: v.status,
      state_reason: v.stateReason ?? null, config: JSON.stringify(v.config), created_at: ms(v.createdAt), updated_at: ms(v.updatedAt),
    }).execute();
  }

  async getVersion(imageArn: string, version: string): Promise<ImageVersion | undefined> {
    const hot = this.hotRows<Selectable<VersionsTable>>("select * from image_versions where image_arn = ? and version = ?", imageArn, version);
    if (hot) return hot[0] && toVersion(hot[0]);
    const r = await this.db.selectFrom("image_versions").selectAll().where("image_arn", "=", imageArn).where("version", "=", version).executeTakeFirst();
    return r && toVersion(r);
  }

  async updateVersion(imageArn: string, version: string, patch: Partial<ImageVersion>): Promise<void> {
    await this.db.updateTable("image_versions").set(columns(patch, versionColumns)).where("image_arn", "=", imageArn).where("version", "=", version).execute();
  }

  async listVersions(imageArn: string, page: PageRequest): Promise<Page<ImageVersion>> {
    const rows = await this.db.selectFrom("image_versions").selectAll().where("image_arn", "=", imageArn)
      .where("state", "!=", "DELETED").where("seq", ">", cursor(page)).orderBy("seq").limit(page.limit + 1).execute();
    return paged(rows, page, toVersion);
  }

  async versionsInState(state: VersionState): Promise<ImageVersion[]> {
    return (await this.db.selectFrom("image_versions").selectAll().where("state", "=", state).orderBy("seq").execute()).map(toVersion);
  }

  async deleteVersion(imageArn: string, version: string): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as KyselyStore).db;
      await db.deleteFrom("builds").where("image_arn", "=", imageArn).where("image_version", "=", version).execute();
      await db.deleteFrom("image_versions").where("image_arn", "=", imageArn).where("version", "=", version).execute();
    });
  }

  // Builds
  async insertBuild(b: Build): Promise<void> {
    await this.db.insertInto("builds").values({
      build_id: b.buildId, image_arn: b.imageArn, image_version: b.imageVersion, state: b.state, architecture: b.architecture,
      chipset: b.chipset, chipset_generation: b.chipsetGeneration, state_reason: b.stateReason ?? null, attempts: b.attempts,
      snapshot_build: b.snapshotBuild ? JSON.stringify(b.snapshotBuild) : null, created_at: ms(b.createdAt), updated_at: ms(b.updatedAt),
    }).execute();
  }

  async getBuild(buildId: string): Promise<Build | undefined> {
    const r = await this.db.selectFrom("builds").selectAll().where("build_id", "=", buildId).executeTakeFirst();
    return r && toBuild(r);
  }

  async updateBuild(buildId: string, patch: Partial<Build>): Promise<void> {
    await this.db.updateTable("builds").set(columns(patch, buildColumns)).where("build_id", "=", buildId).execute();
  }

  async listBuilds(imageArn: string, version: string, filter: BuildFilter, page: PageRequest): Promise<Page<Build>> {
    let q = this.db.selectFrom("builds").selectAll().where("image_arn", "=", imageArn).where("image_version", "=", version).where("seq", ">", cursor(page));
    if (filter.architecture) q = q.where("architecture", "=", filter.architecture);
    if (filter.chipset) q = q.where("chipset", "=", filter.chipset);
    if (filter.chipsetGeneration) q = q.where("chipset_generation", "=", filter.chipsetGeneration);
    return paged(await q.orderBy("seq").limit(page.limit + 1).execute(), page, toBuild);
  }

  async buildsInState(state: BuildState): Promise<Build[]> {
    return (await this.db.selectFrom("builds").selectAll().where("state", "=", state).orderBy("seq").execute()).map(toBuild);
  }

  // MicroVMs
  async insertMicrovm(m: Microvm): Promise<void> {
    await this.db.insertInto("microvms").values({
      id: m.id, account_id: m.accountId, image_arn: m.imageArn, image_version: m.imageVersion, state: m.state,
      state_reason: m.stateReason ?? null, endpoint: m.endpoint, config: JSON.stringify(m.config),
      started_at: ms(m.startedAt), updated_at: ms(m.updatedAt), terminated_at: time(m.terminatedAt),
    }).execute();
  }

  async getMicrovm(id: string): Promise<Microvm | undefined> {
    const hot = this.hotRows<Selectable<MicrovmsTable>>("select * from microvms where id = ?", id);
    if (hot) return hot[0] && toMicrovm(hot[0]);
    const r = await this.db.selectFrom("microvms").selectAll().where("id", "=", id).executeTakeFirst();
    return r && toMicrovm(r);
  }

  async updateMicrovm(id: string, patch: Partial<Microvm>): Promise<void> {
    await this.db.updateTable("microvms").set(columns(patch, microvmColumns)).where("id", "=", id).execute();
  }

  async listMicrovms(accountId: string, filter: MicrovmFilter, page: PageRequest): Promise<Page<Microvm>> {
    let q = this.db.selectFrom("microvms").selectAll().where("account_id", "=", accountId).where("seq", ">", cursor(page));
    if (filter.imageArn) q = q.where("image_arn", "=", filter.imageArn);
    if (filter.imageVersion) q = q.where("image_version", "=", filter.imageVersion);
    return paged(await q.orderBy("seq").limit(page.limit + 1).execute(), page, toMicrovm);
  }

  async countByState() {
    const count = async (table: "microvms" | "builds") =>
      Object.fromEntries((await this.db.selectFrom(table).select(["state", (eb) => eb.fn.countAll<number>().as("n")]).groupBy("state").execute()).map((r) => [r.state, Number(r.n)]));
    return { microvms: await count("microvms"), builds: await count("builds") };
  }

  async microvmsInStates(states: MicrovmState[], filter: MicrovmFilter = {}): Promise<Microvm[]> {
    let q = this.db.selectFrom("microvms").selectAll().where("state", "in", states);
    if (filter.imageArn) q = q.where("image_arn", "=", filter.imageArn);
    if (filter.imageVersion) q = q.where("image_version", "=", filter.imageVersion);
    return (await q.orderBy("seq").execute()).map(toMicrovm);
  }

  // Tags
  async getTags(resourceArn: string): Promise<Record<string, string>> {
    const hot = this.hotRows<{ key: string; value: string }>("select key, value from tags where resource_arn = ? order by key", resourceArn);
    if (hot) return Object.fromEntries(hot.map((r) => [r.key, r.value]));
    // Ordered here, by code unit, as SQLite's BINARY collation does: PostgreSQL's order would follow the database's locale.
    const rows = await this.db.selectFrom("tags").select(["key", "value"]).where("resource_arn", "=", resourceArn).execute();
    return Object.fromEntries(rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map((r) => [r.key, r.value]));
  }

  async putTags(resourceArn: string, tags: Record<string, string>): Promise<void> {
    const rows = Object.entries(tags).map(([key, value]) => ({ resource_arn: resourceArn, key, value }));
    if (!rows.length) return;
    await this.db.insertInto("tags").values(rows).onConflict((oc) => oc.columns(["resource_arn", "key"]).doUpdateSet((eb) => ({ value: eb.ref("excluded.value") }))).execute();
  }

  async removeTags(resourceArn: string, keys: string[]): Promise<void> {
    await this.db.deleteFrom("tags").where("resource_arn", "=", resourceArn).where("key", "in", keys).execute();
  }

  // Idempotency
  async getIdempotencyRecord(accountId: string, operation: string, clientToken: string): Promise<IdempotencyRecord | undefined> {
    const r = await this.db.selectFrom("idempotency").selectAll().where("account_id", "=", accountId)
      .where("operation", "=", operation).where("client_token", "=", clientToken).executeTakeFirst();
    return r && {
      accountId: r.account_id, operation: r.operation, clientToken: r.client_token, requestHash: r.request_hash,
      response: JSON.parse(r.response), createdAt: new Date(r.created_at),
    };
  }

  async putIdempotencyRecord(rec: IdempotencyRecord): Promise<void> {
    await this.db.insertInto("idempotency").values({
      account_id: rec.accountId, operation: rec.operation, client_token: rec.clientToken, request_hash: rec.requestHash,
      response: JSON.stringify(rec.response), created_at: ms(rec.createdAt),
    }).execute();
  }

  // Network connectors
  async insertConnector(c: NetworkConnector): Promise<void> {
    await this.db.insertInto("network_connectors").values({
      id: c.id, account_id: c.accountId, name: c.name, arn: c.arn, state: c.state, state_reason: c.stateReason ?? null,
      state_reason_code: c.stateReasonCode ?? null, latest_version: c.latestVersion, next_version: c.nextVersion,
      last_update_status: c.lastUpdateStatus ?? null, last_update_status_reason: c.lastUpdateStatusReason ?? null,
      last_update_status_reason_code: c.lastUpdateStatusReasonCode ?? null, created_at: ms(c.createdAt), updated_at: ms(c.updatedAt),
    }).execute();
  }

  async getConnector(id: string): Promise<NetworkConnector | undefined> {
    const r = await this.db.selectFrom("network_connectors").selectAll().where("id", "=", id).executeTakeFirst();
    return r && toConnector(r);
  }

  async findConnectorByName(accountId: string, name: string): Promise<NetworkConnector | undefined> {
    const r = await this.db.selectFrom("network_connectors").selectAll().where("account_id", "=", accountId).where("name", "=", name).executeTakeFirst();
    return r && toConnector(r);
  }

  async updateConnector(id: string, patch: Partial<NetworkConnector>): Promise<void> {
    await this.db.updateTable("network_connectors").set(columns(patch, connectorColumns)).where("id", "=", id).execute();
  }

  async listConnectors(accountId: string, state: ConnectorState | undefined, page: PageRequest): Promise<Page<NetworkConnector>> {
    let q = this.db.selectFrom("network_connectors").selectAll().where("account_id", "=", accountId).where("seq", ">", cursor(page));
    if (state) q = q.where("state", "=", state);
    return paged(await q.orderBy("seq").limit(page.limit + 1).execute(), page, toConnector);
  }

  async connectorsInState(state: ConnectorState): Promise<NetworkConnector[]> {
    return (await this.db.selectFrom("network_connectors").selectAll().where("state", "=", state).orderBy("seq").execute()).map(toConnector);
  }

  async deleteConnector(id: string): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as KyselyStore).db;
      const row = await db.selectFrom("network_connectors").select("arn").where("id", "=", id).executeTakeFirst();
      await db.deleteFrom("network_connector_versions").where("connector_id", "=", id).execute();
      if (row) await db.deleteFrom("tags").where("resource_arn", "=", row.arn).execute();
      await db.deleteFrom("network_connectors").where("id", "=", id).execute();
    });
  }

  async insertConnectorVersion(v: NetworkConnectorVersion): Promise<void> {
    await this.db.insertInto("network_connector_versions").values({
      connector_id: v.connectorId, version: v.version, state: v.state, state_reason: v.stateReason ?? null,
      state_reason_code: v.stateReasonCode ?? null, configuration: JSON.stringify(v.configuration), operator_role: v.operatorRole ?? null,
      rules: v.rules ? JSON.stringify(v.rules) : null, created_at: ms(v.createdAt), updated_at: ms(v.updatedAt),
    }).execute();
  }

  async getConnectorVersion(connectorId: string, version: number): Promise<NetworkConnectorVersion | undefined> {
    const r = await this.db.selectFrom("network_connector_versions").selectAll().where("connector_id", "=", connectorId).where("version", "=", version).executeTakeFirst();
    return r && toConnectorVersion(r);
  }

  async updateConnectorVersion(connectorId: string, version: number, patch: Partial<NetworkConnectorVersion>): Promise<void> {
    await this.db.updateTable("network_connector_versions").set(columns(patch, connectorVersionColumns)).where("connector_id", "=", connectorId).where("version", "=", version).execute();
  }

  async listConnectorVersions(connectorId: string, state: ConnectorState | undefined, page: PageRequest): Promise<Page<NetworkConnectorVersion>> {
    let q = this.db.selectFrom("network_connector_versions").selectAll().where("connector_id", "=", connectorId).where("seq", ">", cursor(page));
    if (state) q = q.where("state", "=", state);
    return paged(await q.orderBy("seq").limit(page.limit + 1).execute(), page, toConnectorVersion);
  }

  async connectorVersionsInState(state: ConnectorState): Promise<NetworkConnectorVersion[]> {
    return (await this.db.selectFrom("network_connector_versions").selectAll().where("state", "=", state).orderBy("seq").execute()).map(toConnectorVersion);
  }

  async deleteConnectorVersion(connectorId: string, version: number): Promise<void> {
    await this.db.deleteFrom("network_connector_versions").where("connector_id", "=", connectorId).where("version", "=", version).execute();
  }

  // Managed images
  async upsertManagedImageVersion(v: ManagedImageVersion): Promise<void> {
    await this.db.insertInto("managed_image_versions").values({
      name: v.name, version: v.version, status: v.status, created_at: ms(v.createdAt), updated_at: ms(v.updatedAt),
    }).onConflict((oc) => oc.columns(["name", "version"]).doUpdateSet({ status: v.status, updated_at: ms(v.updatedAt) })).execute();
  }

  async listManagedImageVersions(name: string | undefined, page: PageRequest): Promise<Page<ManagedImageVersion>> {
    let q = this.db.selectFrom("managed_image_versions").selectAll().where("seq", ">", cursor(page));
    if (name) q = q.where("name", "=", name);
    const rows = await q.orderBy("seq").limit(page.limit + 1).execute();
    return paged(rows, page, (r) => ({
      name: r.name, version: r.version, status: r.status as ManagedImageVersion["status"],
      createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at),
    }));
  }

  async lookupAuditEvents(query: AuditQuery, page: PageRequest): Promise<Page<AuditEvent>> {
    let q = this.db.selectFrom("audit_events").select(["seq", "record"]);
    if (page.after) q = q.where("seq", "<", Number(page.after));
    if (query.startTime) q = q.where("event_time", ">=", query.startTime.getTime());
    if (query.endTime) q = q.where("event_time", "<=", query.endTime.getTime());
    const a = query.attribute;
    if (a) {
      switch (a.key) {
        case "EventId": q = q.where("event_id", "=", a.value); break;
        case "EventName": q = q.where("event_name", "=", a.value); break;
        case "EventSource": q = q.where("event_source", "=", a.value); break;
        case "Username": q = q.where("username", "=", a.value); break;
        case "AccessKeyId": q = q.where("access_key_id", "=", a.value); break;
        case "ReadOnly": q = q.where("read_only", "=", a.value === "true" ? 1 : 0); break;
        case "ResourceType":
          q = q.where("seq", "in", this.db.selectFrom("audit_resources").select("event_seq").where("resource_type", "=", a.value));
          break;
        case "ResourceName":
          q = q.where("seq", "in", this.db.selectFrom("audit_resources").select("event_seq").where("resource_name", "=", a.value));
          break;
      }
    }
    const rows = await q.orderBy("seq", "desc").limit(page.limit + 1).execute();
    return paged(rows, page, (r) => JSON.parse(r.record) as AuditEvent);
  }

  // IAM: users, access keys, roles, inline policies
  async loadIdentities(): Promise<{ users: IamUserRecord[]; accessKeys: IamAccessKeyRecord[]; roles: IamRoleRecord[]; policies: IamPolicyRecord[] }> {
    const users = (await this.db.selectFrom("iam_users").selectAll().execute()).map((r) => ({
      userName: r.user_name, userId: r.user_id, path: r.path, tags: JSON.parse(r.tags), createdAt: new Date(r.created_at),
    }));
    const accessKeys = (await this.db.selectFrom("iam_access_keys").selectAll().execute()).map((r) => ({
      accessKeyId: r.access_key_id, userName: r.user_name, status: r.status as IamAccessKeyRecord["status"], sealedSecret: r.sealed_secret, createdAt: new Date(r.created_at),
    }));
    const roles = (await this.db.selectFrom("iam_roles").selectAll().execute()).map((r) => ({
      roleName: r.role_name, roleId: r.role_id, path: r.path, trustPolicy: r.trust_policy, ...(r.description !== null ? { description: r.description } : {}),
      maxSessionDuration: r.max_session_duration, tags: JSON.parse(r.tags), createdAt: new Date(r.created_at),
    }));
    const policies = (await this.db.selectFrom("iam_policies").selectAll().execute()).map((r) => ({
      ownerKind: r.owner_kind as IamPolicyRecord["ownerKind"], ownerName: r.owner_name, policyName: r.policy_name, document: r.document,
    }));
    return { users, accessKeys, roles, policies };
  }

  async insertIamUser(u: IamUserRecord): Promise<void> {
    await this.db.insertInto("iam_users").values({ user_name: u.userName, user_id: u.userId, path: u.path, tags: JSON.stringify(u.tags), created_at: ms(u.createdAt) }).execute();
  }

  async deleteIamUser(userName: string): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as KyselyStore).db;
      await db.deleteFrom("iam_access_keys").where("user_name", "=", userName).execute();
      await db.deleteFrom("iam_policies").where("owner_kind", "=", "user").where("owner_name", "=", userName).execute();
      await db.deleteFrom("iam_users").where("user_name", "=", userName).execute();
    });
  }

  async insertAccessKey(k: IamAccessKeyRecord): Promise<void> {
    await this.db.insertInto("iam_access_keys").values({
      access_key_id: k.accessKeyId, user_name: k.userName, status: k.status, sealed_secret: k.sealedSecret, created_at: ms(k.createdAt),
    }).execute();
  }

  async updateAccessKeyStatus(accessKeyId: string, status: "Active" | "Inactive"): Promise<void> {
    await this.db.updateTable("iam_access_keys").set({ status }).where("access_key_id", "=", accessKeyId).execute();
  }

  async deleteAccessKey(accessKeyId: string): Promise<void> {
    await this.db.deleteFrom("iam_access_keys").where("access_key_id", "=", accessKeyId).execute();
  }

  async insertIamRole(r: IamRoleRecord): Promise<void> {
    await this.db.insertInto("iam_roles").values({
      role_name: r.roleName, role_id: r.roleId, path: r.path, trust_policy: r.trustPolicy, description: r.description ?? null,
      max_session_duration: r.maxSessionDuration, tags: JSON.stringify(r.tags), created_at: ms(r.createdAt),
    }).execute();
  }

  async updateIamRoleTrust(roleName: string, trustPolicy: string): Promise<void> {
    await this.db.updateTable("iam_roles").set({ trust_policy: trustPolicy }).where("role_name", "=", roleName).execute();
  }

  async deleteIamRole(roleName: string): Promise<void> {
    await this.transaction(async (tx) => {
      const db = (tx as KyselyStore).db;
      await db.deleteFrom("iam_policies").where("owner_kind", "=", "role").where("owner_name", "=", roleName).execute();
      await db.deleteFrom("iam_roles").where("role_name", "=", roleName).execute();
    });
  }

  async putIamPolicy(p: IamPolicyRecord): Promise<void> {
    await this.db.insertInto("iam_policies").values({ owner_kind: p.ownerKind, owner_name: p.ownerName, policy_name: p.policyName, document: p.document })
      .onConflict((oc) => oc.columns(["owner_kind", "owner_name", "policy_name"]).doUpdateSet({ document: p.document })).execute();
  }

  async deleteIamPolicy(ownerKind: "user" | "role", ownerName: string, policyName: string): Promise<void> {
    await this.db.deleteFrom("iam_policies").where("owner_kind", "=", ownerKind).where("owner_name", "=", ownerName).where("policy_name", "=", policyName).execute();
  }
}
