// Checks AWS Signature Version 4 on every control-API request, with the AWS
// SDK's own signer (@smithy/signature-v4): the request is re-signed from the
// headers the client says it signed, and the two signatures must match.
// Failures carry the error types real AWS returns for them.

import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import type { Clock } from "../core/index.js";
import { AwsError } from "./errors.js";

export interface Principal {
  accessKeyId: string;
  accountId: string;
}

export interface Credential {
  secretAccessKey: string;
  accountId: string;
}

export interface SignedRequest {
  method: string;
  /** Path exactly as sent, still percent-encoded. */
  rawPath: string;
  /** Query string exactly as sent, without '?'. */
  rawQuery: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

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
  private readonly signers = new Map<string, SignatureV4>();

  constructor(
    private readonly credentials: ReadonlyMap<string, Credential>,
    private readonly region: string,
    private readonly clock: Clock,
    private readonly service = "lambda",
  ) {}

  private signer(accessKeyId: string, secretAccessKey: string): SignatureV4 {
    let signer = this.signers.get(accessKeyId);
    if (!signer) {
      signer = new SignatureV4({
        credentials: { accessKeyId, secretAccessKey },
        region: this.region,
        service: this.service,
        sha256: Hash.bind(null, "sha256"),
        applyChecksum: false,
      });
      this.signers.set(accessKeyId, signer);
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

    const credential = this.credentials.get(accessKeyId!);
    if (!credential) throw denied("UnrecognizedClientException", "The security token included in the request is invalid.");
    if (scopeRegion !== this.region) throw denied("InvalidSignatureException", `Credential should be scoped to a valid region, not '${scopeRegion}'. This server's region is '${this.region}'.`);
    if (scopeService !== this.service) throw denied("InvalidSignatureException", `Credential should be scoped to correct service: '${this.service}'.`);
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

    const signed = await this.signer(accessKeyId!, credential.secretAccessKey).sign(
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
    return { accessKeyId: accessKeyId!, accountId: credential.accountId };
  }
}
