// Hostile input to the control API: property-based fuzzing (fast-check) of
// every operation's input, in its real bindings (path labels, query string,
// JSON body), with wrong types, huge strings, unicode, control characters
// and boundary numbers, all correctly signed. Every answer must be a success
// or a well-formed AWS error of a type the SDK models for that status; never
// a 500, never a crash; the server answers /health after each operation.
// Then the SigV4 cases: wrong key, altered body, a replay outside the skew
// window, a missing header.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { OPERATIONS } from "../../src/api/index.js";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { signedFetch } from "../support/signed-fetch.js";
import { record } from "./report.js";

const RUNS = Number(process.env.LMVM_FUZZ_RUNS ?? 200);

const anyJson = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: "grapheme", maxLength: 32 }),
  fc.string({ unit: "binary", maxLength: 32 }),
  fc.constantFrom("", " ", "\u0000", "../../etc/passwd", "arn:aws:lambda:us-east-1:000000000000:microvm-image:x", "microvm-0123456789abcdef0", "%00", "'; DROP TABLE microvms;--", "𝕏".repeat(300), "a".repeat(70_000)),
  fc.integer(),
  fc.constantFrom(0, -1, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 2 ** 31, 65536, 128, 32768, 32769, 0.5),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 16 }), fc.integer()), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 16 }), fc.integer(), fc.constant(null)), { maxKeys: 4 }),
);

/** A request for `op` with each input member present or not, and any value. */
function requestFor(op: (typeof OPERATIONS)[keyof typeof OPERATIONS]) {
  return fc.record(Object.fromEntries(op.input.map((m) => [m.name, fc.option(anyJson, { nil: undefined })]))).map((values) => {
    let path = op.path;
    const query = new URLSearchParams();
    const body: Record<string, unknown> = {};
    for (const m of op.input) {
      const v = values[m.name];
      const text = typeof v === "string" ? v : JSON.stringify(v ?? "x");
      if (m.binding.in === "label") path = path.replace(`{${m.name}}`, encodeURIComponent(text).slice(0, 2000) || "x");
      else if (v === undefined) continue;
      else if (m.binding.in === "query") query.append(m.binding.name, text.slice(0, 2000));
      else body[m.name] = v;
    }
    const q = query.toString();
    return { path: q ? `${path}?${q}` : path, body: op.method === "GET" || op.method === "DELETE" ? undefined : body };
  });
}

describe("hostile input to the control API", { timeout: 600_000 }, () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform();
  });
  after(() => t.stop());

  for (const op of Object.values(OPERATIONS)) {
    test(`${op.name}: every fuzzed input gets a success or a well-formed AWS error`, async () => {
      let requests = 0;
      const statuses = new Map<number, number>();
      await fc.assert(
        fc.asyncProperty(requestFor(op), async ({ path, body }) => {
          const res = await signedFetch(t.platform.url, t.credentials, op.method, path, body);
          requests++;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          assert.ok(res.status < 500 || (res.errorType !== null && res.errorType !== "InternalServerException"), `${op.method} ${path.slice(0, 200)} → ${res.status} ${res.errorType}: ${JSON.stringify(res.body).slice(0, 300)}`);
          if (res.status >= 300) {
            assert.ok(res.errorType, `an error names its type: ${res.status} ${JSON.stringify(res.body)}`);
            assert.equal(typeof res.body.message, "string", "an error says what to fix");
          }
        }),
        { numRuns: RUNS },
      );
      assert.equal((await fetch(`${t.platform.url}/health`)).status, 200);
      record("api-fuzz", `${op.name}: ${requests} fuzzed requests`, "no 500, every error well-formed", Object.fromEntries([...statuses].map(([s, n]) => [`HTTP ${s}`, n])));
    });
  }

  test("regression: a path with a broken %-escape gets a ValidationException, not the framework's own error", async () => {
    for (const path of ["/2025-09-09/microvm-images/%F0%9D%9", "/2025-09-09/microvms/%zz"]) {
      const signed = await signedFetch(t.platform.url, t.credentials, "GET", path);
      assert.equal(signed.status, 400);
      assert.equal(signed.errorType, "ValidationException");
      assert.match(String(signed.body.message), /percent-encoding/);
    }
  });

  test("SigV4: wrong key, altered body, stale replay and missing headers are refused with the right error", async () => {
    const path = "/2025-09-09/microvm-images";
    const body = { name: "x", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: "s3://b/k.zip" } };
    const cases: [string, Promise<{ status: number; errorType: string | null }>, string][] = [
      ["an unknown access key", signedFetch(t.platform.url, { accessKeyId: "LKIAUNKNOWN", secretAccessKey: "x" }, "POST", path, body), "UnrecognizedClientException"],
      ["a wrong secret", signedFetch(t.platform.url, { ...t.credentials, secretAccessKey: "wrong" }, "POST", path, body), "InvalidSignatureException"],
      ["a body altered after signing", signedFetch(t.platform.url, t.credentials, "POST", path, body, { tamperedBody: JSON.stringify({ ...body, name: "evil" }) }), "InvalidSignatureException"],
      ["a replay 10 minutes old", signedFetch(t.platform.url, t.credentials, "POST", path, body, { signingDate: new Date(Date.now() - 10 * 60_000) }), "InvalidSignatureException"],
      ["no Authorization header", fetch(`${t.platform.url}${path}`, { method: "POST", body: JSON.stringify(body) }).then((r) => ({ status: r.status, errorType: r.headers.get("x-amzn-errortype") })), "MissingAuthenticationTokenException"],
    ];
    for (const [what, response, type] of cases) {
      const r = await response;
      assert.equal(r.status, 403, what);
      assert.equal(r.errorType, type, what);
      record("sigv4", what, `403 ${type}`);
    }
  });
});
