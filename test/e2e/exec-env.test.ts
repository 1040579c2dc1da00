// `lmvm exec` runs its command with the environment the app got: the
// Dockerfile's ENV, the image's environmentVariables and the reserved AWS_*
// variables, with the real CLI
// and a real server, build and MicroVM.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { makeZip } from "../support/artifacts.js";
import { eventually, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { freeSandboxes } from "../support/sandboxes.js";

const SHELL = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS";
const dataDir = tempDir("lmvm-exec-env-");
const env = { LMVM_DATA_DIR: dataDir };
let server: ServerProcess;
before(async () => {
  server = await spawnServer(dataDir, { builds: true });
});
after(async () => {
  await server.kill();
  await freeSandboxes(dataDir);
});

const ok = async (args: string[]) => {
  const r = await lmvm(args, env);
  assert.equal(r.code, 0, `lmvm ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
};

test("lmvm exec sees the Dockerfile's ENV and the image's environmentVariables, as the app does", { timeout: 600_000 }, async () => {
  const zip = join(dataDir, "app.zip");
  writeFileSync(zip, makeZip([{ name: "Dockerfile", content: [
    "FROM lmvm/busybox",
    "ENV FROM_DOCKERFILE=set-by-env-line",
    "RUN mkdir -p /www && echo ok > /www/index.html",
    'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]',
    "",
  ].join("\n") }]));
  await ok(["create-microvm-image", "--name", "env-app", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:busybox",
    "--build-role-arn", "arn:aws:iam::000000000000:role/R", "--code-artifact", `uri=file://${zip}`, "--environment-variables", '{"FROM_API":"set-by-create-microvm-image"}']);
  await eventually(async () => {
    const s = await ok(["get-microvm-image", "--image-identifier", "env-app", "--query", "state", "--output", "text"]);
    assert.notEqual(s, "CREATE_FAILED");
    return s === "CREATED" ? true : undefined;
  }, "the build", 300_000);
  const id = await ok(["run-microvm", "--image-identifier", "arn:aws:lambda:us-east-1:000000000000:microvm-image:env-app", "--ingress-network-connectors", SHELL, "--query", "microvmId", "--output", "text"]);
  await eventually(async () => ((await ok(["get-microvm", "--microvm-identifier", id, "--query", "state", "--output", "text"])) === "RUNNING" ? true : undefined), "RUNNING", 60_000);

  const exec = await lmvm(["exec", id, "--", "sh", "-c", 'echo "$FROM_DOCKERFILE $FROM_API"; echo "$AWS_REGION $AWS_LAMBDA_MICROVM_IMAGE_NAME $AWS_LAMBDA_MICROVM_IMAGE_VERSION $AWS_LAMBDA_MICROVM_IMAGE_ARN"'], env);
  assert.equal(exec.code, 0, exec.stderr);
  assert.equal(exec.stdout, "set-by-env-line set-by-create-microvm-image\nus-east-1 env-app 1.0 arn:aws:lambda:us-east-1:000000000000:microvm-image:env-app\n");
  await ok(["terminate-microvm", "--microvm-identifier", id]);
});
