// Processes started inside a running sandbox for the shell ingress: `runsc
// exec` with an OCI process file. They get the environment the app got: the
// image's Env, then the version's environmentVariables, then the caller's. A terminal process runs under a host pty
// (node-pty): runsc hands the pty to the process as its console and passes
// window-size changes on. A plain one gets pipes. Signals go to the process
// inside the sandbox through `runsc kill --pid`, using the pid runsc wrote.
// With no command, the process is a login shell as root (as the service's
// shell is), whatever the image's USER; a command runs as the app does.
// runsc's console is a host terminal that has no name inside the sandbox
// (`tty` says "not a tty"), so when the image has util-linux's `script`, a
// terminal process runs under it: script opens a pty inside the sandbox
// (/dev/pts/N), relays to runsc's console, passes window-size changes on
// (runsc forwards SIGWINCH to it) and exits with the process's status.
// Ending such a process hangs its pty up first (see hangUp).

import { spawn as spawnChild } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { StringDecoder } from "node:string_decoder";
import pty from "@homebridge/node-pty-prebuilt-multiarch";
import type { GuestProcess, SpawnOptions } from "../core/index.js";
import { userOf, type Gvisor, type ImageConfig } from "./gvisor.js";

const LOGIN_SHELLS = ["bin/bash", "bin/sh"];
const SCRIPTS = ["usr/bin/script", "bin/script"];

/** util-linux's `script` in the image, if it has one (busybox's has no -e to pass the exit status on). */
function utilLinuxScript(rootfs: string): string | undefined {
  for (const path of SCRIPTS) {
    const file = join(rootfs, path);
    // A link is not followed: on the host it would lead out of the rootfs (and busybox's applets are links).
    if (lstatSync(file, { throwIfNoEntry: false })?.isFile() && readFileSync(file).includes("util-linux")) return `/${path}`;
  }
  return undefined;
}

const shellQuote = (arg: string) => `'${arg.replace(/'/g, "'\\''")}'`;

let sequence = 0;

const HANGUP_GRACE_MS = 1000;
const HANGUP_DEADLINE_MS = 2500;

/**
 * What a terminal's hangup does, for the pty that script (`pid`) holds inside
 * the sandbox: SIGHUP to every process on it (nohup'd ones ignore it and stay,
 * as they are meant to), then SIGKILL to the shell if it is still there.
 */
async function hangUp(ctx: GuestContext, pid: number): Promise<void> {
  const table = () => ctx.gvisor.processes(ctx.sandboxId).catch(() => []);
  const send = (pids: number[], name: string) => Promise.all(pids.map((p) => ctx.gvisor.kill(ctx.sandboxId, p, name).catch(() => undefined)));
  const before = await table();
  const shells = before.filter((p) => p.ppid === pid).map((p) => p.pid);
  const ttys = new Set(before.filter((p) => shells.includes(p.pid) && p.tty !== "?").map((p) => p.tty));
  await send(before.filter((p) => p.pid !== pid && (shells.includes(p.pid) || ttys.has(p.tty))).map((p) => p.pid), "SIGHUP");
  const deadline = Date.now() + HANGUP_GRACE_MS;
  let left = shells;
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    const now = new Set((await table()).map((p) => p.pid));
    left = left.filter((p) => now.has(p));
  }
  await send(left, "SIGKILL");
}

export interface GuestContext {
  gvisor: Gvisor;
  sandboxId: string;
  rootfs: string;
  config: ImageConfig;
  /** The variables the app was started with beyond the image's Env (the version's environmentVariables). */
  env: Record<string, string>;
  /** Scratch directory for process files. */
  dir: string;
}

export function spawnGuest(ctx: GuestContext, opts: SpawnOptions): GuestProcess {
  const shell = LOGIN_SHELLS.find((s) => existsSync(join(ctx.rootfs, s)));
  const login = !opts.argv.length;
  const command = login ? (shell ? [`/${shell}`, "-l"] : []) : opts.argv;
  if (!command.length) throw new Error("the image has no /bin/sh to open a shell with; pass a command");
  const script = opts.tty ? utilLinuxScript(ctx.rootfs) : undefined;
  const argv = script ? [script, "-q", "-e", "-c", `exec ${command.map(shellQuote).join(" ")}`, "/dev/null"] : command;
  const vars = new Map<string, string>();
  for (const entry of ctx.config.Env ?? []) {
    const eq = entry.indexOf("=");
    if (eq > 0) vars.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  for (const [k, v] of [...Object.entries(ctx.env), ...Object.entries(opts.env ?? {})]) vars.set(k, v);
  if (opts.tty && !vars.has("TERM")) vars.set("TERM", "xterm");
  // script runs its -c command with $SHELL; login(1) sets SHELL to the shell it starts.
  if (login && !vars.has("SHELL")) vars.set("SHELL", command[0]!);
  const env = [...vars].map(([k, v]) => `${k}=${v}`);
  mkdirSync(ctx.dir, { recursive: true });
  const name = `exec-${process.pid}-${++sequence}`;
  const processFile = join(ctx.dir, `${name}.json`);
  const pidFile = join(ctx.dir, `${name}.pid`);
  writeFileSync(processFile, JSON.stringify({ terminal: opts.tty, user: login ? { uid: 0, gid: 0 } : userOf(ctx.rootfs, ctx.config.User), args: argv, env, cwd: ctx.config.WorkingDir || "/" }));
  const [cmd, ...args] = ctx.gvisor.execCommand(ctx.sandboxId, processFile, pidFile);

  const outputListeners: ((stream: "stdout" | "stderr", data: Buffer) => void)[] = [];
  const exitListeners: ((code: number) => void)[] = [];
  let exited: number | undefined;
  const exit = (code: number) => {
    if (exited !== undefined) return;
    exited = code;
    rmSync(processFile, { force: true });
    rmSync(pidFile, { force: true });
    for (const l of exitListeners) l(code);
  };
  const innerPid = () => {
    try {
      return Number(readFileSync(pidFile, "utf8").trim()) || undefined;
    } catch {
      return undefined;
    }
  };
  const signal = (name: string) => {
    const pid = innerPid();
    if (pid) void ctx.gvisor.kill(ctx.sandboxId, pid, name).catch(() => undefined);
  };

  const common = {
    signal,
    onOutput: (l: (stream: "stdout" | "stderr", data: Buffer) => void) => void outputListeners.push(l),
    onExit: (l: (code: number) => void) => (exited !== undefined ? l(exited) : void exitListeners.push(l)),
  };

  if (opts.tty) {
    const term = pty.spawn(cmd!, args, { name: "xterm", cols: opts.cols ?? 80, rows: opts.rows ?? 24, env: process.env as Record<string, string> });
    term.onData((d) => {
      for (const l of outputListeners) l("stdout", Buffer.from(d, "utf8"));
    });
    term.onExit(({ exitCode, signal: sig }) => exit(sig ? 128 + sig : exitCode));
    // node-pty takes strings: a character split across two writes must not become two U+FFFDs.
    const decoder = new StringDecoder("utf8");
    return {
      write: (data) => term.write(typeof data === "string" ? data : decoder.write(Buffer.from(data))),
      endInput: () => term.write("\x04"),
      resize: (cols, rows) => term.resize(Math.max(1, cols), Math.max(1, rows)),
      ...common,
      // Killing script would leave its shell running: gVisor sends no hangup when a pty's
      // master closes. So lmvm hangs the terminal up itself first.
      kill: () => {
        const pid = innerPid();
        if (!script || !pid || exited !== undefined) {
          signal("SIGKILL");
          return term.kill("SIGKILL");
        }
        // Bounded: the shell ingress waits 5 s for a killed process before a checkpoint goes ahead.
        void Promise.race([hangUp(ctx, pid), new Promise((r) => setTimeout(r, HANGUP_DEADLINE_MS))]).finally(() => {
          signal("SIGKILL");
          term.kill("SIGKILL");
        });
      },
    };
  }
  const child = spawnChild(cmd!, args, { stdio: ["pipe", "pipe", "pipe"] });
  child.stdout.on("data", (d: Buffer) => outputListeners.forEach((l) => l("stdout", d)));
  child.stderr.on("data", (d: Buffer) => outputListeners.forEach((l) => l("stderr", d)));
  child.stdin.on("error", () => undefined);
  child.on("error", () => exit(127));
  child.on("close", (code, sig) => exit(code ?? (sig ? 128 : 1)));
  return {
    write: (data) => void child.stdin.write(data),
    endInput: () => child.stdin.end(),
    resize: () => undefined, // no terminal to size
    ...common,
    kill: () => {
      signal("SIGKILL");
      child.kill("SIGKILL");
    },
  };
}
