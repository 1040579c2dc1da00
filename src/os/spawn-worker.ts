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

import { parentPort } from "node:worker_threads";
import { startChild, type ChildEvent, type ChildRequest } from "./child.js";

/** A child to start, numbered by exec() so that its events find their way back. */
export type SpawnRequest = ChildRequest & { id: number };
export type SpawnEvent = ChildEvent & { id: number };

const port = parentPort!;
port.on("message", ({ id, ...request }: SpawnRequest) => {
  try {
    startChild(request, (e) => port.postMessage({ ...e, id } satisfies SpawnEvent));
  } catch (err) {
    port.postMessage({ id, kind: "error", message: (err as Error).message } satisfies SpawnEvent);
  }
});
