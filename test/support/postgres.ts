// A throwaway PostgreSQL for tests: Debian's PostgreSQL 15 binaries, a
// cluster of this test file's own in a temporary directory, reached only
// through a Unix socket in that directory (no TCP port, so clusters of test
// files running at once never meet). It starts on first use, gives each
// caller a fresh database, and is stopped and removed when the test process
// exits, however it exits short of SIGKILL.
//
// LMVM_TEST_STORE=postgres makes startTestPlatform and spawnServer keep the
// platform's state here instead of in SQLite (`npm test` runs the
// conformance suite both ways).

import { execFile, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { until, within } from "./deadline.js";
import { paths } from "../../src/server/data-paths.js";

const run = promisify(execFile);

/** Debian's PostgreSQL 15 (scripts/install.sh installs it; its own cluster stays stopped). */
export const PG_BIN = process.env.LMVM_TEST_PG_BIN ?? "/usr/lib/postgresql/15/bin";
/** How long the cluster may take to be made and to accept connections. */
const START_DEADLINE_MS = 60_000;

/** True when this test run keeps the platform's state in PostgreSQL. */
export const usePostgres = process.env.LMVM_TEST_STORE === "postgres";

interface Cluster {
  dir: string;
  socketDir: string;
  admin: string;
}

let starting: Promise<Cluster> | undefined;
let cleanup: (() => void) | undefined;
let databases = 0;
const byDataDir = new Map<string, Promise<string>>();

/** initdb refuses to run as root: as root, the cluster belongs to the `postgres` user. */
function asOwner(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args];
}

async function startCluster(): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-pg-"));
  const data = join(dir, "data");
  const socketDir = dir;
  cleanup = () => {
    if (existsSync(join(data, "postmaster.pid"))) {
      const [cmd, args] = asOwner(join(PG_BIN, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "-t", "20", "stop"]);
      spawnSync(cmd, args, { stdio: "ignore", timeout: 30_000, cwd: dir });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", () => cleanup?.());
  // pg_ctl starts the postmaster in a session of its own: a test process ended by a signal (a
  // cancelled run, the runner's timeout) must still stop it, or the cluster outlives the run.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      cleanup?.();
      process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
    });
  }
  if (process.getuid?.() === 0) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const uid = Number(stdout.trim());
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    chownSync(dir, uid, Number(gid.trim()));
  }
  const init = asOwner(join(PG_BIN, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8"]);
  await run(init[0], init[1], { timeout: START_DEADLINE_MS, cwd: dir });
  const cluster = { dir, socketDir, admin: `postgres://postgres@/postgres?host=${encodeURIComponent(socketDir)}` };
  await startPostmaster(cluster);
  return cluster;
}

/** Starts the cluster's postmaster on its data directory (made already) and waits until it accepts connections. */
async function startPostmaster({ dir, socketDir }: Cluster): Promise<void> {
  // Small, and fsync off: a test cluster holds nothing worth a power loss, and several run at once on a shared machine.
  const settings = `-k ${socketDir} -c listen_addresses= -c fsync=off -c shared_buffers=16MB -c max_connections=60`;
  const start = asOwner(join(PG_BIN, "pg_ctl"), ["-D", join(dir, "data"), "-l", join(dir, "log"), "-o", settings, "-w", "-t", String(START_DEADLINE_MS / 1000), "start"]);
  try {
    await run(start[0], start[1], { timeout: START_DEADLINE_MS + 5000, cwd: dir });
  } catch (err) {
    const log = spawnSync("cat", [join(dir, "log")], { encoding: "utf8" }).stdout;
    throw new Error(`the test PostgreSQL did not start: ${(err as Error).message}\n${log}`);
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * `kill -9` of this test file's PostgreSQL postmaster (a crash, for fault tests), then waits until
 * its backends, which notice their postmaster's death on their own, have gone too: a postmaster
 * started again while one of them still holds the shared memory refuses to start.
 */
export async function killPostgres(): Promise<void> {
  if (!starting) throw new Error("killPostgres: this test file's PostgreSQL was never started (call freshDatabase first)");
  const { dir } = await starting;
  const postmaster = Number(readFileSync(join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
  const children = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      return Number(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[1]) === postmaster;
    } catch {
      return false;
    }
  });
  process.kill(postmaster, "SIGKILL");
  await until(30_000, "the killed PostgreSQL's postmaster and backends to exit", () => ![postmaster, ...children].some(alive), 100);
}

/** Starts this test file's PostgreSQL again on the same data directory (after killPostgres): it recovers from its write-ahead log. */
export async function restartPostgres(): Promise<void> {
  if (!starting) throw new Error("restartPostgres: this test file's PostgreSQL was never started");
  await startPostmaster(await starting);
}

/** A new, empty database in this test file's cluster (started on first use); its postgres:// URL. */
export async function freshDatabase(): Promise<string> {
  starting ??= startCluster();
  const cluster = await within(START_DEADLINE_MS + 10_000, "the test PostgreSQL to start", starting);
  const name = `lmvm_${process.pid}_${++databases}`;
  const client = new pg.Client({ connectionString: cluster.admin });
  await within(30_000, "CREATE DATABASE on the test PostgreSQL", (async () => {
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${name}`);
    } finally {
      await client.end();
    }
  })());
  return `postgres://postgres@/${name}?host=${encodeURIComponent(cluster.socketDir)}`;
}

/**
 * The database of a data directory when the run keeps state in PostgreSQL
 * (LMVM_TEST_STORE=postgres), else undefined: a server restarted on the same
 * data directory finds its state again, as with SQLite's lmvm.db in it.
 */
export function databaseFor(dataDir: string): Promise<string> | undefined {
  if (!usePostgres) return undefined;
  let url = byDataDir.get(dataDir);
  if (!url) byDataDir.set(dataDir, (url = freshDatabase()));
  return url;
}

/**
 * Everything the platform's store holds for a data directory, as text, for
 * tests that look for what must never be stored: the SQLite files (the
 * database and its write-ahead log, raw), or, on PostgreSQL, a pg_dump of the
 * data directory's database (every row of every table).
 */
export async function storedText(dataDir: string): Promise<string> {
  const url = databaseFor(dataDir);
  if (!url) {
    const db = paths(dataDir).database;
    return [db, `${db}-wal`].filter(existsSync).map((f) => readFileSync(f).toString("latin1")).join("\n");
  }
  const { stdout } = await run(join(PG_BIN, "pg_dump"), ["--data-only", "--dbname", await url], { timeout: 60_000, maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}
