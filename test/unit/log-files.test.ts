// Logs stay bounded whoever writes them: LogWriter (build logs), another
// process appending (a MicroVM's output through runsc), and a command printing
// without newlines (the build's line splitter).

import assert from "node:assert/strict";
import { openSync, readFileSync, statSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { boundFile, exec, LogFiles } from "../../src/os/index.js";
import { tempDir } from "../support/platform.js";

const KIB = 1024;

test("boundFile keeps the newest half from a line start, says what it dropped, and appends go on at the end", () => {
  const file = join(tempDir(), "app.log");
  const fd = openSync(file, "a"); // an appender holding the file open, as runsc does
  for (let i = 0; i < 2000; i++) writeSync(fd, `line ${i} ${"x".repeat(40)}\n`);
  assert.equal(boundFile(file, 64 * KIB), true);
  writeSync(fd, "after the trim\n");
  closeSync(fd);
  const text = readFileSync(file, "utf8");
  const lines = text.trimEnd().split("\n");
  assert.match(lines[0]!, /^\[lmvm\] \d+ bytes of older output were dropped: a log is kept under 64 KiB\.$/);
  assert.match(lines[1]!, /^line \d+ x+$/, "the kept part starts at a whole line");
  assert.equal(lines.at(-2), `line 1999 ${"x".repeat(40)}`);
  assert.equal(lines.at(-1), "after the trim", "the appender's next write lands at the new end, not past a hole");
  assert.ok(statSync(file).size <= 33 * KIB);
  assert.equal(boundFile(file, 64 * KIB), false, "a file under the limit is left alone");
});

test("a LogWriter keeps its file under its limit however much is written", async () => {
  const logs = new LogFiles(tempDir(), 256 * KIB);
  const log = logs.open("build-1");
  for (let i = 0; i < 20_000; i++) log.line(`step ${i} ${"y".repeat(100)}`);
  log.line("the end");
  await log.close();
  const text = readFileSync(logs.path("build-1"), "utf8");
  assert.ok(text.length <= 256 * KIB + 200, `${text.length} bytes`);
  assert.match(text, /bytes of older output were dropped/);
  assert.ok(text.endsWith("the end\n"), "the newest lines are kept");
});

test("LogFiles.boundAll trims every oversized log in its directory", () => {
  const dir = tempDir();
  const logs = new LogFiles(dir, 64 * KIB);
  const big = logs.path("microvm-a");
  const small = logs.path("microvm-b");
  const fd = openSync(big, "a");
  writeSync(fd, `${"z".repeat(99)}\n`.repeat(2000));
  closeSync(fd);
  const sfd = openSync(small, "a");
  writeSync(sfd, "small\n");
  closeSync(sfd);
  logs.boundAll();
  assert.ok(statSync(big).size <= 33 * KIB);
  assert.equal(readFileSync(small, "utf8"), "small\n");
});

test("a command printing megabytes without a newline is split into bounded lines", async () => {
  const lengths: number[] = [];
  const r = await exec("sh", ["-c", "head -c 1000000 /dev/zero | tr '\\0' a"], { onLine: (l) => lengths.push(l.length) });
  assert.equal(r.code, 0);
  assert.ok(Math.max(...lengths) <= 64 * KIB, `longest line ${Math.max(...lengths)}`);
  assert.equal(lengths.reduce((a, b) => a + b, 0), 1_000_000 - (1_000_000 % (64 * KIB)), "all but the unterminated rest arrives as lines");
});
