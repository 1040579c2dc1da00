// The endpoint proxy against an app on loopback (no sandbox needed): a
// long-lived stream keeps reporting activity for as long as it is open,
// closing a MicroVM's connections (before a checkpoint) cuts its streams, and
// an app that refuses an upload before reading it answers the client at once,
// over HTTP/1.1 and HTTP/2.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { request } from "node:https";
import { once } from "node:events";
import { connect as tlsConnect } from "node:tls";
import { connect as h2connect } from "node:http2";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import type { Microvm } from "../../src/core/index.js";
import { EndpointProxy, ensureCertificates, MicrovmTokens } from "../../src/proxy/index.js";
import { tempDir } from "../support/platform.js";

const ID = "microvm-0123456789abcdef0";
const UPLOAD_BYTES = 50 * 1024 * 1024;

/** `promise`, or a failure naming `what` once `ms` have passed. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` every 20 ms until it holds; fails naming `what` after `ms`. */
async function until(ms: number, what: string, check: () => boolean): Promise<void> {
  await within(ms, what, (async () => {
    while (!check()) await new Promise((r) => setTimeout(r, 20));
  })());
}

/** A large upload, made as it is sent, as a client streams a file. */
function upload(): Readable {
  const chunk = Buffer.alloc(64 * 1024, 7);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= UPLOAD_BYTES) return void this.push(null);
      sent += chunk.length;
      this.push(chunk);
    },
  });
}

describe("the endpoint proxy on loopback", () => {
  const tokens = new MicrovmTokens(randomBytes(32));
  const activity: number[] = [];
  let app: Server;
  let appPort: number;
  let proxy: EndpointProxy;
  let port: number;
  let ca: Buffer;
  const upstreamClosed: number[] = [];

  before(async () => {
    const dir = tempDir("lmvm-proxy-unit-");
    const tls = await ensureCertificates(dir, "microvm.localhost");
    ca = readFileSync(tls.caCert);
    app = createServer((req, res) => {
      // An app that refuses an upload before reading any of it (as a size or auth check does).
      if (req.url === "/too-large") return void res.writeHead(413, { "content-type": "text/plain", "content-length": "10" }).end("too large\n");
      req.socket.once("close", () => upstreamClosed.push(Date.now()));
      res.writeHead(200, { "content-type": "text/event-stream" });
      let n = 0;
      const timer = setInterval(() => {
        res.write(`data: ${++n}\n\n`);
        if (req.url === "/short" && n === 5) {
          clearInterval(timer);
          res.end();
        }
      }, 500);
      res.on("close", () => clearInterval(timer));
    });
    // The app keeps an idle connection open longer than a test runs (Node's default is 5 s), as a
    // MicroVM's app did until its MicroVM was suspended: nothing but the proxy may end an exchange.
    app.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r()));
    appPort = (app.address() as { port: number }).port;
    const vm = { id: ID, state: "RUNNING", config: {} } as unknown as Microvm;
    proxy = new EndpointProxy({
      tls, domain: "microvm.localhost", tokens,
      directory: { peek: () => vm, resume: async () => undefined, activity: () => void activity.push(Date.now()), address: () => "127.0.0.1" },
    });
    port = await proxy.listen(0, "127.0.0.1");
  });
  after(async () => {
    await proxy.stop();
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  });

  const stream = async (path: string, onData: (text: string) => void) => {
    const token = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: appPort }], expiresAt: new Date(Date.now() + 60_000) });
    return new Promise<{ status: number; aborted: boolean }>((resolve, reject) => {
      request({ host: "127.0.0.1", port, path, ca, servername: `${ID}.microvm.localhost`, headers: { "x-aws-proxy-auth": token, "x-aws-proxy-port": String(appPort) } }, (res) => {
        res.setEncoding("utf8");
        res.on("data", onData);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, aborted: false }));
        res.on("aborted", () => resolve({ status: res.statusCode ?? 0, aborted: true }));
        res.on("error", () => resolve({ status: res.statusCode ?? 0, aborted: true }));
      }).on("error", reject).end();
    });
  };

  test("an open stream is activity every second it stays open, not only when it starts", async () => {
    activity.length = 0;
    const chunks: number[] = [];
    const r = await stream("/short", () => chunks.push(Date.now()));
    assert.equal(r.status, 200);
    // Between the first and the last event (2 s apart) the request neither started nor ended:
    // any activity then comes from the stream being open.
    const during = activity.filter((at) => at > chunks[0]! && at < chunks.at(-1)!);
    assert.ok(during.length >= 1, `activity while the stream was open: ${activity.length} signals in all`);
  });

  test("closing the MicroVM's connections cuts its open streams and their upstream connections", async () => {
    let received = "";
    const ended = stream("/forever", (t) => (received += t));
    await until(10_000, "the stream's second event", () => received.includes("data: 2"));
    const before = upstreamClosed.length;
    await proxy.close(ID, "The MicroVM is being suspended.");
    const r = await within(10_000, "the client's stream to end", ended);
    assert.ok(r.aborted, "the client's stream was cut");
    await until(10_000, "the upstream connection to close", () => upstreamClosed.length > before);
  });

  // A client that sends its whole body before it reads the answer, as curl without
  // Expect and most scripts do (Python's http.client): it is done once it has sent
  // 50 MB and read the answer.
  test("HTTP/1.1: an app that answers 413 before reading a 50 MB upload answers the client at once", async () => {
    const token = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: appPort }], expiresAt: new Date(Date.now() + 60_000) });
    const socket = tlsConnect({ host: "127.0.0.1", port, ca, servername: `${ID}.microvm.localhost`, ALPNProtocols: ["http/1.1"] });
    try {
      const done = (async () => {
        await once(socket, "secureConnect");
        socket.write(`POST /too-large HTTP/1.1\r\nhost: ${ID}.microvm.localhost\r\nx-aws-proxy-auth: ${token}\r\nx-aws-proxy-port: ${appPort}\r\ncontent-length: ${UPLOAD_BYTES}\r\n\r\n`);
        for await (const chunk of upload()) if (!socket.write(chunk)) await once(socket, "drain");
        let answer = "";
        for await (const chunk of socket) {
          answer += (chunk as Buffer).toString("latin1");
          const [head, body = ""] = answer.split("\r\n\r\n");
          const length = /\r\ncontent-length: (\d+)/i.exec(head!)?.[1];
          if (length !== undefined && body.length >= Number(length)) return { status: Number(head!.split(" ")[1]), body };
        }
        throw new Error(`the connection closed before the whole answer: ${JSON.stringify(answer)}`);
      })();
      assert.deepEqual(await within(10_000, "the refused HTTP/1.1 upload", done), { status: 413, body: "too large\n" });
    } finally {
      socket.destroy();
    }
  });

  // An HTTP/2 client is done once it has the whole answer and its stream has closed.
  test("HTTP/2: an app that answers 413 before reading a 50 MB upload answers the client at once", async () => {
    const token = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: appPort }], expiresAt: new Date(Date.now() + 60_000) });
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: `${ID}.microvm.localhost` });
    session.on("error", () => undefined);
    try {
      const done = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": "/too-large", "x-aws-proxy-auth": token, "x-aws-proxy-port": String(appPort) });
        let status = 0;
        let body = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.setEncoding("utf8");
        stream.on("data", (c: string) => (body += c));
        stream.on("error", (err) => (status ? undefined : reject(err)));
        stream.on("close", () => (stream.readableEnded ? resolve({ status, body }) : reject(new Error(`the stream closed before its answer ended (code ${stream.rstCode})`))));
        upload().pipe(stream);
      });
      assert.deepEqual(await within(10_000, "the refused HTTP/2 upload", done), { status: 413, body: "too large\n" });
    } finally {
      session.destroy();
    }
  });
});
