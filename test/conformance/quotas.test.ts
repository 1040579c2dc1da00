// Quotas and request rates through the official SDK client against a real
// server: each quota at AWS's default refuses the request past it with
// ServiceQuotaExceededException (402) naming the quota, and lets it through
// once room is made; each documented request rate throttles with
// ThrottlingException (429, Retry-After), which a client with the SDK's
// standard retry waits out; the operator's --quotas and --rate-limits take
// effect and are validated. The sandbox runtime and builder are scripted
// (test/support/scripted.ts): these are API-level rules.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, DeleteMicrovmImageCommand,
  DeleteMicrovmImageVersionCommand, GetMicrovmCommand, GetMicrovmImageCommand, LambdaMicrovmsClient, ResumeMicrovmCommand, RunMicrovmCommand,
  ServiceQuotaExceededException, SuspendMicrovmCommand, TerminateMicrovmCommand, ThrottlingException, UpdateMicrovmImageCommand,
} from "@aws-sdk/client-lambda-microvms";
import { OPERATIONS } from "../../src/api/index.js";
import { DEFAULTS } from "../../src/server/index.js";
import { rejects } from "../support/assertions.js";
import { lmvm, spawnServer } from "../support/processes.js";
import { BASE_IMAGE_ARN, BUILD_ROLE_ARN, eventually, imageRequest, readCredentials, sdkClient, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";
import { signedFetch } from "../support/signed-fetch.js";

const ARN = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;
const NO_VM = "microvm-0123456789abcdef0";
/** Raised request rates, for the quota tests: they make requests faster than the documented rates. */
const FAST = { "*": 10_000 };

async function quotaError(p: Promise<unknown>, quotaCode: string, message: RegExp): Promise<ServiceQuotaExceededException> {
  const err = (await rejects(p, "ServiceQuotaExceededException", message)) as ServiceQuotaExceededException;
  assert.equal(err.$metadata.httpStatusCode, 402);
  assert.equal(err.quotaCode, quotaCode);
  assert.equal(err.serviceCode, "lambda");
  assert.match(err.message, new RegExp(`The quota '${quotaCode}' is [0-9,]+`));
  assert.match(err.message, new RegExp(`lmvm server --quotas ${quotaCode}=`), "the message says how to raise it");
  return err;
}

const update = (name: string) => new UpdateMicrovmImageCommand({ imageIdentifier: name, baseImageArn: BASE_IMAGE_ARN, buildRoleArn: BUILD_ROLE_ARN, codeArtifact: { uri: "s3://artifacts/app.zip" } });
const reach = (t: TestPlatform, id: string, state: string) =>
  eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state === state ? true : undefined), `${id} ${state}`);
const built = (t: TestPlatform, name: string, states = ["CREATED", "UPDATED"]) =>
  eventually(async () => (states.includes((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }))).state!) ? true : undefined), `${name} built`);

describe("quotas at AWS's defaults", () => {
  test("memory: 409,600 MiB of PENDING, RUNNING, SUSPENDING and SUSPENDED MicroVMs (50 of the 8 GB size); TERMINATING ones free theirs", async () => {
    const builder = new ScriptedBuilder();
    builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });
    const t = await startTestPlatform({ builder, runtime: new ScriptedRuntime(), rateLimits: FAST });
    try {
      await t.client.send(new CreateMicrovmImageCommand(imageRequest("big", { resources: [{ minimumMemoryInMiB: 8192 }] })));
      await built(t, "big");
      const ids: string[] = [];
      for (let i = 0; i < 50; i++) ids.push((await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big") }))).microvmId!);
      const err = await quotaError(t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big") })), "microvm-memory-mib", /needs 8,192 MiB.*50 PENDING, RUNNING, SUSPENDING and SUSPENDED MicroVMs already hold 409,600 MiB/);
      assert.equal(err.resourceType, "Microvm");
      assert.match(err.message, /The quota 'microvm-memory-mib' is 409,600 MiB/);
      // A suspended MicroVM keeps its memory counted.
      for (const id of ids.slice(0, 3)) await reach(t, id, "RUNNING");
      await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: ids[0]! }));
      await reach(t, ids[0]!, "SUSPENDED");
      await quotaError(t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big") })), "microvm-memory-mib", /already hold 409,600 MiB/);
      // A terminated one frees it.
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: ids[1]! }));
      const next = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big") }));
      assert.equal(next.state, "PENDING");
      // A replay of a run that was let in is answered even at the quota: it takes no more memory.
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: ids[2]! }));
      const first = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big"), clientToken: "replayed-at-quota" }));
      const again = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("big"), clientToken: "replayed-at-quota" }));
      assert.equal(again.microvmId, first.microvmId);
    } finally {
      await t.stop();
    }
  });

  test("images: 100 per account; one being deleted no longer counts", async () => {
    // Without a builder every build stays queued: the build quota is raised so that only the image quota is met.
    const t = await startTestPlatform({ rateLimits: FAST, quotas: { "concurrent-builds": 1000 } });
    try {
      for (let i = 0; i < 100; i++) await t.client.send(new CreateMicrovmImageCommand(imageRequest(`img-${i}`)));
      const err = await quotaError(t.client.send(new CreateMicrovmImageCommand(imageRequest("img-100"))), "images", /already has 100 MicroVM images.*delete-microvm-image/);
      assert.equal(err.resourceType, "MicrovmImage");
      await t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: "img-0" }));
      await t.client.send(new CreateMicrovmImageCommand(imageRequest("img-100")));
    } finally {
      await t.stop();
    }
  });

  test("versions: 50 per image; one being deleted no longer counts", async () => {
    const builder = new ScriptedBuilder();
    builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });
    const t = await startTestPlatform({ builder, rateLimits: FAST });
    try {
      await t.client.send(new CreateMicrovmImageCommand(imageRequest("versioned")));
      await built(t, "versioned");
      for (let v = 2; v <= 50; v++) {
        await t.client.send(update("versioned"));
        await built(t, "versioned", ["UPDATED"]);
      }
      const err = await quotaError(
        t.client.send(update("versioned")),
        "versions-per-image",
        /already has 50 versions \(1\.0 to 50\.0\).*delete-microvm-image-version/,
      );
      assert.equal(err.resourceType, "MicrovmImageVersion");
      assert.equal(err.resourceId, ARN("versioned"));
      await t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "versioned", imageVersion: "1.0" }));
      const next = await t.client.send(update("versioned"));
      assert.equal(next.imageVersion, "51.0");
    } finally {
      await t.stop();
    }
  });

  test("concurrent builds: 5 queued or running per account, whatever the host runs at once; a finished one makes room", async () => {
    const builder = new ScriptedBuilder();
    // The host runs 2 builds at once (--build-concurrency); the other 3 wait in the queue and count too.
    const t = await startTestPlatform({ builder, rateLimits: FAST, buildConcurrency: 2 });
    try {
      for (let i = 0; i < 5; i++) await t.client.send(new CreateMicrovmImageCommand(imageRequest(`b-${i}`)));
      const err = await quotaError(t.client.send(new CreateMicrovmImageCommand(imageRequest("b-5"))), "concurrent-builds", /already has 5 image builds queued or running: .*\(PENDING\)/);
      assert.match(err.message, /\(IN_PROGRESS\)/);
      assert.equal(err.resourceType, "MicrovmImageBuild");
      await builder.succeed();
      await eventually(async () => {
        const states = await Promise.all([0, 1, 2, 3, 4].map(async (i) => (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: `b-${i}` }))).state));
        return states.includes("CREATED") ? true : undefined;
      }, "one build to finish");
      await t.client.send(new CreateMicrovmImageCommand(imageRequest("b-5")));
      // An update makes a build too.
      await quotaError(t.client.send(update("b-0")), "concurrent-builds", /already has 5 image builds/);
    } finally {
      await t.stop();
    }
  });
});

describe("request rates", () => {
  let t: TestPlatform;
  /**
   * The server's clock stands still unless the test moves it, so that what a
   * burst gets does not depend on how fast this machine answers it. Each
   * operation's bucket is first used by its own test, which first sets the
   * clock to the real time (request signatures are checked against it).
   */
  const clock = { at: Date.now(), now: () => new Date(clock.at) };
  const tick = (seconds: number) => (clock.at += seconds * 1000);
  before(async () => {
    t = await startTestPlatform({ clock, rateLimits: {} }); // AWS's default rates
  });
  after(() => t.stop());

  /** Sends `n` requests at once; returns the throttled ones' errors. */
  async function throttledOf(n: number, send: () => Promise<unknown>): Promise<ThrottlingException[]> {
    const results = await Promise.allSettled(Array.from({ length: n }, send));
    return results.filter((r) => r.status === "rejected" && (r.reason as Error).name === "ThrottlingException").map((r) => (r as PromiseRejectedResult).reason as ThrottlingException);
  }

  const documented: [string, number, () => Promise<unknown>][] = [
    ["RunMicrovm", 5, () => t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("no-such-image") }))],
    ["ResumeMicrovm", 5, () => t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: NO_VM }))],
    ["SuspendMicrovm", 2, () => t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: NO_VM }))],
    ["TerminateMicrovm", 10, () => t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: NO_VM }))],
    ["GetMicrovm", 100, () => t.client.send(new GetMicrovmCommand({ microvmIdentifier: NO_VM }))],
    ["CreateMicrovmAuthToken", 50, () => t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: NO_VM, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] }))],
    ["CreateMicrovmShellAuthToken", 5, () => t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: NO_VM, expirationInMinutes: 5 }))],
  ];
  for (const [operation, rate, send] of documented) {
    test(`${operation}: ${rate} per second, burst ${rate}; past it ThrottlingException (429) with Retry-After, naming the operation`, async () => {
      clock.at = Date.now();
      // A burst of `rate` is let through (to a 404: no such resource), the one after it is throttled.
      let throttled = await throttledOf(rate + 1, send);
      assert.equal(throttled.length, 1, `of ${rate + 1} requests at once, ${rate} pass`);
      const err = throttled[0]!;
      assert.equal(err.$metadata.httpStatusCode, 429);
      assert.equal(err.quotaCode, operation);
      assert.equal(err.serviceCode, "lambda");
      assert.equal(err.retryAfterSeconds, 1, "Retry-After: whole seconds until a request is let through");
      assert.match(err.message, new RegExp(`Rate exceeded: ${operation} is limited to ${rate} requests per second per account \\(bursts of ${rate}\\).*--rate-limits ${operation}=`));
      // 1/rate s later, one more request is let through.
      tick(1 / rate);
      assert.equal((await throttledOf(2, send)).length, 1, `1/${rate} s lets one more through`);
      // However long the account was quiet, a burst is at most `rate`.
      tick(3);
      throttled = await throttledOf(rate + 1, send);
      assert.equal(throttled.length, 1, `after 3 quiet seconds, still ${rate} of ${rate + 1} pass`);
    });
  }

  /** lmvm's own choices for the operations whose rate AWS does not document (README "Quotas and rate limits"). */
  const chosen: Record<string, number> = {
    CreateMicrovmImage: 15, UpdateMicrovmImage: 15, DeleteMicrovmImage: 15, UpdateMicrovmImageVersion: 15, DeleteMicrovmImageVersion: 15,
    TagResource: 15, UntagResource: 15,
    GetMicrovmImage: 100, ListMicrovmImages: 100, ListMicrovmImageVersions: 100, GetMicrovmImageVersion: 100, ListMicrovmImageBuilds: 100,
    GetMicrovmImageBuild: 100, ListManagedMicrovmImages: 100, ListManagedMicrovmImageVersions: 100, ListMicrovms: 100, ListTags: 100,
  };
  test("every other operation is throttled at lmvm's rate for it: reads 100 per second, writes 15", async () => {
    assert.deepEqual(Object.keys(chosen).sort(), Object.keys(OPERATIONS).filter((op) => !documented.some(([d]) => d === op)).sort());
    for (const [operation, rate] of Object.entries(chosen)) {
      clock.at = Date.now();
      const op = OPERATIONS[operation as keyof typeof OPERATIONS];
      // Throttling comes before validation, so any signed request to the operation counts.
      const path = op.path.replace(/\{(\w+)\}/g, (_m, name: string) => (name === "microvmIdentifier" ? NO_VM : name === "imageVersion" ? "1.0" : "x"));
      const results = await Promise.all(Array.from({ length: rate + 1 }, () => signedFetch(t.platform.url, t.credentials, op.method, path, op.method === "GET" || op.method === "DELETE" ? undefined : {})));
      const throttled = results.filter((r) => r.status === 429);
      assert.equal(throttled.length, 1, `${operation}: of ${rate + 1} requests at once, ${rate} pass`);
      assert.equal(throttled[0]!.errorType, "ThrottlingException");
      assert.equal(throttled[0]!.body.quotaCode, operation);
    }
  });
});

describe("the operator's quotas and rates", () => {
  const events: Record<string, unknown>[] = [];
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform({ quotas: { images: 1 }, rateLimits: { GetMicrovmImage: 0.2 }, log: (e) => events.push(e) });
  });
  after(() => t.stop());

  test("the start log lists every quota and rate in force, with the operator's values", () => {
    const started = events.find((e) => e.msg === "lmvm server started");
    assert.ok(started);
    assert.deepEqual(started.quotas, { "microvm-memory-mib": 409_600, images: 1, "versions-per-image": 50, "concurrent-builds": 5 });
    const rates = started.rateLimits as Record<string, number>;
    assert.equal(rates.GetMicrovmImage, 0.2);
    assert.equal(rates.RunMicrovm, 5);
    // Every operation of the SDK, and Lambda Core's six network-connector operations.
    assert.equal(Object.keys(rates).length, Object.keys(OPERATIONS).length + 6);
    assert.equal(rates.CreateNetworkConnector, 15);
  });

  test("a quota the operator set is the one enforced and reported", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("only")));
    await quotaError(t.client.send(new CreateMicrovmImageCommand(imageRequest("second"))), "images", /already has 1 MicroVM images.*The quota 'images' is 1\./);
  });

  test("a client with maxAttempts 1 sees ThrottlingException; one with the SDK's standard retry waits as Retry-After says and succeeds", async () => {
    // One request every 5 s, a burst of 1: the second request at once is throttled, with Retry-After: 5.
    await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "only" }));
    const err = (await rejects(t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "only" })), "ThrottlingException", /one request every 5\.0 s/)) as ThrottlingException;
    assert.equal(err.retryAfterSeconds, 5);
    const retrying = new LambdaMicrovmsClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: t.credentials });
    try {
      const got = await retrying.send(new GetMicrovmImageCommand({ imageIdentifier: "only" }));
      assert.equal(got.name, "only");
      assert.ok((got.$metadata.attempts ?? 1) >= 2, `the first attempt was throttled and retried (${got.$metadata.attempts} attempts)`);
    } finally {
      retrying.destroy();
    }
  });
});

describe("lmvm server --quotas and --rate-limits", () => {
  test("bad values are refused before the server starts, naming the key at fault", async () => {
    const dataDir = tempDir();
    const cases: [string[], RegExp][] = [
      [["--quotas", "imgs=3"], /--quotas: unknown quota 'imgs'; the quotas are microvm-memory-mib, images, versions-per-image, concurrent-builds/],
      [["--quotas", "images=lots"], /--quotas: quota 'images' must be a whole number/],
      [["--quotas", "images"], /--quotas: 'images' is not key=value/],
      [["--rate-limits", "RunMicroVM=5"], /--rate-limits: unknown operation 'RunMicroVM'/],
      [["--rate-limits", "RunMicrovm=fast"], /--rate-limits: rate limit 'RunMicrovm' must be a number of requests per second/],
      [["--rate-limits", "RunMicrovm=0"], /--rate-limits: rate limit 'RunMicrovm' must be a number of requests per second, at least/],
    ];
    // At once: each is refused while its flags are read, before anything touches the data directory.
    const results = await Promise.all(cases.map(([args]) => lmvm(["server", "--data-dir", dataDir, "--api-port", "0", "--endpoint-port", "0", "--no-builder", ...args], {}, 120_000)));
    cases.forEach(([args, message], i) => {
      assert.notEqual(results[i]!.code, 0, `${args.join(" ")} was refused`);
      assert.match(results[i]!.stderr, message);
    });
  });

  test("the values given are in force", async () => {
    const dataDir = tempDir();
    const server = await spawnServer(dataDir, { args: ["--quotas", "images=1,concurrent-builds=3", "--rate-limits", "*=1000,GetMicrovm=0.1"] });
    const client = sdkClient(server.url, readCredentials(dataDir));
    try {
      assert.match(server.output(), /"quotas":\{"microvm-memory-mib":409600,"images":1,"versions-per-image":50,"concurrent-builds":3\}/);
      assert.match(server.output(), /"RunMicrovm":1000,.*"GetMicrovm":0.1/);
      await client.send(new CreateMicrovmImageCommand(imageRequest("one")));
      await quotaError(client.send(new CreateMicrovmImageCommand(imageRequest("two"))), "images", /The quota 'images' is 1\./);
      await rejects(client.send(new GetMicrovmCommand({ microvmIdentifier: NO_VM })), "ResourceNotFoundException");
      await rejects(client.send(new GetMicrovmCommand({ microvmIdentifier: NO_VM })), "ThrottlingException", /GetMicrovm is limited to one request every 10\.0 s/);
    } finally {
      client.destroy();
      await server.kill();
    }
  });
});
