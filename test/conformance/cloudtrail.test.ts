// The audit trail through the official @aws-sdk/client-cloudtrail: every API
// call (MicroVMs, network connectors, CloudWatch Logs, IAM, STS, CloudTrail)
// appears in LookupEvents with its principal, operation, resources, outcome
// and error code; secrets appear nowhere (trail, database, server log,
// /metrics); LookupEvents pages, filters and refuses bad input as CloudTrail.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CloudTrailClient, LookupEventsCommand, paginateLookupEvents, type Event, type LookupAttribute, type LookupEventsCommandInput } from "@aws-sdk/client-cloudtrail";
import { CloudWatchLogsClient, DescribeLogGroupsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { CreateRoleCommand, ListUsersCommand, PutRolePolicyCommand, type IAMClient } from "@aws-sdk/client-iam";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmImageCommand,
  ListMicrovmImagesCommand, RunMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import { AssumeRoleCommand, GetCallerIdentityCommand } from "@aws-sdk/client-sts";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { rejects } from "../support/assertions.js";
import { ACCOUNT, allow, iamClient, imageArnOf, policy, roleArn, stsClient, userArn, userWithPolicy, type Keys } from "../support/iam.js";
import { eventually, imageRequest, sdkClient, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";
import { storedText } from "../support/postgres.js";
import { signedFetch } from "../support/signed-fetch.js";
import { DEFAULTS } from "../../src/server/index.js";
import type { AuditEvent } from "../../src/core/audit.js";

const HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS";
const ENV_SECRET = "env-value-7f3a9c21-do-not-keep";
const HOOK_SECRET = "hook-payload-51be0d44-do-not-keep";
const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";


const recordOf = (e: Event) => JSON.parse(e.CloudTrailEvent!) as AuditEvent;

describe("audit trail (CloudTrail LookupEvents)", () => {
  let t: TestPlatform;
  let ct: CloudTrailClient;
  let iam: IAMClient;
  const serverLog: string[] = [];
  const builder = new ScriptedBuilder();
  const runtime = new ScriptedRuntime();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });

  before(async () => {
    t = await startTestPlatform({ builder, runtime, log: (e) => serverLog.push(JSON.stringify(e)) });
    ct = new CloudTrailClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: t.credentials, maxAttempts: 1 });
    iam = iamClient(t.platform.url, t.credentials);
  });
  after(async () => {
    ct.destroy();
    iam.destroy();
    await t.stop();
  });

  /** Every event matching, newest first, through the SDK's paginator. */
  async function lookup(attribute?: LookupAttribute, extra: { StartTime?: Date; EndTime?: Date } = {}, client = ct): Promise<Event[]> {
    const events: Event[] = [];
    for await (const page of paginateLookupEvents({ client }, { ...(attribute ? { LookupAttributes: [attribute] } : {}), ...extra })) events.push(...(page.Events ?? []));
    return events;
  }
  /** The event of the call whose answer carried `requestId`. */
  async function eventOf(eventName: string, requestId: string | undefined): Promise<Event> {
    assert.ok(requestId, "the answer has a request id");
    const found = (await lookup({ AttributeKey: "EventName", AttributeValue: eventName })).filter((e) => recordOf(e).requestID === requestId);
    assert.equal(found.length, 1, `one ${eventName} event for request ${requestId}`);
    return found[0]!;
  }
  const requestIdOf = (err: unknown) => (err as { $metadata?: { requestId?: string } }).$metadata?.requestId;

  test("a MicroVMs API call is recorded with its caller, operation, resources, parameters and answer", async () => {
    const r = await t.client.send(new CreateMicrovmImageCommand(imageRequest("audited", { environmentVariables: { API_KEY: ENV_SECRET, MODE: "prod" } })));
    const event = await eventOf("CreateMicrovmImage", r.$metadata.requestId);
    const rec = recordOf(event);
    assert.equal(event.EventId, rec.eventID);
    assert.equal(event.EventSource, "lambda.amazonaws.com");
    assert.equal(event.ReadOnly, "false");
    assert.equal(event.Username, "root");
    assert.equal(event.AccessKeyId, t.credentials.accessKeyId);
    assert.equal(event.EventTime?.getTime(), Date.parse(rec.eventTime));
    // The image, and the build role it is passed (iam:PassRole is checked on it).
    assert.deepEqual(event.Resources, [{ ResourceType: "AWS::Lambda::MicrovmImage", ResourceName: "audited" }, { ResourceType: "AWS::IAM::Role", ResourceName: "MicroVMBuildRole" }]);

    assert.equal(rec.eventVersion, "1.09");
    assert.deepEqual(rec.userIdentity, { type: "Root", principalId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:root`, accountId: ACCOUNT, accessKeyId: t.credentials.accessKeyId });
    assert.match(rec.eventTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(rec.eventName, "CreateMicrovmImage");
    assert.equal(rec.awsRegion, DEFAULTS.region);
    assert.equal(rec.sourceIPAddress, "127.0.0.1");
    assert.match(rec.userAgent, /aws-sdk-js/);
    assert.equal(rec.errorCode, undefined);
    assert.equal(rec.requestParameters?.name, "audited");
    assert.deepEqual(rec.requestParameters?.environmentVariables, { API_KEY: HIDDEN, MODE: HIDDEN }, "variable names are kept, values never");
    assert.equal(rec.responseElements?.imageArn, imageArnOf("audited"));
    assert.equal(rec.responseElements?.state, "CREATING");
    assert.equal(rec.readOnly, false);
    assert.deepEqual(rec.resources, [
      { ARN: imageArnOf("audited"), accountId: ACCOUNT, type: "AWS::Lambda::MicrovmImage" },
      { ARN: roleArn("MicroVMBuildRole"), accountId: ACCOUNT, type: "AWS::IAM::Role" },
    ]);
    assert.equal(rec.eventType, "AwsApiCall");
    assert.equal(rec.managementEvent, true);
    assert.equal(rec.recipientAccountId, ACCOUNT);
  });

  test("a failed call is recorded with its error code and message, and no answer", async () => {
    const err = await rejects(t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "no-such-image" })), "ResourceNotFoundException");
    const rec = recordOf(await eventOf("GetMicrovmImage", requestIdOf(err)));
    assert.equal(rec.errorCode, "ResourceNotFoundException");
    assert.equal(rec.errorMessage, err.message);
    assert.equal(rec.responseElements, null);
    assert.equal(rec.readOnly, true);
    assert.deepEqual(rec.requestParameters, { imageIdentifier: "no-such-image" });
  });

  test("IAM users and role sessions are recorded as such; a refusal is recorded with AccessDeniedException", async () => {
    const carol = await userWithPolicy(iam, "carol", policy(allow(["lambda:ListMicrovmImages", "sts:AssumeRole"])));
    const asCarol = sdkClient(t.platform.url, carol);
    const listed = await asCarol.send(new ListMicrovmImagesCommand({}));
    const denied = await rejects(asCarol.send(new GetMicrovmImageCommand({ imageIdentifier: "audited" })), "AccessDeniedException", /User: arn:aws:iam::000000000000:user\/carol is not authorized to perform: lambda:GetMicrovmImage/);
    asCarol.destroy();

    const mine = await lookup({ AttributeKey: "Username", AttributeValue: "carol" });
    const ok = mine.find((e) => recordOf(e).requestID === listed.$metadata.requestId)!;
    const refused = mine.find((e) => recordOf(e).requestID === requestIdOf(denied))!;
    assert.ok(ok && refused, "both of carol's calls are found by her user name");
    const id = recordOf(ok).userIdentity;
    assert.equal(id.type, "IAMUser");
    assert.equal(id.userName, "carol");
    assert.equal(id.arn, userArn("carol"));
    assert.equal(id.accessKeyId, carol.accessKeyId);
    assert.match(id.principalId!, /^AIDA[A-Z0-9]{17}$/);
    assert.equal(recordOf(ok).errorCode, undefined);
    assert.equal(recordOf(refused).errorCode, "AccessDeniedException");
    assert.equal(recordOf(refused).errorMessage, denied.message);
    assert.deepEqual(refused.Resources, [{ ResourceType: "AWS::Lambda::MicrovmImage", ResourceName: "audited" }]);

    await iam.send(new CreateRoleCommand({ RoleName: "auditor", AssumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { AWS: userArn("carol") }, Action: "sts:AssumeRole" }) }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "auditor", PolicyName: "read", PolicyDocument: policy(allow("lambda:ListMicrovmImages")) }));
    const sts = stsClient(t.platform.url, carol);
    const assumed = await sts.send(new AssumeRoleCommand({ RoleArn: roleArn("auditor"), RoleSessionName: "nightly-check" }));
    sts.destroy();
    const session: Keys = { accessKeyId: assumed.Credentials!.AccessKeyId!, secretAccessKey: assumed.Credentials!.SecretAccessKey!, sessionToken: assumed.Credentials!.SessionToken! };
    const asRole = sdkClient(t.platform.url, session);
    const byRole = await asRole.send(new ListMicrovmImagesCommand({}));
    asRole.destroy();

    const assumeEvent = recordOf(await eventOf("AssumeRole", assumed.$metadata.requestId));
    assert.equal(assumeEvent.eventSource, "sts.amazonaws.com");
    assert.equal(assumeEvent.userIdentity.arn, userArn("carol"));
    assert.deepEqual(assumeEvent.resources?.map((r) => [r.ARN, r.type]), [[roleArn("auditor"), "AWS::IAM::Role"]]);
    const roleEvent = await eventOf("ListMicrovmImages", byRole.$metadata.requestId);
    assert.equal(roleEvent.Username, "nightly-check");
    assert.equal(roleEvent.AccessKeyId, session.accessKeyId);
    const rid = recordOf(roleEvent).userIdentity;
    assert.equal(rid.type, "AssumedRole");
    assert.equal(rid.arn, `arn:aws:sts::${ACCOUNT}:assumed-role/auditor/nightly-check`);
    assert.match(rid.principalId!, /^AROA[A-Z0-9]{17}:nightly-check$/);
    assert.equal(rid.sessionContext?.sessionIssuer.type, "Role");
    assert.equal(rid.sessionContext?.sessionIssuer.arn, roleArn("auditor"));
    assert.equal(rid.sessionContext?.sessionIssuer.userName, "auditor");
    assert.equal(rid.sessionContext?.sessionIssuer.principalId, rid.principalId!.split(":")[0]);
  });

  test("no secret is kept: not in the trail, the database, the server log or /metrics", async () => {
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "audited" }))).state === "CREATED" ? true : undefined), "the image to be built");
    const imageArn = imageArnOf("audited");
    const vm = await t.client.send(new RunMicrovmCommand({ imageIdentifier: imageArn, runHookPayload: HOOK_SECRET, ingressNetworkConnectors: [HTTP, SHELL] }));
    const token = await t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: vm.microvmId!, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] }));
    const shell = await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: vm.microvmId!, expirationInMinutes: 5 }));
    const endpointToken = token.authToken!["X-aws-proxy-auth"]!;
    const shellToken = shell.authToken!["X-aws-proxy-auth"]!;
    const dave = await userWithPolicy(iam, "dave", policy(allow("sts:AssumeRole")));
    await iam.send(new CreateRoleCommand({ RoleName: "dave-role", AssumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { AWS: userArn("dave") }, Action: "sts:AssumeRole" }) }));
    const sts = stsClient(t.platform.url, dave);
    const assumed = await sts.send(new AssumeRoleCommand({ RoleArn: roleArn("dave-role"), RoleSessionName: "dave-session" }));
    sts.destroy();
    const sessionSecret = assumed.Credentials!.SecretAccessKey!;
    const sessionToken = assumed.Credentials!.SessionToken!;

    const run = recordOf(await eventOf("RunMicrovm", vm.$metadata.requestId));
    assert.equal(run.requestParameters?.runHookPayload, HIDDEN);
    assert.equal(run.responseElements?.microvmId, vm.microvmId, "what RunMicrovm made is kept");
    assert.deepEqual(run.resources?.map((r) => r.ARN).sort(), [imageArn, HTTP, SHELL].sort());
    const minted = recordOf(await eventOf("CreateMicrovmAuthToken", token.$metadata.requestId));
    assert.deepEqual(minted.responseElements, { authToken: HIDDEN });
    assert.deepEqual(recordOf(await eventOf("CreateMicrovmShellAuthToken", shell.$metadata.requestId)).responseElements, { authToken: HIDDEN });
    const assumeEvent = recordOf(await eventOf("AssumeRole", assumed.$metadata.requestId));
    assert.equal((assumeEvent.responseElements?.credentials as Record<string, unknown>).accessKeyId, assumed.Credentials!.AccessKeyId, "the temporary key id is kept, to find what it did");

    const secrets = { ENV_SECRET, HOOK_SECRET, endpointToken, shellToken, userSecret: dave.secretAccessKey, sessionSecret, sessionToken, rootSecret: t.credentials.secretAccessKey };
    const trail = (await lookup()).map((e) => e.CloudTrailEvent).join("\n");
    const files = await storedText(t.dataDir);
    const metrics = await (await fetch(`${t.platform.url}/metrics`)).text();
    const log = serverLog.join("\n");
    for (const [name, secret] of Object.entries(secrets)) {
      assert.ok(!trail.includes(secret), `${name} is not in the audit trail`);
      assert.ok(!log.includes(secret), `${name} is not in the server log`);
      assert.ok(!metrics.includes(secret), `${name} is not in /metrics`);
    }
    // The image's variables and the MicroVM's payload are the resources' own configuration (kept to run
    // them); the credentials never touch the disk in clear.
    for (const name of ["endpointToken", "shellToken", "userSecret", "sessionSecret", "sessionToken", "rootSecret"] as const) {
      assert.ok(!files.includes(secrets[name]), `${name} is not in the database files`);
    }
  });

  test("requests refused before authentication are recorded with the access key they named, never the signature", async () => {
    const send = async (creds: Keys) => {
      const u = new URL(t.platform.url);
      const signer = new SignatureV4({ credentials: creds, region: DEFAULTS.region, service: "lambda", sha256: Hash.bind(null, "sha256") });
      const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: "http:", hostname: u.hostname, port: Number(u.port), path: "/2025-09-09/microvm-images", headers: { host: u.host } }));
      const res = await fetch(`${t.platform.url}/2025-09-09/microvm-images`, { headers: signed.headers as Record<string, string> });
      const signature = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))![1]!;
      return { status: res.status, type: res.headers.get("x-amzn-errortype"), requestId: res.headers.get("x-amzn-requestid"), signature };
    };
    const unknown = await send({ accessKeyId: "AKIAUNKNOWNKEY000000", secretAccessKey: "whatever-secret-1" });
    assert.deepEqual([unknown.status, unknown.type], [403, "UnrecognizedClientException"]);
    const forged = await send({ accessKeyId: t.credentials.accessKeyId, secretAccessKey: "not-the-root-secret" });
    assert.deepEqual([forged.status, forged.type], [403, "InvalidSignatureException"]);

    const [u] = await lookup({ AttributeKey: "AccessKeyId", AttributeValue: "AKIAUNKNOWNKEY000000" });
    assert.ok(u, "the unknown key's request is recorded");
    const ur = recordOf(u);
    assert.equal(ur.errorCode, "UnrecognizedClientException");
    assert.equal(ur.eventName, "ListMicrovmImages");
    assert.equal(ur.requestID, unknown.requestId);
    assert.deepEqual(ur.userIdentity, { type: "Unknown", accessKeyId: "AKIAUNKNOWNKEY000000" });
    assert.equal(u.Username, undefined);
    const f = (await lookup({ AttributeKey: "AccessKeyId", AttributeValue: t.credentials.accessKeyId })).map(recordOf).find((r) => r.requestID === forged.requestId);
    assert.ok(f, "the forged request is recorded under the key it named");
    assert.equal(f.errorCode, "InvalidSignatureException");
    assert.equal(f.userIdentity.type, "Unknown", "a request that failed its signature check is nobody's");

    const files = await storedText(t.dataDir);
    assert.ok(files.includes("AKIAUNKNOWNKEY000000"), "the files hold the trail (so the next check means something)");
    for (const s of [unknown.signature, forged.signature]) assert.ok(!files.includes(s), "no signature is kept");
    assert.ok(!(await lookup()).some((e) => /Signature=|AWS4-HMAC-SHA256/.test(e.CloudTrailEvent!)), "no Authorization header is kept");
  });

  test("every API is recorded under its event source: network connectors, CloudWatch Logs, IAM, STS, CloudTrail", async () => {
    assert.equal((await fetch(`${t.platform.url}/2026-04-04/network-connectors`)).status, 403, "unsigned");
    assert.equal((await signedFetch(t.platform.url, t.credentials, "GET", "/2026-04-04/network-connectors")).status, 200);
    const logs = new CloudWatchLogsClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: t.credentials, maxAttempts: 1 });
    const groups = await logs.send(new DescribeLogGroupsCommand({}));
    logs.destroy();
    const users = await iam.send(new ListUsersCommand({}));
    const sts = stsClient(t.platform.url, t.credentials);
    const me = await sts.send(new GetCallerIdentityCommand({}));
    sts.destroy();
    const first = await ct.send(new LookupEventsCommand({ MaxResults: 1 }));

    const expect: [source: string, name: string, requestId: string | undefined][] = [
      ["logs.amazonaws.com", "DescribeLogGroups", groups.$metadata.requestId],
      ["iam.amazonaws.com", "ListUsers", users.$metadata.requestId],
      ["sts.amazonaws.com", "GetCallerIdentity", me.$metadata.requestId],
      ["cloudtrail.amazonaws.com", "LookupEvents", first.$metadata.requestId],
    ];
    for (const [source, name, requestId] of expect) {
      const rec = recordOf(await eventOf(name, requestId));
      assert.equal(rec.eventSource, source, name);
      assert.equal(rec.userIdentity.type, "Root", name);
      assert.equal(rec.readOnly, true, name);
    }
    const listConnectors = (await lookup({ AttributeKey: "EventName", AttributeValue: "ListNetworkConnectors" })).map(recordOf);
    assert.ok(listConnectors.some((r) => r.eventSource === "lambda.amazonaws.com" && r.userIdentity.type === "Root" && !r.errorCode), "ListNetworkConnectors is recorded");
    assert.ok(listConnectors.some((r) => r.errorCode === "MissingAuthenticationTokenException" && r.userIdentity.type === "Unknown"), "so is the unsigned one");
    const bySource = await lookup({ AttributeKey: "EventSource", AttributeValue: "cloudtrail.amazonaws.com" });
    assert.ok(bySource.length >= 1 && bySource.every((e) => e.EventSource === "cloudtrail.amazonaws.com"));
  });

  test("LookupEvents pages newest first, with tokens bound to the request that made them", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const err = await rejects(t.client.send(new GetMicrovmImageCommand({ imageIdentifier: `paged-${i}` })), "ResourceNotFoundException");
      ids.push(requestIdOf(err)!);
    }
    const attribute: LookupAttribute = { AttributeKey: "ResourceType", AttributeValue: "AWS::Lambda::MicrovmImage" };
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await ct.send(new LookupEventsCommand({ LookupAttributes: [attribute], MaxResults: 3, ...(token ? { NextToken: token } : {}) }));
      assert.ok((page.Events ?? []).length <= 3);
      seen.push(...(page.Events ?? []).map((e) => recordOf(e).requestID));
      token = page.NextToken;
      pages++;
      if (pages === 1) {
        assert.ok(token, "more than one page");
        await rejects(ct.send(new LookupEventsCommand({ LookupAttributes: [attribute], MaxResults: 3, NextToken: `${token.slice(0, -2)}xx` })), "InvalidNextTokenException", /NextToken is invalid/);
        await rejects(ct.send(new LookupEventsCommand({ LookupAttributes: [{ AttributeKey: "EventName", AttributeValue: "GetMicrovmImage" }], NextToken: token })), "InvalidNextTokenException");
        await rejects(ct.send(new LookupEventsCommand({ LookupAttributes: [attribute], NextToken: "garbage" })), "InvalidNextTokenException");
      }
    } while (token);
    assert.ok(pages >= 3);
    assert.equal(new Set(seen).size, seen.length, "no event twice across pages");
    assert.deepEqual(seen.filter((id) => ids.includes(id)), [...ids].reverse(), "newest first");
  });

  test("LookupEvents finds events by each lookup attribute and by time", async () => {
    const r = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "audited" }));
    const event = await eventOf("GetMicrovmImage", r.$metadata.requestId);
    const has = (events: Event[]) => events.some((e) => e.EventId === event.EventId);
    const by = async (key: LookupAttribute["AttributeKey"], value: string) => lookup({ AttributeKey: key, AttributeValue: value });

    assert.deepEqual((await by("EventId", event.EventId!)).map((e) => e.EventId), [event.EventId]);
    assert.ok(has(await by("ResourceName", "audited")), "by the resource's name");
    assert.ok(has(await by("ResourceName", imageArnOf("audited"))), "by its ARN");
    assert.ok(!has(await by("ResourceName", "other")));
    assert.ok(has(await by("ResourceType", "AWS::Lambda::MicrovmImage")));
    assert.ok(!has(await by("ResourceType", "AWS::IAM::User")));
    const reads = await by("ReadOnly", "true");
    assert.ok(has(reads) && reads.every((e) => e.ReadOnly === "true"));
    const writes = await by("ReadOnly", "false");
    assert.ok(!has(writes) && writes.length > 0 && writes.every((e) => e.ReadOnly === "false"));
    assert.ok(has(await by("Username", "root")));
    assert.ok(!has(await by("Username", "carol")));
    assert.ok(has(await by("AccessKeyId", t.credentials.accessKeyId)));
    assert.ok(has(await by("EventSource", "lambda.amazonaws.com")));
    assert.ok(!has(await by("EventSource", "iam.amazonaws.com")));

    const at = event.EventTime!;
    assert.ok(has(await lookup(undefined, { StartTime: at, EndTime: at })), "bounds are inclusive");
    assert.ok(!has(await lookup(undefined, { EndTime: new Date(at.getTime() - 1000) })));
    assert.ok(!has(await lookup(undefined, { StartTime: new Date(at.getTime() + 1000) })));
    assert.ok(has(await lookup({ AttributeKey: "EventName", AttributeValue: "GetMicrovmImage" }, { StartTime: new Date(at.getTime() - 60_000) })));
  });

  test("bad LookupEvents input gets CloudTrail's errors, saying what to fix", async () => {
    const send = (input: LookupEventsCommandInput) => ct.send(new LookupEventsCommand(input));
    await rejects(send({ LookupAttributes: [{ AttributeKey: "EventName", AttributeValue: "A" }, { AttributeKey: "Username", AttributeValue: "root" }] }), "InvalidLookupAttributesException", /only one attribute/);
    await rejects(send({ LookupAttributes: [{ AttributeKey: "Colour" as "EventName", AttributeValue: "blue" }] }), "InvalidLookupAttributesException", /AttributeKey must be one of EventId, EventName/);
    await rejects(send({ LookupAttributes: [{ AttributeKey: "ReadOnly", AttributeValue: "maybe" }] }), "InvalidLookupAttributesException", /'true' or 'false'/);
    await rejects(send({ LookupAttributes: [{ AttributeKey: "EventName", AttributeValue: "" }] }), "InvalidLookupAttributesException", /1 to 2000 characters/);
    await rejects(send({ MaxResults: 0 }), "InvalidMaxResultsException", /from 1 to 50/);
    await rejects(send({ MaxResults: 51 }), "InvalidMaxResultsException", /from 1 to 50/);
    await rejects(send({ StartTime: new Date(Date.now()), EndTime: new Date(Date.now() - 3600_000) }), "InvalidTimeRangeException", /is after EndTime/);
    await rejects(send({ EventCategory: "data" as "insight" }), "InvalidEventCategoryException", /only be 'insight'/);
    assert.deepEqual((await send({ EventCategory: "insight" })).Events, [], "lmvm records no Insights events");
    const full = await send({});
    assert.ok((full.Events ?? []).length <= 50, "50 at most by default");
  });

  test("LookupEvents needs cloudtrail:LookupEvents; a refusal is itself recorded", async () => {
    const erin = await userWithPolicy(iam, "erin", policy(allow("lambda:ListMicrovmImages")));
    const frank = await userWithPolicy(iam, "frank", policy(allow("cloudtrail:LookupEvents")));
    const asErin = new CloudTrailClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: erin, maxAttempts: 1 });
    const err = await rejects(asErin.send(new LookupEventsCommand({})), "AccessDeniedException", /User: arn:aws:iam::000000000000:user\/erin is not authorized to perform: cloudtrail:LookupEvents on resource: \*/);
    asErin.destroy();
    const asFrank = new CloudTrailClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: frank, maxAttempts: 1 });
    const refusal = (await lookup({ AttributeKey: "Username", AttributeValue: "erin" }, {}, asFrank)).map(recordOf).find((r) => r.requestID === requestIdOf(err));
    asFrank.destroy();
    assert.ok(refusal, "frank, allowed, reads erin's refused call");
    assert.equal(refusal.eventSource, "cloudtrail.amazonaws.com");
    assert.equal(refusal.errorCode, "AccessDeniedException");
    // Signed for another service: refused, and recorded.
    const u = new URL(t.platform.url);
    const signer = new SignatureV4({ credentials: t.credentials, region: DEFAULTS.region, service: "lambda", sha256: Hash.bind(null, "sha256") });
    const target = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";
    const signed = await signer.sign(new HttpRequest({ method: "POST", protocol: "http:", hostname: u.hostname, port: Number(u.port), path: "/", headers: { host: u.host, "content-type": "application/x-amz-json-1.1", "x-amz-target": target }, body: "{}" }));
    const res = await fetch(`${t.platform.url}/`, { method: "POST", headers: signed.headers as Record<string, string>, body: "{}" });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("x-amzn-errortype"), "InvalidSignatureException");
    assert.match(((await res.json()) as { Message: string }).Message, /scoped to correct service: 'cloudtrail'/);
    const misSigned = (await lookup({ AttributeKey: "EventSource", AttributeValue: "cloudtrail.amazonaws.com" })).map(recordOf).find((r) => r.requestID === res.headers.get("x-amzn-requestid"));
    assert.equal(misSigned?.errorCode, "InvalidSignatureException");
  });

  test("calls made at once are each recorded exactly once", async () => {
    const answers = await Promise.all(Array.from({ length: 40 }, () => t.client.send(new ListMicrovmImagesCommand({ maxResults: 1 }))));
    const recorded = (await lookup({ AttributeKey: "EventName", AttributeValue: "ListMicrovmImages" })).map((e) => recordOf(e).requestID);
    for (const a of answers) assert.equal(recorded.filter((id) => id === a.$metadata.requestId).length, 1);
  });
});

describe("audit retention", () => {
  test("events older than --audit-retention-days are removed when the server starts; younger ones stay", async () => {
    const DAY = 86_400_000;
    let offset = 0;
    const clock = { now: () => new Date(Date.now() + offset) };
    const dataDir = tempDir();
    const start = () => startTestPlatform({ dataDir, clock, auditRetentionDays: 30 });
    const call = async (t: TestPlatform, name: string) => {
      const client = sdkClient(t.platform.url, t.credentials, { systemClockOffset: offset });
      const err = await rejects(client.send(new GetMicrovmImageCommand({ imageIdentifier: name })), "ResourceNotFoundException");
      client.destroy();
      return (err as { $metadata?: { requestId?: string } }).$metadata!.requestId!;
    };
    const recorded = async (t: TestPlatform) => {
      const client = new CloudTrailClient({ endpoint: t.platform.url, region: DEFAULTS.region, credentials: t.credentials, maxAttempts: 1, systemClockOffset: offset });
      const ids: string[] = [];
      for await (const page of paginateLookupEvents({ client }, { LookupAttributes: [{ AttributeKey: "EventName", AttributeValue: "GetMicrovmImage" }] })) {
        ids.push(...(page.Events ?? []).map((e) => recordOf(e).requestID));
      }
      client.destroy();
      return ids;
    };
    const stop = async (t: TestPlatform) => {
      t.client.destroy();
      await t.platform.stop();
    };

    let t = await start();
    const first = await call(t, "day-0");
    await stop(t);

    offset = 29 * DAY;
    t = await start();
    const second = await call(t, "day-29");
    assert.deepEqual((await recorded(t)).filter((id) => id === first || id === second).sort(), [first, second].sort(), "29 days on, both are kept");
    await stop(t);

    offset = 31 * DAY;
    t = await start();
    try {
      await eventually(async () => (!(await recorded(t)).includes(first) ? true : undefined), "the 31-day-old event to be removed");
      assert.ok((await recorded(t)).includes(second), "the 2-day-old event stays");
    } finally {
      await t.stop();
    }
  });
});
