// Logs stay bounded whoever writes them: LogWriter (build logs), another
// process appending (a MicroVM's output through runsc), and a command printing
// without newlines (the build's line splitter).

import assert from "node:assert/strict";
import { openSync, readFileSync, statSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { boundFile, exec, LogFiles, readStamps, stampFile } from "../../src/os/index.js";
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

test("each line gets the time lmvm first saw it, and keeps its offset and time after older lines are dropped", () => {
  const logs = new LogFiles(tempDir(), 64 * KIB);
  const file = logs.path("microvm-stamps");
  const fd = openSync(file, "a"); // another process writing, as runsc does
  writeSync(fd, "first\nsecond\n");
  stampFile(file, 1_000);
  writeSync(fd, "third\n\npartial");
  stampFile(file, 2_000);
  const lines = logs.lines("microvm-stamps", { now: 2_500 });
  assert.deepEqual(lines, [
    { offset: 0, timestamp: 1_000, message: "first" },
    { offset: 6, timestamp: 1_000, message: "second" },
    { offset: 13, timestamp: 2_000, message: "third" },
  ], "empty lines are left out, and a last line without its newline waits");
  assert.equal(logs.lines("microvm-stamps", { now: 5_000 }).at(-1)?.message, "partial", "an unfinished line shows once it has waited");
  assert.deepEqual(logs.lines("microvm-stamps", { from: 6, now: 2_500 }).map((l) => l.message), ["second", "third"]);
  assert.deepEqual(logs.lines("microvm-stamps", { from: 7, now: 2_500 }).map((l) => l.message), ["third"], "a line begun before `from` is left out");
  assert.deepEqual(logs.lines("microvm-stamps", { since: 1_500, now: 2_500 }).map((l) => l.message), ["third"]);
  writeSync(fd, "\n");
  for (let i = 0; i < 1000; i++) writeSync(fd, `line ${i} ${"x".repeat(60)}\n`);
  stampFile(file, 3_000);
  const before = logs.lines("microvm-stamps", { now: 3_000 }).filter((l) => l.message.startsWith("line "));
  assert.equal(boundFile(file, 64 * KIB), true);
  const after = logs.lines("microvm-stamps", { now: 3_000 });
  assert.match(after[0]!.message, /bytes of older output were dropped/);
  assert.equal(after[0]!.timestamp, 3_000, "the line saying what was dropped gets the time of the first line kept");
  const kept = after.slice(1);
  assert.ok(kept.length > 100 && kept.length < before.length);
  assert.deepEqual(kept, before.slice(before.length - kept.length), "kept lines keep their offsets and timestamps");
  closeSync(fd);
});

test("the timestamp index stays bounded when a log grows a little at a time", () => {
  const logs = new LogFiles(tempDir(), 64 * KIB);
  const file = logs.path("microvm-slow");
  for (let i = 0; i < 2_000; i++) {
    writeFileSync(file, `tick ${i}\n`, { flag: "a" });
    stampFile(file, 10_000 + i * 1000);
    boundFile(file, 64 * KIB);
  }
  assert.ok(readStamps(file).entries.length <= (64 * KIB) / 8 / 24 + 1, `${readStamps(file).entries.length} entries`);
  const lines = logs.lines("microvm-slow", { now: 10_000_000 });
  assert.equal(lines.at(-1)?.message, "tick 1999");
  assert.equal(lines.at(-1)?.timestamp, 10_000 + 1999 * 1000);
  assert.match(lines[0]!.message, /bytes of older output were dropped/);
});

test("a writer of a build with logging disabled makes no file", async () => {
  const logs = new LogFiles(tempDir());
  const log = logs.open("build-off", { discard: true });
  log.step("nothing");
  log.line("kept");
  await log.close();
  assert.equal(logs.exists("build-off"), false);
  assert.deepEqual(logs.ids(), []);
});

test("LogWriter stamps its lines as they reach the file", async () => {
  const logs = new LogFiles(tempDir());
  const log = logs.open("build-stamped");
  const t0 = Date.now();
  log.line("one");
  log.line("two");
  await log.close();
  const lines = logs.lines("build-stamped");
  assert.deepEqual(lines.map((l) => l.message), ["one", "two"]);
  for (const l of lines) assert.ok(l.timestamp >= t0 && l.timestamp <= Date.now());
});
