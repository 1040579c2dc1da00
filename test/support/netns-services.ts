// The services of a test network namespace (test/support/test-network.ts starts this file with
// `ip netns exec`): an HTTP server, TCP services that greet and record each connection, and UDP
// echo services. Each event is one JSON line on stdout, so the test can ask who called. It ends
// when its stdin closes (the test process ended, however it ended).
//
// `node --test dist/test/` also loads this file as a test file: without a configuration it does
// nothing and exits.

import { createServer as createHttpServer } from "node:http";
import { connect, createServer as createTcpServer, type Server } from "node:net";
import { createSocket } from "node:dgram";

export interface ServicesConfig {
  http?: { address: string; port: number }[];
  /** TCP services: each connection gets `banner` and a line of its own, then is recorded. */
  tcp?: { address: string; port: number; banner: string }[];
  udpEcho?: { address: string; port: number }[];
  /** TCP relays: each connection is piped, byte for byte, to the unix socket at `path` (which the test process serves on the host). */
  relay?: { address: string; port: number; path: string }[];
}

function emit(event: Record<string, unknown>) {
  process.stdout.write(JSON.stringify({ ...event, at: Date.now() }) + "\n");
}

function main(config: ServicesConfig) {
  const servers: { close(): void }[] = [];
  for (const h of config.http ?? []) {
    const server = createHttpServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      emit({ kind: "http", address: h.address, port: h.port, remote: req.socket.remoteAddress, method: req.method, url: req.url, host: req.headers.host });
      if (url.pathname === "/bytes") {
        // A body of n bytes, for transfers.
        const n = Math.min(Number(url.searchParams.get("n") ?? "0") || 0, 1 << 30);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(n) });
        const chunk = Buffer.alloc(64 * 1024, 120);
        let left = n;
        const pump = () => {
          while (left > 0) {
            const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
            left -= part.length;
            if (!res.write(part)) return void res.once("drain", pump);
          }
          res.end();
        };
        return pump();
      }
      const body = `hello from the test internet (${h.address}); you are ${req.socket.remoteAddress}\n`;
      res.writeHead(200, { "content-type": "text/plain", "x-test-remote": String(req.socket.remoteAddress) });
      res.end(body);
    });
    server.listen(h.port, h.address, () => emit({ kind: "ready", service: "http", address: h.address, port: h.port }));
    servers.push(server);
  }
  for (const t of config.tcp ?? []) {
    const server: Server = createTcpServer((socket) => {
      emit({ kind: "tcp", address: t.address, port: t.port, remote: socket.remoteAddress });
      socket.on("error", () => undefined);
      socket.on("data", (d) => emit({ kind: "tcp-data", address: t.address, port: t.port, remote: socket.remoteAddress, text: d.toString("utf8").slice(0, 200) }));
      socket.end(`${t.banner}\n`);
    });
    server.listen(t.port, t.address, () => emit({ kind: "ready", service: "tcp", address: t.address, port: t.port }));
    servers.push(server);
  }
  for (const u of config.udpEcho ?? []) {
    const socket = createSocket("udp4");
    socket.on("message", (msg, rinfo) => {
      emit({ kind: "udp", address: u.address, port: u.port, remote: rinfo.address, text: msg.toString("utf8").slice(0, 200) });
      socket.send(msg, rinfo.port, rinfo.address);
    });
    socket.bind(u.port, u.address, () => emit({ kind: "ready", service: "udp", address: u.address, port: u.port }));
    servers.push(socket);
  }
  for (const r of config.relay ?? []) {
    const server: Server = createTcpServer((socket) => {
      emit({ kind: "tcp", address: r.address, port: r.port, remote: socket.remoteAddress });
      const up = connect(r.path);
      socket.pipe(up).pipe(socket);
      const end = () => (socket.destroy(), up.destroy());
      socket.on("error", end);
      up.on("error", end);
      socket.on("close", end);
      up.on("close", end);
    });
    server.listen(r.port, r.address, () => emit({ kind: "ready", service: "relay", address: r.address, port: r.port }));
    servers.push(server);
  }
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}

const arg = process.argv[2];
if (arg) main(JSON.parse(arg) as ServicesConfig);
