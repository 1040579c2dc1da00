// Several API nodes on one database (docs/design.md, "Many hosts"). One API
// node holds the server lock and runs the platform (the leader); every other
// one is a standby: it listens on its own API and endpoint ports and relays
// each connection it accepts, byte for byte, to the leader. The relay is a
// tunnel over mutual TLS through the leader's cluster listener
// (--cluster-listen), opened with
//
//   CONNECT api:0 HTTP/1.1            (or endpoint:0)
//   lmvm-client-address: 203.0.113.7
//   lmvm-client-port: 51234
//
// and taken only from a server certificate of the cluster CA. After the
// leader's `200`, the bytes are the client's own: SigV4 (its Host header),
// the endpoint's TLS and SNI, HTTP/2 and WebSockets reach the leader
// unchanged, and the leader's API and endpoint proxy see the client's address
// (the headers), so audit records and aws:SourceIp name the client, not the
// standby.

import { isIP, createServer, type Server, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { checkNodeIdentity, type NodeCredentials } from "./ca.js";

export type RelayTarget = "api" | "endpoint";
export const RELAY_TARGETS: RelayTarget[] = ["api", "endpoint"];
export const CLIENT_ADDRESS_HEADER = "lmvm-client-address";
export const CLIENT_PORT_HEADER = "lmvm-client-port";
/** How long opening a relay tunnel may take (TLS to the leader and its answer). */
export const RELAY_OPEN_MS = 10_000;

export interface RelayRequest {
  target: RelayTarget;
  client: { address: string; port: number };
}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v);

/**
 * The leader's reading of a relay's CONNECT: its target (`api:0` or `endpoint:0`) and the
 * client's address and port. Anything else is an error naming what is wrong.
 */
export function parseRelayRequest(url: string | undefined, headers: Record<string, string | string[] | undefined>): RelayRequest | { error: string } {
  const m = /^(api|endpoint):0$/.exec(url ?? "");
  if (!m) return { error: `a relay CONNECTs to api:0 or endpoint:0; got '${url ?? ""}'` };
  const address = one(headers[CLIENT_ADDRESS_HEADER]);
  if (!address || !isIP(address)) return { error: `${CLIENT_ADDRESS_HEADER} must be one IP address; got '${String(headers[CLIENT_ADDRESS_HEADER] ?? "")}'` };
  const portText = one(headers[CLIENT_PORT_HEADER]);
  const port = Number(portText);
  if (!portText || !/^\d{1,5}$/.test(portText) || port > 65535) return { error: `${CLIENT_PORT_HEADER} must be a port number (0-65535); got '${String(headers[CLIENT_PORT_HEADER] ?? "")}'` };
  return { target: m[1] as RelayTarget, client: { address, port } };
}

/**
 * Makes the tunnel's socket look, to the server that takes it over, like the client's own
 * connection: its remote address and port are the client's.
 */
export function asClient(socket: Socket, client: { address: string; port: number }): void {
  Object.defineProperty(socket, "remoteAddress", { value: client.address, configurable: true });
  Object.defineProperty(socket, "remotePort", { value: client.port, configurable: true });
  Object.defineProperty(socket, "remoteFamily", { value: isIP(client.address) === 6 ? "IPv6" : "IPv4", configurable: true });
}

/**
 * Opens a relay tunnel to the leader at `leader` (ip:port) for the client's connection; resolves
 * with the TLS socket once the leader answered 200 (any bytes after its answer are pushed back).
 */
export function openRelay(tls: NodeCredentials, leader: string, target: RelayTarget, client: { address: string; port: number }, ms = RELAY_OPEN_MS): Promise<TLSSocket> {
  const i = leader.lastIndexOf(":");
  const host = leader.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  const port = Number(leader.slice(i + 1));
  return new Promise((resolve, reject) => {
    // allowHalfOpen: Node's tls.connect passes it to the TLSSocket (its types omit it).
    const options: ConnectionOptions & { allowHalfOpen: boolean } = { host, port, allowHalfOpen: true, ca: tls.ca, cert: tls.cert, key: tls.key, minVersion: "TLSv1.3", checkServerIdentity: checkNodeIdentity("server") };
    const socket = tlsConnect(options);
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      socket.destroy();
      reject(err);
    };
    const deadline = setTimeout(() => fail(new Error(`the leader at ${leader} did not open a relay within ${Math.round(ms) / 1000} s`)), Math.max(0, ms));
    socket.setNoDelay(true);
    socket.on("error", (err) => fail(new Error(`relay to the leader at ${leader}: ${err.message}`)));
    const onClose = () => fail(new Error(`the leader at ${leader} closed the relay before answering`));
    socket.once("close", onClose);
    socket.once("secureConnect", () => {
      socket.write(`CONNECT ${target}:0 HTTP/1.1\r\nhost: ${target}:0\r\n${CLIENT_ADDRESS_HEADER}: ${client.address}\r\n${CLIENT_PORT_HEADER}: ${client.port}\r\n\r\n`);
    });
    let head = Buffer.alloc(0);
    const onData = (data: Buffer) => {
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > 16384) fail(new Error(`the leader at ${leader} sent no answer to the relay's CONNECT`));
        return;
      }
      socket.off("data", onData);
      socket.pause();
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString("latin1"))?.[1];
      if (status !== "200") return fail(new Error(`the leader at ${leader} refused the relay: ${head.subarray(0, end).toString("latin1").split("\r\n")[0]} ${head.subarray(end + 4).toString("utf8").slice(0, 300)}`));
      const rest = head.subarray(end + 4);
      if (rest.length) socket.unshift(rest);
      settled = true;
      clearTimeout(deadline);
      socket.off("close", onClose);
      resolve(socket);
    };
    socket.on("data", onData);
  });
}

export interface StandbyOptions {
  tls: NodeCredentials;
  /** The leader's cluster listener as recorded in the database now (undefined: none recorded). */
  leaderAddress: () => Promise<string | undefined>;
  api: { host: string; port: number };
  endpoint: { host: string; port: number };
  log: (event: Record<string, unknown>) => void;
}

/**
 * A standby API node's listeners: every connection to its API or endpoint port is relayed to the
 * leader. `close()` stops both and ends the relayed connections (the leader they went to is gone
 * when a standby takes over).
 */
export class StandbyRelay {
  private servers: Server[] = [];
  private readonly open = new Set<Socket>();
  private cached: { address: Promise<string | undefined>; at: number } | undefined;
  private failures = 0;
  apiPort = 0;
  endpointPort = 0;

  constructor(private readonly opts: StandbyOptions) {}

  async listen(): Promise<void> {
    try {
      this.apiPort = await this.serve("api", this.opts.api);
      this.endpointPort = await this.serve("endpoint", this.opts.endpoint);
    } catch (err) {
      // The API listener may be bound already (the endpoint port in use): it is not left behind.
      await this.close();
      throw err;
    }
  }

  private leader(): Promise<string | undefined> {
    // Read at most once a second, one query at a time, failures included: a burst of connections
    // (or of failed relays while the leader is down) does not become a burst of queries.
    if (this.cached && performance.now() - this.cached.at < 1000) return this.cached.address;
    const address = this.opts.leaderAddress();
    address.catch(() => undefined);
    // In flight, the one query is shared (at: +Infinity); its answer, or failure, is kept a second from when it came.
    this.cached = { address, at: Number.POSITIVE_INFINITY };
    const answered = () => {
      if (this.cached?.address === address) this.cached.at = performance.now();
    };
    address.then(answered, answered);
    return address;
  }

  private serve(target: RelayTarget, at: { host: string; port: number }): Promise<number> {
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => void this.relay(target, client));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(at.port, at.host, () => {
        server.off("error", reject);
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  private async relay(target: RelayTarget, client: Socket): Promise<void> {
    this.open.add(client);
    client.on("error", () => undefined);
    client.once("close", () => this.open.delete(client));
    const from = { address: client.remoteAddress ?? "0.0.0.0", port: client.remotePort ?? 0 };
    let upstream: TLSSocket;
    try {
      // One deadline for the whole opening, the leader's lookup included.
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const leader = await Promise.race([
        this.leader(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`the leader's address could not be read from the database within ${RELAY_OPEN_MS / 1000} s`)), RELAY_OPEN_MS);
        }),
      ]).finally(() => clearTimeout(timer));
      if (!leader) throw new Error("no leader has recorded a --cluster-listen address in the database");
      upstream = await openRelay(this.opts.tls, leader, target, from, RELAY_OPEN_MS - (performance.now() - started));
    } catch (err) {
      // One line per run of failures, not per connection: a dead leader is retried below by the lock, not here.
      if (this.failures++ % 100 === 0) this.opts.log({ level: "warn", msg: "standby: a connection could not be relayed to the leader", target, err: (err as Error).message });
      client.destroy();
      return;
    }
    this.failures = 0;
    if (client.destroyed) return void upstream.destroy();
    this.open.add(upstream);
    // Half-open both ways: a client's FIN after its request reaches the leader as a FIN (pipe ends
    // upstream) and the answer still comes back; each direction's end travels by its pipe. A socket
    // is forgotten once closed; an error on either ends both.
    const fail = () => {
      upstream.destroy();
      client.destroy();
    };
    upstream.on("error", fail);
    client.on("error", fail);
    upstream.once("close", () => {
      this.open.delete(upstream);
      if (!client.writableEnded) client.end();
    });
    client.once("close", () => {
      // The client is gone both ways: nothing more can reach it, nor come from it.
      upstream.destroy();
    });
    upstream.pipe(client);
    client.pipe(upstream);
    upstream.resume();
    client.resume();
  }

  async close(): Promise<void> {
    const closed = this.servers.filter((s) => s.listening).map((s) => new Promise<void>((r) => s.close(() => r())));
    this.servers = [];
    for (const s of this.open) s.destroy();
    this.open.clear();
    await Promise.all(closed);
  }
}
