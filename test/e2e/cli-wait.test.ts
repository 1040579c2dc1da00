// `lmvm wait …` as a script uses it, against a real server whose builder and
// sandbox runtime are scripted (a build ends when the test says so): each
// waiter returns 0 once its state is reached, and 255 with `Waiter X failed`
// naming the state and reason on a failure state or when its attempts run out.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CreateMicrovmImageCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand } from "@aws-sdk/client-lambda-microvms";
import { imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { startLmvm } from "../support/cli-process.js";
import { lmvm } from "../support/processes.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const ARN = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;
const FAST = ["--delay", "0.2"];

describe("lmvm wait", { timeout: 180_000 }, () => {
  let t: TestPlatform;
  let builder: ScriptedBuilder;
  let env: Record<string, string>;
  before(async () => {
    builder = new ScriptedBuilder();
    t = await startTestPlatform({ builder, runtime: new ScriptedRuntime() });
    env = { LMVM_DATA_DIR: t.dataDir };
  });
  after(() => t.stop());

  test("image-created and image-version-built wait for the build, and exit 0 when it succeeds", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("good")));
    const created = startLmvm(["wait", "image-created", "--image-identifier", "good", ...FAST], env);
    const built = startLmvm(["wait", "image-version-built", "--image-identifier", "good", "--image-version", "1.0", ...FAST], env);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(created.child.exitCode, null, "still waiting while the build runs");
    assert.equal(built.child.exitCode, null, "still waiting while the build runs");
    await builder.succeed();
    assert.deepEqual(await created.result, { code: 0, stdout: "", stderr: "" });
    assert.deepEqual(await built.result, { code: 0, stdout: "", stderr: "" });
  });

  test("image-version-built and image-created exit 255 naming the failure state and reason", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("bad")));
    const built = startLmvm(["wait", "image-version-built", "--image-identifier", "bad", "--image-version", "1.0", ...FAST], env);
    await builder.fail("the Dockerfile's RUN step exited with 1");
    const r = await built.result;
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Waiter ImageVersionBuilt failed: Waiter encountered a terminal failure state: For expression "state" we matched expected path: "FAILED" \(stateReason: .*RUN step exited with 1\)/);
    const img = await lmvm(["wait", "image-created", "--image-identifier", "bad", ...FAST], env);
    assert.equal(img.code, 255);
    assert.match(img.stderr, /Waiter ImageCreated failed: .*"CREATE_FAILED"/);
  });

  test("microvm-running, microvm-suspended and microvm-terminated follow a MicroVM's life; waiting for RUNNING fails once it is TERMINATED", async () => {
    const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: ARN("good") }));
    const id = ["--microvm-identifier", microvmId!];
    let r = await lmvm(["wait", "microvm-running", ...id, ...FAST], env);
    assert.deepEqual(r, { code: 0, stdout: "", stderr: "" });

    r = await lmvm(["wait", "microvm-suspended", ...id, "--delay", "0.1", "--max-attempts", "3"], env);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Waiter MicrovmSuspended failed: Max attempts exceeded .*"RUNNING"/);

    const suspended = startLmvm(["wait", "microvm-suspended", ...id, ...FAST], env);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: microvmId }));
    assert.equal((await suspended.result).code, 0);

    const running = startLmvm(["wait", "microvm-running", ...id, ...FAST], env);
    const terminated = startLmvm(["wait", "microvm-terminated", ...id, ...FAST], env);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(running.child.exitCode, null, "a SUSPENDED MicroVM may still be resumed: keep waiting");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: microvmId }));
    r = await running.result;
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Waiter MicrovmRunning failed: Waiter encountered a terminal failure state: For expression "state" we matched expected path: "TERMINAT(ING|ED)"/);
    assert.equal((await terminated.result).code, 0);
  });

  test("lmvm wait help lists the waiters; bad waiters and flags are usage errors", async () => {
    const help = await lmvm(["wait", "help"], env);
    assert.equal(help.code, 0);
    for (const w of ["image-created", "image-version-built", "microvm-running", "microvm-suspended", "microvm-terminated"]) assert.match(help.stdout, new RegExp(`^ {4}${w} `, "m"));
    let r = await lmvm(["wait", "microvm-runing", "--microvm-identifier", "microvm-0123456789abcdef0"], env);
    assert.equal(r.code, 252);
    r = await lmvm(["wait", "microvm-running"], env);
    assert.equal(r.code, 252);
    assert.match(r.stderr, /required: --microvm-identifier/);
    r = await lmvm(["wait", "microvm-running", "--microvm-identifier", "microvm-0123456789abcdef0", "--max-attempts", "0"], env);
    assert.equal(r.code, 252);
    r = await lmvm(["wait", "microvm-running", "--microvm-identifier", "microvm-0123456789abcdef0", ...FAST], env);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Waiter MicrovmRunning failed: An error occurred \(ResourceNotFoundException\)/);
  });
});
