// A client of the MicroVM shell that speaks only the service's documented
// protocol, as an app written for AWS Lambda MicroVMs would: the `ws` package,
// wss://<endpoint>/shell, the token in the subprotocol
// `lambda-microvms.authentication.<token>` beside the base `lambda-microvms`,
// no lmvm header, query or frame. Plus the check every app image's shell must
// pass: session_init first, a root login shell on a /dev/pts terminal with
// TERM=xterm, resize, text typed in, close 1000 "shell exited" on exit.

import assert from "node:assert/strict";
import type { LookupFunction } from "node:net";
import WebSocket from "ws";
import { event, until, within } from "./deadline.js";

/** *.localhost to loopback, as curl --connect-to would: the endpoint's name stays in the URL, SNI and Host. */
const toLoopback: LookupFunction = (_host, options, callback) =>
  (options as { all?: boolean }).all ? (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4);

export interface ServiceShell {
  ws: WebSocket;
  /** Every frame the server sent, in order. */
  frames: { binary: boolean; data: Buffer }[];
  /** The terminal's output so far: the binary frames' bytes. */
  screen(): string;
  /** Terminal bytes to the shell (a binary frame). */
  type(text: string): void;
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens the shell at `endpoint` (https://<id>.<domain>:<port>) with a token from CreateMicrovmShellAuthToken. */
export async function openServiceShell(endpoint: string, token: string, ca: Buffer, opts: { port8022?: boolean; path?: string } = {}): Promise<ServiceShell> {
  const url = `${endpoint.replace(/^https:/, "wss:")}${opts.path ?? "/shell"}`;
  const protocols = ["lambda-microvms", `lambda-microvms.authentication.${token}`, ...(opts.port8022 ? ["lambda-microvms.port.8022"] : [])];
  const ws = new WebSocket(url, protocols, { ca, lookup: toLoopback });
  const frames: ServiceShell["frames"] = [];
  ws.on("message", (data: Buffer, binary: boolean) => frames.push({ binary, data }));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  await event(30_000, "the shell's WebSocket to open", ws, "open");
  return {
    ws,
    frames,
    screen: () => Buffer.concat(frames.filter((f) => f.binary).map((f) => f.data)).toString("utf8"),
    type: (text) => ws.send(Buffer.from(text)),
    closed,
  };
}

/** Waits until `check` holds; a failure shows what the terminal showed. */
async function untilScreen(shell: ServiceShell, what: string, check: () => boolean, everyMs?: number): Promise<void> {
  await until(30_000, what, check, everyMs).catch((err: Error) => {
    throw new Error(`${err.message}; the terminal shows ${JSON.stringify(shell.screen().slice(-600))}`);
  });
}

/** Drives a shell through everything the service's protocol promises, asserting each step; it ends with the shell exited. */
export async function checkServiceShell(shell: ServiceShell): Promise<void> {
  assert.equal(shell.ws.protocol, "lambda-microvms", "the server names the base subprotocol back");
  await until(30_000, "the session_init frame", () => shell.frames.length > 0);
  const first = shell.frames[0]!;
  assert.equal(first.binary, false, "the first frame is text");
  const init = JSON.parse(first.data.toString("utf8")) as Record<string, unknown>;
  assert.deepEqual(Object.keys(init).sort(), ["session_id", "type"]);
  assert.equal(init.type, "session_init");
  assert.match(String(init.session_id), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

  shell.type("echo $TERM; id -u; tty\n");
  // The answers, each on a line of its own (after the echoed command line, and bash's end of bracketed paste).
  await untilScreen(shell, "TERM, uid and tty in the terminal", () => /[\r\n]xterm\r\n0\r\n\/dev\/pts\/\d+\r\n/.test(shell.screen()));

  // A resize reaches the shell's terminal through SIGWINCH; ask until the new size shows.
  shell.ws.send(JSON.stringify({ type: "resize", cols: 123, rows: 45 }));
  await untilScreen(shell, "stty size to show the resize", () => {
    if (/[\r\n]45 123\r\n/.test(shell.screen())) return true;
    shell.type("stty size\n");
    return false;
  }, 500);

  // Text that is not a resize (JSON of another type here) is typed into the shell, as keystrokes are.
  shell.ws.send(JSON.stringify({ type: "greeting" }));
  shell.ws.send("; echo typed-as-$((20 + 22))\n");
  await untilScreen(shell, "the text frames' command to run", () => /\{type:greeting\}: command not found[\s\S]*typed-as-42/.test(shell.screen()));

  assert.ok(shell.frames.slice(1).every((f) => f.binary), "after session_init, the server sends only binary frames");
  shell.type("exit\n");
  assert.deepEqual(await within(30_000, "the shell's WebSocket to close after exit", shell.closed), { code: 1000, reason: "shell exited" });
}

/**
 * A client that goes away without `exit` hangs the terminal up: its shell and
 * the shell's jobs end (nothing is left running in the MicroVM), as they would
 * on a real terminal. `open` opens a new shell.
 */
export async function checkHangUp(open: () => Promise<ServiceShell>): Promise<void> {
  const first = await open();
  first.type("sleep 300 & echo \"pids:$$:$!:\"\n");
  await untilScreen(first, "the shell's and its job's pids", () => /pids:\d+:\d+:/.test(first.screen()));
  const [, shell, job] = /pids:(\d+):(\d+):/.exec(first.screen())!;
  first.ws.terminate(); // the connection drops: no close frame, no exit
  const second = await open();
  await untilScreen(second, `the dropped shell (pid ${shell}) and its job (pid ${job}) to end`, () => {
    if (/left-0\r\n/.test(second.screen())) return true;
    // Still running: present and not a zombie (an orphan's parent is then the app, PID 1, which need not reap it).
    second.type(`cat /proc/${shell}/stat /proc/${job}/stat 2>/dev/null | awk '$3 != "Z"' | wc -l | sed s/^/left-/\n`);
    return false;
  }, 500);
  second.type("exit\n");
  assert.equal((await within(30_000, "the second shell to close", second.closed)).code, 1000);
}
