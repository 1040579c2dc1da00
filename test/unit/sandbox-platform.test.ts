// Checkpoints carry the gVisor platform that made them (lmvm-platform.json);
// a runtime on another platform refuses them before it makes anything, and
// `lmvm server --platform` takes only the platforms lmvm supports.

import assert from "node:assert/strict";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { Gvisor, PlatformMismatch } from "../../src/runtime/index.js";
import { tempDir } from "../support/platform.js";
import { lmvm } from "../support/processes.js";

const dir = tempDir("lmvm-platform-unit-");
after(() => rmSync(dir, { recursive: true, force: true }));

function checkpointDir(name: string, stamp?: object): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, "checkpoint.img"), "");
  if (stamp) writeFileSync(join(d, "lmvm-platform.json"), JSON.stringify(stamp));
  return d;
}

test("a checkpoint without a stamp was made on systrap; a stamped one says its platform and runsc", () => {
  assert.deepEqual(Gvisor.stampOf(checkpointDir("old")), { platform: "systrap", runsc: "unknown" });
  assert.deepEqual(Gvisor.stampOf(checkpointDir("ptrace", { platform: "ptrace", runsc: "runsc version 0.0~20240729.0" })), { platform: "ptrace", runsc: "runsc version 0.0~20240729.0" });
});

test("a stamp that cannot be read is not taken for systrap: it fails, naming the file", () => {
  const broken = checkpointDir("broken");
  writeFileSync(join(broken, "lmvm-platform.json"), "{not json");
  assert.throws(() => Gvisor.stampOf(broken), /platform file .*broken\/lmvm-platform\.json is not JSON/);
  const empty = checkpointDir("no-platform", { runsc: "x" });
  assert.throws(() => Gvisor.stampOf(empty), /names no platform/);
  const refused = new Gvisor({ stateRoot: join(dir, "state-broken") }).mismatch(broken, "Its checkpoint");
  assert.ok(refused instanceof PlatformMismatch, "a runtime refuses it rather than guessing");
  assert.match(refused.message, /^Its checkpoint cannot be restored safely: The checkpoint's platform file .* is not JSON/);
});

test("a runtime refuses a checkpoint of another platform, naming both, and accepts its own", () => {
  const ptrace = new Gvisor({ stateRoot: join(dir, "state-ptrace"), platform: "ptrace" });
  const systrap = new Gvisor({ stateRoot: join(dir, "state-systrap") });
  assert.equal(systrap.platform, "systrap", "systrap is the default");
  const old = checkpointDir("old");
  const made = checkpointDir("made-on-ptrace", { platform: "ptrace", runsc: "x" });
  assert.equal(systrap.mismatch(old, "it"), undefined);
  assert.equal(ptrace.mismatch(made, "it"), undefined);
  const refused = ptrace.mismatch(old, "The snapshot");
  assert.ok(refused instanceof PlatformMismatch);
  assert.equal(refused.made, "systrap");
  assert.equal(refused.current, "ptrace");
  assert.match(refused.message, /^The snapshot was made on the gVisor platform systrap, and this server runs sandboxes on ptrace/);
});

test("restore refuses a checkpoint of another platform before it makes the sandbox's directory", async () => {
  const systrap = new Gvisor({ stateRoot: join(dir, "state-restore") });
  const sandboxDir = join(dir, "sandbox-never-made");
  const spec = { id: "never", rootfs: "/nonexistent", config: { Cmd: ["true"] }, env: {}, hostname: "h", network: { path: "/nonexistent", index: 0, sandboxIp: "10.211.0.2" } as never, dir: sandboxDir, logFile: "/dev/null" };
  await assert.rejects(systrap.restore(spec, checkpointDir("ptrace-2", { platform: "ptrace", runsc: "x" })), PlatformMismatch);
  assert.ok(!existsSync(sandboxDir), "nothing was made for the refused restore");
});

test("lmvm server --platform takes systrap or ptrace only", async () => {
  const r = await lmvm(["server", "--data-dir", join(dir, "never"), "--platform", "kvm"], {}, 30_000);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--platform must be one of systrap, ptrace; got 'kvm'/);
  assert.ok(!existsSync(join(dir, "never")), "the server did not start");
});
