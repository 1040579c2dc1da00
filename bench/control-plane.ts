// Control-plane throughput: signed GetMicrovmImage and ListMicrovmImages
// against lmvm server, side by side with a bare node:http server answering
// the same JSON. Prints requests per second, p99 latency and the ratio.

import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { CreateMicrovmImageCommand } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import autocannon from "autocannon";
import { imageRequest, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";

const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

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

async function load(url: string, path: string, headers: Record<string, string>) {
  await autocannon({ url: url + path, headers, connections: CONNECTIONS, duration: 1 }); // warm-up
  const r = await autocannon({ url: url + path, headers, connections: CONNECTIONS, duration: SECONDS });
  if (r.non2xx || r.errors) throw new Error(`${url}${path}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
  return { rps: r.requests.average, p99: r.latency.p99 };
}

export async function controlPlaneBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-");
  const server = await spawnServer(dataDir);
  const creds = readCredentials(dataDir);
  const client = sdkClient(server.url, creds);
  for (let i = 0; i < 20; i++) await client.send(new CreateMicrovmImageCommand(imageRequest(`bench-${i}`, { tags: { i: String(i) } })));
  client.destroy();

  const paths = {
    GetMicrovmImage: "/2025-09-09/microvm-images/bench-7",
    ListMicrovmImages: "/2025-09-09/microvm-images?maxResults=20",
  };
  const bodies: Record<string, string> = {};
  const headers: Record<string, Record<string, string>> = {};
  for (const [op, path] of Object.entries(paths)) {
    headers[op] = await signedHeaders(server.url, path, creds);
    const res = await fetch(server.url + path, { headers: headers[op] });
    if (!res.ok) throw new Error(`${op}: ${res.status} ${await res.text()}`);
    bodies[path] = await res.text();
  }

  const baseline = async (mode: string) => {
    const child = spawn(process.execPath, [join(import.meta.dirname, "bare-server.js"), mode, JSON.stringify(bodies)], { stdio: ["ignore", "pipe", "inherit"] });
    const port = await new Promise<string>((resolve) => child.stdout!.once("data", (d) => resolve(String(d).trim())));
    return { child, url: `http://127.0.0.1:${port}` };
  };
  const bare = await baseline("node");
  const fastify = await baseline("fastify");

  const col = (s: string, w: number) => s.padStart(w);
  const lines = [
    `Control plane: requests/s with ${CONNECTIONS} connections, ${SECONDS}s each, all in one run.`,
    `  lmvm = signed (SigV4) request, validated, read from SQLite; baseline = bare node:http server answering the same JSON;`,
    `  fastify = the same JSON from a Fastify route (lmvm's framework), to show the framework's own ceiling.`,
    `${"operation".padEnd(20)}${col("lmvm", 9)}${col("p99ms", 7)}${col("baseline", 10)}${col("p99ms", 7)}${col("fastify", 9)}${col("lmvm/baseline", 15)}${col("lmvm/fastify", 14)}`,
  ];
  try {
    for (const [op, path] of Object.entries(paths)) {
      const lmvm = await load(server.url, path, headers[op]!);
      const base = await load(bare.url, path, {});
      const fw = await load(fastify.url, path, {});
      lines.push(`${op.padEnd(20)}${col(lmvm.rps.toFixed(0), 9)}${col(String(lmvm.p99), 7)}${col(base.rps.toFixed(0), 10)}${col(String(base.p99), 7)}${col(fw.rps.toFixed(0), 9)}${col((lmvm.rps / base.rps).toFixed(2), 15)}${col((lmvm.rps / fw.rps).toFixed(2), 14)}`);
    }
  } finally {
    bare.child.kill();
    fastify.child.kill();
    await server.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return lines;
}
