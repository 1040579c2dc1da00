// CLI start-up: wall time of `lmvm get-microvm` (and get-microvm-image) as a
// user runs it, side by side with a minimal Node script making the same SDK
// call with the same credentials (cli-baseline.ts). Each round runs both, in
// turn; prints the median and spread of each and the ratio to the baseline.
// On a busy machine wall times swing by seconds, so the CPU time each process
// used (user + system, from GNU time when installed) is printed too: it
// measures the same work and hardly depends on the neighbours.

import { execFile } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CreateMicrovmImageCommand } from "@aws-sdk/client-lambda-microvms";
import { imageRequest, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { LMVM, spawnServer } from "../test/support/processes.js";

const ROUNDS = Number(process.env.BENCH_CLI_ROUNDS ?? 15);
const MISSING_MICROVM = "microvm-0123456789abcdef0";

const GNU_TIME = "/usr/bin/time";
const CPU_MARK = "lmvm-bench-cpu";

function timed(file: string, args: string[], env: Record<string, string>): Promise<{ ms: number; cpuMs?: number; code: number; out: string }> {
  const withTime = existsSync(GNU_TIME);
  const [cmd, argv] = withTime ? [GNU_TIME, ["-f", `${CPU_MARK} %U %S`, file, ...args]] : [file, args];
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    execFile(cmd, argv, { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const cpu = new RegExp(`${CPU_MARK} ([\\d.]+) ([\\d.]+)`).exec(stderr);
      resolve({ ms, ...(cpu ? { cpuMs: (Number(cpu[1]) + Number(cpu[2])) * 1000 } : {}), code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr.replace(/.*lmvm-bench-cpu.*\n?/, "") });
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const spread = (xs: number[]) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;

export async function cliBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-");
  const server = await spawnServer(dataDir);
  const creds = readCredentials(dataDir);
  const client = sdkClient(server.url, creds);
  await client.send(new CreateMicrovmImageCommand(imageRequest("bench-cli")));
  client.destroy();
  const baselineScript = join(import.meta.dirname, "cli-baseline.js");
  const cases = [
    { name: "get-microvm (not found)", cli: ["get-microvm", "--microvm-identifier", MISSING_MICROVM], op: "GetMicrovm", id: MISSING_MICROVM, code: 254 },
    { name: "get-microvm-image", cli: ["get-microvm-image", "--image-identifier", "bench-cli"], op: "GetMicrovmImage", id: "bench-cli", code: 0 },
  ];
  const lines = [
    `CLI: wall time of one command, ${ROUNDS} rounds, both sides in turn in each round.`,
    `  lmvm = bin/lmvm finding server and credentials in the data directory;`,
    `  baseline = a minimal Node script (bench/cli-baseline.ts) making the same SDK call with the same credentials.`,
    `  cpu = user + system CPU time of the process (GNU time); wall times on a busy machine are noisy.`,
    `${"command".padEnd(26)}${"lmvm ms".padStart(9)}${"spread".padStart(11)}${"baseline ms".padStart(13)}${"spread".padStart(11)}${"lmvm/baseline".padStart(15)}${"cpu lmvm".padStart(10)}${"cpu base".padStart(10)}${"cpu ratio".padStart(11)}`,
  ];
  try {
    for (const c of cases) {
      const cli: number[] = [];
      const base: number[] = [];
      const cliCpu: number[] = [];
      const baseCpu: number[] = [];
      for (let i = -1; i < ROUNDS; i++) {
        const a = await timed(LMVM, c.cli, { LMVM_DATA_DIR: dataDir });
        const b = await timed(process.execPath, [baselineScript, server.url, c.op, c.id], {
          AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
        });
        if (a.code !== c.code || b.code !== c.code) throw new Error(`${c.name}: expected exit ${c.code}; lmvm ${a.code} (${a.out.trim()}), baseline ${b.code} (${b.out.trim()})`);
        if (i < 0) continue; // warm-up: the page cache, not the CLI
        cli.push(a.ms);
        base.push(b.ms);
        if (a.cpuMs !== undefined && b.cpuMs !== undefined) {
          cliCpu.push(a.cpuMs);
          baseCpu.push(b.cpuMs);
        }
      }
      const cpu = cliCpu.length ? `${median(cliCpu).toFixed(0).padStart(10)}${median(baseCpu).toFixed(0).padStart(10)}${(median(cliCpu) / median(baseCpu)).toFixed(2).padStart(11)}` : "";
      lines.push(`${c.name.padEnd(26)}${median(cli).toFixed(0).padStart(9)}${spread(cli).padStart(11)}${median(base).toFixed(0).padStart(13)}${spread(base).padStart(11)}${(median(cli) / median(base)).toFixed(2).padStart(15)}${cpu}`);
    }
  } finally {
    await server.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return lines;
}
