// Raw HTTP requests signed with SigV4, for what the SDK will not send:
// wrong types, altered bodies, stale dates, foreign regions.

import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";

export interface RawResponse {
  status: number;
  errorType: string | null;
  body: Record<string, unknown>;
}

export interface SignOptions {
  region?: string;
  service?: string;
  signingDate?: Date;
  /** Replaces the body after signing, to model tampering in transit. */
  tamperedBody?: string;
  /** Headers added after signing (so not covered by the signature). */
  unsignedHeaders?: Record<string, string>;
  /** Leaves x-amz-content-sha256 out (the signer's applyChecksum off). */
  omitPayloadHash?: boolean;
}

/** The query as the signer takes it: a repeated name (`?k=a&k=b`) keeps all its values. */
function queryObject(query: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(query)) {
    const had = out[k];
    out[k] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v];
  }
  return out;
}

export async function signedFetch(
  baseUrl: string,
  creds: { accessKeyId: string; secretAccessKey: string; sessionToken?: string },
  method: string,
  path: string,
  body?: unknown,
  opts: SignOptions = {},
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const [pathname, query = ""] = path.split("?");
  const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  const signer = new SignatureV4({ credentials: creds, region: opts.region ?? "us-east-1", service: opts.service ?? "lambda", sha256: Hash.bind(null, "sha256"), ...(opts.omitPayloadHash ? { applyChecksum: false } : {}) });
  const signed = await signer.sign(
    new HttpRequest({
      method,
      protocol: "http:",
      hostname: url.hostname,
      port: Number(url.port),
      path: pathname!,
      query: queryObject(query),
      headers: {
        host: url.host,
        ...(text !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(text !== undefined ? { body: text } : {}),
    }),
    opts.signingDate ? { signingDate: opts.signingDate } : {},
  );
  const res = await fetch(`${baseUrl}${path}`, { method, headers: { ...(signed.headers as Record<string, string>), ...(opts.unsignedHeaders ?? {}) }, ...(text !== undefined ? { body: opts.tamperedBody ?? text } : {}) });
  const raw = await res.text();
  return { status: res.status, errorType: res.headers.get("x-amzn-errortype"), body: raw ? JSON.parse(raw) : {} };
}
