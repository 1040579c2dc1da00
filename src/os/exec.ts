// Runs the external tools a build needs (buildah, mmdebstrap, cp) as child
// processes: output goes line by line to the build log, the last lines are
// kept for error messages, and an abort kills the whole process group.
// Each child is started through `setpriv --pdeathsig KILL`, so the kernel
// kills it if the server dies (even by SIGKILL) instead of leaving it orphaned;
// commands that fork further run in their own PID namespace (see Buildah),
// whose processes all die with its first one.

import { spawn } from "node:child_process";

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

export function exec(command: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new Error("aborted"));
    const child = spawn("setpriv", ["--pdeathsig", "KILL", "--", command, ...args], { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    if (child.pid) opts.onSpawn?.(child.pid);
    const keep = opts.keepLines ?? 40;
    const tail: string[] = [];
    let stdout = "";
    const lineSplitter = () => {
      let partial = "";
      return (chunk: Buffer, isStdout: boolean) => {
        const text = chunk.toString("utf8");
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
    child.stdout.on("data", (c: Buffer) => out(c, true));
    child.stderr.on("data", (c: Buffer) => err(c, false));
    const kill = () => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    opts.signal?.addEventListener("abort", kill, { once: true });
    child.once("error", (e) => reject(new Error(`cannot run ${command}: ${e.message}`)));
    child.once("close", (code, signal) => {
      opts.signal?.removeEventListener("abort", kill);
      resolve({ code, signal, tail, stdout });
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
