// The endpoint proxy against an app on loopback (no sandbox needed): a
// long-lived stream keeps reporting activity for as long as it is open,
// closing a MicroVM's connections (before a checkpoint) cuts its streams, and
// an app that refuses an upload before reading it answers the client at once,
// over HTTP/1.1 and HTTP/2.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { request } from "node:https";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { Microvm } from "../../src/core/index.js";
import { EndpointProxy, ensureCertificates, MicrovmTokens } from "../../src/proxy/index.js";
import { until, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { h2Upload, sendThenRead, type UploadTarget } from "../support/uploads.js";

const ID = "microvm-0123456789abcdef0";

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
    await within(10_000, "the loopback app to listen", new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r())));
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
    await within(10_000, "the loopback app to close", new Promise((r) => app.close(r)));
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
    const r = await within(20_000, "the five-event stream to end", stream("/short", () => chunks.push(Date.now())));
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

  const refusedUpload = async (): Promise<UploadTarget> => {
    const token = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: appPort }], expiresAt: new Date(Date.now() + 60_000) });
    return { port, ca, host: `${ID}.microvm.localhost`, path: "/too-large", headers: { "x-aws-proxy-auth": token, "x-aws-proxy-port": String(appPort) } };
  };

  // The client sends its whole body before it reads the answer, as curl without Expect and
  // Python's http.client do: it waits until the proxy has taken all 50 MB.
  test("HTTP/1.1: an app that answers 413 before reading a 50 MB upload answers the client at once", async () => {
    const answer = await within(10_000, "the refused HTTP/1.1 upload", sendThenRead(await refusedUpload()));
    assert.deepEqual(answer, { status: 413, body: "too large\n" });
  });

  test("HTTP/2: an app that answers 413 before reading a 50 MB upload answers the client at once", async () => {
    const answer = await within(10_000, "the refused HTTP/2 upload", h2Upload(await refusedUpload()));
    assert.deepEqual(answer, { status: 413, body: "too large\n" });
  });
});
