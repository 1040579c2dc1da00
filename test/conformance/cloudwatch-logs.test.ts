// The CloudWatch Logs API on lmvm's API port, through AWS's own client: how
// groups and streams are named and listed, paged and ordered, how a shared
// stream merges its MicroVMs' lines, and CloudWatch Logs' own errors. The
// sandbox runtime is scripted, so each MicroVM's output is appended here as
// runsc appends it; test/e2e/examples.test.ts reads real apps' output.

import assert from "node:assert/strict";
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CloudWatchLogsClient, DescribeLogGroupsCommand, DescribeLogStreamsCommand, FilterLogEventsCommand, GetLogEventsCommand, PutLogEventsCommand,
} from "@aws-sdk/client-cloudwatch-logs";
import { CreateMicrovmImageCommand, GetMicrovmImageCommand, RunMicrovmCommand, type Logging } from "@aws-sdk/client-lambda-microvms";
import { DEFAULTS, paths } from "../../src/server/index.js";
import { rejects } from "../support/assertions.js";
import { until } from "../support/deadline.js";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const ACCOUNT = DEFAULTS.accountId;
const arnOf = (name: string) => `arn:aws:lambda:us-east-1:${ACCOUNT}:microvm-image:${name}`;

describe("the CloudWatch Logs API", () => {
  let t: TestPlatform;
  let logs: CloudWatchLogsClient;
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });
  const runtime = new ScriptedRuntime();

  before(async () => {
    // Many MicroVMs are run back to back to fill streams: rates above AWS's RunMicrovm 5 per second.
    t = await startTestPlatform({ builder, runtime, rateLimits: { "*": 10_000 } });
    logs = new CloudWatchLogsClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: t.credentials, maxAttempts: 1 });
    for (const [name, logging] of [["plain", undefined], ["grouped", { cloudWatch: { logGroup: "/team/grouped" } }], ["quiet", { disabled: {} }]] as [string, Logging | undefined][]) {
      await t.client.send(new CreateMicrovmImageCommand(imageRequest(name, logging ? { logging } : {})));
      await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }))).state === "CREATED" ? true : undefined), `${name} built`);
    }
  });
  after(async () => {
    logs?.destroy();
    await t?.stop();
  });

  /**
   * Makes lmvm stamp what a stream's files have now (a read stamps them, as the
   * server's sweep does each second), then lets the clock move on, so what is
   * written next is later.
   */
  const stamped = async (logGroupName: string, logStreamName: string) => {
    await logs.send(new GetLogEventsCommand({ logGroupName, logStreamName, limit: 1 }));
    const now = Date.now();
    await until(1_000, "the clock to move on", () => Date.now() > now + 1);
  };

  /** Runs a MicroVM and writes its app's output as runsc would. */
  const run = async (image: string, logging?: Logging, lines: string[] = []) => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: arnOf(image), ...(logging ? { logging } : {}) }));
    if (lines.length) appendFileSync(join(paths(t.dataDir).microvmLogs, `${microvmId}.log`), lines.map((l) => `${l}\n`).join(""));
    return microvmId!;
  };

  test("groups and streams are named as the service names them, the image's logging and RunMicrovm's", async () => {
    const a = await run("plain", undefined, ["a one", "a two"]);
    const b = await run("grouped", undefined, ["b one"]);
    const c = await run("grouped", { cloudWatch: { logStream: "mine" } }, ["c one"]);
    const d = await run("quiet", { cloudWatch: {} }, ["d one"]); // RunMicrovm's logging replaces the image's
    const groups = (await logs.send(new DescribeLogGroupsCommand({}))).logGroups ?? [];
    assert.deepEqual(groups.map((g) => g.logGroupName), ["/aws/lambda-microvms/plain", "/aws/lambda-microvms/quiet", "/team/grouped"], "a stream named at RunMicrovm stays in its image's group");
    const g = groups[0]!;
    assert.equal(g.logGroupArn, `arn:aws:logs:us-east-1:${ACCOUNT}:log-group:/aws/lambda-microvms/plain`);
    assert.equal(g.arn, `${g.logGroupArn}:*`);
    assert.equal(g.storedBytes, "a one\na two\n".length);
    const streams = async (group: string) => ((await logs.send(new DescribeLogStreamsCommand({ logGroupName: group }))).logStreams ?? []).map((s) => s.logStreamName);
    assert.deepEqual(await streams("/aws/lambda-microvms/plain"), [`microvms/${a}`]);
    assert.deepEqual(await streams("/team/grouped"), [`microvms/${b}`, "mine"]);
    assert.deepEqual(await streams("/aws/lambda-microvms/quiet"), [`microvms/${d}`]);
    const events = await logs.send(new GetLogEventsCommand({ logGroupIdentifier: `arn:aws:logs:us-east-1:${ACCOUNT}:log-group:/team/grouped:*`, logStreamName: "mine", startFromHead: true }));
    assert.deepEqual(events.events?.map((e) => e.message), ["c one"]);
    assert.ok(!(await streams("/team/grouped")).some((n) => n?.includes(c)), "a MicroVM given its own stream is not also in a default one");
  });

  test("MicroVMs run with the same logStream share it, their lines merged by time", async () => {
    const shared = { cloudWatch: { logGroup: "/team/shared", logStream: "all" } };
    const first = await run("plain", shared, ["first 1"]);
    await stamped("/team/shared", "all");
    await run("plain", shared, ["second 1"]);
    await stamped("/team/shared", "all");
    appendFileSync(join(paths(t.dataDir).microvmLogs, `${first}.log`), "first 2\n");
    const r = await logs.send(new GetLogEventsCommand({ logGroupName: "/team/shared", logStreamName: "all", startFromHead: true }));
    assert.deepEqual(r.events?.map((e) => e.message), ["first 1", "second 1", "first 2"]);
    const f = await logs.send(new FilterLogEventsCommand({ logGroupName: "/team/shared", filterPattern: "first" }));
    assert.deepEqual(f.events?.map((e) => `${e.logStreamName}:${e.message}`), ["all:first 1", "all:first 2"]);
  });

  test("streams and groups page and order as DescribeLogStreams and DescribeLogGroups do", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await run("plain", { cloudWatch: { logGroup: "/team/paged" } }, [`line ${i}`]));
      await stamped("/team/paged", `microvms/${ids[i]}`); // distinct last-event times
    }
    const all: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await logs.send(new DescribeLogStreamsCommand({ logGroupName: "/team/paged", limit: 2, ...(nextToken ? { nextToken } : {}) }));
      assert.ok((page.logStreams?.length ?? 0) <= 2);
      all.push(...(page.logStreams ?? []).map((s) => s.logStreamName!));
      nextToken = page.nextToken;
    } while (nextToken);
    assert.deepEqual(all, ids.map((id) => `microvms/${id}`).sort());
    const newest = await logs.send(new DescribeLogStreamsCommand({ logGroupName: "/team/paged", orderBy: "LastEventTime", descending: true, limit: 2 }));
    assert.deepEqual(newest.logStreams?.map((s) => s.logStreamName), [`microvms/${ids[4]}`, `microvms/${ids[3]}`]);
    const next = await logs.send(new DescribeLogStreamsCommand({ logGroupName: "/team/paged", orderBy: "LastEventTime", descending: true, limit: 2, nextToken: newest.nextToken! }));
    assert.deepEqual(next.logStreams?.map((s) => s.logStreamName), [`microvms/${ids[2]}`, `microvms/${ids[1]}`]);
    const s = newest.logStreams![0]!;
    assert.ok(s.firstEventTimestamp! <= s.lastEventTimestamp! && s.creationTime! <= s.lastEventTimestamp! + 1000, JSON.stringify(s));

    const groupPages: string[] = [];
    let token: string | undefined;
    do {
      const page = await logs.send(new DescribeLogGroupsCommand({ limit: 1, ...(token ? { nextToken: token } : {}) }));
      groupPages.push(...(page.logGroups ?? []).map((g) => g.logGroupName!));
      token = page.nextToken;
    } while (token);
    assert.deepEqual(groupPages, [...new Set(groupPages)].sort());
    assert.ok(groupPages.includes("/team/paged"));
    assert.deepEqual((await logs.send(new DescribeLogGroupsCommand({ logGroupNamePattern: "PAGED" }))).logGroups?.map((g) => g.logGroupName), ["/team/paged"]);
    const byStream = await logs.send(new FilterLogEventsCommand({ logGroupName: "/team/paged", logStreamNamePrefix: `microvms/${ids[0]}` }));
    assert.deepEqual(byStream.events?.map((e) => e.message), ["line 0"]);
  });

  test("errors come in CloudWatch Logs' shapes and say what to fix", async () => {
    await rejects(logs.send(new DescribeLogStreamsCommand({ logGroupName: "/nope" })), "ResourceNotFoundException", /The specified log group does not exist/);
    await rejects(logs.send(new DescribeLogStreamsCommand({})), "InvalidParameterException", /Either logGroupName or logGroupIdentifier/);
    await rejects(logs.send(new DescribeLogStreamsCommand({ logGroupName: "/team/paged", logGroupIdentifier: "/team/paged" })), "InvalidParameterException", /mutually exclusive/);
    await rejects(logs.send(new DescribeLogStreamsCommand({ logGroupName: "/team/paged", orderBy: "LastEventTime", logStreamNamePrefix: "x" })), "InvalidParameterException", /Cannot order by LastEventTime with a logStreamNamePrefix/);
    await rejects(logs.send(new DescribeLogGroupsCommand({ limit: 51 })), "InvalidParameterException", /'limit' failed to satisfy constraint: Member must have value less than or equal to 50/);
    await rejects(logs.send(new FilterLogEventsCommand({ logGroupName: "/team/paged", startTime: 2000, endTime: 1000 })), "InvalidParameterException", /endTime .* is before startTime/);
    await rejects(logs.send(new FilterLogEventsCommand({ logGroupName: "/team/paged", logStreamNames: ["a"], logStreamNamePrefix: "a" })), "InvalidParameterException", /mutually exclusive/);
    await rejects(logs.send(new GetLogEventsCommand({ logGroupName: "/team/paged", logStreamName: "x", nextToken: "f/garbage" })), "InvalidParameterException", /nextToken is invalid/);
    await rejects(logs.send(new GetLogEventsCommand({ logGroupName: "/team/paged", logStreamName: "x", unmask: true })), "InvalidParameterException", /nothing to unmask/);
    await rejects(
      logs.send(new PutLogEventsCommand({ logGroupName: "/team/paged", logStreamName: "x", logEvents: [{ timestamp: Date.now(), message: "m" }] })),
      "UnknownOperationException",
      /PutLogEvents is not one of them/,
    );
    // Signed for the Lambda MicroVMs API instead of `logs`: refused like AWS refuses it.
    const url = new URL(t.platform.url);
    const headers = { host: url.host, "x-amz-target": "Logs_20140328.DescribeLogGroups", "content-type": "application/x-amz-json-1.1" };
    const signer = new SignatureV4({ credentials: t.credentials, region: DEFAULTS.region, service: "lambda", sha256: Hash.bind(null, "sha256") });
    const signed = await signer.sign(new HttpRequest({ method: "POST", protocol: "http:", hostname: url.hostname, port: Number(url.port), path: "/", headers, body: "{}" }));
    const wrong = await fetch(`${t.platform.url}/`, { method: "POST", headers: signed.headers as Record<string, string>, body: "{}" });
    assert.equal(wrong.status, 403);
    const body = (await wrong.json()) as { __type: string; message: string };
    assert.equal(body.__type, "InvalidSignatureException");
    assert.match(body.message, /scoped to correct service: 'logs'/);
  });
});
