// The thread that starts the child processes of background work (src/os/exec.ts,
// inBackground: a warm pool's refill). Node starts a child with a full fork()
// of its process, and on these hosts (nested virtualisation) a fork of the
// server costs 8 to 20 ms of the forking thread's time: on the main thread, a
// refill's two dozen `ip`, `nft`, `tc` and `runsc` calls stalled the event
// loop that long each, and the API's answers and a warm-pool claim's unpause
// and /run waited behind them. From this thread the main thread's event loop
// goes on meanwhile.
//
// The thread lives as long as the process: its children are started through
// `setpriv --pdeathsig KILL`, and the kernel sends that signal when the thread
// that forked them ends. The main thread kills a child's process group
// itself (it gets the pid first).

import { spawn } from "node:child_process";
import { parentPort } from "node:worker_threads";

export interface SpawnRequest {
  id: number;
  command: string;
  args: string[];
  cwd?: string;
  env: Record<string, string | undefined>;
}

export type SpawnEvent =
  | { id: number; kind: "spawned"; pid: number }
  | { id: number; kind: "data"; stdout: boolean; chunk: Uint8Array }
  | { id: number; kind: "error"; message: string }
  | { id: number; kind: "close"; code: number | null; signal: NodeJS.Signals | null };

const port = parentPort!;
port.on("message", (r: SpawnRequest) => {
  const post = (e: SpawnEvent) => port.postMessage(e);
  let child;
  try {
    child = spawn(r.command, r.args, { cwd: r.cwd, env: r.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    post({ id: r.id, kind: "error", message: (err as Error).message });
    return;
  }
  if (child.pid) post({ id: r.id, kind: "spawned", pid: child.pid });
  child.stdout.on("data", (c: Buffer) => post({ id: r.id, kind: "data", stdout: true, chunk: c }));
  child.stderr.on("data", (c: Buffer) => post({ id: r.id, kind: "data", stdout: false, chunk: c }));
  child.once("error", (e) => post({ id: r.id, kind: "error", message: e.message }));
  child.once("close", (code, signal) => post({ id: r.id, kind: "close", code, signal }));
});
