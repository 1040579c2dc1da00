// The instance-metadata service as a sandbox sees it, on loopback addresses standing for two
// sandboxes' host veths (each client connects from its "sandbox" address): the IMDSv2 token flow
// and EC2's refusals, tokens bound to their sandbox, the credentials document, the answer for a
// role that cannot be assumed, caching and renewal on the service's clock, and its bounds. The
// credential source is a scripted stand-in for the identity service's port (the real one is
// exercised end to end by test/e2e/execution-role.test.ts).

import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { AccessDenied, type RoleCredentialSource, type TemporaryCredentials } from "../../src/core/index.js";
import { MetadataService, METADATA_REQUESTS_PER_SECOND } from "../../src/metadata/index.js";
import { within } from "../support/deadline.js";

// Addresses from 127.0.0.0/8 no other test uses: two "sandboxes", each a host end and a peer.
const A = { host: "127.77.14.1", peer: "127.77.14.2" };
const B = { host: "127.77.14.5", peer: "127.77.14.6" };
const ROLE = "arn:aws:iam::000000000000:role/app";
const VM_ARN = "arn:aws:lambda:us-east-1:000000000000:microvm:microvm-a";
const HOUR = 3600_000;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(sandbox: { host: string; peer: string }, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return within(5_000, `${method} ${path} on ${sandbox.host}`, new Promise<Answer>((resolve, reject) => {
    const req = request({ host: sandbox.host, port: 80, localAddress: sandbox.peer, method, path, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  }));
}

const token = async (sandbox: { host: string; peer: string }, ttl = "21600") => {
  const r = await call(sandbox, "PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": ttl });
  assert.equal(r.status, 200, r.body);
  return r.body;
};

describe("the instance-metadata service", () => {
  let clock = Date.parse("2026-11-29T12:00:00Z");
  const asked: string[][] = [];
  let refuse = false;
  let issued = 0;
  const source: RoleCredentialSource = {
    async serviceCredentials(roleArn, sourceArn, sessionName) {
      asked.push([roleArn, sourceArn, sessionName]);
      if (refuse) throw new AccessDenied(`The role ${roleArn} does not exist.`);
      issued++;
      return { accessKeyId: `ASIATESTKEY${String(issued).padStart(9, "0")}`, secretAccessKey: `secret-${issued}`, sessionToken: `token-${issued}`, expiration: new Date(clock + HOUR) } satisfies TemporaryCredentials;
    },
  };
  const logged: Record<string, unknown>[] = [];
  const service = new MetadataService({ credentials: source, region: "us-east-1", log: (e) => logged.push(e), now: () => clock });

  before(async () => {
    await service.bind(1, A.host, A.peer, { roleArn: ROLE, sourceArn: VM_ARN, sessionName: "microvm-a" });
    await service.bind(2, B.host, B.peer, { sourceArn: "arn:aws:lambda:us-east-1:000000000000:microvm:microvm-b", sessionName: "microvm-b" });
  });
  after(() => service.close());

  test("a token takes a PUT with a TTL of 1 to 21600 s and no X-Forwarded-For; GETs without a live token get 401", async () => {
    for (const ttl of [undefined, "0", "21601", "abc", "-5"]) {
      const r = await call(A, "PUT", "/latest/api/token", ttl === undefined ? {} : { "x-aws-ec2-metadata-token-ttl-seconds": ttl });
      assert.equal(r.status, 400, `TTL ${ttl}`);
    }
    const forwarded = await call(A, "PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "60", "x-forwarded-for": "203.0.113.9" });
    assert.equal(forwarded.status, 403, "a PUT through a proxy is refused, as EC2 does");
    assert.equal((await call(A, "GET", "/latest/api/token")).status, 405);
    const t = await call(A, "PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "60" });
    assert.equal(t.status, 200);
    assert.equal(t.headers["x-aws-ec2-metadata-token-ttl-seconds"], "60");
    assert.equal(t.headers.connection, "close", "the host closes first: nothing left in TIME_WAIT inside the sandbox for a checkpoint");
    assert.ok(t.body.length >= 40, t.body);
    // IMDSv1 (no token), a made-up token: 401.
    assert.equal((await call(A, "GET", "/latest/meta-data/iam/security-credentials/")).status, 401);
    assert.equal((await call(A, "GET", "/latest/meta-data/iam/security-credentials/", { "x-aws-ec2-metadata-token": "AQAEAnotatoken==" })).status, 401);
    assert.equal((await call(A, "GET", "/latest/meta-data/iam/security-credentials/", { "x-aws-ec2-metadata-token": t.body })).body, "execution_role");
    // Past its TTL the token is refused.
    clock += 61_000;
    assert.equal((await call(A, "GET", "/latest/meta-data/iam/security-credentials/", { "x-aws-ec2-metadata-token": t.body })).status, 401);
  });

  test("a token works only in the sandbox that asked for it, and only the sandbox's own address is answered", async () => {
    const ta = await token(A);
    assert.equal((await call(B, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": ta })).status, 401, "A's token in B");
    const tb = await token(B);
    assert.equal((await call(A, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": tb })).status, 401, "B's token in A");
    assert.equal((await call(B, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": tb })).body, "us-east-1");
    // Another address (another sandbox, a host process) is cut off before any answer.
    await assert.rejects(call({ host: A.host, peer: B.peer }, "PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "60" }), /socket hang up|ECONNRESET/);
  });

  test("the role's credentials in EC2's shape, for the MicroVM's ARN and id, cached while they have more than 30 minutes left", async () => {
    const t = await token(A);
    const before = asked.length;
    const get = () => call(A, "GET", "/latest/meta-data/iam/security-credentials/execution_role", { "x-aws-ec2-metadata-token": t });
    const r = await get();
    assert.equal(r.status, 200);
    const doc = JSON.parse(r.body) as Record<string, string>;
    assert.deepEqual(Object.keys(doc), ["Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"]);
    assert.equal(doc.Code, "Success");
    assert.equal(doc.Type, "AWS-HMAC");
    assert.match(doc.Expiration!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, "EC2's form, which botocore parses");
    assert.equal(Date.parse(doc.Expiration!), clock + HOUR);
    assert.deepEqual(asked.slice(before), [[ROLE, VM_ARN, "microvm-a"]]);
    assert.equal(JSON.parse((await get()).body).AccessKeyId, doc.AccessKeyId, "cached");
    clock += 29 * 60_000;
    assert.equal(JSON.parse((await get()).body).AccessKeyId, doc.AccessKeyId, "31 minutes left: still the same");
    clock += 2 * 60_000;
    const renewed = JSON.parse((await get()).body) as Record<string, string>;
    assert.notEqual(renewed.AccessKeyId, doc.AccessKeyId, "29 minutes left: renewed");
    assert.ok(Date.parse(renewed.Expiration!) - clock > 30 * 60_000);
    assert.equal(asked.length - before, 2);
  });

  test("a MicroVM without a role gets 404 under iam/ and no iam/ in the listing", async () => {
    const t = await token(B);
    for (const p of ["/latest/meta-data/iam/", "/latest/meta-data/iam/security-credentials/", "/latest/meta-data/iam/security-credentials/execution_role"]) {
      assert.equal((await call(B, "GET", p, { "x-aws-ec2-metadata-token": t })).status, 404, p);
    }
    assert.equal((await call(B, "GET", "/latest/meta-data/", { "x-aws-ec2-metadata-token": t })).body, "placement/");
  });

  test("a role that cannot be assumed: 200 with Code AssumeRoleUnauthorizedAccess and a Message, logged; a new binding (a resume) asks again at once", async () => {
    await service.unbind(1);
    refuse = true;
    await service.bind(1, A.host, A.peer, { roleArn: ROLE, sourceArn: VM_ARN, sessionName: "microvm-a" });
    const t = await token(A);
    const r = await call(A, "GET", "/latest/meta-data/iam/security-credentials/execution_role", { "x-aws-ec2-metadata-token": t });
    assert.equal(r.status, 200);
    const doc = JSON.parse(r.body) as Record<string, string>;
    assert.equal(doc.Code, "AssumeRoleUnauthorizedAccess");
    assert.match(doc.Message!, /cannot assume the role arn:aws:iam::000000000000:role\/app: The role .* does not exist\..*lambda\.amazonaws\.com/);
    assert.equal(doc.AccessKeyId, undefined);
    assert.ok(logged.some((e) => e.roleArn === ROLE && /cannot be assumed/.test(String(e.msg))), JSON.stringify(logged));
    // Fixed (the role made): a resumed MicroVM (a new binding) gets credentials at once.
    refuse = false;
    await service.unbind(1);
    assert.equal(service.has(1), false);
    await service.bind(1, A.host, A.peer, { roleArn: ROLE, sourceArn: VM_ARN, sessionName: "microvm-a" });
    const t2 = await token(A);
    assert.equal(JSON.parse((await call(A, "GET", "/latest/meta-data/iam/security-credentials/execution_role", { "x-aws-ec2-metadata-token": t2 })).body).Code, "Success");
    assert.equal((await call(A, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": t })).status, 401, "the old binding's tokens are gone");
  });

  test("bounds: a body over 1 KiB is refused, and past its requests per second a sandbox gets 429", async () => {
    assert.equal((await call(A, "PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "60" }, "x".repeat(4096))).status, 413);
    clock += 10_000; // a full allowance
    const t = await token(A);
    const statuses: number[] = [];
    for (let i = 0; i < METADATA_REQUESTS_PER_SECOND + 5; i++) statuses.push((await call(A, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": t })).status);
    assert.ok(statuses.filter((s) => s === 429).length >= 5, statuses.join(","));
    clock += 1000;
    assert.equal((await call(A, "GET", "/latest/meta-data/placement/region", { "x-aws-ec2-metadata-token": t })).status, 200, "a second later it answers again");
  });
});
