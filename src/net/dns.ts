// The DNS resolver a sandbox with egress sees at DNS_RESOLVER_ADDRESS
// (169.254.169.253, AWS's VPC resolver address). nftables redirects a
// sandbox's queries there (udp and tcp port 53) to the host end of its own
// veth, where this forwarder holds one UDP and one TCP socket per sandbox. It
// relays each query byte for byte to the upstream resolvers (the host's, from
// /etc/resolv.conf, or `lmvm server --dns-resolvers`) and the answer back,
// trying them in order within a deadline per query; past it, or when every
// upstream fails, the sandbox gets SERVFAIL at once (a lookup that hung
// would hold a connected UDP socket in the app, which a checkpoint cannot
// keep). Each sandbox may have DNS_MAX_IN_FLIGHT queries under way and
// DNS_QUERIES_PER_SECOND (AWS's resolver limit per network interface); past
// either, it gets REFUSED. Sockets are closed when the sandbox goes.

import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { connect, createServer, isIPv4, isIPv6, type Server, type Socket as TcpSocket } from "node:net";

/** Queries per second each sandbox may send (burst: one second's worth): the Amazon VPC resolver's 1024 packets per second per network interface. */
export const DNS_QUERIES_PER_SECOND = 1024;
/** Queries of one sandbox under way at once. */
export const DNS_MAX_IN_FLIGHT = 128;
/** How long one query may take across all upstreams before the sandbox gets SERVFAIL (glibc's resolver waits 5 s). */
export const DNS_QUERY_DEADLINE_MS = 3000;
/** TCP connections one sandbox may hold to its resolver, and how long one may sit idle. */
const TCP_MAX_CONNECTIONS = 16;
const TCP_IDLE_MS = 10_000;
const MAX_MESSAGE = 65535;

/** The nameservers of a resolv.conf text, IPv4 and IPv6. */
export function nameserversOf(resolvConf: string): string[] {
  return resolvConf
    .split("\n")
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((a): a is string => !!a && (isIPv4(a) || isIPv6(a.split("%")[0]!)));
}

/** The host's resolvers (/etc/resolv.conf). */
export function hostResolvers(file = "/etc/resolv.conf"): string[] {
  try {
    return nameserversOf(readFileSync(file, "utf8"));
  } catch {
    return [];
  }
}

/**
 * An answer to `query` with only its header's id and question, and `rcode`
 * (2 SERVFAIL, 5 REFUSED); undefined when the query is too short to answer.
 */
export function errorAnswer(query: Buffer, rcode: number): Buffer | undefined {
  if (query.length < 12) return undefined;
  // Skip the question: QNAME labels, then QTYPE and QCLASS. Keep it only when it is well formed and alone.
  let end = 12;
  const qdcount = query.readUInt16BE(4);
  if (qdcount === 1) {
    while (end < query.length && query[end] !== 0) {
      if ((query[end]! & 0xc0) !== 0) { end = -1; break; }
      end += query[end]! + 1;
    }
    end = end < 0 || end + 5 > query.length ? 12 : end + 5;
  }
  const answer = Buffer.from(query.subarray(0, end));
  const flags = query.readUInt16BE(2);
  // QR=1, keep OPCODE and RD, RA=1, RCODE.
  answer.writeUInt16BE(0x8000 | (flags & 0x7900) | 0x0080 | (rcode & 0xf), 2);
  answer.writeUInt16BE(end > 12 ? 1 : 0, 4);
  answer.writeUInt16BE(0, 6);
  answer.writeUInt16BE(0, 8);
  answer.writeUInt16BE(0, 10);
  return answer;
}

const SERVFAIL = 2;
const NOTIMP = 4;
const REFUSED = 5;
/** Zone transfers (IXFR 251, AXFR 252): never relayed. */
const TRANSFER_TYPES = new Set([251, 252]);

/**
 * Whether `query` is one standard query the forwarder relays: QR 0, opcode
 * QUERY, one question (whose type is no zone transfer), no answer or authority
 * records and at most one additional record (EDNS's OPT). Anything else
 * (UPDATE, NOTIFY, AXFR/IXFR, answers, malformed packets) is answered NOTIMP or
 * REFUSED rather than sent to the upstreams from the host's address: an
 * upstream that accepts dynamic updates from the host must not take them from
 * a sandbox.
 */
export function standardQuery(query: Buffer): boolean {
  if (query.length < 12) return false;
  const flags = query.readUInt16BE(2);
  if (flags & 0x8000 || ((flags >> 11) & 0xf) !== 0) return false;
  if (query.readUInt16BE(4) !== 1 || query.readUInt16BE(6) !== 0 || query.readUInt16BE(8) !== 0 || query.readUInt16BE(10) > 1) return false;
  let end = 12;
  while (end < query.length && query[end] !== 0) {
    if ((query[end]! & 0xc0) !== 0) return false;
    end += query[end]! + 1;
  }
  if (end + 5 > query.length) return false;
  return !TRANSFER_TYPES.has(query.readUInt16BE(end + 1));
}

interface Binding {
  address: string;
  /** The sandbox's own address: queries from anywhere else are not answered. */
  peer?: string;
  udp: Socket;
  tcp: Server;
  connections: Set<TcpSocket>;
  inFlight: number;
  tokens: number;
  refilled: number;
  queries: number;
}

export class DnsForwarder {
  private readonly bindings = new Map<number, Binding>();

  /** `upstreams`: resolver addresses (port 53); none means every query gets SERVFAIL. */
  constructor(readonly upstreams: string[]) {}

  /** Queries each bound sandbox sent, by key (its network index). */
  queries(): Map<number, number> {
    return new Map([...this.bindings].map(([k, b]) => [k, b.queries]));
  }

  has(key: number): boolean {
    return this.bindings.has(key);
  }

  /**
   * Listens on address:53 (udp and tcp) for the sandbox `key`, answering only
   * `peer` (the sandbox's address) when given: the host's other networks may
   * route to that address too. A binding of the same key on the same address is kept.
   */
  async bind(key: number, address: string, peer?: string): Promise<void> {
    const old = this.bindings.get(key);
    if (old?.address === address && old.peer === peer) return;
    if (old) await this.unbind(key);
    const udp = createSocket({ type: "udp4", reuseAddr: true });
    const tcp = createServer({ pauseOnConnect: false });
    const b: Binding = { address, peer, udp, tcp, connections: new Set(), inFlight: 0, tokens: DNS_QUERIES_PER_SECOND, refilled: Date.now(), queries: 0 };
    udp.on("message", (msg: Buffer, from: RemoteInfo) => {
      if (peer && from.address !== peer) return;
      // The relay may outlast the binding (up to the query's deadline): a socket closed meanwhile sends nothing.
      this.answer(b, msg)
        .then((a) => {
          if (a && this.bindings.get(key) === b) udp.send(a, from.port, from.address, () => undefined);
        })
        .catch(() => undefined);
    });
    udp.on("error", () => undefined);
    tcp.on("connection", (sock) => this.serveTcp(b, sock));
    tcp.on("error", () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(53, address, () => (udp.off("error", reject), resolve()));
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen({ port: 53, host: address, exclusive: true }, () => (tcp.off("error", reject), resolve()));
      });
    } catch (err) {
      try { udp.close(); } catch { /* not bound */ }
      tcp.close();
      throw new Error(`could not listen for the sandbox's DNS queries on ${address}:53 (another DNS server bound to every address on port 53 without SO_REUSEADDR, say): ${(err as Error).message}`);
    }
    this.bindings.set(key, b);
  }

  async unbind(key: number): Promise<void> {
    const b = this.bindings.get(key);
    if (!b) return;
    this.bindings.delete(key);
    try { b.udp.close(); } catch { /* already closed */ }
    for (const c of b.connections) c.destroy();
    await new Promise<void>((resolve) => b.tcp.close(() => resolve()));
  }

  async close(): Promise<void> {
    for (const key of [...this.bindings.keys()]) await this.unbind(key);
  }

  /** Admission (rate and in-flight bounds), then the relay; the answer to send back, if any. */
  private async answer(b: Binding, query: Buffer, viaTcp = false): Promise<Buffer | undefined> {
    if (query.length < 12) return undefined; // not DNS
    b.queries++;
    if (!standardQuery(query)) return errorAnswer(query, (query.readUInt16BE(2) >> 11) & 0xf ? NOTIMP : REFUSED);
    const now = Date.now();
    b.tokens = Math.min(DNS_QUERIES_PER_SECOND, b.tokens + ((now - b.refilled) / 1000) * DNS_QUERIES_PER_SECOND);
    b.refilled = now;
    if (b.tokens < 1 || b.inFlight >= DNS_MAX_IN_FLIGHT) return errorAnswer(query, REFUSED);
    b.tokens -= 1;
    b.inFlight++;
    try {
      return (await this.relay(query, viaTcp)) ?? errorAnswer(query, SERVFAIL);
    } finally {
      b.inFlight--;
    }
  }

  /** The first upstream answer within the deadline, each upstream tried in turn with an even share of what is left. */
  private async relay(query: Buffer, viaTcp: boolean): Promise<Buffer | undefined> {
    const deadline = Date.now() + DNS_QUERY_DEADLINE_MS;
    for (let i = 0; i < this.upstreams.length; i++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const share = Math.max(100, Math.floor(left / (this.upstreams.length - i)));
      const upstream = this.upstreams[i]!;
      const a = await (viaTcp ? relayTcp(upstream, query, share) : relayUdp(upstream, query, share)).catch(() => undefined);
      if (a) return a;
    }
    return undefined;
  }

  private serveTcp(b: Binding, sock: TcpSocket): void {
    if (b.connections.size >= TCP_MAX_CONNECTIONS || (b.peer && sock.remoteAddress !== b.peer)) return void sock.destroy();
    b.connections.add(sock);
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on("close", () => b.connections.delete(sock));
    sock.on("error", () => undefined);
    let buf = Buffer.alloc(0);
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const len = buf.readUInt16BE(0);
          const query = buf.subarray(2, 2 + len);
          buf = buf.subarray(2 + len);
          const a = await this.answer(b, Buffer.from(query), true);
          if (sock.destroyed) return;
          if (!a) return void sock.destroy();
          const head = Buffer.alloc(2);
          head.writeUInt16BE(a.length);
          sock.write(Buffer.concat([head, a]));
        }
      } finally {
        busy = false;
      }
    };
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length > 2 + MAX_MESSAGE + 2) return void sock.destroy();
      pump().catch(() => sock.destroy());
    });
  }
}

function relayUdp(upstream: string, query: Buffer, ms: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = createSocket(isIPv6(upstream) ? "udp6" : "udp4");
    const id = query.readUInt16BE(0);
    const done = (a: Buffer | undefined) => {
      clearTimeout(timer);
      try { sock.close(); } catch { /* closed */ }
      resolve(a);
    };
    const timer = setTimeout(() => done(undefined), ms);
    sock.on("error", () => done(undefined));
    // A connected socket takes datagrams from the upstream only; the id must match too.
    sock.on("message", (msg) => {
      if (msg.length >= 12 && msg.readUInt16BE(0) === id) done(msg);
    });
    sock.connect(53, upstream, () => sock.send(query, (err) => err && done(undefined)));
  });
}

function relayTcp(upstream: string, query: Buffer, ms: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ host: upstream, port: 53 });
    let buf = Buffer.alloc(0);
    const done = (a: Buffer | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => done(undefined), ms);
    sock.on("error", () => done(undefined));
    sock.on("close", () => done(undefined));
    sock.on("connect", () => {
      const head = Buffer.alloc(2);
      head.writeUInt16BE(query.length);
      sock.write(Buffer.concat([head, query]));
    });
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
  });
}
