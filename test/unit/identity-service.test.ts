// The identity service on the real SQLite store and the real AES-GCM boxes,
// with a clock the test moves: IAM's rules for users, keys, roles and
// policies, secrets sealed at rest, AssumeRole and trust policies, session
// tokens (tampered, replayed, expired, role gone), service credentials for the
// metadata service, and authorisation with AWS's AccessDenied messages.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  AccessDenied, IamFault, IdentityService, Unauthenticated, type Caller, type Clock,
} from "../../src/core/index.js";
import { AesGcmBox } from "../../src/server/secret-box.js";
import { SqliteStore } from "../../src/store/index.js";
import { tempDir } from "../support/platform.js";

const ACCT = "123456789012";
const IMAGE = `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:app`;
const OTHER_IMAGE = `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:other`;
const ROOT = { accessKeyId: "LKIAROOTROOTROOTROOT", secretAccessKey: "root-secret-root-secret-root-secret-0000" };
let now = Date.parse("2026-03-01T00:00:00Z");
const clock: Clock = { now: () => new Date(now) };
const secretsKey = Buffer.alloc(32, 7);
const sessionsKey = Buffer.alloc(32, 9);

const dir = tempDir();
const dbFile = join(dir, "lmvm.db");
let store: SqliteStore;
let ids: IdentityService;

const open = async () => IdentityService.open({ store, clock, accountId: ACCT, root: ROOT, secrets: new AesGcmBox(secretsKey), sessions: new AesGcmBox(sessionsKey) });

before(async () => {
  store = await SqliteStore.open(dbFile);
  ids = await open();
});
after(() => store.close());

const policy = (...statements: object[]) => JSON.stringify({ Version: "2012-10-17", Statement: statements });
const trustAccount = policy({ Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCT}:root` }, Action: "sts:AssumeRole" });
const trustLambda = policy({ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: ["sts:AssumeRole", "sts:TagSession"] });

async function fault(p: Promise<unknown>, code: string, message?: RegExp | string): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof IamFault, `expected IamFault ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (typeof message === "string") assert.equal(err.message, message);
  else if (message) assert.match(err.message, message);
}

async function denied(p: Promise<unknown>, message?: string | RegExp): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof AccessDenied, `expected AccessDenied, got ${String(err)}`);
  if (typeof message === "string") assert.equal(err.message, message);
  else if (message) assert.match(err.message, message);
}

async function unauthenticated(p: Promise<unknown>, reason: "invalid" | "expired"): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof Unauthenticated, `expected Unauthenticated, got ${String(err)}`);
  assert.equal(err.reason, reason);
  assert.equal(err.message, reason === "expired" ? "The security token included in the request is expired" : "The security token included in the request is invalid.");
}

const root = (): Caller => ids.rootCaller("10.0.0.1");
async function userCaller(name: string, ip = "10.0.0.1"): Promise<{ caller: Caller; accessKeyId: string; secret: string }> {
  const key = await ids.createAccessKey(name);
  const { caller, secretAccessKey } = await ids.resolveKey(key.accessKeyId, undefined, ip);
  return { caller, accessKeyId: key.accessKeyId, secret: secretAccessKey };
}

describe("users and access keys", () => {
  test("names follow IAM's pattern and are unique regardless of case", async () => {
    const u = await ids.createUser({ userName: "Alice", tags: { team: "blue" } });
    assert.match(u.userId, /^AIDA[A-Z0-9]{17}$/);
    assert.equal(u.arn, `arn:aws:iam::${ACCT}:user/Alice`);
    await fault(ids.createUser({ userName: "alice" }), "EntityAlreadyExists", "User with name alice already exists.");
    await fault(ids.createUser({ userName: "bad name!" }), "ValidationError", /Value 'bad name!' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern/);
    await fault(ids.createUser({ userName: "x".repeat(65) }), "ValidationError", /length less than or equal to 64/);
    await fault(ids.createUser({ userName: "p", path: "no-slashes" }), "ValidationError", /at 'path'/);
    const withPath = await ids.createUser({ userName: "deployer", path: "/ci/" });
    assert.equal(withPath.arn, `arn:aws:iam::${ACCT}:user/ci/deployer`);
    assert.equal((await ids.getUser("ALICE")).userName, "Alice");
    await fault(ids.getUser("nobody"), "NoSuchEntity", "The user with name nobody cannot be found.");
    assert.deepEqual((await ids.listUsers({ pathPrefix: "/ci/" })).items.map((x) => x.userName), ["deployer"]);
  });

  test("ListUsers pages with a marker", async () => {
    for (const n of ["p1", "p2", "p3"]) await ids.createUser({ userName: n, path: "/paged/" });
    const first = await ids.listUsers({ pathPrefix: "/paged/", maxItems: 2 });
    assert.deepEqual(first.items.map((u) => u.userName), ["p1", "p2"]);
    assert.ok(first.marker);
    const second = await ids.listUsers({ pathPrefix: "/paged/", maxItems: 2, marker: first.marker });
    assert.deepEqual(second.items.map((u) => u.userName), ["p3"]);
    assert.equal(second.marker, undefined);
  });

  test("keys: AKIA ids, 40-character secrets, two per user, deactivation refuses them", async () => {
    await ids.createUser({ userName: "keys" });
    const k1 = await ids.createAccessKey("keys");
    assert.match(k1.accessKeyId, /^AKIA[A-Z2-7]{16}$/);
    assert.equal(k1.secretAccessKey!.length, 40);
    const k2 = await ids.createAccessKey("keys");
    await fault(ids.createAccessKey("keys"), "LimitExceeded", "Cannot exceed quota for AccessKeysPerUser: 2");
    const resolved = await ids.resolveKey(k1.accessKeyId, undefined, "10.0.0.1");
    assert.equal(resolved.secretAccessKey, k1.secretAccessKey);
    assert.deepEqual([resolved.caller.kind, resolved.caller.arn, resolved.caller.sourceIp], ["user", `arn:aws:iam::${ACCT}:user/keys`, "10.0.0.1"]);
    assert.equal(await ids.userOfAccessKey(k2.accessKeyId), "keys");
    await ids.updateAccessKey("keys", k1.accessKeyId, "Inactive");
    await unauthenticated(ids.resolveKey(k1.accessKeyId, undefined, "10.0.0.1"), "invalid");
    assert.deepEqual((await ids.listAccessKeys("keys")).map((k) => [k.accessKeyId, k.status, k.secretAccessKey]), [[k1.accessKeyId, "Inactive", undefined], [k2.accessKeyId, "Active", undefined]]);
    await ids.updateAccessKey("keys", k1.accessKeyId, "Active");
    await ids.resolveKey(k1.accessKeyId, undefined, "10.0.0.1");
    // A permanent key with a session token, or an unknown key, is refused.
    await unauthenticated(ids.resolveKey(k1.accessKeyId, "token", "10.0.0.1"), "invalid");
    await unauthenticated(ids.resolveKey("AKIAAAAAAAAAAAAAAAAA", undefined, "10.0.0.1"), "invalid");
    await fault(ids.updateAccessKey("alice", k1.accessKeyId, "Inactive"), "NoSuchEntity", `The Access Key with id ${k1.accessKeyId} cannot be found.`);
    await fault(ids.deleteUser("keys"), "DeleteConflict", "Cannot delete entity, must delete access keys first.");
    await ids.deleteAccessKey("keys", k1.accessKeyId);
    await ids.deleteAccessKey("keys", k2.accessKeyId);
    await unauthenticated(ids.resolveKey(k2.accessKeyId, undefined, "10.0.0.1"), "invalid");
    await ids.putUserPolicy("keys", "p", policy({ Effect: "Allow", Action: "lambda:*", Resource: "*" }));
    await fault(ids.deleteUser("keys"), "DeleteConflict", "Cannot delete entity, must delete policies first.");
    await ids.deleteUserPolicy("keys", "p");
    await ids.deleteUser("keys");
    await fault(ids.getUser("keys"), "NoSuchEntity");
  });

  test("secrets are sealed at rest: the database files never hold one, and a restart opens them", async () => {
    await ids.createUser({ userName: "sealed" });
    const key = await ids.createAccessKey("sealed");
    const secret = key.secretAccessKey!;
    for (const f of readdirSync(dir).filter((f) => f.startsWith("lmvm.db"))) {
      const bytes = readFileSync(join(dir, f));
      assert.ok(!bytes.includes(Buffer.from(secret)), `${f} holds the secret in clear`);
      assert.ok(!bytes.includes(Buffer.from(secret.slice(0, 20))), `${f} holds part of the secret`);
    }
    const again = await open();
    assert.equal((await again.resolveKey(key.accessKeyId, undefined, "10.0.0.2")).secretAccessKey, secret);
    // Under another key, the sealed secrets do not open.
    await assert.rejects(IdentityService.open({ store, clock, accountId: ACCT, root: ROOT, secrets: new AesGcmBox(Buffer.alloc(32, 1)), sessions: new AesGcmBox(sessionsKey) }));
  });

  test("inline policies: grammar checked, size limited per user (2048 without whitespace)", async () => {
    await ids.createUser({ userName: "pol" });
    await fault(ids.putUserPolicy("pol", "p", "{"), "MalformedPolicyDocument", /Syntax errors in policy/);
    await fault(ids.putUserPolicy("pol", "p", policy({ Effect: "Allow", Action: "lambda:*", Resource: "*", Principal: "*" })), "MalformedPolicyDocument", "Policy document should not specify a principal.");
    await fault(ids.putUserPolicy("nobody", "p", policy({ Effect: "Allow", Action: "*", Resource: "*" })), "NoSuchEntity", "The user with name nobody cannot be found.");
    const big = (n: number) => policy({ Effect: "Allow", Action: "lambda:GetMicrovm", Resource: Array.from({ length: n }, (_, i) => `${IMAGE}${i}`) });
    await ids.putUserPolicy("pol", "one", big(20));
    await fault(ids.putUserPolicy("pol", "two", big(20)), "LimitExceeded", "Maximum policy size of 2048 bytes exceeded for user pol");
    // Replacing a policy counts its new size, not both.
    await ids.putUserPolicy("pol", "ONE", big(25));
    assert.deepEqual(await ids.listUserPolicies("pol"), ["one"]);
    assert.equal(await ids.getUserPolicy("pol", "one"), big(25));
    await fault(ids.getUserPolicy("pol", "nope"), "NoSuchEntity", "The user policy with name nope cannot be found.");
  });
});

describe("authorisation", () => {
  test("root is always allowed; a user only what its policies allow, with AWS's messages", async () => {
    await ids.authorize(root(), { action: "iam:DeleteUser", resources: ["*"], context: {} });
    await ids.createUser({ userName: "runner" });
    const { caller } = await userCaller("runner");
    const req = (action: string, resource: string, extra = {}) => ({ action, resources: [resource], context: {}, ...extra });
    await denied(ids.authorize(caller, req("lambda:RunMicrovm", IMAGE)),
      `User: arn:aws:iam::${ACCT}:user/runner is not authorized to perform: lambda:RunMicrovm on resource: ${IMAGE} because no identity-based policy allows the lambda:RunMicrovm action`);
    await ids.putUserPolicy("runner", "run", policy(
      { Effect: "Allow", Action: "lambda:RunMicrovm", Resource: IMAGE },
      { Effect: "Allow", Action: "lambda:Get*", Resource: "*" },
      { Effect: "Deny", Action: "lambda:*", Resource: "*", Condition: { StringEquals: { "aws:ResourceTag/env": "prod" } } },
    ));
    await ids.authorize(caller, req("lambda:RunMicrovm", IMAGE));
    await denied(ids.authorize(caller, req("lambda:RunMicrovm", OTHER_IMAGE)), /on resource: .*:other because no identity-based policy allows/);
    await ids.authorize(caller, req("lambda:GetMicrovmImage", OTHER_IMAGE, { resourceTags: { [OTHER_IMAGE]: { env: "dev" } } }));
    await denied(ids.authorize(caller, req("lambda:GetMicrovmImage", OTHER_IMAGE, { resourceTags: { [OTHER_IMAGE]: { env: "prod" } } })),
      `User: arn:aws:iam::${ACCT}:user/runner is not authorized to perform: lambda:GetMicrovmImage on resource: ${OTHER_IMAGE} with an explicit deny in an identity-based policy`);
    // Every resource must be allowed.
    await denied(ids.authorize(caller, { action: "lambda:RunMicrovm", resources: [IMAGE, OTHER_IMAGE], context: {} }), /microvm-image:other/);
  });

  test("condition keys come from the caller: aws:SourceIp, aws:username, aws:PrincipalTag, aws:CurrentTime", async () => {
    await ids.createUser({ userName: "office", tags: { team: "blue" } });
    await ids.putUserPolicy("office", "p", policy({
      Effect: "Allow", Action: "lambda:GetMicrovm", Resource: "*",
      Condition: {
        IpAddress: { "aws:SourceIp": "10.1.0.0/16" }, StringEquals: { "aws:username": "office", "aws:PrincipalTag/team": "blue" },
        DateLessThan: { "aws:CurrentTime": "2026-04-01T00:00:00Z" },
      },
    }));
    const inside = (await userCaller("office", "10.1.2.3")).caller;
    await ids.authorize(inside, { action: "lambda:GetMicrovm", resources: ["*"], context: {} });
    await denied(ids.authorize({ ...inside, sourceIp: "10.2.0.1" }, { action: "lambda:GetMicrovm", resources: ["*"], context: {} }));
    const saved = now;
    now = Date.parse("2026-04-02T00:00:00Z");
    try {
      await denied(ids.authorize(inside, { action: "lambda:GetMicrovm", resources: ["*"], context: {} }));
    } finally {
      now = saved;
    }
  });

  test("a deleted user's caller is refused", async () => {
    await ids.createUser({ userName: "gone" });
    await ids.putUserPolicy("gone", "p", policy({ Effect: "Allow", Action: "*", Resource: "*" }));
    const { caller, accessKeyId } = await userCaller("gone");
    await ids.authorize(caller, { action: "lambda:GetMicrovm", resources: ["*"], context: {} });
    await ids.deleteAccessKey("gone", accessKeyId);
    await ids.deleteUserPolicy("gone", "p");
    await ids.deleteUser("gone");
    await denied(ids.authorize(caller, { action: "lambda:GetMicrovm", resources: ["*"], context: {} }));
  });
});

describe("roles and sessions", () => {
  test("roles: trust policy grammar, names, max session duration, delete conflicts", async () => {
    const r = await ids.createRole({ roleName: "Deploy", assumeRolePolicyDocument: trustAccount, description: "d", maxSessionDuration: 7200 });
    assert.match(r.roleId, /^AROA[A-Z0-9]{17}$/);
    assert.equal(r.arn, `arn:aws:iam::${ACCT}:role/Deploy`);
    await fault(ids.createRole({ roleName: "deploy", assumeRolePolicyDocument: trustAccount }), "EntityAlreadyExists", "Role with name deploy already exists.");
    await fault(ids.createRole({ roleName: "x", assumeRolePolicyDocument: policy({ Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" }) }), "MalformedPolicyDocument", /Principal/);
    await fault(ids.createRole({ roleName: "x", assumeRolePolicyDocument: trustAccount, maxSessionDuration: 100 }), "ValidationError", /greater than or equal to 3600/);
    await fault(ids.createRole({ roleName: "x", assumeRolePolicyDocument: policy(...Array.from({ length: 40 }, (_, i) => ({ Sid: `S${i}`, Effect: "Allow", Principal: { AWS: ACCT }, Action: "sts:AssumeRole" }))) }), "LimitExceeded", "Cannot exceed quota for ACLSizePerRole: 2048");
    await fault(ids.getRole("nope"), "NoSuchEntity", "The role with name nope cannot be found.");
    await ids.putRolePolicy("Deploy", "p", policy({ Effect: "Allow", Action: "lambda:*", Resource: "*" }));
    await fault(ids.deleteRole("Deploy"), "DeleteConflict", "Cannot delete entity, must delete policies first.");
    await fault(ids.getRolePolicy("Deploy", "q"), "NoSuchEntity", "The role policy with name q cannot be found.");
    assert.equal((await ids.getRole("deploy")).maxSessionDuration, 7200);
  });

  test("AssumeRole: root may; a user needs the trust policy and (for an account-wide trust) its own permission", async () => {
    await ids.createRole({ roleName: "Ops", assumeRolePolicyDocument: trustAccount });
    await ids.putRolePolicy("Ops", "get", policy({ Effect: "Allow", Action: "lambda:Get*", Resource: "*" }));
    const s = await ids.assumeRole(root(), { roleArn: `arn:aws:iam::${ACCT}:role/Ops`, roleSessionName: "s1" });
    assert.match(s.credentials.accessKeyId, /^ASIA[A-Z2-7]{16}$/);
    assert.equal(s.credentials.secretAccessKey.length, 40);
    assert.equal(s.assumedRoleUser.arn, `arn:aws:sts::${ACCT}:assumed-role/Ops/s1`);
    assert.match(s.assumedRoleUser.assumedRoleId, /^AROA[A-Z0-9]{17}:s1$/);
    assert.equal(s.credentials.expiration.getTime(), now + 3600_000);
    const { caller, secretAccessKey } = await ids.resolveKey(s.credentials.accessKeyId, s.credentials.sessionToken, "10.0.0.3");
    assert.equal(secretAccessKey, s.credentials.secretAccessKey);
    assert.deepEqual([caller.kind, caller.arn, caller.principalArn, caller.roleArn, caller.sessionName], ["assumed-role", s.assumedRoleUser.arn, `arn:aws:iam::${ACCT}:role/Ops`, `arn:aws:iam::${ACCT}:role/Ops`, "s1"]);
    await ids.authorize(caller, { action: "lambda:GetMicrovm", resources: ["*"], context: {} });
    await denied(ids.authorize(caller, { action: "lambda:RunMicrovm", resources: [IMAGE], context: {} }),
      `User: arn:aws:sts::${ACCT}:assumed-role/Ops/s1 is not authorized to perform: lambda:RunMicrovm on resource: ${IMAGE} because no identity-based policy allows the lambda:RunMicrovm action`);

    await ids.createUser({ userName: "bob" });
    const bob = (await userCaller("bob")).caller;
    await denied(ids.assumeRole(bob, { roleArn: `arn:aws:iam::${ACCT}:role/Ops`, roleSessionName: "bb" }), `User: arn:aws:iam::${ACCT}:user/bob is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::${ACCT}:role/Ops`);
    await ids.putUserPolicy("bob", "assume", policy({ Effect: "Allow", Action: "sts:AssumeRole", Resource: `arn:aws:iam::${ACCT}:role/*` }));
    await ids.assumeRole(bob, { roleArn: `arn:aws:iam::${ACCT}:role/Ops`, roleSessionName: "bb" });
    // A role whose trust policy names someone else: the user's own permission is not enough.
    await ids.createRole({ roleName: "Private", assumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCT}:user/Alice` }, Action: "sts:AssumeRole" }) });
    await denied(ids.assumeRole(bob, { roleArn: `arn:aws:iam::${ACCT}:role/Private`, roleSessionName: "bb" }));
    // A trust policy naming the user itself is enough within the account; an explicit deny still wins.
    const alice = (await userCaller("Alice")).caller;
    await ids.assumeRole(alice, { roleArn: `arn:aws:iam::${ACCT}:role/Private`, roleSessionName: "aa" });
    await ids.putUserPolicy("Alice", "no", policy({ Effect: "Deny", Action: "sts:*", Resource: "*" }));
    await denied(ids.assumeRole(alice, { roleArn: `arn:aws:iam::${ACCT}:role/Private`, roleSessionName: "aa" }));
    // A role that does not exist is the same refusal as one that may not be assumed.
    await denied(ids.assumeRole(bob, { roleArn: `arn:aws:iam::${ACCT}:role/Nope`, roleSessionName: "bb" }), `User: arn:aws:iam::${ACCT}:user/bob is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::${ACCT}:role/Nope`);
    await denied(ids.assumeRole(root(), { roleArn: `arn:aws:iam::210987654321:role/Ops`, roleSessionName: "bb" }));
  });

  test("AssumeRole's inputs: duration, session name, external id, session policy size", async () => {
    await ids.createRole({ roleName: "Ext", maxSessionDuration: 7200, assumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { AWS: ACCT }, Action: "sts:AssumeRole", Condition: { StringEquals: { "sts:ExternalId": "abc-123" } } }) });
    const arn = `arn:aws:iam::${ACCT}:role/Ext`;
    await denied(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx" }));
    await denied(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "wrong" }));
    const ok = await ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "abc-123", durationSeconds: 7200 });
    assert.equal(ok.credentials.expiration.getTime(), now + 7200_000);
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "abc-123", durationSeconds: 7201 }), "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.");
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "abc-123", durationSeconds: 899 }), "ValidationError", /Value '899' at 'durationSeconds'.*greater than or equal to 900/);
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "x" }), "ValidationError", /at 'roleSessionName'.*greater than or equal to 2/);
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "has space" }), "ValidationError", /at 'roleSessionName'/);
    const huge = policy({ Effect: "Allow", Action: "lambda:GetMicrovm", Resource: Array.from({ length: 40 }, (_, i) => `${IMAGE}${i}`) });
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "abc-123", policy: huge }), "PackedPolicyTooLarge", /^Packed policy consumes \d+% of allotted space/);
    await fault(ids.assumeRole(root(), { roleArn: arn, roleSessionName: "sx", externalId: "abc-123", policy: policy({ Effect: "Allow", Action: "x" }) }), "MalformedPolicyDocument");
  });

  test("a session policy limits the session to what both allow", async () => {
    await ids.createRole({ roleName: "Wide", assumeRolePolicyDocument: trustAccount });
    await ids.putRolePolicy("Wide", "all", policy({ Effect: "Allow", Action: "lambda:*", Resource: "*" }));
    const s = await ids.assumeRole(root(), { roleArn: `arn:aws:iam::${ACCT}:role/Wide`, roleSessionName: "narrow", policy: policy({ Effect: "Allow", Action: ["lambda:GetMicrovm", "iam:*"], Resource: "*" }) });
    const { caller } = await ids.resolveKey(s.credentials.accessKeyId, s.credentials.sessionToken, "10.0.0.1");
    await ids.authorize(caller, { action: "lambda:GetMicrovm", resources: ["*"], context: {} });
    await denied(ids.authorize(caller, { action: "lambda:RunMicrovm", resources: [IMAGE], context: {} }), /because no session policy allows the lambda:RunMicrovm action$/);
    await denied(ids.authorize(caller, { action: "iam:CreateUser", resources: ["*"], context: {} }), /because no identity-based policy allows the iam:CreateUser action$/);
  });

  test("role chaining lasts at most an hour", async () => {
    await ids.createRole({ roleName: "Chain", maxSessionDuration: 43200, assumeRolePolicyDocument: trustAccount });
    await ids.putRolePolicy("Chain", "assume", policy({ Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" }));
    const first = await ids.assumeRole(root(), { roleArn: `arn:aws:iam::${ACCT}:role/Chain`, roleSessionName: "one", durationSeconds: 43200 });
    const { caller } = await ids.resolveKey(first.credentials.accessKeyId, first.credentials.sessionToken, "10.0.0.1");
    await fault(ids.assumeRole(caller, { roleArn: `arn:aws:iam::${ACCT}:role/Chain`, roleSessionName: "two", durationSeconds: 7200 }), "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.");
    const second = await ids.assumeRole(caller, { roleArn: `arn:aws:iam::${ACCT}:role/Chain`, roleSessionName: "two" });
    assert.equal(second.assumedRoleUser.arn, `arn:aws:sts::${ACCT}:assumed-role/Chain/two`);
  });

  test("session tokens: altered, used with another key, expired, or of a deleted role are refused", async () => {
    await ids.createRole({ roleName: "Tok", assumeRolePolicyDocument: trustAccount });
    const arn = `arn:aws:iam::${ACCT}:role/Tok`;
    const a = await ids.assumeRole(root(), { roleArn: arn, roleSessionName: "aa", durationSeconds: 900 });
    const b = await ids.assumeRole(root(), { roleArn: arn, roleSessionName: "bb" });
    const tok = a.credentials.sessionToken;
    for (let i = 0; i < tok.length; i += Math.ceil(tok.length / 16)) {
      const flipped = tok.slice(0, i) + (tok[i] === "A" ? "B" : "A") + tok.slice(i + 1);
      await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, flipped, "10.0.0.1"), "invalid");
    }
    await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, `${tok}A`, "10.0.0.1"), "invalid");
    await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, undefined, "10.0.0.1"), "invalid");
    await unauthenticated(ids.resolveKey(b.credentials.accessKeyId, tok, "10.0.0.1"), "invalid");
    await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, b.credentials.sessionToken, "10.0.0.1"), "invalid");
    // A token sealed under another server key.
    const foreign = new AesGcmBox(Buffer.alloc(32, 3)).seal(JSON.stringify({ v: 1, k: a.credentials.accessKeyId, s: "x".repeat(40), r: arn, rid: "AROAX", n: "aa", i: now, e: now + 1e6 }));
    await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, foreign, "10.0.0.1"), "invalid");
    await ids.resolveKey(a.credentials.accessKeyId, tok, "10.0.0.1");
    const saved = now;
    now += 900_000;
    try {
      await unauthenticated(ids.resolveKey(a.credentials.accessKeyId, tok, "10.0.0.1"), "expired");
    } finally {
      now = saved;
    }
    // The role deleted, even if made again under the same name.
    await ids.deleteRole("Tok");
    await unauthenticated(ids.resolveKey(b.credentials.accessKeyId, b.credentials.sessionToken, "10.0.0.1"), "invalid");
    await ids.createRole({ roleName: "Tok", assumeRolePolicyDocument: trustAccount });
    await unauthenticated(ids.resolveKey(b.credentials.accessKeyId, b.credentials.sessionToken, "10.0.0.1"), "invalid");
  });

  test("service credentials: for lambda.amazonaws.com when the trust policy allows it, for the source it names", async () => {
    await ids.createRole({ roleName: "Exec", assumeRolePolicyDocument: trustLambda });
    await ids.putRolePolicy("Exec", "p", policy({ Effect: "Allow", Action: "lambda:GetMicrovm", Resource: "*" }));
    const vm = `arn:aws:lambda:us-east-1:${ACCT}:microvm:microvm-0123456789abcdef0`;
    const c = await ids.serviceCredentials(`arn:aws:iam::${ACCT}:role/Exec`, vm, "microvm-0123456789abcdef0");
    assert.equal(c.expiration.getTime(), now + 3600_000);
    const { caller } = await ids.resolveKey(c.accessKeyId, c.sessionToken, "10.211.0.2");
    assert.equal(caller.arn, `arn:aws:sts::${ACCT}:assumed-role/Exec/microvm-0123456789abcdef0`);
    await ids.authorize(caller, { action: "lambda:GetMicrovm", resources: ["*"], context: {} });
    await denied(ids.authorize(caller, { action: "lambda:RunMicrovm", resources: [IMAGE], context: {} }));

    await denied(ids.serviceCredentials(`arn:aws:iam::${ACCT}:role/Nope`, vm, "s1"), `lambda.amazonaws.com is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::${ACCT}:role/Nope`);
    await denied(ids.serviceCredentials(`arn:aws:iam::${ACCT}:role/Ops`, vm, "s1"), /not authorized to perform: sts:AssumeRole/);
    // A trust policy limited by aws:SourceArn serves only that source.
    await ids.createRole({ roleName: "OnlyApp", assumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole", Condition: { ArnLike: { "aws:SourceArn": `arn:aws:lambda:us-east-1:${ACCT}:microvm:*` }, StringEquals: { "aws:SourceAccount": ACCT } } }) });
    await ids.serviceCredentials(`arn:aws:iam::${ACCT}:role/OnlyApp`, vm, "s1");
    await denied(ids.serviceCredentials(`arn:aws:iam::${ACCT}:role/OnlyApp`, IMAGE, "s1"));
    // A user cannot use the service's trust.
    await ids.createUser({ userName: "notlambda" });
    await denied(ids.assumeRole((await userCaller("notlambda")).caller, { roleArn: `arn:aws:iam::${ACCT}:role/Exec`, roleSessionName: "xx" }));
  });

  test("root's key resolves to root; root with a session token does not", async () => {
    const r = await ids.resolveKey(ROOT.accessKeyId, undefined, "127.0.0.1");
    assert.deepEqual([r.caller.kind, r.caller.arn, r.caller.userId, r.secretAccessKey], ["root", `arn:aws:iam::${ACCT}:root`, ACCT, ROOT.secretAccessKey]);
    await unauthenticated(ids.resolveKey(ROOT.accessKeyId, "x", "127.0.0.1"), "invalid");
  });
});
