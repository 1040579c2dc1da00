// Starting one child process and reporting what it does as events: the same
// code runs on the main thread and on the spawn thread (src/os/spawn-worker.ts),
// whose events travel to exec() as messages.

import { spawn } from "node:child_process";

export interface ChildRequest {
  command: string;
  args: string[];
  cwd?: string;
  env: Record<string, string | undefined>;
}

/** What a child did; exactly one "error" or "close" ends the events. */
export type ChildEvent =
  | { kind: "spawned"; pid: number }
  | { kind: "data"; stdout: boolean; chunk: Uint8Array }
  | { kind: "error"; message: string }
  | { kind: "close"; code: number | null; signal: NodeJS.Signals | null };

/** Starts the child in a process group of its own, with stdin closed and stdout and stderr piped. */
export function startChild(r: ChildRequest, onEvent: (e: ChildEvent) => void): void {
  const child = spawn(r.command, r.args, { cwd: r.cwd, env: r.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  if (child.pid) onEvent({ kind: "spawned", pid: child.pid });
  child.stdout.on("data", (c: Buffer) => onEvent({ kind: "data", stdout: true, chunk: c }));
  child.stderr.on("data", (c: Buffer) => onEvent({ kind: "data", stdout: false, chunk: c }));
  let ended = false;
  const end = (e: ChildEvent) => {
    if (ended) return;
    ended = true;
    onEvent(e);
  };
  child.once("error", (e) => end({ kind: "error", message: e.message }));
  child.once("close", (code, signal) => end({ kind: "close", code, signal }));
}
