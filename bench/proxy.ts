// The endpoint proxy against nginx, like for like, side by side in one run.
// - lmvm: `lmvm server` as its own process, as it is deployed (the API and the
//   endpoint proxy share that process), with endpoint limits on but set far
//   above the load, so the limiter runs without refusing anything.
// - nginx: Debian's, its own process, a TLS reverse proxy with upstream
//   keep-alive, the same certificate, and as many worker processes as lmvm
//   runs proxy processes (one), setting the same X-Forwarded-* headers and
//   dropping X-aws-proxy-auth as lmvm does.
// - direct: plain HTTP to the sandbox's address, no proxy: the ceiling.
// The same MicroVM's Node app behind all three; the same load generator
// (autocannon, in this process): HTTP/1.1 keep-alive, 64 connections, HTTPS
// to the same certificate (lmvm's, for *.<domain>), the same request (Host and
// token) to both proxies.
// Each configuration runs ROUNDS times, alternating, and the report gives the
// median and spread (min–max) of requests/s and p99 latency, and the ratios of
// the medians. Then auto-resume: time to first byte of a request to a
// SUSPENDED MicroVM against one to a RUNNING MicroVM.
// BENCH_PROXY_PROFILE=<dir> profiles the server process during one more run
// of the lmvm proxy (bench/cpu-profile.ts), the profile in <dir>.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, RunMicrovmCommand,
  SuspendMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import autocannon from "autocannon";
import { tlsPaths } from "../src/proxy/index.js";
import { dataPlaneAppZip } from "../test/support/dataplane-app.js";
import { eventually, readCredentials, sdkClient } from "../test/support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../test/support/processes.js";
import { freeSandboxes } from "../test/support/sandboxes.js";
import { median, spread, summary } from "./stats.js";

const CONNECTIONS = 64;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const RESUMES = 5;
const DOMAIN = "microvm.localhost";
/** Proxy processes on each side: lmvm serves its endpoints from the one `lmvm server` process, so nginx gets one worker. */
const WORKERS = 1;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface Run { rps: number; p99: number; cpuUsPerRequest: number }

/** CPU time (user + system, ms) a process and its children (nginx's workers) have used so far, from /proc. */
function cpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  let ms = 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
    ms += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ 100)
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) ms += cpuMs(Number(child));
  } catch {
    // gone
  }
  return ms;
}

// autocannon does not verify the certificate (it sets rejectUnauthorized: false), on both sides alike.
async function load(url: string, headers: Record<string, string>, servername: string | undefined, seconds: number, proxyPid?: number): Promise<Run> {
  const cpu = cpuMs(proxyPid);
  const r = await autocannon({ url, headers, connections: CONNECTIONS, duration: seconds, ...(servername ? { servername } : {}) });
  if (r.non2xx || r.errors || r.timeouts) throw new Error(`${url}: ${r.non2xx} non-2xx answers, ${r.errors} errors, ${r.timeouts} timeouts`);
  return { rps: r.requests.average, p99: r.latency.p99, cpuUsPerRequest: ((cpuMs(proxyPid) - cpu) * 1000) / Math.max(1, r.requests.total) };
}

async function startNginx(dir: string, upstream: string, tls: { cert: string; key: string }): Promise<{ port: number; child: ChildProcess }> {
  if (!existsSync("/usr/sbin/nginx")) throw new Error("nginx is not installed: run scripts/install.sh (it installs nginx for this benchmark)");
  const port = await freePort();
  mkdirSync(join(dir, "logs"), { recursive: true });
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, `
worker_processes ${WORKERS};
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
      proxy_set_header X-aws-proxy-auth "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host $host;
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
function firstByte(server: ServerProcess, id: string, token: string, ca: Buffer): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: "127.0.0.1", port: server.endpointPort, path: "/", ca, servername: `${id}.${DOMAIN}`, agent: false, timeout: 120_000, headers: { host: `${id}.${DOMAIN}`, "x-aws-proxy-auth": token } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`a request through the proxy got ${res.statusCode}`));
      res.once("data", () => resolve(performance.now() - started));
      res.resume();
    });
    req.on("timeout", () => req.destroy(new Error("no answer through the proxy in 120 s")));
    req.on("error", reject).end();
  });
}

async function buildImage(client: LambdaMicrovmsClient, dataDir: string, name: string): Promise<string> {
  const zip = join(dataDir, "app.zip");
  writeFileSync(zip, dataPlaneAppZip());
  await client.send(new CreateMicrovmImageCommand({
    name, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
    codeArtifact: { uri: `file://${zip}` },
  }));
  const image = await eventually(async () => {
    const i = await client.send(new GetMicrovmImageCommand({ imageIdentifier: name }));
    return i.state === "CREATED" || i.state === "CREATE_FAILED" ? i : undefined;
  }, `the ${name} image build`, 900_000);
  if (image.state !== "CREATED") {
    const log = await lmvm(["logs", "build", name, image.latestFailedImageVersion ?? "1"], { LMVM_DATA_DIR: dataDir });
    throw new Error(`the bench image ${name} failed to build (${image.state}); its log ends:\n${(log.stdout + log.stderr).slice(-3000)}`);
  }
  return `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;
}

export async function proxyBench(): Promise<string[]> {
  const dataDir = mkdtempSync(join(tmpdir(), "lmvm-bench-proxy-"));
  const profile = process.env.BENCH_PROXY_PROFILE;
  const server = await spawnServer(dataDir, {
    builds: true,
    // Limits far above the load: the limiter's bookkeeping runs on every request, as in production, and refuses none.
    args: ["--endpoint-limits", "connections-per-vcpu=100000,requests-per-second-per-vcpu=100000000"],
    ...(profile ? { env: { NODE_OPTIONS: `--import ${join(import.meta.dirname, "cpu-profile.js")}`, LMVM_CPU_PROFILE_DIR: profile } } : {}),
  });
  const client = sdkClient(server.url, readCredentials(dataDir));
  let nginx: ChildProcess | undefined;
  let vmId: string | undefined;
  try {
    const arn = await buildImage(client, dataDir, "proxy-bench");
    const { microvmId } = await client.send(new RunMicrovmCommand({
      imageIdentifier: arn, idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true },
    }));
    vmId = microvmId!;
    await eventually(async () => ((await client.send(new GetMicrovmCommand({ microvmIdentifier: vmId }))).state === "RUNNING" ? true : undefined), "RUNNING", 120_000);
    const token = (await client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: vmId, expirationInMinutes: 60, allowedPorts: [{ port: 8080 }] }))).authToken!["X-aws-proxy-auth"]!;
    const address = JSON.parse(readFileSync(join(dataDir, "microvms", vmId, "sandbox.json"), "utf8")).sandboxIp as string;
    const tls = tlsPaths(join(dataDir, "tls"));
    const ca = readFileSync(tls.caCert);
    const host = `${vmId}.${DOMAIN}`;
    const ng = await startNginx(join(dataDir, "nginx"), `${address}:8080`, tls);
    nginx = ng.child;

    const configs = [
      { name: "direct to the sandbox (plain HTTP, no proxy)", run: (s: number) => load(`http://${address}:8080/`, { host }, undefined, s) },
      { name: `nginx (TLS, upstream keep-alive, ${WORKERS} worker)`, run: (s: number) => load(`https://127.0.0.1:${ng.port}/`, { host, "x-aws-proxy-auth": token }, host, s, ng.child.pid) },
      { name: `lmvm endpoint proxy (TLS, token, limits, ${WORKERS} process)`, run: (s: number) => load(`https://127.0.0.1:${server.endpointPort}/`, { host, "x-aws-proxy-auth": token }, host, s, server.child.pid) },
    ];
    const runs = configs.map(() => [] as Run[]);
    for (const c of configs) await c.run(2); // warm-up: connections, JIT, the app's own
    for (let round = 0; round < ROUNDS; round++) {
      // Alternating order, so that no configuration always follows the same one.
      const order = round % 2 ? [2, 1, 0] : [0, 1, 2];
      for (const i of order) runs[i]!.push(await configs[i]!.run(SECONDS));
    }
    if (profile) {
      // One more run of the lmvm proxy, profiled (bench/cpu-profile.ts): the profile covers this load alone.
      server.child.kill("SIGUSR2");
      await configs[2]!.run(SECONDS);
      server.child.kill("SIGUSR2");
    }
    nginx.kill("SIGQUIT");
    await new Promise((r) => nginx!.once("exit", r));
    nginx = undefined;

    // Auto-resume: first byte from a SUSPENDED MicroVM against a RUNNING one.
    const running: number[] = [];
    const resumed: number[] = [];
    for (let i = 0; i < RESUMES; i++) {
      running.push(await firstByte(server, vmId, token, ca));
      await client.send(new SuspendMicrovmCommand({ microvmIdentifier: vmId }));
      await eventually(async () => {
        const got = await client.send(new GetMicrovmCommand({ microvmIdentifier: vmId }));
        if (got.state === "TERMINATED" || (got.state === "RUNNING" && got.stateReason)) throw new Error(`suspend failed: ${got.state}: ${got.stateReason}`);
        return got.state === "SUSPENDED" ? true : undefined;
      }, "SUSPENDED", 120_000);
      resumed.push(await firstByte(server, vmId, token, ca));
    }

    const rps = runs.map((r) => r.map((x) => x.rps));
    const p99 = runs.map((r) => r.map((x) => x.p99));
    const cpu = runs.map((r) => r.map((x) => x.cpuUsPerRequest));
    const nginxRps = median(rps[1]!);
    const nginxP99 = median(p99[1]!);
    const row = (i: number) =>
      `  ${configs[i]!.name.padEnd(52)} ${summary(rps[i]!, "req/s").padEnd(26)} p99 ${summary(p99[i]!, "ms").padEnd(20)} ${(median(rps[i]!) / nginxRps).toFixed(2)}x nginx req/s, ${(median(p99[i]!) / nginxP99).toFixed(2)}x nginx p99`;
    return [
      `Endpoint proxy (HTTP/1.1 keep-alive over TLS, ${CONNECTIONS} connections, one MicroVM's Node app; ${ROUNDS} rounds of ${SECONDS} s each, alternating; median (min–max)):`,
      `  proxy processes: lmvm ${WORKERS} (\`lmvm server\`, its own process), nginx ${WORKERS} worker (its own process); load generator: autocannon in the bench process`,
      row(0),
      row(1),
      row(2),
      `  lmvm / nginx: ${(median(rps[2]!) / nginxRps).toFixed(2)}x requests/s (rounds ${spread(rps[2]!.map((x, k) => x / rps[1]![k]!))}), p99 ${(median(p99[2]!) / nginxP99).toFixed(2)}x`,
      `  proxy CPU per request (user + system, the proxy's process(es) only): nginx ${summary(cpu[1]!, "µs")}, lmvm ${summary(cpu[2]!, "µs")}, ${(median(cpu[2]!) / median(cpu[1]!)).toFixed(1)}x nginx's`,
      `  auto-resume: first byte from a SUSPENDED MicroVM ${summary(resumed, "ms")} vs a RUNNING one ${summary(running, "ms")} (${RESUMES} each)`,
    ];
  } finally {
    nginx?.kill("SIGKILL");
    if (vmId) await client.send(new TerminateMicrovmCommand({ microvmIdentifier: vmId })).catch(() => undefined);
    client.destroy();
    await server.kill();
    await freeSandboxes(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  }
}
