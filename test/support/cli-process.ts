// The real `lmvm` CLI started in the background, for commands that run until
// something else happens (logs --follow, wait): its output so far, and its
// result once it exits, within a deadline after which it is killed.

import { spawn } from "node:child_process";
import { LMVM, type CliResult } from "./processes.js";

export function startLmvm(args: string[], env: Record<string, string>, deadlineMs = 60_000) {
  const child = spawn(LMVM, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const result = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`lmvm ${args.join(" ")} still running after ${deadlineMs} ms; stderr: ${stderr}`));
    }, deadlineMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
  return { child, result, stdout: () => stdout, stderr: () => stderr };
}
