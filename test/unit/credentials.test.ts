import assert from "node:assert/strict";
import { readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseCredentialsFile } from "../../src/server/index.js";
import { rootCredentials } from "../../src/server/data-dir.js";
import { tempDir } from "../support/platform.js";

test("first start takes the root keys from LMVM_ROOT_* and writes a private credentials file", () => {
  const dir = tempDir();
  process.env.LMVM_ROOT_ACCESS_KEY_ID = "AKIAEXAMPLE";
  process.env.LMVM_ROOT_SECRET_ACCESS_KEY = "secret/example";
  try {
    assert.deepEqual(rootCredentials(dir), { accessKeyId: "AKIAEXAMPLE", secretAccessKey: "secret/example" });
    const file = join(dir, "credentials");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(parseCredentialsFile(readFileSync(file, "utf8")), { accessKeyId: "AKIAEXAMPLE", secretAccessKey: "secret/example" });
    process.env.LMVM_ROOT_ACCESS_KEY_ID = "CHANGED";
    assert.equal(rootCredentials(dir).accessKeyId, "AKIAEXAMPLE", "later starts keep the file's keys");
  } finally {
    delete process.env.LMVM_ROOT_ACCESS_KEY_ID;
    delete process.env.LMVM_ROOT_SECRET_ACCESS_KEY;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("without LMVM_ROOT_* the keys are random", () => {
  const a = tempDir();
  const b = tempDir();
  try {
    const ka = rootCredentials(a);
    assert.notEqual(ka.accessKeyId, rootCredentials(b).accessKeyId);
    assert.match(ka.accessKeyId, /^[A-Z0-9]{20}$/);
    assert.ok(ka.secretAccessKey.length >= 40);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test("the credentials parser reads the named profile of a shared-credentials file", () => {
  const text = "[other]\naws_access_key_id = A\naws_secret_access_key = B\n\n[default]\naws_access_key_id=C\naws_secret_access_key = D\n";
  assert.deepEqual(parseCredentialsFile(text), { accessKeyId: "C", secretAccessKey: "D" });
  assert.deepEqual(parseCredentialsFile(text, "other"), { accessKeyId: "A", secretAccessKey: "B" });
  assert.equal(parseCredentialsFile(text, "missing"), undefined);
});
