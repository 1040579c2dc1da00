// A CLI call loads only what a client needs: the SDK, not the server. Every
// module `lmvm get-microvm` loads is recorded (test/support/module-trace.ts)
// and none of the server's heavy dependencies may be among them.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

const TRACE_HOOK = join(import.meta.dirname, "..", "support", "module-trace.js");

/** What a CLI call must not load: native addons, the database, Fastify, or any server module. */
function forbiddenModule(m: string): boolean {
  return /node_modules\/(better-sqlite3|fastify|kysely|@homebridge\/node-pty-prebuilt-multiarch|node-pty|prom-client|ws)\//.test(m) ||
    /\.node$/.test(m) ||
    (/\/dist\/src\/(server|store|core|runtime|builder|net|proxy|shell|os)\//.test(m) && !m.endsWith("/server/data-paths.js")) ||
    /\/dist\/src\/api\/(server|operations|sigv4|metrics|pagination|views|errors|index|connectors-route)\.js$/.test(m);
}

describe("what a CLI call loads", () => {
  let t: TestPlatform;
  before(async () => {
    t = await startTestPlatform();
  });
  after(() => t.stop());

  async function modulesLoadedBy(args: string[]): Promise<{ code: number; stderr: string; modules: string[] }> {
    const trace = join(t.dataDir, `trace-${args[0]}.txt`);
    const r = await lmvm(args, { LMVM_DATA_DIR: t.dataDir, LMVM_MODULE_TRACE: trace, NODE_OPTIONS: `--import=${TRACE_HOOK}` });
    return { code: r.code, stderr: r.stderr, modules: readFileSync(trace, "utf8").split("\n").filter(Boolean) };
  }

  test("get-microvm loads neither a native addon, nor the database, nor Fastify, nor any server module", async () => {
    const { code, stderr, modules } = await modulesLoadedBy(["get-microvm", "--microvm-identifier", "microvm-0123456789abcdef0"]);
    assert.equal(code, 254, stderr); // the server answered: ResourceNotFoundException
    assert.match(stderr, /ResourceNotFoundException/);
    assert.ok(modules.some((m) => m.includes("@aws-sdk/client-lambda-microvms")), "the trace records the SDK, so it works");
    assert.deepEqual(modules.filter(forbiddenModule), []);
  });

  test("get-network-connector, a Lambda Core command with no SDK of its own, loads no server module either", async () => {
    const { code, stderr, modules } = await modulesLoadedBy(["get-network-connector", "--identifier", "no-such-connector"]);
    assert.equal(code, 254, stderr);
    assert.match(stderr, /An error occurred \(ResourceNotFoundException\) when calling the GetNetworkConnector operation/);
    assert.ok(modules.some((m) => m.includes("/cli/connector-commands.js")), "the trace records the command's module, so it works");
    assert.deepEqual(modules.filter(forbiddenModule), []);
  });

  test("lmvm iam and lmvm sts, thin clients of the IAM and STS SDKs, load no server module either", async () => {
    for (const args of [["iam", "get-user", "--user-name", "nobody"], ["sts", "get-caller-identity"]]) {
      const { code, stderr, modules } = await modulesLoadedBy(args);
      assert.equal(code, args[0] === "iam" ? 254 : 0, stderr);
      assert.ok(modules.some((m) => m.includes(args[0] === "iam" ? "@aws-sdk/client-iam" : "@aws-sdk/client-sts")), "the trace records the SDK, so it works");
      assert.deepEqual(modules.filter(forbiddenModule), []);
    }
  });
});
