// A sandbox's control server, called directly: the call runsc's own
// sub-commands make (gVisor's pkg/urpc), without starting runsc. Every runsc
// sub-command is a Go program of its own that reads the sandbox's state file,
// takes its lock and connects to this socket; its start alone costs 50-75 ms
// on an idle 2-core host and 200-300 ms on a loaded one. A warm-pool claim's
// unpause is on RunMicrovm's path (src/runtime/pool.ts), and so is naming a
// restored MicroVM (its hostname, `hostname <id>` run inside), so both are made here.
//
// The protocol (runsc 20240729, gVisor's pkg/urpc and pkg/unet): a stream Unix
// socket whose path the sandbox's state file names (`controlSocketPath` in
// <root>/<id>_sandbox:<id>.state); the client writes one JSON object
// {"method": "<receiver>.<Method>", "arg": <argument>} and reads one JSON
// object back {"success": bool, "err": string, "result": ...}. The server
// keeps the connection for more calls; one call per connection here.
//
// What `runsc resume` does besides the call is done here too: it writes the
// container's status ("paused" to "running") into the state file, which
// `runsc list` reports and `runsc exec`, `kill` and `checkpoint` check. The
// file is rewritten whole (a rename, so a concurrent `runsc list` reads the old
// or the new one) with only that field changed: its text is edited, not
// re-encoded, since a JSON number of Go's int64 (the spec's limits) would not
// survive a round trip through JavaScript's numbers. runsc takes a lock (flock
// on <id>_sandbox:<id>.lock) around its own writes; lmvm runs one operation at
// a time on a sandbox, so no runsc command writes it meanwhile.

import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { writeFileAtomic } from "../os/index.js";

const stateFile = (stateRoot: string, id: string) => join(stateRoot, `${id}_sandbox:${id}.state`);

/**
 * The control socket of sandbox `id` when runsc records it as paused, with its
 * state file's text; undefined otherwise (then `runsc resume` does it all).
 */
export function pausedSandbox(stateRoot: string, id: string): { socket: string; state: string } | undefined {
  return sandboxRecorded(stateRoot, id, PAUSED);
}

/**
 * The control socket of sandbox `id` and its state file's text when the file records `status`
 * once; undefined otherwise (another status, or a shape this does not know: runsc decides).
 */
function sandboxRecorded(stateRoot: string, id: string, status: string): { socket: string; state: string } | undefined {
  let state: string;
  try {
    state = readFileSync(stateFile(stateRoot, id), "utf8");
  } catch {
    return undefined;
  }
  if (state.split(status).length !== 2) return undefined;
  const socket = controlSocketOf(state);
  return socket ? { socket, state } : undefined;
}

/** Records sandbox `id` as running in runsc's state file, as `runsc resume` does after its call (`state`: the text pausedSandbox read). */
export function recordRunning(stateRoot: string, id: string, state: string): void {
  writeFileAtomic(stateFile(stateRoot, id), state.replace(PAUSED, RUNNING), 0o640);
}

const PAUSED = '"status":"paused"';
const RUNNING = '"status":"running"';

/** The control socket a state file's text names, as Node connects to it; undefined when it names none. */
function controlSocketOf(state: string): string | undefined {
  let path: unknown;
  try {
    path = (JSON.parse(state) as { sandbox?: { controlSocketPath?: unknown } }).sandbox?.controlSocketPath;
  } catch {
    return undefined;
  }
  if (typeof path !== "string" || !path) return undefined;
  // An abstract socket is written with a leading "@"; Node names it with a NUL.
  return path.startsWith("@") ? `\0${path.slice(1)}` : path;
}

/** Calls `method` on the control server at `socket` with `arg` (JSON); resolves with its result, or fails naming the method and what went wrong. */
export function controlCall(socket: string, method: string, arg: unknown, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = connect(socket);
    let text = "";
    let done = false;
    const finish = (err: Error | undefined, result?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      if (err) reject(new Error(`the sandbox's control call ${method} failed: ${err.message}`));
      else resolve(result);
    };
    const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    conn.setEncoding("utf8");
    conn.on("connect", () => conn.write(JSON.stringify({ method, arg })));
    conn.on("data", (chunk: string) => {
      text += chunk;
      let answer: { success?: boolean; err?: string; result?: unknown };
      try {
        answer = JSON.parse(text) as typeof answer;
      } catch {
        return; // more to come
      }
      if (answer.success) finish(undefined, answer.result);
      else finish(new Error(answer.err || "the sandbox refused it"));
    });
    conn.on("error", (err) => finish(err));
    conn.on("close", () => finish(new Error("the sandbox closed the connection without answering")));
  });
}

/** The control socket of sandbox `id` when runsc records it as running; undefined otherwise (then `runsc exec` does it). */
export function runningSandbox(stateRoot: string, id: string): string | undefined {
  return sandboxRecorded(stateRoot, id, RUNNING)?.socket;
}

/** CAP_SYS_ADMIN as a bit of gVisor's auth.CapabilitySet. */
export const CAP_SYS_ADMIN = 2 ** 21;

/**
 * Runs `argv` (its first element an absolute path) in the container `id` of
 * the sandbox at `socket`, as root with only `capabilities` (a set of bits)
 * and no standard streams, and waits for it: what `runsc exec --cap ...` asks
 * the control server (containerManager.ExecuteAsync, then WaitPID, which also
 * drops the process from the sandbox's table), without starting runsc.
 * Resolves with its exit status, or -1 when a signal ended it.
 */
export async function controlExec(socket: string, id: string, argv: string[], capabilities: number, timeoutMs: number): Promise<number> {
  const caps = { PermittedCaps: capabilities, InheritableCaps: capabilities, EffectiveCaps: capabilities, BoundingCaps: capabilities, AmbientCaps: capabilities };
  const began = Date.now();
  const pid = await controlCall(socket, "containerManager.ExecuteAsync", { filename: argv[0], argv, envv: [], wd: "/", KUID: 0, KGID: 0, Capabilities: caps, ContainerID: id }, timeoutMs);
  if (typeof pid !== "number") throw new Error(`the sandbox's control call containerManager.ExecuteAsync answered ${JSON.stringify(pid)}, not a process id`);
  const status = await controlCall(socket, "containerManager.WaitPID", { PID: pid, CID: id }, Math.max(1, timeoutMs - (Date.now() - began)));
  if (typeof status !== "number") throw new Error(`the sandbox's control call containerManager.WaitPID answered ${JSON.stringify(status)}, not a wait status`);
  return (status & 0x7f) === 0 ? (status >> 8) & 0xff : -1;
}
