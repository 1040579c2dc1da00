// The console's calls, all SigV4-signed in the browser with the signed-in
// key: the official Lambda MicroVMs client for the API's operations, and the
// same signer (@smithy/signature-v4, the SDK's own) for lmvm's routes the SDK
// has no command for (logs, code uploads) and STS's GetCallerIdentity.

import { LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { Sha256 } from "@smithy/core/checksum";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";

export interface Session {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  region: string;
}

/** lmvm's own routes (src/api/wire.ts). */
export const LMVM_PREFIX = "/lmvm/2025-09-09";
const STORAGE_KEY = "lmvm.console.session";

/** The session lives in sessionStorage only: it ends with the tab, and sign-out removes it. */
export function loadSession(): Session | undefined {
  const raw = sessionStorage.getItem(STORAGE_KEY);
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return undefined;
  }
}
export function saveSession(s: Session): void {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
}
export function clearSession(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

const credentialsOf = (s: Session) => ({ accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, ...(s.sessionToken ? { sessionToken: s.sessionToken } : {}) });

export function microvmsClient(s: Session): LambdaMicrovmsClient {
  return new LambdaMicrovmsClient({ endpoint: location.origin, region: s.region, credentials: credentialsOf(s), maxAttempts: 2 });
}

export interface SignedCall {
  method: string;
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  service?: string;
  signal?: AbortSignal;
}

/** fetch() of this origin, signed like the SDK signs. */
export async function signedFetch(s: Session, call: SignedCall): Promise<Response> {
  const signer = new SignatureV4({ service: call.service ?? "lambda", region: s.region, credentials: credentialsOf(s), sha256: Sha256 });
  const request = new HttpRequest({
    method: call.method,
    protocol: location.protocol,
    hostname: location.hostname,
    ...(location.port ? { port: Number(location.port) } : {}),
    path: call.path,
    query: call.query ?? {},
    // The signer adds x-amz-content-sha256 (applyChecksum), which the upload route checks before it reads the body.
    headers: { host: location.host, ...(call.headers ?? {}) },
    ...(call.body !== undefined ? { body: call.body } : {}),
  });
  const signed = await signer.sign(request);
  const headers = new Headers();
  // The browser sends Host itself (and forbids setting it); it is the same value that was signed.
  for (const [k, v] of Object.entries(signed.headers)) if (k.toLowerCase() !== "host") headers.set(k, v);
  const qs = new URLSearchParams(call.query ?? {}).toString();
  return fetch(`${call.path}${qs ? `?${qs}` : ""}`, { method: call.method, headers, ...(call.body !== undefined ? { body: call.body as BodyInit } : {}), ...(call.signal ? { signal: call.signal } : {}) });
}

/** An AWS error answer (JSON or XML) as one line. */
async function failure(res: Response): Promise<Error> {
  const text = await res.text();
  try {
    const j = JSON.parse(text) as { message?: string; Message?: string; __type?: string };
    return new Error(`${res.headers.get("x-amzn-errortype") ?? j.__type ?? res.status}: ${j.message ?? j.Message ?? text}`);
  } catch {
    const m = /<Message>([^<]*)<\/Message>/.exec(text);
    return new Error(`HTTP ${res.status}: ${m ? m[1] : text.slice(0, 300)}`);
  }
}

/** STS GetCallerIdentity: checks the key at sign-in and names the account (for default ARNs). */
export async function callerIdentity(s: Session): Promise<{ arn: string; account: string }> {
  const body = "Action=GetCallerIdentity&Version=2011-06-15";
  const res = await signedFetch(s, { method: "POST", path: "/", service: "sts", body, headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" } });
  if (!res.ok) throw await failure(res);
  const xml = await res.text();
  const arn = /<Arn>([^<]*)<\/Arn>/.exec(xml)?.[1] ?? "";
  const account = /<Account>([^<]*)<\/Account>/.exec(xml)?.[1] ?? "";
  return { arn, account };
}

/** Stores a zip on the server for the image `imageName`; answers its file:// artifact URI. */
export async function uploadZip(s: Session, imageName: string, zip: Uint8Array): Promise<string> {
  const res = await signedFetch(s, { method: "PUT", path: `${LMVM_PREFIX}/uploads`, query: { imageName }, body: zip, headers: { "content-type": "application/zip" } });
  if (!res.ok) throw await failure(res);
  return ((await res.json()) as { codeArtifactUri: string }).codeArtifactUri;
}

/**
 * Follows a log (lmvm's log routes) into `onText` until it ends or `signal`
 * aborts; a dropped connection is picked up again at the byte it reached.
 */
export async function followLog(s: Session, path: string, onText: (text: string) => void, signal: AbortSignal): Promise<void> {
  let offset = 0;
  const decoder = new TextDecoder();
  for (let attempt = 0; attempt < 5 && !signal.aborted; attempt++) {
    let res: Response;
    try {
      res = await signedFetch(s, { method: "GET", path, query: { follow: "true", offset: String(offset) }, signal });
    } catch (err) {
      if (signal.aborted) return;
      onText(`\n[log connection failed: ${(err as Error).message}; retrying]\n`);
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (!res.ok || !res.body) throw await failure(res);
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return; // the log ended: the build or MicroVM is done
        offset += value.length;
        onText(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      if (signal.aborted) return;
      onText(`\n[log connection lost: ${(err as Error).message}; reconnecting]\n`);
    }
  }
}

/** Prometheus text from /metrics (unsigned, like every Prometheus scrape): value per label set of one metric. */
export async function metric(name: string): Promise<Map<string, number>> {
  const res = await fetch("/metrics");
  const out = new Map<string, number>();
  if (!res.ok) return out;
  for (const line of (await res.text()).split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (m) out.set(m[1] ?? "", Number(m[2]));
  }
  return out;
}
