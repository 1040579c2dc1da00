// FilterLogEvents' term patterns, as CloudWatch Logs reads them.

import assert from "node:assert/strict";
import { test } from "node:test";
import { BadPattern, compilePattern } from "../../src/logs/index.js";

test("terms all must appear, -terms must not, ?terms any, \"phrases\" as written, case-sensitive", () => {
  const lines = ["ERROR disk full", "ERROR Retrying in 5 s", "WARN slow", "info: all good", "error lower case"];
  const matching = (p: string) => lines.filter(compilePattern(p));
  assert.deepEqual(matching(""), lines);
  assert.deepEqual(matching("ERROR"), ["ERROR disk full", "ERROR Retrying in 5 s"]);
  assert.deepEqual(matching("ERROR -Retrying"), ["ERROR disk full"]);
  assert.deepEqual(matching("?ERROR ?WARN"), ["ERROR disk full", "ERROR Retrying in 5 s", "WARN slow"]);
  assert.deepEqual(matching('"all good"'), ["info: all good"]);
  assert.deepEqual(matching('"good all"'), []);
  assert.deepEqual(matching("ERROR full"), ["ERROR disk full"]);
});

test("patterns lmvm does not match are refused, saying what to use", () => {
  for (const p of ['{ $.level = "ERROR" }', "[ip, user]", "%ERR.*%", '"unclosed', "?a b"]) {
    assert.throws(() => compilePattern(p), (err: Error) => err instanceof BadPattern && /use|close|either/.test(err.message), p);
  }
});
