// The real binaries as separate processes: `lmvm server` and the `lmvm` CLI.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readServerInfo } from "../../src/server/index.js";
import { BASE_IMAGE_CACHE } from "./artifacts.js";
import { within } from "./deadline.js";
import { databaseFor } from "./postgres.js";
import { eventually } from "./platform.js";

/** How long `lmvm server` may take to exit after a signal (its shutdown is bounded: docs/design.md). */
const SHUTDOWN_MS = 30_000;

export const LMVM = join(import.meta.dirname, "..", "..", "..", "bin", "lmvm");

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** The endpoint proxy's port. */
  endpointPort: number;
  output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `lmvm server` on an ephemeral port and waits until it listens. It
 * builds only when asked (`builds`), with the test run's shared base-image
 * cache; such tests use file:// artifacts or a local S3, never a real one.
 * It is ready once its server.json is written and its output says `ready`
 * (default "lmvm server started"; a standby API node says "standby:").
 */
export async function spawnServer(dataDir: string, opts: { builds?: boolean; args?: string[]; env?: Record<string, string>; ready?: string } = {}): Promise<ServerProcess> {
  const builderArgs = opts.builds ? ["--base-image-cache", BASE_IMAGE_CACHE] : ["--no-builder"];
  const env = opts.env ?? {};
  // Request rates far above AWS's unless the test sets them (see TEST_RATE_LIMITS in platform.ts).
  const rateArgs = opts.args?.includes("--rate-limits") ? [] : ["--rate-limits", "*=10000"];
  // LMVM_TEST_STORE=postgres: the state in a PostgreSQL database of this data directory's own (test/support/postgres.ts).
  const database = opts.args?.includes("--database") ? undefined : await databaseFor(dataDir);
  const storeArgs = database ? ["--database", database] : [];
  const child = spawn(LMVM, ["server", "--data-dir", dataDir, "--api-port", "0", "--endpoint-port", "0", ...builderArgs, ...rateArgs, ...storeArgs, ...(opts.args ?? [])], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const info = await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`lmvm server exited with ${child.exitCode}:\n${output}`);
    const i = readServerInfo(dataDir);
    return i && output.includes(opts.ready ?? "lmvm server started") ? i : undefined;
  }, "lmvm server to listen (its recovery of what a killed server left runs first)", 60_000).catch(async (err: Error) => {
    // A server that never listened must not outlive its test.
    child.kill("SIGKILL");
    await within(10_000, "lmvm server to exit after SIGKILL", exited);
    throw new Error(`${err.message}; its output:\n${output}`);
  });
  return {
    child,
    url: info.apiEndpoint,
    endpointPort: info.endpointPort!,
    output: () => output,
    /** Signals the server and waits for it to exit; one that outlives SHUTDOWN_MS is SIGKILLed and fails the test. */
    async kill(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      try {
        await within(SHUTDOWN_MS, `lmvm server to exit after ${signal}`, exited);
      } catch (err) {
        child.kill("SIGKILL");
        await within(10_000, "lmvm server to exit after SIGKILL", exited);
        throw err;
      }
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to its end; one still running after `timeoutMs` is killed and fails the test. */
export function lmvm(args: string[], env: Record<string, string> = {}, timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(LMVM, args, { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      if (err?.killed) return reject(new Error(`lmvm ${args.join(" ")}: not done after ${timeoutMs / 1000} s, so it was killed. Its output:\n${stdout}${stderr}`));
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Pids of processes whose command line contains `text` (this process left out). */
export function processesWith(text: string): string[] {
  return readdirSync("/proc").filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, "utf8").replaceAll("\0", " ").includes(text);
    } catch {
      return false;
    }
  });
}
