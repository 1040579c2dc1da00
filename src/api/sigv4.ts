// Checks AWS Signature Version 4 on every control-API request, with the AWS
// SDK's own signer (@smithy/signature-v4): the request is re-signed from the
// headers the client says it signed, and the two signatures must match.
// The access key (and, for temporary credentials, the x-amz-security-token
// header, which must be among the signed headers) is resolved by the
// identity service, which says who is calling. Failures carry the error types
// real AWS returns for them; an unknown, deactivated or expired key is the
// core's Unauthenticated, which each API words in its own protocol.

import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
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
  body: Buffer;
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

const SIGNER_CACHE = 1000;

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

function parseQuery(raw: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    const prev = query[k];
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return query;
}

export class SigV4Verifier {
  /** Signers of long-lived keys (root's, users'), by key, secret and service; temporary keys get a fresh one. */
  private readonly signers = new Map<string, SignatureV4>();
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

  private signer(accessKeyId: string, secretAccessKey: string, service: string): SignatureV4 {
    const make = () => new SignatureV4({
      credentials: { accessKeyId, secretAccessKey },
      region: this.region,
      service,
      sha256: Hash.bind(null, "sha256"),
      applyChecksum: false,
    });
    if (accessKeyId.startsWith("ASIA")) return make();
    const key = `${service}\0${accessKeyId}\0${secretAccessKey}`;
    let signer = this.signers.get(key);
    if (!signer) {
      signer = make();
      if (this.signers.size >= SIGNER_CACHE) this.signers.delete(this.signers.keys().next().value!);
      this.signers.set(key, signer);
    }
    return signer;
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
    const headers: Record<string, string> = {};
    for (const name of signedHeaders) {
      const value = req.headers[name];
      if (value === undefined) throw denied("InvalidSignatureException", `Header '${name}' is listed in SignedHeaders but missing from the request.`);
      headers[name] = Array.isArray(value) ? value.join(",") : value;
    }
    const bodyHash = req.body.length ? createHash("sha256").update(req.body).digest("hex") : EMPTY_SHA256;
    const declared = req.headers["x-amz-content-sha256"];
    if (declared !== undefined && declared !== bodyHash) {
      throw denied("InvalidSignatureException", "The x-amz-content-sha256 header does not match the request body's SHA-256 hash.");
    }

    const signed = await this.signer(accessKeyId!, resolved.secretAccessKey, scopeService!).sign(
      new HttpRequest({
        method: req.method,
        protocol: "http:",
        hostname: "placeholder",
        path: req.rawPath,
        query: parseQuery(req.rawQuery),
        headers,
        body: req.body.length ? req.body : undefined,
      }),
      { signingDate: signedAt, signableHeaders: new Set(signedHeaders) },
    );
    const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1] ?? "";
    if (expected.length !== signature!.length || !timingSafeEqual(Buffer.from(expected), Buffer.from(signature!))) {
      throw denied(
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
      );
    }
    return { accessKeyId: accessKeyId!, accountId: resolved.caller.accountId, caller: resolved.caller };
  }
}
