// The SigV4 verifier (src/api/sigv4.ts) against the AWS SDK's signer
// (@smithy/signature-v4), the reference, on a large generated corpus: odd
// paths (spaces, unicode, %-encoded bytes, double slashes, dot segments),
// query strings with repeated keys, empty values and reserved characters,
// headers with runs of spaces and tabs and mixed-case names, session tokens,
// bodies. Every request the SDK signs verifies; every single mutation (one
// byte of the path, the query, a signed header, the body, the date, the
// method, the signature, or another real key) is refused unless the SDK itself
// signs the mutated request to the same signature. Keys are real: the identity
// service on the real SQLite store, with a user's key and an STS session.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import fc from "fast-check";
import { SigV4Verifier, type SignedRequest } from "../../src/api/sigv4.js";
import { AwsError } from "../../src/api/errors.js";
import { IdentityService, Unauthenticated, type Clock } from "../../src/core/index.js";
import { AesGcmBox } from "../../src/server/secret-box.js";
import { SqliteStore } from "../../src/store/index.js";
import { tempDir } from "../support/platform.js";

const ACCT = "123456789012";
const REGION = "us-east-1";
const ROOT = { accessKeyId: "LKIAROOTROOTROOTROOT", secretAccessKey: "root-secret-root-secret-root-secret-0000" };
const NOW = Date.parse("2026-03-01T12:00:00Z");
const clock: Clock = { now: () => new Date(NOW) };
const RUNS = Number(process.env.SIGV4_CORPUS_RUNS ?? 3000);

interface Creds { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
let store: SqliteStore;
let verifier: SigV4Verifier;
let user: Creds;
let other: Creds;
let session: Creds;

before(async () => {
  store = await SqliteStore.open(join(tempDir(), "lmvm.db"));
  const ids = await IdentityService.open({ store, clock, accountId: ACCT, root: ROOT, secrets: new AesGcmBox(Buffer.alloc(32, 7)), sessions: new AesGcmBox(Buffer.alloc(32, 9)) });
  for (const name of ["alice", "bob"]) await ids.createUser({ userName: name });
  const key = async (name: string): Promise<Creds> => {
    const k = await ids.createAccessKey(name);
    return { accessKeyId: k.accessKeyId, secretAccessKey: (await ids.resolveKey(k.accessKeyId, undefined, "10.0.0.1")).secretAccessKey };
  };
  user = await key("alice");
  other = await key("bob");
  const trust = JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCT}:root` }, Action: "sts:AssumeRole" }] });
  await ids.createRole({ roleName: "Ops", assumeRolePolicyDocument: trust });
  const s = await ids.assumeRole(ids.rootCaller("10.0.0.1"), { roleArn: `arn:aws:iam::${ACCT}:role/Ops`, roleSessionName: "corpus" });
  session = s.credentials;
  verifier = new SigV4Verifier(ids, REGION, clock, "lambda");
});
after(() => store.close());

// ---- generators ----

const SEGMENT_CHARS = ["a", "Z", "0", "-", "_", "~", ".", " ", "+", "=", "&", "?", "#", ":", "@", "!", "'", "(", ")", "*", "$", ",", ";", "é", "ü", "日", "😀", "%", "/"];
const segment = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom("", ".", "..", "%2F", "%2e", "%25", "%41", "%C3%A9", "%20") },
  { weight: 4, arbitrary: fc.array(fc.constantFrom(...SEGMENT_CHARS), { maxLength: 6 }).map((cs) => cs.join("")) },
);
/** A path as sent: each segment percent-encoded as the SDK does (or left raw, or with %XX of its own), slashes doubled at times. */
const wirePath = fc.tuple(fc.array(fc.tuple(segment, fc.constantFrom("encode", "raw-escapes", "keep")), { maxLength: 6 }), fc.boolean()).map(([segs, trailing]) => {
  const parts = segs.map(([s, how]) => {
    if (how === "encode" && !/%[0-9A-Fa-f]{2}/.test(s) && s !== "." && s !== "..") return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
    if (how === "raw-escapes") return s;
    return s.replace(/[ #?%]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  });
  return `/${parts.join("/")}${trailing ? "/" : ""}`;
});

const QUERY_CHARS = ["a", "b", "K", "1", "-", "_", ".", "~", " ", "+", "=", "&", "/", "?", "%", "!", "*", "'", "é", "日", ":", ",", ";"];
const queryText = fc.array(fc.constantFrom(...QUERY_CHARS), { maxLength: 5 }).map((cs) => cs.join(""));
const queryKey = fc.oneof(fc.constantFrom("maxResults", "nextToken", "tagKeys", "a", "A", "x-amz-meta"), queryText.filter((k) => k.length > 0));
/** [key, value] pairs, keys repeated at times, values empty at times. */
const queryPairs = fc.array(fc.tuple(queryKey, fc.oneof(fc.constant(""), queryText)), { maxLength: 6 });

const HEADER_NAMES = ["Content-Type", "X-Amz-Meta-Note", "x-custom-ONE", "X-Lmvm-Trace", "accept"];
const headerValue = fc.array(fc.constantFrom("a", "B", "1", " ", "  ", "\t", ",", ";", "=", "é", "/", ":"), { minLength: 1, maxLength: 8 })
  .map((cs) => cs.join("")).filter((v) => v.trim().length > 0);
const extraHeaders = fc.uniqueArray(fc.tuple(fc.constantFrom(...HEADER_NAMES), headerValue), { selector: ([n]) => n.toLowerCase(), maxLength: 4 });

const request = fc.record({
  method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"),
  path: wirePath,
  query: queryPairs,
  queryStyle: fc.constantFrom("sdk", "plus", "bare-key"),
  headers: extraHeaders,
  body: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 1, maxLength: 64 })),
  who: fc.constantFrom("user", "session"),
  applyChecksum: fc.boolean(),
  skewMs: fc.integer({ min: -240_000, max: 240_000 }),
  mutation: fc.constantFrom("path", "query", "header", "body", "date", "method", "signature", "key", "none"),
  pick: fc.nat(),
  byte: fc.constantFrom("a", "Z", "0", "%", "/", ".", "-", " ", "+", "=", "&"),
});

const escapeUri = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function queryRecord(raw: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    const prev = Object.hasOwn(query, k) ? query[k] : undefined;
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return query;
}

function signer(creds: Creds, applyChecksum: boolean): SignatureV4 {
  return new SignatureV4({ credentials: creds, region: REGION, service: "lambda", sha256: Hash.bind(null, "sha256"), applyChecksum });
}

/** Node delivers header names in lower case and values without the whitespace at their ends. */
function asNodeHeaders(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v.replace(/^[ \t]+|[ \t]+$/g, "")]));
}

/** The reference: the SDK's signer re-signing a received request from the headers it names as signed. */
async function referenceSignature(req: SignedRequest & { body: Buffer }, creds: Creds, signedNames: string[], signingDate: Date): Promise<string> {
  const headers: Record<string, string> = {};
  for (const n of signedNames) {
    const v = req.headers[n];
    if (v === undefined) return "";
    headers[n] = String(v);
  }
  const signed = await signer({ accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey }, false).sign(
    new HttpRequest({ method: req.method, protocol: "http:", hostname: "h", path: req.rawPath, query: queryRecord(req.rawQuery), headers, body: req.body.length ? req.body : undefined }),
    { signingDate, signableHeaders: new Set(signedNames) },
  );
  return /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))![1]!;
}

/** One character (code point: what arrives is bytes, never half a surrogate pair) replaced. */
function mutateString(s: string, pick: number, byte: string): string {
  const cs = Array.from(s);
  if (!cs.length) return byte;
  const i = pick % cs.length;
  cs[i] = cs[i] === byte ? (byte === "a" ? "b" : "a") : byte;
  return cs.join("");
}

/** How the verifier refused: an AwsError (403), or the identity service's Unauthenticated (an unknown key or a bad token). */
async function refusal(p: Promise<unknown>): Promise<{ type: string; status: number; message: string } | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    if (err instanceof Unauthenticated) return { type: "Unauthenticated", status: 403, message: err.message };
    assert.ok(err instanceof AwsError, `expected an AwsError, got ${String(err)}`);
    return err;
  }
}

test(`SigV4 verifier agrees with the AWS SDK's signer on ${RUNS} generated requests and one mutation of each`, async () => {
  const counts: Record<string, number> = {};
  await fc.assert(fc.asyncProperty(request, async (r) => {
    const creds = r.who === "session" ? session : user;
    const pairs = r.query;
    const rawQuery = pairs.map(([k, v]) => {
      if (r.queryStyle === "plus") return `${encodeURIComponent(k).replace(/%20/g, "+")}=${encodeURIComponent(v).replace(/%20/g, "+")}`;
      if (r.queryStyle === "bare-key" && v === "") return escapeUri(k);
      return `${escapeUri(k)}=${escapeUri(v)}`;
    }).join("&");
    const signingDate = new Date(NOW + r.skewMs);
    const host = "127.0.0.1:7777";
    const signed = await signer(creds, r.applyChecksum).sign(new HttpRequest({
      method: r.method, protocol: "http:", hostname: "127.0.0.1", port: 7777, path: r.path, query: queryRecord(rawQuery),
      headers: { host, ...Object.fromEntries(r.headers) }, body: r.body.length ? r.body : undefined,
    }), { signingDate });
    const headers = asNodeHeaders(signed.headers as Record<string, string>);
    const body = Buffer.from(r.body);
    const req: SignedRequest & { body: Buffer } = { method: r.method, rawPath: r.path, rawQuery, headers, body, sourceIp: "10.0.0.1" };

    const ok = await verifier.verify(req);
    assert.equal(ok.accessKeyId, creds.accessKeyId);

    const auth = headers.authorization!;
    const signedNames = /SignedHeaders=([^,]+)/.exec(auth)![1]!.split(";");
    const signature = /Signature=([0-9a-f]{64})/.exec(auth)![1]!;
    let m: SignedRequest & { body: Buffer } = { ...req, headers: { ...headers } };
    let mustRefuse = true;
    switch (r.mutation) {
      case "path": m.rawPath = mutateString(req.rawPath, r.pick, r.byte); mustRefuse = false; break;
      case "query": m.rawQuery = mutateString(req.rawQuery, r.pick, r.byte); mustRefuse = false; break;
      case "header": {
        const names = signedNames.filter((n) => n !== "x-amz-date" && n !== "x-amz-content-sha256");
        const name = names[r.pick % names.length]!;
        m.headers[name] = mutateString(String(headers[name]), r.pick >> 3, r.byte === " " ? "q" : r.byte);
        // A changed session token is refused by the identity service (Unauthenticated) before any signature.
        mustRefuse = name === "x-amz-security-token";
        break;
      }
      case "body": {
        const b = Buffer.from(body.length ? body : Buffer.from("x"));
        if (body.length) b[r.pick % b.length] = b[r.pick % b.length]! ^ (1 << (r.pick % 8));
        m.body = b;
        break;
      }
      case "date": {
        const later = new Date(Date.UTC(
          +headers["x-amz-date"]!.slice(0, 4), +headers["x-amz-date"]!.slice(4, 6) - 1, +headers["x-amz-date"]!.slice(6, 8),
          +headers["x-amz-date"]!.slice(9, 11), +headers["x-amz-date"]!.slice(11, 13), +headers["x-amz-date"]!.slice(13, 15) + 1));
        m.headers["x-amz-date"] = later.toISOString().replace(/[-:]|\.\d{3}/g, "");
        break;
      }
      case "method": m.method = r.method === "GET" ? "POST" : "GET"; break;
      case "signature": {
        const i = r.pick % 64;
        m.headers.authorization = auth.replace(/Signature=[0-9a-f]{64}/, `Signature=${signature.slice(0, i)}${signature[i] === "0" ? "1" : "0"}${signature.slice(i + 1)}`);
        break;
      }
      case "key": {
        // Another real key in the Credential, the same signature; the session's token goes with it.
        m.headers.authorization = auth.replace(creds.accessKeyId, other.accessKeyId);
        delete m.headers["x-amz-security-token"];
        m.headers.authorization = m.headers.authorization.replace(/SignedHeaders=[^,]+/, `SignedHeaders=${signedNames.filter((n) => n !== "x-amz-security-token").join(";")}`);
        break;
      }
      case "none": m = req; mustRefuse = false; break;
    }
    counts[r.mutation] = (counts[r.mutation] ?? 0) + 1;
    const refused = await refusal(verifier.verify(m));
    if (mustRefuse) {
      assert.ok(refused, `a ${r.mutation} mutation was accepted: ${JSON.stringify({ ...m, body: m.body.toString("hex") })}`);
      assert.equal(refused.status, 403);
    } else {
      // Accepted exactly when the SDK signs the mutated request to the signature sent (a change the canonical form does not see, such as a byte inside a '..'-removed segment).
      const same = (await referenceSignature(m, creds, signedNames, signingDate)) === signature;
      assert.equal(refused === undefined, same, `${r.mutation} mutation: verifier ${refused ? `refused (${refused.type}: ${refused.message})` : "accepted"}, SDK signature ${same ? "matches" : "differs"}: ${JSON.stringify({ method: m.method, rawPath: m.rawPath, rawQuery: m.rawQuery, headers: m.headers })}`);
      if (r.mutation === "none") assert.ok(same);
      if (refused) assert.equal(refused.type, "InvalidSignatureException");
    }
  }), { numRuns: RUNS });
  for (const kind of ["path", "query", "header", "body", "date", "method", "signature", "key", "none"]) assert.ok((counts[kind] ?? 0) > RUNS / 20, `too few ${kind} mutations: ${counts[kind]}`);
});

test("the verifier's canonical path, query and header values are the SDK's on fixed hard cases", async () => {
  const cases: [string, string, Record<string, string>][] = [
    ["/a//b/./c/../d/", "b=2&a=1&a=&a=0", { "x-amz-meta-note": "a  b\t\tc" }],
    ["/%E6%97%A5%20x/%2F/..", "k&k=&k=%2B&k=+", { "x-custom-one": "  lead and trail  " }],
    ["/", "", {}],
    ["//", "X-Amz-Signature=zz&x=1", {}],
    ["/a/b/../../..", "%F0%9F%98%80=%25", { "content-type": "application/json; charset=utf-8" }],
  ];
  for (const [path, rawQuery, extra] of cases) {
    const signed = await signer(user, true).sign(new HttpRequest({
      method: "GET", protocol: "http:", hostname: "h", path, query: queryRecord(rawQuery), headers: { host: "h", ...extra },
    }), { signingDate: new Date(NOW) });
    await verifier.verify({ method: "GET", rawPath: path, rawQuery, headers: asNodeHeaders(signed.headers as Record<string, string>), body: Buffer.alloc(0) });
  }
});
