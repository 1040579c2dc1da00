// The endpoint proxy with real clients against a real app in real gVisor
// MicroVMs: HTTP/1.1 keep-alive, server-sent events, a streamed upload, an
// upload the app refuses before reading it, WebSockets as a browser opens them
// (port and token in subprotocols) to a Node and a Python app, gRPC
// bidirectional streaming over HTTP/2 with trailers, X-aws-proxy-force-h2 to
// an h2c app, the X-aws-proxy-* namespace stripped, every 400, 403, 429 and
// 502, range and allPorts tokens, the hook path refused, ingress connectors,
// traffic held until a PENDING MicroVM runs, auto-resume, metrics, and the
// shell ingress driving a real PTY.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect as h2connect } from "node:http2";
import { request as httpsRequest, Agent } from "node:https";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  CreateMicrovmAuthTokenCommand, CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, RunMicrovmCommand, SuspendMicrovmCommand, TerminateMicrovmCommand,
} from "@aws-sdk/client-lambda-microvms";
import WebSocket from "ws";
import { localhostLookup } from "../../src/cli/shell-command.js";
import { MicrovmTokens } from "../../src/proxy/index.js";
import { deriveKey, serverKey } from "../../src/server/data-dir.js";
import { BASE_IMAGE_CACHE } from "../support/artifacts.js";
import { buildDataPlaneImage } from "../support/dataplane-app.js";
import { within } from "../support/deadline.js";
import { eventually, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { checkHangUp, checkServiceShell, openServiceShell } from "../support/service-shell.js";
import { h2Upload, sendThenRead } from "../support/uploads.js";

const DOMAIN = "microvm.localhost";
const connector = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const SHELL = connector("SHELL_INGRESS");
// An endpoint token needs HTTP_INGRESS (or ALL_INGRESS), a shell token SHELL_INGRESS: these MicroVMs take both.
const HTTP = "arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS";

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe("the endpoint proxy", { timeout: 900_000 }, () => {
  let t: TestPlatform;
  let ca: Buffer;
  let port: number;
  let agent: Agent;

  /** An HTTPS request through the proxy, to the MicroVM named in the Host (resolved to loopback, like curl --connect-to). */
  const call = (id: string, path: string, headers: Record<string, string> = {}, opts: { method?: string; body?: Readable | string } = {}): Promise<Answer> =>
    within(120_000, `an answer to ${opts.method ?? "GET"} ${path} from ${id} through the proxy`, new Promise((resolve, reject) => {
      const req = httpsRequest({ host: "127.0.0.1", port, servername: `${id}.${DOMAIN}`, path, method: opts.method ?? "GET", ca, agent, headers: { host: `${id}.${DOMAIN}:${port}`, ...headers } }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on("error", reject);
      if (opts.body instanceof Readable) opts.body.pipe(req);
      else req.end(opts.body);
    }));

  /** A WebSocket to the MicroVM's endpoint by its name, resolved to loopback. */
  const wsTo = (id: string, path: string, protocols: string[], headers: Record<string, string> = {}) =>
    new WebSocket(`wss://${id}.${DOMAIN}:${port}${path}`, protocols, { ca, headers, lookup: localhostLookup as never });

  const token = async (id: string, allowedPorts: object[] = [{ port: 8080 }]) =>
    (await t.client.send(new CreateMicrovmAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5, allowedPorts: allowedPorts as never }))).authToken!["X-aws-proxy-auth"]!;
  const state = async (id: string) => (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state;
  const until = (id: string, want: string) => eventually(async () => ((await state(id)) === want ? true : undefined), `${id} to be ${want}`, 120_000);
  const runPending = async (extra: Record<string, unknown> = {}) =>
    (await t.client.send(new RunMicrovmCommand({ imageIdentifier: "arn:aws:lambda:us-east-1:000000000000:microvm-image:dataplane", ...extra }))).microvmId!;
  const run = async (extra: Record<string, unknown> = {}) => {
    const microvmId = await runPending(extra);
    await until(microvmId, "RUNNING");
    return microvmId;
  };
  /** A token made with the server's key, as one minted before a rule that would refuse it now. */
  const keyToken = async (id: string) =>
    new MicrovmTokens(deriveKey(serverKey(t.dataDir), "microvm-tokens")).issue({ microvmId: id, kind: "endpoint", allowedPorts: [{ port: 8080 }], expiresAt: new Date(Date.now() + 300_000) });

  let vm: string;
  before(async () => {
    t = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE, endpointPort: 0 });
    port = t.platform.endpointPort;
    ca = readFileSync(join(t.dataDir, "tls", "ca.pem"));
    agent = new Agent({ keepAlive: true, ca });
    await buildDataPlaneImage(t, "dataplane");
    vm = await run({ ingressNetworkConnectors: [HTTP, SHELL] });
  });
  after(async () => {
    agent.destroy();
    await t.stop();
  });

  test("RunMicrovm's endpoint is https://<id>.microvm.localhost:<port>, and a token opens it; the app never sees the token", async () => {
    const got = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: vm }));
    assert.equal(got.endpoint, `https://${vm}.${DOMAIN}:${port}`);
    const tok = await token(vm);
    const first = await call(vm, "/", { "x-aws-proxy-auth": tok });
    assert.equal(first.status, 200, first.body);
    const answer = JSON.parse(first.body);
    assert.equal(answer.headers["x-aws-proxy-auth"], undefined, "the token is stripped");
    assert.equal(answer.headers["x-forwarded-proto"], "https");
    const second = JSON.parse((await call(vm, "/", { "x-aws-proxy-auth": tok })).body);
    assert.equal(second.counter, answer.counter + 1);
  });

  test("a request whose Host names no MicroVM is routed by its token", async () => {
    const tok = await token(vm);
    const res = await within(30_000, "an answer to a request routed by its token", new Promise<number>((resolve, reject) => {
      httpsRequest({ host: "127.0.0.1", port, path: "/", ca, headers: { "x-aws-proxy-auth": tok } }, (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      }).on("error", reject).end();
    }));
    assert.equal(res, 200);
  });

  test("every bad token gets a 403 with a reason and never reaches the app", async () => {
    const before = JSON.parse((await call(vm, "/", { "x-aws-proxy-auth": await token(vm) })).body).counter;
    const key = deriveKey(serverKey(t.dataDir), "microvm-tokens");
    const expired = await new MicrovmTokens(key).issue({ microvmId: vm, kind: "endpoint", allowedPorts: [{ port: 8080 }], expiresAt: new Date(Date.now() - 1000) });
    const forged = await new MicrovmTokens(randomBytes(32)).issue({ microvmId: vm, kind: "endpoint", allowedPorts: [{ allPorts: {} }], expiresAt: new Date(Date.now() + 60_000) });
    const other = await run();
    const cases: [string, Record<string, string>, RegExp][] = [
      ["missing", {}, /Missing token/],
      ["expired", { "x-aws-proxy-auth": expired }, /expired/],
      ["forged", { "x-aws-proxy-auth": forged }, /Invalid token/],
      ["another MicroVM's", { "x-aws-proxy-auth": await token(other) }, /is for MicroVM/],
      ["a port it does not allow", { "x-aws-proxy-auth": await token(vm), "x-aws-proxy-port": "9001" }, /^Access to port denied$/],
    ];
    for (const [what, headers, reason] of cases) {
      const res = await call(vm, "/", headers);
      assert.equal(res.status, 403, `${what}: ${res.body}`);
      assert.match(res.body, reason, what);
    }
    // A plain request with a shell token gets a 502, as it does from the service.
    const shellTokenGet = await call(vm, "/", { "x-aws-proxy-auth": (await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: vm, expirationInMinutes: 5 }))).authToken!["X-aws-proxy-auth"]! });
    assert.equal(shellTokenGet.status, 502, shellTokenGet.body);
    assert.match(shellTokenGet.body, /opens only the shell .*wss:\/\/<endpoint>\/shell.*create-microvm-auth-token/);
    const otherToken = await token(other);
    assert.equal((await call(other, "/", { "x-aws-proxy-auth": otherToken })).status, 200);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: other }));
    const afterTerminate = await call(other, "/", { "x-aws-proxy-auth": otherToken });
    assert.equal(afterTerminate.status, 403, "a terminated MicroVM's token stops working at once");
    assert.match(afterTerminate.body, /terminated/);
    const now = JSON.parse((await call(vm, "/", { "x-aws-proxy-auth": await token(vm) })).body).counter;
    assert.equal(now, before + 1, "none of the refused requests reached the app");
  });

  test("server-sent events stream through as they are written", async () => {
    const tok = await token(vm);
    const arrivals: number[] = [];
    const started = Date.now();
    const body = await within(30_000, "the five server-sent events and the stream's end", new Promise<string>((resolve, reject) => {
      httpsRequest({ host: "127.0.0.1", port, path: "/events", ca, headers: { host: `${vm}.${DOMAIN}`, "x-aws-proxy-auth": tok } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
          arrivals.push(Date.now() - started);
        });
        res.on("end", () => resolve(text));
      }).on("error", reject).end();
    }));
    assert.equal(body.match(/data: event \d/g)?.length, 5);
    assert.ok(arrivals.length >= 3, `events arrived in ${arrivals.length} chunks: the proxy must not buffer them`);
  });

  test("a 64 MB upload streams through and arrives whole", async () => {
    const tok = await token(vm);
    const hash = createHash("sha256");
    let sent = 0;
    const chunks = 64;
    const body = new Readable({
      read() {
        if (sent === chunks) return this.push(null);
        const chunk = randomBytes(1024 * 1024);
        hash.update(chunk);
        sent++;
        this.push(chunk);
      },
    });
    const res = await call(vm, "/upload", { "x-aws-proxy-auth": tok, "content-type": "application/octet-stream" }, { method: "POST", body });
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(JSON.parse(res.body), { bytes: chunks * 1024 * 1024, sha256: hash.digest("hex") });
  });

  // The app refuses before reading; a client that sends its whole body before it reads waited for
  // the MicroVM's idle suspension (60 s), and HTTP/2 streams too, before the proxy stopped piping.
  test("an upload the app refuses before reading it gets its 413 at once, over HTTP/1.1 and HTTP/2", async () => {
    const target = { port, ca, host: `${vm}.${DOMAIN}`, path: "/too-large", headers: { "x-aws-proxy-auth": await token(vm) } };
    assert.deepEqual(await within(30_000, "the refused HTTP/1.1 upload", sendThenRead(target)), { status: 413, body: "too large\n" });
    assert.deepEqual(await within(30_000, "the refused HTTP/2 upload", h2Upload(target)), { status: 413, body: "too large\n" });
    const after = await call(vm, "/", { "x-aws-proxy-auth": target.headers["x-aws-proxy-auth"] });
    assert.equal(after.status, 200, "the app still answers");
  });

  // As a browser opens them: no custom headers, only subprotocols.
  const openWs = (id: string, protocols: string[]) => {
    const ws = wsTo(id, "/", protocols);
    const messages: string[] = [];
    ws.on("message", (d) => messages.push(d.toString()));
    return { ws, messages, opened: within(20_000, "the WebSocket to open or be refused", new Promise<void>((resolve, reject) => ws.once("open", () => resolve()).once("error", reject))) };
  };

  for (const [lang, appPort] of [["Node", 9001], ["Python", 9002]] as const) {
    test(`WebSockets to a ${lang} app: base, token and port in subprotocols; the app's subprotocol, or lambda-microvms, answered; lmvm's entries stripped`, async () => {
      const tok = await token(vm, [{ port: 8080 }, { port: appPort }]);
      const ours = ["lambda-microvms", `lambda-microvms.authentication.${tok}`, `lambda-microvms.port.${appPort}`];
      const a = openWs(vm, [...ours, "chat"]);
      await a.opened;
      assert.equal(a.ws.protocol, "chat", "the app's choice of subprotocol reaches the client");
      await eventually(async () => (a.messages.length ? true : undefined), "the app's hello");
      const hello = JSON.parse(a.messages[0]!);
      assert.equal(hello.hello, lang.toLowerCase());
      assert.equal(hello.offered, "chat", "lmvm's subprotocol entries are removed before the app");
      assert.deepEqual(hello.proxyHeaders, []);
      a.ws.send("ping");
      await eventually(async () => (a.messages.includes("echo:ping") ? true : undefined), "the echo");
      a.ws.close();

      const b = openWs(vm, ours);
      await b.opened;
      assert.equal(b.ws.protocol, "lambda-microvms", "with no app subprotocol, the proxy answers lambda-microvms");
      await eventually(async () => (b.messages.length ? true : undefined), "the app's hello");
      assert.equal(JSON.parse(b.messages[0]!).offered, null, "the app was offered nothing");
      b.ws.send("pong");
      await eventually(async () => (b.messages.includes("echo:pong") ? true : undefined), "the echo");
      b.ws.close();

      for (const [what, protocols, status] of [
        ["no base subprotocol", [`lambda-microvms.authentication.${tok}`, `lambda-microvms.port.${appPort}`], 400],
        ["a malformed port", ["lambda-microvms", `lambda-microvms.authentication.${tok}`, "lambda-microvms.port.http"], 400],
        ["no token", ["lambda-microvms", `lambda-microvms.port.${appPort}`], 403],
        ["a port outside the token", ["lambda-microvms", `lambda-microvms.authentication.${tok}`, "lambda-microvms.port.9003"], 403],
      ] as [string, string[], number][]) {
        const refused = openWs(vm, protocols);
        const err = await refused.opened.then(() => undefined, (e: Error) => e);
        assert.match(String(err?.message), new RegExp(`Unexpected server response: ${status}`), what);
      }
    });
  }

  for (const [lang, appPort] of [["Node", 8080], ["Python", 9002]] as const) {
    test(`every X-aws-proxy-* header, in any case, is removed before a ${lang} app`, async () => {
      const res = await call(vm, "/", { "X-Aws-Proxy-Auth": await token(vm, [{ port: appPort }]), "x-aws-proxy-port": String(appPort), "X-AWS-PROXY-CUSTOM": "1", "x-aws-proxy-force-h2": "no", "x-app": "kept" });
      assert.equal(res.status, 200, res.body);
      const headers = JSON.parse(res.body).headers as Record<string, string>;
      assert.deepEqual(Object.keys(headers).filter((h) => h.toLowerCase().startsWith("x-aws-proxy")), []);
      assert.equal(headers["x-app"], "kept");
    });
  }

  test("X-aws-proxy-force-h2: true reaches an h2c app from HTTP/1.1 and HTTP/2 clients, trailers included; without it, a 502", async () => {
    const tok = await token(vm, [{ port: 50051 }]);
    const headers = { "x-aws-proxy-auth": tok, "x-aws-proxy-port": "50051", "x-aws-proxy-force-h2": "true" };
    const viaH1 = await call(vm, "/over-h1", headers);
    assert.equal(viaH1.status, 200, viaH1.body);
    const seen = JSON.parse(viaH1.body);
    assert.deepEqual([seen.httpVersion, seen.path], ["2.0", "/over-h1"]);
    assert.deepEqual(Object.keys(seen.headers).filter((h: string) => h.startsWith("x-aws-proxy")), []);
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: `${vm}.${DOMAIN}` });
    try {
      const viaH2 = await within(20_000, "an answer over HTTP/2 to h2c", new Promise<{ body: string; trailers: Record<string, unknown> }>((resolve, reject) => {
        const req = session.request({ ":path": "/over-h2", ":authority": `${vm}.${DOMAIN}:${port}`, ...headers });
        let body = "";
        let trailers = {};
        req.setEncoding("utf8");
        req.on("data", (c: string) => (body += c));
        req.on("trailers", (t) => (trailers = t));
        req.on("end", () => resolve({ body, trailers }));
        req.on("error", reject);
        req.end();
      }));
      assert.equal(JSON.parse(viaH2.body).path, "/over-h2");
      assert.equal(viaH2.trailers["x-h2c-trailer"], "yes");
    } finally {
      session.close();
    }
    const { "x-aws-proxy-force-h2": _, ...plain } = headers;
    assert.equal((await call(vm, "/", plain)).status, 502, "the app speaks h2c only: HTTP/1.1 to it fails");
  });

  test("status codes: 400 for a malformed X-aws-proxy-port, 502 for an allowed port with nothing listening; range and allPorts tokens", async () => {
    const bad = await call(vm, "/", { "x-aws-proxy-auth": await token(vm), "x-aws-proxy-port": "80a" });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /x-aws-proxy-port must be a port number/);
    const range = await token(vm, [{ range: { startPort: 9000, endPort: 9002 } }]);
    assert.equal((await call(vm, "/", { "x-aws-proxy-auth": range, "x-aws-proxy-port": "9002" })).status, 200, "a port inside the range");
    const outside = await call(vm, "/", { "x-aws-proxy-auth": range, "x-aws-proxy-port": "8080" });
    assert.deepEqual([outside.status, outside.body], [403, "Access to port denied"]);
    const all = await token(vm, [{ allPorts: {} }]);
    assert.equal((await call(vm, "/", { "x-aws-proxy-auth": all })).status, 200, "allPorts: 8080");
    assert.equal((await call(vm, "/", { "x-aws-proxy-auth": all, "x-aws-proxy-port": "9002" })).status, 200, "allPorts: 9002");
    const nothing = await call(vm, "/", { "x-aws-proxy-auth": all, "x-aws-proxy-port": "7777" });
    assert.equal(nothing.status, 502);
    assert.match(nothing.body, /did not answer on port 7777/);
    const relay = await call(vm, "/", { "x-aws-proxy-auth": all, "x-aws-proxy-port": "65531" });
    assert.deepEqual([relay.status, relay.body], [403, "Access to port denied"], "lmvm's hook relay port is never reachable");
  });

  test("the lifecycle hook path on the hooks port never reaches the app", async () => {
    const tok = await token(vm);
    const before = JSON.parse((await call(vm, "/", { "x-aws-proxy-auth": tok })).body).counter;
    for (const path of ["/aws/lambda-microvms/runtime/v1/run", "/aws/lambda-microvms/runtime/v1/suspend", "//aws/lambda-microvms/runtime/v1/../v1/terminate", "/aws/lambda-microvms/runtime/v1/%72esume"]) {
      const res = await call(vm, path, { "x-aws-proxy-auth": tok }, { method: "POST", body: "{}" });
      assert.equal(res.status, 403, path);
      assert.match(res.body, /lifecycle hook path denied/);
    }
    const after = JSON.parse((await call(vm, "/", { "x-aws-proxy-auth": tok })).body).counter;
    assert.equal(after, before + 1, "none of them reached the app");
  });

  test("past 10 requests per second per vCPU of its size's peak, a 429 with Retry-After; counted in the metrics", async () => {
    const tok = await token(vm);
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: `${vm}.${DOMAIN}` });
    try {
      // 120 requests sent together on one HTTP/2 connection, to a MicroVM of the default size
      // (2 GB baseline, peaking at 4 vCPUs: 40 per second, a burst of 40).
      const answers = await within(60_000, "120 answers over HTTP/2", Promise.all(Array.from({ length: 120 }, () => new Promise<{ status: number; retryAfter: unknown }>((resolve, reject) => {
        const req = session.request({ ":path": "/", ":authority": `${vm}.${DOMAIN}:${port}`, "x-aws-proxy-auth": tok });
        req.on("response", (h) => resolve({ status: Number(h[":status"]), retryAfter: h["retry-after"] }));
        req.on("error", reject);
        req.resume();
        req.end();
      }))));
      const limited = answers.filter((a) => a.status === 429);
      assert.ok(answers.some((a) => a.status === 200));
      assert.ok(limited.length > 0, `statuses: ${answers.map((a) => a.status).join(",")}`);
      assert.ok(Number(limited[0]!.retryAfter) >= 1);
    } finally {
      session.close();
    }
    const text = await (await fetch(`${t.platform.url}/metrics`)).text();
    assert.match(text, /lmvm_proxy_requests_total\{status="429"\} [1-9]/);
    // The next tests use this MicroVM: let its bucket fill again (40 a second).
    await new Promise((r) => setTimeout(r, 1500));
  });

  test("ingress connectors: SHELL_INGRESS alone and NO_INGRESS admit no app traffic; ALL_INGRESS does, held until the MicroVM is RUNNING", async () => {
    const shellOnly = await run({ ingressNetworkConnectors: [SHELL] });
    const a = await call(shellOnly, "/", { "x-aws-proxy-auth": await keyToken(shellOnly) });
    assert.equal(a.status, 403);
    assert.match(a.body, /Endpoint access requires the HTTP_INGRESS or ALL_INGRESS/);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: shellOnly }));

    const closed = await run({ ingressNetworkConnectors: [connector("NO_INGRESS")] });
    const b = await call(closed, "/", { "x-aws-proxy-auth": await keyToken(closed) });
    assert.equal(b.status, 403);
    assert.match(b.body, /NO_INGRESS network connector, so it accepts no inbound access/);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: closed }));

    // Traffic gating: a request sent while the MicroVM is PENDING waits for its start, then passes.
    const open = await runPending({ ingressNetworkConnectors: [connector("ALL_INGRESS")] });
    const early = await call(open, "/", { "x-aws-proxy-auth": await keyToken(open) });
    assert.equal(early.status, 200, early.body);
    assert.equal(await state(open), "RUNNING");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: open }));
  });

  test("gRPC: bidirectional streaming over HTTP/2 with trailers, and a trailers-only error", async () => {
    const tok = await token(vm, [{ port: 50051 }]);
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(ca), {
      "grpc.ssl_target_name_override": `${vm}.${DOMAIN}`,
      "grpc.default_authority": `${vm}.${DOMAIN}:${port}`,
    });
    const meta = new grpc.Metadata();
    meta.set("x-aws-proxy-auth", tok);
    meta.set("x-aws-proxy-port", "50051");
    const ser = (m: { text: string }) => Buffer.from(JSON.stringify(m));
    const de = (b: Buffer) => JSON.parse(b.toString()) as { text: string };
    try {
      const call = client.makeBidiStreamRequest("/lmvm.test.Echo/Chat", ser, de, meta);
      const got: string[] = [];
      let trailers: grpc.Metadata | undefined;
      call.on("data", (m: { text: string }) => got.push(m.text));
      call.on("status", (s: grpc.StatusObject) => (trailers = s.metadata));
      const done = new Promise<void>((resolve, reject) => call.on("end", resolve).on("error", reject));
      for (const text of ["one", "two", "three"]) {
        call.write({ text });
        // Each answer arrives while the stream is still open: it is relayed, not buffered.
        await eventually(async () => (got.includes(`echo:${text}`) ? true : undefined), `echo of ${text} before the stream ends`);
      }
      call.end();
      await within(20_000, "the gRPC stream to end", done);
      assert.deepEqual(got, ["echo:one", "echo:two", "echo:three"]);
      assert.deepEqual(trailers?.get("x-served-by"), ["app"], "the app's trailers reach the client");

      const failed = await within(20_000, "the failing gRPC call's answer", new Promise<grpc.ServiceError>((resolve) => {
        client.makeUnaryRequest("/lmvm.test.Echo/Fail", ser, de, { text: "x" }, meta, (e) => resolve(e!));
      }));
      assert.equal(failed.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(failed.details, "bad request");
    } finally {
      client.close();
    }
  });

  test("plain HTTP/2 requests reach an HTTP/1.1 app", async () => {
    const tok = await token(vm);
    const session = h2connect(`https://127.0.0.1:${port}`, { ca, servername: `${vm}.${DOMAIN}` });
    try {
      const body = await within(20_000, "an answer over HTTP/2", new Promise<string>((resolve, reject) => {
        const req = session.request({ ":path": "/", ":authority": `${vm}.${DOMAIN}:${port}`, "x-aws-proxy-auth": tok });
        let text = "";
        req.setEncoding("utf8");
        req.on("data", (c: string) => (text += c));
        req.on("end", () => resolve(text));
        req.on("error", reject);
        req.end();
      }));
      assert.ok(JSON.parse(body).counter > 0);
    } finally {
      session.close();
    }
  });

  test("lmvm's exec protocol: a real PTY with resize and exit status, a command with `exec`, closed on suspend, back after auto-resume", async () => {
    const shellVm = await run({ ingressNetworkConnectors: [HTTP, SHELL], idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true } });
    const shellToken = async () => (await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: shellVm, expirationInMinutes: 5 }))).authToken!["X-aws-proxy-auth"]!;
    /** A shell, its token in the header (as lmvm shell sends it) or, as a browser must, in subprotocols. */
    const openShell = async (query: string, browser = false) => {
      const ws = browser
        ? wsTo(shellVm, `/shell?${query}`, ["lambda-microvms", `lambda-microvms.authentication.${await shellToken()}`, "lmvm.exec.v1"])
        : wsTo(shellVm, `/shell?${query}`, ["lambda-microvms", "lmvm.exec.v1"], { "x-aws-proxy-auth": await shellToken() });
      let out = "";
      let exit: number | undefined;
      let closed: { code: number; reason: string } | undefined;
      ws.on("message", (d: Buffer, binary: boolean) => {
        if (binary) out += d.subarray(1).toString();
        else if (JSON.parse(d.toString()).type === "exit") exit = JSON.parse(d.toString()).code;
      });
      ws.on("close", (code, reason) => (closed = { code, reason: reason.toString() }));
      await within(20_000, "the shell's WebSocket to open", new Promise<void>((resolve, reject) => ws.once("open", () => resolve()).once("error", reject)));
      const type = (s: string) => ws.send(Buffer.concat([Buffer.from([0]), Buffer.from(s)]));
      return { ws, type, out: () => out, exit: () => exit, closed: () => closed };
    };

    const sh = await openShell("cols=100&rows=30");
    sh.type("stty size; hostname\r");
    await eventually(async () => (sh.out().includes("30 100") && sh.out().includes(shellVm) ? true : undefined), "stty size and hostname in the terminal", 20_000);
    sh.ws.send(JSON.stringify({ type: "resize", cols: 120, rows: 40 }));
    await new Promise((r) => setTimeout(r, 200));
    sh.type("stty size; exit 3\r");
    await eventually(async () => (sh.closed() ? true : undefined), "the shell to end", 20_000);
    assert.match(sh.out(), /40 120/);
    assert.equal(sh.exit(), 3);
    assert.equal(sh.closed()?.code, 1000);

    const second = await openShell("cols=80&rows=24", true);
    second.type("echo ready\r");
    await eventually(async () => (second.out().includes("ready") ? true : undefined), "a second shell, opened with its token in subprotocols");
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: shellVm }));
    await eventually(async () => (second.closed() ? true : undefined), "the shell to be closed by the suspend", 60_000);
    assert.equal(second.closed()?.code, 4001);
    assert.match(second.closed()!.reason, /suspend/i);
    await until(shellVm, "SUSPENDED");

    // A request to the suspended MicroVM resumes it (auto-resume), then shells work again.
    const res = await call(shellVm, "/", { "x-aws-proxy-auth": await token(shellVm) });
    assert.equal(res.status, 200, res.body);
    assert.equal(await state(shellVm), "RUNNING");
    const third = await openShell("tty=0&command=sh&command=-c&command=echo%20out;%20echo%20err%201>%262;%20exit%205");
    await eventually(async () => (third.closed() ? true : undefined), "the command to end", 20_000);
    assert.equal(third.exit(), 5);
    assert.match(third.out(), /out/);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: shellVm }));
  });

  test("the service's shell protocol, subprotocols only, in the Node app's MicroVM: session_init, a root login shell on /dev/pts with TERM=xterm, resize, text typed in, close 1000 on exit; 1001 on suspend; only at /shell", async () => {
    const shellVm = await run({ ingressNetworkConnectors: [SHELL] });
    const endpoint = (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: shellVm }))).endpoint!;
    const shellToken = async () => (await t.client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: shellVm, expirationInMinutes: 5 }))).authToken!["X-aws-proxy-auth"]!;
    await checkServiceShell(await openServiceShell(endpoint, await shellToken(), ca));
    await checkHangUp(async () => openServiceShell(endpoint, await shellToken(), ca));

    const elsewhere = await openServiceShell(endpoint, await shellToken(), ca, { path: "/" }).then(() => undefined, (e: Error) => e);
    assert.match(String(elsewhere?.message), /404/, "a shell token opens only /shell");

    const open = await openServiceShell(endpoint, await shellToken(), ca);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: shellVm }));
    const closed = await within(60_000, "the shell to be closed by the suspend", open.closed);
    assert.equal(closed.code, 1001, "going away");
    assert.match(closed.reason, /suspend/i);
    await until(shellVm, "SUSPENDED");
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: shellVm }));
  });

  test("auto-resume: a request to a suspended MicroVM resumes it with state kept; without auto-resume, a 502", async () => {
    const resumable = await run({ idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled: true } });
    const tok = await token(resumable);
    const before = JSON.parse((await call(resumable, "/", { "x-aws-proxy-auth": tok })).body).counter;
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: resumable }));
    await until(resumable, "SUSPENDED");
    const res = await call(resumable, "/", { "x-aws-proxy-auth": tok });
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).counter, before + 1, "the app's memory survived suspend and auto-resume");

    const manual = await run();
    const manualToken = await token(manual);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: manual }));
    await until(manual, "SUSPENDED");
    const refused = await call(manual, "/", { "x-aws-proxy-auth": manualToken });
    assert.equal(refused.status, 502);
    assert.match(refused.body, /autoResumeEnabled off: resume it with resume-microvm/);
    for (const id of [resumable, manual]) await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  test("GET /metrics reports MicroVMs by state, runtime latencies, proxy requests by status and each MicroVM's network", async () => {
    const text = await (await fetch(`${t.platform.url}/metrics`)).text();
    assert.match(text, /lmvm_microvms\{state="RUNNING"\} \d+/);
    assert.match(text, /lmvm_builds\{state="SUCCESSFUL"\} 1/);
    assert.match(text, /lmvm_microvm_operation_seconds_count\{operation="run",outcome="ok"\} \d+/);
    assert.match(text, /lmvm_microvm_operation_seconds_count\{operation="resume",outcome="ok"\} \d+/);
    assert.match(text, /lmvm_proxy_requests_total\{status="200"\} \d+/);
    assert.match(text, /lmvm_proxy_requests_total\{status="403"\} \d+/);
    assert.match(text, /lmvm_proxy_bytes_total\{status="200",direction="in"\} \d+/);
    // The MicroVM's network, from its host veth: the endpoint's requests went in and its answers came out.
    const figure = (name: string, labels: string) => Number(new RegExp(`^${name}\\{${labels}\\} (\\d+)$`, "m").exec(text)?.[1]);
    assert.ok(figure("lmvm_microvm_network_bytes_total", `microvm="${vm}",direction="in"`) > 0, text);
    assert.ok(figure("lmvm_microvm_network_bytes_total", `microvm="${vm}",direction="out"`) > 0, text);
    assert.ok(Number.isInteger(figure("lmvm_microvm_egress_refused_packets_total", `microvm="${vm}"`)), text);
    assert.ok(Number.isInteger(figure("lmvm_microvm_dns_queries_total", `microvm="${vm}"`)), text);
  });
});
