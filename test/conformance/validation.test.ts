// Every documented input constraint gets a ValidationException (400) whose
// message names the field and what it must be, and the request changes nothing.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, GetMicrovmImageVersionCommand,
  ListMicrovmImagesCommand, RunMicrovmCommand, UpdateMicrovmImageVersionCommand,
} from "@aws-sdk/client-lambda-microvms";
import { imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { signedFetch } from "../support/signed-fetch.js";

// The rate limits have their own tests (quotas.test.ts); this file drives the
// scripted runtime faster than the documented rates allow, so it raises them.
const FAST = { rateLimits: { "*": 10_000 } };

const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";
const VM = "microvm-0123456789abcdef0";

type Case = [title: string, send: (t: TestPlatform) => Promise<unknown>, message: RegExp];

const token = (extra: object) => new CreateMicrovmAuthTokenCommand({ microvmIdentifier: VM, expirationInMinutes: 10, allowedPorts: [{ port: 8080 }], ...extra });
const run = (extra: object) => new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, ...extra });
const create = (extra: Record<string, unknown>) => new CreateMicrovmImageCommand(imageRequest("valid-name", extra) as never);

const cases: Case[] = [
  ["token expiry above 60 minutes", (t) => t.client.send(token({ expirationInMinutes: 61 })), /'expirationInMinutes' must be at most 60/],
  ["token expiry below 1 minute", (t) => t.client.send(token({ expirationInMinutes: 0 })), /'expirationInMinutes' must be at least 1/],
  ["shell token expiry above 60 minutes", (t) => t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: VM, expirationInMinutes: 61 })), /'expirationInMinutes' must be at most 60/],
  ["allowedPorts entry with two members", (t) => t.client.send(token({ allowedPorts: [{ port: 8080, allPorts: {} }] })), /'allowedPorts\.0' must set exactly one of port, range, allPorts; it sets port and allPorts/],
  ["allowedPorts entry with no member", (t) => t.client.send(token({ allowedPorts: [{}] })), /must set exactly one of port, range, allPorts; it sets none/],
  ["allowedPorts empty", (t) => t.client.send(token({ allowedPorts: [] })), /'allowedPorts' list at least one port specification/],
  ["allowedPorts port out of range", (t) => t.client.send(token({ allowedPorts: [{ port: 70000 }] })), /'allowedPorts\.0\.port' must be at most 65535/],
  ["allowedPorts range reversed", (t) => t.client.send(token({ allowedPorts: [{ range: { startPort: 9000, endPort: 8000 } }] })), /startPort must not exceed range\.endPort/],
  ["microvm identifier that is no MicroVM id", (t) => t.client.send(token({ microvmIdentifier: "my-vm" })), /must be a MicroVM id/],
  ["maximumDurationInSeconds 0", (t) => t.client.send(run({ maximumDurationInSeconds: 0 })), /'maximumDurationInSeconds' must be at least 1/],
  ["maximumDurationInSeconds above 8 hours", (t) => t.client.send(run({ maximumDurationInSeconds: 28_801 })), /'maximumDurationInSeconds' must be at most 28800/],
  ["runHookPayload over 16384 bytes", (t) => t.client.send(run({ runHookPayload: "é".repeat(8193) })), /'runHookPayload' must be at most 16384 bytes/],
  ["maxIdleDurationSeconds below 60", (t) => t.client.send(run({ idlePolicy: { maxIdleDurationSeconds: 59, suspendedDurationSeconds: 0, autoResumeEnabled: true } })), /'idlePolicy\.maxIdleDurationSeconds' must be at least 60/],
  ["idlePolicy without all its fields", (t) => t.client.send(run({ idlePolicy: { maxIdleDurationSeconds: 600 } })), /'idlePolicy\.suspendedDurationSeconds' is required.*'idlePolicy\.autoResumeEnabled' is required/],
  ["RunMicrovm with an image name instead of an ARN", (t) => t.client.send(new RunMicrovmCommand({ imageIdentifier: "app" })), /'imageIdentifier' must be the image's ARN/],
  ["RunMicrovm with a version that is not major.minor", (t) => t.client.send(run({ imageVersion: "1" })), /'imageVersion' must be a version string of the form major\.minor/],
  ["GetMicrovmImageVersion with version v1.0", (t) => t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "app", imageVersion: "v1.0" })), /major\.minor/],
  ["UpdateMicrovmImageVersion with an unknown status", (t) => t.client.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: "app", imageVersion: "1.0", status: "PAUSED" as never })), /'status' must be ACTIVE or INACTIVE/],
  ["ready timeout of 0", (t) => t.client.send(create({ hooks: { microvmImageHooks: { readyTimeoutInSeconds: 0 } } })), /'hooks\.microvmImageHooks\.readyTimeoutInSeconds' must be at least 1/],
  ["validate timeout above 3600", (t) => t.client.send(create({ hooks: { microvmImageHooks: { validateTimeoutInSeconds: 3601 } } })), /'hooks\.microvmImageHooks\.validateTimeoutInSeconds' must be at most 3600/],
  ["run hook timeout above 60", (t) => t.client.send(create({ hooks: { microvmHooks: { runTimeoutInSeconds: 61 } } })), /'hooks\.microvmHooks\.runTimeoutInSeconds' must be at most 60/],
  ["suspend hook timeout of 0", (t) => t.client.send(create({ hooks: { microvmHooks: { suspendTimeoutInSeconds: 0 } } })), /suspendTimeoutInSeconds' must be at least 1/],
  ["hook state other than ENABLED or DISABLED", (t) => t.client.send(create({ hooks: { microvmHooks: { run: "ON" } } })), /'hooks\.microvmHooks\.run' must be ENABLED or DISABLED/],
  ["hooks port 0", (t) => t.client.send(create({ hooks: { port: 0 } })), /'hooks\.port' must be at least 1/],
  ["MicroVM identifier with a NUL character", (t) => t.client.send(new GetMicrovmCommand({ microvmIdentifier: "microvm-0123\u0000" })), /'microvmIdentifier' must not contain the NUL character \(U\+0000\)/],
  ["environment variable value with a NUL character", (t) => t.client.send(create({ environmentVariables: { GREETING: "a\u0000b" } })), /must not contain the NUL character \(U\+0000\)/],
  ["image name with a space", (t) => t.client.send(new CreateMicrovmImageCommand(imageRequest("my image") as never)), /'name' must be 1-128 characters/],
  ["code artifact with an unsupported scheme", (t) => t.client.send(create({ codeArtifact: { uri: "ftp://host/app.zip" } })), /'codeArtifact\.uri' must be s3:\/\/bucket\/key/],
  ["build role that is not a role ARN", (t) => t.client.send(create({ buildRoleArn: "MicroVMBuildRole" })), /'buildRoleArn' must be an IAM role ARN/],
  ["logging with both members", (t) => t.client.send(create({ logging: { disabled: {}, cloudWatch: { logGroup: "g" } } })), /'logging' must set exactly one of disabled, cloudWatch/],
  ["memory above the largest size's baseline", (t) => t.client.send(create({ resources: [{ minimumMemoryInMiB: 8193 }] })), /'resources\.0\.minimumMemoryInMiB' must be at most 8192, the largest size's baseline memory; .*512 MiB\/0\.25 vCPU \(peak 2048 MiB\/1 vCPU, 8 GiB disk\), 1024 MiB.*2048 MiB\/1 vCPU \(peak 8192 MiB\/4 vCPU, 8 GiB disk\) \(the default\).*8192 MiB\/4 vCPU \(peak 32768 MiB\/16 vCPU, 32 GiB disk\)/],
  ["memory of 0", (t) => t.client.send(create({ resources: [{ minimumMemoryInMiB: 0 }] })), /'resources\.0\.minimumMemoryInMiB' must be at least 1/],
  ["a MicroVM hook ENABLED without the ready hook", (t) => t.client.send(create({ hooks: { port: 9000, microvmHooks: { run: "ENABLED" } } })), /'hooks\.microvmImageHooks\.ready' must be ENABLED when a MicroVM hook is ENABLED \(run\)/],
  ["a hook ENABLED without hooks.port", (t) => t.client.send(create({ hooks: { microvmImageHooks: { ready: "ENABLED" } } })), /'hooks\.port' is required when a hook is ENABLED \(ready\)/],
  ...["AWS_REGION", "AWS_LAMBDA_MICROVM_IMAGE_NAME", "AWS_LAMBDA_MICROVM_IMAGE_ARN", "AWS_LAMBDA_MICROVM_IMAGE_VERSION"].map((key): Case =>
    [`reserved environment variable ${key}`, (t) => t.client.send(create({ environmentVariables: { [key]: "x" } })), new RegExp(`Environment variable key '${key}' is reserved`)]),
  ["environment variable named with a dash", (t) => t.client.send(create({ environmentVariables: { "MY-VAR": "x" } })), /environment variable names start with a letter/],
  ["an unknown OS capability", (t) => t.client.send(create({ additionalOsCapabilities: ["NET_ADMIN"] })), /the only capability is ALL/],
  ["an architecture this host cannot build", (t) => t.client.send(create({ cpuConfigurations: [{ architecture: process.arch === "arm64" ? "X86_64" : "ARM_64" }] })), /cannot be built on this host/],
  ["a tag key with the aws: prefix", (t) => t.client.send(create({ tags: { "aws:owner": "me" } })), /reserved prefix aws:/],
  ["maxResults of 0", (t) => t.client.send(new ListMicrovmImagesCommand({ maxResults: 0 })), /'maxResults' must be at least 1/],
];

describe("validation", () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform(FAST);
  });
  after(() => t.stop());

  for (const [title, send, message] of cases) {
    test(`${title} is a ValidationException that says what to fix`, async () => {
      const err = await send(t).then(() => undefined, (e: Error & { $metadata?: { httpStatusCode?: number } }) => e);
      assert.ok(err, "the call succeeded");
      assert.equal(err.name, "ValidationException", err.message);
      assert.equal(err.$metadata?.httpStatusCode, 400);
      assert.match(err.message, message);
    });
  }

  test("wrong JSON types, missing members and broken JSON are ValidationExceptions too", async () => {
    const post = (body: unknown) => signedFetch(t.platform.url, t.credentials, "POST", `/2025-09-09/microvms/${VM}/auth-token`, body);
    let r = await post({ expirationInMinutes: "ten", allowedPorts: [{ port: 8080 }] });
    assert.deepEqual([r.status, r.errorType], [400, "ValidationException"]);
    assert.match(String(r.body.message), /'expirationInMinutes' must be a number/);
    r = await post({ allowedPorts: [{ port: 8080 }] });
    assert.match(String(r.body.message), /'expirationInMinutes' is required/);
    r = await post("{not json");
    assert.deepEqual([r.status, r.errorType], [400, "ValidationException"]);
    assert.match(String(r.body.message), /not valid JSON/);
    r = await post("[1,2]");
    assert.match(String(r.body.message), /must be a JSON object/);
  });

  test("nothing was created by the refused requests", async () => {
    const images = await t.client.send(new ListMicrovmImagesCommand({}));
    assert.deepEqual(images.items, []);
  });
});
