// Ingress network connectors through the official SDK client: which ones
// RunMicrovm takes, what it records when none is given, and which tokens each
// combination allows (the endpoint proxy applies the same rules to
// connections). The sandbox runtime is scripted (test/support/scripted.ts):
// these are API-level rules.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, GetMicrovmImageCommand, RunMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import { rejects } from "../support/assertions.js";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const IMAGE_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm-image:app";
const connector = (name: string, region = "us-east-1") => `arn:aws:lambda:${region}:aws:network-connector:aws-network-connector:${name}`;
const HTTP = connector("HTTP_INGRESS");
const SHELL = connector("SHELL_INGRESS");
const ALL = connector("ALL_INGRESS");
const NONE = connector("NO_INGRESS");
const COMBINED = /ALL_INGRESS cannot be combined with other ingress network connectors; use HTTP_INGRESS and\/or SHELL_INGRESS instead/;

describe("ingress connectors", () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  builder.always({ snapshot: { memorySnapshotSizeInBytes: 1 } });

  before(async () => {
    // The scripted runtime starts MicroVMs faster than RunMicrovm's documented 5 per second.
    t = await startTestPlatform({ builder, runtime: new ScriptedRuntime(), rateLimits: { "*": 10_000 } });
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app")));
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "app" }))).state === "CREATED" ? true : undefined), "image built");
  });
  after(() => t.stop());

  const run = (ingressNetworkConnectors?: string[]) => t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, ...(ingressNetworkConnectors ? { ingressNetworkConnectors } : {}) }));
  const endpointToken = (id: string) => t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] }));
  const shellToken = (id: string) => t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5 }));

  test("none given: HTTP_INGRESS, recorded so that GetMicrovm shows it; an endpoint token, no shell", async () => {
    for (const given of [undefined, []]) {
      const vm = await run(given);
      assert.deepEqual(vm.ingressNetworkConnectors, [HTTP]);
      assert.deepEqual((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: vm.microvmId! }))).ingressNetworkConnectors, [HTTP]);
      assert.ok((await endpointToken(vm.microvmId!)).authToken?.["X-aws-proxy-auth"]);
      await rejects(shellToken(vm.microvmId!), "ValidationException", /Shell access requires SHELL_INGRESS network connector\. This MicroVM was run with HTTP_INGRESS/);
    }
  });

  test("a bare connector name is a malformed ARN; the message gives the ARN to use", async () => {
    await rejects(run(["SHELL_INGRESS"]), "ValidationException", new RegExp(`Malformed network connector ARN: 'SHELL_INGRESS'\\. Pass the connector's ARN, ${SHELL}`));
    await rejects(run(["shell"]), "ValidationException", /Malformed network connector ARN: 'shell'\. Connectors are ARNs such as arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS/);
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE_ARN, egressNetworkConnectors: ["INTERNET_EGRESS"] })), "ValidationException", /egressNetworkConnectors: Malformed network connector ARN: 'INTERNET_EGRESS'/);
    await rejects(t.client.send(new CreateMicrovmImageCommand(imageRequest("bad-egress", { egressNetworkConnectors: ["INTERNET_EGRESS"] }))), "ValidationException", /Malformed network connector ARN/);
  });

  test("a well-formed ARN of a connector not on offer (another name, another region, an egress one) lists those that are", async () => {
    for (const arn of [connector("NOPE"), connector("HTTP_INGRESS", "eu-west-1"), connector("INTERNET_EGRESS")]) {
      await rejects(run([arn]), "ValidationException", new RegExp(`'${arn}' is not a known connector in us-east-1\\. Available: ${HTTP}, ${SHELL}, ${ALL}, ${NONE}\\.`));
    }
  });

  test("HTTP_INGRESS and SHELL_INGRESS: both tokens; a connector given twice is recorded once", async () => {
    const vm = await run([HTTP, SHELL, HTTP]);
    assert.deepEqual(vm.ingressNetworkConnectors, [HTTP, SHELL]);
    assert.ok((await endpointToken(vm.microvmId!)).authToken?.["X-aws-proxy-auth"]);
    assert.ok((await shellToken(vm.microvmId!)).authToken?.["X-aws-proxy-auth"]);
  });

  test("SHELL_INGRESS alone: a shell token, no endpoint token", async () => {
    const vm = await run([SHELL]);
    assert.ok((await shellToken(vm.microvmId!)).authToken?.["X-aws-proxy-auth"]);
    await rejects(endpointToken(vm.microvmId!), "ValidationException", /Endpoint access requires the HTTP_INGRESS or ALL_INGRESS network connector\. This MicroVM was run with SHELL_INGRESS only/);
  });

  test("ALL_INGRESS alone: an endpoint token, but no shell (ALL_INGRESS does not include it)", async () => {
    const vm = await run([ALL]);
    assert.ok((await endpointToken(vm.microvmId!)).authToken?.["X-aws-proxy-auth"]);
    await rejects(shellToken(vm.microvmId!), "ValidationException", /Shell access requires SHELL_INGRESS network connector\. This MicroVM was run with ALL_INGRESS \(ALL_INGRESS does not include the shell\)/);
  });

  test("ALL_INGRESS with another ingress connector: RunMicrovm takes it, but no token of either kind can be made", async () => {
    for (const other of [HTTP, SHELL]) {
      const vm = await run([ALL, other]);
      assert.equal(vm.state, "PENDING");
      assert.deepEqual(vm.ingressNetworkConnectors, [ALL, other]);
      await rejects(endpointToken(vm.microvmId!), "ValidationException", COMBINED);
      await rejects(shellToken(vm.microvmId!), "ValidationException", COMBINED);
    }
  });

  test("NO_INGRESS: RunMicrovm takes it alone, and no token of either kind can be made", async () => {
    const vm = await run([NONE]);
    assert.deepEqual(vm.ingressNetworkConnectors, [NONE]);
    await rejects(endpointToken(vm.microvmId!), "ValidationException", /run with the NO_INGRESS network connector, so it accepts no inbound access/);
    await rejects(shellToken(vm.microvmId!), "ValidationException", /NO_INGRESS/);
  });

  test("NO_INGRESS with another ingress connector is a ValidationException at RunMicrovm", async () => {
    for (const other of [HTTP, SHELL, ALL]) {
      await rejects(run([NONE, other]), "ValidationException", /ingressNetworkConnectors: NO_INGRESS turns all inbound access off, so it cannot be combined with (HTTP|SHELL|ALL)_INGRESS/);
    }
  });
});
