// `lmvm iam …` and `lmvm sts …` through the real CLI (bin/lmvm) against a
// real server: the operator (root, from the data directory) makes a user, a
// key and a policy (from a file); the user's key then does exactly what the
// policy allows, through the same CLI; a role is made and assumed.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

describe("lmvm iam and lmvm sts", () => {
  let t: TestPlatform;
  let env: Record<string, string>;
  const ok = async (args: string[], extra: Record<string, string> = {}) => {
    const r = await lmvm(args, { ...env, ...extra });
    assert.equal(r.code, 0, `lmvm ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim() ? JSON.parse(r.stdout) : {};
  };
  before(async () => {
    t = await startTestPlatform();
    // The CLI finds the server and root's key in the data directory; no AWS_* variables of the test's own.
    env = { LMVM_DATA_DIR: t.dataDir, AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "", AWS_SESSION_TOKEN: "" };
  });
  after(() => t.stop());

  test("create a user, a key and a policy from a file; the key can do what the policy allows and nothing more", async () => {
    const user = await ok(["iam", "create-user", "--user-name", "ci", "--tags", "Key=team,Value=blue"]);
    assert.equal(user.User.Arn, "arn:aws:iam::000000000000:user/ci");
    assert.deepEqual(user.User.Tags, [{ Key: "team", Value: "blue" }]);
    assert.match(user.User.CreateDate, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?\+00:00$/, "times print as the other commands print them");

    const { AccessKey } = await ok(["iam", "create-access-key", "--user-name", "ci"]);
    assert.match(AccessKey.AccessKeyId, /^AKIA[A-Z0-9]{16}$/);
    assert.equal(AccessKey.SecretAccessKey.length, 40);

    const file = join(t.dataDir, "policy.json");
    const document = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: ["lambda:ListMicrovms", "lambda:ListManagedMicrovmImages"], Resource: "*" }] };
    writeFileSync(file, JSON.stringify(document, null, 2));
    assert.deepEqual(await ok(["iam", "put-user-policy", "--user-name", "ci", "--policy-name", "lists", "--policy-document", `file://${file}`]), {});
    // Printed decoded, as the AWS CLI prints IAM's URL-encoded documents.
    const got = await ok(["iam", "get-user-policy", "--user-name", "ci", "--policy-name", "lists"]);
    assert.deepEqual(got, { UserName: "ci", PolicyName: "lists", PolicyDocument: document });
    assert.deepEqual((await ok(["iam", "list-user-policies", "--user-name", "ci"])).PolicyNames, ["lists"]);
    assert.ok((await ok(["iam", "list-users"])).Users.some((u: { UserName: string }) => u.UserName === "ci"));
    const keys = await ok(["iam", "list-access-keys", "--user-name", "ci"]);
    assert.deepEqual(keys.AccessKeyMetadata.map((k: { AccessKeyId: string; Status: string }) => [k.AccessKeyId, k.Status]), [[AccessKey.AccessKeyId, "Active"]]);

    // The user's key, through the same CLI.
    const asCi = { AWS_ACCESS_KEY_ID: AccessKey.AccessKeyId, AWS_SECRET_ACCESS_KEY: AccessKey.SecretAccessKey };
    assert.deepEqual(await ok(["list-microvms"], asCi), { items: [] });
    assert.equal((await ok(["list-managed-microvm-images", "--query", "length(items)"], asCi)), 2);
    const refused = await lmvm(["list-microvm-images"], { ...env, ...asCi });
    assert.equal(refused.code, 254);
    assert.match(refused.stderr, /An error occurred \(AccessDeniedException\) when calling the ListMicrovmImages operation: User: arn:aws:iam::000000000000:user\/ci is not authorized to perform: lambda:ListMicrovmImages on resource: \*/);
    const who = await ok(["sts", "get-caller-identity"], asCi);
    assert.deepEqual(who, { UserId: user.User.UserId, Account: "000000000000", Arn: "arn:aws:iam::000000000000:user/ci" });
    // Its own IAM: not allowed either.
    const self = await lmvm(["iam", "put-user-policy", "--user-name", "ci", "--policy-name", "all", "--policy-document", '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'], { ...env, ...asCi });
    assert.equal(self.code, 254);
    assert.match(self.stderr, /An error occurred \(AccessDenied\) when calling the PutUserPolicy operation: User: arn:aws:iam::000000000000:user\/ci is not authorized to perform: iam:PutUserPolicy/);

    // Deactivated, the key is refused; deleted with the rest, the user goes.
    assert.deepEqual(await ok(["iam", "update-access-key", "--user-name", "ci", "--access-key-id", AccessKey.AccessKeyId, "--status", "Inactive"]), {});
    const inactive = await lmvm(["list-microvms"], { ...env, ...asCi });
    assert.equal(inactive.code, 254);
    assert.match(inactive.stderr, /UnrecognizedClientException/);
    const conflict = await lmvm(["iam", "delete-user", "--user-name", "ci"], env);
    assert.equal(conflict.code, 254);
    assert.match(conflict.stderr, /DeleteConflictException/);
    await ok(["iam", "delete-access-key", "--user-name", "ci", "--access-key-id", AccessKey.AccessKeyId]);
    await ok(["iam", "delete-user-policy", "--user-name", "ci", "--policy-name", "lists"]);
    await ok(["iam", "delete-user", "--user-name", "ci"]);
    const gone = await lmvm(["iam", "get-user", "--user-name", "ci"], env);
    assert.equal(gone.code, 254);
    assert.match(gone.stderr, /NoSuchEntityException/);
  });

  test("create a role, give it a policy, assume it with sts assume-role and use the session", async () => {
    const trust = JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { AWS: "arn:aws:iam::000000000000:user/deployer" }, Action: "sts:AssumeRole" }] });
    await ok(["iam", "create-user", "--user-name", "deployer"]);
    await ok(["iam", "put-user-policy", "--user-name", "deployer", "--policy-name", "assume", "--policy-document", JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "sts:AssumeRole", Resource: "*" }] })]);
    const { AccessKey } = await ok(["iam", "create-access-key", "--user-name", "deployer"]);
    const role = await ok(["iam", "create-role", "--role-name", "lister", "--assume-role-policy-document", trust, "--max-session-duration", "7200", "--description", "lists MicroVMs"]);
    assert.equal(role.Role.Arn, "arn:aws:iam::000000000000:role/lister");
    assert.deepEqual(role.Role.AssumeRolePolicyDocument, JSON.parse(trust));
    await ok(["iam", "put-role-policy", "--role-name", "lister", "--policy-name", "list", "--policy-document", JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "lambda:ListMicrovms", Resource: "*" }] })]);
    assert.equal((await ok(["iam", "get-role", "--role-name", "lister", "--query", "Role.MaxSessionDuration"])), 7200);
    assert.ok((await ok(["iam", "list-roles"])).Roles.some((r: { RoleName: string }) => r.RoleName === "lister"));

    const asDeployer = { AWS_ACCESS_KEY_ID: AccessKey.AccessKeyId, AWS_SECRET_ACCESS_KEY: AccessKey.SecretAccessKey };
    const session = await ok(["sts", "assume-role", "--role-arn", "arn:aws:iam::000000000000:role/lister", "--role-session-name", "deploy-1"], asDeployer);
    assert.equal(session.AssumedRoleUser.Arn, "arn:aws:sts::000000000000:assumed-role/lister/deploy-1");
    assert.match(session.Credentials.AccessKeyId, /^ASIA/);
    const asSession = { AWS_ACCESS_KEY_ID: session.Credentials.AccessKeyId, AWS_SECRET_ACCESS_KEY: session.Credentials.SecretAccessKey, AWS_SESSION_TOKEN: session.Credentials.SessionToken };
    assert.equal((await ok(["sts", "get-caller-identity"], asSession)).Arn, "arn:aws:sts::000000000000:assumed-role/lister/deploy-1");
    assert.deepEqual(await ok(["list-microvms"], asSession), { items: [] });
    const refused = await lmvm(["list-microvm-images"], { ...env, ...asSession });
    assert.equal(refused.code, 254);
    assert.match(refused.stderr, /assumed-role\/lister\/deploy-1 is not authorized to perform: lambda:ListMicrovmImages/);

    const conflict = await lmvm(["iam", "delete-role", "--role-name", "lister"], env);
    assert.match(conflict.stderr, /DeleteConflictException/);
    await ok(["iam", "delete-role-policy", "--role-name", "lister", "--policy-name", "list"]);
    await ok(["iam", "delete-role", "--role-name", "lister"]);
  });

  test("help for lmvm iam, lmvm sts and each command; bad usage exits 252", async () => {
    let r = await lmvm(["iam", "help"], env);
    assert.equal(r.code, 0);
    for (const c of ["create-user", "get-user", "list-users", "delete-user", "create-access-key", "update-access-key", "delete-access-key", "list-access-keys",
      "put-user-policy", "get-user-policy", "delete-user-policy", "list-user-policies", "create-role", "get-role", "list-roles", "delete-role",
      "update-assume-role-policy", "put-role-policy", "get-role-policy", "delete-role-policy", "list-role-policies"]) {
      assert.match(r.stdout, new RegExp(`^ {4}${c} `, "m"), c);
    }
    r = await lmvm(["iam", "put-user-policy", "help"], env);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--policy-document \(string\) \[required\]\n\s+The policy document, as JSON inline or file:\/\/path/);
    r = await lmvm(["sts", "help"], env);
    assert.match(r.stdout, /get-caller-identity[\s\S]*assume-role/);
    r = await lmvm(["iam", "create-user"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /the following arguments are required: --user-name/);
    r = await lmvm(["iam", "create-group", "--group-name", "g"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /Invalid choice: 'create-group'/);
    r = await lmvm(["iam", "put-user-policy", "--user-name", "x", "--policy-name", "p", "--policy-document", "{not json"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /not valid JSON/);
  });
});
