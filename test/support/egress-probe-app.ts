// An app for egress tests, zipped with its Dockerfile: on an HTTP request it reaches out from
// inside the MicroVM and answers with the outcome, each attempt with its own short deadline.
// The same API in Node (:8080) and Python (:8081); every answer is JSON, {"ok": true, ...} or
// {"ok": false, "error": "<errno name | timeout | EAI_...>"}:
// - GET /fetch?url=&timeout=ms: an HTTP GET (by name through the MicroVM's resolver, or by
//   address); {ok, status, body}
// - GET /connect?host=&port=&proto=tcp|udp&send=&timeout=ms: a TCP connection (answers what
//   the peer sent until it closed) or a UDP datagram `send` (answers the reply)
// - GET /resolve?name=&timeout=ms: the system resolver (getaddrinfo: /etc/resolv.conf); {addresses}
// - GET /dns?server=&name=&proto=udp|tcp&port=53&timeout=ms: one DNS A query sent straight to
//   `server`; {rcode, answers}
// - GET /resolvconf: /etc/resolv.conf; GET /whoami (Node): the MicroVM's IPv4 addresses
// Python only, for the hostile suite (raw sockets need CAP_NET_RAW):
// - GET /raw?kind=udp-spoof&src=&dst=&port=&text=: an IPv4/UDP datagram with a forged source
//   (IP_HDRINCL); kind=tcp-syn-spoof the same as a TCP SYN; kind=icmp&dst=: an ICMP echo, its
//   reply awaited; kind=icmp6&dst=: an ICMPv6 echo. {ok: true, sent} when the kernel took the
//   packet; ok is about sending, the test checks what arrived.

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { CreateMicrovmAuthTokenCommand, CreateMicrovmImageCommand, GetMicrovmImageCommand, type LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { makeZip } from "./artifacts.js";
import { within } from "./deadline.js";
import { eventually, tempDir } from "./platform.js";

const NODE_APP = String.raw`
const http = require("node:http");
const net = require("node:net");
const dgram = require("node:dgram");
const dns = require("node:dns");
const fs = require("node:fs");

const ms = (q) => Math.min(Number(q.get("timeout") || 3000), 10000);
const fail = (err) => ({ ok: false, error: err && (err.code || err.message) || "error" });

function query(name) {
  const head = Buffer.from([Math.random() * 256 | 0, Math.random() * 256 | 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  const labels = Buffer.concat(name.split(".").filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])));
  return Buffer.concat([head, labels, Buffer.from([0, 0, 1, 0, 1])]);
}
function parse(msg) {
  const rcode = msg[3] & 15, count = msg.readUInt16BE(6);
  let i = 12;
  while (msg[i] !== 0) i += msg[i] + 1;
  i += 5;
  const answers = [];
  for (let a = 0; a < count && i < msg.length; a++) {
    i += (msg[i] & 0xc0) === 0xc0 ? 2 : 0;
    const type = msg.readUInt16BE(i), len = msg.readUInt16BE(i + 8);
    if (type === 1 && len === 4) answers.push(Array.from(msg.subarray(i + 10, i + 14)).join("."));
    i += 10 + len;
  }
  return { ok: true, rcode, answers };
}

const probes = {
  fetch: (q) => new Promise((resolve) => {
    const req = http.get(q.get("url"), { timeout: ms(q) }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => { if (body.length < 4096) body += c; });
      res.on("end", () => resolve({ ok: true, status: res.statusCode, body }));
      res.on("error", (e) => resolve(fail(e)));
    });
    req.on("timeout", () => { req.destroy(); resolve({ ok: false, error: "timeout" }); });
    req.on("error", (e) => resolve(fail(e)));
  }),
  connect: (q) => new Promise((resolve) => {
    const host = q.get("host"), port = Number(q.get("port")), send = q.get("send") || "";
    const timer = setTimeout(() => { done({ ok: false, error: "timeout" }); }, ms(q));
    let finished = false, sock;
    const done = (r) => { if (finished) return; finished = true; clearTimeout(timer); try { sock.close ? sock.close() : sock.destroy(); } catch {} resolve(r); };
    if (q.get("proto") === "udp") {
      sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
      sock.on("message", (m) => done({ ok: true, data: m.toString() }));
      sock.on("error", (e) => done(fail(e)));
      sock.send(Buffer.from(send || "ping"), port, host, (e) => { if (e) done(fail(e)); });
      return;
    }
    let data = "";
    sock = net.connect({ host, port });
    sock.on("connect", () => { if (send) sock.write(send); });
    sock.on("data", (d) => (data += d));
    sock.on("end", () => done({ ok: true, data }));
    sock.on("error", (e) => done(fail(e)));
  }),
  resolve: (q) => new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, error: "timeout" }), ms(q));
    dns.lookup(q.get("name"), { all: true, family: 4 }, (e, addrs) => { clearTimeout(timer); resolve(e ? fail(e) : { ok: true, addresses: addrs.map((a) => a.address) }); });
  }),
  dns: (q) => new Promise((resolve) => {
    const server = q.get("server"), port = Number(q.get("port") || 53), msg = query(q.get("name"));
    let finished = false, sock;
    const done = (r) => { if (finished) return; finished = true; clearTimeout(timer); try { sock.close ? sock.close() : sock.destroy(); } catch {} resolve(r); };
    const timer = setTimeout(() => done({ ok: false, error: "timeout" }), ms(q));
    if (q.get("proto") === "tcp") {
      let buf = Buffer.alloc(0);
      sock = net.connect({ host: server, port }, () => { const len = Buffer.alloc(2); len.writeUInt16BE(msg.length); sock.write(Buffer.concat([len, msg])); });
      sock.on("data", (d) => { buf = Buffer.concat([buf, d]); if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(parse(buf.subarray(2))); });
      sock.on("end", () => done({ ok: false, error: "closed" }));
      sock.on("error", (e) => done(fail(e)));
      return;
    }
    sock = dgram.createSocket("udp4");
    sock.on("message", (m) => done(parse(m)));
    sock.on("error", (e) => done(fail(e)));
    sock.send(msg, port, server, (e) => { if (e) done(fail(e)); });
  }),
  whoami: async () => ({ ok: true, addresses: Object.values(require("node:os").networkInterfaces()).flat().filter((i) => i.family === "IPv4" && !i.internal).map((i) => i.address) }),
  resolvconf: async () => { try { return { ok: true, text: fs.readFileSync("/etc/resolv.conf", "utf8") }; } catch (e) { return fail(e); } },
};

http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const probe = probes[url.pathname.slice(1)];
  const out = probe ? await probe(url.searchParams).catch(fail) : { ok: false, error: "no such probe" };
  res.writeHead(probe ? 200 : 404, { "content-type": "application/json" }).end(JSON.stringify({ app: "node", ...out }));
}).listen(8080, "0.0.0.0");
console.log("node egress probe up");
`;

const PYTHON_APP = String.raw`
import errno, json, os, random, socket, struct, time, urllib.parse
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def fail(e):
    if isinstance(e, socket.timeout): return {"ok": False, "error": "timeout"}
    if isinstance(e, socket.gaierror): return {"ok": False, "error": "EAI:" + str(e.args[0])}
    if isinstance(e, OSError) and e.errno in errno.errorcode: return {"ok": False, "error": errno.errorcode[e.errno]}
    return {"ok": False, "error": type(e).__name__ + ": " + str(e)}

def secs(q): return min(float(q.get("timeout", "3000")), 10000) / 1000

def query(name):
    head = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    return head + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0" + struct.pack(">HH", 1, 1)

def parse(msg):
    rcode, count = msg[3] & 15, struct.unpack(">H", msg[6:8])[0]
    i = 12
    while msg[i] != 0: i += msg[i] + 1
    i += 5
    answers = []
    for _ in range(count):
        if i >= len(msg): break
        if msg[i] & 0xC0 == 0xC0: i += 2
        typ, ln = struct.unpack(">H", msg[i:i+2])[0], struct.unpack(">H", msg[i+8:i+10])[0]
        if typ == 1 and ln == 4: answers.append(socket.inet_ntoa(msg[i+10:i+14]))
        i += 10 + ln
    return {"ok": True, "rcode": rcode, "answers": answers}

def family(host): return socket.AF_INET6 if ":" in host else socket.AF_INET

def p_fetch(q):
    u = urllib.parse.urlsplit(q["url"])
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=secs(q))
    try:
        conn.request("GET", u.path or "/")
        r = conn.getresponse()
        return {"ok": True, "status": r.status, "body": r.read(4096).decode("utf8", "replace")}
    finally:
        conn.close()

def p_connect(q):
    host, port, send = q["host"], int(q["port"]), q.get("send", "")
    if q.get("proto") == "udp":
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.settimeout(secs(q))
        try:
            s.sendto((send or "ping").encode(), (host, port))
            return {"ok": True, "data": s.recv(2048).decode("utf8", "replace")}
        finally: s.close()
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(secs(q))
    try:
        s.connect((host, port))
        if send: s.sendall(send.encode())
        data = b""
        while True:
            d = s.recv(4096)
            if not d: break
            data += d
        return {"ok": True, "data": data.decode("utf8", "replace")}
    finally: s.close()

def p_resolve(q):
    socket.setdefaulttimeout(secs(q))
    infos = socket.getaddrinfo(q["name"], None, socket.AF_INET, socket.SOCK_STREAM)
    return {"ok": True, "addresses": sorted({i[4][0] for i in infos})}

def p_dns(q):
    server, port, msg = q["server"], int(q.get("port", "53")), query(q["name"])
    if q.get("proto") == "tcp":
        s = socket.socket(family(server), socket.SOCK_STREAM)
        s.settimeout(secs(q))
        try:
            s.connect((server, port))
            s.sendall(struct.pack(">H", len(msg)) + msg)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                d = s.recv(4096)
                if not d: return {"ok": False, "error": "closed"}
                buf += d
            return parse(buf[2:])
        finally: s.close()
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.settimeout(secs(q))
    try:
        s.sendto(msg, (server, port))
        return parse(s.recv(4096))
    finally: s.close()

def p_resolvconf(q):
    with open("/etc/resolv.conf") as f: return {"ok": True, "text": f.read()}

def checksum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def p_raw(q):
    kind = q["kind"]
    if kind in ("udp-spoof", "tcp-syn-spoof"):
        src, dst, port = q["src"], q["dst"], int(q["port"])
        payload = q.get("text", "spoofed").encode()
        if kind == "udp-spoof":
            proto, l4 = 17, struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
        else:
            proto, payload = 6, b""
            l4 = struct.pack(">HHIIBBHHH", 40001, port, random.randint(0, 2**32 - 1), 0, 5 << 4, 0x02, 64240, 0, 0)
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">BBH", 0, proto, len(l4))
        c = checksum(pseudo + l4)
        l4 = l4[:6] + struct.pack(">H", c) + l4[8:] if proto == 17 else l4[:16] + struct.pack(">H", c) + l4[18:]
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), random.randint(0, 65535), 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack(">H", checksum(ip)) + ip[12:]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        try:
            sent = 0
            for _ in range(int(q.get("count", "3"))):
                sent += s.sendto(ip + l4, (dst, 0))
            return {"ok": True, "sent": sent}
        finally: s.close()
    if kind in ("icmp", "icmp6"):
        v6 = kind == "icmp6"
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
        s.settimeout(secs(q))
        ident = random.randint(0, 65535)
        pkt = struct.pack(">BBHHH", 128 if v6 else 8, 0, 0, ident, 1) + b"lmvm-egress-probe"
        if not v6: pkt = pkt[:2] + struct.pack(">H", checksum(pkt)) + pkt[4:]
        try:
            s.sendto(pkt, (q["dst"], 0))
            deadline = time.time() + secs(q)
            while time.time() < deadline:
                d, addr = s.recvfrom(2048)
                body = d if v6 else d[(d[0] & 15) * 4:]
                if body[0] == (129 if v6 else 0) and struct.unpack(">H", body[4:6])[0] == ident:
                    return {"ok": True, "reply": addr[0]}
            return {"ok": False, "error": "timeout"}
        finally: s.close()
    return {"ok": False, "error": "no such kind"}

PROBES = {"fetch": p_fetch, "connect": p_connect, "resolve": p_resolve, "dns": p_dns, "resolvconf": p_resolvconf, "raw": p_raw}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        probe = PROBES.get(u.path[1:])
        if probe is None: out, code = {"ok": False, "error": "no such probe"}, 404
        else:
            try: out, code = probe(q), 200
            except Exception as e: out, code = fail(e), 200
        body = json.dumps({"app": "python", **out}).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer.daemon_threads = True
print("python egress probe up", flush=True)
ThreadingHTTPServer(("0.0.0.0", 8081), Handler).serve_forever()
`;

export const PROBE_PORTS = { node: 8080, python: 8081 } as const;
export type ProbeApp = keyof typeof PROBE_PORTS;

export function egressProbeZip(): Buffer {
  return makeZip([
    { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY . .\nCMD [\"sh\", \"-c\", \"python3 -u app.py & exec node app.js\"]\n" },
    { name: "app.js", content: NODE_APP },
    { name: "app.py", content: PYTHON_APP },
  ]);
}

/** Builds the egress probe as image `name` (debian12 base) and waits until it is CREATED; its ARN. */
export async function buildEgressProbeImage(client: LambdaMicrovmsClient, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  const zip = join(tempDir("lmvm-egress-probe-"), "app.zip");
  writeFileSync(zip, egressProbeZip());
  await client.send(new CreateMicrovmImageCommand({
    name, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
    codeArtifact: { uri: `file://${zip}` }, ...extra,
  }));
  const got = await eventually(async () => {
    const image = await client.send(new GetMicrovmImageCommand({ imageIdentifier: name }));
    return image.state === "CREATED" || image.state === "CREATE_FAILED" ? image : undefined;
  }, `the ${name} image build`, 600_000);
  if (got.state !== "CREATED") throw new Error(`the ${name} image failed to build`);
  return got.imageArn!;
}

export interface ProbeAnswer {
  app: ProbeApp;
  ok: boolean;
  error?: string;
  status?: number;
  body?: string;
  data?: string;
  addresses?: string[];
  rcode?: number;
  answers?: string[];
  text?: string;
  sent?: number;
  reply?: string;
}

/** The last lines the MicroVM's app printed (its log file under the data directory), for failure messages. */
function logTail(dataDir: string, vm: string): string {
  const file = join(dataDir, "logs", "microvms", `${vm}.log`);
  return existsSync(file) ? JSON.stringify(readFileSync(file, "utf8").slice(-2000)) : `(no log file at ${file})`;
}

/**
 * Calls the probe apps as a user would: an endpoint token from the SDK, then HTTPS to
 * https://<id>.microvm.localhost:<endpointPort> (resolved to loopback) with the app's port in
 * X-aws-proxy-port. The MicroVM needs HTTP_INGRESS.
 */
export function probeCaller(opts: { endpointPort: number; dataDir: string; client: LambdaMicrovmsClient; domain?: string }) {
  const ca = readFileSync(join(opts.dataDir, "tls", "ca.pem"));
  const domain = opts.domain ?? "microvm.localhost";
  const tokens = new Map<string, string>();
  const token = async (vm: string) => {
    let t = tokens.get(vm);
    if (!t) {
      const out = await opts.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: vm, expirationInMinutes: 60, allowedPorts: [{ port: PROBE_PORTS.node }, { port: PROBE_PORTS.python }] }));
      t = out.authToken!["X-aws-proxy-auth"]!;
      tokens.set(vm, t);
    }
    return t;
  };
  return async (vm: string, app: ProbeApp, probe: string, params: Record<string, string | number>): Promise<ProbeAnswer> => {
    const path = `/${probe}?${new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]))}`;
    const headers = { host: `${vm}.${domain}:${opts.endpointPort}`, "x-aws-proxy-auth": await token(vm), "x-aws-proxy-port": String(PROBE_PORTS[app]) };
    const { status, body } = await within(60_000, `the ${app} probe's answer to ${path} in ${vm}`, new Promise<{ status: number; body: string }>((resolve, reject) => {
      httpsRequest({ host: "127.0.0.1", port: opts.endpointPort, servername: `${vm}.${domain}`, path, ca, headers, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on("error", reject);
      }).on("error", reject).end();
    }));
    if (status !== 200) throw new Error(`the ${app} probe ${path} in ${vm} answered ${status}: ${body}; the MicroVM's output ends: ${logTail(opts.dataDir, vm)}`);
    return JSON.parse(body) as ProbeAnswer;
  };
}

/**
 * What the host's firewall holds for the sandbox at `sandboxIp`, for failure messages: its host
 * veth, whether its chain is in table inet lmvm and the egress map jumps to it. (Another lmvm
 * server of an older version on the same host deletes the whole table when it starts, which cuts
 * every sandbox off; this says so instead of leaving a bare timeout.)
 */
export function egressDiagnosis(sandboxIp: string): string {
  const gateway = sandboxIp.replace(/\d+$/, (n) => String(Number(n) - 1));
  try {
    const links = JSON.parse(execFileSync("ip", ["-j", "-4", "addr"], { encoding: "utf8", timeout: 10_000 })) as { ifname: string; addr_info: { local: string }[] }[];
    const iface = links.find((l) => l.addr_info.some((a) => a.local === gateway))?.ifname;
    if (!iface) return `no host interface holds ${gateway}`;
    let table = "";
    try {
      table = execFileSync("nft", ["list", "table", "inet", "lmvm"], { encoding: "utf8", timeout: 10_000 });
    } catch {
      return `${iface}: table inet lmvm is missing`;
    }
    const chain = table.includes(`chain ${iface} {`);
    const jump = new RegExp(`"${iface}" : jump ${iface}\\b`).test(table);
    return `${iface}: chain ${chain ? "present" : "MISSING"}, egress map entry ${jump ? "present" : "MISSING"} in table inet lmvm`;
  } catch (err) {
    return `could not inspect the firewall: ${(err as Error).message}`;
  }
}
