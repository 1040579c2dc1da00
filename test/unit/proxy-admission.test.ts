// The endpoint proxy's decisions, without sockets: which MicroVM, token and
// port a request names, what the app gets of its headers, and when a request
// is refused, waits, or resumes its MicroVM.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { Microvm } from "../../src/core/index.js";
import { admit, reach, Refusal, type MicrovmDirectory } from "../../src/proxy/admission.js";
import { forwardedHeaders, microvmFromHost, portOf, tokenOf } from "../../src/proxy/routing.js";
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
    assert.equal(tokenOf({ "sec-websocket-protocol": "chat, lambda-microvms.authentication.x.y.z" }), "x.y.z");
    assert.equal(tokenOf({}), undefined);
  });

  test("the port: 8080 by default, the header, else the subprotocol; nonsense is explained", () => {
    assert.equal(portOf({}), 8080);
    assert.equal(portOf({ "x-aws-proxy-port": "9001" }), 9001);
    assert.equal(portOf({ "sec-websocket-protocol": "lambda-microvms.port.50051" }), 50051);
    assert.match(String(portOf({ "x-aws-proxy-port": "70000" })), /1 to 65535/);
    assert.match(String(portOf({ "x-aws-proxy-port": "80; rm" })), /port number/);
  });

  test("the app never gets the token, the port header or hop-by-hop headers", () => {
    const out = forwardedHeaders({
      "x-aws-proxy-auth": "secret", "x-aws-proxy-port": "8080", connection: "keep-alive, x-private", "x-private": "1",
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

  test("missing, expired, forged, other-MicroVM and wrong-port tokens are refused with a reason", async () => {
    await refused(admit(tokens, {}, DOMAIN), 403, /Missing token/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await issue({ expiresAt: new Date(Date.now() - 1000) }) }, DOMAIN), 403, /expired/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await new MicrovmTokens(randomBytes(32)).issue({ microvmId: ID, kind: "endpoint", allowedPorts: [{ allPorts: {} }], expiresAt: new Date(Date.now() + 60_000) }) }, DOMAIN), 403, /Invalid token/);
    await refused(admit(tokens, { "x-aws-proxy-auth": "garbage" }, DOMAIN), 403, /Invalid token/);
    await refused(admit(tokens, { host: `${OTHER}.${DOMAIN}`, "x-aws-proxy-auth": await issue() }, DOMAIN), 403, /is for MicroVM/);
    await refused(admit(tokens, { "x-aws-proxy-auth": await issue(), "x-aws-proxy-port": "9011" }, DOMAIN), 403, /does not allow port 9011/);
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
      peek: () => current,
      resume: async () => {
        d.resumed++;
        current = { ...current!, state: "RUNNING" };
      },
      activity: () => undefined,
      address: () => "10.211.0.2",
    };
    return d;
  };

  test("RUNNING: its address", async () => {
    assert.equal(await reach(directory(vm("RUNNING")), ID), "10.211.0.2");
  });

  test("gone or terminated: its tokens stop working", async () => {
    for (const d of [directory(undefined), directory(vm("TERMINATING")), directory(vm("TERMINATED"))]) {
      await assert.rejects(reach(d, ID), (e: Refusal) => e.status === 403 && /terminated/.test(e.message));
    }
  });

  test("SUSPENDED with auto-resume: resumed, then reached; without it: a 409", async () => {
    const d = directory(vm("SUSPENDED", true));
    assert.equal(await reach(d, ID), "10.211.0.2");
    assert.equal(d.resumed, 1);
    await assert.rejects(reach(directory(vm("SUSPENDED", false)), ID), (e: Refusal) => e.status === 409 && /auto-resume is off/.test(e.message));
    await assert.rejects(reach(directory(vm("SUSPENDED")), ID), (e: Refusal) => e.status === 409);
  });
});
