// Every app under examples/, as a user runs it: zipped to a file:// artifact,
// built to a snapshot with the real CLI against a real `lmvm server`, run,
// called through its HTTPS endpoint with a token, suspended, resumed (its
// request counter goes on where it was) and terminated. The examples build at
// once (--build-concurrency), on the base-image cache the other tests share.
//
// What an example provides (a new folder under examples/ is picked up as is):
// - a Dockerfile at its root;
// - GET / on port 8080 answering a JSON object that counts requests, in a
//   field named `requests` (or any number that goes up by one per request);
// - optionally microvm-image.json: CreateMicrovmImage input beyond name, role
//   and artifact (hooks, baseImageArn), passed with --cli-input-json. Without
//   it the base image follows the Dockerfile's FROM and no hook is enabled.
// examples/hooks shows each of its six hooks: GET /hooks (ready, run, suspend,
// resume), the build (validate, on a throwaway restore of the snapshot, must
// answer 200 for the build to succeed) and the MicroVM's log (terminate).
// examples/aws-contract-node and examples/aws-contract-python are written only
// from AWS's documented contract; their GET /hooks also says where each hook
// call came from (127.0.0.1), its Host header and body (/run's JSON), and the
// reserved AWS_* variables the app and its build's RUN step saw. A /run that
// answers 400, or too late, ends the MicroVM with the service's reason.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { makeZip, type ZipEntry } from "../support/artifacts.js";
import { eventually, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
const DOMAIN = "microvm.localhost";
const RUN_PAYLOAD = JSON.stringify({ greeting: "hello from examples.test" });

const examples = readdirSync(EXAMPLES).filter((name) => existsSync(join(EXAMPLES, name, "Dockerfile"))).sort();

function zipExample(name: string): Buffer {
  const root = join(EXAMPLES, name);
  const walk = (dir: string): ZipEntry[] =>
    readdirSync(dir).flatMap((f) => {
      const path = join(dir, f);
      return statSync(path).isDirectory() ? walk(path) : [{ name: relative(root, path), content: readFileSync(path, "utf8") }];
    });
  return makeZip(walk(root));
}

/** CreateMicrovmImage flags for an example: its microvm-image.json, else the base its Dockerfile names. */
function imageFlags(name: string): string[] {
  const config = join(EXAMPLES, name, "microvm-image.json");
  if (existsSync(config)) return ["--cli-input-json", `file://${config}`];
  const from = /^FROM\s+lmvm\/([a-z0-9]+)/im.exec(readFileSync(join(EXAMPLES, name, "Dockerfile"), "utf8"))?.[1];
  assert.ok(from, `examples/${name}/Dockerfile: FROM names no lmvm/ base image, and there is no microvm-image.json giving baseImageArn`);
  return ["--base-image-arn", `arn:aws:lambda:us-east-1:aws:microvm-image:${from}`];
}

function hasHooks(name: string): boolean {
  const config = join(EXAMPLES, name, "microvm-image.json");
  return existsSync(config) && JSON.parse(readFileSync(config, "utf8")).hooks?.microvmHooks?.run === "ENABLED";
}

describe("every example builds to a snapshot and runs, suspends, resumes and terminates", { timeout: 1_500_000 }, () => {
  let dataDir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  let ca: Buffer;
  const built = new Map<string, Promise<string>>();

  const cli = async (args: string[]): Promise<string> => {
    const r = await lmvm(args, env);
    assert.equal(r.code, 0, `lmvm ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    return r.stdout.trim();
  };
  const stateOf = (id: string) => cli(["get-microvm", "--microvm-identifier", id, "--query", "state", "--output", "text"]);
  const until = (id: string, want: string) =>
    eventually(async () => {
      const s = await stateOf(id);
      assert.ok(!["TERMINATED", "FAILED"].includes(s) || s === want, `${id} went ${s} while waiting for ${want}`);
      return s === want ? s : undefined;
    }, `${id} to be ${want}`, 180_000);

  /** GET through the endpoint proxy, resolved to loopback as curl --resolve does. */
  const call = (id: string, token: string, path: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = request({
        host: "127.0.0.1", port: server.endpointPort, path, ca, servername: `${id}.${DOMAIN}`, agent: false,
        headers: { host: `${id}.${DOMAIN}:${server.endpointPort}`, "x-aws-proxy-auth": token },
      }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.setTimeout(60_000, () => req.destroy(new Error(`GET ${path} on ${id}: no answer within 60 s`)));
      req.on("error", reject);
      req.end();
    });
  const getJson = async (id: string, token: string, path: string): Promise<Record<string, unknown>> => {
    const r = await call(id, token, path);
    assert.equal(r.status, 200, `GET ${path} on ${id}: ${r.status} ${r.body}`);
    try {
      return JSON.parse(r.body) as Record<string, unknown>;
    } catch {
      throw new assert.AssertionError({ message: `GET ${path} on ${id} must answer JSON; got ${JSON.stringify(r.body)}` });
    }
  };

  /** What an app written from AWS's documentation saw: hooks from 127.0.0.1, /run's JSON body, the reserved variables. */
  const checkContract = async (id: string, token: string, arn: string, image: string) => {
    type Call = { hook: string; from: string; host: string; body: string };
    const seen = (await getJson(id, token, "/hooks")) as { calls: Call[]; env: Record<string, string>; buildEnv: Record<string, string> };
    for (const c of seen.calls) {
      assert.equal(c.from, "127.0.0.1", `/${c.hook} came from ${c.from}`);
      assert.equal(c.host, "localhost:9000", `/${c.hook} had Host ${c.host}`);
      if (c.hook !== "run") assert.equal(c.body, "", `/${c.hook} has no body`);
    }
    const run = JSON.parse(seen.calls.find((c) => c.hook === "run")!.body) as unknown;
    assert.deepEqual(run, { microvmId: id, runHookPayload: RUN_PAYLOAD }, "/run's body is {microvmId, runHookPayload}, the payload a string");
    const reserved = { AWS_REGION: arn.split(":")[3], AWS_LAMBDA_MICROVM_IMAGE_NAME: image, AWS_LAMBDA_MICROVM_IMAGE_ARN: arn, AWS_LAMBDA_MICROVM_IMAGE_VERSION: "1.0" };
    assert.equal(reserved.AWS_REGION, "us-east-1", "the server's region");
    assert.deepEqual(seen.env, reserved, "the app's environment has the reserved variables");
    assert.deepEqual(seen.buildEnv, reserved, "the build's RUN steps have the reserved variables");
  };

  before(async () => {
    assert.ok(examples.length >= 3, `examples/ holds ${examples.join(", ")}`);
    dataDir = tempDir("lmvm-examples-");
    server = await spawnServer(dataDir, { builds: true, args: ["--build-concurrency", String(examples.length)] });
    env = { LMVM_DATA_DIR: dataDir };
    ca = readFileSync(join(dataDir, "tls", "ca.pem"));
    // Every build starts now and runs at once; each test waits for its own.
    for (const name of examples) {
      const zip = join(dataDir, `${name}.zip`);
      writeFileSync(zip, zipExample(name));
      const image = `example-${name}`;
      const created = cli(["create-microvm-image", "--name", image, "--build-role-arn", ROLE, "--code-artifact", JSON.stringify({ uri: `file://${zip}` }), ...imageFlags(name), "--query", "imageArn", "--output", "text"]);
      built.set(name, created.then(async (arn) => {
        const state = await eventually(async () => {
          const s = await cli(["get-microvm-image", "--image-identifier", image, "--query", "state", "--output", "text"]);
          return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
        }, `examples/${name} to build`, 1_200_000);
        if (state !== "CREATED") {
          const log = await lmvm(["logs", "build", image, "1.0"], env);
          assert.fail(`examples/${name} did not build (${state}):\n${log.stdout}${log.stderr}`);
        }
        return arn;
      }));
      built.get(name)!.catch(() => undefined); // reported by the example's own test
    }
  });
  after(async () => {
    await server?.kill();
    if (dataDir) {
      await freeSandboxes(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  for (const name of examples) {
    test(`examples/${name}: built to a snapshot, it serves, keeps its state across suspend and resume, and terminates`, async () => {
      const arn = await built.get(name)!;
      const hooks = hasHooks(name);
      const id = await cli(["run-microvm", "--image-identifier", arn, ...(hooks ? ["--run-hook-payload", RUN_PAYLOAD] : []), "--query", "microvmId", "--output", "text"]);
      await until(id, "RUNNING");
      const token = await cli(["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080}]', "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"]);

      const first = await getJson(id, token, "/");
      const second = await getJson(id, token, "/");
      const counted = (a: Record<string, unknown>, b: Record<string, unknown>) =>
        Object.keys(b).filter((k) => typeof a[k] === "number" && b[k] === (a[k] as number) + 1);
      const counters = "requests" in second ? ["requests"] : counted(first, second);
      assert.deepEqual(counted(first, second).filter((k) => counters.includes(k)), counters,
        `examples/${name}: GET / must answer a JSON object whose "requests" goes up by one per request; got ${JSON.stringify(first)} then ${JSON.stringify(second)}`);
      assert.ok(counters.length, `examples/${name}: no request counter in ${JSON.stringify(second)}`);

      await cli(["suspend-microvm", "--microvm-identifier", id]);
      await until(id, "SUSPENDED");
      await cli(["resume-microvm", "--microvm-identifier", id]);
      await until(id, "RUNNING");
      const third = await getJson(id, token, "/");
      assert.deepEqual(counted(second, third).filter((k) => counters.includes(k)), counters,
        `examples/${name}: after the resume the counter goes on from ${JSON.stringify(second)}; got ${JSON.stringify(third)}`);

      if (hooks) {
        const { calls } = (await getJson(id, token, "/hooks")) as { calls: { hook: string; payload?: string; microvmId?: string }[] };
        // ready ran before the snapshot, so it is in every MicroVM's memory; validate ran on a
        // throwaway restore of the snapshot, and the build succeeded only if it answered 200.
        assert.deepEqual(calls.map((c) => c.hook), ["ready", "run", "suspend", "resume"]);
        const run = calls.find((c) => c.hook === "run")!;
        assert.equal(run.payload, RUN_PAYLOAD);
        assert.equal(run.microvmId, id);
        const buildLog = await cli(["logs", "build", `example-${name}`, "1.0"]);
        assert.match(buildLog, /Calling \/validate on port 9000/);
      }
      if (name.startsWith("aws-contract-")) await checkContract(id, token, arn, `example-${name}`);

      await cli(["terminate-microvm", "--microvm-identifier", id]);
      await until(id, "TERMINATED");
      if (hooks) assert.match(await cli(["logs", "microvm", id]), /hook terminate: 200/);
    });
  }

  for (const name of examples.filter((n) => n.startsWith("aws-contract-"))) {
    for (const [payload, reason] of [
      [{ runStatus: 400 }, "Run lifecycle hook returned HTTP status 400. Please check your hook endpoint and application logs for more details."],
      [{ runDelaySeconds: 8 }, "Run lifecycle hook timed out after 5 seconds. Please check your hook endpoint and application logs for more details."],
    ] as const) {
      test(`examples/${name}: a /run that ${"runStatus" in payload ? "answers 400" : "answers after its 5 s timeout"} ends the MicroVM, TERMINATED with the service's reason and its sandbox freed`, async () => {
        const arn = await built.get(name)!;
        const id = await cli(["run-microvm", "--image-identifier", arn, "--run-hook-payload", JSON.stringify(payload), "--query", "microvmId", "--output", "text"]);
        await until(id, "TERMINATED");
        assert.equal(await cli(["get-microvm", "--microvm-identifier", id, "--query", "stateReason", "--output", "text"]), reason);
        assert.ok(!existsSync(join(dataDir, "microvms", id)), "the MicroVM's sandbox directory is gone");
      });
    }
  }
});
