// Cluster mode's shared records (docs/design.md, "Many hosts"), on
// PostgreSQL only: the hosts whose agents run sandboxes, and each MicroVM's
// lease. Every time here is the DATABASE's clock (clock_timestamp()), never a
// host's: heartbeats, their age and lease bumps are compared on one clock, so
// hosts' clocks need not agree.
//
// A lease is (microvm id, host id, epoch). Every placement of a MicroVM on a
// host (run, resume) bumps its epoch in one statement (an upsert that row-
// locks the lease), so two placements never share an epoch; every RPC that
// acts on a MicroVM carries the epoch it was placed with, and the agent acts
// only while the lease row still says (itself, that epoch): fencing.

import pg from "pg";
import { Kysely, Migrator, PostgresDialect, sql } from "kysely";
import { migrations } from "./migrations/index.js";
import { redactUrl, survivePostgresLoss } from "./postgres.js";

export type HostState = "ACTIVE" | "DRAINING" | "LOST";
export const HOST_STATES: HostState[] = ["ACTIVE", "DRAINING", "LOST"];

/** What an agent tells the cluster about its host when it registers. */
export interface HostCapacity {
  id: string;
  /** Where the agent's RPC listens, as ip:port. */
  address: string;
  memoryMiB: number;
  freeMemoryMiB: number;
  cpus: number;
  diskMiB: number;
  freeDiskMiB: number;
  architecture: string;
  runscVersion: string;
  /** The gVisor platform its sandboxes run on (systrap, ptrace). */
  platform: string;
}

export interface HostRecord extends HostCapacity {
  state: HostState;
  stateReason?: string;
  registeredAt: Date;
  heartbeatAt: Date;
  /** How old the last heartbeat is, by the database's clock, in milliseconds. */
  heartbeatAgeMs: number;
}

export interface Lease {
  microvmId: string;
  hostId: string;
  epoch: number;
}

interface HostRow {
  id: string;
  address: string;
  memory_mib: number;
  free_memory_mib: number;
  cpus: number;
  disk_mib: number;
  free_disk_mib: number;
  architecture: string;
  runsc_version: string;
  platform: string;
  state: string;
  state_reason: string | null;
  registered_at: number;
  heartbeat_at: number;
}

interface LeaseRow {
  microvm_id: string;
  host_id: string;
  epoch: number;
  updated_at: number;
}

interface LeaderRow {
  id: number;
  node_id: string;
  address: string | null;
  started_at: number;
  key_check: string;
  credentials_check: string;
  endpoint_ca_check: string;
}

interface ClusterTables {
  hosts: HostRow;
  leases: LeaseRow;
  api_leader: LeaderRow;
}

/**
 * Check values of the secrets every API node must share (HMACs and a fingerprint, never the
 * secrets): the master key, the root credentials, the endpoint proxy's CA.
 */
export interface SecretChecks {
  key: string;
  credentials: string;
  endpointCa: string;
}

/** The API node that holds the server lock, as it recorded itself when it took the lock. */
export interface LeaderRecord {
  nodeId: string;
  /** Its --cluster-listen (ip:port): standbys relay there, agents ask there for credentials; none when it has no listener. */
  address?: string;
  startedAt: Date;
  checks: SecretChecks;
}

const INT8_OID = 20;
/** How long getting a connection, then a query, may take: a cluster query answers or fails within their sum. */
export const CLUSTER_CONNECT_MS = 5_000;
export const CLUSTER_QUERY_MS = 5_000;
/** The database's clock, in milliseconds since the epoch. */
const NOW = sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`;

function hostOf(r: HostRow & { age: number }): HostRecord {
  return {
    id: r.id,
    address: r.address,
    memoryMiB: r.memory_mib,
    freeMemoryMiB: r.free_memory_mib,
    cpus: r.cpus,
    diskMiB: r.disk_mib,
    freeDiskMiB: r.free_disk_mib,
    architecture: r.architecture,
    runscVersion: r.runsc_version,
    platform: r.platform,
    state: r.state as HostState,
    ...(r.state_reason ? { stateReason: r.state_reason } : {}),
    registeredAt: new Date(r.registered_at),
    heartbeatAt: new Date(r.heartbeat_at),
    heartbeatAgeMs: Math.max(0, r.age),
  };
}

export class ClusterStore {
  private constructor(private readonly db: Kysely<ClusterTables>) {}

  /** Connects to the cluster's PostgreSQL database and brings its schema up to date (the same migrations as the Store's). */
  static async open(url: string, log?: (event: Record<string, unknown>) => void): Promise<ClusterStore> {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new Error(`Cluster mode keeps its hosts and leases in PostgreSQL: --database must be a postgres:// URL; got '${redactUrl(url)}'.`);
    const pool = new pg.Pool({
      connectionString: url,
      max: 4,
      application_name: "lmvm-cluster",
      connectionTimeoutMillis: CLUSTER_CONNECT_MS,
      // A query on a connection whose peer went silent (a partition) fails rather than waits: heartbeats and fencing checks must see it.
      query_timeout: CLUSTER_QUERY_MS,
      options: "-c synchronous_commit=on",
      types: {
        getTypeParser: ((oid: number, format?: "text" | "binary") =>
          oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
    });
    survivePostgresLoss(pool, log);
    const db = new Kysely<ClusterTables>({ dialect: new PostgresDialect({ pool }) });
    try {
      await db.selectNoFrom((eb) => eb.val(1).as("one")).execute();
    } catch (err) {
      await db.destroy();
      throw new Error(`Cannot reach PostgreSQL at ${redactUrl(url)}: ${(err as Error).message}`);
    }
    const { error, results } = await new Migrator({ db: db as unknown as Kysely<unknown>, provider: migrations("postgres") }).migrateToLatest();
    if (error) {
      await db.destroy();
      const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
      throw new Error(`Database migration ${failed} failed on ${redactUrl(url)}: ${String(error)}`);
    }
    return new ClusterStore(db);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  private hostsQuery() {
    return this.db.selectFrom("hosts").selectAll().select(sql<number>`${NOW} - heartbeat_at`.as("age"));
  }

  /**
   * Records the host (or its new capacity and address, when it registered before) with a fresh
   * heartbeat. A host that was LOST comes back ACTIVE (its leases were taken while it was away, so
   * it runs nothing of theirs); a DRAINING host stays DRAINING.
   */
  async registerHost(h: HostCapacity): Promise<HostRecord> {
    const values = {
      address: h.address,
      memory_mib: h.memoryMiB,
      free_memory_mib: h.freeMemoryMiB,
      cpus: h.cpus,
      disk_mib: h.diskMiB,
      free_disk_mib: h.freeDiskMiB,
      architecture: h.architecture,
      runsc_version: h.runscVersion,
      platform: h.platform,
    };
    await this.db
      .insertInto("hosts")
      .values({ id: h.id, ...values, state: "ACTIVE", state_reason: null, registered_at: NOW, heartbeat_at: NOW })
      .onConflict((oc) =>
        oc.column("id").doUpdateSet({
          ...values,
          state: sql`case when hosts.state = 'DRAINING' then 'DRAINING' else 'ACTIVE' end`,
          state_reason: sql`case when hosts.state = 'DRAINING' then hosts.state_reason else null end`,
          heartbeat_at: NOW,
        }),
      )
      .execute();
    return (await this.host(h.id))!;
  }

  /** A heartbeat with the host's free room now; answers its state, or undefined when the host is not registered. */
  async heartbeat(id: string, freeMemoryMiB: number, freeDiskMiB: number): Promise<HostState | undefined> {
    const r = await this.db
      .updateTable("hosts")
      .set({ heartbeat_at: NOW, free_memory_mib: freeMemoryMiB, free_disk_mib: freeDiskMiB })
      .where("id", "=", id)
      .returning("state")
      .executeTakeFirst();
    return r?.state as HostState | undefined;
  }

  async host(id: string): Promise<HostRecord | undefined> {
    const r = await this.hostsQuery().where("id", "=", id).executeTakeFirst();
    return r ? hostOf(r) : undefined;
  }

  async listHosts(): Promise<HostRecord[]> {
    return (await this.hostsQuery().orderBy("id").execute()).map(hostOf);
  }

  /** Stops new placements on the host (its MicroVMs keep running). Answers the host, or undefined when there is none of that id. */
  async drainHost(id: string): Promise<HostRecord | undefined> {
    const r = await this.db
      .updateTable("hosts")
      .set({ state: "DRAINING", state_reason: "Drained by an operator (lmvm hosts drain): no new MicroVMs are placed on it." })
      .where("id", "=", id)
      .where("state", "!=", "LOST")
      .returning("id")
      .executeTakeFirst();
    if (!r) return this.host(id);
    return this.host(id);
  }

  /** Places new MicroVMs on the host again. */
  async undrainHost(id: string): Promise<HostRecord | undefined> {
    await this.db.updateTable("hosts").set({ state: "ACTIVE", state_reason: null }).where("id", "=", id).where("state", "=", "DRAINING").execute();
    return this.host(id);
  }

  /**
   * Marks LOST every host whose last heartbeat is older than `deadlineMs` and, in the same
   * transaction, revokes its MicroVMs' leases: only those placed before the host counted as lost
   * (a lease moved or placed since stays), and not those of SUSPENDED MicroVMs (their checkpoint
   * is no sandbox: it may be resumed elsewhere from the object store, or on the host once back).
   * Answers the hosts it marked, each with the leases it revoked.
   */
  async markLost(deadlineMs: number): Promise<{ host: HostRecord; revoked: Lease[] }[]> {
    const marked = await this.db.transaction().execute(async (tx) => {
      const rows = await tx
        .updateTable("hosts")
        .set({ state: "LOST", state_reason: sql`'No heartbeat for more than ' || ${Math.round(deadlineMs / 1000)} || ' s.'` })
        .where("state", "!=", "LOST")
        .where(sql<boolean>`${NOW} - heartbeat_at > ${deadlineMs}`)
        .returning(["id", "heartbeat_at"])
        .execute();
      const out: { id: string; revoked: Lease[] }[] = [];
      for (const r of rows) {
        const revoked = await tx
          .updateTable("leases")
          .set({ epoch: sql`epoch + 1`, updated_at: NOW, host_id: "" })
          .where("host_id", "=", r.id)
          .where("updated_at", "<=", sql<number>`${r.heartbeat_at}::bigint + ${deadlineMs}`)
          .where(sql<boolean>`microvm_id not in (select id from microvms where state = 'SUSPENDED')`)
          .returning(["microvm_id", "epoch"])
          .execute();
        out.push({ id: r.id, revoked: revoked.map((l) => ({ microvmId: l.microvm_id, hostId: r.id, epoch: l.epoch })) });
      }
      return out;
    });
    const out: { host: HostRecord; revoked: Lease[] }[] = [];
    for (const m of marked) {
      const h = await this.host(m.id);
      if (h) out.push({ host: h, revoked: m.revoked });
    }
    return out;
  }

  /**
   * Hosts new MicroVMs may be placed on, best first: ACTIVE, a heartbeat younger than
   * `freshMs`, the given platform (and runsc version, for a checkpoint), the architecture;
   * most free memory first.
   */
  async candidates(want: { platform: string; architecture: string; runscVersion?: string; freshMs: number; exclude?: string[] }): Promise<HostRecord[]> {
    let q = this.hostsQuery()
      .where("state", "=", "ACTIVE")
      .where("platform", "=", want.platform)
      .where("architecture", "=", want.architecture)
      .where(sql<boolean>`${NOW} - heartbeat_at <= ${want.freshMs}`);
    if (want.runscVersion) q = q.where("runsc_version", "=", want.runscVersion);
    if (want.exclude?.length) q = q.where("id", "not in", want.exclude);
    return (await q.orderBy("free_memory_mib", "desc").orderBy("id").execute()).map(hostOf);
  }

  /**
   * Records this API node as the leader (call only while holding the server lock). The secrets'
   * check values are written by the first leader and kept after; answers the ones recorded, which
   * the caller compares with its own.
   */
  async recordLeader(node: { nodeId: string; address?: string; checks: SecretChecks }): Promise<SecretChecks> {
    const r = await this.db
      .insertInto("api_leader")
      .values({
        id: 1,
        node_id: node.nodeId,
        address: node.address ?? null,
        started_at: NOW,
        key_check: node.checks.key,
        credentials_check: node.checks.credentials,
        endpoint_ca_check: node.checks.endpointCa,
      })
      .onConflict((oc) => oc.column("id").doUpdateSet({ node_id: node.nodeId, address: node.address ?? null, started_at: NOW }))
      .returning(["key_check", "credentials_check", "endpoint_ca_check"])
      .executeTakeFirstOrThrow();
    return { key: r.key_check, credentials: r.credentials_check, endpointCa: r.endpoint_ca_check };
  }

  /** The leader as last recorded (it may have died since: the server lock, not this row, says who leads). */
  async leader(): Promise<LeaderRecord | undefined> {
    const r = await this.db.selectFrom("api_leader").selectAll().where("id", "=", 1).executeTakeFirst();
    if (!r) return undefined;
    return {
      nodeId: r.node_id,
      ...(r.address ? { address: r.address } : {}),
      startedAt: new Date(r.started_at),
      checks: { key: r.key_check, credentials: r.credentials_check, endpointCa: r.endpoint_ca_check },
    };
  }

  /** Gives the MicroVM's lease to `hostId` with the next epoch (1 for a first placement). */
  async placeLease(microvmId: string, hostId: string): Promise<Lease> {
    const r = await this.db
      .insertInto("leases")
      .values({ microvm_id: microvmId, host_id: hostId, epoch: 1, updated_at: NOW })
      .onConflict((oc) => oc.column("microvm_id").doUpdateSet({ host_id: hostId, epoch: sql`leases.epoch + 1`, updated_at: NOW }))
      .returning(["microvm_id", "host_id", "epoch"])
      .executeTakeFirstOrThrow();
    return { microvmId: r.microvm_id, hostId: r.host_id, epoch: r.epoch };
  }

  async lease(microvmId: string): Promise<Lease | undefined> {
    const r = await this.db.selectFrom("leases").select(["microvm_id", "host_id", "epoch"]).where("microvm_id", "=", microvmId).executeTakeFirst();
    return r ? { microvmId: r.microvm_id, hostId: r.host_id, epoch: r.epoch } : undefined;
  }

  /** True while the MicroVM's lease is exactly (host, epoch): the fencing check an agent makes before acting. */
  async holds(microvmId: string, hostId: string, epoch: number): Promise<boolean> {
    const r = await this.db.selectFrom("leases").select("epoch").where("microvm_id", "=", microvmId).where("host_id", "=", hostId).where("epoch", "=", epoch).executeTakeFirst();
    return r !== undefined;
  }

  async leasesOf(hostId: string): Promise<Lease[]> {
    const rows = await this.db.selectFrom("leases").select(["microvm_id", "host_id", "epoch"]).where("host_id", "=", hostId).execute();
    return rows.map((r) => ({ microvmId: r.microvm_id, hostId: r.host_id, epoch: r.epoch }));
  }

  /**
   * Bumps the epoch of a lease without moving it (the host stays its owner in name, but no RPC
   * placed before acts any more): what a LOST host's MicroVMs get, so the agent, if it comes back,
   * ends their sandboxes instead of serving them.
   */
  async revokeLease(microvmId: string, hostId: string): Promise<void> {
    await this.db.updateTable("leases").set({ epoch: sql`epoch + 1`, updated_at: NOW, host_id: "" }).where("microvm_id", "=", microvmId).where("host_id", "=", hostId).execute();
  }

  /**
   * Gives the lease back to `hostId` (with the next epoch) if it is still the placement of
   * `epoch`: a placement whose call never began on its host is undone, a newer one stays.
   */
  async restoreLease(microvmId: string, epoch: number, hostId: string): Promise<void> {
    await this.db.updateTable("leases").set({ host_id: hostId, epoch: sql`epoch + 1`, updated_at: NOW }).where("microvm_id", "=", microvmId).where("epoch", "=", epoch).execute();
  }

  /** Forgets the lease of an ended MicroVM (only the given epoch's, so a newer placement stays). */
  async dropLease(microvmId: string, epoch?: number): Promise<void> {
    let q = this.db.deleteFrom("leases").where("microvm_id", "=", microvmId);
    if (epoch !== undefined) q = q.where("epoch", "=", epoch);
    await q.execute();
  }
}
