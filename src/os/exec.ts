// Runs the external tools a build needs (buildah, mmdebstrap, cp) as child
// processes: output goes line by line to the build log, the last lines are
// kept for error messages, and an abort kills the whole process group.
// Each child is started through `setpriv --pdeathsig KILL`, so the kernel
// kills it if the server dies (even by SIGKILL) instead of leaving it orphaned;
// commands that fork further run in their own PID namespace (see Buildah),
// whose processes all die with its first one.
//
// Node forks its whole process for every child: 8 to 20 ms of the forking
// thread on these hosts (nested virtualisation). Work that nobody waits for
// (a warm pool's refill, run inside `inBackground`) forks on a thread of its
// own (src/os/spawn-worker.ts), so that its commands never stall the event
// loop that API answers and a claimed clone's unpause need. Other commands
// fork on the main thread: a sequence of them (a run's network set-up) is
// slower from the thread, whose forks contend with the running main thread
// (40 spawns: 533-623 ms on the main thread, 685-730 ms from the thread; a
// RunMicrovm's egress attach 391 -> 625 ms in the snapshots bench).

import { AsyncLocalStorage } from "node:async_hooks";
import { Worker } from "node:worker_threads";
import { startChild, type ChildEvent, type ChildRequest } from "./child.js";
import type { SpawnEvent, SpawnRequest } from "./spawn-worker.js";

export interface ExecOptions {
  /** Receives each output line (stdout and stderr interleaved). */
  onLine?: (line: string) => void;
  signal?: AbortSignal;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How many trailing lines to keep for the result. */
  keepLines?: number;
  /** Told the pid of the process started (setpriv, which becomes the command). */
  onSpawn?: (pid: number) => void;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  tail: string[];
  stdout: string;
}

export class ExecError extends Error {
  constructor(
    readonly command: string,
    readonly result: ExecResult,
  ) {
    super(`${command} exited with ${result.code ?? result.signal}: ${summary(result.tail)}`);
  }

  /** Keeps error output readable when the tool dumped a stack trace. */
  toJSON(): object {
    return { command: this.command, code: this.result.code, signal: this.result.signal, output: summary(this.result.tail) };
  }
}

const MAX_STDOUT = 16 * 1024 * 1024;
const MAX_LINE = 64 * 1024;

/** The lines that say what went wrong: error and panic lines first, else the last few. */
function summary(lines: string[]): string {
  const telling = lines.filter((l) => /error|panic|fatal|failed/i.test(l) && !/^\s/.test(l)).map((l) => l.slice(0, 300));
  return (telling.length ? telling.slice(-3) : lines.slice(-5).map((l) => l.slice(0, 300))).join(" | ");
}

/**
 * The thread that forks background work's children (src/os/spawn-worker.ts),
 * started on first use, kept for the process's life (its children die with the
 * thread that forked them), and holding the process open only while a child runs.
 */
class Spawner {
  private worker: Worker | undefined;
  private next = 1;
  /** Each running child's event handler, by its request's number. */
  private readonly pending = new Map<number, (e: ChildEvent) => void>();

  start(request: ChildRequest, onEvent: (e: ChildEvent) => void): void {
    const worker = (this.worker ??= this.open());
    const id = this.next++;
    this.pending.set(id, onEvent);
    if (this.pending.size === 1) worker.ref();
    worker.postMessage({ id, ...request } satisfies SpawnRequest);
  }

  private open(): Worker {
    const worker = new Worker(new URL("./spawn-worker.js", import.meta.url));
    worker.unref();
    worker.on("message", (e: SpawnEvent) => {
      const onEvent = this.pending.get(e.id);
      if (!onEvent) return;
      if (e.kind === "close" || e.kind === "error") this.settle(e.id);
      onEvent(e);
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      const all = [...this.pending];
      this.pending.clear();
      worker.unref();
      for (const [, onEvent] of all) onEvent({ kind: "error", message: `the thread that starts child processes failed: ${err.message}` });
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`it exited (${code})`)));
    return worker;
  }

  private settle(id: number): void {
    this.pending.delete(id);
    if (!this.pending.size) this.worker?.unref();
  }
}

const spawner = new Spawner();
const background = new AsyncLocalStorage<boolean>();

/** Runs `work` with every child it starts (through exec, run, runWithin) forked on the spawn thread. */
export function inBackground<T>(work: () => Promise<T>): Promise<T> {
  return background.run(true, work);
}

export function exec(command: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new Error("aborted"));
    const keep = opts.keepLines ?? 40;
    const tail: string[] = [];
    let stdout = "";
    const lineSplitter = () => {
      let partial = "";
      return (chunk: Uint8Array, isStdout: boolean) => {
        const text = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("utf8");
        if (isStdout && stdout.length < MAX_STDOUT) stdout += text;
        const lines = (partial + text).split(/\r?\n/);
        partial = lines.pop() ?? "";
        // Output without newlines must not grow without bound in memory: long runs become lines of their own.
        while (partial.length > MAX_LINE) {
          lines.push(partial.slice(0, MAX_LINE));
          partial = partial.slice(MAX_LINE);
        }
        for (const line of lines) {
          opts.onLine?.(line);
          tail.push(line);
          if (tail.length > keep) tail.shift();
        }
      };
    };
    const out = lineSplitter();
    const err = lineSplitter();
    let pid: number | undefined;
    let aborted = false;
    const kill = () => {
      aborted = true;
      try {
        if (pid) process.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    opts.signal?.addEventListener("abort", kill, { once: true });
    const env = { ...(opts.env ?? process.env) };
    const start = background.getStore() ? spawner.start.bind(spawner) : startChild;
    start({ command: "setpriv", args: ["--pdeathsig", "KILL", "--", command, ...args], ...(opts.cwd ? { cwd: opts.cwd } : {}), env }, (e) => {
      if (e.kind === "spawned") {
        pid = e.pid;
        opts.onSpawn?.(e.pid);
        if (aborted) kill(); // the abort came before the pid
      } else if (e.kind === "data") {
        (e.stdout ? out : err)(e.chunk, e.stdout);
      } else if (e.kind === "error") {
        opts.signal?.removeEventListener("abort", kill);
        reject(new Error(`cannot run ${command}: ${e.message}`));
      } else {
        opts.signal?.removeEventListener("abort", kill);
        resolve({ code: e.code, signal: e.signal, tail, stdout });
      }
    });
  });
}

/** Like exec, but rejects with ExecError unless the command exits 0. */
export async function run(command: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const result = await exec(command, args, opts);
  if (opts.signal?.aborted) throw new Error("aborted");
  if (result.code !== 0) throw new ExecError(`${command} ${args[0] ?? ""}`.trim(), result);
  return result;
}

/**
 * Like run, for a short system command (ip, tc) that must never hang what
 * waits for it: killed after `ms`, it fails naming the command and the
 * deadline.
 */
export async function runWithin(ms: number, command: string, args: string[]): Promise<ExecResult> {
  const signal = AbortSignal.timeout(ms);
  try {
    return await run(command, args, { signal });
  } catch (err) {
    if (signal.aborted) throw new Error(`${command} ${args.join(" ")} did not finish within ${ms / 1000} s and was killed`);
    throw err;
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
