// Control-plane throughput: signed GetMicrovmImage and ListMicrovmImages
// against `lmvm server`, side by side with a bare node:http server answering
// the same JSON (bench/bare-server.ts) and, for context, the same JSON from a
// Fastify route, and the same lmvm server keeping its state in PostgreSQL
// (`--database`, a throwaway cluster with durable defaults: bench/pg-cluster.ts)
// instead of SQLite. Every server runs in its own process; the load generator
// (autocannon, keep-alive, the same connections) runs in this process for all
// sides alike. Each configuration runs ROUNDS times, the sides alternating
// within each round; the bench prints the median and spread (min–max) of
// requests/s and p99 latency, and the ratio of the medians; and each
// server's CPU time per request (from /proc), which other load on a shared
// machine disturbs far less than requests/s do.

import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CreateMicrovmImageCommand } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import autocannon from "autocannon";
import { imageRequest, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";
import { startBenchCluster } from "./pg-cluster.js";
import { median, spread, summary } from "./stats.js";

const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = Math.max(5, Number(process.env.BENCH_ROUNDS ?? 5));
const IMAGES = 20;

async function signedHeaders(url: string, path: string, creds: { accessKeyId: string; secretAccessKey: string }) {
  const u = new URL(url);
  const [pathname, query = ""] = path.split("?");
  const signer = new SignatureV4({ credentials: creds, region: "us-east-1", service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({
    method: "GET", protocol: "http:", hostname: u.hostname, port: Number(u.port), path: pathname!,
    query: Object.fromEntries(new URLSearchParams(query)), headers: { host: u.host },
  }));
  return signed.headers as Record<string, string>;
}

interface Run { rps: number; p99: number; cpuUs: number }

/** CPU time (user + system, all threads) processes have used, in microseconds (/proc/<pid>/stat, clock ticks of 10 ms). */
function cpuTimeUs(pids: number[]): number {
  let us = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      us += (Number(fields[11]) + Number(fields[12])) * 10_000;
    } catch {
      // a process gone meanwhile (a PostgreSQL backend that ended)
    }
  }
  return us;
}

/**
 * One run: requests/s and p99 as the client saw them, and the server's CPU
 * time per request, which other load on a shared machine disturbs far less
 * than requests/s.
 */
async function load(url: string, path: string, headers: Record<string, string>, seconds: number, pids: () => number[]): Promise<Run> {
  const counted = pids();
  const before = cpuTimeUs(counted);
  const r = await autocannon({ url: url + path, headers, connections: CONNECTIONS, duration: seconds });
  const cpu = cpuTimeUs(counted) - before;
  if (r.non2xx || r.errors) throw new Error(`${url}${path}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
  return { rps: r.requests.average, p99: r.latency.p99, cpuUs: cpu / Math.max(1, r.requests.total) };
}

async function baseline(mode: string, bodies: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, "bare-server.js"), mode, JSON.stringify(bodies)], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout!.once("data", (d) => resolve(String(d).trim()));
    child.once("exit", (code) => reject(new Error(`bare-server ${mode} exited with ${code}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

export async function controlPlaneBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-");
  const pgDataDir = tempDir("lmvm-bench-pg-data-");
  const cluster = await startBenchCluster();
  // Images are created with builds queued (no builder runs here): allow all of them at once.
  const server = await spawnServer(dataDir, { args: ["--quotas", `concurrent-builds=${IMAGES}`] });
  const pgServer = await spawnServer(pgDataDir, { args: ["--quotas", `concurrent-builds=${IMAGES}`, "--database", cluster.url] });
  const creds = readCredentials(dataDir);
  const pgCreds = readCredentials(pgDataDir);
  for (const [url, c] of [[server.url, creds], [pgServer.url, pgCreds]] as const) {
    const client = sdkClient(url, c);
    for (let i = 0; i < IMAGES; i++) await client.send(new CreateMicrovmImageCommand(imageRequest(`bench-${i}`, { tags: { i: String(i) } })));
    client.destroy();
  }

  const paths = {
    GetMicrovmImage: "/2025-09-09/microvm-images/bench-7",
    ListMicrovmImages: `/2025-09-09/microvm-images?maxResults=${IMAGES}`,
  };
  const bodies: Record<string, string> = {};
  const headers: Record<string, Record<string, string>> = {};
  const pgHeaders: Record<string, Record<string, string>> = {};
  for (const [op, path] of Object.entries(paths)) {
    headers[op] = await signedHeaders(server.url, path, creds);
    pgHeaders[op] = await signedHeaders(pgServer.url, path, pgCreds);
    const res = await fetch(server.url + path, { headers: headers[op] });
    if (!res.ok) throw new Error(`${op}: ${res.status} ${await res.text()}`);
    bodies[path] = await res.text();
    const pgRes = await fetch(pgServer.url + path, { headers: pgHeaders[op] });
    if (!pgRes.ok) throw new Error(`${op} (PostgreSQL): ${pgRes.status} ${await pgRes.text()}`);
    // The same images, so the same answer but for their times.
    const shape = (text: string) => JSON.stringify(JSON.parse(text), (k, v: unknown) => (typeof v === "number" || /At$/.test(k) ? 0 : v));
    if (shape(await pgRes.text()) !== shape(bodies[path]!)) throw new Error(`${op}: the PostgreSQL server's answer differs from the SQLite server's`);
  }

  const bare = await baseline("node", bodies);
  const fastify = await baseline("fastify", bodies);
  const sides = [
    { name: "lmvm", url: server.url, headers, pids: () => [server.child.pid!] },
    { name: "lmvm-pg", url: pgServer.url, headers: pgHeaders, pids: () => [pgServer.child.pid!, ...cluster.pids()] },
    { name: "bare", url: bare.url, headers: undefined, pids: () => [bare.child.pid!] },
    { name: "fastify", url: fastify.url, headers: undefined, pids: () => [fastify.child.pid!] },
  ];

  const lines = [
    `Control plane: ${CONNECTIONS} keep-alive connections, ${SECONDS}s per run, ${ROUNDS} rounds alternating sides; median (min–max).`,
    `  lmvm = signed (SigV4) request: authenticated, authorised, audited, validated, answered by lmvm server (its own process);`,
    `  lmvm-pg = the same with --database postgres://… (a throwaway PostgreSQL 15 cluster, fsync on, over a Unix socket); its server CPU counts PostgreSQL's processes too;`,
    `  bare = bare node:http server answering the same JSON (own process); fastify = the same JSON from a Fastify route (own process).`,
  ];
  try {
    for (const [op, path] of Object.entries(paths)) {
      // Warm-up of every side (JIT, caches), not counted.
      for (const s of sides) await load(s.url, path, s.headers?.[op] ?? {}, 1, s.pids);
      const runs: Record<string, Run[]> = Object.fromEntries(sides.map((s) => [s.name, []]));
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate which side goes first, so drift (other load on the machine) falls on both.
        const order = round % 2 ? [...sides].reverse() : sides;
        for (const s of order) runs[s.name]!.push(await load(s.url, path, s.headers?.[op] ?? {}, SECONDS, s.pids));
      }
      const rps = (n: string) => runs[n]!.map((r) => r.rps);
      const p99 = (n: string) => runs[n]!.map((r) => r.p99);
      const cpu = (n: string) => runs[n]!.map((r) => r.cpuUs);
      lines.push(`${op}:`);
      for (const s of sides) lines.push(`  ${s.name.padEnd(8)} ${summary(rps(s.name), "req/s").padEnd(28)} p99 ${summary(p99(s.name), "ms").padEnd(24)} server CPU ${summary(cpu(s.name), "µs/request")}`);
      const ratios = runs.lmvm!.map((r, i) => r.rps / runs.bare![i]!.rps);
      lines.push(`  lmvm/bare requests/s = ${(median(rps("lmvm")) / median(rps("bare"))).toFixed(2)} (ratio of medians; per round ${spread(ratios)}), lmvm/fastify = ${(median(rps("lmvm")) / median(rps("fastify"))).toFixed(2)}`);
      lines.push(`  bare/lmvm server CPU per request = ${(median(cpu("bare")) / median(cpu("lmvm"))).toFixed(2)} (the requests/s ratio each would reach with a core of its own)`);
      const pgRatios = runs["lmvm-pg"]!.map((r, i) => r.rps / runs.lmvm![i]!.rps);
      lines.push(`  PostgreSQL/SQLite (lmvm-pg/lmvm) requests/s = ${(median(rps("lmvm-pg")) / median(rps("lmvm"))).toFixed(2)} (per round ${spread(pgRatios)}), p99 ${(median(p99("lmvm-pg")) / median(p99("lmvm"))).toFixed(2)}x, server CPU per request ${(median(cpu("lmvm-pg")) / median(cpu("lmvm"))).toFixed(2)}x`);
    }
  } finally {
    bare.child.kill();
    fastify.child.kill();
    await server.kill();
    await pgServer.kill();
    cluster.stop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(pgDataDir, { recursive: true, force: true });
  }
  return lines;
}
