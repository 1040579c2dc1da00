// SigV4 on every request: missing, wrong, stale, tampered and mis-scoped
// signatures get a 403 with the error type real AWS returns for each.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ListMicrovmImagesCommand } from "@aws-sdk/client-lambda-microvms";
import { sdkClient, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { signedFetch } from "../support/signed-fetch.js";

describe("request signing", () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform();
  });
  after(() => t.stop());

  const expectDenied = async (p: Promise<unknown>, type: string, message: RegExp) => {
    const err = await p.then(() => undefined, (e: Error & { $metadata?: { httpStatusCode?: number } }) => e);
    assert.ok(err, "the request was accepted");
    assert.equal(err.name, type, err.message);
    assert.equal(err.$metadata?.httpStatusCode, 403);
    assert.match(err.message, message);
  };

  test("the root credentials from <data-dir>/credentials are accepted", async () => {
    const r = await t.client.send(new ListMicrovmImagesCommand({}));
    assert.equal(r.$metadata.httpStatusCode, 200);
    assert.ok(r.$metadata.requestId, "every answer carries x-amzn-requestid");
  });

  test("no Authorization header is MissingAuthenticationTokenException", async () => {
    const res = await fetch(`${t.platform.url}/2025-09-09/microvm-images`);
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("x-amzn-errortype"), "MissingAuthenticationTokenException");
    assert.deepEqual(await res.json(), { message: "Missing Authentication Token" });
  });

  test("an unknown access key is UnrecognizedClientException", async () => {
    const client = sdkClient(t.platform.url, { accessKeyId: "LKIANOSUCHKEY0000000", secretAccessKey: "x" });
    await expectDenied(client.send(new ListMicrovmImagesCommand({})), "UnrecognizedClientException", /security token included in the request is invalid/);
  });

  test("a wrong secret key is InvalidSignatureException", async () => {
    const client = sdkClient(t.platform.url, { ...t.credentials, secretAccessKey: `${t.credentials.secretAccessKey}x` });
    await expectDenied(client.send(new ListMicrovmImagesCommand({})), "InvalidSignatureException", /signature we calculated does not match/);
  });

  test("a signature older than five minutes is InvalidSignatureException: Signature expired", async () => {
    const client = sdkClient(t.platform.url, t.credentials, { systemClockOffset: -10 * 60_000 });
    await expectDenied(client.send(new ListMicrovmImagesCommand({})), "InvalidSignatureException", /Signature expired: \d{8}T\d{6}Z is now earlier than/);
  });

  test("a replayed request outside the skew window is refused", async () => {
    const r = await signedFetch(t.platform.url, t.credentials, "GET", "/2025-09-09/microvm-images", undefined, { signingDate: new Date(Date.now() - 6 * 60_000) });
    assert.deepEqual([r.status, r.errorType], [403, "InvalidSignatureException"]);
  });

  test("a body changed after signing is InvalidSignatureException", async () => {
    const body = { name: "a", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: "s3://b/k" } };
    const r = await signedFetch(t.platform.url, t.credentials, "POST", "/2025-09-09/microvm-images", body, { tamperedBody: JSON.stringify({ ...body, name: "b" }) });
    assert.deepEqual([r.status, r.errorType], [403, "InvalidSignatureException"]);
    const images = await t.client.send(new ListMicrovmImagesCommand({}));
    assert.deepEqual(images.items, [], "the tampered request created nothing");
  });

  test("a signature scoped to another region or service is InvalidSignatureException", async () => {
    let r = await signedFetch(t.platform.url, t.credentials, "GET", "/2025-09-09/microvm-images", undefined, { region: "eu-west-1" });
    assert.deepEqual([r.status, r.errorType], [403, "InvalidSignatureException"]);
    assert.match(String(r.body.message), /scoped to a valid region, not 'eu-west-1'/);
    r = await signedFetch(t.platform.url, t.credentials, "GET", "/2025-09-09/microvm-images", undefined, { service: "s3" });
    assert.match(String(r.body.message), /correct service: 'lambda'/);
  });

  test("a malformed Authorization header is IncompleteSignatureException", async () => {
    const res = await fetch(`${t.platform.url}/2025-09-09/microvm-images`, { headers: { authorization: "AWS4-HMAC-SHA256 Credential=garbage", "x-amz-date": "20260101T000000Z" } });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get("x-amzn-errortype"), "IncompleteSignatureException");
  });

  test("an unknown path is UnknownOperationException", async () => {
    const r = await signedFetch(t.platform.url, t.credentials, "GET", "/2025-09-09/nothing-here");
    assert.deepEqual([r.status, r.errorType], [404, "UnknownOperationException"]);
  });
});

// Users' keys and STS session credentials, through the official SDK: the identity service
// decides who a key stands for. The platform's clock can be moved forward to expire sessions
// (the client's clock moves with it, so signatures stay current).
describe("request signing with IAM users' keys and temporary credentials", () => {
  let t: TestPlatform;
  let offsetMs = 0;
  const ACCT = "000000000000";
  before(async () => {
    t = await startTestPlatform({ clock: { now: () => new Date(Date.now() + offsetMs) } });
  });
  after(() => t.stop());

  const expectDenied = async (p: Promise<unknown>, type: string, message: RegExp) => {
    const err = await p.then(() => undefined, (e: Error & { $metadata?: { httpStatusCode?: number } }) => e);
    assert.ok(err, "the request was accepted");
    assert.equal(err.name, type, err.message);
    assert.equal(err.$metadata?.httpStatusCode, 403);
    assert.match(err.message, message);
  };

  test("a user's access key signs requests until it is deactivated or deleted", async () => {
    const ids = t.platform.identities;
    await ids.createUser({ userName: "signer" });
    const key = await ids.createAccessKey("signer");
    const client = sdkClient(t.platform.url, { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey! });
    try {
      assert.equal((await client.send(new ListMicrovmImagesCommand({}))).$metadata.httpStatusCode, 200);
      await ids.updateAccessKey("signer", key.accessKeyId, "Inactive");
      await expectDenied(client.send(new ListMicrovmImagesCommand({})), "UnrecognizedClientException", /^The security token included in the request is invalid\.$/);
      await ids.updateAccessKey("signer", key.accessKeyId, "Active");
      assert.equal((await client.send(new ListMicrovmImagesCommand({}))).$metadata.httpStatusCode, 200);
      await ids.deleteAccessKey("signer", key.accessKeyId);
      await expectDenied(client.send(new ListMicrovmImagesCommand({})), "UnrecognizedClientException", /security token included in the request is invalid/);
    } finally {
      client.destroy();
    }
  });

  test("session credentials sign with their token; an altered, borrowed or expired token is refused", async () => {
    const ids = t.platform.identities;
    await ids.createRole({
      roleName: "Session",
      assumeRolePolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: { Effect: "Allow", Principal: { AWS: ACCT }, Action: "sts:AssumeRole" } }),
    });
    const roleArn = `arn:aws:iam::${ACCT}:role/Session`;
    const root = ids.rootCaller("127.0.0.1");
    const a = (await ids.assumeRole(root, { roleArn, roleSessionName: "first", durationSeconds: 900 })).credentials;
    const b = (await ids.assumeRole(root, { roleArn, roleSessionName: "second" })).credentials;
    const send = async (creds: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }, extra: Record<string, unknown> = {}) => {
      const client = sdkClient(t.platform.url, creds as { accessKeyId: string; secretAccessKey: string }, extra);
      try {
        return await client.send(new ListMicrovmImagesCommand({}));
      } finally {
        client.destroy();
      }
    };
    assert.equal((await send(a)).$metadata.httpStatusCode, 200);
    // The token must be there, unaltered, and belong to the key.
    await expectDenied(send({ accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey }), "UnrecognizedClientException", /invalid/);
    const altered = a.sessionToken.slice(0, 40) + (a.sessionToken[40] === "A" ? "B" : "A") + a.sessionToken.slice(41);
    await expectDenied(send({ ...a, sessionToken: altered }), "UnrecognizedClientException", /invalid/);
    await expectDenied(send({ ...a, sessionToken: b.sessionToken }), "UnrecognizedClientException", /invalid/);
    // The token must be signed, as AWS requires.
    const unsigned = await signedFetch(t.platform.url, { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey }, "GET", "/2025-09-09/microvm-images", undefined, { unsignedHeaders: { "x-amz-security-token": a.sessionToken } });
    assert.deepEqual([unsigned.status, unsigned.errorType], [403, "InvalidSignatureException"]);
    assert.match(String(unsigned.body.message), /X-Amz-Security-Token' must be a signed header/);
    const signed = await signedFetch(t.platform.url, a, "GET", "/2025-09-09/microvm-images");
    assert.equal(signed.status, 200);
    // Fifteen minutes on, the first session has expired; the second (an hour) has not.
    offsetMs = 16 * 60_000;
    try {
      await expectDenied(send(a, { systemClockOffset: offsetMs }), "ExpiredTokenException", /^The security token included in the request is expired$/);
      assert.equal((await send(b, { systemClockOffset: offsetMs })).$metadata.httpStatusCode, 200);
    } finally {
      offsetMs = 0;
    }
    // Deleting the role ends its sessions.
    await ids.deleteRole("Session");
    await expectDenied(send(b), "UnrecognizedClientException", /invalid/);
  });
});
