// The audit trail's pieces on their own: redaction of every kind of secret
// member, CloudTrail's resource types, and group commit against the real
// SQLite store (concurrent events share a transaction, each waiter learns
// when its own is durable, a failed batch fails its waiters only).

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { auditEvent, AuditTrail, HIDDEN, redactParameters, redactResponse, resourceType, type AuditEvent, type Caller } from "../../src/core/index.js";
import { PostgresStore, SqliteStore } from "../../src/store/index.js";
import { freshDatabase } from "../support/postgres.js";
import { tempDir } from "../support/platform.js";

const facts = (over: Partial<Parameters<typeof auditEvent>[0]> = {}) =>
  auditEvent({ time: new Date("2026-11-29T18:30:05.678Z"), region: "us-east-1", accountId: "000000000000", eventSource: "lambda.amazonaws.com", eventName: "RunMicrovm", sourceIp: "10.0.0.9", resources: [], ...over });

describe("redaction", () => {
  test("secret members are hidden wherever they are, whatever their case; names of variables stay", () => {
    const kept = redactParameters({
      runHookPayload: "p",
      environmentVariables: { DB_PASSWORD: "x", MODE: "y" },
      nested: [{ SecretAccessKey: "s", SessionToken: "t", keep: 1 }, { Password: "pw", newPassword: "n" }],
      Variables: { A: "1" },
      policyDocument: '{"Statement":[]}',
    });
    assert.deepEqual(kept, {
      runHookPayload: HIDDEN,
      environmentVariables: { DB_PASSWORD: HIDDEN, MODE: HIDDEN },
      nested: [{ SecretAccessKey: HIDDEN, SessionToken: HIDDEN, keep: 1 }, { Password: HIDDEN, newPassword: HIDDEN }],
      Variables: { A: HIDDEN },
      policyDocument: '{"Statement":[]}',
    });
    assert.equal(redactParameters({}), null);
  });

  test("an operation that mints a credential keeps none of its answer; others keep theirs without secrets", () => {
    assert.deepEqual(redactResponse("CreateMicrovmAuthToken", { authToken: { "X-aws-proxy-auth": "tok" } }), { authToken: HIDDEN });
    assert.deepEqual(redactResponse("CreateMicrovmShellAuthToken", { authToken: { "X-aws-proxy-auth": "tok" }, other: 1 }), { authToken: HIDDEN, other: HIDDEN });
    assert.deepEqual(redactResponse("AssumeRole", { credentials: { accessKeyId: "ASIA1", secretAccessKey: "s", sessionToken: "t" } }), { credentials: { accessKeyId: "ASIA1", secretAccessKey: HIDDEN, sessionToken: HIDDEN } });
    assert.equal(redactResponse("GetMicrovm", undefined), null);
  });

  test("a failed call keeps no answer, and its record keeps CloudTrail's field order and precision", () => {
    const e = facts({ errorCode: "ValidationException", errorMessage: "bad", responseElements: { microvmId: "m" }, requestParameters: { runHookPayload: "p" } });
    assert.equal(e.responseElements, null);
    assert.equal(e.eventTime, "2026-11-29T18:30:05Z");
    assert.deepEqual(Object.keys(e).slice(0, 12), ["eventVersion", "userIdentity", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent", "errorCode", "errorMessage", "requestParameters", "responseElements"]);
    assert.deepEqual(e.userIdentity, { type: "Unknown" });
  });

  test("identities: root, IAM user and role session as CloudTrail writes them", () => {
    const base = { accountId: "000000000000", sourceIp: "1.2.3.4" };
    const root: Caller = { ...base, kind: "root", arn: "arn:aws:iam::000000000000:root", principalArn: "arn:aws:iam::000000000000:root", userId: "000000000000", accessKeyId: "LKIAROOT" };
    const user: Caller = { ...base, kind: "user", arn: "arn:aws:iam::000000000000:user/team/ann", principalArn: "arn:aws:iam::000000000000:user/team/ann", userId: "AIDAX", accessKeyId: "AKIAX" };
    const role: Caller = { ...base, kind: "assumed-role", arn: "arn:aws:sts::000000000000:assumed-role/r/s1", principalArn: "arn:aws:iam::000000000000:role/r", roleArn: "arn:aws:iam::000000000000:role/r", sessionName: "s1", userId: "AROAX:s1", accessKeyId: "ASIAX" };
    assert.deepEqual(facts({ caller: root }).userIdentity, { type: "Root", principalId: "000000000000", arn: root.arn, accountId: "000000000000", accessKeyId: "LKIAROOT" });
    assert.equal(facts({ caller: user }).userIdentity.userName, "ann");
    const session = facts({ caller: role }).userIdentity;
    assert.equal(session.type, "AssumedRole");
    assert.deepEqual(session.sessionContext?.sessionIssuer, { type: "Role", principalId: "AROAX", arn: role.roleArn, accountId: "000000000000", userName: "r" });
  });

  test("resource types from ARNs", () => {
    assert.equal(resourceType("arn:aws:lambda:us-east-1:000000000000:microvm-image:app"), "AWS::Lambda::MicrovmImage");
    assert.equal(resourceType("arn:aws:lambda:us-east-1:000000000000:microvm:microvm-0123"), "AWS::Lambda::Microvm");
    assert.equal(resourceType("arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS"), "AWS::Lambda::NetworkConnector");
    assert.equal(resourceType("arn:aws:iam::000000000000:role/path/r"), "AWS::IAM::Role");
    assert.equal(resourceType("arn:aws:logs:us-east-1:000000000000:log-group:/aws/x"), "AWS::Logs::LogGroup");
    assert.deepEqual(facts({ resources: ["*", "arn:aws:iam::000000000000:user/u", "arn:aws:iam::000000000000:user/u"] }).resources, [{ ARN: "arn:aws:iam::000000000000:user/u", accountId: "000000000000", type: "AWS::IAM::User" }]);
  });
});

// The same on both stores: the embedded one and PostgreSQL (a throwaway cluster, test/support/postgres.ts).
const stores: [string, () => Promise<SqliteStore | PostgresStore>][] = [
  ["SQLite", () => SqliteStore.open(join(tempDir(), "lmvm.db"))],
  ["PostgreSQL", async () => PostgresStore.open(await freshDatabase())],
];

for (const [kind, open] of stores) describe(`group commit on the ${kind} store`, () => {
  let store: SqliteStore | PostgresStore;
  const batches: number[] = [];
  let failNext = false;
  before(async () => {
    store = await open();
    const append = store.appendAuditEvents.bind(store);
    store.appendAuditEvents = async (events: AuditEvent[]) => {
      batches.push(events.length);
      if (failNext) {
        failNext = false;
        throw new Error("disk full");
      }
      return append(events);
    };
  });
  after(() => store.close());

  test("events recorded together are written in few transactions, and each is durable when its promise resolves", async () => {
    const trail = new AuditTrail(store);
    const events = Array.from({ length: 200 }, (_, i) => facts({ eventName: `Op${i % 3}`, requestId: `req-${i}` }));
    await Promise.all(events.map((e) => trail.record(e)));
    assert.equal(batches.reduce((a, b) => a + b, 0), 200);
    assert.ok(batches.length < 20, `200 events in ${batches.length} transactions`);
    const page = await store.lookupAuditEvents({}, { limit: 500 });
    assert.deepEqual(page.items.map((e) => e.requestID), events.map((e) => e.requestID).reverse(), "all of them, newest first");
    const ops = await store.lookupAuditEvents({ attribute: { key: "EventName", value: "Op1" } }, { limit: 30 });
    assert.equal(ops.items.length, 30);
    assert.ok(ops.next);
    const rest = await store.lookupAuditEvents({ attribute: { key: "EventName", value: "Op1" } }, { limit: 100, after: ops.next! });
    assert.equal(ops.items.length + rest.items.length, 67);
  });

  test("a batch that cannot be written fails its own waiters; the next batch is written", async () => {
    const trail = new AuditTrail(store);
    failNext = true;
    const lost = facts({ requestId: "lost" });
    await assert.rejects(trail.record(lost), /disk full/);
    const kept = facts({ requestId: "kept" });
    await trail.record(kept);
    const ids = (await store.lookupAuditEvents({}, { limit: 5 })).items.map((e) => e.requestID);
    assert.ok(ids.includes("kept") && !ids.includes("lost"));
  });

  test("a resource name with U+0000 in it is stored, and fails neither its event nor the others of its batch", async () => {
    const trail = new AuditTrail(store);
    const odd = facts({ requestId: "nul", resources: ["arn:aws:lambda:us-east-1:000000000000:microvm-image:a\u0000b"] });
    const other = facts({ requestId: "beside-nul" });
    await Promise.all([trail.record(odd), trail.record(other)]);
    const ids = (await store.lookupAuditEvents({}, { limit: 5 })).items.map((e) => e.requestID);
    assert.ok(ids.includes("nul") && ids.includes("beside-nul"), `both written: ${ids.join(", ")}`);
  });

  test("expiry removes only events older than the cut, with their resources", async () => {
    const trail = new AuditTrail(store);
    const old = facts({ time: new Date("2020-01-01T00:00:00Z"), requestId: "old", resources: ["arn:aws:iam::000000000000:role/old-role"] });
    await trail.record(old);
    assert.equal((await store.lookupAuditEvents({ attribute: { key: "ResourceName", value: "old-role" } }, { limit: 5 })).items.length, 1);
    assert.equal(await trail.expire(new Date("2020-01-20T00:00:00Z"), 30), 0, "19 days old, within 30");
    assert.equal(await trail.expire(new Date("2020-03-01T00:00:00Z"), 30), 1);
    assert.equal((await store.lookupAuditEvents({ attribute: { key: "ResourceName", value: "old-role" } }, { limit: 5 })).items.length, 0);
    assert.ok((await store.lookupAuditEvents({}, { limit: 500 })).items.length >= 200, "the others stay");
  });
});
