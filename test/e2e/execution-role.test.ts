// Execution-role credentials inside MicroVMs, delivered as AWS delivers them: an instance-metadata
// service at 169.254.169.254 with the IMDSv2 token flow (src/metadata). A Node app
// (@aws-sdk/client-lambda-microvms) and a Python app (botocore's default chain and SigV4Auth),
// with no keys configured, call lmvm's own API through the test internet's relay to it
// (test/support/test-network.ts: the host's own addresses are refused to MicroVMs) and can do
// exactly what the role's policy allows, after a suspend and resume too; a MicroVM without a role
// gets no credentials; a role that does not trust lambda.amazonaws.com gets EC2's refusal; IMDSv1
// is refused, and one MicroVM's token is useless in another. The image's build role serves its
// RUN step and its snapshot boot. Roles are made with @aws-sdk/client-iam against the server. One
// image, built once.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CreateRoleCommand, PutRolePolicyCommand } from "@aws-sdk/client-iam";
import {
  CreateMicrovmImageCommand, GetMicrovmImageBuildCommand, GetMicrovmImageCommand, ListMicrovmImageBuildsCommand, GetMicrovmCommand, ResumeMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand,
  type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { IAMClient } from "@aws-sdk/client-iam";
import { probeCaller, type ProbeApp } from "../support/egress-probe-app.js";
import { executionRoleAppZip } from "../support/execution-role-app.js";
import { allow, ACCOUNT, iamClient, imageArnOf, policy, roleArn } from "../support/iam.js";
import { eventually, readCredentials, sdkClient, tempDir } from "../support/platform.js";
import { spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";
import { startTestNetwork, type TestNetwork } from "../support/test-network.js";

const managed = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const IMAGE = "exec-role-app";
const APPS: ProbeApp[] = ["node", "python"];
const trustLambda = (service = "lambda.amazonaws.com") => policy({ Effect: "Allow", Principal: { Service: service }, Action: ["sts:AssumeRole", "sts:TagSession"] });

interface Answer {
  app: string;
  ok?: boolean;
  error?: string;
  message?: string;
  status?: number;
  body?: string;
  token?: string;
  data?: Record<string, unknown>;
  run?: Record<string, unknown> & { listImages?: Answer; listMicrovms?: Answer };
  boot?: { listImages?: Answer; listMicrovms?: Answer };
}

describe("execution-role credentials inside MicroVMs", { timeout: 1_200_000 }, () => {
  let net: TestNetwork;
  let dataDir: string;
  let server: ServerProcess;
  let client: LambdaMicrovmsClient;
  let iam: IAMClient;
  let call: (vm: string, app: ProbeApp, probe: string, params: Record<string, string | number>) => Promise<Answer>;
  const vm = { role: "", none: "", untrusted: "" };

  const state = async (id: string) => (await client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), `${id} to be ${want}`, 180_000);
  const run = async (executionRoleArn?: string) => {
    const out = await client.send(new RunMicrovmCommand({
      imageIdentifier: imageArnOf(IMAGE), ingressNetworkConnectors: [managed("HTTP_INGRESS")], egressNetworkConnectors: [managed("INTERNET_EGRESS")],
      ...(executionRoleArn ? { executionRoleArn } : {}),
    }));
    await until(out.microvmId!, "RUNNING");
    return out.microvmId!;
  };
  const both = (id: string, op: string, image?: string) => Promise.all(APPS.map((app) => call(id, app, "call", { op, ...(image ? { image } : {}) })));
  const imds = (id: string, path: string, token = "fresh") => call(id, "node", "imds", { path, token });
  const credsDoc = async (id: string) => JSON.parse((await imds(id, "/latest/meta-data/iam/security-credentials/execution_role")).body!) as Record<string, string>;

  /** The role's policy, exactly: GetMicrovmImage on this image, ListMicrovms; nothing else. */
  const canDoExactlyWhatTheRoleAllows = async (id: string) => {
    const session = `arn:aws:sts::${ACCOUNT}:assumed-role/app-exec/${id}`;
    for (const a of await both(id, "GetMicrovmImage", IMAGE)) {
      assert.equal(a.ok, true, `${a.app} GetMicrovmImage: ${JSON.stringify(a)}`);
      assert.equal(a.data!.name, IMAGE);
    }
    for (const a of await both(id, "ListMicrovms")) {
      assert.equal(a.ok, true, `${a.app} ListMicrovms: ${JSON.stringify(a)}`);
      assert.ok((a.data!.items as { microvmId: string }[]).some((m) => m.microvmId === id), `${a.app}: its own MicroVM is listed`);
    }
    for (const [op, image, action, resource] of [["ListMicrovmImages", undefined, "lambda:ListMicrovmImages", "\\*"], ["GetMicrovmImage", "some-other-image", "lambda:GetMicrovmImage", imageArnOf("some-other-image")]] as const) {
      for (const a of await both(id, op, image)) {
        assert.equal(a.ok, false, `${a.app} ${op} is outside the role's policy: ${JSON.stringify(a)}`);
        assert.equal(a.error, "AccessDeniedException", `${a.app} ${op}: ${JSON.stringify(a)}`);
        assert.match(a.message!, new RegExp(`^User: ${session.replace(/[/.]/g, "\\$&")} is not authorized to perform: ${action} on resource: ${resource.replace(/[/.:]/g, "\\$&")} because no identity-based policy allows the ${action} action`), `${a.app}: ${a.message}`);
      }
    }
  };

  before(async () => {
    net = await startTestNetwork();
    dataDir = tempDir();
    server = await spawnServer(dataDir, { builds: true, args: ["--dns-resolvers", net.resolvers.join(",")] });
    await net.internet.apiRelay.forwardTo(server.url);
    const root = readCredentials(dataDir);
    client = sdkClient(server.url, root);
    iam = iamClient(server.url, root);
    call = probeCaller({ endpointPort: server.endpointPort, dataDir, client }) as typeof call;
    // The execution role: this image and ListMicrovms. The build role: ListMicrovmImages. A role only EC2 may assume.
    await iam.send(new CreateRoleCommand({ RoleName: "app-exec", AssumeRolePolicyDocument: trustLambda() }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "app-exec", PolicyName: "app", PolicyDocument: policy(allow("lambda:GetMicrovmImage", imageArnOf(IMAGE)), allow("lambda:ListMicrovms")) }));
    await iam.send(new CreateRoleCommand({ RoleName: "app-build", AssumeRolePolicyDocument: trustLambda() }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "app-build", PolicyName: "build", PolicyDocument: policy(allow("lambda:ListMicrovmImages")) }));
    await iam.send(new CreateRoleCommand({ RoleName: "ec2-only", AssumeRolePolicyDocument: trustLambda("ec2.amazonaws.com") }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "ec2-only", PolicyName: "all", PolicyDocument: policy(allow("lambda:*")) }));

    const zip = join(tempDir("lmvm-exec-role-"), "app.zip");
    writeFileSync(zip, executionRoleAppZip(net.internet.apiRelay.url));
    await client.send(new CreateMicrovmImageCommand({
      name: IMAGE, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: roleArn("app-build"),
      codeArtifact: { uri: `file://${zip}` }, egressNetworkConnectors: [managed("INTERNET_EGRESS")],
      hooks: { port: 8080, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 120 } },
    }));
    const image = await eventually(async () => {
      const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: IMAGE }));
      return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
    }, `the ${IMAGE} image build`, 600_000);
    if (image.state !== "CREATED") {
      const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: IMAGE, imageVersion: "1.0" }));
      const b = await client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: IMAGE, imageVersion: "1.0", buildId: builds.items![0]!.buildId }));
      assert.fail(`the build failed: ${b.stateReason}`);
    }
    vm.role = await run(roleArn("app-exec"));
    vm.none = await run();
    vm.untrusted = await run(roleArn("ec2-only"));
  });
  after(async () => {
    for (const id of Object.values(vm)) if (id) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    client?.destroy();
    iam?.destroy();
    await server?.kill();
    if (dataDir) await freeSandboxes(dataDir);
    await net?.close();
  });

  test("the build role serves the build: its RUN step (Python) and its snapshot boot (Node) get its credentials and may do what it allows, nothing else", async () => {
    const build = await call(vm.role, "node", "build", {});
    const { run: step, boot } = build;
    assert.equal(step!.listing, "execution_role", JSON.stringify(step));
    assert.equal(step!.code, "Success", JSON.stringify(step));
    for (const [what, seen] of [["the RUN step", step!], ["the snapshot boot", boot!]] as const) {
      assert.equal(seen.listImages?.ok, true, `${what}: ListMicrovmImages with the build role: ${JSON.stringify(seen)}`);
      assert.equal(seen.listMicrovms?.error, "AccessDeniedException", `${what}: ${JSON.stringify(seen)}`);
      assert.match(seen.listMicrovms!.message!, new RegExp(`^User: arn:aws:sts::${ACCOUNT}:assumed-role/app-build/\\S+ is not authorized to perform: lambda:ListMicrovms`), what);
    }
  });

  test("with an execution role, Node and Python with the SDKs' default chains can do exactly what the role's policy allows", async () => {
    await canDoExactlyWhatTheRoleAllows(vm.role);
    const doc = await credsDoc(vm.role);
    assert.deepEqual(Object.keys(doc), ["Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"]);
    assert.equal(doc.Code, "Success");
    assert.match(doc.AccessKeyId!, /^ASIA[A-Z0-9]{16}$/);
    assert.ok(Date.parse(doc.Expiration!) - Date.now() > 29 * 60_000, "handed out with more than 30 minutes left");
  });

  test("IMDSv2 only: a GET without a token gets 401, and one MicroVM's token is refused in another", async () => {
    assert.equal((await imds(vm.role, "/latest/meta-data/iam/security-credentials/", "none")).status, 401);
    const listed = await imds(vm.role, "/latest/meta-data/iam/security-credentials/");
    assert.deepEqual([listed.status, listed.body], [200, "execution_role"]);
    const foreign = (await call(vm.none, "node", "token", {})).token!;
    assert.ok(foreign.length > 20, foreign);
    assert.equal((await imds(vm.role, "/latest/meta-data/iam/security-credentials/execution_role", foreign)).status, 401, "another MicroVM's token");
    const own = (await call(vm.role, "node", "token", {})).token!;
    assert.equal((await imds(vm.role, "/latest/meta-data/placement/region", own)).body, "us-east-1");
  });

  test("without an execution role there are no credentials: 404 under iam/, and both SDKs say they found none", async () => {
    assert.equal((await imds(vm.none, "/latest/meta-data/iam/security-credentials/")).status, 404);
    assert.equal((await imds(vm.none, "/latest/meta-data/iam/security-credentials/execution_role")).status, 404);
    const [node, python] = await both(vm.none, "ListMicrovms");
    assert.equal(node!.error, "CredentialsProviderError", JSON.stringify(node));
    assert.equal(python!.error, "NoCredentialsError", JSON.stringify(python));
  });

  test("a role whose trust policy does not let lambda.amazonaws.com assume it: EC2's AssumeRoleUnauthorizedAccess document, and no credentials for either SDK", async () => {
    const doc = await credsDoc(vm.untrusted);
    assert.equal(doc.Code, "AssumeRoleUnauthorizedAccess", JSON.stringify(doc));
    assert.match(doc.Message!, /cannot assume the role arn:aws:iam::000000000000:role\/ec2-only/);
    assert.equal(doc.AccessKeyId, undefined);
    const [node, python] = await both(vm.untrusted, "ListMicrovms");
    assert.equal(node!.ok, false, JSON.stringify(node));
    assert.match(node!.error!, /CredentialsProviderError/, JSON.stringify(node));
    assert.equal(python!.error, "NoCredentialsError", JSON.stringify(python));
    assert.match(server.output(), /the role cannot be assumed.*ec2-only/, "the refusal is logged");
  });

  test("after a suspend and resume the MicroVM gets new credentials at once, and can still do exactly what the role allows", async () => {
    const before = (await credsDoc(vm.role)).AccessKeyId;
    await client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.role }));
    await until(vm.role, "SUSPENDED");
    await client.send(new ResumeMicrovmCommand({ microvmIdentifier: vm.role }));
    await until(vm.role, "RUNNING");
    const after = (await credsDoc(vm.role)).AccessKeyId;
    assert.match(after!, /^ASIA/);
    assert.notEqual(after, before, "the suspended MicroVM's cached credentials were dropped");
    await canDoExactlyWhatTheRoleAllows(vm.role);
  });

  test("after a server restart the running MicroVMs' metadata services are back (bound again as they are adopted), with new tokens", async () => {
    const oldToken = (await call(vm.role, "node", "token", {})).token!;
    await server.kill();
    server = await spawnServer(dataDir, { builds: true, args: ["--dns-resolvers", net.resolvers.join(",")] });
    await net.internet.apiRelay.forwardTo(server.url);
    client.destroy();
    client = sdkClient(server.url, readCredentials(dataDir));
    call = probeCaller({ endpointPort: server.endpointPort, dataDir, client }) as typeof call;
    await until(vm.role, "RUNNING");
    assert.equal((await imds(vm.role, "/latest/meta-data/placement/region", oldToken)).status, 401, "tokens are memory only");
    assert.equal((await credsDoc(vm.role)).Code, "Success");
    assert.equal((await imds(vm.none, "/latest/meta-data/iam/security-credentials/")).status, 404);
    await canDoExactlyWhatTheRoleAllows(vm.role);
  });
});
