// What each operation asks of the caller's policies (src/core/authorization.ts):
// actions, resource ARNs, condition keys, and the extra permissions a request
// needs for the roles and connectors it passes.

import assert from "node:assert/strict";
import { test } from "node:test";
import { connectorAuthorization, logsAuthorization, microvmsApiAuthorization, resourcesOf, type AuthorizationRequest } from "../../src/core/index.js";

const scope = { region: "us-east-1", accountId: "123456789012" };
const image = (n: string) => `arn:aws:lambda:us-east-1:123456789012:microvm-image:${n}`;
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";
const DB = "arn:aws:lambda:us-east-1:123456789012:network-connector:db";
const tags: Record<string, Record<string, string>> = { [image("app")]: { env: "prod" }, [DB]: { team: "data" } };
const tagsOf = async (arn: string) => tags[arn] ?? {};
const PASSED = { "iam:PassedToService": "lambda.amazonaws.com" };

test("RunMicrovm: the image (with its tags), then iam:PassRole on the execution role, then lambda:PassNetworkConnector on every connector it names", async () => {
  const requests = await microvmsApiAuthorization(scope, "RunMicrovm", {
    imageIdentifier: image("app"), executionRoleArn: "arn:aws:iam::123456789012:role/exec",
    ingressNetworkConnectors: [HTTP], egressNetworkConnectors: [`${DB}:3`, HTTP],
  }, tagsOf);
  assert.deepEqual(requests, [
    { action: "lambda:RunMicrovm", resources: [image("app")], context: {}, resourceTags: { [image("app")]: { env: "prod" } } },
    { action: "iam:PassRole", resources: ["arn:aws:iam::123456789012:role/exec"], context: PASSED },
    // A version-qualified connector has its connector's tags; a connector named twice is asked once.
    { action: "lambda:PassNetworkConnector", resources: [HTTP, `${DB}:3`], context: {}, resourceTags: { [`${DB}:3`]: { team: "data" } } },
  ] satisfies AuthorizationRequest[]);
  assert.deepEqual(resourcesOf(requests), [image("app"), "arn:aws:iam::123456789012:role/exec", HTTP, `${DB}:3`]);
  // Nothing named, nothing more asked.
  assert.equal((await microvmsApiAuthorization(scope, "RunMicrovm", { imageIdentifier: image("bare") }, tagsOf)).length, 1);
});

test("CreateMicrovmImage brings its tags as aws:RequestTag/aws:TagKeys and passes its build role and egress connectors; UpdateMicrovmImage the same on the existing image", async () => {
  const created = await microvmsApiAuthorization(scope, "CreateMicrovmImage", { name: "new", tags: { team: "blue", cost: "7" }, buildRoleArn: "arn:aws:iam::123456789012:role/build", egressNetworkConnectors: [DB] }, tagsOf);
  assert.deepEqual(created.map((r) => [r.action, r.resources, r.context]), [
    ["lambda:CreateMicrovmImage", [image("new")], { "aws:TagKeys": ["team", "cost"], "aws:RequestTag/team": "blue", "aws:RequestTag/cost": "7" }],
    ["iam:PassRole", ["arn:aws:iam::123456789012:role/build"], PASSED],
    ["lambda:PassNetworkConnector", [DB], {}],
  ]);
  const updated = await microvmsApiAuthorization(scope, "UpdateMicrovmImage", { imageIdentifier: "app", buildRoleArn: "arn:aws:iam::123456789012:role/build" }, tagsOf);
  assert.deepEqual(updated.map((r) => [r.action, r.resources, r.resourceTags]), [
    ["lambda:UpdateMicrovmImage", [image("app")], { [image("app")]: { env: "prod" } }],
    ["iam:PassRole", ["arn:aws:iam::123456789012:role/build"], undefined],
  ]);
});

test("resources: image names become ARNs, MicroVM ids MicroVM ARNs, managed images the aws account's ARN, lists '*'; a malformed identifier is the operation's ValidationException", async () => {
  const one = async (op: Parameters<typeof microvmsApiAuthorization>[1], input: Record<string, unknown>) => (await microvmsApiAuthorization(scope, op, input, tagsOf)).map((r) => `${r.action} ${r.resources.join(",")}`);
  assert.deepEqual(await one("GetMicrovmImageBuild", { imageIdentifier: "app", imageVersion: "1.0", buildId: "b" }), [`lambda:GetMicrovmImageBuild ${image("app")}`]);
  assert.deepEqual(await one("SuspendMicrovm", { microvmIdentifier: "microvm-0123456789abcdef0" }), ["lambda:SuspendMicrovm arn:aws:lambda:us-east-1:123456789012:microvm:microvm-0123456789abcdef0"]);
  assert.deepEqual(await one("ListManagedMicrovmImageVersions", { imageIdentifier: "busybox" }), ["lambda:ListManagedMicrovmImageVersions arn:aws:lambda:us-east-1:aws:microvm-image:busybox"]);
  assert.deepEqual(await one("ListMicrovms", { imageIdentifier: "app" }), ["lambda:ListMicrovms *"]);
  assert.deepEqual(await one("UntagResource", { Resource: image("app"), TagKeys: ["a", "b"] }), [`lambda:UntagResource ${image("app")}`]);
  assert.deepEqual((await microvmsApiAuthorization(scope, "UntagResource", { Resource: image("app"), TagKeys: ["a", "b"] }, tagsOf))[0]!.context, { "aws:TagKeys": ["a", "b"] });
  await assert.rejects(microvmsApiAuthorization(scope, "GetMicrovm", { microvmIdentifier: "vm-1" }, tagsOf), { name: "Error", message: /must be a MicroVM id such as microvm-0123456789abcdef0/ });
  await assert.rejects(microvmsApiAuthorization(scope, "GetMicrovmImage", { imageIdentifier: "arn:aws:s3:::bucket/key" }, tagsOf), /is not a MicroVM image ARN/);
});

// The connector store's resolver, as ConnectorService.canonicalArn: id, name or ARN to the connector's ARN.
const canonical = async (identifier: string) => (["db", "nc-0123456789abcdef", DB].includes(identifier) ? DB : identifier === `${DB}:3` ? `${DB}:3` : undefined);

test("connector operations: the connector's ARN (by name or ARN) with its tags, '*' to list, iam:PassRole on an OperatorRole", async () => {
  assert.deepEqual(await connectorAuthorization(scope, "GetNetworkConnector", "db", {}, tagsOf, canonical), [{ action: "lambda:GetNetworkConnector", resources: [DB], context: {}, resourceTags: { [DB]: { team: "data" } } }]);
  assert.deepEqual((await connectorAuthorization(scope, "ListNetworkConnectors", undefined, {}, tagsOf, canonical))[0]!.resources, ["*"]);
  const created = await connectorAuthorization(scope, "CreateNetworkConnector", undefined, { Name: "db2", Tags: { team: "x" }, OperatorRole: "arn:aws:iam::123456789012:role/op" }, tagsOf, canonical);
  assert.deepEqual(created.map((r) => [r.action, r.resources, r.context]), [
    ["lambda:CreateNetworkConnector", ["arn:aws:lambda:us-east-1:123456789012:network-connector:db2"], { "aws:TagKeys": ["team"], "aws:RequestTag/team": "x" }],
    ["iam:PassRole", ["arn:aws:iam::123456789012:role/op"], PASSED],
  ]);
});

test("what is authorised is the resource acted on: a MicroVM or image ARN in any other form is refused, a connector id is authorised as its connector's ARN (with its tags)", async () => {
  const vm = "arn:aws:lambda:us-east-1:123456789012:microvm:microvm-0123456789abcdef0";
  const one = async (input: Record<string, unknown>) => (await microvmsApiAuthorization(scope, "TerminateMicrovm", input, tagsOf))[0]!.resources;
  assert.deepEqual(await one({ microvmIdentifier: vm }), [vm]);
  assert.deepEqual(await one({ microvmIdentifier: "microvm-0123456789abcdef0" }), [vm]);
  // Each of these used to be authorised as sent (escaping a Deny on arn:aws:lambda:*:*:microvm:*) while acting on the same MicroVM.
  for (const bad of [
    "arn:aws:lambda:us-east-1:123456789012:microvm/microvm-0123456789abcdef0",
    "arn:aws-cn:lambda:us-east-1:123456789012:microvm:microvm-0123456789abcdef0",
    "arn:aws:s3:us-east-1:123456789012:microvm:microvm-0123456789abcdef0",
  ]) {
    await assert.rejects(microvmsApiAuthorization(scope, "TerminateMicrovm", { microvmIdentifier: bad }, tagsOf), { name: "Error", message: /must be a MicroVM id such as microvm-0123456789abcdef0/ }, bad);
  }
  for (const bad of ["arn:aws:lambda:us-east-1:123456789012:microvm-image/app", "arn:aws-cn:lambda:us-east-1:123456789012:microvm-image:app", "arn:aws:s3:us-east-1:123456789012:microvm-image:app"]) {
    await assert.rejects(microvmsApiAuthorization(scope, "GetMicrovmImage", { imageIdentifier: bad }, tagsOf), /is not a MicroVM image ARN/, bad);
  }
  // A connector id resolves to its ARN: a Deny or tag condition on the ARN applies.
  assert.deepEqual(await connectorAuthorization(scope, "DeleteNetworkConnector", "nc-0123456789abcdef", {}, tagsOf, canonical), [{ action: "lambda:DeleteNetworkConnector", resources: [DB], context: {}, resourceTags: { [DB]: { team: "data" } } }]);
  assert.deepEqual((await connectorAuthorization(scope, "GetNetworkConnector", `${DB}:3`, {}, tagsOf, canonical))[0]!.resourceTags, { [`${DB}:3`]: { team: "data" } });
});

test("CloudWatch Logs: the group ARN (by name or ARN), the stream ARN for GetLogEvents, '*' for DescribeLogGroups", () => {
  const group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda-microvms/app:*";
  assert.deepEqual(logsAuthorization(scope, "DescribeLogGroups", { logGroupNamePrefix: "/aws" })[0]!.resources, ["*"]);
  assert.deepEqual(logsAuthorization(scope, "FilterLogEvents", { logGroupName: "/aws/lambda-microvms/app" })[0]!.resources, [group]);
  assert.deepEqual(logsAuthorization(scope, "DescribeLogStreams", { logGroupIdentifier: group })[0]!.resources, [group]);
  assert.deepEqual(logsAuthorization(scope, "GetLogEvents", { logGroupName: "/aws/lambda-microvms/app", logStreamName: "microvms/microvm-0123456789abcdef0" })[0], {
    action: "logs:GetLogEvents", resources: ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda-microvms/app:log-stream:microvms/microvm-0123456789abcdef0"], context: {},
  });
});
