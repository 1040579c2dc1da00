// A standby API node's relay (src/cluster/relay.ts): the leader's reading of its CONNECT (target
// and the client's address, which the leader's API and endpoint then report as the client's), and
// the secrets check that keeps a node with other secrets from taking over (src/server/api-nodes.ts).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseRelayRequest } from "../../src/cluster/relay.js";
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
  });
});
