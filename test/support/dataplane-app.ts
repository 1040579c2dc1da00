// An app for data-plane tests, zipped with its Dockerfile: what a user puts
// behind a MicroVM endpoint.
// - :8080 HTTP: GET / (a counter, and the headers it got), GET /events
//   (server-sent events, one every 300 ms), POST /upload (streams the body
//   into a SHA-256), GET /slow (answers after 2 s), POST /too-large (413 at
//   once, before reading the body, as a size check does)
// - :9001 WebSocket echo (the `ws` package, shipped in the zip)
// - :50051 gRPC over cleartext HTTP/2, written on node:http2: /lmvm.test.Echo/Chat
//   echoes each message of a bidirectional stream; /lmvm.test.Echo/Fail answers
//   a trailers-only INVALID_ARGUMENT.

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
  ws.send(JSON.stringify({ hello: true, protocol: ws.protocol, offered: req.headers["sec-websocket-protocol"] || null, auth: req.headers["x-aws-proxy-auth"] || null }));
  ws.on("message", (data, isBinary) => ws.send(isBinary ? data : "echo:" + data));
});

function frame(payload) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}
http2.createServer().on("stream", (stream, headers) => {
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
    { name: "Dockerfile", content: "FROM lmvm/debian12\nWORKDIR /app\nCOPY . .\nCMD [\"node\", \"app.js\"]\n" },
    { name: "app.js", content: APP },
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
