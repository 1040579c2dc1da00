// The instance-metadata service every sandbox sees at METADATA_ADDRESS
// (http://169.254.169.254, port 80), as EC2's IMDS with tokens required
// (IMDSv2), which is how AWS Lambda MicroVMs deliver a MicroVM's execution
// role (https://docs.aws.amazon.com/lambda/latest/dg/microvms-security.html)
// and a build's build role. nftables redirects a sandbox's TCP to
// 169.254.169.254:80 to the host end of its own veth (src/net/firewall.ts),
// where this service holds one HTTP listener per sandbox, answering only the
// sandbox's own address.
//
// What it serves (EC2's shapes, https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html):
// - PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1-21600):
//   a token, valid for that long, in that sandbox only; a PUT carrying
//   X-Forwarded-For is refused (403), a missing or bad TTL is 400.
// - GET needs X-aws-ec2-metadata-token with a live token of the same sandbox,
//   else 401 (IMDSv1, a token-less GET, is not served).
// - /latest/meta-data/iam/security-credentials/ lists `execution_role` when
//   the sandbox has a role (the MicroVM's execution role, or the build's
//   build role), else 404; .../execution_role is the role's temporary
//   credentials ({"Code":"Success","LastUpdated","Type":"AWS-HMAC",
//   "AccessKeyId","SecretAccessKey","Token","Expiration"}), or, when the role
//   cannot be assumed (it does not exist, or its trust policy does not let
//   lambda.amazonaws.com), EC2's answer for that case: 200 with
//   {"Code":"AssumeRoleUnauthorizedAccess","Message","LastUpdated"}
//   (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_iam-ec2.html).
// - /latest/meta-data/placement/region: the server's region.
//
// Credentials are fetched from the RoleCredentialSource when first asked for,
// cached per sandbox subject (role, source ARN, session name) and fetched again
// once less than RENEW_BEFORE_MS of their life is left (or half of it, for short
// ones): what a sandbox is handed always has that much life in it, so the SDKs'
// own refresh (botocore refreshes 15 minutes before expiry, the JavaScript SDK 5)
// finds new ones. Unbinding a sandbox (suspend, terminate, the end of a build)
// drops its tokens and cached credentials, so a resumed MicroVM gets fresh ones
// at once. Tokens and credentials are memory only: a restarted server hands out
// new tokens (the SDKs ask for a token before every fetch of credentials).
//
// Every answer closes its connection from the host's side, so nothing of the
// sandbox's waits in TIME_WAIT at a checkpoint.
//
// Each sandbox may send METADATA_REQUESTS_PER_SECOND requests (past it, 429),
// hold METADATA_MAX_CONNECTIONS connections and METADATA_MAX_TOKENS live tokens;
// headers are capped at 8 KiB and bodies at 1 KiB, and every request and
// credential fetch has a deadline.

import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { AccessDenied, EXECUTION_ROLE_CREDENTIALS_NAME, type RoleCredentialSource, type TemporaryCredentials } from "../core/index.js";

/** Requests per second one sandbox may send (burst: one second's worth). */
export const METADATA_REQUESTS_PER_SECOND = 50;
/** Connections one sandbox may hold open to its metadata service. */
export const METADATA_MAX_CONNECTIONS = 16;
/** Live tokens per sandbox; past it, the oldest are forgotten. */
export const METADATA_MAX_TOKENS = 1024;
/** Longest token TTL (EC2's: six hours). */
export const METADATA_MAX_TOKEN_TTL_SECONDS = 21600;
/** Cached credentials are fetched again once less than this is left of them (or half their lifetime, when shorter). */
export const RENEW_BEFORE_MS = 30 * 60 * 1000;
/** How long a credential fetch may take before the sandbox gets 503. */
export const CREDENTIALS_DEADLINE_MS = 5000;
/** How long a refusal to assume the role is remembered before the role is tried again. */
const REFUSAL_MEMORY_MS = 10_000;
const REQUEST_DEADLINE_MS = 5000;
const IDLE_MS = 10_000;
const MAX_HEADER_BYTES = 8192;
const MAX_BODY_BYTES = 1024;
const PORT = 80;

/** Whose credentials a sandbox gets: a MicroVM's execution role, or a build's build role. */
export interface MetadataSubject {
  /** The role; none means the sandbox gets no credentials (404 under iam/). */
  roleArn?: string;
  /** The MicroVM's ARN, or the image's for a build. */
  sourceArn: string;
  /** The MicroVM id, or the build id. */
  sessionName: string;
}

interface Binding {
  key: number;
  address: string;
  peer: string;
  subject: MetadataSubject;
  server: Server;
  connections: Set<Socket>;
  tokens: Map<string, number>;
  allowance: number;
  refilled: number;
  requests: number;
}

type Fetched = { ok: true; credentials: TemporaryCredentials; at: Date } | { ok: false; message: string; at: Date };

interface CacheEntry {
  value?: Fetched;
  pending?: Promise<Fetched>;
}

export interface MetadataServiceOptions {
  credentials: RoleCredentialSource;
  region: string;
  log?: (event: Record<string, unknown>) => void;
  now?: () => number;
}

/** EC2's timestamps: seconds, no fraction ("2012-04-26T16:39:16Z"; botocore parses only this form). */
export function imdsTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function subjectKey(s: MetadataSubject): string {
  return `${s.roleArn ?? ""}\n${s.sourceArn}\n${s.sessionName}`;
}

const STATUS_TEXT: Record<number, string> = { 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable" };

/** EC2's error pages are small XHTML documents naming the status. */
function errorPage(status: number): string {
  const title = `${status} - ${STATUS_TEXT[status] ?? "Error"}`;
  return `<?xml version="1.0" encoding="iso-8859-1"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n <head>\n  <title>${title}</title>\n </head>\n <body>\n  <h1>${title}</h1>\n </body>\n</html>\n`;
}

export class MetadataService {
  private readonly bindings = new Map<number, Binding>();
  private readonly cache = new Map<string, CacheEntry>();
  private readonly lastLogged = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly opts: MetadataServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  has(key: number): boolean {
    return this.bindings.has(key);
  }

  /** Requests each bound sandbox sent, by key (its network index). */
  requests(): Map<number, number> {
    return new Map([...this.bindings].map(([k, b]) => [k, b.requests]));
  }

  /**
   * Serves the sandbox `key` on address:80, answering only `peer` (the
   * sandbox's address). Binding the same key on the same addresses again
   * keeps the listener and its tokens and takes the (possibly new) subject.
   */
  async bind(key: number, address: string, peer: string, subject: MetadataSubject): Promise<void> {
    const old = this.bindings.get(key);
    if (old && old.address === address && old.peer === peer) {
      if (subjectKey(old.subject) !== subjectKey(subject)) this.dropCache(old.subject, key);
      old.subject = subject;
      return;
    }
    if (old) await this.unbind(key);
    const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_DEADLINE_MS, headersTimeout: REQUEST_DEADLINE_MS, keepAliveTimeout: IDLE_MS });
    const b: Binding = { key, address, peer, subject, server, connections: new Set(), tokens: new Map(), allowance: METADATA_REQUESTS_PER_SECOND, refilled: this.now(), requests: 0 };
    server.on("connection", (sock: Socket) => {
      // Only the sandbox itself: the host's other networks may route to this address too.
      if (sock.remoteAddress !== peer || b.connections.size >= METADATA_MAX_CONNECTIONS) return void sock.destroy();
      b.connections.add(sock);
      sock.setTimeout(IDLE_MS, () => sock.destroy());
      sock.on("close", () => b.connections.delete(sock));
      sock.on("error", () => undefined);
    });
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      this.serve(b, req, res).catch((err: unknown) => {
        const status = err instanceof MetadataUnavailable ? 503 : 500;
        this.opts.log?.({ msg: "instance metadata: could not answer", sessionName: b.subject.sessionName, roleArn: b.subject.roleArn, status, error: (err as Error).message });
        if (!res.headersSent) this.send(res, status, errorPage(status), "text/html");
        else res.destroy();
      });
    });
    server.on("clientError", (_err, sock: Socket) => {
      if (sock.writable) sock.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      else sock.destroy();
    });
    server.on("error", () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ port: PORT, host: address, exclusive: true }, () => (server.off("error", reject), resolve()));
      });
    } catch (err) {
      server.close();
      throw new Error(`could not serve the sandbox's instance metadata on ${address}:${PORT} (another server bound to every address on port ${PORT} without SO_REUSEADDR, say): ${(err as Error).message}`);
    }
    this.bindings.set(key, b);
  }

  /** Stops serving the sandbox and forgets its tokens and (unless another binding has the same subject) its cached credentials. */
  async unbind(key: number): Promise<void> {
    const b = this.bindings.get(key);
    if (!b) return;
    this.bindings.delete(key);
    this.dropCache(b.subject, key);
    b.tokens.clear();
    for (const c of b.connections) c.destroy();
    await new Promise<void>((resolve) => b.server.close(() => resolve()));
  }

  async close(): Promise<void> {
    for (const key of [...this.bindings.keys()]) await this.unbind(key);
  }

  private dropCache(subject: MetadataSubject, exceptKey: number): void {
    const k = subjectKey(subject);
    if (![...this.bindings.values()].some((o) => o.key !== exceptKey && subjectKey(o.subject) === k)) this.cache.delete(k);
  }

  /**
   * Every answer ends its connection, the host closing first: a connection the sandbox's app
   * closes first waits in TIME_WAIT inside the sandbox, which a checkpoint (a build's snapshot,
   * a suspend) cannot save. The SDKs open a connection per request anyway.
   */
  private send(res: ServerResponse, status: number, body: string, type = "text/plain", headers: Record<string, string> = {}): void {
    res.shouldKeepAlive = false;
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), connection: "close", ...headers });
    res.end(body);
  }

  private admit(b: Binding): boolean {
    const now = this.now();
    b.allowance = Math.min(METADATA_REQUESTS_PER_SECOND, b.allowance + ((now - b.refilled) / 1000) * METADATA_REQUESTS_PER_SECOND);
    b.refilled = now;
    if (b.allowance < 1) return false;
    b.allowance -= 1;
    return true;
  }

  /** Reads (and drops) a request body of at most MAX_BODY_BYTES; false when it is larger. */
  private drain(req: IncomingMessage): Promise<boolean> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > MAX_BODY_BYTES) return Promise.resolve(false);
    return new Promise((resolve) => {
      let seen = 0;
      req.on("data", (d: Buffer) => {
        seen += d.length;
        if (seen > MAX_BODY_BYTES) {
          resolve(false);
          req.destroy();
        }
      });
      req.on("end", () => resolve(true));
      req.on("error", () => resolve(false));
    });
  }

  private issueToken(b: Binding, ttlSeconds: number): string {
    const now = this.now();
    if (b.tokens.size >= METADATA_MAX_TOKENS) {
      for (const [t, exp] of b.tokens) if (exp <= now) b.tokens.delete(t);
      while (b.tokens.size >= METADATA_MAX_TOKENS) b.tokens.delete(b.tokens.keys().next().value!);
    }
    const token = randomBytes(42).toString("base64");
    b.tokens.set(token, now + ttlSeconds * 1000);
    return token;
  }

  private validToken(b: Binding, token: string | undefined): boolean {
    if (!token) return false;
    const exp = b.tokens.get(token);
    if (exp === undefined) return false;
    if (exp <= this.now()) {
      b.tokens.delete(token);
      return false;
    }
    return true;
  }

  private async serve(b: Binding, req: IncomingMessage, res: ServerResponse): Promise<void> {
    b.requests++;
    if (!(await this.drain(req))) return this.send(res, 413, errorPage(413), "text/html", { connection: "close" });
    if (!this.admit(b)) return this.send(res, 429, errorPage(429), "text/html");
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === "/latest/api/token") {
      if (req.method !== "PUT") return this.send(res, 405, errorPage(405), "text/html", { allow: "OPTIONS, PUT" });
      if (req.headers["x-forwarded-for"] !== undefined) return this.send(res, 403, errorPage(403), "text/html");
      const raw = req.headers["x-aws-ec2-metadata-token-ttl-seconds"];
      const ttl = typeof raw === "string" && /^\d{1,5}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
      if (!(ttl >= 1 && ttl <= METADATA_MAX_TOKEN_TTL_SECONDS)) return this.send(res, 400, errorPage(400), "text/html");
      return this.send(res, 200, this.issueToken(b, ttl), "text/plain", { "x-aws-ec2-metadata-token-ttl-seconds": String(ttl) });
    }
    if (req.method === "PUT") return this.send(res, 403, errorPage(403), "text/html");
    if (req.method !== "GET" && req.method !== "HEAD") return this.send(res, 405, errorPage(405), "text/html", { allow: "OPTIONS, GET, HEAD, PUT" });
    const token = req.headers["x-aws-ec2-metadata-token"];
    if (!this.validToken(b, typeof token === "string" ? token : undefined)) return this.send(res, 401, errorPage(401), "text/html");
    const answer = await this.lookup(b, path);
    if (answer === undefined) return this.send(res, 404, errorPage(404), "text/html");
    return this.send(res, 200, answer);
  }

  /** The document at `path` for the sandbox, or undefined (404). */
  private async lookup(b: Binding, path: string): Promise<string | undefined> {
    const role = b.subject.roleArn;
    const creds = "/latest/meta-data/iam/security-credentials/";
    switch (path) {
      case "/":
        return "latest";
      case "/latest":
      case "/latest/":
        return "api\nmeta-data";
      case "/latest/meta-data":
      case "/latest/meta-data/":
        return role ? "iam/\nplacement/" : "placement/";
      case "/latest/meta-data/placement":
      case "/latest/meta-data/placement/":
        return "region";
      case "/latest/meta-data/placement/region":
        return this.opts.region;
      case "/latest/meta-data/iam":
      case "/latest/meta-data/iam/":
        return role ? "security-credentials/" : undefined;
      case creds:
      case creds.slice(0, -1):
        return role ? EXECUTION_ROLE_CREDENTIALS_NAME : undefined;
      case creds + EXECUTION_ROLE_CREDENTIALS_NAME:
      case `${creds}${EXECUTION_ROLE_CREDENTIALS_NAME}/`:
        return role ? JSON.stringify(this.document(await this.credentials(b.subject as MetadataSubject & { roleArn: string })), null, 2) : undefined;
      default:
        return undefined;
    }
  }

  private document(f: Fetched): Record<string, string> {
    if (!f.ok) return { Code: "AssumeRoleUnauthorizedAccess", Message: f.message, LastUpdated: imdsTime(f.at) };
    return {
      Code: "Success",
      LastUpdated: imdsTime(f.at),
      Type: "AWS-HMAC",
      AccessKeyId: f.credentials.accessKeyId,
      SecretAccessKey: f.credentials.secretAccessKey,
      Token: f.credentials.sessionToken,
      Expiration: imdsTime(f.credentials.expiration),
    };
  }

  /** The subject's credentials: the cached ones while they have enough life left, else fetched (one fetch at a time per subject). */
  private async credentials(subject: MetadataSubject & { roleArn: string }): Promise<Fetched> {
    const k = subjectKey(subject);
    let entry = this.cache.get(k);
    if (!entry) this.cache.set(k, (entry = {}));
    const v = entry.value;
    if (v && this.fresh(v)) return v;
    if (!entry.pending) {
      const e = entry;
      e.pending = this.fetch(subject).then(
        (f) => {
          // An unbind meanwhile dropped the entry: the answer is given, not kept.
          if (this.cache.get(k) === e) e.value = f;
          return f;
        },
      ).finally(() => (e.pending = undefined));
    }
    return entry.pending!;
  }

  private fresh(f: Fetched): boolean {
    const now = this.now();
    if (!f.ok) return now - f.at.getTime() < REFUSAL_MEMORY_MS;
    const life = f.credentials.expiration.getTime() - f.at.getTime();
    return f.credentials.expiration.getTime() - now > Math.min(RENEW_BEFORE_MS, life / 2);
  }

  private async fetch(subject: MetadataSubject & { roleArn: string }): Promise<Fetched> {
    const at = new Date(this.now());
    let timer: NodeJS.Timeout | undefined;
    try {
      const credentials = await Promise.race([
        this.opts.credentials.serviceCredentials(subject.roleArn, subject.sourceArn, subject.sessionName),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new MetadataUnavailable(`the role's credentials did not come within ${CREDENTIALS_DEADLINE_MS} ms`)), CREDENTIALS_DEADLINE_MS))),
      ]);
      return { ok: true, credentials, at };
    } catch (err) {
      if (!(err instanceof AccessDenied)) throw err;
      const message = `Lambda cannot assume the role ${subject.roleArn}: ${err.message} Make sure the role exists and its trust policy allows lambda.amazonaws.com to perform sts:AssumeRole. See https://docs.aws.amazon.com/lambda/latest/dg/microvms-security.html.`;
      const now = this.now();
      const k = subjectKey(subject);
      if ((this.lastLogged.get(k) ?? 0) + 60_000 <= now) {
        this.lastLogged.set(k, now);
        if (this.lastLogged.size > 4096) this.lastLogged.clear();
        this.opts.log?.({ msg: "instance metadata: the role cannot be assumed", roleArn: subject.roleArn, sourceArn: subject.sourceArn, sessionName: subject.sessionName, reason: err.message });
      }
      return { ok: false, message, at };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The credential source did not answer in time (the sandbox gets 503 and retries). */
export class MetadataUnavailable extends Error {}
