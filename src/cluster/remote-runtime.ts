// The server's SandboxRuntime in cluster mode (docs/design.md, "Many hosts"):
// the whole runtime port over the agents' RPC. It runs no sandbox itself.
//
// - Placement: shortage() asks the ACTIVE hosts with a fresh heartbeat, the
//   cluster's platform and architecture, most free memory first, each
//   agent's own shortage() having the last word (a yes there holds the room);
//   the first yes is kept for the run() that follows. run() then gives the
//   MicroVM's lease to that host with the next epoch and calls the agent with
//   it. Resume goes back to the host that holds the checkpoint.
// - Every call that acts on a MicroVM carries its lease's epoch; the agent
//   refuses it unless the lease is still (that host, that epoch).
// - Host loss: every LOSS_CHECK_MS, hosts without a heartbeat for
//   HOST_LOST_MS are marked LOST and their MicroVMs' leases revoked; the
//   core's sandbox check then finds those MicroVMs not running and ends them
//   with a reason naming the host (exitReason). An agent coming back ends
//   their sandboxes itself (its sweep) and acts on none of them (fencing).

import { Agent as HttpsAgent } from "node:https";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { Duplex } from "node:stream";
import { limitsOf, NotBegun, type GuestProcess, type ImageVersion, type Microvm, type SandboxFound, type SandboxRuntime, type SpawnOptions, type WarmPoolTarget, type EgressPolicy } from "../core/index.js";
import type { ClusterStore, HostRecord } from "../store/index.js";
import { CLUSTER_CONNECT_MS, CLUSTER_QUERY_MS } from "../store/cluster.js";
import { checkNodeIdentity, type NodeCredentials } from "./ca.js";
import { HEARTBEAT_MS, LEASE_DEADLINE_MS } from "./agent-service.js";
import { agentCall, EPOCH_HEADER, LeaseLost, splitAddress, Unreached } from "./wire.js";
import { remoteSpawn } from "./spawn.js";

/** A host whose heartbeat is older than this is not placed on. */
export const FRESH_MS = 3 * HEARTBEAT_MS + 1_000;
const LOSS_CHECK_MS = 2_000;
/**
 * A host whose heartbeat is older than this is LOST. An agent stops serving LEASE_DEADLINE_MS after
 * it SENT its last successful heartbeat (before the database stamped it); a fenced call it let
 * through just before may still finish its lease query (a connection, then the query, each with
 * its timeout); the loss is seen at the next check; and a margin on top.
 */
export const HOST_LOST_MS = LEASE_DEADLINE_MS + CLUSTER_CONNECT_MS + CLUSTER_QUERY_MS + LOSS_CHECK_MS + 1_000;
/** Deadlines of the calls: the agent's own operations have theirs (restore, hooks, checkpoint); these only bound a host that stopped answering. */
const QUICK_CALL_MS = 15_000;
const LIFECYCLE_CALL_MS = 10 * 60_000;
/** How long a yes from a host's shortage() is kept for the run that follows (the agent holds the room about as long). */
const PLACEMENT_MS = 30_000;
/** A warm-clone claim or give-back: the agent answers from memory. */
const CLAIM_CALL_MS = 5_000;
/** Claimed clones waiting for their run() (a run follows its claim at once; this only bounds the map). */
const MAX_WARM_CLAIMS = 1000;
/** How long a tunnel to a MicroVM's port may take to open (TLS to its agent and the answer to CONNECT). */
const TUNNEL_OPEN_MS = 10_000;
/** At most this many lost MicroVMs' reasons (and versions with pending placements) are kept: the oldest go first. */
const MAX_REMEMBERED = 10_000;

export { Unreached };

/** Whether nothing of a lifecycle call began on its host: it was not delivered, or the agent's fencing refused it before acting. */
function notBegun(err: unknown): boolean {
  return err instanceof Unreached || err instanceof LeaseLost || err instanceof NotBegun;
}

export interface RemoteRuntimeOptions {
  cluster: ClusterStore;
  tls: NodeCredentials;
  /** The gVisor platform of the cluster's snapshots (the server's --platform). */
  platform: string;
  architecture: string;
  log: (event: Record<string, unknown>) => void;
  hostLostMs?: number;
  /**
   * Why no MicroVM of a version can run in this cluster whatever the room (its snapshot was made on
   * another platform), read from the build on the server's host; the single-host runtime's check.
   */
  unrunnable?: (version: ImageVersion) => string | undefined;
  /** True with an object store: a suspended MicroVM's checkpoint is there, so any host of the same runsc version and platform resumes it. */
  sharedCheckpoints: boolean;
  /**
   * With an object store: whether it holds the current checkpoint of a MicroVM (throws when the store
   * cannot tell), asked for a SUSPENDED MicroVM whose host is LOST or holds no lease.
   */
  storedCheckpoint?: (microvmId: string) => Promise<boolean>;
  /** With an object store: deletes a MicroVM's checkpoints there, for one ended without its host being told (the agent deletes them otherwise). */
  dropCheckpoints?: (microvmId: string) => Promise<unknown>;
}

export class RemoteRuntime implements SandboxRuntime {
  private readonly agent: HttpsAgent;
  /** Hosts that said yes to a version's shortage(), oldest first, for the runs that follow. */
  private readonly placements = new Map<string, { host: HostRecord; at: number }[]>();
  /** Where each MicroVM placed by this server runs (its host's address), for address(). */
  private readonly located = new Map<string, string>();
  /** The host of each warm clone claimed for a MicroVM id (claimWarm), until run() or unclaimWarm() takes it. */
  private readonly warm = new Map<string, HostRecord>();
  /** Memory promised to each host by recent placements, by host id (see promisedMiB). */
  private readonly promised = new Map<string, { mib: number; at: number }[]>();
  /** Why MicroVMs of lost hosts stopped, for exitReason(). */
  private readonly lost = new Map<string, string>();
  private readonly lossTimer: NodeJS.Timeout;
  private checking: Promise<void> | undefined;
  /**
   * Since when the database is known to answer: this runtime's start, then the moment it answered
   * the loss check again after failing it. Heartbeats could not be written while it was unreachable
   * (and may not have been just before this server started, or took over as leader), so no host is
   * declared lost until the agents have had a whole deadline to heartbeat again: an outage longer
   * than the deadline must not end every host's MicroVMs.
   */
  private reachableSince: number;
  private unreachable = false;

  constructor(private readonly opts: RemoteRuntimeOptions) {
    this.reachableSince = Date.now();
    const { ca, cert, key } = opts.tls;
    // TCP keep-alive probes start after keepAliveMsecs of silence and give up 10 probes (1 s apart) later: at Node's default
    // (1 s) a host cut off for 11 s lost every call it was working on (a resume or suspend whose answer then never came) while
    // it was not yet lost. Probing from HOST_LOST_MS on keeps a call through any cut shorter than the loss deadline.
    this.agent = new HttpsAgent({ ca, cert, key, keepAlive: true, keepAliveMsecs: opts.hostLostMs ?? HOST_LOST_MS, maxSockets: 64, minVersion: "TLSv1.3", checkServerIdentity: checkNodeIdentity("agent") });
    this.lossTimer = setInterval(() => void this.checkHosts(), LOSS_CHECK_MS);
  }

  /** Sets a bounded map's entry: the oldest entries go past MAX_REMEMBERED. */
  /** Memory this server promised the host in the last PLACEMENT_MS, which its heartbeats may not show yet. */
  private promisedMiB(hostId: string, now: number): number {
    const fresh = (this.promised.get(hostId) ?? []).filter((p) => now - p.at < PLACEMENT_MS);
    if (fresh.length) this.promised.set(hostId, fresh);
    else this.promised.delete(hostId);
    return fresh.reduce((sum, p) => sum + p.mib, 0);
  }

  private promise(hostId: string, mib: number, now: number): void {
    this.remember(this.promised, hostId, [...(this.promised.get(hostId) ?? []), { mib, at: now }]);
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    while (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value as string);
  }

  async stop(): Promise<void> {
    clearInterval(this.lossTimer);
    await this.checking;
    this.agent.destroy();
  }

  /** Marks LOST the hosts past the deadline and revokes their MicroVMs' leases. */
  checkHosts(): Promise<void> {
    // Cleared by a promise's finally, which always runs after the assignment (a finally inside the async body could run
    // before it, when the body returns without awaiting, and leave this settled promise in place for good).
    this.checking ??= this.checkHostsOnce().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async checkHostsOnce(): Promise<void> {
    try {
      const deadline = this.opts.hostLostMs ?? HOST_LOST_MS;
      if (this.unreachable) {
        await this.opts.cluster.listHosts();
        this.unreachable = false;
        this.reachableSince = Date.now();
        this.opts.log({ level: "warn", msg: "the database answers again: no host is declared lost before its agent has had a whole deadline to heartbeat", deadlineSeconds: deadline / 1000 });
      }
      if (Date.now() - this.reachableSince < deadline) return;
      for (const { host, revoked } of await this.opts.cluster.markLost(deadline)) {
        this.opts.log({ level: "warn", msg: "host lost: no heartbeat", hostId: host.id, address: host.address, deadlineSeconds: deadline / 1000, microvms: revoked.map((l) => l.microvmId) });
        for (const l of revoked) {
          this.remember(this.lost, l.microvmId, `its host ${host.id} (${host.address}) was lost: no heartbeat for more than ${Math.round(deadline / 1000)} s`);
          this.located.delete(l.microvmId);
        }
      }
    } catch (err) {
      this.unreachable = true;
      this.opts.log({ level: "error", msg: "checking hosts' heartbeats failed", err: (err as Error).message });
    }
  }

  private call<T>(address: string, op: string, body: unknown, timeoutMs = QUICK_CALL_MS): Promise<T> {
    return agentCall<T>(this.agent, address, op, body, timeoutMs);
  }

  private versionKey(v: ImageVersion): string {
    return `${v.imageArn}:${v.version}`;
  }

  private async candidates(runscVersion?: string): Promise<HostRecord[]> {
    return this.opts.cluster.candidates({ platform: this.opts.platform, architecture: this.opts.architecture, freshMs: FRESH_MS, ...(runscVersion ? { runscVersion } : {}) });
  }

  /** The first candidate host whose agent has room (and holds it), or why none has. */
  private async place(version: ImageVersion, hosts: HostRecord[]): Promise<{ host?: HostRecord; why?: string }> {
    if (!hosts.length) return { why: `no ACTIVE host with a heartbeat in the last ${FRESH_MS / 1000} s runs ${this.opts.platform} sandboxes on ${this.opts.architecture} (lmvm hosts list)` };
    const reasons: string[] = [];
    const now = Date.now();
    for (const host of rankHosts(hosts, (id) => this.promisedMiB(id, now))) {
      try {
        const { reason } = await this.call<{ reason?: string }>(host.address, "shortage", { version });
        if (!reason) {
          this.promise(host.id, limitsOf(version.config).memoryMiB, now);
          return { host };
        }
        reasons.push(`${host.id}: ${reason}`);
      } catch (err) {
        reasons.push(`${host.id}: ${(err as Error).message}`);
      }
    }
    return { why: `no host has room (${reasons.join("; ")})` };
  }

  async shortage(version: ImageVersion): Promise<string | undefined> {
    const { host, why } = await this.place(version, await this.candidates());
    if (!host) return why;
    const key = this.versionKey(version);
    const now = Date.now();
    const list = (this.placements.get(key) ?? []).filter((p) => now - p.at < PLACEMENT_MS);
    list.push({ host, at: now });
    this.remember(this.placements, key, list);
    return undefined;
  }

  /** The host a shortage() said yes on for this version, if one is still fresh. */
  private takePlacement(version: ImageVersion): HostRecord | undefined {
    const key = this.versionKey(version);
    const list = this.placements.get(key) ?? [];
    const now = Date.now();
    let p;
    while ((p = list.shift()) && now - p.at >= PLACEMENT_MS);
    if (list.length) this.placements.set(key, list);
    else this.placements.delete(key);
    return p?.host;
  }

  unrunnable(version: ImageVersion): string | undefined {
    return this.opts.unrunnable?.(version);
  }

  async run(vm: Microvm, version: ImageVersion): Promise<void> {
    // A MicroVM whose id a host's warm clone was made for runs on that host (the room shortage() held is given up).
    const warm = this.warm.get(vm.id);
    this.warm.delete(vm.id);
    let host = this.takePlacement(version);
    if (warm) host = warm;
    if (!host) {
      const placed = await this.place(version, await this.candidates());
      if (!placed.host) throw new Error(`MicroVM ${vm.id} could not be placed: ${placed.why}`);
      host = placed.host;
    }
    const lease = await this.opts.cluster.placeLease(vm.id, host.id);
    this.opts.log({ msg: "microvm placed", microvmId: vm.id, hostId: host.id, epoch: lease.epoch });
    this.located.set(vm.id, host.address);
    try {
      await this.call(host.address, "run", { vm, version, epoch: lease.epoch }, LIFECYCLE_CALL_MS);
    } catch (err) {
      this.located.delete(vm.id);
      if (!notBegun(err)) throw err;
      // Nothing ran on the host: its lease goes (only this placement's).
      await this.opts.cluster.dropLease(vm.id, lease.epoch);
      throw new NotBegun(`MicroVM ${vm.id} was not started on host ${host.id}: ${(err as Error).message}`);
    }
  }

  /** The lease of a MicroVM and its host, or undefined when it has none (or its host is gone or LOST). */
  private async owner(vm: Microvm): Promise<{ host: HostRecord; epoch: number } | undefined> {
    const lease = await this.opts.cluster.lease(vm.id);
    if (!lease || !lease.hostId) return undefined;
    const host = await this.opts.cluster.host(lease.hostId);
    if (!host || host.state === "LOST") return undefined;
    return { host, epoch: lease.epoch };
  }

  async suspend(vm: Microvm): Promise<void> {
    const o = await this.owner(vm);
    if (!o) throw new Error(`MicroVM ${vm.id} has no live host: ${this.lost.get(vm.id) ?? "it holds no lease"}`);
    try {
      await this.call(o.host.address, "suspend", { vm, epoch: o.epoch }, LIFECYCLE_CALL_MS);
    } catch (err) {
      // Not delivered, or fenced before acting: the sandbox was left as it was.
      if (notBegun(err) && !(err instanceof NotBegun)) throw new NotBegun(`MicroVM ${vm.id} was not suspended on host ${o.host.id}: ${(err as Error).message}`);
      throw err;
    }
    this.located.delete(vm.id);
  }

  /**
   * Resumes where the checkpoint can be restored: with an object store (checkpoints shared), the
   * host the core's shortage() chose, if it runs the same runsc version and platform as the host
   * that made the checkpoint, else that host itself if it is still placeable, else another such
   * host; without one, only the host that holds the checkpoint. The lease moves with a new epoch.
   */
  async resume(vm: Microvm): Promise<void> {
    const lease = await this.opts.cluster.lease(vm.id);
    const maker = lease?.hostId ? await this.opts.cluster.host(lease.hostId) : undefined;
    const placed = this.takePlacement({ imageArn: vm.imageArn, version: vm.imageVersion } as ImageVersion);
    let target: HostRecord | undefined;
    if (this.opts.sharedCheckpoints) {
      const fits = await this.candidates(maker?.runscVersion);
      target = fits.find((h) => h.id === placed?.id) ?? fits.find((h) => h.id === maker?.id) ?? fits[0];
      if (!target) throw new NotBegun(`no ACTIVE host with a fresh heartbeat runs ${this.opts.platform} sandboxes${maker ? ` with ${maker.runscVersion} (the checkpoint was made by host ${maker.id})` : ""}`);
    } else {
      if (!maker || maker.state === "LOST") throw new NotBegun(`its checkpoint is on a host that is gone: ${this.lost.get(vm.id) ?? "it holds no lease"}; with an object store (--object-store) another host could resume it`);
      target = (await this.candidates()).find((h) => h.id === maker.id);
      if (!target) throw new NotBegun(`its checkpoint is on host ${maker.id}, which is ${maker.state === "ACTIVE" ? "not heartbeating" : maker.state}; resume it once the host is back, or use an object store (--object-store) so another host can`);
    }
    const next = await this.opts.cluster.placeLease(vm.id, target.id);
    this.opts.log({ msg: "microvm placed for resume", microvmId: vm.id, hostId: target.id, from: maker?.id ?? null, epoch: next.epoch });
    this.located.set(vm.id, target.address);
    try {
      await this.call(target.address, "resume", { vm, epoch: next.epoch }, LIFECYCLE_CALL_MS);
    } catch (err) {
      this.located.delete(vm.id);
      if (!notBegun(err)) throw err;
      // The checkpoint was not touched: the lease goes back to the host that made it (with a newer epoch, so the failed placement's is fenced).
      if (maker) await this.opts.cluster.restoreLease(vm.id, next.epoch, maker.id).catch((e: Error) =>
        this.opts.log({ level: "error", msg: "lease not restored after a resume that did not begin", microvmId: vm.id, hostId: maker.id, err: e.message }));
      throw new NotBegun(`MicroVM ${vm.id} was not resumed on host ${target.id}: ${(err as Error).message}`);
    }
  }

  async terminate(vm: Microvm): Promise<void> {
    const lease = await this.opts.cluster.lease(vm.id);
    this.located.delete(vm.id);
    if (!lease) return;
    let told = false;
    try {
      const o = await this.owner(vm);
      if (o) await this.call(o.host.address, "terminate", { vm, epoch: o.epoch }, LIFECYCLE_CALL_MS);
      told = Boolean(o);
    } finally {
      // Gone whatever the agent said: an agent that did not free it ends it at its next sweep (the lease is no longer its own).
      await this.opts.cluster.dropLease(vm.id);
      // An agent told deletes the MicroVM's checkpoints from the object store; one killed mid-call, or none, did not.
      if (!told) await this.opts.dropCheckpoints?.(vm.id).catch((err: unknown) => this.opts.log({ level: "warn", msg: "an ended MicroVM's checkpoints could not be deleted from the object store", microvmId: vm.id, err: (err as Error).message }));
    }
  }

  async inspect(vm: Microvm): Promise<SandboxFound> {
    const o = await this.owner(vm);
    if (!o && vm.state === "SUSPENDED") {
      // No live host holds it: its checkpoint is in the object store, or on its host that may come back.
      if (this.opts.storedCheckpoint) return { running: false, checkpoint: await this.opts.storedCheckpoint(vm.id) };
      throw new Error(`MicroVM ${vm.id} is suspended and its checkpoint is on a host that is LOST or gone (no object store): kept as recorded until its host is back`);
    }
    if (!o) return { running: false, checkpoint: false };
    return this.call<SandboxFound>(o.host.address, "inspect", { vm, epoch: o.epoch });
  }

  async reap(keep: Microvm[]): Promise<void> {
    for (const host of await this.opts.cluster.listHosts()) {
      if (host.state === "LOST") continue;
      await this.call(host.address, "reap", { keep }, LIFECYCLE_CALL_MS).catch((err: Error) =>
        this.opts.log({ level: "warn", msg: "host not reaped: it did not answer (it reaps at its own start)", hostId: host.id, err: err.message }));
    }
  }

  async adopt(running: Microvm[]): Promise<void> {
    const byHost = new Map<string, { host: HostRecord; vms: Microvm[]; epochs: Record<string, number> }>();
    for (const vm of running) {
      const o = await this.owner(vm);
      if (!o) continue;
      const g = byHost.get(o.host.id) ?? { host: o.host, vms: [], epochs: {} };
      g.vms.push(vm);
      g.epochs[vm.id] = o.epoch;
      byHost.set(o.host.id, g);
    }
    // Each MicroVM is where its lease says, whatever its agent answers now; each host is asked on its own,
    // so one host that does not answer leaves the others' MicroVMs adopted (its own are kept as recorded:
    // the loss check ends them if the host is declared LOST).
    for (const g of byHost.values()) for (const vm of g.vms) this.located.set(vm.id, g.host.address);
    await Promise.all([...byHost.values()].map((g) =>
      this.call(g.host.address, "adopt", { running: g.vms, epochs: g.epochs }, LIFECYCLE_CALL_MS).catch((err: Error) =>
        this.opts.log({ level: "warn", msg: "host did not adopt its MicroVMs: they stay as recorded", hostId: g.host.id, microvms: g.vms.map((v) => v.id), err: err.message }))));
  }

  async running(): Promise<Set<string>> {
    const alive = new Set<string>();
    for (const host of await this.opts.cluster.listHosts()) {
      if (host.state === "LOST") continue;
      try {
        const { ids } = await this.call<{ ids: string[] }>(host.address, "running", {});
        for (const id of ids) alive.add(id);
      } catch {
        // A host that does not answer is not presumed empty: its MicroVMs count as alive until it is declared LOST.
        for (const l of await this.opts.cluster.leasesOf(host.id)) alive.add(l.microvmId);
      }
    }
    return alive;
  }

  async exitReason(vm: Microvm): Promise<string | undefined> {
    const lost = this.lost.get(vm.id);
    if (lost) return lost;
    const o = await this.owner(vm);
    if (!o) return "its host no longer holds it (its lease was revoked)";
    return (await this.call<{ reason?: string }>(o.host.address, "exitReason", { vm }).catch(() => ({ reason: undefined }))).reason;
  }

  async condition(vm: Microvm): Promise<string | undefined> {
    const o = await this.owner(vm);
    if (!o) return undefined;
    return (await this.call<{ reason?: string }>(o.host.address, "condition", { vm, epoch: o.epoch })).reason;
  }

  /** The address of the MicroVM's host: the endpoint reaches the app through connect(), over that host's agent. */
  address(microvmId: string): string | undefined {
    return this.located.get(microvmId);
  }

  /**
   * A byte stream to the app's port: `CONNECT <id>:<port>` to its host's agent over mutual TLS,
   * with the lease's epoch; the agent checks the lease and pipes to the sandbox.
   */
  connect(microvmId: string, port: number): Duplex {
    return tunnel(this.opts.tls, this.opts.cluster, microvmId, port);
  }

  /** A process in the MicroVM, started and relayed by its host's agent over a WebSocket (spawn.ts), fenced by the lease's epoch. */
  async spawn(microvmId: string, opts: SpawnOptions): Promise<GuestProcess> {
    const lease = await this.opts.cluster.lease(microvmId);
    const host = lease?.hostId ? await this.opts.cluster.host(lease.hostId) : undefined;
    if (!lease || !host || host.state === "LOST") throw new Error(`MicroVM ${microvmId} has no live host: ${this.lost.get(microvmId) ?? "it holds no lease"}`);
    return remoteSpawn(this.opts.tls, host.address, microvmId, lease.epoch, opts);
  }

  async warmPools(targets: WarmPoolTarget[]): Promise<void> {
    for (const host of await this.candidates()) {
      await this.call(host.address, "warmPools", { targets }, LIFECYCLE_CALL_MS).catch((err: Error) =>
        this.opts.log({ level: "warn", msg: "warm pools not set on a host", hostId: host.id, err: err.message }));
    }
  }

  /**
   * Asks the hosts, the one shortage() chose first, for a warm clone of the version; the first that
   * has one answers the MicroVM id it was made for, and run() of that id goes to that host.
   */
  async claimWarm(version: ImageVersion, egress: EgressPolicy, logging: boolean): Promise<string | undefined> {
    const chosen = this.placements.get(this.versionKey(version))?.[0]?.host;
    const hosts = await this.candidates();
    hosts.sort((a, b) => Number(b.id === chosen?.id) - Number(a.id === chosen?.id));
    for (const host of hosts) {
      const answer = (await this.call(host.address, "claimWarm", { version, egress, logging }, CLAIM_CALL_MS).catch((err: Error) => {
        this.opts.log({ level: "warn", msg: "warm clone claim failed on a host", hostId: host.id, err: err.message });
        return undefined;
      })) as { microvmId?: string | null } | undefined;
      if (answer?.microvmId) {
        if (this.warm.size >= MAX_WARM_CLAIMS) this.warm.delete(this.warm.keys().next().value!);
        this.warm.set(answer.microvmId, host);
        return answer.microvmId;
      }
    }
    return undefined;
  }

  async unclaimWarm(microvmId: string): Promise<void> {
    const host = this.warm.get(microvmId);
    this.warm.delete(microvmId);
    if (host) await this.call(host.address, "unclaimWarm", { microvmId }, CLAIM_CALL_MS);
  }

  async closeWarmPools(): Promise<void> {
    // Each agent's clones are its own: they go when the agent stops. The server stopping leaves them.
  }
}

/**
 * Hosts in the order placement asks them: the most free memory first, less what this server
 * promised each since (a burst of runs between two heartbeats would otherwise all go to the host
 * that looked freest, and fill it before the next one is tried); ties by id. With `busy` (builds:
 * how many this server has running on each host), the least busy first, then by room.
 */
export function rankHosts<H extends { id: string; freeMemoryMiB: number }>(hosts: H[], promisedMiB: (hostId: string) => number, busy: (hostId: string) => number = () => 0): H[] {
  const room = new Map(hosts.map((h) => [h.id, h.freeMemoryMiB - promisedMiB(h.id)]));
  const load = new Map(hosts.map((h) => [h.id, busy(h.id)]));
  return [...hosts].sort((a, b) => load.get(a.id)! - load.get(b.id)! || room.get(b.id)! - room.get(a.id)! || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}


/**
 * A Duplex at once (what http.Agent, http2 and the WebSocket splice take), carried over a
 * CONNECT tunnel that opens behind it: writes wait for the tunnel, reads start after its
 * `200`. A refused tunnel (fencing, no sandbox) destroys the stream with the agent's reason.
 */
function tunnel(tls: NodeCredentials, cluster: ClusterStore, microvmId: string, port: number): Duplex {
  let socket: TLSSocket | undefined;
  let open = false;
  const pending: { chunk: Buffer; cb: (err?: Error | null) => void }[] = [];
  let ending: (() => void) | undefined;
  const stream = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (open && socket) socket.write(chunk, cb);
      else pending.push({ chunk, cb });
    },
    final(cb) {
      if (open && socket) socket.end(cb);
      else ending = () => socket!.end(cb);
    },
    read() {
      socket?.resume();
    },
    destroy(err, cb) {
      socket?.destroy();
      cb(err);
    },
  });
  // What Node's HTTP client and agent call on a socket: passed on to the TLS socket once it exists.
  let timeout: { ms: number; cb?: () => void } | undefined;
  const net = stream as Duplex & { setTimeout(ms: number, cb?: () => void): Duplex; setNoDelay(): Duplex; setKeepAlive(): Duplex; ref(): Duplex; unref(): Duplex };
  net.setTimeout = (ms, cb) => {
    if (socket) socket.setTimeout(ms, cb);
    else timeout = { ms, ...(cb ? { cb } : {}) };
    return stream;
  };
  net.setNoDelay = () => stream;
  net.setKeepAlive = () => stream;
  net.ref = () => stream;
  net.unref = () => stream;
  // The tunnel is open within TUNNEL_OPEN_MS (its lease looked up, the agent's TLS and its answer to CONNECT), or fails.
  const deadline = setTimeout(() => {
    if (!open) stream.destroy(new Error(`the tunnel to MicroVM ${microvmId} port ${port} did not open within ${TUNNEL_OPEN_MS / 1000} s (its host did not connect or answer)`));
  }, TUNNEL_OPEN_MS);
  deadline.unref();
  stream.once("close", () => clearTimeout(deadline));
  void (async () => {
    const lease = await cluster.lease(microvmId);
    if (!lease?.hostId) throw new Error(`MicroVM ${microvmId} has no host`);
    const host = await cluster.host(lease.hostId);
    if (!host || host.state === "LOST") throw new Error(`MicroVM ${microvmId}'s host ${lease.hostId} is ${host ? "LOST" : "gone"}`);
    const [ip, agentPort] = splitAddress(host.address);
    if (stream.destroyed) return;
    socket = tlsConnect({ host: ip, port: agentPort, ca: tls.ca, cert: tls.cert, key: tls.key, minVersion: "TLSv1.3", checkServerIdentity: checkNodeIdentity("agent") });
    socket.setNoDelay(true);
    if (timeout) socket.setTimeout(timeout.ms, timeout.cb);
    // A socket timeout is the stream's: the HTTP agent listens for it on the stream to close idle connections.
    socket.on("timeout", () => stream.emit("timeout"));
    let head = Buffer.alloc(0);
    socket.on("error", (err) => stream.destroy(err));
    socket.on("close", () => {
      if (!stream.destroyed) stream.push(null);
    });
    socket.once("secureConnect", () => socket!.write(`CONNECT ${microvmId}:${port} HTTP/1.1\r\nhost: ${microvmId}:${port}\r\n${EPOCH_HEADER}: ${lease.epoch}\r\n\r\n`));
    socket.on("data", (data: Buffer) => {
      if (open) {
        if (!stream.push(data)) socket!.pause();
        return;
      }
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > 16384) stream.destroy(new Error("the agent's answer to CONNECT has no end"));
        return;
      }
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head.subarray(0, end).toString("latin1"))?.[1];
      const rest = head.subarray(end + 4);
      if (status !== "200") {
        stream.destroy(new Error(`host ${host.id} refused the connection to MicroVM ${microvmId} port ${port}: ${rest.toString("utf8") || `status ${status}`}`));
        return;
      }
      open = true;
      clearTimeout(deadline);
      if (rest.length) stream.push(rest);
      for (const p of pending.splice(0)) socket!.write(p.chunk, p.cb);
      ending?.();
    });
  })().catch((err: Error) => stream.destroy(err));
  return stream;
}
