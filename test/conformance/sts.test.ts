// lmvm's STS API through the official @aws-sdk/client-sts: GetCallerIdentity
// for each kind of principal, AssumeRole and its trust policy, ExternalId,
// session policies, durations, and expired or altered session tokens.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CreateRoleCommand, PutRolePolicyCommand, type IAMClient } from "@aws-sdk/client-iam";
import { ListMicrovmImagesCommand, ListMicrovmsCommand } from "@aws-sdk/client-lambda-microvms";
import { AssumeRoleCommand, GetCallerIdentityCommand } from "@aws-sdk/client-sts";
import { rejects } from "../support/assertions.js";
import { ACCOUNT, allow, iamClient, policy, queryRequest, roleArn, stsClient, userArn, userWithPolicy, type Keys } from "../support/iam.js";
import { sdkClient, startTestPlatform, type TestPlatform } from "../support/platform.js";

/** The server's clock runs `offset` ms ahead of the real one; clients sign with the same offset. */
let offset = 0;
const clock = { now: () => new Date(Date.now() + offset) };

const trustUser = (...names: string[]) => policy({ Effect: "Allow", Principal: { AWS: names.map(userArn) }, Action: "sts:AssumeRole" });

describe("STS API", () => {
  let t: TestPlatform;
  let iam: IAMClient;
  let alice: Keys;
  let bob: Keys;
  before(async () => {
    t = await startTestPlatform({ clock });
    iam = iamClient(t.platform.url, t.credentials);
    // alice may assume roles (her own policy allows sts:AssumeRole); bob may too, but no trust policy names him.
    alice = await userWithPolicy(iam, "alice", policy(allow("sts:AssumeRole")));
    bob = await userWithPolicy(iam, "bob", policy(allow("sts:AssumeRole")));
    await iam.send(new CreateRoleCommand({ RoleName: "lister", AssumeRolePolicyDocument: trustUser("alice"), MaxSessionDuration: 7200 }));
    await iam.send(new PutRolePolicyCommand({ RoleName: "lister", PolicyName: "list", PolicyDocument: policy(allow(["lambda:ListMicrovms", "lambda:ListMicrovmImages"])) }));
    await iam.send(new CreateRoleCommand({
      RoleName: "partner",
      AssumeRolePolicyDocument: policy({ Effect: "Allow", Principal: { AWS: userArn("alice") }, Action: "sts:AssumeRole", Condition: { StringEquals: { "sts:ExternalId": "shared-secret-42" } } }),
    }));
  });
  after(async () => {
    iam.destroy();
    await t.stop();
  });

  const sts = (keys: Keys) => stsClient(t.platform.url, keys, { systemClockOffset: offset });
  async function assume(keys: Keys, input: Partial<ConstructorParameters<typeof AssumeRoleCommand>[0]> & { RoleArn: string }) {
    const client = sts(keys);
    try {
      return await client.send(new AssumeRoleCommand({ RoleSessionName: "s1", ...input }));
    } finally {
      client.destroy();
    }
  }
  async function whoAmI(keys: Keys) {
    const client = sts(keys);
    try {
      return await client.send(new GetCallerIdentityCommand({}));
    } finally {
      client.destroy();
    }
  }

  test("GetCallerIdentity answers root, a user and a role session, and needs no permission", async () => {
    const root = await whoAmI(t.credentials);
    assert.deepEqual([root.Account, root.Arn, root.UserId], [ACCOUNT, `arn:aws:iam::${ACCOUNT}:root`, ACCOUNT]);
    // bob's policy allows only sts:AssumeRole, and GetCallerIdentity still answers.
    const user = await whoAmI(bob);
    assert.equal(user.Arn, userArn("bob"));
    assert.match(user.UserId!, /^AIDA[A-Z0-9]{16,}$/);
    const { Credentials, AssumedRoleUser } = await assume(alice, { RoleArn: roleArn("lister"), RoleSessionName: "ci-run" });
    const session = await whoAmI({ accessKeyId: Credentials!.AccessKeyId!, secretAccessKey: Credentials!.SecretAccessKey!, sessionToken: Credentials!.SessionToken! });
    assert.equal(session.Arn, `arn:aws:sts::${ACCOUNT}:assumed-role/lister/ci-run`);
    assert.equal(session.Arn, AssumedRoleUser!.Arn);
    assert.match(session.UserId!, /^AROA[A-Z0-9]{16,}:ci-run$/);
    assert.equal(session.UserId, AssumedRoleUser!.AssumedRoleId);
  });

  test("AssumeRole gives ASIA credentials limited to the role's policy; a caller the trust policy does not name is AccessDenied", async () => {
    const { Credentials } = await assume(alice, { RoleArn: roleArn("lister") });
    assert.match(Credentials!.AccessKeyId!, /^ASIA[A-Z0-9]{16}$/);
    assert.equal(Credentials!.SecretAccessKey!.length, 40);
    assert.ok(Credentials!.SessionToken!.length > 40);
    const lasts = Credentials!.Expiration!.getTime() - clock.now().getTime();
    assert.ok(lasts > 3500_000 && lasts <= 3600_000, `the default session lasts an hour (${lasts} ms)`);
    const lambda = sdkClient(t.platform.url, { accessKeyId: Credentials!.AccessKeyId!, secretAccessKey: Credentials!.SecretAccessKey!, sessionToken: Credentials!.SessionToken! } as Keys, { systemClockOffset: offset });
    try {
      await lambda.send(new ListMicrovmsCommand({}));
      await lambda.send(new ListMicrovmImagesCommand({}));
    } finally {
      lambda.destroy();
    }
    await rejects(assume(bob, { RoleArn: roleArn("lister") }), "AccessDenied", new RegExp(`User: ${userArn("bob")} is not authorized to perform: sts:AssumeRole on resource: ${roleArn("lister")}`));
    await rejects(assume(alice, { RoleArn: roleArn("no-such-role") }), "AccessDenied");
  });

  test("ExternalId: the trust policy's sts:ExternalId condition must match", async () => {
    await rejects(assume(alice, { RoleArn: roleArn("partner") }), "AccessDenied");
    await rejects(assume(alice, { RoleArn: roleArn("partner"), ExternalId: "guess" }), "AccessDenied");
    const ok = await assume(alice, { RoleArn: roleArn("partner"), ExternalId: "shared-secret-42" });
    assert.match(ok.Credentials!.AccessKeyId!, /^ASIA/);
  });

  test("a session policy leaves the session only what both it and the role's policy allow", async () => {
    const { Credentials } = await assume(alice, { RoleArn: roleArn("lister"), Policy: policy(allow(["lambda:ListMicrovms", "lambda:RunMicrovm"])) });
    const lambda = sdkClient(t.platform.url, { accessKeyId: Credentials!.AccessKeyId!, secretAccessKey: Credentials!.SecretAccessKey!, sessionToken: Credentials!.SessionToken! } as Keys, { systemClockOffset: offset });
    try {
      await lambda.send(new ListMicrovmsCommand({}));
      // The role allows it, the session policy does not.
      await rejects(lambda.send(new ListMicrovmImagesCommand({})), "AccessDeniedException", /assumed-role\/lister\/s1 is not authorized to perform: lambda:ListMicrovmImages/);
    } finally {
      lambda.destroy();
    }
    await rejects(assume(alice, { RoleArn: roleArn("lister"), Policy: "{broken" }), "MalformedPolicyDocumentException");
  });

  test("DurationSeconds: at least 900, at most the role's MaxSessionDuration", async () => {
    const long = await assume(alice, { RoleArn: roleArn("lister"), DurationSeconds: 7200 });
    const lasts = long.Credentials!.Expiration!.getTime() - clock.now().getTime();
    assert.ok(lasts > 7100_000 && lasts <= 7200_000, `${lasts} ms`);
    await rejects(assume(alice, { RoleArn: roleArn("lister"), DurationSeconds: 899 }), "ValidationError", /greater than or equal to 900/);
    await rejects(assume(alice, { RoleArn: roleArn("lister"), DurationSeconds: 7201 }), "ValidationError", /MaxSessionDuration/);
  });

  test("an altered session token, or one used with another key, is InvalidClientTokenId; an expired one ExpiredToken", async () => {
    const { Credentials } = await assume(alice, { RoleArn: roleArn("lister"), DurationSeconds: 900 });
    const keys = { accessKeyId: Credentials!.AccessKeyId!, secretAccessKey: Credentials!.SecretAccessKey!, sessionToken: Credentials!.SessionToken! };
    const token = keys.sessionToken;
    const flipped = token.slice(0, 20) + (token[20] === "A" ? "B" : "A") + token.slice(21);
    await rejects(whoAmI({ ...keys, sessionToken: flipped }), "InvalidClientTokenId");
    const other = await assume(alice, { RoleArn: roleArn("lister") });
    await rejects(whoAmI({ accessKeyId: other.Credentials!.AccessKeyId!, secretAccessKey: other.Credentials!.SecretAccessKey!, sessionToken: token }), "InvalidClientTokenId");
    // The raw reply: IAM's XML error, 403.
    const raw = await queryRequest(t.platform.url, { ...keys, sessionToken: flipped }, "sts", { Action: "GetCallerIdentity", Version: "2011-06-15" });
    assert.equal(raw.status, 403);
    assert.match(raw.body, /<ErrorResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/"><Error><Type>Sender<\/Type><Code>InvalidClientTokenId<\/Code>/);

    assert.equal((await whoAmI(keys)).Arn, `arn:aws:sts::${ACCOUNT}:assumed-role/lister/s1`);
    offset += 901_000;
    try {
      await rejects(whoAmI(keys), "ExpiredToken", /expired/);
      const lambda = sdkClient(t.platform.url, keys as Keys, { systemClockOffset: offset });
      try {
        await rejects(lambda.send(new ListMicrovmsCommand({})), "ExpiredTokenException");
      } finally {
        lambda.destroy();
      }
    } finally {
      offset -= 901_000;
    }
  });

  test("answers are STS's XML, with the RequestId; an unknown Action is InvalidAction", async () => {
    const ok = await queryRequest(t.platform.url, t.credentials, "sts", { Action: "GetCallerIdentity", Version: "2011-06-15" });
    assert.equal(ok.status, 200);
    assert.match(ok.body, new RegExp(`<GetCallerIdentityResponse xmlns="https://sts\\.amazonaws\\.com/doc/2011-06-15/"><GetCallerIdentityResult><UserId>${ACCOUNT}</UserId><Account>${ACCOUNT}</Account><Arn>arn:aws:iam::${ACCOUNT}:root</Arn></GetCallerIdentityResult><ResponseMetadata><RequestId>[0-9a-f-]{36}</RequestId></ResponseMetadata></GetCallerIdentityResponse>$`));
    const bad = await queryRequest(t.platform.url, t.credentials, "sts", { Action: "GetSessionToken", Version: "2011-06-15" });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /<Code>InvalidAction<\/Code>/);
    // Signed for iam but an STS request (its Version): the signature's service is wrong.
    const wrong = await queryRequest(t.platform.url, t.credentials, "iam", { Action: "GetCallerIdentity", Version: "2011-06-15" });
    assert.equal(wrong.status, 403);
    assert.match(wrong.body, /<Code>SignatureDoesNotMatch<\/Code><Message>Credential should be scoped to correct service: 'sts'/);
  });
});
