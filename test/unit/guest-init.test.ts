// lmvm-init, PID 1 of every sandbox, run here in a PID namespace of its own
// (unshare) so it is PID 1 as in a sandbox: it runs the command as its child
// with the environment unchanged, exits with its status, forwards signals,
// reaps orphans, and relays its relay port to 127.0.0.1:<hooks port>, where
// the app sees the caller as 127.0.0.1. Sandboxed runs: test/e2e/examples.test.ts.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { test } from "node:test";
import { GUEST_INIT_BINARY } from "../../src/runtime/guest-init/guest-init.js";
import { event, until, within } from "../support/deadline.js";

/** Runs lmvm-init as PID 1 of a new PID namespace; resolves with its exit status and output. */
function init(args: string[], env: Record<string, string> = {}) {
  const child = spawn("unshare", ["--pid", "--fork", "--mount-proc", GUEST_INIT_BINARY, ...args], { env: { PATH: process.env.PATH!, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d));
  child.stderr.on("data", (d: Buffer) => (out += d));
  const done = event<[number | null]>(20_000, "lmvm-init to exit", child as unknown as Emitter, "exit").then(([code]) => ({ code, out }));
  /** Signals lmvm-init itself: unshare, its parent, does not pass signals on. */
  const signal = (name: NodeJS.Signals) => process.kill(Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim()), name);
  return { child, done, signal, output: () => out };
}

type Emitter = Parameters<typeof event>[2];

async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await event(5_000, "a port to listen on", server as unknown as Emitter, "listening");
  const port = (server.address() as { port: number }).port;
  server.close();
  return port;
}

test("lmvm-init runs the command with its environment, as PID 2, and exits with its status", async () => {
  const r = await init(["0", "0", "sh", "-c", 'echo "pid=$$ ppid=$PPID v=$MY_VAR"; exit 7'], { MY_VAR: "kept" }).done;
  assert.equal(r.code, 7);
  assert.equal(r.out, "pid=2 ppid=1 v=kept\n");
});

test("lmvm-init forwards SIGTERM to the command and exits with 128+15 when it dies of it", async () => {
  const r = init(["0", "0", "sh", "-c", "echo started; sleep 30 & wait"]);
  await until(10_000, "the command to start", () => r.output().includes("started"));
  r.signal("SIGTERM");
  assert.equal((await r.done).code, 143);
});

test("lmvm-init reaps orphans, and a missing command exits 127 naming it", async () => {
  const r = await init(["0", "0", "sh", "-c", "for i in 1 2 3; do (sleep 0.1 &); done; sleep 1; ps -eo stat= | grep -c Z; true"]).done;
  assert.equal(r.out.trim(), "0", "no zombie is left");
  const missing = await init(["0", "0", "no-such-command"]).done;
  assert.equal(missing.code, 127);
  assert.match(missing.out, /cannot run no-such-command/);
});

test("lmvm-init relays its relay port to 127.0.0.1:<hooks port>, where the caller is 127.0.0.1, and keeps relaying past 32 connections at once", async () => {
  const [relay, hooks] = [await freePort(), await freePort()];
  const app = `require("node:http").createServer((q, s) => { let b = ""; q.on("data", (c) => (b += c)); q.on("end", () => s.end(JSON.stringify({ from: q.socket.remoteAddress, host: q.headers.host, body: b }))); }).listen(${hooks}, "127.0.0.1", () => console.log("listening"));`;
  const r = init([String(relay), String(hooks), process.execPath, "-e", app]);
  try {
    await until(10_000, "the app to listen", () => r.output().includes("listening"));
    const call = (body: string) =>
      new Promise<{ from: string; host: string; body: string }>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port: relay, method: "POST", path: "/aws/lambda-microvms/runtime/v1/run", agent: false, headers: { host: `localhost:${hooks}` } }, (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c));
          res.on("end", () => resolve(JSON.parse(text)));
        });
        req.on("error", reject);
        req.end(body);
      });
    assert.deepEqual(await within(10_000, "a relayed call", call('{"microvmId":"m"}')), { from: "127.0.0.1", host: `localhost:${hooks}`, body: '{"microvmId":"m"}' });
    const many = await within(20_000, "40 relayed calls at once", Promise.all(Array.from({ length: 40 }, (_, i) => call(`call ${i}`))));
    assert.deepEqual(many.map((m) => m.body), Array.from({ length: 40 }, (_, i) => `call ${i}`));
  } finally {
    r.signal("SIGTERM");
    assert.equal((await r.done).code, 143);
  }
});
