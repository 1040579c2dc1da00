// The endpoint proxy's decisions, without sockets: which MicroVM, token and
// port a request names, what the app gets of its headers, and when a request
// is refused, waits, or resumes its MicroVM.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { Duplex } from "node:stream";
import type { Microvm } from "../../src/core/index.js";
import { admit, checkHookPath, checkIngress, reach, Refusal, type MicrovmDirectory } from "../../src/proxy/admission.js";
import { EndpointLimiter, microvmLimits, parseEndpointLimits } from "../../src/proxy/limits.js";
import { forwardedHeaders, microvmFromHost, platformSubprotocols, portOf, reachesHookPath, tokenOf } from "../../src/proxy/routing.js";
import { MicrovmTokens } from "../../src/proxy/tokens.js";

const ID = "microvm-0123456789abcdef0";
const OTHER = "microvm-00000000000000001";
const DOMAIN = "microvm.localhost";

describe("routing", () => {
  test("the Host's first label names the MicroVM, under the endpoint domain only", () => {
    assert.equal(microvmFromHost(`${ID}.${DOMAIN}:7643`, DOMAIN), ID);
    assert.equal(microvmFromHost(`${ID.toUpperCase()}.MICROVM.LOCALHOST`, DOMAIN), ID);
    assert.equal(microvmFromHost(`${ID}.example.com`, DOMAIN), undefined);
    assert.equal(microvmFromHost("127.0.0.1:7643", DOMAIN), undefined);
    assert.equal(microvmFromHost(`evil.${ID}.${DOMAIN}`, DOMAIN), undefined);
  });

  test("the token comes from the header, else from a WebSocket subprotocol entry", () => {
    assert.equal(tokenOf({ "x-aws-proxy-auth": "a.b.c" }), "a.b.c");
    const offered = platformSubprotocols({ "sec-websocket-protocol": "chat, lambda-microvms, lambda-microvms.authentication.x.y.z" });
    assert.equal(tokenOf({}, offered), "x.y.z");
    assert.deepEqual(offered.ours, ["lambda-microvms", "lambda-microvms.authentication.x.y.z"]);
    assert.deepEqual(offered.theirs, ["chat"]);
    assert.equal(tokenOf({}), undefined);
  });

  test("the platform's subprotocols need the base lambda-microvms, known names and one of each", () => {
    assert.throws(() => platformSubprotocols({ "sec-websocket-protocol": "lambda-microvms.authentication.x" }), /base subprotocol 'lambda-microvms'/);
    assert.throws(() => platformSubprotocols({ "sec-websocket-protocol": "lambda-microvms, lambda-microvms.auth.x" }), /Unknown WebSocket subprotocol/);
    assert.throws(() => platformSubprotocols({ "sec-websocket-protocol": "lambda-microvms, lambda-microvms.port.1, lambda-microvms.port.2" }), /offered twice/);
    assert.throws(() => platformSubprotocols({ "sec-websocket-protocol": "lambda-microvms, lambda-microvms.port." }), /no value/);
    assert.deepEqual(platformSubprotocols({ "sec-websocket-protocol": "chat, superchat" }), { ours: [], theirs: ["chat", "superchat"] });
  });

  test("the port: 8080 by default, the header, else the subprotocol; nonsense is explained", () => {
    assert.equal(portOf({}), 8080);
    assert.equal(portOf({ "x-aws-proxy-port": "9001" }), 9001);
    const ws = { "sec-websocket-protocol": "lambda-microvms, lambda-microvms.port.50051" };
    assert.equal(portOf(ws, platformSubprotocols(ws)), 50051);
    assert.equal(portOf({ ...ws, "x-aws-proxy-port": "9001" }, platformSubprotocols(ws)), 9001, "the header comes first");
    assert.match(String(portOf({ "x-aws-proxy-port": "70000" })), /1 to 65535/);
    assert.match(String(portOf({ "x-aws-proxy-port": "80; rm" })), /port number/);
    const bad = { "sec-websocket-protocol": "lambda-microvms, lambda-microvms.port.http" };
    assert.match(String(portOf(bad, platformSubprotocols(bad))), /lambda-microvms.port.<n> must be a port number/);
  });

  test("the hook path, however it is spelled, reaches the hooks", () => {
    const prefix = "/aws/lambda-microvms/runtime/v1/";
    for (const path of ["/aws/lambda-microvms/runtime/v1/run", "//aws/lambda-microvms/runtime/v1/run", "/AWS/Lambda-MicroVMs/runtime/v1/suspend", "/x/../aws/lambda-microvms/runtime/v1/resume?a=1",
      "/aws/%6Cambda-microvms/runtime/v1/run", "/aws/lambda-microvms%2Fruntime/v1/run", "/aws/lambda-microvms/runtime/v1", "/./aws/lambda-microvms/runtime/v1/terminate", "http://localhost:8080/aws/lambda-microvms/runtime/v1/run", "HTTPS://x/aws//lambda-microvms/runtime/v1/run", "\\aws\\lambda-microvms\\runtime\\v1\\run",
      // A stray or broken escape must not stop the decoding of the rest.
      "/%61ws/lambda-microvms/runtime/v1/x%/../run", "/%61ws/lambda-microvms/runtime/v1/run;%", "/%2561ws/lambda-microvms/runtime/v1/run%zz"]) {
      assert.ok(reachesHookPath(path, prefix), path);
    }
    for (const path of ["/", "/aws/lambda-microvms/other", "/api/aws/lambda-microvms/runtime/v1/run"]) assert.ok(!reachesHookPath(path, prefix), path);
  });

  test("the app never gets the platform's X-aws-proxy-* headers, whatever their case, nor hop-by-hop headers", () => {
    const out = forwardedHeaders({
      "x-aws-proxy-auth": "secret", "x-aws-proxy-port": "8080", "x-aws-proxy-force-h2": "true", "x-aws-proxy-anything": "x", "X-AWS-PROXY-SHOUT": "x",
      connection: "keep-alive, x-private", "x-private": "1",
      "transfer-encoding": "chunked", accept: "*/*", host: `${ID}.${DOMAIN}`, "x-forwarded-for": "10.0.0.9",
    }, { ip: "127.0.0.1", host: `${ID}.${DOMAIN}` });
    assert.deepEqual(out, { accept: "*/*", host: `${ID}.${DOMAIN}`, "x-forwarded-for": "10.0.0.9, 127.0.0.1", "x-forwarded-proto": "https", "x-forwarded-host": `${ID}.${DOMAIN}` });
  });
});

describe("admission", () => {
  const key = randomBytes(32);
  const tokens = new MicrovmTokens(key);
  const issue = (over: Partial<Parameters<MicrovmTokens["issue"]>[0]> = {}) =>
    tokens.issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ port: 8080 }, { range: { startPort: 9000, endPort: 9010 } }], expiresAt: new Date(Date.now() + 60_000), ...over });
  const refused = async (p: Promise<unknown>, status: number, reason: RegExp) => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof Refusal, `expected a refusal, got ${String(err)}`);
    assert.equal(err.status, status);
    assert.match(err.message, reason);
  };

  test("a good token passes, for the port it allows", async () => {
    const tok = await issue();
    assert.deepEqual(await admit(tokens, { host: `${ID}.${DOMAIN}`, "x-aws-proxy-auth": tok }, DOMAIN), { microvmId: ID, port: 8080, kind: "endpoint" });
    assert.equal((await admit(tokens, { "x-aws-proxy-auth": tok, "x-aws-proxy-port": "9005" }, DOMAIN)).port, 9005);
  });

  test("range and allPorts tokens admit the ports they name; the hook relay's port never", async () => {
    const range = await issue({ allowedPorts: [{ range: { startPort: 9000, endPort: 9010 } }] });
    for (const port of [9000, 9005, 9010]) assert.equal((await admit(tokens, { "x-aws-proxy-auth": range, "x-aws-proxy-port": String(port) }, DOMAIN)).port, port);
    for (const port of [8999, 9011, 8080]) await refused(admit(tokens, { "x-aws-proxy-auth": range, "x-aws-proxy-port": String(port) }, DOMAIN), 403, /^Access to port denied$/);
    const all = await issue({ allowedPorts: [{ allPorts: {} }] });
    for (const port of [1, 8080, 65535]) assert.equal((await admit(tokens, { "x-aws-proxy-auth": all, "x-aws-proxy-port": String(port) }, DOMAIN)).port, port);
    await refused(admit(tokens, { "x-aws-proxy-auth": all, "x-aws-proxy-port": "65531" }, DOMAIN), 403, /^Access to port denied$/);
  });

  test("a WebSocket: the token and port in subprotocols; malformed ones are a 400", async () => {
    const tok = await issue();
    const ok = await admit(tokens, { "sec-websocket-protocol": `lambda-microvms, lambda-microvms.authentication.${tok}, lambda-microvms.port.9001, chat` }, DOMAIN, true);
    assert.equal(ok.port, 9001);
    assert.deepEqual(ok.offered?.theirs, ["chat"]);
    await refused(admit(tokens, { "sec-websocket-protocol": `lambda-microvms.authentication.${tok}` }, DOMAIN, true), 400, /base subprotocol/);
    await refused(admit(tokens, { "sec-websocket-protocol": `lambda-microvms, lambda-microvms.authentication.${tok}, lambda-microvms.port.99999` }, DOMAIN, true), 400, /1 to 65535/);
    // Not a WebSocket: a subprotocol header means nothing.
    await refused(admit(tokens, { "sec-websocket-protocol": `lambda-microvms, lambda-microvms.authentication.${tok}` }, DOMAIN), 403, /Missing token/);
  });

  test("missing, expired, forged, other-MicroVM and wrong-port tokens are refused with a reason", async () => {
    await refused(admit(tokens, {}, DOMAIN), 403, /Missing token/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await issue({ expiresAt: new Date(Date.now() - 1000) }) }, DOMAIN), 403, /expired/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await new MicrovmTokens(randomBytes(32)).issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ allPorts: {} }], expiresAt: new Date(Date.now() + 60_000) }) }, DOMAIN), 403, /Invalid token/);
    await refused(admit(tokens, { "x-aws-proxy-auth": "garbage" }, DOMAIN), 403, /Invalid token/);
    await refused(admit(tokens, { host: `${OTHER}.${DOMAIN}`, "x-aws-proxy-auth": await issue() }, DOMAIN), 403, /is for MicroVM/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await issue(), "x-aws-proxy-port": "9011" }, DOMAIN), 403, /^Access to port denied$/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await issue(), "x-aws-proxy-port": "0" }, DOMAIN), 400, /1 to 65535/);
  });

  test("a token whose signature was altered is refused", async () => {
    const tok = await issue();
    const [h, p, s] = tok.split(".");
    const payload = JSON.parse(Buffer.from(p!, "base64url").toString());
    payload.sub = OTHER;
    const altered = [h, Buffer.from(JSON.stringify(payload)).toString("base64url"), s].join(".");
    await refused(admit(tokens, { "x-aws-proxy-auth": altered }, DOMAIN), 403, /Invalid token/);
  });
});

describe("reaching a MicroVM", () => {
  const vm = (state: Microvm["state"], autoResumeEnabled?: boolean): Microvm => ({
    id: ID, accountId: "000000000000", imageArn: "arn", imageVersion: "1.0", state, endpoint: "", startedAt: new Date(), updatedAt: new Date(),
    config: { ingressNetworkConnectors: [], egressNetworkConnectors: [], maximumDurationInSeconds: 3600, ...(autoResumeEnabled === undefined ? {} : { idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 60, autoResumeEnabled } }) },
  } as Microvm);
  const directory = (current: Microvm | undefined): MicrovmDirectory & { resumed: number } => {
    const d = {
      resumed: 0,
      imageConfig: async () => ({}),
      peek: () => current,
      resume: async () => {
        d.resumed++;
        current = { ...current!, state: "RUNNING" };
      },
      activity: () => undefined,
      address: () => "10.211.0.2",
      connect: (): Duplex => {
        throw new Error("reach() never connects");
      },
    };
    return d;
  };

  test("RUNNING: its address", async () => {
    assert.equal(await reach(directory(vm("RUNNING")), ID, 1000), "10.211.0.2");
  });

  test("gone or terminated: its tokens stop working", async () => {
    for (const d of [directory(undefined), directory(vm("TERMINATING")), directory(vm("TERMINATED"))]) {
      await assert.rejects(reach(d, ID, 1000), (e: Refusal) => e.status === 403 && /terminated/.test(e.message));
    }
  });

  test("SUSPENDED with auto-resume: resumed, then reached; without it, or when the resume fails: a 502", async () => {
    const d = directory(vm("SUSPENDED", true));
    assert.equal(await reach(d, ID, 1000), "10.211.0.2");
    assert.equal(d.resumed, 1);
    await assert.rejects(reach(directory(vm("SUSPENDED", false)), ID, 1000), (e: Refusal) => e.status === 502 && /autoResumeEnabled off/.test(e.message));
    await assert.rejects(reach(directory(vm("SUSPENDED")), ID, 1000), (e: Refusal) => e.status === 502);
    const failing = { ...directory(vm("SUSPENDED", true)), resume: async () => { throw new Error("restore failed"); } };
    await assert.rejects(reach(failing, ID, 1000), (e: Refusal) => e.status === 502 && /could not be resumed: restore failed/.test(e.message));
  });

  test("PENDING: waited for until RUNNING; a start that ends otherwise, or never ends, is a 502", async () => {
    let current = vm("PENDING");
    const d = { ...directory(undefined), peek: () => current };
    const waiting = reach(d, ID, 10_000);
    setTimeout(() => (current = { ...current, state: "RUNNING" }), 100);
    assert.equal(await waiting, "10.211.0.2");
    current = vm("PENDING");
    const failing = reach(d, ID, 10_000);
    setTimeout(() => (current = { ...current, state: "TERMINATED", stateReason: "Run lifecycle hook returned HTTP status 400." }), 100);
    await assert.rejects(failing, (e: Refusal) => e.status === 502 && /Run lifecycle hook returned HTTP status 400/.test(e.message));
    current = vm("PENDING");
    await assert.rejects(reach(d, ID, 50), (e: Refusal) => e.status === 502 && /still PENDING/.test(e.message));
  });

  test("ingress: none named is HTTP_INGRESS; NO_INGRESS admits nothing; app traffic needs HTTP_INGRESS or ALL_INGRESS; a shell SHELL_INGRESS", () => {
    const arn = (n: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${n}`;
    const withIngress = (...names: string[]) => ({ ...vm("RUNNING"), config: { ...vm("RUNNING").config, ingressNetworkConnectors: names.map(arn) } });
    const admits = (m: Microvm, kind: "endpoint" | "shell") => { try { checkIngress(m, kind); return true; } catch (e) { assert.equal((e as Refusal).status, 403); return false; } };
    assert.ok(admits(withIngress(), "endpoint"));
    assert.ok(!admits(withIngress(), "shell"));
    assert.ok(admits(withIngress("HTTP_INGRESS"), "endpoint"));
    assert.ok(admits(withIngress("ALL_INGRESS"), "endpoint"));
    assert.ok(!admits(withIngress("ALL_INGRESS"), "shell"));
    assert.ok(!admits(withIngress("SHELL_INGRESS"), "endpoint"));
    assert.ok(admits(withIngress("HTTP_INGRESS", "SHELL_INGRESS"), "shell"));
    assert.ok(!admits(withIngress("NO_INGRESS"), "endpoint"));
    assert.ok(!admits(withIngress("NO_INGRESS", "SHELL_INGRESS"), "shell"));
    assert.throws(() => checkIngress(withIngress("NO_INGRESS"), "endpoint"), /NO_INGRESS/);
  });

  test("the hook path is refused on the hooks port only (8080 when the image names none)", () => {
    const config = { hooks: { port: 9000 } };
    assert.throws(() => checkHookPath(config, 9000, "/aws/lambda-microvms/runtime/v1/run"), (e: Refusal) => e.status === 403);
    checkHookPath(config, 9000, "/health");
    checkHookPath(config, 8080, "/aws/lambda-microvms/runtime/v1/run");
    checkHookPath({}, 9000, "/aws/lambda-microvms/runtime/v1/run");
    assert.throws(() => checkHookPath({}, 8080, "/aws/lambda-microvms/runtime/v1/run"), (e: Refusal) => e.status === 403, "no hooks port: 8080, where the runtime calls them");
  });
});

describe("rate limits", () => {
  test("the service's table: 8 connections and 10 requests per second per vCPU", () => {
    assert.deepEqual([1, 2, 4, 8, 16].map((v) => microvmLimits(v).connections), [8, 16, 32, 64, 128]);
    assert.equal(microvmLimits(4).requestsPerSecond, 40);
    assert.equal(microvmLimits(16).requestsPerSecond, 160);
  });

  test("--endpoint-limits: aws, off, or named values; nonsense is explained", () => {
    assert.deepEqual(parseEndpointLimits("off"), { connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 0, queueMs: 0 });
    assert.deepEqual(parseEndpointLimits("connections-per-vcpu=2,queue-ms=100"), { connectionsPerVcpu: 2, requestsPerSecondPerVcpu: 10, queueMs: 100 });
    assert.throws(() => parseEndpointLimits("rps=3"), /unknown limit 'rps'/);
    assert.throws(() => parseEndpointLimits("queue-ms=-1"), /at least 0/);
  });

  test("past the request rate: a 429 with Retry-After at once", async () => {
    const limiter = new EndpointLimiter({ connectionsPerVcpu: 0, requestsPerSecondPerVcpu: 3, queueMs: 0 });
    for (let i = 0; i < 3; i++) (await limiter.acquire(ID, 1))();
    const err = await limiter.acquire(ID, 1).then(() => undefined, (e: Refusal) => e);
    assert.equal(err?.status, 429);
    assert.ok(Number(err?.headers["retry-after"]) >= 1);
    assert.ok(await limiter.acquire(OTHER, 1), "another MicroVM has its own budget");
  });

  test("past the connections: waits for a slot, then a 429 at the queue's deadline", async () => {
    const limiter = new EndpointLimiter({ connectionsPerVcpu: 1, requestsPerSecondPerVcpu: 0, queueMs: 30_000 });
    const first = await limiter.acquire(ID, 1);
    let granted = false;
    const second = limiter.acquire(ID, 1).then((r) => ((granted = true), r));
    await new Promise((r) => setImmediate(r));
    assert.equal(granted, false, "the second waits while the first is open");
    first();
    (await second)();
    const short = new EndpointLimiter({ connectionsPerVcpu: 1, requestsPerSecondPerVcpu: 0, queueMs: 20 });
    const held = await short.acquire(ID, 1);
    await assert.rejects(short.acquire(ID, 1), (e: Refusal) => e.status === 429 && /Too many connections/.test(e.message));
    held();
    (await short.acquire(ID, 1))();
  });
});
