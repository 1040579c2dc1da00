// An app for data-plane tests, zipped with its Dockerfile: what a user puts
// behind a MicroVM endpoint.
// - :8080 HTTP: GET / (a counter, and the headers it got), GET /events
//   (server-sent events, one every 300 ms), POST /upload (streams the body
//   into a SHA-256), GET /slow (answers after 2 s), POST /too-large (413 at
//   once, before reading the body, as a size check does)
// - :9001 WebSocket echo (the `ws` package, shipped in the zip); picks the
//   subprotocol "chat" when offered, else none; its hello says what it was
//   offered and which X-aws-proxy-* headers it got
// - :9002 the same in Python (stdlib only): a WebSocket echo with the same
//   hello, and plain HTTP GET answering the headers it got
// - :50051 cleartext HTTP/2 (h2c) only, written on node:http2: gRPC
//   /lmvm.test.Echo/Chat echoes each message of a bidirectional stream;
//   /lmvm.test.Echo/Fail answers a trailers-only INVALID_ARGUMENT; any other
//   request answers its path and headers, with a trailer.

import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { CreateMicrovmImageCommand, GetMicrovmImageCommand } from "@aws-sdk/client-lambda-microvms";
import { makeZip, type ZipEntry } from "./artifacts.js";
import { eventually, tempDir, type TestPlatform } from "./platform.js";

const APP = String.raw`
const http = require("node:http");
const http2 = require("node:http2");
const crypto = require("node:crypto");
const { WebSocketServer } = require("./node_modules/ws");

let counter = 0;
http.createServer((req, res) => {
  if (req.url === "/events") {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    let n = 0;
    const timer = setInterval(() => {
      n += 1;
      res.write("data: event " + n + "\n\n");
      if (n === 5) { clearInterval(timer); res.end(); }
    }, 300);
    req.on("close", () => clearInterval(timer));
    return;
  }
  if (req.url === "/upload") {
    const hash = crypto.createHash("sha256");
    let bytes = 0;
    req.on("data", (c) => { bytes += c.length; hash.update(c); });
    req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ bytes, sha256: hash.digest("hex") })));
    return;
  }
  if (req.url === "/slow") return setTimeout(() => res.writeHead(200).end("slow"), 2000);
  if (req.url === "/too-large") return res.writeHead(413, { "content-type": "text/plain", "content-length": "10" }).end("too large\n");
  counter += 1;
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ counter, headers: req.headers }));
}).listen(8080, "0.0.0.0");

const wss = new WebSocketServer({ port: 9001, handleProtocols: (protocols) => (protocols.has("chat") ? "chat" : false) });
wss.on("connection", (ws, req) => {
  ws.send(JSON.stringify({ hello: "node", protocol: ws.protocol, offered: req.headers["sec-websocket-protocol"] || null, proxyHeaders: Object.keys(req.headers).filter((h) => h.startsWith("x-aws-proxy")) }));
  ws.on("message", (data, isBinary) => ws.send(isBinary ? data : "echo:" + data));
});

function frame(payload) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}
http2.createServer().on("stream", (stream, headers) => {
  if (!String(headers["content-type"] || "").startsWith("application/grpc")) {
    stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-h2c-trailer": "yes" }));
    stream.resume();
    stream.end(JSON.stringify({ httpVersion: "2.0", path: headers[":path"], headers }));
    return;
  }
  if (headers[":path"] === "/lmvm.test.Echo/Fail") {
    stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "3", "grpc-message": "bad request" }, { endStream: true });
    return;
  }
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "x-served-by": "app" }));
  let buffered = Buffer.alloc(0);
  stream.on("data", (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
      const length = buffered.readUInt32BE(1);
      const message = JSON.parse(buffered.subarray(5, 5 + length).toString());
      buffered = buffered.subarray(5 + length);
      stream.write(frame(Buffer.from(JSON.stringify({ text: "echo:" + message.text }))));
    }
  });
  stream.on("end", () => stream.end());
}).listen(50051, "0.0.0.0");
console.log("data-plane app up");
`;

// The Python side: http.server, with the WebSocket handshake and frames of RFC 6455 by hand.
const PYTHON_APP = String.raw`
import base64, hashlib, json, struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

def send_frame(sock, opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126: head += bytes([n])
    elif n < 65536: head += bytes([126]) + struct.pack("!H", n)
    else: head += bytes([127]) + struct.pack("!Q", n)
    sock.sendall(head + payload)

def read_exact(f, n):
    data = f.read(n)
    if len(data) < n: raise EOFError()
    return data

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def proxy_headers(self):
        return [h.lower() for h in self.headers.keys() if h.lower().startswith("x-aws-proxy")]
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "websocket":
            body = json.dumps({"python": True, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        offered = self.headers.get("Sec-WebSocket-Protocol")
        protocols = [p.strip() for p in (offered or "").split(",") if p.strip()]
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        chosen = "chat" if "chat" in protocols else ""
        if chosen: self.send_header("Sec-WebSocket-Protocol", chosen)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        send_frame(sock, 1, json.dumps({"hello": "python", "protocol": chosen, "offered": offered, "proxyHeaders": self.proxy_headers()}).encode())
        try:
            while True:
                b1, b2 = read_exact(self.rfile, 2)
                opcode, n = b1 & 0x0F, b2 & 0x7F
                if n == 126: n = struct.unpack("!H", read_exact(self.rfile, 2))[0]
                elif n == 127: n = struct.unpack("!Q", read_exact(self.rfile, 8))[0]
                mask = read_exact(self.rfile, 4) if b2 & 0x80 else b"\x00\x00\x00\x00"
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(read_exact(self.rfile, n)))
                if opcode == 8:
                    send_frame(sock, 8, data[:2])
                    return
                if opcode == 9: send_frame(sock, 10, data)
                elif opcode == 1: send_frame(sock, 1, b"echo:" + data)
                elif opcode == 2: send_frame(sock, 2, data)
        except (EOFError, ConnectionError, OSError):
            return
        finally:
            self.close_connection = True

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 9002), Handler).serve_forever()
`;

function packageFiles(dir: string, under: string): ZipEntry[] {
  const out: ZipEntry[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...packageFiles(path, under));
    else out.push({ name: join("node_modules", "ws", relative(under, path)), content: readFileSync(path, "utf8") });
  }
  return out;
}

export function dataPlaneAppZip(): Buffer {
  const ws = join(import.meta.dirname, "..", "..", "..", "node_modules", "ws");
  return makeZip([
    { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY . .\nCMD [\"sh\", \"-c\", \"python3 -u app.py & exec node app.js\"]\n" },
    { name: "app.js", content: APP },
    { name: "app.py", content: PYTHON_APP },
    ...packageFiles(ws, ws),
  ]);
}

/** Builds the data-plane app as image `name` on a test platform (debian12 base) and waits until it is CREATED. */
export async function buildDataPlaneImage(t: TestPlatform, name: string): Promise<string> {
  const zip = join(tempDir("lmvm-dataplane-"), "app.zip");
  writeFileSync(zip, dataPlaneAppZip());
  await t.client.send(new CreateMicrovmImageCommand({
    name, baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: "arn:aws:iam::000000000000:role/R",
    codeArtifact: { uri: `file://${zip}` },
  }));
  const state = await eventually(async () => {
    const s = (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }))).state;
    return s === "CREATED" || s === "CREATE_FAILED" ? s : undefined;
  }, `the ${name} image build`, 600_000);
  if (state !== "CREATED") throw new Error(`the ${name} image failed to build`);
  return `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;
}
