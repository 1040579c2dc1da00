// The MicroVM endpoint proxy: https://<microvmId>.<domain>:<port>.
// One TLS listener; ALPN picks the protocol per connection: h2 goes to an
// HTTP/2 server, anything else to an HTTP/1.1 server. Both check the token
// (admission.ts) before anything reaches the app, then stream the request
// and the answer through without buffering:
// - HTTP/1.1, and HTTP/2 requests that are not gRPC, go to the app over
//   HTTP/1.1 keep-alive connections;
// - gRPC (HTTP/2 with content-type application/grpc), and any request with
//   X-aws-proxy-force-h2: true (over HTTP/1.1 or HTTP/2), go to the app over
//   cleartext HTTP/2 (h2c), trailers included;
// - WebSocket upgrades are spliced to the app as raw TCP after its 101;
//   a shell token's upgrade goes to the shell ingress instead.
// Before any of it, the MicroVM's ingress connectors must admit the traffic,
// a request for the lifecycle hooks is refused, and the MicroVM's rate
// limits apply (limits.ts).
// An app may answer before it has read the whole request (a 413 or 401 ahead
// of an upload): once that answer has reached the client, the rest of the
// request body no longer goes to the app (see forwardHttp1).
// Every upstream connection is tracked per MicroVM: before a checkpoint they
// are all closed (gVisor cannot save a sandbox with open connections).

import type { Socket } from "node:net";
import { createServer as createHttpServer, request as httpRequest, Agent, type IncomingMessage, type ServerResponse, type IncomingHttpHeaders } from "node:http";
import { connect as h2Connect, createServer as createH2Server, constants as h2, type ClientHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders as H2Headers } from "node:http2";
import { createSecureContext, createServer as createTlsServer, TLSSocket, type SecureContext } from "node:tls";
import { readFileSync } from "node:fs";
import type { Duplex } from "node:stream";
import type { Ingress } from "../core/index.js";
import { STATUS_CODES } from "node:http";
import { limitsOf, type ImageConfig, type Microvm } from "../core/index.js";
import { admit, checkHookPath, checkIngress, reach, Refusal, type Admitted, type MicrovmDirectory } from "./admission.js";
import { AWS_ENDPOINT_LIMITS, EndpointLimiter, type EndpointLimitsConfig, type Release } from "./limits.js";
import { forcesH2, forwardedHeaders, returnedHeaders, BASE_SUBPROTOCOL } from "./routing.js";
import type { MicrovmTokens } from "./tokens.js";
import type { TlsFiles } from "./certificates.js";

/** Counts what the proxy serves, for metrics. */
export interface ProxyMetrics {
  request(status: number, bytesIn: number, bytesOut: number): void;
}

/** Takes over a WebSocket upgrade that carries a shell token. */
export interface ShellIngress extends Ingress {
  upgrade(microvmId: string, req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

export interface EndpointProxyOptions {
  tls: TlsFiles;
  domain: string;
  tokens: MicrovmTokens;
  directory: MicrovmDirectory;
  shell?: ShellIngress;
  metrics?: ProxyMetrics;
  log?: (event: Record<string, unknown>) => void;
  /** Largest request head accepted, in bytes (default 16 KiB). */
  maxHeaderSize?: number;
  /** Per-MicroVM connection and request-rate limits (default: the service's table, AWS_ENDPOINT_LIMITS). */
  limits?: EndpointLimitsConfig;
  /** How long a request may wait for a PENDING MicroVM to be RUNNING (default: the longest /run hook, 60 s, plus the restore deadline, 120 s). */
  pendingWaitMs?: number;
}

/** A request let through: where it goes, and the connection slot it holds until it ends. */
type Target = Admitted & { address: string; release: Release };

const PENDING_WAIT_MS = 180_000;

/** A MicroVM's upstream connections, so they can all be closed before a checkpoint. */
class Upstreams {
  // Idle connections are closed by us after 2 s, before the app's keep-alive timeout
  // (5 s in Node) would: the side that closes first keeps the TIME_WAIT, and it is
  // better on the host than in a sandbox about to be checkpointed.
  readonly agent: Agent;
  readonly sockets = new Set<Socket | Duplex>();

  /** `connect`: how to reach a port of the app (the runtime's: TCP on this host, a tunnel through a cluster host's agent). */
  constructor(readonly connect: (port: number) => Duplex) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 512, scheduling: "lifo", timeout: 2000 });
    (this.agent as unknown as { createConnection: (o: { port: number }) => Duplex }).createConnection = (o) => connect(Number(o.port));
  }

  /** A connection to the app's port, always through `connect`. */
  connection(port: number): Duplex {
    return this.connect(port);
  }
  readonly h2 = new Map<number, ClientHttp2Session>();
  /** Open long-lived exchanges (streams, WebSockets): activity while they last. */
  open = 0;

  track(socket: Socket | Duplex): void {
    if (this.sockets.has(socket)) return;
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  closeAll(): void {
    for (const s of this.sockets) if ("resetAndDestroy" in s) s.resetAndDestroy(); else s.destroy();
    this.sockets.clear();
    this.agent.destroy();
    for (const session of this.h2.values()) session.destroy();
    this.h2.clear();
  }
}

/**
 * One proxied request, stream or WebSocket: it holds its MicroVM active while
 * open (Upstreams.open), and on its end, once, reports activity and metrics.
 */
class Exchange {
  bytesIn = 0;
  bytesOut = 0;
  private ended = false;

  constructor(
    private readonly upstreams: Upstreams,
    private readonly onEnd: (status: number, bytesIn: number, bytesOut: number) => void,
  ) {
    upstreams.open++;
  }

  get done(): boolean {
    return this.ended;
  }

  end(status: number): void {
    if (this.ended) return;
    this.ended = true;
    this.upstreams.open--;
    this.onEnd(status, this.bytesIn, this.bytesOut);
  }
}

const ACTIVITY_INTERVAL_MS = 1000;

/** Releases a connection slot when the client's side closes, or at once if it already has (it went while waiting). */
function holdUntilClosed(side: { closed: boolean; destroyed: boolean; once(event: "close", cb: () => void): unknown }, release: Release): void {
  side.once("close", release);
  if (side.closed || side.destroyed) release();
}

/**
 * Ends an HTTP/2 stream whose answer is complete while the client still sends:
 * RST_STREAM with NO_ERROR once the answer is out, as RFC 9113 section 8.1
 * allows, tells the client to stop sending and keep the answer. Node sends the
 * reset after the stream's last frame (closeStream waits for 'finish').
 */
function endUnread(stream: ServerHttp2Stream): void {
  if (stream.closed || stream.readableEnded) return;
  stream.resume(); // drop what is buffered, so the stream can be destroyed
  stream.close(h2.NGHTTP2_NO_ERROR);
}

/**
 * How long an HTTP/1.1 client may go on sending a body the app answered
 * without reading, before its connection is closed. Closing at once would
 * reset a client that sends its whole body before reading (most scripts do),
 * and lose the answer in the reset; nginx lingers 30 s the same way.
 */
const LINGER_MS = 30_000;
/** The protocols a client's TLS may pick (ALPN), best first. */
const ALPN = ["h2", "http/1.1"];
/** How long a relayed client's TLS handshake may take (what node's TLS listener allows its own). */
const HANDSHAKE_MS = 120_000;

export class EndpointProxy implements Ingress {
  private readonly tlsServer;
  private readonly secureContext: SecureContext;
  private readonly http1;
  private readonly http2;
  private readonly upstreams = new Map<string, Upstreams>();
  private readonly clientSockets = new Set<Socket>();
  private readonly activityTimer: NodeJS.Timeout;
  private readonly limiter: EndpointLimiter;
  /** Image version configurations, by `<arn> <version>`: fixed once built. */
  private readonly configs = new Map<string, Promise<Pick<ImageConfig, "resources" | "hooks">>>();

  constructor(private readonly opts: EndpointProxyOptions) {
    this.limiter = new EndpointLimiter(opts.limits ?? AWS_ENDPOINT_LIMITS);
    const maxHeaderSize = opts.maxHeaderSize ?? 16 * 1024;
    this.http1 = createHttpServer({ maxHeaderSize, requestTimeout: 0, headersTimeout: 20_000, keepAliveTimeout: 60_000 }, (req, res) =>
      this.onHttp1(req, res).catch((err: Error) => {
        this.opts.log?.({ level: "error", msg: "proxy request failed", err: err.message });
        if (!res.headersSent) this.refuse(res, new Refusal(502, `The MicroVM's app could not be reached: ${err.message}`));
        else res.destroy();
      }),
    );
    this.http1.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head).catch((err: Error) => {
        this.opts.log?.({ level: "error", msg: "proxy upgrade failed", err: err.message });
        socket.destroy();
      }),
    );
    this.http1.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
      const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      else socket.destroy();
    });
    this.http2 = createH2Server({ settings: { maxHeaderListSize: maxHeaderSize } });
    this.http2.on("stream", (stream, headers) =>
      this.onHttp2(stream, headers).catch((err: Error) => {
        this.opts.log?.({ level: "error", msg: "proxy stream failed", err: err.message });
        if (stream.closed) return;
        if (!stream.headersSent) this.refuseH2(stream, new Refusal(502, `The MicroVM's app could not be reached: ${err.message}`));
        else stream.close(h2.NGHTTP2_INTERNAL_ERROR);
      }),
    );
    this.http2.on("sessionError", () => undefined);
    const credentials = { cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) };
    this.secureContext = createSecureContext(credentials);
    this.tlsServer = createTlsServer({ ...credentials, ALPNProtocols: ALPN }, (socket: TLSSocket) => this.serve(socket));
    this.tlsServer.on("tlsClientError", () => undefined);
    // A held-open exchange is traffic: its MicroVM does not go idle.
    this.activityTimer = setInterval(() => {
      for (const [id, u] of this.upstreams) if (u.open > 0) this.opts.directory.activity(id);
      this.limiter.sweep();
    }, ACTIVITY_INTERVAL_MS);
    this.activityTimer.unref();
  }

  /** A client's TLS connection, once its handshake is done: ALPN says whether HTTP/2 or HTTP/1.1 serves it. */
  private serve(socket: TLSSocket): void {
    this.clientSockets.add(socket);
    socket.once("close", () => this.clientSockets.delete(socket));
    socket.on("error", () => undefined);
    if (socket.alpnProtocol === "h2") this.http2.emit("connection", socket);
    else this.http1.emit("connection", socket);
  }

  /**
   * A client's connection that reached this server some other way than its listener: a standby API
   * node's relay (src/cluster/relay.ts), whose bytes are the client's own TLS. `client` is the
   * client's address, which limits, logs and X-Forwarded-For see instead of the relay's.
   */
  accept(stream: Duplex, client: { address: string; port: number }): void {
    const socket = new TLSSocket(stream, { isServer: true, secureContext: this.secureContext, ALPNProtocols: ALPN });
    Object.defineProperty(socket, "remoteAddress", { value: client.address, configurable: true });
    Object.defineProperty(socket, "remotePort", { value: client.port, configurable: true });
    socket.on("error", () => socket.destroy());
    // As the listener's own handshake timeout: a relayed client that never finishes its handshake is dropped.
    const handshake = setTimeout(() => socket.destroy(), HANDSHAKE_MS);
    socket.once("close", () => clearTimeout(handshake));
    socket.once("secure", () => {
      clearTimeout(handshake);
      // What node's TLS listener does for its own sockets once their handshake is done: without it
      // an HTTP/2 session on this socket waits for a 'secureConnect' that a server socket never emits.
      (socket as TLSSocket & { secureConnecting: boolean }).secureConnecting = false;
      this.serve(socket);
    });
  }

  listen(port: number, host = "0.0.0.0"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.tlsServer.once("error", reject);
      this.tlsServer.listen(port, host, () => {
        this.tlsServer.off("error", reject);
        resolve((this.tlsServer.address() as { port: number }).port);
      });
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.activityTimer);
    for (const u of this.upstreams.values()) u.closeAll();
    for (const s of this.clientSockets) s.destroy();
    await new Promise<void>((resolve) => this.tlsServer.close(() => resolve()));
  }

  /** Ends every connection into the MicroVM (and its shells): it is about to be checkpointed or freed. */
  async close(microvmId: string, reason: string): Promise<void> {
    await this.opts.shell?.close(microvmId, reason);
    this.upstreams.get(microvmId)?.closeAll();
    this.upstreams.delete(microvmId);
  }

  private upstreamsOf(id: string): Upstreams {
    let u = this.upstreams.get(id);
    if (!u) this.upstreams.set(id, (u = new Upstreams((port) => this.opts.directory.connect(id, port))));
    return u;
  }

  private begin(microvmId: string, u: Upstreams): Exchange {
    return new Exchange(u, (status, bytesIn, bytesOut) => {
      this.opts.directory.activity(microvmId);
      this.opts.metrics?.request(status, bytesIn, bytesOut);
    });
  }

  private configOf(vm: Microvm): Promise<Pick<ImageConfig, "resources" | "hooks">> {
    const key = `${vm.imageArn} ${vm.imageVersion}`;
    let config = this.configs.get(key);
    if (!config) {
      config = this.opts.directory.imageConfig(vm);
      this.configs.set(key, config);
      config.catch(() => this.configs.delete(key));
    }
    return config;
  }

  /**
   * Admits the request (token, port, subprotocols), checks the MicroVM's
   * ingress and the hook path, takes a slot under its rate limits, and finds
   * its address, waiting for a start or resuming it if need be. The slot is
   * the caller's to release when the exchange ends.
   */
  private async pass(headers: IncomingHttpHeaders, path: string, websocket = false): Promise<Target> {
    const admitted = await admit(this.opts.tokens, headers, this.opts.domain, websocket);
    const vm = this.opts.directory.peek(admitted.microvmId);
    if (!vm || vm.state === "TERMINATING" || vm.state === "TERMINATED") throw new Refusal(403, `MicroVM ${admitted.microvmId} is terminated; its tokens no longer work.`);
    checkIngress(vm, admitted.kind);
    const config = await this.configOf(vm);
    if (admitted.kind === "endpoint") checkHookPath(config, admitted.port, path);
    const release = await this.limiter.acquire(vm.id, limitsOf(config).peakVcpus);
    try {
      this.opts.directory.activity(vm.id);
      const address = await reach(this.opts.directory, vm.id, this.opts.pendingWaitMs ?? PENDING_WAIT_MS);
      return { ...admitted, address, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  private refusalOf(err: unknown): Refusal {
    if (err instanceof Refusal) return err;
    this.opts.log?.({ msg: "proxy error", err: (err as Error).message });
    return new Refusal(502, `The MicroVM's app could not be reached: ${(err as Error).message}`);
  }

  private async onHttp1(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let target;
    try {
      target = await this.pass(req.headers, req.url ?? "/");
      holdUntilClosed(res, target.release);
      if (target.kind === "shell") throw new Refusal(502, "A shell token opens only the shell (a WebSocket to wss://<endpoint>/shell); to reach the app, use a token from create-microvm-auth-token.");
    } catch (err) {
      return this.refuse(res, this.refusalOf(err));
    }
    if (forcesH2(req.headers)) {
      return this.forwardH2(target, req.method ?? "GET", req.url ?? "/", req.headers, req, req.socket.remoteAddress, {
        respond: (status, headers, endStream) => {
          res.writeHead(status, headers);
          if (endStream) res.end();
        },
        write: (c) => res.write(c),
        drain: (cb) => res.once("drain", cb),
        end: (trailers) => {
          if (Object.keys(trailers).length) res.addTrailers(trailers);
          res.end();
        },
        fail: (r) => (res.headersSent ? res.destroy() : this.refuse(res, r)),
        closed: () => res.destroyed || res.writableEnded,
        onClose: (cb) => res.once("close", cb),
      });
    }
    const bodyless = req.headers["transfer-encoding"] === undefined && (req.headers["content-length"] === undefined || req.headers["content-length"] === "0");
    this.forwardHttp1(target, req.method ?? "GET", req.url ?? "/", req.headers, req, bodyless, req.socket.remoteAddress, {
      head: (status, headers) => res.writeHead(status, returnedHeaders(headers)),
      body: res,
      trailers: (t) => res.addTrailers(t),
      fail: (r) => (res.headersSent ? res.destroy() : this.refuse(res, r)),
      closed: (cb) => res.once("close", cb),
      // Read and drop the rest, so the connection can carry the next request; close it if that takes too long.
      unwanted: () => {
        const timer = setTimeout(() => req.socket.destroy(), LINGER_MS);
        const stop = () => clearTimeout(timer);
        req.once("end", stop).once("close", stop);
        req.resume();
      },
    });
  }

  private refuse(res: ServerResponse, r: Refusal): void {
    const body = r.message;
    res.writeHead(r.status, { ...r.headers, "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), "x-lmvm-proxy-error": "true" }).end(body);
    this.opts.metrics?.request(r.status, 0, body.length);
  }

  private refuseH2(stream: ServerHttp2Stream, r: Refusal): void {
    this.opts.metrics?.request(r.status, 0, r.message.length);
    if (stream.closed || stream.headersSent) return;
    stream.respond({ ...r.headers, ":status": r.status, "content-type": "text/plain; charset=utf-8", "x-lmvm-proxy-error": "true" });
    stream.end(r.message);
  }

  /** Streams a request to the app over HTTP/1.1 and its answer back through `sink`. */
  private forwardHttp1(
    target: Target,
    method: string,
    path: string,
    headers: IncomingHttpHeaders,
    body: NodeJS.ReadableStream,
    bodyless: boolean,
    clientIp: string | undefined,
    sink: {
      head: (status: number, headers: IncomingHttpHeaders) => void;
      body: NodeJS.WritableStream;
      trailers: (t: Record<string, string>) => void;
      fail: (r: Refusal) => void;
      closed: (cb: () => void) => void;
      /** The exchange has ended (answered, or failed) while the client still sends: stop taking its body. */
      unwanted: () => void;
    },
  ): void {
    const u = this.upstreamsOf(target.microvmId);
    const exchange = this.begin(target.microvmId, u);
    const upstream = httpRequest({
      host: "microvm", // the agent's createConnection dials through the runtime's connect(); no lookup
      port: target.port,
      method,
      path,
      agent: u.agent,
      headers: forwardedHeaders(headers, { ip: clientIp, host: (headers[":authority"] as string | undefined) ?? headers.host }),
    });
    // A request without a body (HTTP/1.1 framing: neither Content-Length nor Transfer-Encoding, or a
    // Content-Length of 0) is complete as it is: the request to the app goes out whole at once.
    let bodySent = bodyless;
    if (!bodyless) body.once("end", () => (bodySent = true));
    // Ends the exchange, once. Once the app has answered (or failed), the rest of the body goes
    // nowhere: Node's http client writes no more of a request whose response has ended (on a
    // keep-alive socket its 'drain' no longer reaches the request; seen on Node 20), and an app
    // that closes or stops reading would not take it either. Piping on stalled the client's upload,
    // and a client that sends before it reads, until the app's connection closed, as late as the
    // MicroVM's suspension. That connection, mid-request, cannot carry another request either.
    const finish = (status: number) => {
      if (exchange.done) return;
      exchange.end(status);
      if (bodySent) return;
      body.unpipe(upstream);
      upstream.destroy();
      sink.unwanted();
    };
    upstream.on("socket", (s: Socket) => u.track(s));
    upstream.on("response", (res) => {
      sink.head(res.statusCode ?? 502, res.headers);
      // What pipe() does, without its half-dozen listeners per exchange: write, and wait for
      // 'drain' when the client's side is full. A client gone stops the upstream (sink.closed).
      const out = sink.body as NodeJS.WritableStream & { destroyed?: boolean };
      res.on("data", (c: Buffer) => {
        exchange.bytesOut += c.length;
        if (out.destroyed) return;
        if (!out.write(c)) {
          res.pause();
          out.once("drain", () => res.resume());
        }
      });
      res.on("end", () => {
        if (Object.keys(res.trailers).length) sink.trailers(res.trailers as Record<string, string>);
        if (!out.destroyed) out.end();
        finish(res.statusCode ?? 502);
      });
      res.on("error", () => undefined);
      // Cut short (the MicroVM is being suspended, or the app died): so is the client's answer.
      res.on("close", () => {
        if (res.complete || exchange.done) return;
        sink.fail(new Refusal(502, "The connection to the MicroVM's app was closed."));
        finish(502);
      });
    });
    upstream.on("error", (err: Error) => {
      if (exchange.done) return; // answered already: what the app does with the rest of the request is its own affair
      sink.fail(new Refusal(502, `The MicroVM's app did not answer on port ${target.port}: ${err.message}`));
      finish(502);
    });
    if (bodyless) upstream.end();
    else {
      body.on("data", (c: Buffer) => (exchange.bytesIn += c.length));
      body.pipe(upstream);
    }
    sink.closed(() => {
      if (!exchange.done) {
        upstream.destroy();
        exchange.end(499);
      }
    });
  }

  private async onHttp2(stream: ServerHttp2Stream, headers: H2Headers): Promise<void> {
    stream.on("error", () => undefined);
    let target;
    const path = String(headers[":path"] ?? "/");
    try {
      target = await this.pass(headers as IncomingHttpHeaders, path);
      holdUntilClosed(stream, target.release);
      if (target.kind === "shell") throw new Refusal(502, "A shell token opens only the shell (a WebSocket to wss://<endpoint>/shell); to reach the app, use a token from create-microvm-auth-token.");
    } catch (err) {
      return this.refuseH2(stream, this.refusalOf(err));
    }
    const method = String(headers[":method"] ?? "GET");
    const clientIp = stream.session?.socket.remoteAddress;
    if (String(headers["content-type"] ?? "").startsWith("application/grpc") || forcesH2(headers as IncomingHttpHeaders)) {
      let trailers: Record<string, string> = {};
      let trailersOnly = false;
      stream.on("wantTrailers", () => stream.sendTrailers(trailers));
      return this.forwardH2(target, method, path, headers as IncomingHttpHeaders, stream, clientIp, {
        respond: (status, h, endStream) => {
          if (stream.closed) return;
          trailersOnly = endStream;
          // grpc-status in the first HEADERS is gRPC's Trailers-Only answer (an error with no messages).
          stream.respond({ ...h, ":status": status }, endStream ? { endStream: true } : { waitForTrailers: true });
        },
        write: (c) => stream.closed || stream.write(c),
        drain: (cb) => stream.once("drain", cb),
        end: (t) => {
          trailers = t;
          if (!stream.closed && stream.headersSent && !trailersOnly) stream.end();
        },
        fail: (r) => (stream.headersSent ? stream.close(h2.NGHTTP2_INTERNAL_ERROR) : this.refuseH2(stream, r)),
        closed: () => stream.closed,
        onClose: (cb) => stream.once("close", cb),
      });
    }
    this.forwardHttp1(target, method, path, headers as IncomingHttpHeaders, stream, false, clientIp, {
      head: (status, h) => stream.respond({ ...returnedHeaders(h), ":status": status }, { waitForTrailers: false }),
      body: stream,
      trailers: () => undefined, // HTTP/1.1 apps rarely send trailers; HTTP/2 clients get none from them
      fail: (r) => {
        if (stream.headersSent) return stream.close(h2.NGHTTP2_INTERNAL_ERROR);
        stream.respond({ ":status": r.status, "content-type": "text/plain; charset=utf-8", "x-lmvm-proxy-error": "true" });
        stream.end(`${r.message}\n`);
      },
      closed: (cb) => stream.once("close", cb),
      unwanted: () => endUnread(stream),
    });
  }

  /**
   * Cleartext HTTP/2 to the app (gRPC, or X-aws-proxy-force-h2): headers,
   * data and trailers are relayed as they come, to an HTTP/2 or an HTTP/1.1
   * client (`sink`). One h2c session per MicroVM port carries all streams.
   */
  private forwardH2(
    target: Target,
    method: string,
    path: string,
    headers: IncomingHttpHeaders,
    body: NodeJS.ReadableStream,
    clientIp: string | undefined,
    sink: {
      /** The answer's head; `endStream` when it has no body (gRPC's Trailers-Only). */
      respond: (status: number, headers: Record<string, string | string[]>, endStream: boolean) => void;
      write: (chunk: Buffer) => boolean;
      drain: (cb: () => void) => void;
      end: (trailers: Record<string, string>) => void;
      fail: (r: Refusal) => void;
      closed: () => boolean;
      onClose: (cb: () => void) => void;
    },
  ): void {
    const u = this.upstreamsOf(target.microvmId);
    let session = u.h2.get(target.port);
    if (!session || session.closed || session.destroyed) {
      // A fixed authority: the address may be a cluster host's "ip:port", no part of a URL; the connection is always the runtime's.
      session = h2Connect("http://microvm", { createConnection: () => u.connection(target.port) as Socket });
      session.on("error", () => undefined);
      const opened = session;
      opened.once("close", () => {
        if (u.h2.get(target.port) === opened) u.h2.delete(target.port);
      });
      u.h2.set(target.port, session);
    }
    const client = (headers[":authority"] as string | undefined) ?? headers.host;
    const forwarded = forwardedHeaders(headers, { ip: clientIp, host: client });
    delete forwarded.host; // HTTP/2 carries it as :authority
    const exchange = this.begin(target.microvmId, u);
    let upstream: ReturnType<ClientHttp2Session["request"]>;
    try {
      upstream = session.request({ ...forwarded, ":method": method, ":path": path, ":scheme": "http", ":authority": client ?? `microvm:${target.port}` });
    } catch (err) {
      sink.fail(new Refusal(502, `The MicroVM's app did not answer over HTTP/2 on port ${target.port}: ${(err as Error).message}`));
      return exchange.end(502);
    }
    let status = 502;
    let trailers: Record<string, string> = {};
    let answered = false;
    let responded = false;
    const finish = () => exchange.end(status);
    upstream.on("response", (h) => {
      status = Number(h[":status"] ?? 200);
      responded = true;
      if (sink.closed()) return;
      const returned = returnedHeaders(h as IncomingHttpHeaders);
      if (upstream.endAfterHeaders || h["grpc-status"] !== undefined) {
        sink.respond(status, returned, true);
        answered = true;
        return;
      }
      sink.respond(status, returned, false);
    });
    upstream.on("trailers", (t) => (trailers = returnedHeaders(t as IncomingHttpHeaders) as Record<string, string>));
    upstream.on("data", (c: Buffer) => {
      exchange.bytesOut += c.length;
      if (!sink.closed() && !sink.write(c)) {
        upstream.pause();
        sink.drain(() => upstream.resume());
      }
    });
    upstream.on("end", () => {
      if (!answered) sink.end(trailers);
      answered = true;
      finish();
    });
    const failed = (err?: Error) => {
      // The app may reset its side once it has answered (before reading the whole request): the answer stands.
      if (!answered && !sink.closed()) {
        sink.fail(new Refusal(502, responded
          ? "The connection to the MicroVM's app was closed."
          : `The MicroVM's app did not answer over HTTP/2 (h2c) on port ${target.port}${err ? `: ${err.message}` : ""}.`));
      }
      answered = true;
      if (!responded) status = 502;
      finish();
    };
    upstream.on("error", failed);
    upstream.on("close", () => {
      if (!answered) failed();
      finish();
    });
    body.on("data", (c: Buffer) => (exchange.bytesIn += c.length));
    body.pipe(upstream);
    sink.onClose(() => {
      if (!upstream.closed) upstream.close(h2.NGHTTP2_CANCEL);
      if (!exchange.done) exchange.end(responded ? status : 499);
    });
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => undefined);
    let target;
    try {
      if (String(req.headers.upgrade ?? "").toLowerCase() !== "websocket") throw new Refusal(400, "Only WebSocket upgrades are proxied.");
      target = await this.pass(req.headers, req.url ?? "/", true);
      holdUntilClosed(socket, target.release);
    } catch (err) {
      const r = this.refusalOf(err);
      this.opts.metrics?.request(r.status, 0, 0);
      const extra = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
      return void socket.end(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? "Refused"}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\nx-lmvm-proxy-error: true\r\n${extra}content-length: ${Buffer.byteLength(r.message)}\r\n\r\n${r.message}`);
    }
    if (target.kind === "shell") {
      if (!this.opts.shell) return void socket.end("HTTP/1.1 501 Not Implemented\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      return this.opts.shell.upgrade(target.microvmId, req, socket, head);
    }
    this.spliceWebSocket(target, req, socket, head);
  }

  /**
   * Sends the upgrade to the app without the platform's subprotocol entries
   * (lambda-microvms and lambda-microvms.*), then splices the two
   * connections. When the app picks no subprotocol but the client offered
   * the platform's, the 101 names `lambda-microvms` back, as the service
   * does, since a browser fails a WebSocket whose server picks none of
   * several offered.
   */
  private spliceWebSocket(target: Target, req: IncomingMessage, client: Duplex, head: Buffer): void {
    const u = this.upstreamsOf(target.microvmId);
    const ours = target.offered?.ours ?? [];
    const theirs = target.offered?.theirs ?? [];
    const headers = forwardedHeaders(req.headers, { ip: req.socket.remoteAddress, host: req.headers.host });
    delete headers["sec-websocket-protocol"];
    if (theirs.length) headers["sec-websocket-protocol"] = theirs.join(", ");
    const lines = [`${req.method} ${req.url} HTTP/1.1`, "connection: Upgrade", "upgrade: websocket"];
    for (const [name, value] of Object.entries(headers)) for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
    const upstream = u.connection(target.port);
    u.track(upstream);
    upstream.on("error", (err: Error) => {
      if (!client.writable) return;
      const body = `The MicroVM's app did not answer on port ${target.port}: ${err.message}`;
      this.opts.metrics?.request(502, 0, body.length);
      client.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\nx-lmvm-proxy-error: true\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
    // What the client sent after its upgrade request goes to the app only once the app has
    // switched protocols: before that, an app that answers anything but 101 would read those
    // bytes as its next HTTP request, one that never passed admission (a hook path, say).
    let answer = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      answer = Buffer.concat([answer, chunk]);
      const end = answer.indexOf("\r\n\r\n");
      if (end < 0) {
        if (answer.length > 64 * 1024) upstream.destroy();
        return;
      }
      upstream.off("data", onHead);
      let headText = answer.subarray(0, end).toString("latin1");
      const rest = answer.subarray(end + 4);
      const switched = / 101 /.test(headText.split("\r\n")[0] ?? "");
      if (switched && ours.length && !/\r\nsec-websocket-protocol:/i.test(headText)) {
        headText += `\r\nSec-WebSocket-Protocol: ${BASE_SUBPROTOCOL}`;
      }
      client.write(`${headText}\r\n\r\n`);
      if (rest.length) client.write(rest);
      if (!switched) {
        // Not a WebSocket: the app's answer goes back, and the connection to the app ends with the client's.
        upstream.pipe(client);
        client.once("close", () => upstream.destroy());
        return;
      }
      if (head.length) upstream.write(head);
      const exchange = this.begin(target.microvmId, u);
      upstream.on("data", (c: Buffer) => (exchange.bytesOut += c.length));
      client.on("data", (c: Buffer) => (exchange.bytesIn += c.length));
      upstream.pipe(client);
      client.pipe(upstream);
      const onClose = () => {
        exchange.end(101);
        upstream.destroy();
        client.destroy();
      };
      upstream.once("close", onClose);
      client.once("close", onClose);
    };
    upstream.on("data", onHead);
    client.once("close", () => {
      if (!upstream.destroyed && upstream.listenerCount("data") && upstream.listeners("data").includes(onHead)) upstream.destroy();
    });
  }
}
