// A standby API node's relay (src/cluster/relay.ts): the leader's reading of its CONNECT (target
// and the client's address, which the leader's API and endpoint then report as the client's), and
// the secrets check that keeps a node with other secrets from taking over (src/server/api-nodes.ts).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createHmac } from "node:crypto";
import { connect, createServer as createTcpServer, type Socket } from "node:net";
import { initCluster, nodeCredentials, serveCredentials, StandbyRelay } from "../../src/cluster/index.js";
import { parseRelayRequest } from "../../src/cluster/relay.js";
import type { ClusterStore } from "../../src/store/index.js";
import type { RoleCredentialSource } from "../../src/core/index.js";
import { within } from "../support/deadline.js";
import { checksMismatch, secretChecks } from "../../src/server/api-nodes.js";
import { ensureCertificates } from "../../src/proxy/certificates.js";
import { tempDir } from "../support/platform.js";

describe("relay CONNECT parsing", () => {
  test("takes api:0 and endpoint:0 with the client's IPv4 or IPv6 address and port", () => {
    assert.deepEqual(parseRelayRequest("api:0", { "lmvm-client-address": "203.0.113.7", "lmvm-client-port": "51234" }), { target: "api", client: { address: "203.0.113.7", port: 51234 } });
    assert.deepEqual(parseRelayRequest("endpoint:0", { "lmvm-client-address": "2001:db8::1", "lmvm-client-port": "0" }), { target: "endpoint", client: { address: "2001:db8::1", port: 0 } });
  });

  test("refuses another target, naming what it got", () => {
    for (const url of ["api:443", "admin:0", "api", "", undefined, "10.0.0.1:7600"]) {
      const r = parseRelayRequest(url, { "lmvm-client-address": "203.0.113.7", "lmvm-client-port": "1" });
      assert.ok("error" in r, `${url} refused`);
      assert.match(r.error, /a relay CONNECTs to api:0 or endpoint:0/);
    }
  });

  test("refuses a client address that is not one IP, and a port that is not a port", () => {
    const bad: Record<string, string | string[] | undefined>[] = [
      { "lmvm-client-port": "1" },
      { "lmvm-client-address": "example.com", "lmvm-client-port": "1" },
      { "lmvm-client-address": "203.0.113.7, 10.0.0.1", "lmvm-client-port": "1" },
      { "lmvm-client-address": ["203.0.113.7", "10.0.0.1"], "lmvm-client-port": "1" },
    ];
    for (const h of bad) {
      const r = parseRelayRequest("api:0", h);
      assert.ok("error" in r && /lmvm-client-address must be one IP address/.test(r.error), JSON.stringify(h));
    }
    for (const port of ["65536", "-1", "1x", "", "123456"]) {
      const r = parseRelayRequest("endpoint:0", { "lmvm-client-address": "203.0.113.7", "lmvm-client-port": port });
      assert.ok("error" in r && /lmvm-client-port must be a port number/.test(r.error), port);
    }
  });
});

describe("API nodes' secrets check", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const files = { serverKey: "/d/secrets/server.key", credentials: "/d/credentials", tls: "/d/tls" };

  test("the same secrets match; another master key, credentials or endpoint CA each name their file", async () => {
    const a = tempDir("lmvm-relay-ca-");
    const b = tempDir("lmvm-relay-ca-");
    dirs.push(a, b);
    const caA = (await ensureCertificates(join(a, "tls"), "microvm.localhost")).caCert;
    const caB = (await ensureCertificates(join(b, "tls"), "microvm.localhost")).caCert;
    const master = randomBytes(32);
    const root = { accessKeyId: "LKIAAAAA", secretAccessKey: "s3cret" };
    const own = secretChecks(master, root, caA);
    assert.deepEqual(secretChecks(Buffer.from(master), { ...root }, caA), own, "the same secrets give the same checks");
    assert.equal(checksMismatch(own, own, files), undefined);
    assert.ok(!JSON.stringify(own).includes(master.toString("hex")) && !JSON.stringify(own).includes("s3cret"), "the checks do not hold the secrets");
    const key = checksMismatch(own, secretChecks(randomBytes(32), root, caA), files);
    assert.match(key ?? "", /master key \(\/d\/secrets\/server.key\).*will not take over/);
    const creds = checksMismatch(own, secretChecks(master, { ...root, secretAccessKey: "other" }, caA), files);
    assert.match(creds ?? "", /root credentials \(\/d\/credentials\)/);
    assert.doesNotMatch(creds ?? "", /master key/);
    const ca = checksMismatch(own, secretChecks(master, root, caB), files);
    assert.match(ca ?? "", /endpoint CA \(\/d\/tls\/ca.pem/);
    const underStoredKey = createHmac("sha256", Buffer.from(own.key, "hex")).update(`${root.accessKeyId}\n${root.secretAccessKey}`).digest("hex");
    assert.notEqual(own.credentials, underStoredKey, "the credentials' check is not keyed with the stored check value (no offline guessing from a database read)");
  });
});

describe("a standby's relay to the leader", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const log = () => undefined;
  const read = (socket: Socket | import("node:tls").TLSSocket) => new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    socket.on("error", reject);
  });

  test("a client's FIN after its request still gets the answer (half-open both ways); failed lookups are one query a second", async () => {
    const dir = tempDir("lmvm-relay-cluster-");
    dirs.push(dir);
    await initCluster(dir);
    const tls = await nodeCredentials(dir, "server", "server", ["127.0.0.1"]);
    // The leader's API: answers only once the client's side has ended, as a server reading a request to its end does.
    const leader = await serveCredentials({
      tls, cluster: {} as ClusterStore, source: {} as RoleCredentialSource, microvm: async () => undefined, host: "127.0.0.1", port: 0, log,
      relay: () => (_target, socket) => {
        void read(socket).then((got) => socket.end(`got:${got}`));
      },
    });
    let lookups = 0;
    let leaderUp = false;
    const relay = new StandbyRelay({
      tls, log, api: { host: "127.0.0.1", port: 0 }, endpoint: { host: "127.0.0.1", port: 0 },
      leaderAddress: async () => {
        lookups++;
        if (!leaderUp) throw new Error("database down");
        return `127.0.0.1:${leader.port}`;
      },
    });
    try {
      await relay.listen();
      // The leader's address cannot be read: every connection is closed, with one lookup for the burst.
      const refused = await Promise.all(Array.from({ length: 5 }, () => within(15_000, "a refused relay to close", new Promise<string>((resolve) => {
        const c = connect(relay.apiPort, "127.0.0.1");
        c.on("error", () => undefined);
        c.on("close", () => resolve("closed"));
      }))));
      assert.deepEqual(refused, ["closed", "closed", "closed", "closed", "closed"]);
      assert.equal(lookups, 1, "a burst of failed relays made one lookup");
      leaderUp = true;
      await new Promise((r) => setTimeout(r, 1100)); // past the second the failure is kept
      const client = connect(relay.apiPort, "127.0.0.1");
      const answer = read(client);
      client.end("hello");
      assert.equal(await within(15_000, "the answer after the client's FIN", answer), "got:hello");
    } finally {
      await relay.close();
      await leader.close();
    }
  });

  test("a listen that fails on the endpoint port closes the API listener it already bound", async () => {
    const taken = createTcpServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    const port = (taken.address() as { port: number }).port;
    const relay = new StandbyRelay({
      tls: { ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) } as never, log, leaderAddress: async () => undefined,
      api: { host: "127.0.0.1", port: 0 }, endpoint: { host: "127.0.0.1", port },
    });
    try {
      await assert.rejects(relay.listen(), /EADDRINUSE/);
      assert.ok(relay.apiPort > 0, "the API listener was bound first");
      const code = await within(10_000, "a connection to the closed API port", new Promise<string>((resolve) => {
        const c = connect(relay.apiPort, "127.0.0.1");
        c.on("connect", () => { c.destroy(); resolve("connected"); });
        c.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
      }));
      assert.equal(code, "ECONNREFUSED", "the API port is free again");
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});
