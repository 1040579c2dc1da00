// The endpoint proxy, side by side in one run, on one MicroVM's app: HTTP/1.1
// keep-alive, 64 connections, against a direct connection to the sandbox and
// against nginx (Debian's, as a TLS reverse proxy with upstream keep-alive,
// using the same certificate). Then auto-resume: time to first byte of a
// request to a SUSPENDED MicroVM against one to a RUNNING MicroVM.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { join } from "node:path";
import {
  CreateMicrovmAuthTokenCommand, GetMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import autocannon from "autocannon";
import { NO_ENDPOINT_LIMITS } from "../src/proxy/index.js";
import { BASE_IMAGE_CACHE } from "../test/support/artifacts.js";
import { buildDataPlaneImage } from "../test/support/dataplane-app.js";
import { eventually, startTestPlatform, tempDir, type TestPlatform } from "../test/support/platform.js";

const CONNECTIONS = 64;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const DOMAIN = "microvm.localhost";

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function load(url: string, headers: Record<string, string>, servername?: string) {
  const opts = { url, headers, connections: CONNECTIONS, ...(servername ? { servername } : {}) };
  await autocannon({ ...opts, duration: 2 }); // warm-up
  const r = await autocannon({ ...opts, duration: SECONDS });
  if (r.non2xx || r.errors) throw new Error(`${url}: ${r.non2xx} non-2xx answers, ${r.errors} errors`);
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99 };
}

async function startNginx(dir: string, upstream: string, tls: { cert: string; key: string }): Promise<{ port: number; child: ChildProcess }> {
  if (!existsSync("/usr/sbin/nginx")) throw new Error("nginx is not installed: run scripts/install.sh (it installs nginx for this benchmark)");
  const port = await freePort();
  mkdirSync(join(dir, "logs"), { recursive: true });
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, `
worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream app { server ${upstream}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
    }
  }
}
`);
  const child = spawn("/usr/sbin/nginx", ["-c", conf, "-p", dir, "-g", "daemon off;"], { stdio: ["ignore", "ignore", "pipe"] });
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(join(dir, "logs", "error.log"), "utf8")}`);
    return existsSync(join(dir, "nginx.pid")) ? true : undefined;
  }, "nginx to start");
  return { port, child };
}

/** Time to the first byte of the answer through the proxy. */
function firstByte(t: TestPlatform, id: string, token: string, ca: Buffer): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    httpsRequest({ host: "127.0.0.1", port: t.platform.endpointPort, path: "/", ca, servername: `${id}.${DOMAIN}`, headers: { host: `${id}.${DOMAIN}`, "x-aws-proxy-auth": token } }, (res) => {
      res.once("data", () => resolve(performance.now() - started));
      res.resume();
    }).on("error", reject).end();
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function proxyBench(): Promise<string[]> {
  // Endpoint limits off: this measures the proxy's own throughput, which the per-MicroVM rate limits (10 requests a second per vCPU) would cap.
  const t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE, endpointPort: 0, endpointLimits: NO_ENDPOINT_LIMITS });
  const scratch = tempDir("lmvm-bench-proxy-");
  let nginx: ChildProcess | undefined;
  try {
    const arn = await buildDataPlaneImage(t, "proxy-bench");
    const start = async (idlePolicy?: { maxIdleDurationSeconds: number; suspendedDurationSeconds: number; autoResumeEnabled: boolean }) => {
      const { microvmId } = await t.client.send(new RunMicrovmCommand({ imageIdentifier: arn, ...(idlePolicy ? { idlePolicy } : {}) }));
      await eventually(async () => ((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: microvmId! }))).state === "RUNNING" ? true : undefined), "RUNNING", 120_000);
      const token = (await t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: microvmId!, expirationInMinutes: 60, allowedPorts: [{ port: 8080 }] }))).authToken!["X-aws-proxy-auth"]!;
      return { id: microvmId!, token };
    };
    const idle = { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true };
    const vm = await start(idle);
    const address = JSON.parse(readFileSync(join(t.dataDir, "microvms", vm.id, "sandbox.json"), "utf8")).sandboxIp as string;
    const tls = { cert: join(t.dataDir, "tls", "server.pem"), key: join(t.dataDir, "tls", "server.key") };
    const host = `${vm.id}.${DOMAIN}`;

    const direct = await load(`http://${address}:8080/`, {});
    const ng = await startNginx(join(scratch, "nginx"), `${address}:8080`, tls);
    nginx = ng.child;
    const viaNginx = await load(`https://127.0.0.1:${ng.port}/`, { host }, host);
    nginx.kill("SIGQUIT");
    await new Promise((r) => nginx!.once("exit", r));
    nginx = undefined;
    const viaLmvm = await load(`https://127.0.0.1:${t.platform.endpointPort}/`, { host, "x-aws-proxy-auth": vm.token }, host);

    // Auto-resume: first byte from a SUSPENDED MicroVM against a RUNNING one.
    const ca = readFileSync(join(t.dataDir, "tls", "ca.pem"));
    const running: number[] = [];
    const resumed: number[] = [];
    for (let i = 0; i < 3; i++) {
      running.push(await firstByte(t, vm.id, vm.token, ca));
      await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.id }));
      await eventually(async () => {
        const got = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: vm.id }));
        if (got.state === "TERMINATED" || (got.state === "RUNNING" && got.stateReason)) throw new Error(`suspend failed: ${got.state}: ${got.stateReason}`);
        return got.state === "SUSPENDED" ? true : undefined;
      }, "SUSPENDED", 120_000);
      resumed.push(await firstByte(t, vm.id, vm.token, ca));
    }

    const row = (name: string, r: { rps: number; p50: number; p99: number }) =>
      `  ${name.padEnd(44)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${String(r.p50).padStart(3)} ms  p99 ${String(r.p99).padStart(4)} ms   ${(r.rps / viaNginx.rps).toFixed(2)}x nginx`;
    return [
      `Endpoint proxy (HTTP/1.1 keep-alive, ${CONNECTIONS} connections, ${SECONDS} s each, one MicroVM's Node app; baseline: nginx, same run):`,
      row("direct to the sandbox (plain HTTP, no proxy)", direct),
      row("nginx (TLS, upstream keep-alive)", viaNginx),
      row("lmvm endpoint proxy (TLS, token check)", viaLmvm),
      `  auto-resume: first byte from a SUSPENDED MicroVM ${median(resumed).toFixed(0)} ms vs a RUNNING one ${median(running).toFixed(1)} ms (medians of 3)`,
    ];
  } finally {
    nginx?.kill("SIGKILL");
    await t.stop();
  }
}
