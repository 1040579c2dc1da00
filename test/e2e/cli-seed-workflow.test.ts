// The seed workflow's commands, unchanged but for `aws lambda-microvms` →
// `lmvm`, run with the real CLI binary against a real `lmvm server`.

import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";

describe("the lmvm CLI", () => {
  let dataDir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  before(async () => {
    dataDir = tempDir();
    server = await spawnServer(dataDir);
    // The CLI finds the server and the credentials through the data directory, as after setup.
    env = { LMVM_DATA_DIR: dataDir };
  });
  after(async () => {
    await server.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("create-microvm-image with the seed workflow's flags", async () => {
    const r = await lmvm([
      "create-microvm-image",
      "--name", "my-image",
      "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:debian12",
      "--build-role-arn", "arn:aws:iam::000000000000:role/MicroVMBuildRole",
      "--code-artifact", '{"uri":"s3://my-bucket/app.zip"}',
      "--hooks", '{"port": 9000, "microvmImageHooks": {"ready": "ENABLED", "readyTimeoutInSeconds": 60}, "microvmHooks": {"run": "ENABLED", "runTimeoutInSeconds": 2}}',
    ], env);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.imageArn, "arn:aws:lambda:us-east-1:000000000000:microvm-image:my-image");
    assert.equal(out.state, "CREATING");
    assert.equal(out.imageVersion, "1.0");
    assert.match(out.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/);
    assert.equal(out.hooks.microvmImageHooks.readyTimeoutInSeconds, 60);
  });

  test("shorthand and file:// values work as in the AWS CLI", async () => {
    const input = join(dataDir, "input.json");
    writeFileSync(input, JSON.stringify({ name: "from-file", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: "arn:aws:iam::000000000000:role/R", codeArtifact: { uri: "file:///srv/app.zip" } }));
    let r = await lmvm(["create-microvm-image", "--cli-input-json", `file://${input}`, "--tags", "team=core,env=dev", "--query", "tags.team", "--output", "text"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "core\n");
    r = await lmvm(["create-microvm-image", "--name", "shorthand", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", "--build-role-arn", "arn:aws:iam::000000000000:role/R", "--code-artifact", "uri=s3://b/k.zip", "--resources", "minimumMemoryInMiB=512", "--query", "[codeArtifact.uri, resources[0].minimumMemoryInMiB]", "--output", "text"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "s3://b/k.zip\t512\n");
  });

  test("list-microvm-images and get-microvm-image, with --query and every --output", async () => {
    let r = await lmvm(["list-microvm-images"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(JSON.parse(r.stdout).items.some((i: { name: string }) => i.name === "my-image"));
    r = await lmvm(["get-microvm-image", "--image-identifier", "my-image", "--query", "state", "--output", "text"], env);
    assert.equal(r.stdout, "CREATING\n");
    r = await lmvm(["get-microvm-image", "--image-identifier", "arn:aws:lambda:us-east-1:000000000000:microvm-image:my-image", "--output", "table"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\| +GetMicrovmImage +\|$/m);
    assert.match(r.stdout, /^\| +state +\| +CREATING +\|$/m);
    r = await lmvm(["list-microvm-images", "--query", "items[].name", "--output", "text"], env);
    assert.match(r.stdout, /my-image/);
    // A list of lists is a table of rows; the AWS CLI draws exactly this for the same data.
    r = await lmvm(["list-microvm-images", "--query", "items[?name=='my-image'].[name,state]", "--output", "table"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, ["--------------------------", "|    ListMicrovmImages   |", "+-----------+------------+", "|  my-image |  CREATING  |", "+-----------+------------+", ""].join("\n"));
  });

  test("create-microvm-auth-token validates its arguments like the service", async () => {
    let r = await lmvm(["create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0", "--expiration-in-minutes", "61", "--allowed-ports", '[{"port":8080}]'], env);
    assert.equal(r.code, 254);
    assert.match(r.stderr, /An error occurred \(ValidationException\) when calling the CreateMicrovmAuthToken operation: .*'expirationInMinutes' must be at most 60/);
    r = await lmvm(["create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0", "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080,"range":{"startPort":1,"endPort":2}}]'], env);
    assert.equal(r.code, 254);
    assert.match(r.stderr, /exactly one of port, range, allPorts/);
    r = await lmvm(["create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0", "--expiration-in-minutes", "30", "--allowed-ports", '[{"port":8080}]', "--query", 'authToken."X-aws-proxy-auth"', "--output", "text"], env);
    assert.equal(r.code, 254);
    assert.match(r.stderr, /ResourceNotFoundException/);
    r = await lmvm(["create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0", "--expiration-in-minutes", "soon", "--allowed-ports", '[{"port":8080}]'], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /--expiration-in-minutes': expected a number/);
    r = await lmvm(["create-microvm-auth-token", "--microvm-identifier", "microvm-0123456789abcdef0"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /required: --expiration-in-minutes, --allowed-ports/);
  });

  test("run-microvm rejects a bare image name", async () => {
    const r = await lmvm(["run-microvm", "--image-identifier", "my-image"], env);
    assert.equal(r.code, 254);
    assert.match(r.stderr, /must be the image's ARN/);
  });

  test("help exists for the CLI and every command", async () => {
    const top = await lmvm(["help"], env);
    assert.equal(top.code, 0);
    const commands = [...top.stdout.matchAll(/^ {4}([a-z-]+) {2,}/gm)].map((m) => m[1]!).filter((c) => c !== "server");
    // 24 for the MicroVMs API and lmvm's own commands, the six Lambda Core network-connector commands, iam, sts, audit and agent.
    assert.equal(commands.length, 34, commands.join(" "));
    for (const c of ["iam", "sts", "audit", "agent"]) assert.ok(commands.includes(c), c);
    for (const c of ["create-network-connector", "get-network-connector", "list-network-connectors", "list-network-connector-versions", "update-network-connector", "delete-network-connector"]) assert.ok(commands.includes(c), c);
    for (const c of commands) {
      const r = await lmvm([c, "help"], env);
      assert.equal(r.code, 0, c);
      assert.match(r.stdout, new RegExp(`lmvm ${c}`));
    }
    const r = await lmvm(["create-microvm-auth-token", "help"], env);
    assert.match(r.stdout, /--expiration-in-minutes \(integer\) \[required\]\n\s+The duration in minutes before the authentication token expires\. Maximum: 60 minutes\./);
  });

  test("help for a structured flag shows its members, their types and docs, and its shorthand and JSON syntax; that shorthand works", async () => {
    let r = await lmvm(["run-microvm", "help"], env);
    assert.equal(r.code, 0);
    const idle = r.stdout.slice(r.stdout.indexOf("--idle-policy (structure)"), r.stdout.indexOf("--logging ("));
    assert.match(idle, /maxIdleDurationSeconds -> \(integer\) \[required\]\n\s+The maximum time in seconds that a MicroVM can remain idle/);
    assert.match(idle, /autoResumeEnabled -> \(boolean\) \[required\]/);
    assert.match(idle, /Shorthand Syntax:\n\n\s+maxIdleDurationSeconds=integer,suspendedDurationSeconds=integer,autoResumeEnabled=boolean\n/);
    assert.match(idle, /JSON Syntax:\n\n\s+\{\n\s+"maxIdleDurationSeconds": integer,\n\s+"suspendedDurationSeconds": integer,\n\s+"autoResumeEnabled": true\|false\n\s+\}/);
    r = await lmvm(["create-microvm-image", "help"], env);
    const hooks = r.stdout.slice(r.stdout.indexOf("--hooks (structure)"), r.stdout.indexOf("--environment-variables ("));
    assert.match(hooks, /microvmImageHooks -> \(structure\)\n\s+The hooks for MicroVM image build events\.\n\n\s+ready -> \(string\)\n[\s\S]*?Possible values:\n\s+\* DISABLED\n\s+\* ENABLED/);
    assert.match(hooks, /"ready": "DISABLED"\|"ENABLED"/);
    assert.match(r.stdout, /--code-artifact \(structure\) \[required\][\s\S]*?uri -> \(string\)\n\s+The URI of the code artifact/);
    // The nested shorthand the help documents is accepted.
    r = await lmvm(["create-microvm-image", "--name", "nested-shorthand", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", "--build-role-arn", "arn:aws:iam::000000000000:role/R", "--code-artifact", "uri=s3://b/k.zip",
      "--hooks", "port=9000,microvmImageHooks={ready=ENABLED,readyTimeoutInSeconds=60}", "--query", "hooks", "--output", "json"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 } });
  });

  test("global options go before or after the command; unknown commands and options are usage errors", async () => {
    let r = await lmvm(["--output", "text", "list-managed-microvm-images", "--query", "length(items)"], env);
    assert.equal(r.stdout, "2\n");
    r = await lmvm(["list-microvm-imagez"], env);
    assert.equal(r.code, 252);
    r = await lmvm(["list-microvm-images", "--nope", "1"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /Unknown options: --nope/);
  });

  test("a CLI pointed at a dead endpoint says so", async () => {
    const r = await lmvm(["list-microvm-images", "--endpoint-url", "http://127.0.0.1:1"], env);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /is 'lmvm server' running/);
  });
});
