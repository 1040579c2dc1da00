// The host-wide lock that servers sharing a base-image cache take around an
// import: one holder at a time across processes, a dead holder's lock taken
// over, and waits that end.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { withFileLock } from "../../src/os/files.js";

const filesModule = fileURLToPath(new URL("../../src/os/files.js", import.meta.url));

/** Another process that takes the lock, appends "<tag> in", holds it `holdMs`, appends "<tag> out". */
function holder(lock: string, journal: string, tag: string, holdMs: number): Promise<number | null> {
  const script = `
    import { appendFileSync } from "node:fs";
    const { withFileLock } = await import(${JSON.stringify(filesModule)});
    await withFileLock(${JSON.stringify(lock)}, async () => {
      appendFileSync(${JSON.stringify(journal)}, "${tag} in\\n");
      await new Promise((r) => setTimeout(r, ${holdMs}));
      appendFileSync(${JSON.stringify(journal)}, "${tag} out\\n");
    }, { timeoutMs: 60000 });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: "inherit" });
  return new Promise((resolve) => child.on("exit", (code) => resolve(code)));
}

test("processes take the lock one at a time, and it is gone afterwards", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-lock-"));
  try {
    const lock = join(dir, "x.lock");
    const journal = join(dir, "journal");
    writeFileSync(journal, "");
    const codes = await Promise.all([holder(lock, journal, "a", 300), holder(lock, journal, "b", 300), holder(lock, journal, "c", 300)]);
    assert.deepEqual(codes, [0, 0, 0]);
    const lines = readFileSync(journal, "utf8").trim().split("\n");
    assert.equal(lines.length, 6);
    for (let i = 0; i < 6; i += 2) {
      const who = lines[i]!.split(" ")[0];
      assert.deepEqual([lines[i], lines[i + 1]], [`${who} in`, `${who} out`], `overlapping holders: ${lines.join(", ")}`);
    }
    assert.throws(() => readFileSync(lock), /ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a lock whose holder died is taken over; a live holder's lock is waited for until the deadline, naming the file and the holder", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-lock-"));
  try {
    const lock = join(dir, "x.lock");
    // A pid that is not running: a finished child's.
    const dead = spawn(process.execPath, ["-e", ""]);
    const deadPid = dead.pid!;
    await new Promise((r) => dead.on("exit", r));
    writeFileSync(lock, String(deadPid));
    assert.equal(await withFileLock(lock, async () => readFileSync(lock, "utf8"), { timeoutMs: 5000 }), String(process.pid));

    const live = spawn("sleep", ["30"]);
    try {
      writeFileSync(lock, String(live.pid));
      const waits: number[] = [];
      await assert.rejects(
        withFileLock(lock, async () => "never", { timeoutMs: 600, onWait: (owner) => waits.push(owner) }),
        (err: Error) => err.message.includes(lock) && err.message.includes(`process ${live.pid}`),
      );
      assert.deepEqual(waits, [live.pid]);
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error("stopped waiting")), 300);
      await assert.rejects(withFileLock(lock, async () => "never", { timeoutMs: 60_000, signal: controller.signal }), /stopped waiting/);
      assert.equal(readFileSync(lock, "utf8"), String(live.pid), "a waiter never removes a live holder's lock");
    } finally {
      live.kill("SIGKILL");
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
