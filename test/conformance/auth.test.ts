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
