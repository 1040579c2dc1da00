// Hostile input to the control API: property-based fuzzing (fast-check) of
// every operation's input, in its real bindings (path labels, query string,
// JSON body). Half the requests are valid throughout (names, ARNs of images
// and MicroVMs that exist, versions, JSON structures, built from the SDK's
// input shapes: test/hostile/fuzz-inputs.ts), so that they reach each
// handler's logic; the other half mix in wrong types, huge strings, unicode,
// control characters and boundary numbers. All are correctly signed. Every
// answer must be a success or a well-formed AWS error; the only 5xx allowed is
// RunMicrovm's documented capacity answer (InsufficientCapacityException,
// README "Errors"), so a handler that crashes fails the test. Each operation
// must get past validation (an answer other than a 400 ValidationException)
// on a share of its requests, and the report says how many did. The
// builder and the sandbox runtime are the scripted doubles
// (test/support/scripted.ts): this tests the API and the core, not gVisor.
// Then the SigV4 cases: wrong key, altered body, a replay outside the skew
// window, a missing header.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ListMicrovmImageBuildsCommand, RunMicrovmCommand, SuspendMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import fc from "fast-check";
import { OPERATIONS, type OperationModel } from "../../src/api/index.js";
import { DEFAULTS } from "../../src/server/index.js";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";
import { signedFetch } from "../support/signed-fetch.js";
import { requests, toRequest, type Fixtures } from "./fuzz-inputs.js";
import { record, recordFuzz } from "./report.js";

const RUNS = Number(process.env.LMVM_FUZZ_RUNS ?? 200);
/** Each operation gets past validation on at least this many of its requests (half are built valid). */
const MIN_PAST_VALIDATION = Math.max(1, Math.floor(RUNS / 10));
const SIGNATURE_ERRORS = new Set(["MissingAuthenticationTokenException", "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException"]);
const SHELL = `arn:aws:lambda:${DEFAULTS.region}:aws:network-connector:aws-network-connector:SHELL_INGRESS`;
const HTTP = `arn:aws:lambda:${DEFAULTS.region}:aws:network-connector:aws-network-connector:HTTP_INGRESS`;

// Two minutes on an idle 2-core host; a loaded one took ten.
describe("hostile input to the control API", { timeout: 1_800_000 }, () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });
  before(async () => {
    // The fuzzer sends each operation's requests back to back, far past the documented request
    // rates: throttled requests (429) would never reach the validation and handlers under test,
    // so the rates are raised here (test/conformance/quotas.test.ts tests them). So is the image
    // quota: each operation's fixtures make two images, and CreateMicrovmImage's fuzzing many more.
    t = await startTestPlatform({ builder, runtime: new ScriptedRuntime(), rateLimits: { "*": 100_000 }, quotas: { images: 100_000 } });
  });
  after(() => t.stop());

  /** Fresh images, builds and MicroVMs (two RUNNING, one SUSPENDED) for one operation's run, which may delete or stop them. */
  async function fixtures(op: OperationModel): Promise<Fixtures> {
    const prefix = `fx-${op.name.toLowerCase()}`;
    const images = [`${prefix}-a`, `${prefix}-b`];
    for (const name of images) await t.client.send(new CreateMicrovmImageCommand(imageRequest(name, { tags: { team: "fuzz" } })));
    for (const name of images) {
      await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }))).state === "CREATED" ? true : undefined), `${name} built`);
    }
    const builds = (await Promise.all(images.map((name) => t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: "1.0" }))))).flatMap((r) => r.items ?? []);
    const arn = (name: string) => `arn:aws:lambda:${DEFAULTS.region}:${DEFAULTS.accountId}:microvm-image:${name}`;
    const microvms: string[] = [];
    for (const ingress of [[HTTP, SHELL], [], []]) {
      microvms.push((await t.client.send(new RunMicrovmCommand({ imageIdentifier: arn(images[0]!), ingressNetworkConnectors: ingress }))).microvmId!);
    }
    const reach = (id: string, state: string) =>
      eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state === state ? true : undefined), `${id} ${state}`);
    for (const id of microvms) await reach(id, "RUNNING");
    // One SUSPENDED, so that a resume can succeed.
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: microvms[2]! }));
    await reach(microvms[2]!, "SUSPENDED");
    const f: Fixtures = {
      region: DEFAULTS.region, account: DEFAULTS.accountId, images, microvms, buildIds: builds.map((b) => b.buildId!),
      architecture: builds[0]!.architecture!, chipset: builds[0]!.chipset!, chipsetGeneration: builds[0]!.chipsetGeneration!,
    };
    // A real nextToken: the first page of one item, filtered by nothing but the path.
    if (op.input.some((m) => m.name === "nextToken")) {
      const label = (name: string) => (name === "imageVersion" ? "1.0" : op.name === "ListManagedMicrovmImageVersions" ? "busybox" : images[0]!);
      const members = Object.fromEntries(op.input.filter((m) => m.binding.in === "label").map((m) => [m.name, label(m.name)]));
      const first = toRequest(op, { ...members, maxResults: 1 }, true);
      const page = await signedFetch(t.platform.url, t.credentials, op.method, first.path, first.body);
      assert.equal(page.status, op.status, `the first page of ${op.name}: ${JSON.stringify(page.body)}`);
      if (typeof page.body.nextToken === "string") f.nextPage = { members, nextToken: page.body.nextToken };
    }
    return f;
  }

  for (const op of Object.values(OPERATIONS)) {
    test(`${op.name}: every fuzzed input gets a success or a well-formed AWS error, never a 5xx but a capacity answer, and many get past validation`, async (ctx) => {
      const f = await fixtures(op);
      let sent = 0;
      let past = 0;
      let validSent = 0;
      const statuses = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(requests(op, f), async ({ valid, path, body }) => {
          const res = await signedFetch(t.platform.url, t.credentials, op.method, path, body);
          sent++;
          if (valid) validSent++;
          const key = res.status < 300 ? `HTTP ${res.status}` : `${res.status} ${res.errorType}`;
          statuses.set(key, (statuses.get(key) ?? 0) + 1);
          const what = `${op.method} ${path.slice(0, 200)} ${JSON.stringify(body ?? null).slice(0, 300)} → ${res.status} ${res.errorType}: ${JSON.stringify(res.body).slice(0, 400)}`;
          assert.ok(!SIGNATURE_ERRORS.has(res.errorType ?? ""), `a correctly signed request was refused: ${what}`);
          // A token the MicroVM's ingress connectors do not allow is a ValidationException, as the
          // service answers it, however well-formed the request: it got past validation to the rule.
          const ingressRule = res.errorType === "ValidationException" && /^Cannot create an? (endpoint|shell) token for MicroVM/.test(String(res.body.message));
          if (res.status === 400 && res.errorType === "ValidationException" && !ingressRule) assert.ok(!valid, `a request whose every member is valid was refused as invalid: ${what}`);
          else past++;
          if (res.status >= 500) {
            assert.ok(op.name === "RunMicrovm" && res.errorType === "InsufficientCapacityException", `a 5xx that is not RunMicrovm's capacity answer: ${what}`);
            assert.match(String(res.body.message), /memory|CPU|disk|runtime/, `a capacity answer names what is short: ${what}`);
          }
          if (res.status >= 300) {
            assert.ok(res.errorType, `an error names its type: ${what}`);
            assert.equal(typeof res.body.message, "string", `an error says what to fix: ${what}`);
          } else {
            assert.equal(res.status, op.status, `a success answers with the SDK's status for ${op.name}: ${what}`);
          }
        }),
        { numRuns: RUNS },
      );
      assert.equal((await fetch(`${t.platform.url}/health`)).status, 200);
      const figures = Object.fromEntries([...statuses].sort(([a], [b]) => a.localeCompare(b)));
      ctx.diagnostic(`${op.name}: ${past} of ${sent} fuzzed requests got past validation (${validSent} built valid); ${JSON.stringify(figures)}`);
      recordFuzz({ operation: op.name, requests: sent, pastValidation: past, builtValid: validSent, answers: figures });
      assert.ok(past >= MIN_PAST_VALIDATION, `${op.name}: only ${past} of ${sent} fuzzed requests got past validation (at least ${MIN_PAST_VALIDATION} must); answers: ${JSON.stringify(figures)}`);
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
