// The example app built with the real CLI against a real `lmvm server`, from
// an S3 artifact and from a file:// artifact, following the build's log live.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { readBuiltImage } from "../../src/builder/index.js";
import { makeZip, startS3, type S3Server } from "../support/artifacts.js";
import { eventually, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";
import { paths } from "../../src/server/data-paths.js";

const EXAMPLES = join(import.meta.dirname, "..", "..", "..", "examples");

function zipExample(name: string): Buffer {
  const dir = join(EXAMPLES, name);
  return makeZip(readdirSync(dir).map((f) => ({ name: f, content: readFileSync(join(dir, f), "utf8") })));
}

describe("building the examples with the lmvm CLI", { timeout: 600_000 }, () => {
  let dataDir: string;
  let server: ServerProcess;
  let s3: S3Server;
  let env: Record<string, string>;

  before(async () => {
    s3 = await startS3();
    dataDir = tempDir();
    server = await spawnServer(dataDir, {
      builds: true,
      args: ["--s3-endpoint", s3.endpoint],
      env: { LMVM_S3_ACCESS_KEY_ID: s3.credentials.accessKeyId, LMVM_S3_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey },
    });
    env = { LMVM_DATA_DIR: dataDir };
  });
  after(async () => {
    await server.kill();
    await s3.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function createAndWait(name: string, uri: string): Promise<string> {
    const created = await lmvm(["create-microvm-image", "--name", name,
      "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:debian12",
      "--build-role-arn", "arn:aws:iam::000000000000:role/MicroVMBuildRole",
      "--code-artifact", JSON.stringify({ uri }),
      "--query", "imageVersion", "--output", "text"], env);
    assert.equal(created.code, 0, created.stderr);
    const version = created.stdout.trim();
    // Follow the log while the build runs: it streams, then ends by itself.
    const followed = await lmvm(["logs", "build", name, version, "--follow"], env);
    assert.equal(followed.code, 0, followed.stderr);
    assert.match(followed.stdout, /==> Done: root filesystem of \d+ bytes/);
    const state = await eventually(async () => {
      const r = await lmvm(["get-microvm-image", "--image-identifier", name, "--query", "state", "--output", "text"], env);
      return ["CREATED", "CREATE_FAILED"].includes(r.stdout.trim()) ? r.stdout.trim() : undefined;
    }, "image state", 60_000);
    assert.equal(state, "CREATED");
    const builds = JSON.parse((await lmvm(["list-microvm-image-builds", "--image-identifier", name, "--image-version", version], env)).stdout);
    return builds.items[0].architecture;
  }

  for (const source of ["s3", "file"] as const) {
    test(`examples/hello from a ${source === "s3" ? "S3" : "file://"} artifact builds, and its rootfs holds the app`, async () => {
      let uri: string;
      if (source === "s3") uri = await s3.put("examples/hello.zip", zipExample("hello"));
      else {
        const file = join(dataDir, "hello.zip");
        writeFileSync(file, zipExample("hello"));
        uri = `file://${file}`;
      }
      const name = `hello-${source}`;
      const arch = await createAndWait(name, uri);
      const image = readBuiltImage(paths(dataDir).images, `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`, "1.0", arch);
      assert.equal(readFileSync(join(image.rootfs, "app", "server.js"), "utf8"), readFileSync(join(EXAMPLES, "hello", "server.js"), "utf8"));
      assert.ok(existsSync(join(image.rootfs, "usr", "bin", "node")));
      assert.deepEqual(image.config.Cmd, ["node", "server.js"]);
    });
  }
});
