// A throwaway PostgreSQL cluster for the control-plane benchmark: Debian's
// PostgreSQL 15, in a temporary directory, reached through a Unix socket there
// (no TCP port). Unlike the test clusters (test/support/postgres.ts, fsync off
// to keep tests quick), this one keeps PostgreSQL's durable defaults (fsync
// on; lmvm's sessions run synchronous_commit=on), so that it is compared with
// SQLite as lmvm runs it (WAL, synchronous=FULL): both flush every commit.

import { execFile, spawnSync } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { PG_BIN } from "../test/support/postgres.js";

const run = promisify(execFile);
const DEADLINE_MS = 60_000;

/** initdb refuses to run as root: as root, the cluster belongs to the `postgres` user. */
function asOwner(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];
}

export interface BenchCluster {
  /** The postgres:// URL of an empty database for `lmvm server --database`. */
  url: string;
  /** The postmaster and its children (the backends serving lmvm's connections): their CPU time is the store's share of a request. */
  pids: () => number[];
  stop: () => void;
}

export async function startBenchCluster(): Promise<BenchCluster> {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-bench-pg-"));
  const data = join(dir, "data");
  const stop = () => {
    const [cmd, args] = asOwner(join(PG_BIN, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "-t", "20", "stop"]);
    spawnSync(cmd, args, { stdio: "ignore", timeout: 30_000, cwd: dir });
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", stop);
  try {
    if (process.getuid?.() === 0) {
      const uid = Number((await run("id", ["-u", "postgres"])).stdout.trim());
      const gid = Number((await run("id", ["-g", "postgres"])).stdout.trim());
      chownSync(dir, uid, gid);
    }
    const init = asOwner(join(PG_BIN, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"]);
    await run(init[0], init[1], { timeout: DEADLINE_MS, cwd: dir });
    const start = asOwner(join(PG_BIN, "pg_ctl"), ["-D", data, "-l", join(dir, "log"), "-o", `-k ${dir} -c listen_addresses=`, "-w", "-t", String(DEADLINE_MS / 1000), "start"]);
    await run(start[0], start[1], { timeout: DEADLINE_MS + 5000, cwd: dir });
    const admin = new pg.Client({ connectionString: `postgres://postgres@/postgres?host=${encodeURIComponent(dir)}` });
    await admin.connect();
    try {
      await admin.query("CREATE DATABASE lmvm_bench");
    } finally {
      await admin.end();
    }
  } catch (err) {
    stop();
    throw err;
  }
  const postmaster = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
  return {
    url: `postgres://postgres@/lmvm_bench?host=${encodeURIComponent(dir)}`,
    pids: () => [postmaster, ...childrenOf(postmaster)],
    stop: () => {
      process.removeListener("exit", stop);
      stop();
    },
  };
}

/** Pids whose parent is `pid` (/proc/<pid>/stat field 4). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const fields = readFileSync(`/proc/${name}/stat`, "utf8").split(") ")[1]!.split(" ");
      if (Number(fields[1]) === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
