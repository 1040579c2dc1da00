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
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CloudWatchLogsClient, DescribeLogGroupsCommand, DescribeLogStreamsCommand, FilterLogEventsCommand, GetLogEventsCommand,
  type FilteredLogEvent, type OutputLogEvent,
} from "@aws-sdk/client-cloudwatch-logs";
import { DEFAULTS } from "../../src/server/index.js";
import { zipExample } from "../support/artifacts.js";
import { rejects } from "../support/assertions.js";
import { eventually, readCredentials, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");
const ROLE = "arn:aws:iam::000000000000:role/MicroVMBuildRole";
const DOMAIN = "microvm.localhost";
const RUN_PAYLOAD = JSON.stringify({ greeting: "hello from examples.test" });

const examples = readdirSync(EXAMPLES).filter((name) => existsSync(join(EXAMPLES, name, "Dockerfile"))).sort();

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
    // Every example is created at once: more builds than the account's default quota of 5 concurrent builds.
    server = await spawnServer(dataDir, { builds: true, args: ["--build-concurrency", String(examples.length), "--quotas", `concurrent-builds=${examples.length}`] });
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
  // The CloudWatch Logs API on the same port, read with AWS's own client: for a
  // Node app (examples/hooks, which logs each hook call) and a Python app
  // (examples/python, which logs each request), a MicroVM with the default
  // logging, one with a logGroup and logStream of its own, and one with logging
  // disabled; and each image's build.
  for (const name of ["hooks", "python"]) {
    test(`examples/${name}: its MicroVMs' and build's output, read with the CloudWatch Logs SDK`, async () => {
      const arn = await built.get(name)!;
      const image = `example-${name}`;
      const logsClient = new CloudWatchLogsClient({ endpoint: server.url, region: DEFAULTS.region, credentials: readCredentials(dataDir), maxAttempts: 1 });
      const group = `/aws/lambda-microvms/${image}`;
      const custom = { logGroup: `/lmvm-test/${name}`, logStream: `app-${name}` };
      const run = (logging?: object) => cli(["run-microvm", "--image-identifier", arn, ...(logging ? ["--logging", JSON.stringify(logging)] : []), "--query", "microvmId", "--output", "text"]);
      // Something in each app's output: the Node app logged its run hook; the Python app logs each request.
      const marker = name === "python" ? "app: " : "hook run: 200";
      const badGroup = await lmvm(["run-microvm", "--image-identifier", arn, "--logging", JSON.stringify({ cloudWatch: { logGroup: "my logs!" } })], env);
      assert.equal(badGroup.code, 254, badGroup.stderr);
      assert.match(badGroup.stderr, /ValidationException.*must be a CloudWatch Logs group name/s);
      const [plain, named, silent] = await Promise.all([run(), run({ cloudWatch: custom }), run({ disabled: {} })]);
      try {
        await Promise.all([until(plain, "RUNNING"), until(named, "RUNNING"), until(silent, "RUNNING")]);
        const tokens = new Map<string, string>();
        for (const id of [plain, named, silent]) {
          const token = await cli(["create-microvm-auth-token", "--microvm-identifier", id, "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080}]', "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"]);
          tokens.set(id, token);
          await getJson(id, token, "/");
        }

        const groups = await logsClient.send(new DescribeLogGroupsCommand({ logGroupNamePrefix: "/aws/lambda-microvms/example-" }));
        const described = groups.logGroups?.find((g) => g.logGroupName === group);
        assert.ok(described && (described.creationTime ?? 0) > 0, `${group} is listed: ${JSON.stringify(groups.logGroups)}`);
        assert.equal(described.logGroupArn, `arn:aws:logs:${DEFAULTS.region}:${DEFAULTS.accountId}:log-group:${group}`);
        assert.equal(described.arn, `${described.logGroupArn}:*`);
        assert.deepEqual((await logsClient.send(new DescribeLogGroupsCommand({ logGroupNamePrefix: custom.logGroup }))).logGroups?.map((g) => g.logGroupName), [custom.logGroup]);

        const streams = (await logsClient.send(new DescribeLogStreamsCommand({ logGroupName: group }))).logStreams?.map((s) => s.logStreamName ?? "") ?? [];
        assert.ok(streams.includes(`microvms/${plain}`), `${group} has microvms/${plain}: ${streams.join(", ")}`);
        assert.ok(!streams.some((s) => s.endsWith(named) || s.endsWith(silent)), `only the default-logging MicroVM is in ${group}: ${streams.join(", ")}`);
        const buildStream = streams.find((s) => s.startsWith("builds/1.0/"));
        assert.ok(buildStream, `${group} has the build's stream builds/1.0/<arch>/<build-id>: ${streams.join(", ")}`);
        const streamsOfAll = (await logsClient.send(new DescribeLogGroupsCommand({}))).logGroups ?? [];
        for (const g of streamsOfAll) {
          const names = (await logsClient.send(new DescribeLogStreamsCommand({ logGroupName: g.logGroupName }))).logStreams?.map((s) => s.logStreamName) ?? [];
          assert.ok(!names.some((n) => n?.includes(silent)), `a MicroVM run with logging disabled has no stream (${g.logGroupName}: ${names.join(", ")})`);
        }
        assert.equal((await lmvm(["logs", "microvm", silent], env)).stdout, "", "and keeps no output");

        // The MicroVM's events, oldest first, each with its time.
        const vmStream = { logGroupName: group, logStreamName: `microvms/${plain}` };
        const events = await eventually(async () => {
          const r = await logsClient.send(new GetLogEventsCommand({ ...vmStream, startFromHead: true }));
          return r.events?.some((e) => e.message?.includes(marker)) ? r.events : undefined;
        }, `${marker} in microvms/${plain}`, 30_000);
        const sorted = (list: { timestamp?: number }[]) => list.every((e, i) => i === 0 || (e.timestamp ?? 0) >= (list[i - 1]!.timestamp ?? 0));
        assert.ok(sorted(events) && events.every((e) => (e.timestamp ?? 0) > Date.now() - 3_600_000 && (e.timestamp ?? 0) <= Date.now()), JSON.stringify(events));
        if (name === "python") assert.ok(events.some((e) => /app: "GET \/ HTTP\/1\.1" 200/.test(e.message ?? "")), JSON.stringify(events));

        // Following as `aws logs tail --follow` does: FilterLogEvents again from the newest
        // timestamp seen, keeping the events whose eventId is new.
        const follow = { logGroupName: group, logStreamNames: [`microvms/${plain}`], interleaved: true };
        const seen = (await logsClient.send(new FilterLogEventsCommand({ ...follow, startTime: Date.now() - 3_600_000 }))).events ?? [];
        const newestSeen = Math.max(...seen.map((e) => e.timestamp!));
        const seenIds = new Set(seen.map((e) => e.eventId));
        // More output: the Python app logs the request; the Node app logs its suspend and resume hooks.
        const more = name === "python" ? 'app: "GET /items' : "hook resume: 200";
        if (name === "python") await call(plain, tokens.get(plain)!, "/items");
        else {
          await cli(["suspend-microvm", "--microvm-identifier", plain]);
          await until(plain, "SUSPENDED");
          await cli(["resume-microvm", "--microvm-identifier", plain]);
          await until(plain, "RUNNING");
        }
        const fresh = await eventually(async () => {
          const r = await logsClient.send(new FilterLogEventsCommand({ ...follow, startTime: newestSeen }));
          const added = (r.events ?? []).filter((e) => !seenIds.has(e.eventId));
          return added.some((e) => e.message?.includes(more)) ? added : undefined;
        }, `${more} to be followed in microvms/${plain}`, 30_000);
        assert.ok(fresh.every((e) => e.timestamp! >= newestSeen), "a follower gets only what is new");

        // The custom group and stream hold the second MicroVM's output.
        const namedStreams = (await logsClient.send(new DescribeLogStreamsCommand({ logGroupIdentifier: custom.logGroup }))).logStreams ?? [];
        assert.deepEqual(namedStreams.map((s) => s.logStreamName), [custom.logStream]);
        assert.ok((namedStreams[0]!.lastEventTimestamp ?? 0) >= (namedStreams[0]!.firstEventTimestamp ?? Infinity));
        await eventually(async () => {
          const r = await logsClient.send(new GetLogEventsCommand({ logGroupName: custom.logGroup, logStreamName: custom.logStream, startFromHead: true }));
          return r.events?.some((e) => e.message?.includes(marker)) ? true : undefined;
        }, `${marker} in ${custom.logGroup}/${custom.logStream}`, 30_000);

        // The build's stream, a page of 3 at a time, forward to the end: the same events as in one go.
        const whole = (await logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: buildStream, startFromHead: true }))).events ?? [];
        assert.ok(whole.some((e) => e.message?.includes("Building the Dockerfile")), JSON.stringify(whole.slice(0, 5)));
        const paged: OutputLogEvent[] = [];
        let token: string | undefined;
        for (let pages = 0; ; pages++) {
          assert.ok(pages <= whole.length, "forward paging ends");
          const page = await logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: buildStream, startFromHead: true, limit: 3, ...(token ? { nextToken: token } : {}) }));
          assert.ok((page.events?.length ?? 0) <= 3);
          paged.push(...(page.events ?? []));
          if (page.nextForwardToken === token) break;
          token = page.nextForwardToken;
        }
        assert.deepEqual(paged, whole);
        // Without startFromHead, the newest events; the backward token pages back.
        const newest = await logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: buildStream, limit: 2 }));
        assert.deepEqual(newest.events, whole.slice(-2));
        const older = await logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: buildStream, limit: 2, nextToken: newest.nextBackwardToken }));
        assert.deepEqual(older.events, whole.slice(-4, -2));

        // Filtering the group: a term, a time window, named streams, and pages that add up.
        const all: FilteredLogEvent[] = [];
        let next: string | undefined;
        do {
          const page = await logsClient.send(new FilterLogEventsCommand({ logGroupName: group, filterPattern: '"==>"', limit: 2, ...(next ? { nextToken: next } : {}) }));
          assert.ok((page.events?.length ?? 0) <= 2);
          all.push(...(page.events ?? []));
          next = page.nextToken;
        } while (next);
        const steps = whole.filter((e) => e.message?.includes("==>"));
        assert.ok(steps.length >= 3);
        assert.deepEqual(all.filter((e) => e.logStreamName === buildStream).map((e) => e.message), steps.map((e) => e.message), "every build step, in order, paged");
        assert.equal(new Set(all.map((e) => e.eventId)).size, all.length, "event ids are unique");
        const inVm = await logsClient.send(new FilterLogEventsCommand({ logGroupName: group, logStreamNames: [`microvms/${plain}`], filterPattern: marker.includes(" ") ? `"${marker}"` : marker }));
        assert.ok(inVm.events?.length && inVm.events.every((e) => e.logStreamName === `microvms/${plain}` && e.message?.includes(marker)), JSON.stringify(inVm.events));
        const excluded = await logsClient.send(new FilterLogEventsCommand({ logGroupName: group, logStreamNames: [buildStream], filterPattern: '"==>" -Building' }));
        assert.deepEqual(excluded.events?.map((e) => e.message), steps.filter((e) => !e.message!.includes("Building")).map((e) => e.message));
        const cut = steps[1]!.timestamp!;
        const later = await logsClient.send(new FilterLogEventsCommand({ logGroupName: group, logStreamNames: [buildStream], startTime: cut }));
        assert.ok(later.events?.length && later.events.every((e) => e.timestamp! >= cut), JSON.stringify(later.events?.slice(0, 3)));
        const earlier = await logsClient.send(new FilterLogEventsCommand({ logGroupName: group, logStreamNames: [buildStream], endTime: cut }));
        assert.ok(earlier.events!.every((e) => e.timestamp! < cut));
        assert.equal(earlier.events!.length + later.events!.length, whole.length, "startTime and endTime split the stream");

        // Errors in CloudWatch Logs' own shapes.
        await rejects(logsClient.send(new GetLogEventsCommand({ logGroupName: "/aws/lambda-microvms/no-such-image", logStreamName: "x" })), "ResourceNotFoundException", /log group does not exist/);
        await rejects(logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: "microvms/microvm-00000000000000000" })), "ResourceNotFoundException", /log stream does not exist/);
        await rejects(logsClient.send(new FilterLogEventsCommand({ logGroupName: group, filterPattern: '{ $.level = "ERROR" }' })), "InvalidParameterException", /JSON filter patterns/);
        await rejects(logsClient.send(new FilterLogEventsCommand({ logGroupName: group, limit: 0 })), "InvalidParameterException", /at 'limit' failed to satisfy constraint/);
        await rejects(logsClient.send(new FilterLogEventsCommand({ logGroupName: group, nextToken: "garbage" })), "InvalidParameterException", /nextToken is invalid/);
      } finally {
        await Promise.all([plain, named, silent].map(async (id) => {
          await cli(["terminate-microvm", "--microvm-identifier", id]);
          await until(id, "TERMINATED");
        }));
      }
      // A terminated MicroVM's log stays readable.
      const after = await logsClient.send(new GetLogEventsCommand({ logGroupName: group, logStreamName: `microvms/${plain}`, startFromHead: true }));
      assert.ok(after.events?.some((e) => e.message?.includes(marker)));
      if (name === "hooks") assert.ok(after.events?.some((e) => e.message?.includes("hook terminate: 200")), JSON.stringify(after.events));
    });
  }

  test("an image updated with logging disabled builds without keeping its build's output", async () => {
    await built.get("busybox")!;
    const image = "example-busybox";
    // UpdateMicrovmImage is PUT-style: base image, role and artifact again, now with logging disabled.
    await cli(["update-microvm-image", "--image-identifier", image, "--build-role-arn", ROLE, "--code-artifact", JSON.stringify({ uri: `file://${join(dataDir, "busybox.zip")}` }), ...imageFlags("busybox"), "--logging", JSON.stringify({ disabled: {} })]);
    const state = await eventually(async () => {
      const s = await cli(["get-microvm-image", "--image-identifier", image, "--query", "state", "--output", "text"]);
      return s === "UPDATED" || s === "UPDATE_FAILED" ? s : undefined;
    }, "example-busybox 2.0 to build", 600_000);
    assert.equal(state, "UPDATED");
    assert.equal(await cli(["logs", "build", image, "2.0"]), "", "no build output was kept");
    const logsClient = new CloudWatchLogsClient({ endpoint: server.url, region: DEFAULTS.region, credentials: readCredentials(dataDir), maxAttempts: 1 });
    const streams = (await logsClient.send(new DescribeLogStreamsCommand({ logGroupName: `/aws/lambda-microvms/${image}` }))).logStreams?.map((st) => st.logStreamName) ?? [];
    assert.ok(streams.some((n) => n?.startsWith("builds/1.0/")), `version 1.0's build is still there: ${streams.join(", ")}`);
    assert.ok(!streams.some((n) => n?.startsWith("builds/2.0/")), `version 2.0's build has no stream: ${streams.join(", ")}`);
  });
});
