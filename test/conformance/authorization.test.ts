// Every API operation is authorised against the caller's policies: IAM users
// made with the official IAM client, then the MicroVMs API (official SDK),
// Lambda Core's connector API and CloudWatch Logs called with their keys.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CloudWatchLogsClient, DescribeLogGroupsCommand, FilterLogEventsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { PutUserPolicyCommand, UpdateAccessKeyCommand, type IAMClient } from "@aws-sdk/client-iam";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, ListMicrovmsCommand, RunMicrovmCommand, TagResourceCommand,
  UntagResourceCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { rejects } from "../support/assertions.js";
import { ACCOUNT, allow, deny, iamClient, imageArnOf, policy, roleArn, userArn, userWithPolicy, type Keys } from "../support/iam.js";
import { BUILD_ROLE_ARN, imageRequest, sdkClient, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { signedFetch } from "../support/signed-fetch.js";

const REGION = "us-east-1";
const connectorOf = (name: string) => `arn:aws:lambda:${REGION}:aws:network-connector:aws-network-connector:${name}`;
const HTTP_INGRESS = connectorOf("HTTP_INGRESS");
const SHELL_INGRESS = connectorOf("SHELL_INGRESS");
const notAuthorized = (user: string, action: string, resource: string) =>
  new RegExp(`^User: ${userArn(user)} is not authorized to perform: ${action} on resource: ${resource.replace(/[*]/g, "\\*")} because no identity-based policy allows the ${action} action$`);

describe("authorization of the MicroVMs, Lambda Core and CloudWatch Logs APIs", () => {
  let t: TestPlatform;
  let iam: IAMClient;
  const clients: { destroy(): void }[] = [];
  const lambdaAs = (keys: Keys): LambdaMicrovmsClient => {
    const c = sdkClient(t.platform.url, keys);
    clients.push(c);
    return c;
  };

  before(async () => {
    t = await startTestPlatform({ quotas: { "concurrent-builds": 100 } });
    iam = iamClient(t.platform.url, t.credentials);
    // Root makes the images; without a builder their builds wait in the queue.
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app-a")));
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("app-b")));
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("prod-img", { tags: { env: "prod" } })));
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("dev-img", { tags: { env: "dev" } })));
  });
  after(async () => {
    for (const c of clients) c.destroy();
    iam.destroy();
    await t.stop();
  });

  test("a user limited to lambda:RunMicrovm on one image ARN can run that image and nothing else", async () => {
    const lambda = lambdaAs(await userWithPolicy(iam, "runner", policy(allow("lambda:RunMicrovm", imageArnOf("app-a")))));
    // Authorised: the run then fails only because the image has no built version yet (no builder here).
    const passed = await lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a") })).then(() => undefined, (e: Error) => e);
    assert.ok(passed, "RunMicrovm cannot succeed without a built version");
    assert.equal(passed.name, "ConflictException", passed.message);
    assert.match(passed.message, /has no SUCCESSFUL, ACTIVE version to run yet/);

    const other = await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-b") })), "AccessDeniedException", notAuthorized("runner", "lambda:RunMicrovm", imageArnOf("app-b")));
    assert.equal((other as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 403);
    await rejects(lambda.send(new GetMicrovmImageCommand({ imageIdentifier: "app-a" })), "AccessDeniedException", notAuthorized("runner", "lambda:GetMicrovmImage", imageArnOf("app-a")));
    await rejects(lambda.send(new ListMicrovmsCommand({})), "AccessDeniedException", notAuthorized("runner", "lambda:ListMicrovms", "*"));
    await rejects(lambda.send(new GetMicrovmCommand({ microvmIdentifier: "microvm-0123456789abcdef0" })), "AccessDeniedException",
      notAuthorized("runner", "lambda:GetMicrovm", `arn:aws:lambda:${REGION}:${ACCOUNT}:microvm:microvm-0123456789abcdef0`));
    // Naming a role or a connector needs iam:PassRole and lambda:PassNetworkConnector, which it was not given.
    await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), executionRoleArn: roleArn("exec") })), "AccessDeniedException", notAuthorized("runner", "iam:PassRole", roleArn("exec")));
    await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), ingressNetworkConnectors: [HTTP_INGRESS] })), "AccessDeniedException", notAuthorized("runner", "lambda:PassNetworkConnector", HTTP_INGRESS));
  });

  test("RunMicrovm checks iam:PassRole (with iam:PassedToService) on the execution role and lambda:PassNetworkConnector on each connector", async () => {
    const lambda = lambdaAs(await userWithPolicy(iam, "passer", policy(
      allow("lambda:RunMicrovm"),
      allow("iam:PassRole", roleArn("exec"), { StringEquals: { "iam:PassedToService": "lambda.amazonaws.com" } }),
      allow("iam:PassRole", roleArn("for-ec2"), { StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } }),
      allow("lambda:PassNetworkConnector", HTTP_INGRESS),
    )));
    const passed = await lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), executionRoleArn: roleArn("exec"), ingressNetworkConnectors: [HTTP_INGRESS] })).then(() => undefined, (e: Error) => e);
    assert.equal(passed?.name, "ConflictException", passed?.message);
    await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), executionRoleArn: roleArn("admin") })), "AccessDeniedException", notAuthorized("passer", "iam:PassRole", roleArn("admin")));
    // Allowed to pass for-ec2 only to EC2: Lambda is refused.
    await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), executionRoleArn: roleArn("for-ec2") })), "AccessDeniedException", /iam:PassRole/);
    await rejects(lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArnOf("app-a"), ingressNetworkConnectors: [HTTP_INGRESS, SHELL_INGRESS] })), "AccessDeniedException", notAuthorized("passer", "lambda:PassNetworkConnector", SHELL_INGRESS));
    // CreateMicrovmImage checks iam:PassRole on the build role.
    await rejects(lambda.send(new CreateMicrovmImageCommand(imageRequest("by-passer"))), "AccessDeniedException", notAuthorized("passer", "lambda:CreateMicrovmImage", imageArnOf("by-passer")));
  });

  test("an explicit deny on a tag condition (aws:ResourceTag) wins over an allow, on images and connectors", async () => {
    const keys = await userWithPolicy(iam, "no-prod", policy(
      allow(["lambda:GetMicrovmImage", "lambda:GetNetworkConnector"]),
      deny(["lambda:GetMicrovmImage", "lambda:GetNetworkConnector"], "*", { StringEquals: { "aws:ResourceTag/env": "prod" } }),
    ));
    const lambda = lambdaAs(keys);
    assert.equal((await lambda.send(new GetMicrovmImageCommand({ imageIdentifier: "dev-img" }))).name, "dev-img");
    await rejects(lambda.send(new GetMicrovmImageCommand({ imageIdentifier: "prod-img" })), "AccessDeniedException",
      new RegExp(`^User: ${userArn("no-prod")} is not authorized to perform: lambda:GetMicrovmImage on resource: ${imageArnOf("prod-img")} with an explicit deny in an identity-based policy$`));

    const configuration = { HostEgressConfiguration: { Destinations: [{ Cidr: "10.77.0.0/24", Protocol: "tcp", PortRange: { From: 5432, To: 5432 } }], NetworkProtocol: "IPv4", AssociatedComputeResourceTypes: ["MicroVm"] } };
    for (const [name, env] of [["db-prod", "prod"], ["db-dev", "dev"]] as const) {
      const made = await signedFetch(t.platform.url, t.credentials, "POST", "/2026-04-04/network-connectors", { Name: name, Configuration: configuration, Tags: { env } });
      assert.equal(made.status, 202, JSON.stringify(made.body));
    }
    assert.equal((await signedFetch(t.platform.url, keys, "GET", "/2026-04-04/network-connectors/db-dev")).status, 200);
    const refused = await signedFetch(t.platform.url, keys, "GET", "/2026-04-04/network-connectors/db-prod");
    assert.equal(refused.status, 403);
    assert.equal(refused.errorType, "AccessDeniedException");
    assert.deepEqual(refused.body, {
      Type: "User",
      message: `User: ${userArn("no-prod")} is not authorized to perform: lambda:GetNetworkConnector on resource: arn:aws:lambda:${REGION}:${ACCOUNT}:network-connector:db-prod with an explicit deny in an identity-based policy`,
    });
    const list = await signedFetch(t.platform.url, keys, "GET", "/2026-04-04/network-connectors");
    assert.equal(list.status, 403);
    assert.match(String(list.body.message), /lambda:ListNetworkConnectors on resource: \*/);
  });

  test("a deactivated access key is refused, and works again once reactivated", async () => {
    const keys = await userWithPolicy(iam, "rotating", policy(allow("lambda:ListMicrovms")));
    const lambda = lambdaAs(keys);
    await lambda.send(new ListMicrovmsCommand({}));
    await iam.send(new UpdateAccessKeyCommand({ UserName: "rotating", AccessKeyId: keys.accessKeyId, Status: "Inactive" }));
    await rejects(lambda.send(new ListMicrovmsCommand({})), "UnrecognizedClientException");
    await iam.send(new UpdateAccessKeyCommand({ UserName: "rotating", AccessKeyId: keys.accessKeyId, Status: "Active" }));
    await lambda.send(new ListMicrovmsCommand({}));
  });

  test("conditions on aws:SourceIp (IpAddress) and aws:CurrentTime (DateLessThan)", async () => {
    const keys = await userWithPolicy(iam, "conditional", policy(allow("lambda:ListMicrovms", "*", { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } })));
    const lambda = lambdaAs(keys);
    const put = (document: string) => iam.send(new PutUserPolicyCommand({ UserName: "conditional", PolicyName: "main", PolicyDocument: document }));
    await rejects(lambda.send(new ListMicrovmsCommand({})), "AccessDeniedException", /lambda:ListMicrovms/);
    await put(policy(allow("lambda:ListMicrovms", "*", { IpAddress: { "aws:SourceIp": ["10.0.0.0/8", "127.0.0.0/8"] } })));
    await lambda.send(new ListMicrovmsCommand({}));
    await put(policy(allow("lambda:ListMicrovms", "*", { DateLessThan: { "aws:CurrentTime": "2001-01-01T00:00:00Z" } })));
    await rejects(lambda.send(new ListMicrovmsCommand({})), "AccessDeniedException");
    await put(policy(allow("lambda:ListMicrovms", "*", { DateLessThan: { "aws:CurrentTime": "2999-01-01T00:00:00Z" } })));
    await lambda.send(new ListMicrovmsCommand({}));
  });

  test("conditions on aws:RequestTag/<key> and aws:TagKeys: CreateMicrovmImage and TagResource carry the request's tags", async () => {
    const lambda = lambdaAs(await userWithPolicy(iam, "tagger", policy(
      allow(["lambda:CreateMicrovmImage", "lambda:TagResource"], "*", { StringEquals: { "aws:RequestTag/team": "blue" }, "ForAllValues:StringEquals": { "aws:TagKeys": ["team"] } }),
      allow("lambda:UntagResource", "*", { "ForAllValues:StringEquals": { "aws:TagKeys": ["scratch"] } }),
      allow("iam:PassRole", BUILD_ROLE_ARN),
    )));
    const made = await lambda.send(new CreateMicrovmImageCommand(imageRequest("blue-img", { tags: { team: "blue" } })));
    assert.equal(made.imageArn, imageArnOf("blue-img"));
    await rejects(lambda.send(new CreateMicrovmImageCommand(imageRequest("red-img", { tags: { team: "red" } }))), "AccessDeniedException", /lambda:CreateMicrovmImage/);
    await rejects(lambda.send(new CreateMicrovmImageCommand(imageRequest("two-tags", { tags: { team: "blue", cost: "x" } }))), "AccessDeniedException", /lambda:CreateMicrovmImage/);
    await rejects(lambda.send(new CreateMicrovmImageCommand(imageRequest("untagged"))), "AccessDeniedException", /lambda:CreateMicrovmImage/);

    await lambda.send(new TagResourceCommand({ Resource: imageArnOf("app-b"), Tags: { team: "blue" } }));
    await rejects(lambda.send(new TagResourceCommand({ Resource: imageArnOf("app-b"), Tags: { team: "green" } })), "AccessDeniedException", new RegExp(`lambda:TagResource on resource: ${imageArnOf("app-b")}`));
    await rejects(lambda.send(new UntagResourceCommand({ Resource: imageArnOf("app-b"), TagKeys: ["team"] })), "AccessDeniedException", /lambda:UntagResource/);
    await lambda.send(new UntagResourceCommand({ Resource: imageArnOf("app-b"), TagKeys: ["scratch"] }));
  });

  test("CloudWatch Logs and lmvm's log routes are authorised too: logs:<Operation> on the log group, GetMicrovm for a MicroVM's output", async () => {
    const keys = await userWithPolicy(iam, "log-reader", policy(
      allow("logs:DescribeLogGroups"),
      allow("logs:FilterLogEvents", `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/aws/lambda-microvms/app-a:*`),
    ));
    const logs = new CloudWatchLogsClient({ endpoint: t.platform.url, region: REGION, credentials: keys, maxAttempts: 1 });
    clients.push(logs);
    await logs.send(new DescribeLogGroupsCommand({}));
    // Authorised, then: the group has no logs yet.
    await rejects(logs.send(new FilterLogEventsCommand({ logGroupName: "/aws/lambda-microvms/app-a" })), "ResourceNotFoundException");
    const refused = await rejects(logs.send(new FilterLogEventsCommand({ logGroupName: "/aws/lambda-microvms/app-b" })), "AccessDeniedException",
      notAuthorized("log-reader", "logs:FilterLogEvents", `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/aws/lambda-microvms/app-b:*`));
    assert.equal((refused as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 400, "awsJson1_1's status for AccessDeniedException");

    const output = await signedFetch(t.platform.url, keys, "GET", "/lmvm/2025-09-09/microvms/microvm-0123456789abcdef0/logs");
    assert.equal(output.status, 403);
    assert.equal(output.errorType, "AccessDeniedException");
    assert.match(String(output.body.message), notAuthorized("log-reader", "lambda:GetMicrovm", `arn:aws:lambda:${REGION}:${ACCOUNT}:microvm:microvm-0123456789abcdef0`));
  });
});
