// lmvm's IAM API through the official @aws-sdk/client-iam: users, access keys,
// roles and inline policies, their answers' shapes and IAM's errors.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateAccessKeyCommand, CreateRoleCommand, CreateUserCommand, DeleteAccessKeyCommand, DeleteRoleCommand, DeleteRolePolicyCommand,
  DeleteUserCommand, DeleteUserPolicyCommand, GetRoleCommand, GetRolePolicyCommand, GetUserCommand, GetUserPolicyCommand,
  ListAccessKeysCommand, ListRolePoliciesCommand, ListRolesCommand, ListUserPoliciesCommand, ListUsersCommand, PutRolePolicyCommand,
  PutUserPolicyCommand, UpdateAccessKeyCommand, UpdateAssumeRolePolicyCommand, type IAMClient,
} from "@aws-sdk/client-iam";
import { ListMicrovmImagesCommand } from "@aws-sdk/client-lambda-microvms";
import { rejects } from "../support/assertions.js";
import { ACCOUNT, allow, iamClient, policy, queryRequest, roleArn, userArn, userWithPolicy } from "../support/iam.js";
import { sdkClient, startTestPlatform, type TestPlatform } from "../support/platform.js";

const TRUST_LAMBDA = policy({ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: ["sts:AssumeRole", "sts:TagSession"] });

describe("IAM API", () => {
  let t: TestPlatform;
  let iam: IAMClient;
  before(async () => {
    t = await startTestPlatform();
    iam = iamClient(t.platform.url, t.credentials);
  });
  after(async () => {
    iam.destroy();
    await t.stop();
  });

  test("CreateUser, GetUser and ListUsers answer IAM's User shape; a second CreateUser is EntityAlreadyExists, an unknown user NoSuchEntity", async () => {
    const created = await iam.send(new CreateUserCommand({ UserName: "alice", Path: "/team/", Tags: [{ Key: "team", Value: "blue" }] }));
    assert.equal(created.$metadata.httpStatusCode, 200);
    assert.ok(created.$metadata.requestId, "the RequestId of ResponseMetadata");
    const u = created.User!;
    assert.equal(u.UserName, "alice");
    assert.equal(u.Path, "/team/");
    assert.equal(u.Arn, `arn:aws:iam::${ACCOUNT}:user/team/alice`);
    assert.match(u.UserId!, /^AIDA[A-Z0-9]{16,}$/);
    assert.ok(u.CreateDate instanceof Date && Math.abs(u.CreateDate.getTime() - Date.now()) < 60_000);
    assert.deepEqual(u.Tags, [{ Key: "team", Value: "blue" }]);

    const got = await iam.send(new GetUserCommand({ UserName: "alice" }));
    assert.equal(got.User!.Arn, u.Arn);
    assert.equal(got.User!.UserId, u.UserId);

    const listed = await iam.send(new ListUsersCommand({}));
    assert.ok(listed.Users!.some((x) => x.UserName === "alice" && x.Arn === u.Arn));
    assert.equal(listed.IsTruncated, false);
    const underTeam = await iam.send(new ListUsersCommand({ PathPrefix: "/team/" }));
    assert.deepEqual(underTeam.Users!.map((x) => x.UserName), ["alice"]);

    const again = await rejects(iam.send(new CreateUserCommand({ UserName: "alice" })), "EntityAlreadyExistsException");
    assert.equal((again as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 409);
    const missing = await rejects(iam.send(new GetUserCommand({ UserName: "nobody" })), "NoSuchEntityException", /nobody/);
    assert.equal((missing as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 404);
  });

  test("ListUsers pages with MaxItems and Marker", async () => {
    for (const n of ["page-a", "page-b", "page-c"]) await iam.send(new CreateUserCommand({ UserName: n, Path: "/paging/" }));
    const first = await iam.send(new ListUsersCommand({ PathPrefix: "/paging/", MaxItems: 2 }));
    assert.equal(first.Users!.length, 2);
    assert.equal(first.IsTruncated, true);
    assert.ok(first.Marker);
    const second = await iam.send(new ListUsersCommand({ PathPrefix: "/paging/", MaxItems: 2, Marker: first.Marker }));
    assert.equal(second.IsTruncated, false);
    assert.deepEqual([...first.Users!, ...second.Users!].map((u) => u.UserName).sort(), ["page-a", "page-b", "page-c"]);
  });

  test("access keys: AKIA ids, the secret only at creation, deactivation, and DeleteUser refused (DeleteConflict) while a key is left", async () => {
    await iam.send(new CreateUserCommand({ UserName: "keyed" }));
    const { AccessKey } = await iam.send(new CreateAccessKeyCommand({ UserName: "keyed" }));
    assert.match(AccessKey!.AccessKeyId!, /^AKIA[A-Z0-9]{16}$/);
    assert.equal(AccessKey!.SecretAccessKey!.length, 40);
    assert.equal(AccessKey!.Status, "Active");
    assert.equal(AccessKey!.UserName, "keyed");

    let keys = await iam.send(new ListAccessKeysCommand({ UserName: "keyed" }));
    assert.deepEqual(keys.AccessKeyMetadata!.map((k) => [k.AccessKeyId, k.Status, k.UserName]), [[AccessKey!.AccessKeyId, "Active", "keyed"]]);
    assert.equal(JSON.stringify(keys).includes(AccessKey!.SecretAccessKey!), false, "the secret is never listed");

    await iam.send(new UpdateAccessKeyCommand({ UserName: "keyed", AccessKeyId: AccessKey!.AccessKeyId, Status: "Inactive" }));
    keys = await iam.send(new ListAccessKeysCommand({ UserName: "keyed" }));
    assert.equal(keys.AccessKeyMetadata![0]!.Status, "Inactive");
    await rejects(iam.send(new UpdateAccessKeyCommand({ UserName: "keyed", AccessKeyId: AccessKey!.AccessKeyId, Status: "Sleeping" as "Active" })), "ValidationError", /Active, Inactive/);

    const conflict = await rejects(iam.send(new DeleteUserCommand({ UserName: "keyed" })), "DeleteConflictException");
    assert.equal((conflict as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 409);
    await iam.send(new DeleteAccessKeyCommand({ UserName: "keyed", AccessKeyId: AccessKey!.AccessKeyId }));
    await iam.send(new DeleteUserCommand({ UserName: "keyed" }));
    await rejects(iam.send(new GetUserCommand({ UserName: "keyed" })), "NoSuchEntityException");
  });

  test("user policies: Put, Get (the document URL-encoded, as IAM sends it), List, Delete; a malformed document is MalformedPolicyDocument", async () => {
    await iam.send(new CreateUserCommand({ UserName: "with-policy" }));
    const document = policy(allow("lambda:ListMicrovms"));
    await iam.send(new PutUserPolicyCommand({ UserName: "with-policy", PolicyName: "list", PolicyDocument: document }));
    const got = await iam.send(new GetUserPolicyCommand({ UserName: "with-policy", PolicyName: "list" }));
    assert.equal(got.UserName, "with-policy");
    assert.equal(got.PolicyName, "list");
    assert.notEqual(got.PolicyDocument, document, "IAM returns the document URL-encoded and the SDK hands it over so");
    assert.deepEqual(JSON.parse(decodeURIComponent(got.PolicyDocument!)), JSON.parse(document));
    assert.deepEqual((await iam.send(new ListUserPoliciesCommand({ UserName: "with-policy" }))).PolicyNames, ["list"]);

    await rejects(iam.send(new PutUserPolicyCommand({ UserName: "with-policy", PolicyName: "bad", PolicyDocument: "{not json" })), "MalformedPolicyDocumentException");
    await rejects(iam.send(new PutUserPolicyCommand({ UserName: "with-policy", PolicyName: "bad", PolicyDocument: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Maybe", Action: "*", Resource: "*" }] }) })), "MalformedPolicyDocumentException");
    await rejects(iam.send(new PutUserPolicyCommand({ UserName: "ghost", PolicyName: "p", PolicyDocument: document })), "NoSuchEntityException");

    await rejects(iam.send(new DeleteUserCommand({ UserName: "with-policy" })), "DeleteConflictException");
    await iam.send(new DeleteUserPolicyCommand({ UserName: "with-policy", PolicyName: "list" }));
    await rejects(iam.send(new GetUserPolicyCommand({ UserName: "with-policy", PolicyName: "list" })), "NoSuchEntityException");
    assert.deepEqual((await iam.send(new ListUserPoliciesCommand({ UserName: "with-policy" }))).PolicyNames, []);
    await iam.send(new DeleteUserCommand({ UserName: "with-policy" }));
  });

  test("roles: CreateRole, GetRole and ListRoles with the trust policy URL-encoded; role policies; DeleteRole refused while a policy is left", async () => {
    const created = await iam.send(new CreateRoleCommand({ RoleName: "exec", AssumeRolePolicyDocument: TRUST_LAMBDA, Description: "runs apps", MaxSessionDuration: 7200 }));
    const r = created.Role!;
    assert.equal(r.Arn, roleArn("exec"));
    assert.equal(r.Path, "/");
    assert.match(r.RoleId!, /^AROA[A-Z0-9]{16,}$/);
    assert.equal(r.Description, "runs apps");
    assert.equal(r.MaxSessionDuration, 7200);
    assert.deepEqual(JSON.parse(decodeURIComponent(r.AssumeRolePolicyDocument!)), JSON.parse(TRUST_LAMBDA));

    const got = await iam.send(new GetRoleCommand({ RoleName: "exec" }));
    assert.equal(got.Role!.RoleId, r.RoleId);
    assert.ok((await iam.send(new ListRolesCommand({}))).Roles!.some((x) => x.RoleName === "exec"));
    await rejects(iam.send(new CreateRoleCommand({ RoleName: "exec", AssumeRolePolicyDocument: TRUST_LAMBDA })), "EntityAlreadyExistsException");
    await rejects(iam.send(new CreateRoleCommand({ RoleName: "bad-trust", AssumeRolePolicyDocument: "[]" })), "MalformedPolicyDocumentException");
    await rejects(iam.send(new GetRoleCommand({ RoleName: "nope" })), "NoSuchEntityException");

    const newTrust = policy({ Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCOUNT}:user/team/alice` }, Action: "sts:AssumeRole" });
    await iam.send(new UpdateAssumeRolePolicyCommand({ RoleName: "exec", PolicyDocument: newTrust }));
    assert.deepEqual(JSON.parse(decodeURIComponent((await iam.send(new GetRoleCommand({ RoleName: "exec" }))).Role!.AssumeRolePolicyDocument!)), JSON.parse(newTrust));

    const document = policy(allow("lambda:GetMicrovm"));
    await iam.send(new PutRolePolicyCommand({ RoleName: "exec", PolicyName: "get", PolicyDocument: document }));
    const rp = await iam.send(new GetRolePolicyCommand({ RoleName: "exec", PolicyName: "get" }));
    assert.equal(rp.RoleName, "exec");
    assert.deepEqual(JSON.parse(decodeURIComponent(rp.PolicyDocument!)), JSON.parse(document));
    assert.deepEqual((await iam.send(new ListRolePoliciesCommand({ RoleName: "exec" }))).PolicyNames, ["get"]);
    await rejects(iam.send(new DeleteRoleCommand({ RoleName: "exec" })), "DeleteConflictException");
    await iam.send(new DeleteRolePolicyCommand({ RoleName: "exec", PolicyName: "get" }));
    await iam.send(new DeleteRoleCommand({ RoleName: "exec" }));
    await rejects(iam.send(new GetRoleCommand({ RoleName: "exec" })), "NoSuchEntityException");
  });

  test("GetUser without UserName is the caller: root's ARN for root, the user's own for a user", async () => {
    const root = await iam.send(new GetUserCommand({}));
    assert.equal(root.User!.Arn, `arn:aws:iam::${ACCOUNT}:root`);
    assert.equal(root.User!.UserId, ACCOUNT);
    const keys = await userWithPolicy(iam, "self", policy(allow("iam:GetUser", userArn("self"))));
    const self = iamClient(t.platform.url, keys);
    try {
      const me = await self.send(new GetUserCommand({}));
      assert.equal(me.User!.Arn, userArn("self"));
      assert.equal(me.User!.UserName, "self");
      // Own keys without naming the user: refused here, since the policy allows only iam:GetUser.
      await rejects(self.send(new ListAccessKeysCommand({})), "AccessDenied", new RegExp(`User: ${userArn("self")} is not authorized to perform: iam:ListAccessKeys on resource: ${userArn("self")}`));
    } finally {
      self.destroy();
    }
  });

  test("every IAM operation is authorised as iam:<Operation> on the user's or role's ARN: AccessDenied (403) otherwise", async () => {
    const keys = await userWithPolicy(iam, "iam-reader", policy(allow(["iam:GetUser", "iam:ListUsers"]), allow("iam:CreateUser", `arn:aws:iam::${ACCOUNT}:user/made/*`)));
    const reader = iamClient(t.platform.url, keys);
    try {
      await reader.send(new GetUserCommand({ UserName: "iam-reader" }));
      await reader.send(new ListUsersCommand({}));
      const refused = await rejects(reader.send(new CreateUserCommand({ UserName: "escalate" })), "AccessDenied",
        new RegExp(`User: ${userArn("iam-reader")} is not authorized to perform: iam:CreateUser on resource: ${userArn("escalate")}`));
      assert.equal((refused as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode, 403);
      await reader.send(new CreateUserCommand({ UserName: "allowed", Path: "/made/" }));
      // Self-granting: PutUserPolicy on itself is another action it was not given.
      await rejects(reader.send(new PutUserPolicyCommand({ UserName: "iam-reader", PolicyName: "all", PolicyDocument: policy(allow("*")) })), "AccessDenied", /iam:PutUserPolicy/);
      await rejects(reader.send(new CreateRoleCommand({ RoleName: "r", AssumeRolePolicyDocument: TRUST_LAMBDA })), "AccessDenied", new RegExp(`iam:CreateRole on resource: ${roleArn("r")}`));
      // Its IAM rights give nothing on the MicroVMs API.
      const lambda = sdkClient(t.platform.url, keys);
      try {
        await rejects(lambda.send(new ListMicrovmImagesCommand({})), "AccessDeniedException", /lambda:ListMicrovmImages on resource: \*/);
      } finally {
        lambda.destroy();
      }
    } finally {
      reader.destroy();
    }
  });

  test("awsQuery errors: an unknown Action is InvalidAction (400), an unsupported parameter ValidationError, a bad signature SignatureDoesNotMatch, an unknown key InvalidClientTokenId", async () => {
    let r = await queryRequest(t.platform.url, t.credentials, "iam", { Action: "CreateGroup", Version: "2010-05-08", GroupName: "g" });
    assert.equal(r.status, 400);
    assert.match(r.body, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<ErrorResponse xmlns="https:\/\/iam\.amazonaws\.com\/doc\/2010-05-08\/"><Error><Type>Sender<\/Type><Code>InvalidAction<\/Code><Message>Could not find operation CreateGroup for version 2010-05-08/);
    assert.match(r.body, /<RequestId>[0-9a-f-]{36}<\/RequestId><\/ErrorResponse>$/);

    r = await queryRequest(t.platform.url, t.credentials, "iam", { Action: "CreateUser", Version: "2010-05-08", UserName: "pb", PermissionsBoundary: "arn:aws:iam::aws:policy/AdministratorAccess" });
    assert.equal(r.status, 400);
    assert.match(r.body, /<Code>ValidationError<\/Code><Message>CreateUser in lmvm takes no parameter PermissionsBoundary/);

    r = await queryRequest(t.platform.url, t.credentials, "iam", { Action: "GetUser", Version: "2010-05-08", UserName: "alice" }, { tamper: (b) => b.replace("alice", "alicf") });
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>SignatureDoesNotMatch<\/Code>/);

    r = await queryRequest(t.platform.url, { accessKeyId: "AKIAAAAAAAAAAAAAAAAA", secretAccessKey: "x".repeat(40) }, "iam", { Action: "ListUsers", Version: "2010-05-08" });
    assert.equal(r.status, 403);
    assert.match(r.body, /<Code>InvalidClientTokenId<\/Code>/);

    r = await queryRequest(t.platform.url, t.credentials, "iam", { Action: "ListUsers", Version: "2010-05-08" });
    assert.equal(r.status, 200);
    assert.match(r.body, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<ListUsersResponse xmlns="https:\/\/iam\.amazonaws\.com\/doc\/2010-05-08\/"><ListUsersResult><Users><member>/);
    assert.match(r.body, /<\/ListUsersResult><ResponseMetadata><RequestId>[0-9a-f-]{36}<\/RequestId><\/ResponseMetadata><\/ListUsersResponse>$/);
  });
});
