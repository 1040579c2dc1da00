// The endpoint proxy against an app on loopback (no sandbox needed): a
// long-lived stream keeps reporting activity for as long as it is open,
// closing a MicroVM's connections (before a checkpoint) cuts its streams, and
// an app that refuses an upload before reading it answers the client at once,
// over HTTP/1.1 and HTTP/2. Then the service's rules, each on its own proxy:
// the request-rate and connection limits (429), X-aws-proxy-force-h2 to an
// h2c app from HTTP/1.1 and HTTP/2 clients, the X-aws-proxy-* namespace
// stripped, the hook path refused, ingress connectors, 502 for a closed port,
// and a PENDING MicroVM waited for.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { connect as h2connect, createServer as createH2cServer, type Http2Server } from "node:http2";
import { connect, createServer as createNetServer } from "node:net";
import { request } from "node:https";
import { connect as tlsConnect } from "node:tls";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { Microvm } from "../../src/core/index.js";
import { EndpointProxy, ensureCertificates, MicrovmTokens, type EndpointLimitsConfig, type TlsFiles } from "../../src/proxy/index.js";
import { until, within } from "../support/deadline.js";
import { tempDir } from "../support/platform.js";
import { h2Upload, sendThenRead, type UploadTarget } from "../support/uploads.js";
import { endpointH2Get } from "../support/cluster-nodes.js";

const ID = "microvm-0123456789abcdef0";

/** A port the test runtime's connect() throws for. */
const BROKEN_PORT = 9;

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
    const vm = { id: ID, state: "RUNNING", imageArn: "arn", imageVersion: "1.0", config: { ingressNetworkConnectors: [] } } as unknown as Microvm;
    proxy = new EndpointProxy({
      tls, domain: "microvm.localhost", tokens,
      directory: { peek: () => vm, imageConfig: async () => ({}), resume: async () => undefined, activity: () => void activity.push(Date.now()), address: () => "127.0.0.1",
        connect: (_id, port) => {
          // A runtime that throws instead of failing on the stream: the proxy must answer, not crash.
          if (port === BROKEN_PORT) throw new Error("the runtime broke");
          return connect({ host: "127.0.0.1", port });
        },
      },
      limits: { connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 0, queueMs: 0 },
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

  test("a runtime whose connect() throws gets the client a 502 over HTTP/1.1 and HTTP/2 (h2c too), and the proxy lives on", async () => {
    const token = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: BROKEN_PORT }, { port: appPort }], expiresAt: new Date(Date.now() + 60_000) });
    const h1 = await within(10_000, "the HTTP/1.1 answer", new Promise<{ status: number; body: string }>((resolve, reject) => {
      request({ host: "127.0.0.1", port, path: "/", ca, servername: `${ID}.microvm.localhost`, headers: { "x-aws-proxy-auth": token, "x-aws-proxy-port": String(BROKEN_PORT) } }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      }).on("error", reject).end();
    }));
    assert.equal(h1.status, 502);
    assert.match(h1.body, /the runtime broke/);
    for (const extra of [{}, { "x-aws-proxy-force-h2": "true" }] as Record<string, string>[]) {
      const h2 = await endpointH2Get({ port, ca, id: ID, domain: "microvm.localhost", token, headers: { "x-aws-proxy-port": String(BROKEN_PORT), ...extra }, deadlineMs: 10_000 });
      assert.equal(h2.status, 502, JSON.stringify(extra));
      assert.match(h2.body, /the runtime broke/);
    }
    const answer = await within(10_000, "an upload after the failures", h2Upload(await refusedUpload()));
    assert.deepEqual(answer, { status: 413, body: "too large\n" }, "the proxy still answers");
  });
});

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

describe("the endpoint proxy's rules on loopback", () => {
  const tokens = new MicrovmTokens(randomBytes(32));
  let tls: TlsFiles;
  let ca: Buffer;
  let app: Server;
  let appPort: number;
  let h2c: Http2Server;
  let h2cPort: number;
  let closedPort: number;
  const proxies: EndpointProxy[] = [];
  const arn = (n: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${n}`;
  let current: Microvm;
  let peeks = 0;

  before(async () => {
    tls = await ensureCertificates(tempDir("lmvm-proxy-rules-"), "microvm.localhost");
    ca = readFileSync(tls.caCert);
    // An HTTP/1.1 app that tells what it got; /hold answers only when the client goes.
    app = createServer((req, res) => {
      if (req.url === "/hold") return void res.writeHead(200, { "content-type": "text/event-stream" }).write("data: held\n\n");
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ httpVersion: req.httpVersion, url: req.url, headers: req.headers }));
    });
    await within(10_000, "the loopback app to listen", new Promise<void>((r) => app.listen(0, "127.0.0.1", () => r())));
    appPort = (app.address() as { port: number }).port;
    // An app that serves cleartext HTTP/2 only (h2c, no HTTP/1.1), with a trailer.
    h2c = createH2cServer();
    h2c.on("stream", (stream, headers) => {
      stream.respond({ ":status": 200, "content-type": "application/json" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "x-h2c-trailer": "yes" }));
      stream.resume();
      stream.end(JSON.stringify({ httpVersion: "2.0", path: headers[":path"], headers }));
    });
    await within(10_000, "the h2c app to listen", new Promise<void>((r) => h2c.listen(0, "127.0.0.1", () => r())));
    h2cPort = (h2c.address() as { port: number }).port;
    // A port nothing listens on: bound, then closed.
    const probe = createNetServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    closedPort = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
  });
  after(async () => {
    for (const p of proxies) await p.stop();
    app.closeAllConnections();
    await within(10_000, "the loopback apps to close", Promise.all([new Promise((r) => app.close(r)), new Promise((r) => h2c.close(r))]));
  });

  const vmWith = (over: Partial<Microvm> = {}, ingress: string[] = []): Microvm => ({
    id: ID, accountId: "000000000000", imageArn: "arn:aws:lambda:us-east-1:000000000000:microvm-image:x", imageVersion: "1.0", state: "RUNNING", endpoint: "", startedAt: new Date(), updatedAt: new Date(),
    config: { ingressNetworkConnectors: ingress.map(arn), egressNetworkConnectors: [], maximumDurationInSeconds: 3600 }, ...over,
  } as Microvm);

  const start = async (limits: EndpointLimitsConfig = { connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 0, queueMs: 0 }, extra: { pendingWaitMs?: number } = {}) => {
    const proxy = new EndpointProxy({
      tls, domain: "microvm.localhost", tokens, limits, ...extra,
      directory: {
        peek: () => (peeks++, current), imageConfig: async () => ({ hooks: { port: appPort }, resources: [{ minimumMemoryInMiB: 512 }] }), resume: async () => undefined, activity: () => undefined,
        address: () => (current.state === "RUNNING" ? "127.0.0.1" : undefined),
        connect: (_id: string, port: number) => connect({ host: "127.0.0.1", port }),
      },
    });
    proxies.push(proxy);
    return proxy.listen(0, "127.0.0.1");
  };
  const token = () => tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ allPorts: {} }], expiresAt: new Date(Date.now() + 60_000) });
  const get = (port: number, path: string, headers: Record<string, string>) =>
    within(20_000, `an answer to GET ${path}`, new Promise<Answer>((resolve, reject) => {
      request({ host: "127.0.0.1", port, path, ca, servername: `${ID}.microvm.localhost`, agent: false, headers: { host: `${ID}.microvm.localhost`, ...headers } }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (c: string) => (body += c)).on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      }).on("error", reject).end();
    }));
  const h2get = (port: number, paths: string[], headers: Record<string, string>) => {
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: `${ID}.microvm.localhost` });
    session.on("error", () => undefined);
    const one = (path: string) => new Promise<Answer & { trailers: IncomingHttpHeaders }>((resolve, reject) => {
      const req = session.request({ ":path": path, ":authority": `${ID}.microvm.localhost`, ...headers });
      let body = "";
      let status = 0;
      let got: IncomingHttpHeaders = {};
      let trailers: IncomingHttpHeaders = {};
      req.setEncoding("utf8");
      req.on("response", (h) => ((status = Number(h[":status"])), (got = h as IncomingHttpHeaders)));
      req.on("trailers", (t) => (trailers = t as IncomingHttpHeaders));
      req.on("data", (c: string) => (body += c));
      req.on("end", () => resolve({ status, headers: got, body, trailers }));
      req.on("error", reject);
      req.end();
    });
    return within(20_000, `answers to ${paths.length} HTTP/2 requests`, Promise.all(paths.map(one))).finally(() => session.close());
  };

  test("past the request rate, a 429 with Retry-After; the app never sees it", async () => {
    current = vmWith();
    const port = await start({ connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 2, queueMs: 0 });
    const tok = await token();
    // 20 requests on one HTTP/2 connection, sent together: 2 a second get through.
    const answers = await h2get(port, Array.from({ length: 20 }, (_, i) => `/r${i}`), { "x-aws-proxy-auth": tok, "x-aws-proxy-port": String(appPort) });
    const limited = answers.filter((a) => a.status === 429);
    assert.ok(answers.some((a) => a.status === 200), "some pass");
    assert.ok(limited.length > 0, `429s: ${limited.length} of 20`);
    assert.ok(Number(limited[0]!.headers["retry-after"]) >= 1, "Retry-After in seconds");
    assert.match(limited[0]!.body, /Too many requests: MicroVM .* at most 2 requests per second/);
  });

  test("past the connections, a request waits for a slot; past the queue's deadline, a 429", async () => {
    current = vmWith();
    const port = await start({ connectionsPerVcpu: 1, requestsPerSecondPerVcpu: 0, queueMs: 300 });
    const tok = await token();
    const headers = { "x-aws-proxy-auth": tok, "x-aws-proxy-port": String(appPort) };
    // Hold the only slot with an open stream.
    let held!: import("node:http").ClientRequest;
    const opened = new Promise<void>((resolve, reject) => {
      held = request({ host: "127.0.0.1", port, path: "/hold", ca, servername: `${ID}.microvm.localhost`, agent: false, headers: { host: `${ID}.microvm.localhost`, ...headers } }, (res) => res.once("data", () => resolve()));
      held.on("error", () => undefined).on("error", reject).end();
    });
    await within(10_000, "the held stream to open", opened);
    const refused = await get(port, "/", headers);
    assert.equal(refused.status, 429);
    assert.match(refused.body, /Too many connections: .* at most 1 open/);
    held.destroy();
    await until(10_000, "the slot to come back", async () => (await get(port, "/", headers)).status === 200);
  });

  test("X-aws-proxy-force-h2: true reaches an h2c app from HTTP/1.1 and HTTP/2 clients; without it, an h2c-only app is a 502", async () => {
    current = vmWith();
    const port = await start();
    const headers = { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(h2cPort), "x-aws-proxy-force-h2": "true" };
    const viaH1 = await get(port, "/h1-client", headers);
    assert.equal(viaH1.status, 200, viaH1.body);
    const seen = JSON.parse(viaH1.body);
    assert.equal(seen.httpVersion, "2.0");
    assert.equal(seen.path, "/h1-client");
    assert.deepEqual(Object.keys(seen.headers).filter((h) => h.startsWith("x-aws-proxy-")), [], "the X-aws-proxy-* namespace is removed");
    const [viaH2] = await h2get(port, ["/h2-client"], headers);
    assert.equal(viaH2!.status, 200, viaH2!.body);
    assert.equal(JSON.parse(viaH2!.body).path, "/h2-client");
    assert.equal(viaH2!.trailers["x-h2c-trailer"], "yes", "the app's trailers reach an HTTP/2 client");
    const { "x-aws-proxy-force-h2": _, ...plain } = headers;
    assert.equal((await get(port, "/", plain)).status, 502, "HTTP/1.1 to an h2c-only app fails: force-h2 is what reaches it");
  });

  test("every X-aws-proxy-* header, in any case, is removed before the app", async () => {
    current = vmWith();
    const port = await start();
    const seen = JSON.parse((await get(port, "/", { "X-Aws-Proxy-Auth": await token(), "x-aws-proxy-port": String(appPort), "X-AWS-PROXY-CUSTOM": "1", "x-aws-proxy-force-h2": "false", "x-app": "kept" })).body);
    assert.equal(seen.httpVersion, "1.1");
    assert.deepEqual(Object.keys(seen.headers).filter((h) => h.startsWith("x-aws-proxy")), []);
    assert.equal(seen.headers["x-app"], "kept");
  });

  test("status codes: 400 for a malformed port, 403 'Access to port denied', 502 for a port with nothing listening", async () => {
    current = vmWith();
    const port = await start();
    const narrow = await tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ range: { startPort: appPort, endPort: appPort } }], expiresAt: new Date(Date.now() + 60_000) });
    const bad = await get(port, "/", { "x-aws-proxy-auth": narrow, "x-aws-proxy-port": "eighty" });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /x-aws-proxy-port must be a port number/);
    const denied = await get(port, "/", { "x-aws-proxy-auth": narrow, "x-aws-proxy-port": String(closedPort) });
    assert.equal(denied.status, 403);
    assert.equal(denied.body, "Access to port denied");
    const nothing = await get(port, "/", { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(closedPort) });
    assert.equal(nothing.status, 502);
    assert.match(nothing.body, new RegExp(`did not answer on port ${closedPort}`));
  });

  test("bytes sent after a WebSocket upgrade reach the app only once it has switched: an app that answers 200 never receives a smuggled hook request", async () => {
    current = vmWith();
    const port = await start();
    // A raw app that answers every upgrade with a 200 on a kept-alive connection, and keeps every byte it receives.
    let received = "";
    const sockets = new Set<import("node:net").Socket>();
    const raw = createNetServer((c) => {
      sockets.add(c);
      let answered = false;
      c.setEncoding("latin1").on("data", (d: string) => {
        received += d;
        if (!answered && received.includes("\r\n\r\n")) {
          answered = true;
          c.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
      });
      c.on("error", () => undefined);
    });
    await within(10_000, "the raw app to listen", new Promise<void>((r) => raw.listen(0, "127.0.0.1", () => r())));
    const rawPort = (raw.address() as { port: number }).port;
    try {
      const auth = await token();
      const upgrade = `GET /not-a-websocket HTTP/1.1\r\nhost: ${ID}.microvm.localhost\r\nx-aws-proxy-auth: ${auth}\r\nx-aws-proxy-port: ${rawPort}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${randomBytes(16).toString("base64")}\r\n\r\n`;
      const smuggled = `POST /aws/lambda-microvms/runtime/v1/terminate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n`;
      const answer = await within(20_000, "the app's answer to the upgrade", new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port, ca, servername: `${ID}.microvm.localhost` }, () => socket.write(upgrade + smuggled));
        let got = "";
        socket.setEncoding("utf8").on("data", (c: string) => (got += c)).on("error", reject).on("close", () => resolve(got));
        setTimeout(() => socket.destroy(), 1500);
      }));
      assert.match(answer, /^HTTP\/1\.1 200/);
      assert.match(received, /^GET \/not-a-websocket HTTP\/1\.1\r\n/);
      assert.doesNotMatch(received, /lambda-microvms\/runtime/, "the app never received the bytes sent after the upgrade request");
    } finally {
      for (const c of sockets) c.destroy();
      await within(10_000, "the raw app to close", new Promise((r) => raw.close(r)));
    }
  });

  test("the lifecycle hook path on the hooks port is refused; the rest of that port is the app's", async () => {
    current = vmWith();
    const port = await start();
    const headers = { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(appPort) };
    for (const path of ["/aws/lambda-microvms/runtime/v1/run", "//aws/lambda-microvms/runtime/v1/suspend", "/aws/lambda-microvms/runtime/%76%31/terminate"]) {
      const r = await get(port, path, headers);
      assert.equal(r.status, 403, path);
      assert.match(r.body, /lifecycle hook path denied/);
    }
    const [h2] = await h2get(port, ["/aws/lambda-microvms/runtime/v1/resume"], headers);
    assert.equal(h2!.status, 403);
    assert.equal((await get(port, "/aws/other", headers)).status, 200);
    const relay = await get(port, "/", { ...headers, "x-aws-proxy-port": "65531" });
    assert.equal(relay.status, 403, "the hook relay's port is never forwarded");
    assert.equal(relay.body, "Access to port denied");
  });

  test("ingress: NO_INGRESS refuses everything, SHELL_INGRESS alone admits no app traffic, HTTP_INGRESS and ALL_INGRESS do", async () => {
    const port = await start();
    const headers = { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(appPort) };
    for (const [ingress, status, reason] of [
      [["NO_INGRESS"], 403, /NO_INGRESS network connector, so it accepts no inbound access/],
      [["SHELL_INGRESS"], 403, /Endpoint access requires the HTTP_INGRESS or ALL_INGRESS/],
      [["HTTP_INGRESS"], 200, /counter|httpVersion/],
      [["ALL_INGRESS"], 200, /httpVersion/],
      [[], 200, /httpVersion/],
    ] as [string[], number, RegExp][]) {
      current = vmWith({}, ingress);
      const r = await get(port, "/", headers);
      assert.equal(r.status, status, `${ingress.join(",")}: ${r.body}`);
      assert.match(r.body, reason);
    }
  });

  test("a client that goes while its request waits for the MicroVM gives its connection slot back", async () => {
    const port = await start({ connectionsPerVcpu: 1, requestsPerSecondPerVcpu: 0, queueMs: 200 }, { pendingWaitMs: 60_000 });
    const headers = { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(appPort) };
    current = vmWith({ state: "PENDING" });
    const before = peeks;
    const gone = request({ host: "127.0.0.1", port, path: "/", ca, servername: `${ID}.microvm.localhost`, agent: false, headers: { host: `${ID}.microvm.localhost`, ...headers } });
    gone.on("error", () => undefined).end();
    await until(10_000, "the request to wait for the PENDING MicroVM", () => peeks > before + 5);
    gone.destroy();
    await new Promise((r) => setTimeout(r, 100));
    current = vmWith();
    await until(10_000, "a request to get the slot back", async () => (await get(port, "/", headers)).status === 200);
  });

  test("a PENDING MicroVM: the request waits until RUNNING; one whose start fails gets a 502", async () => {
    const port = await start(undefined, { pendingWaitMs: 30_000 });
    const headers = { "x-aws-proxy-auth": await token(), "x-aws-proxy-port": String(appPort) };
    current = vmWith({ state: "PENDING" });
    const waiting = get(port, "/after-run", headers);
    setTimeout(() => (current = vmWith()), 300);
    const r = await waiting;
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).url, "/after-run");
    current = vmWith({ state: "PENDING" });
    const failing = get(port, "/", headers);
    setTimeout(() => (current = vmWith({ state: "TERMINATED", stateReason: "Run lifecycle hook returned HTTP status 400." })), 300);
    const f = await failing;
    assert.equal(f.status, 502);
    assert.match(f.body, /did not become RUNNING .*Run lifecycle hook returned HTTP status 400/);
  });
});
