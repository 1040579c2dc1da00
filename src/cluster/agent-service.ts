// What `lmvm agent` does on its host (docs/design.md, "Many hosts"): keeps
// its host's row in the database fresh (a heartbeat every HEARTBEAT_MS with
// its free room), serves the runtime port to the server over HTTPS with
// mutual TLS, and fences itself:
//
// - Every call that acts on a MicroVM carries the epoch it was placed with;
//   the agent acts only while the database's lease is (this host, that epoch).
// - Every SWEEP_MS it ends local sandboxes whose lease is no longer its own
//   (a server that declared this host lost revoked them), so an agent that
//   comes back from a partition does not keep running what another host runs
//   now.
// - When it cannot renew its heartbeat for LEASE_DEADLINE_MS, it stops
//   serving: every call and every tunnel into a MicroVM is refused until a
//   heartbeat succeeds again. The server declares a host lost only later
//   (its own deadline is longer), so by then the host has stopped serving.

import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { connect as tcpConnect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { EgressPolicy, ImageVersion, Microvm, SandboxRuntime, Store, WarmPoolTarget } from "../core/index.js";
import type { ClusterStore, HostCapacity, HostState } from "../store/index.js";
import { peerIdentity, type NodeCredentials } from "./ca.js";
import { EPOCH_HEADER, errorToWire, LeaseLost, reviveMicrovm, reviveVersion, RPC_PREFIX } from "./wire.js";
import { SPAWN_PATH, SpawnRelay } from "./spawn.js";
import type { AgentBuilds } from "./agent-builds.js";

export const HEARTBEAT_MS = 2_000;
/** How long an agent keeps serving without a successful heartbeat. */
export const LEASE_DEADLINE_MS = 10_000;
export const SWEEP_MS = 3_000;
/** The largest RPC body (a MicroVM and its version as JSON). */
const MAX_BODY = 4 * 1024 * 1024;

export interface AgentServiceOptions {
  hostId: string;
  /** The runtime the server's calls reach (with the object store's images and checkpoints, when there is one). */
  runtime: SandboxRuntime;
  /** The host's own sandboxes, under it: the sweep ends sandboxes here without touching what the object store holds for the MicroVM's new host. */
  local: SandboxRuntime;
  cluster: ClusterStore;
  /** The platform's records (MicroVMs), read only. */
  store: Store;
  tls: NodeCredentials;
  /** The host's capacity now (free memory and disk change between heartbeats). */
  capacity: () => HostCapacity;
  log: (event: Record<string, unknown>) => void;
  /** The host's image builds, which the server places here (agent-builds.ts). */
  builds?: AgentBuilds;
  heartbeatMs?: number;
  leaseDeadlineMs?: number;
  sweepMs?: number;
}

type Body = Record<string, unknown>;

const STATUS_TEXT: Record<number, string> = { 403: "Forbidden", 404: "Not Found", 409: "Conflict", 502: "Bad Gateway" };

export class AgentService {
  private server: Server | undefined;
  /** When the last successful heartbeat was SENT (performance.now(), monotonic): the deadline counts from before the database stamped it. */
  private lastBeat = performance.now();
  private beating = false;
  private state: HostState | undefined;
  private timers: NodeJS.Timeout[] = [];
  private sweeping: Promise<void> | undefined;
  private readonly tunnels = new Set<Duplex>();
  private readonly spawns = new SpawnRelay();
  private stopped = false;

  constructor(private readonly opts: AgentServiceOptions) {}

  /** True while the last heartbeat is within the lease deadline: the agent serves only then. */
  get serving(): boolean {
    return !this.stopped && performance.now() - this.lastBeat <= (this.opts.leaseDeadlineMs ?? LEASE_DEADLINE_MS);
  }

  async start(host: string, port: number): Promise<number> {
    const sent = performance.now();
    const h = await this.opts.cluster.registerHost(this.opts.capacity());
    this.state = h.state;
    this.lastBeat = sent;
    await this.recover();
    const { ca, cert, key } = this.opts.tls;
    // Only certificates the cluster's CA signed, both ways; and of those, only a server's may call.
    this.server = createServer({ ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" }, (req, res) => void this.handle(req, res));
    this.server.on("connect", (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.tunnel(req, socket, head));
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on("error", () => undefined);
      if (!this.authorised(req)) return void socket.end("HTTP/1.1 403 Forbidden\r\nconnection: close\r\n\r\nonly the cluster's server may start processes");
      if (!req.url?.startsWith(SPAWN_PATH)) return void socket.end("HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n");
      this.spawns.handle(req, socket, head, (id, epoch) => this.fence(id, epoch), (id, opts) => this.opts.runtime.spawn(id, opts));
    });
    this.server.on("tlsClientError", () => undefined); // a refused certificate: the handshake already failed
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(port, host, () => resolve());
    });
    const address = this.server.address();
    const bound = typeof address === "object" && address ? address.port : port;
    this.timers.push(setInterval(() => {
      void this.beat();
      this.enforce();
    }, this.opts.heartbeatMs ?? HEARTBEAT_MS));
    this.timers.push(setInterval(() => void this.sweep(), this.opts.sweepMs ?? SWEEP_MS));
    return bound;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const t of this.tunnels) t.destroy();
    this.spawns.close();
    await this.opts.builds?.abortAll("the agent stops");
    if (this.server) {
      const closed = new Promise<void>((r) => this.server!.close(() => r()));
      this.server.closeAllConnections();
      await closed;
    }
    await this.sweeping;
  }

  private async beat(): Promise<void> {
    // One heartbeat at a time: a slow one is not overtaken by the next (whose success would date from later).
    if (this.beating) return;
    this.beating = true;
    const sent = performance.now();
    try {
      const c = this.opts.capacity();
      let state = await this.opts.cluster.heartbeat(this.opts.hostId, c.freeMemoryMiB, c.freeDiskMiB);
      // A host the server declared LOST (or an operator removed) registers again once it is back;
      // its leases were revoked meanwhile, and the sweep ends their sandboxes before anything new comes.
      if (state === undefined || state === "LOST") {
        await this.sweep();
        state = (await this.opts.cluster.registerHost(c)).state;
        this.opts.log({ msg: "host registered again", hostId: this.opts.hostId, state });
      }
      if (!this.serving) this.opts.log({ msg: "heartbeat renewed: serving again", hostId: this.opts.hostId });
      this.state = state;
      this.lastBeat = Math.max(this.lastBeat, sent);
    } catch (err) {
      if (this.stopped) return;
      this.opts.log({ level: "error", msg: "heartbeat failed", hostId: this.opts.hostId, err: (err as Error).message, serving: this.serving });
    } finally {
      this.beating = false;
    }
  }

  /** Past its heartbeat's deadline the host serves nothing: its open tunnels and processes' connections end too, not only new calls. */
  private enforce(): void {
    // Its builds stop too: the server places them on another host once it declares this one lost, and this one must not finish them.
    if (!this.serving && this.opts.builds?.size) void this.opts.builds.abortAll(`host ${this.opts.hostId}'s heartbeat is past its deadline`);
    if (this.serving || (!this.tunnels.size && !this.spawns.size)) return;
    this.opts.log({ level: "warn", msg: "not serving (heartbeat past its deadline): open tunnels and process connections ended", hostId: this.opts.hostId, tunnels: this.tunnels.size, processes: this.spawns.size });
    for (const t of this.tunnels) t.destroy();
    this.tunnels.clear();
    this.spawns.endAll();
  }

  /** Ends every local sandbox whose MicroVM's lease is not this host's. */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    let ids: Set<string>;
    try {
      ids = await this.opts.local.running();
    } catch (err) {
      this.opts.log({ level: "error", msg: "sweep could not list sandboxes", err: (err as Error).message });
      return;
    }
    for (const id of ids) {
      try {
        const lease = await this.opts.cluster.lease(id);
        if (lease?.hostId === this.opts.hostId) continue;
        const vm = await this.opts.store.getMicrovm(id);
        if (!vm) continue;
        this.opts.log({ msg: "sandbox ended: its MicroVM's lease is not this host's", microvmId: id, hostId: this.opts.hostId, lease: lease ?? null });
        await this.opts.local.terminate(vm);
      } catch (err) {
        this.opts.log({ level: "error", msg: "sweep failed for a sandbox", microvmId: id, err: (err as Error).message });
      }
    }
  }

  /** At start: keeps the sandboxes and checkpoints of MicroVMs whose lease is this host's, frees the rest, takes over the running ones. */
  private async recover(): Promise<void> {
    const keep: Microvm[] = [];
    for (const lease of await this.opts.cluster.leasesOf(this.opts.hostId)) {
      const vm = await this.opts.store.getMicrovm(lease.microvmId);
      if (vm && vm.state !== "TERMINATED") keep.push(vm);
    }
    await this.opts.runtime.reap(keep);
    const running = keep.filter((vm) => vm.state === "RUNNING");
    if (running.length) await this.opts.runtime.adopt(running);
  }

  private async fence(microvmId: string, epoch: unknown): Promise<void> {
    if (!this.serving) throw new LeaseLost(`host ${this.opts.hostId} has not renewed its heartbeat for over ${(this.opts.leaseDeadlineMs ?? LEASE_DEADLINE_MS) / 1000} s and serves nothing until it does`);
    // A lease that cannot be read (PostgreSQL unreachable) is not held: the call is refused before anything is done, so the
    // server knows it did not begin (a resume keeps its MicroVM SUSPENDED) rather than taking it for a failure midway.
    const unreadable = (err: unknown) => new LeaseLost(`host ${this.opts.hostId} could not read MicroVM ${microvmId}'s lease, so it did not act: ${(err as Error).message}`);
    const held = typeof epoch === "number" && (await this.opts.cluster.holds(microvmId, this.opts.hostId, epoch).catch((err: unknown) => {
      throw unreadable(err);
    }));
    if (!held) {
      const lease = await this.opts.cluster.lease(microvmId).catch((err: unknown) => {
        throw unreadable(err);
      });
      throw new LeaseLost(`MicroVM ${microvmId}'s lease is ${lease ? `host '${lease.hostId || "(revoked)"}' epoch ${lease.epoch}` : "gone"}, not host '${this.opts.hostId}' epoch ${String(epoch)}: this host may not act on it`);
    }
    // The lease query may have taken long enough for the heartbeat's deadline to pass meanwhile.
    if (!this.serving) throw new LeaseLost(`host ${this.opts.hostId} stopped serving while checking MicroVM ${microvmId}'s lease: its heartbeat is past its deadline`);
  }

  private authorised(req: IncomingMessage): boolean {
    const socket = req.socket as TLSSocket;
    return socket.authorized && peerIdentity(socket.getPeerCertificate()).role === "server";
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body ?? null);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    if (!this.authorised(req)) return send(403, { error: { name: "Error", message: "only the cluster's server may call an agent" } });
    if (req.method !== "POST" || !req.url?.startsWith(RPC_PREFIX)) return send(404, { error: { name: "Error", message: `no such call: ${req.method} ${req.url}` } });
    const op = req.url.slice(RPC_PREFIX.length);
    if (op === "build") {
      if (!this.opts.builds) return send(404, { error: { name: "Error", message: `host ${this.opts.hostId} runs no builds` } });
      return this.opts.builds.serve(req, res, () =>
        !this.serving ? `host ${this.opts.hostId} has not renewed its heartbeat in time and serves nothing until it does`
        : this.state !== "ACTIVE" ? `host ${this.opts.hostId} is ${this.state}: no new builds are placed on it` : undefined);
    }
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req) {
        size += (c as Buffer).length;
        if (size > MAX_BODY) throw new Error("request body too large");
        chunks.push(c as Buffer);
      }
      const body = (chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {}) as Body;
      send(200, { result: (await this.call(op, body)) ?? null });
    } catch (err) {
      send(500, { error: errorToWire(err) });
    }
  }

  private async call(op: string, b: Body): Promise<unknown> {
    const rt = this.opts.runtime;
    const vm = () => reviveMicrovm(b.vm as Microvm);
    const version = () => reviveVersion(b.version as ImageVersion);
    if (op === "host") return { hostId: this.opts.hostId, state: this.state, serving: this.serving };
    if (!this.serving) throw new LeaseLost(`host ${this.opts.hostId} has not renewed its heartbeat in time and serves nothing until it does`);
    switch (op) {
      case "shortage":
        if (this.state !== "ACTIVE") return { reason: `host ${this.opts.hostId} is ${this.state}: no new MicroVMs are placed on it` };
        return { reason: await rt.shortage(version()) };
      case "unrunnable":
        return { reason: rt.unrunnable?.(version()) };
      case "run":
        await this.fence(vm().id, b.epoch);
        return rt.run(vm(), version());
      case "suspend":
        await this.fence(vm().id, b.epoch);
        return rt.suspend(vm());
      case "resume":
        await this.fence(vm().id, b.epoch);
        return rt.resume(vm());
      case "terminate":
        await this.fence(vm().id, b.epoch);
        return rt.terminate(vm());
      case "inspect":
        await this.fence(vm().id, b.epoch);
        return rt.inspect(vm());
      case "exitReason":
        return { reason: await rt.exitReason(vm()) };
      case "condition":
        await this.fence(vm().id, b.epoch);
        return { reason: await rt.condition(vm()) };
      case "running": {
        // Only what this host holds the lease of: a sandbox left behind a moved lease is the sweep's to end, not a live MicroVM.
        const ids = [...(await rt.running())];
        const mine: string[] = [];
        for (const id of ids) if ((await this.opts.cluster.lease(id))?.hostId === this.opts.hostId) mine.push(id);
        return { ids: mine };
      }
      case "reap": {
        const keep = (b.keep as Microvm[]).map(reviveMicrovm);
        const mine: Microvm[] = [];
        for (const k of keep) if ((await this.opts.cluster.lease(k.id))?.hostId === this.opts.hostId) mine.push(k);
        return rt.reap(mine);
      }
      case "adopt": {
        const running = (b.running as Microvm[]).map(reviveMicrovm);
        for (const r of running) await this.fence(r.id, (b.epochs as Record<string, number>)[r.id]);
        return rt.adopt(running);
      }
      case "warmPools":
        return rt.warmPools((b.targets as WarmPoolTarget[]).map((t) => ({ ...t, version: reviveVersion(t.version) })));
      case "claimWarm":
        if (this.state !== "ACTIVE") return { microvmId: null };
        return { microvmId: (await rt.claimWarm(version(), b.egress as EgressPolicy, b.logging === true)) ?? null };
      case "unclaimWarm":
        return rt.unclaimWarm(String(b.microvmId));
      case "closeWarmPools":
        return rt.closeWarmPools();
      case "building":
        return { running: this.opts.builds?.isRunning(String(b.buildId)) ?? false };
      case "discardBuild":
        return this.opts.builds?.discard(String(b.imageArn), String(b.version));
      case "recoverBuilds":
        return this.opts.builds?.recover();
      default:
        throw new Error(`no such call: ${op}`);
    }
  }

  /**
   * `CONNECT <microvm-id>:<port>` with the lease's epoch: a byte pipe to the app's port in the
   * MicroVM's sandbox on this host, after the same fencing as any call.
   */
  private async tunnel(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => undefined);
    const refuse = (status: number, why: string) => {
      socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${why}`);
    };
    if (!this.authorised(req)) return refuse(403, "only the cluster's server may open tunnels");
    const m = /^([a-z0-9-]+):(\d{1,5})$/.exec(req.url ?? "");
    if (!m) return refuse(404, `CONNECT wants <microvm-id>:<port>; got '${req.url}'`);
    const [, id, port] = m;
    try {
      await this.fence(id!, Number(req.headers[EPOCH_HEADER]));
    } catch (err) {
      return refuse(409, (err as Error).message);
    }
    const ip = this.opts.runtime.address(id!);
    if (!ip) return refuse(404, `MicroVM ${id} has no sandbox on host ${this.opts.hostId}`);
    const upstream: Socket = tcpConnect({ host: ip, port: Number(port) });
    this.tunnels.add(socket);
    const done = () => {
      this.tunnels.delete(socket);
      upstream.destroy();
      socket.destroy();
    };
    upstream.once("connect", () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.once("error", (err) => {
      if (!upstream.connecting) return done();
      refuse(502, `cannot reach ${ip}:${port} in MicroVM ${id}: ${err.message}`);
      this.tunnels.delete(socket);
    });
    upstream.once("close", done);
    socket.once("close", done);
  }
}
