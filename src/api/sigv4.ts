// Checks AWS Signature Version 4 on every control-API request: the canonical
// request is built from the raw path, query and the headers the client says it
// signed, exactly as the AWS SDK's signer (@smithy/signature-v4) builds it, and
// signed with a signing key derived once per key, date, region and service and
// kept (bounded); the two signatures are compared in constant time. Re-running
// the SDK's signer per request (clone, provider promises, key derivation: five
// HMACs) cost about a sixth of a signed GET's CPU time. A corpus test
// (test/unit/sigv4-corpus.test.ts) holds this verifier to the SDK's signer.
// The access key (and, for temporary credentials, the x-amz-security-token
// header, which must be among the signed headers) is resolved by the
// identity service, which says who is calling. Failures carry the error types
// real AWS returns for them; an unknown, deactivated or expired key is the
// core's Unauthenticated, which each API words in its own protocol.

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { Caller, Clock, Identities } from "../core/index.js";
import { AwsError } from "./errors.js";

export interface Principal {
  accessKeyId: string;
  accountId: string;
  caller: Caller;
}

export interface SignedRequest {
  method: string;
  /** Path exactly as sent, still percent-encoded. */
  rawPath: string;
  /** Query string exactly as sent, without '?'. */
  rawQuery: string;
  headers: IncomingHttpHeaders;
  /**
   * The body, or, before it has been read, the SHA-256 (hex) its x-amz-content-sha256 header
   * declares: the signature is then checked against that hash, and the body must be checked
   * against it again once read (a second verify with the body does both).
   */
  body: Buffer | { declaredSha256: string };
  /** The address the request came from (aws:SourceIp). */
  sourceIp?: string;
}

/** The access key id named in a SigV4 Authorization header, if it names one. */
export function accessKeyIdOf(headers: IncomingHttpHeaders): string | undefined {
  const m = /^AWS4-HMAC-SHA256 Credential=([^/\s]+)\//.exec(headers.authorization ?? "");
  return m?.[1];
}

/** An address as AWS reports it: IPv4-mapped IPv6 (::ffff:10.0.0.1) as plain IPv4. */
export function sourceAddress(address: string | undefined): string {
  if (!address) return "0.0.0.0";
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Signing keys kept (each is for one key, day, region and service). */
const SIGNING_KEY_CACHE = 1000;

/** AWS allows this much clock difference between client and server. */
export const MAX_SKEW_MS = 5 * 60 * 1000;
const AUTH_PATTERN = /^AWS4-HMAC-SHA256 Credential=([^/\s]+)\/(\d{8})\/([^/\s]+)\/([^/\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})$/;
const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");

function denied(type: string, message: string): AwsError {
  return new AwsError(type, 403, message);
}

function amzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

/** The SDK's escapeUri: encodeURIComponent, and !'()* as %XX too. */
function escapeUri(s: string): string {
  const encoded = encodeURIComponent(s);
  return RESERVED.test(encoded) ? encoded.replace(RESERVED_ALL, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) : encoded;
}
const RESERVED = /[!'()*]/;
const RESERVED_ALL = /[!'()*]/g;

/** The SDK's canonical path (uriEscapePath): empty and '.' segments dropped, '..' pops one, then encoded again. */
export function canonicalPath(rawPath: string): string {
  const path = !rawPath ? "/" : rawPath.charAt(0) !== "/" ? `/${rawPath}` : rawPath;
  const segments: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  const normalized = `/${segments.join("/")}${segments.length > 0 && path.endsWith("/") ? "/" : ""}`;
  return escapeUri(normalized).replace(/%2F/g, "/");
}

/**
 * The SDK's canonical query of a raw query string: decoded as URLSearchParams
 * decodes it, each key and value encoded again, keys sorted, a repeated key's
 * pairs sorted, X-Amz-Signature left out.
 */
export function canonicalQuery(rawQuery: string): string {
  if (!rawQuery) return "";
  const byKey = new Map<string, string[]>();
  for (const [k, v] of new URLSearchParams(rawQuery)) {
    const values = byKey.get(k);
    if (values) values.push(v);
    else byKey.set(k, [v]);
  }
  const parts: [string, string][] = [];
  for (const [key, values] of byKey) {
    if (key.toLowerCase() === "x-amz-signature") continue;
    const encodedKey = escapeUri(key);
    const pairs = values.map((v) => `${encodedKey}=${escapeUri(v)}`);
    parts.push([encodedKey, pairs.length === 1 ? pairs[0]! : pairs.sort().join("&")]);
  }
  parts.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return parts.map((p) => p[1]).join("&");
}

/** The SDK's canonical header value: CR/LF as spaces, runs of spaces and tabs as one space, one space trimmed at each end. */
function canonicalHeaderValue(value: string): string {
  if (!UNCANONICAL.test(value)) return value; // most values: nothing to change
  return value.replace(/[\r\n]/g, " ").replace(/[ \t]+/g, " ").replace(/^ | $/g, "");
}
/** What canonicalHeaderValue changes: CR, LF, tabs, runs of spaces, a space at either end. */
const UNCANONICAL = /[\r\n\t]| {2}|^ | $/;

/** YYYYMMDDTHHMMSSZ of a date, as the SDK's signer writes its signing date. */
function longDateOf(d: Date): string {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ (years 0-9999)
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
}

export class SigV4Verifier {
  /**
   * Signing keys by access key, day, region and service, with the secret they
   * were derived from (a key whose secret differs is derived again). Bounded:
   * the oldest goes first. The identity service remains the truth about keys;
   * this holds only what HMAC derives from its answer.
   */
  private readonly signingKeys = new Map<string, { secret: string; key: Buffer }>();
  private readonly services: readonly string[];

  constructor(
    private readonly identities: Identities,
    private readonly region: string,
    private readonly clock: Clock,
    /** The signing name(s) this verifier accepts, e.g. "lambda", or ["iam", "sts"]. */
    services: string | readonly string[] = "lambda",
  ) {
    this.services = typeof services === "string" ? [services] : services;
  }

  private signingKey(accessKeyId: string, secret: string, shortDate: string, service: string): Buffer {
    const id = `${accessKeyId}\0${shortDate}\0${service}`;
    const cached = this.signingKeys.get(id);
    if (cached && cached.secret === secret) return cached.key;
    let key = createHmac("sha256", `AWS4${secret}`).update(shortDate).digest();
    for (const part of [this.region, service, "aws4_request"]) key = createHmac("sha256", key).update(part).digest();
    if (!cached && this.signingKeys.size >= SIGNING_KEY_CACHE) this.signingKeys.delete(this.signingKeys.keys().next().value!);
    this.signingKeys.set(id, { secret, key });
    return key;
  }

  async verify(req: SignedRequest): Promise<Principal> {
    const header = req.headers.authorization;
    if (!header) throw denied("MissingAuthenticationTokenException", "Missing Authentication Token");
    if (!header.startsWith("AWS4-HMAC-SHA256 ")) {
      throw denied("IncompleteSignatureException", `Unsupported Authorization header: only AWS4-HMAC-SHA256 (Signature Version 4) is accepted.`);
    }
    const m = AUTH_PATTERN.exec(header.trim());
    if (!m) {
      throw denied("IncompleteSignatureException", "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters, in Signature Version 4 form.");
    }
    const [, accessKeyId, scopeDate, scopeRegion, scopeService, signedHeaderList, signature] = m as unknown as string[];
    const dateHeader = req.headers["x-amz-date"];
    const signedAt = typeof dateHeader === "string" ? amzDate(dateHeader) : undefined;
    if (!signedAt) throw denied("IncompleteSignatureException", "Authorization header requires existence of an 'X-Amz-Date' header in the form YYYYMMDDTHHMMSSZ.");

    const token = req.headers["x-amz-security-token"];
    if (Array.isArray(token)) throw denied("IncompleteSignatureException", "The request has more than one X-Amz-Security-Token header.");
    // Throws Unauthenticated for an unknown or deactivated key, a bad token or an expired session.
    const sourceIp = sourceAddress(req.sourceIp);
    const resolved = await this.identities.resolveKey(accessKeyId!, token, sourceIp);
    if (scopeRegion !== this.region) throw denied("InvalidSignatureException", `Credential should be scoped to a valid region, not '${scopeRegion}'. This server's region is '${this.region}'.`);
    if (!this.services.includes(scopeService!)) throw denied("InvalidSignatureException", `Credential should be scoped to correct service: '${this.services.join("' or '")}'.`);
    if (scopeDate !== dateHeader!.slice(0, 8)) throw denied("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.");

    const now = this.clock.now().getTime();
    if (Math.abs(now - signedAt.getTime()) > MAX_SKEW_MS) {
      const fmt = (t: number) => new Date(t).toISOString().replace(/[-:]|\.\d{3}/g, "");
      throw denied(
        "InvalidSignatureException",
        signedAt.getTime() < now
          ? `Signature expired: ${dateHeader} is now earlier than ${fmt(now - MAX_SKEW_MS)} (${fmt(now)} - 5 min.)`
          : `Signature not yet current: ${dateHeader} is still later than ${fmt(now + MAX_SKEW_MS)} (${fmt(now)} + 5 min.)`,
      );
    }

    const signedHeaders = signedHeaderList!.split(";");
    if (!signedHeaders.includes("host")) throw denied("InvalidSignatureException", "'Host' must be a signed header.");
    if (token !== undefined && !signedHeaders.includes("x-amz-security-token")) throw denied("InvalidSignatureException", "'X-Amz-Security-Token' must be a signed header when the request carries one.");
    for (const name of signedHeaders) {
      if (req.headers[name] === undefined) throw denied("InvalidSignatureException", `Header '${name}' is listed in SignedHeaders but missing from the request.`);
    }
    // The SDK's signer drops authorization, date and x-amz-date from what it signs and adds x-amz-date of the signing date.
    const longDate = longDateOf(signedAt);
    const names = [...new Set(signedHeaders)].filter((n) => n !== "authorization" && n !== "date" && n !== "x-amz-date");
    names.push("x-amz-date");
    names.sort();
    let canonicalHeaders = "";
    for (const name of names) {
      if (name === "x-amz-date") {
        canonicalHeaders += `x-amz-date:${longDate}\n`;
        continue;
      }
      const value = req.headers[name]!;
      canonicalHeaders += `${name}:${canonicalHeaderValue(Array.isArray(value) ? value.join(",") : value)}\n`;
    }
    const bodyHash = !Buffer.isBuffer(req.body) ? req.body.declaredSha256 : req.body.length ? createHash("sha256").update(req.body).digest("hex") : EMPTY_SHA256;
    const declared = req.headers["x-amz-content-sha256"];
    if (declared !== undefined && declared !== bodyHash) {
      throw denied("InvalidSignatureException", "The x-amz-content-sha256 header does not match the request body's SHA-256 hash.");
    }

    const canonicalRequest = `${req.method}\n${canonicalPath(req.rawPath)}\n${canonicalQuery(req.rawQuery)}\n${canonicalHeaders}\n${names.join(";")}\n${bodyHash}`;
    const shortDate = longDate.slice(0, 8);
    const stringToSign = `AWS4-HMAC-SHA256\n${longDate}\n${shortDate}/${this.region}/${scopeService}/aws4_request\n${createHash("sha256").update(canonicalRequest).digest("hex")}`;
    const expected = createHmac("sha256", this.signingKey(accessKeyId!, resolved.secretAccessKey, shortDate, scopeService!)).update(stringToSign).digest("hex");
    if (expected.length !== signature!.length || !timingSafeEqual(Buffer.from(expected), Buffer.from(signature!))) {
      throw denied(
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
      );
    }
    return { accessKeyId: accessKeyId!, accountId: resolved.caller.accountId, caller: resolved.caller };
  }
}
