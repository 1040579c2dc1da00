// Privilege escalation, tried with the official IAM, STS and MicroVMs SDK clients against a real
// server: users granting themselves more than their policy allows, roles assumed outside their
// trust policy, session tokens altered, swapped, replayed after expiry or after their role is gone,
// deactivated and deleted keys, and, from inside MicroVMs and builds (as root), credentials that are
// not theirs from the instance-metadata service. Every attempt has a control that must succeed
// (the same principal doing what it IS allowed, the untouched token, the legitimate assumer), so a
// server that refused everything would fail this file. Outcomes go to docs/reliability.md (area
// "privilege-escalation").

import assert from "node:assert/strict";
import {
  CreateAccessKeyCommand, CreateRoleCommand, CreateUserCommand, DeleteAccessKeyCommand, DeleteRoleCommand, DeleteRolePolicyCommand, DeleteUserPolicyCommand,
  GetRoleCommand, GetUserPolicyCommand, IAMClient, ListAccessKeysCommand, ListUsersCommand, PutRolePolicyCommand, PutUserPolicyCommand,
  UpdateAccessKeyCommand, UpdateAssumeRolePolicyCommand,
} from "@aws-sdk/client-iam";
import {
  CreateMicrovmImageCommand, GetMicrovmCommand, GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListMicrovmImagesCommand, RunMicrovmCommand, TerminateMicrovmCommand, type LambdaMicrovmsClient,
} from "@aws-sdk/client-lambda-microvms";
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { execFileSync } from "node:child_process";
import { createDecipheriv } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { METADATA_ADDRESS } from "../../src/core/index.js";
import { deriveKey, serverKey } from "../../src/server/data-dir.js";
import { BASE_IMAGE_CACHE, makeZip } from "../support/artifacts.js";
import { eventually, imageRequest, sdkClient, startTestPlatform, tempDir, type TestPlatform } from "../support/platform.js";
import { lmvm } from "../support/processes.js";
import { record } from "./report.js";

const ACCOUNT = "000000000000";
const AREA = "privilege-escalation";
const userArn = (name: string) => `arn:aws:iam::${ACCOUNT}:user/${name}`;
const roleArn = (name: string) => `arn:aws:iam::${ACCOUNT}:role/${name}`;
const imageArn = (name: string) => `arn:aws:lambda:us-east-1:${ACCOUNT}:microvm-image:${name}`;
const managed = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const policy = (...statements: Record<string, unknown>[]) => JSON.stringify({ Version: "2012-10-17", Statement: statements });
const allow = (Action: string | string[], Resource: string | string[] = "*", extra: Record<string, unknown> = {}) => ({ Effect: "Allow", Action, Resource, ...extra });
const trust = (principal: Record<string, string | string[]>, extra: Record<string, unknown> = {}) => policy({ Effect: "Allow", Principal: principal, Action: "sts:AssumeRole", ...extra });

interface Creds {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

interface SdkError {
  name: string;
  message: string;
  $metadata?: { httpStatusCode?: number };
}

/** How a refusal reads in the report: status and error code. */
const refusal = (e: SdkError) => `${e.$metadata?.httpStatusCode ?? "?"} ${e.name}`;

/** Asserts `p` is refused with an error whose name matches `names`; the refusal, for the report. */
async function refused(p: Promise<unknown>, names: RegExp, what: string): Promise<string> {
  const err = await p.then(() => undefined, (e: SdkError) => e);
  assert.ok(err, `${what}: allowed, but it must be refused`);
  assert.match(err.name, names, `${what}: refused with ${err.name} (${err.$metadata?.httpStatusCode}): ${err.message}`);
  return refusal(err);
}

const DENIED = /^AccessDenied(Exception)?$/;

/**
 * A sealed session token (base64url of version | nonce(12) | tag(16) | AES-256-GCM ciphertext of the
 * claims' JSON, which ends with "e":<expiry in ms>}) with its expiry moved a day or more later by
 * flipping ciphertext bits, as an attacker who knows the format but not the key can. GCM's keystream
 * is CTR from nonce|2, so the test decrypts the edit with the server's key to show it says what was
 * meant: the server must refuse it because the tag no longer matches, not because the edit missed.
 */
function withLaterExpiry(dataDir: string, token: string): string {
  const raw = Buffer.from(token, "base64url");
  const body = raw.subarray(29);
  const key = deriveKey(serverKey(dataDir), "sts-session");
  const keystream = (data: Buffer) => {
    const d = createDecipheriv("aes-256-ctr", key, Buffer.concat([raw.subarray(1, 13), Buffer.from([0, 0, 0, 2])]));
    return Buffer.concat([d.update(data), d.final()]).toString("utf8");
  };
  const plain = keystream(body);
  const m = /"e":(\d{13})\}$/.exec(plain);
  assert.ok(m, `the sealed claims end with the expiry: ${plain.replace(/"s":"[^"]+"/, '"s":"…"')}`);
  const digits = m[1]!;
  // The least significant digit from the 10^8 ms place up that is not a 9 becomes a 9: a day or more later.
  const j = [4, 3, 2, 1, 0].find((i) => digits[i] !== "9")!;
  const at = body.length - 14 + j;
  const edited = Buffer.from(raw);
  edited[29 + at]! ^= digits.charCodeAt(j) ^ "9".charCodeAt(0);
  const now = keystream(edited.subarray(29));
  const later = Number(/"e":(\d{13})\}$/.exec(now)?.[1]);
  assert.ok(later - Number(digits) >= 86_400_000, `the edit moves the expiry a day or more: ${digits} -> ${later}`);
  return edited.toString("base64url");
}

/** What a hostile app (root, every capability) tries against the instance-metadata service, in Python. */
const PROBE_PY = String.raw`# What a hostile app (root, every capability) tries against the instance-metadata service.
# Usage: python3 probe.py <mode> '<json args>'; prints one JSON line.
import asyncio, http.client, json, resource, socket, sys, time

IMDS = "169.254.169.254"
CREDS = "/latest/meta-data/iam/security-credentials/"

def req(method, host, path, headers=None, port=80, timeout=3, source=None):
    c = http.client.HTTPConnection(host, port, timeout=timeout, source_address=source)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return {"status": r.status, "body": r.read().decode(errors="replace")}
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(e)}
    finally:
        c.close()

def token(host=IMDS, port=80, extra=None, **kw):
    return req("PUT", host, "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "300", **(extra or {})}, port, **kw)

def creds(tok, host=IMDS, port=80, extra=None, **kw):
    h = {"X-aws-ec2-metadata-token": tok, **(extra or {})}
    listing = req("GET", host, CREDS, h, port, **kw)
    role = req("GET", host, CREDS + "execution_role", h, port, **kw)
    return {"list": listing, "role": role}

def flow(host=IMDS, port=80, extra=None, **kw):
    t = token(host, port, extra, **kw)
    out = {"token": t}
    if t.get("status") == 200:
        out.update(creds(t["body"], host, port, extra, **kw))
    return out

def freebind(source):
    # Connect from an address that is not the sandbox's (another MicroVM's), as root may ask the kernel to.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    for opt in (15, 19):  # IP_FREEBIND, IP_TRANSPARENT
        try:
            s.setsockopt(socket.SOL_IP, opt, 1)
        except OSError:
            pass
    try:
        s.bind((source, 0))
        s.connect((IMDS, 80))
        s.sendall(b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\nContent-Length: 0\r\n\r\n")
        return {"answer": s.recv(4096).decode(errors="replace")}
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(e)}
    finally:
        s.close()

async def scan(hosts, port, concurrency, timeout):
    # A pool of workers, each connecting to the next address: few tasks alive at once.
    found = []
    it = iter(hosts)
    async def worker():
        for addr in it:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
                found.append(addr)
                w.close()
            except Exception:
                pass
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return found

mode = sys.argv[1]
args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
if mode == "own":
    out = flow()
elif mode == "direct":
    out = {f"{h}:{p}": token(h, p, timeout=2) for h, p in args["targets"]}
elif mode == "spoof":
    out = [{"headers": h, **flow(extra=h)} for h in args["headers"]]
elif mode == "reuse":
    out = creds(args["token"])
elif mode == "freebind":
    out = freebind(args["source"])
elif mode == "scan":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 8192), max(hard, 8192)))
    except (ValueError, OSError):
        pass
    hosts = [f"169.254.{a}.{b}" for a in range(256) for b in range(256)]
    started = time.time()
    found = asyncio.run(scan(hosts, 80, args.get("concurrency", 2048), args.get("timeout", 1.0)))
    out = {"scanned": len(hosts), "seconds": round(time.time() - started, 1), "answered": {a: flow(a) for a in found}}
else:
    raise SystemExit("unknown mode " + mode)
print(json.dumps(out))
`;

/**
 * A RUN step's attempts in a busybox image (nc, raw HTTP/1.0): the IMDSv2 flow at 169.254.169.254,
 * then a token asked straight of its own metadata listener's address and of the address given (where
 * another sandbox's listener would be). Raw answers in files.
 */
const PROBE_SH = String.raw`#!/bin/sh
imds() {
  if [ -n "$3" ]; then h="X-aws-ec2-metadata-token: $3"; else h="X-aws-ec2-metadata-token-ttl-seconds: 300"; fi
  host=$4; [ -n "$host" ] || host=169.254.169.254
  printf '%s %s HTTP/1.0\r\nHost: 169.254.169.254\r\n%s\r\n\r\n' "$1" "$2" "$h" | nc -w 3 "$host" 80
}
imds PUT /latest/api/token > token.http 2>&1
token=$(sed -n '$p' token.http)
imds GET /latest/meta-data/iam/security-credentials/ "$token" > list.http 2>&1
imds GET /latest/meta-data/iam/security-credentials/execution_role "$token" > role.http 2>&1
# Its own metadata listener straight at the host end of its veth (the route's gateway), not redirected;
# and the next sandbox's (the host end of the next /30), where another build's or MicroVM's listener is.
own=$(ip route | awk '/^169.254.169.254/ {print $3}')
other=$(echo "$own" | awk -F. '{ printf "%s.%s.%s.%d", $1, $2, $3, ($4 + 4) % 256 }')
echo "$own $other" > gateways.txt
imds PUT /latest/api/token "" "$own" > direct-own.http 2>&1
imds PUT /latest/api/token "" "$other" > direct-other.http 2>&1
exit 0
`;

/** The same from Node: its own credentials, and another sandbox's token. */
const PROBE_MJS = String.raw`// The same attempts from Node: its own credentials through the IMDSv2 flow, and another sandbox's token.
const [mode, raw] = process.argv.slice(2);
const args = raw ? JSON.parse(raw) : {};
const base = "http://169.254.169.254";
const CREDS = "/latest/meta-data/iam/security-credentials/";
async function call(method, path, headers) {
  try {
    const r = await fetch(base + path, { method, headers, signal: AbortSignal.timeout(3000) });
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { error: e.name + ": " + e.message };
  }
}
const creds = async (tok) => ({
  list: await call("GET", CREDS, { "x-aws-ec2-metadata-token": tok }),
  role: await call("GET", CREDS + "execution_role", { "x-aws-ec2-metadata-token": tok }),
});
let out;
if (mode === "own") {
  const token = await call("PUT", "/latest/api/token", { "x-aws-ec2-metadata-token-ttl-seconds": "300" });
  out = { token, ...(token.status === 200 ? await creds(token.body) : {}) };
} else if (mode === "reuse") {
  out = await creds(args.token);
} else {
  throw new Error("unknown mode " + mode);
}
console.log(JSON.stringify(out));
`;
/** What AWS answers for a token or key it does not accept (STS and IAM: InvalidClientTokenId; the MicroVMs API: UnrecognizedClientException). */
const INVALID = /^(InvalidClientTokenId|UnrecognizedClientException)$/;

/** What the probes print: the IMDSv2 flow's answers. */
interface Answer {
  status?: number;
  body?: string;
  error?: string;
}
interface Flow {
  token: Answer;
  list?: Answer;
  role?: Answer;
}
interface RoleDocument {
  Code: string;
  AccessKeyId?: string;
  SecretAccessKey?: string;
  Token?: string;
  Expiration?: string;
  Message?: string;
}
/** An HTTP/1.0 answer as nc wrote it; no status when there was no answer (the error text in body). */
const raw = (text: string): Answer => {
  const m = /^HTTP\/1\.[01] (\d{3})[^\n]*\n[\s\S]*?\r?\n\r?\n([\s\S]*)$/.exec(text);
  return m ? { status: Number(m[1]), body: m[2] } : { error: text.trim() || "no answer" };
};
const documentOf = (f: { role?: Answer }): RoleDocument | undefined => (f.role?.status === 200 ? (JSON.parse(f.role.body!) as RoleDocument) : undefined);
/**
 * Whether the host's firewall holds the metadata redirect now, for failure messages: table inet lmvm
 * is shared by every lmvm server on the host, and one of an older version refills its base chains
 * without the redirect when it starts.
 */
function metadataDiagnosis(): string {
  try {
    const chain = execFileSync("nft", ["list", "chain", "inet", "lmvm", "prerouting"], { encoding: "utf8", timeout: 10_000 });
    return chain.includes(METADATA_ADDRESS) ? "(the metadata redirect is in table inet lmvm)" : "(table inet lmvm has NO metadata redirect now: did an lmvm server of an older version start on this host?)";
  } catch (err) {
    return `(nft: ${(err as Error).message})`;
  }
}
const credsOf = (f: Flow): Creds => {
  const d = documentOf(f);
  assert.ok(d?.Code === "Success" && d.AccessKeyId && d.SecretAccessKey && d.Token, `credentials expected: ${JSON.stringify(f)} ${metadataDiagnosis()}`);
  return { accessKeyId: d.AccessKeyId!, secretAccessKey: d.SecretAccessKey!, sessionToken: d.Token! };
};

describe("privilege escalation", { timeout: 1_200_000 }, () => {
  // The MicroVM part's platform starts first, and its image builds while the IAM and STS part runs.
  let v: TestPlatform;
  let iam: IAMClient;
  const vm = { a: "", b: "" };
  const ip = { a: "", b: "" };
  /** The host end of a sandbox's veth, where its metadata listener is. */
  const gatewayOf = (address: string) => address.replace(/\d+$/, (n) => String(Number(n) - 1));
  const sandboxIp = (id: string) => JSON.parse(readFileSync(join(v.dataDir, "microvms", id, "sandbox.json"), "utf8")).sandboxIp as string;
  const clients: { destroy(): void }[] = [];
  const as = (creds: Creds) => {
    const c = { lambda: sdkClient(v.platform.url, creds as { accessKeyId: string; secretAccessKey: string }), sts: new STSClient({ endpoint: v.platform.url, region: "us-east-1", credentials: creds, maxAttempts: 1 }), iam: new IAMClient({ endpoint: v.platform.url, region: "us-east-1", credentials: creds, maxAttempts: 1 }) };
    clients.push(c.lambda, c.sts, c.iam);
    return c;
  };
  /** Runs a probe inside the MicroVM (as root, through `lmvm exec`); its JSON answer. */
  const inside = async <T>(id: string, command: string[]): Promise<T> => {
    const r = await lmvm(["exec", id, "--data-dir", v.dataDir, "--endpoint-url", v.platform.url, "--", ...command], {}, 180_000);
    const line = r.stdout.trim().split("\n").pop() ?? "";
    assert.equal(r.code, 0, `${command.join(" ")} in ${id}: ${r.stdout}${r.stderr}`);
    return JSON.parse(line) as T;
  };
  const py = <T>(id: string, mode: string, args: Record<string, unknown> = {}) => inside<T>(id, ["python3", "/app/probe.py", mode, JSON.stringify(args)]);
  const node = <T>(id: string, mode: string, args: Record<string, unknown> = {}) => inside<T>(id, ["node", "/app/probe.mjs", mode, JSON.stringify(args)]);
  const builtFile = (image: string, file: string) => {
    const versions = join(v.dataDir, "images", image, "1.0");
    return readFileSync(join(versions, readdirSync(versions)[0]!, "rootfs", "app", file), "utf8");
  };
  /** "CREATED", or the failed build's reason. */
  const waitBuilt = (name: string) => eventually(async () => {
    const s = (await v.client.send(new GetMicrovmImageCommand({ imageIdentifier: name }))).state;
    if (s !== "CREATE_FAILED") return s === "CREATED" ? s : undefined;
    const version = await v.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: "1.0" }));
    return `${s}: ${version.stateReason}`;
  }, `the ${name} build`, 600_000);
  const zip = (runSteps: string) => {
    const file = join(tempDir("lmvm-pe-"), "app.zip");
    writeFileSync(file, makeZip([
      { name: "Dockerfile", content: `FROM lmvm/debian12\nWORKDIR /app\nCOPY . .\n${runSteps}\nCMD ["python3", "-m", "http.server", "8080"]\n` },
      { name: "probe.py", content: PROBE_PY },
      { name: "probe.mjs", content: PROBE_MJS },
    ]));
    return `file://${file}`;
  };
  /** A small busybox image (a fast build) whose RUN steps probe with nc. */
  const busyboxZip = (runSteps: string) => {
    const file = join(tempDir("lmvm-pe-"), "app.zip");
    writeFileSync(file, makeZip([
      { name: "Dockerfile", content: `FROM lmvm/busybox\nWORKDIR /app\nCOPY probe.sh /app/probe.sh\n${runSteps}\nRUN mkdir -p /srv && echo ok > /srv/index.html\nCMD ["httpd", "-f", "-p", "8080", "-h", "/srv"]\n` },
      { name: "probe.sh", content: PROBE_SH },
    ]));
    return `file://${file}`;
  };
  /** Where the image the MicroVMs run was built, and its build role's credentials read in a RUN step. */
  let appBuild: Promise<string>;
  let noRoleBuild: Promise<string>;
  /** The MicroVM platform's last log events, for failure messages. */
  const serverLog: string[] = [];

  before(async () => {
    v = await startTestPlatform({ builder: undefined, baseImageCache: BASE_IMAGE_CACHE, log: (e) => {
      serverLog.push(JSON.stringify(e));
      if (serverLog.length > 40) serverLog.shift();
    } });
    iam = new IAMClient({ endpoint: v.platform.url, region: "us-east-1", credentials: v.credentials, maxAttempts: 1 });
    const lambdaTrust = trust({ Service: "lambda.amazonaws.com" });
    for (const [name, document] of [
      ["pe-build", policy(allow("lambda:GetMicrovmImage", imageArn("pe-app")))],
      ["pe-exec-a", policy(allow("lambda:GetMicrovmImage", imageArn("pe-app")))],
      ["pe-exec-b", policy(allow("lambda:ListMicrovmImages"))],
    ] as const) {
      await iam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: lambdaTrust }));
      await iam.send(new PutRolePolicyCommand({ RoleName: name, PolicyName: "given", PolicyDocument: document }));
    }
    // The image the MicroVMs run; its RUN step reads the metadata service (the build role's credentials).
    await v.client.send(new CreateMicrovmImageCommand({
      name: "pe-app", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", buildRoleArn: roleArn("pe-build"),
      codeArtifact: { uri: zip("RUN python3 /app/probe.py own > /app/build-imds.json && node /app/probe.mjs own > /app/build-imds-node.json") }, additionalOsCapabilities: ["ALL"],
    }));
    appBuild = waitBuilt("pe-app");
    appBuild.catch(() => undefined);
    // A build whose build role does not exist (every build names one): its RUN step should get no credentials.
    await v.client.send(new CreateMicrovmImageCommand({
      name: "pe-norole", baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:busybox", buildRoleArn: roleArn("pe-no-such-role"),
      codeArtifact: { uri: busyboxZip("RUN sh /app/probe.sh") },
    }));
    noRoleBuild = waitBuilt("pe-norole");
    noRoleBuild.catch(() => undefined);
  });
  after(async () => {
    for (const c of clients) c.destroy();
    iam?.destroy();
    // A build still running holds files in the data directory: let it end first (it has its own deadline).
    await appBuild?.catch(() => undefined);
    await noRoleBuild?.catch(() => undefined);
    await v?.stop();
  });

  describe("users, roles, sessions and keys", { timeout: 300_000 }, () => {
    /** The IAM and STS part runs on a platform of its own (no builder, no MicroVMs) whose clock the test can move (to expire sessions). */
    let t: TestPlatform;
    let skewMs = 0;
    const clock = { now: () => new Date(Date.now() + skewMs) };
    const clients: { destroy(): void }[] = [];
    const track = <C extends { destroy(): void }>(c: C) => (clients.push(c), c);
    /** Clients sign with the server's (moved) clock, so that a refusal is about the token, not the signature's date. */
    const iamAs = (credentials: Creds) => track(new IAMClient({ endpoint: t.platform.url, region: "us-east-1", credentials, maxAttempts: 1, systemClockOffset: skewMs }));
    const stsAs = (credentials: Creds) => track(new STSClient({ endpoint: t.platform.url, region: "us-east-1", credentials, maxAttempts: 1, systemClockOffset: skewMs }));
    const lambdaAs = (credentials: Creds): LambdaMicrovmsClient => track(sdkClient(t.platform.url, credentials as { accessKeyId: string; secretAccessKey: string }, { systemClockOffset: skewMs }));
    let rootIam: IAMClient;

    /** A user with `document` as its inline policy (if any) and one access key. */
    const user = async (name: string, document?: string): Promise<Creds> => {
      await rootIam.send(new CreateUserCommand({ UserName: name }));
      if (document) await rootIam.send(new PutUserPolicyCommand({ UserName: name, PolicyName: "given", PolicyDocument: document }));
      const key = (await rootIam.send(new CreateAccessKeyCommand({ UserName: name }))).AccessKey!;
      return { accessKeyId: key.AccessKeyId!, secretAccessKey: key.SecretAccessKey! };
    };
    const role = async (name: string, trustDocument: string, document?: string) => {
      await rootIam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: trustDocument }));
      if (document) await rootIam.send(new PutRolePolicyCommand({ RoleName: name, PolicyName: "given", PolicyDocument: document }));
    };
    const assume = async (as: Creds, name: string, extra: Record<string, unknown> = {}): Promise<Creds> => {
      const out = await stsAs(as).send(new AssumeRoleCommand({ RoleArn: roleArn(name), RoleSessionName: `s-${name}`, ...extra }));
      const c = out.Credentials!;
      return { accessKeyId: c.AccessKeyId!, secretAccessKey: c.SecretAccessKey!, sessionToken: c.SessionToken! };
    };
    const getImage = (as: Creds, name = "pe-img") => lambdaAs(as).send(new GetMicrovmImageCommand({ imageIdentifier: name }));

    before(async () => {
      t = await startTestPlatform({ clock });
      rootIam = track(new IAMClient({ endpoint: t.platform.url, region: "us-east-1", credentials: t.credentials, maxAttempts: 1 }));
      for (const name of ["pe-img", "pe-other"]) await t.client.send(new CreateMicrovmImageCommand(imageRequest(name)));
    });
    after(async () => {
      for (const c of clients) c.destroy();
      await t?.stop();
    });

    test("a user limited to lambda:* cannot grant itself more: no policy on itself, no key for another user, no role of its own, no change to a role's trust", async () => {
      const victim = await user("pe-victim", policy(allow("sts:AssumeRole", roleArn("pe-locked"))));
      await role("pe-locked", trust({ AWS: userArn("pe-victim") }), policy(allow("*")));
      const me = await user("pe-lambda-only", policy(allow("lambda:*")));
      // Control: what its policy allows works.
      assert.equal((await getImage(me)).name, "pe-img");
      const iam = iamAs(me);
      const attempts: [string, () => Promise<unknown>][] = [
        ["PutUserPolicy on itself (Allow *)", () => iam.send(new PutUserPolicyCommand({ UserName: "pe-lambda-only", PolicyName: "escalate", PolicyDocument: policy(allow("*")) }))],
        ["CreateAccessKey for another user", () => iam.send(new CreateAccessKeyCommand({ UserName: "pe-victim" }))],
        ["CreateRole trusting itself", () => iam.send(new CreateRoleCommand({ RoleName: "pe-mine", AssumeRolePolicyDocument: trust({ AWS: userArn("pe-lambda-only") }) }))],
        ["UpdateAssumeRolePolicy of a role to trust itself", () => iam.send(new UpdateAssumeRolePolicyCommand({ RoleName: "pe-locked", PolicyDocument: trust({ AWS: userArn("pe-lambda-only") }) }))],
        ["AssumeRole of a role trusting another user", () => assume(me, "pe-locked")],
      ];
      for (const [what, attempt] of attempts) record(AREA, `a user allowed lambda:* only: ${what}`, `refused: ${await refused(attempt(), DENIED, what)}`);
      // Nothing changed behind the refusals.
      await refused(rootIam.send(new GetUserPolicyCommand({ UserName: "pe-lambda-only", PolicyName: "escalate" })), /^NoSuchEntity(Exception)?$/, "the refused policy");
      assert.equal((await rootIam.send(new ListAccessKeysCommand({ UserName: "pe-victim" }))).AccessKeyMetadata!.length, 1);
      await refused(rootIam.send(new GetRoleCommand({ RoleName: "pe-mine" })), /^NoSuchEntity(Exception)?$/, "the refused role");
      assert.match(decodeURIComponent((await rootIam.send(new GetRoleCommand({ RoleName: "pe-locked" }))).Role!.AssumeRolePolicyDocument!), /pe-victim/);
      // Control: the role's real trustee assumes it.
      assert.ok((await assume(victim, "pe-locked")).sessionToken);
    });

    test("a user allowed iam:PutUserPolicy on itself only reaches no other user; what it grants itself takes effect at once, as on AWS", async () => {
      const me = await user("pe-self", policy(allow("iam:PutUserPolicy", userArn("pe-self"))));
      const iam = iamAs(me);
      for (const [what, attempt] of [
        ["PutUserPolicy on another user", () => iam.send(new PutUserPolicyCommand({ UserName: "pe-victim", PolicyName: "escalate", PolicyDocument: policy(allow("*")) }))],
        ["CreateAccessKey for another user", () => iam.send(new CreateAccessKeyCommand({ UserName: "pe-victim" }))],
        ["CreateAccessKey for itself (not in its policy)", () => iam.send(new CreateAccessKeyCommand({ UserName: "pe-self" }))],
      ] as const) record(AREA, `a user allowed iam:PutUserPolicy on itself: ${what}`, `refused: ${await refused(attempt(), DENIED, what)}`);
      await refused(getImage(me), DENIED, "GetMicrovmImage before it grants itself");
      // Control: PutUserPolicy on itself is what its policy allows, and (as on AWS) it is as good as any right.
      await iam.send(new PutUserPolicyCommand({ UserName: "pe-self", PolicyName: "more", PolicyDocument: policy(allow("lambda:GetMicrovmImage", imageArn("pe-img"))) }));
      assert.equal((await getImage(me)).name, "pe-img");
      await refused(getImage(me, "pe-other"), DENIED, "an image its new policy does not name");
      record(AREA, "a user allowed iam:PutUserPolicy on itself: PutUserPolicy on itself", "allowed, and in force on the next request: iam:PutUserPolicy on oneself is as good as any right (as on AWS); grant it to no one you would not make an administrator");
      // Removing a right is just as immediate.
      await rootIam.send(new DeleteUserPolicyCommand({ UserName: "pe-self", PolicyName: "more" }));
      await refused(getImage(me), DENIED, "GetMicrovmImage once the policy is deleted");
    });

    test("a user that may create roles: a role trusting the account needs sts:AssumeRole in its own policy; one naming the user itself does not, as on AWS", async () => {
      const me = await user("pe-role-maker", policy(allow(["iam:CreateRole", "iam:PutRolePolicy"], roleArn("pe-own-*"))));
      const iam = iamAs(me);
      // Control: what its policy allows works: roles with every right, one trusting the account, one trusting the user by name.
      for (const [name, principal] of [["pe-own-account", `arn:aws:iam::${ACCOUNT}:root`], ["pe-own-named", userArn("pe-role-maker")]] as const) {
        await iam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: trust({ AWS: principal }) }));
        await iam.send(new PutRolePolicyCommand({ RoleName: name, PolicyName: "all", PolicyDocument: policy(allow("*")) }));
      }
      record(AREA, "a user allowed iam:CreateRole and iam:PutRolePolicy on role/pe-own-*, no sts:AssumeRole: AssumeRole of the administrator role it made trusting the account", `refused: ${await refused(assume(me, "pe-own-account"), DENIED, "AssumeRole of its own role trusting the account")}`);
      record(AREA, "the same user: UpdateAssumeRolePolicy of a role outside role/pe-own-*", `refused: ${await refused(iam.send(new UpdateAssumeRolePolicyCommand({ RoleName: "pe-locked", PolicyDocument: trust({ AWS: userArn("pe-role-maker") }) })), DENIED, "UpdateAssumeRolePolicy")}`);
      // Within one account a trust policy naming the user is enough by itself (AWS: "If either the identity-based
      // policy or the resource-based policy within the same account allows the request ..., the request is still allowed").
      const named = await assume(me, "pe-own-named");
      assert.equal((await iamAs(named).send(new ListUsersCommand({}))).Users!.length > 0, true);
      record(AREA, "the same user: AssumeRole of the administrator role it made with a trust policy naming the user itself", "allowed, as on AWS (a trust policy naming a principal of the account needs no identity policy): iam:CreateRole with iam:PutRolePolicy is as good as administrator; bound them by role name or path to roles whose policies you control");
      // Control: with sts:AssumeRole in its own policy, the account-trusting role lets it in.
      await rootIam.send(new PutUserPolicyCommand({ UserName: "pe-role-maker", PolicyName: "assume", PolicyDocument: policy(allow("sts:AssumeRole", roleArn("pe-own-*"))) }));
      assert.equal((await getImage(await assume(me, "pe-own-account"))).name, "pe-img");
    });

    test("root is never locked out: an administrator's deny-all on every user, a user named root, and attempts on root's key leave root whole", async () => {
      const admin = await user("pe-admin", policy(allow("*")));
      const iam = iamAs(admin);
      // Root's key is not an IAM user's: the administrator can neither deactivate nor delete it.
      for (const [what, attempt] of [
        ["UpdateAccessKey Inactive on root's key", () => iam.send(new UpdateAccessKeyCommand({ AccessKeyId: t.credentials.accessKeyId, Status: "Inactive" }))],
        ["DeleteAccessKey of root's key", () => iam.send(new DeleteAccessKeyCommand({ AccessKeyId: t.credentials.accessKeyId }))],
        ["UpdateAccessKey Inactive on root's key, naming user root", () => iam.send(new UpdateAccessKeyCommand({ UserName: "root", AccessKeyId: t.credentials.accessKeyId, Status: "Inactive" }))],
      ] as const) record(AREA, `an administrator (Allow *): ${what}`, `refused: ${await refused(attempt(), /^(NoSuchEntity|AccessDenied|ValidationError|InvalidInput)(Exception)?$/, what)}`);
      // A user called root is just a user; a deny-all on it, and on every user, does not touch root.
      await iam.send(new CreateUserCommand({ UserName: "root" }));
      // Itself last: its own deny-all ends what it can do.
      const users = (await iam.send(new ListUsersCommand({}))).Users!.map((u) => u.UserName!).sort((x, y) => Number(x === "pe-admin") - Number(y === "pe-admin"));
      for (const name of users) await iam.send(new PutUserPolicyCommand({ UserName: name, PolicyName: "deny-all", PolicyDocument: policy({ Effect: "Deny", Action: "*", Resource: "*" }) }));
      await refused(getImage(admin), DENIED, "the administrator after its own deny-all");
      await refused(iam.send(new DeleteUserPolicyCommand({ UserName: "pe-admin", PolicyName: "deny-all" })), DENIED, "the administrator undoing its deny-all");
      // Root still does everything, and undoes it.
      assert.equal((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "pe-img" }))).name, "pe-img");
      assert.equal((await stsAs(t.credentials).send(new GetCallerIdentityCommand({}))).Arn, `arn:aws:iam::${ACCOUNT}:root`);
      for (const name of users) await rootIam.send(new DeleteUserPolicyCommand({ UserName: name, PolicyName: "deny-all" }));
      assert.equal((await getImage(admin)).name, "pe-img");
      record(AREA, "an administrator puts Deny * on every user (a user named root included), itself too", "root unaffected: it still reads images, calls STS and removes the denies; the administrator cannot undo its own deny");
    });

    test("roles outside their trust policy: another principal's role, a wrong or missing ExternalId, a service-only role, a session policy asking for more", async () => {
      const assumer = await user("pe-assumer", policy(allow("sts:AssumeRole")));
      const other = await user("pe-trusted", policy(allow("sts:AssumeRole")));
      await role("pe-for-other", trust({ AWS: userArn("pe-trusted") }), policy(allow("lambda:GetMicrovmImage")));
      await role("pe-external", trust({ AWS: userArn("pe-assumer") }, { Condition: { StringEquals: { "sts:ExternalId": "correct-horse" } } }), policy(allow("lambda:GetMicrovmImage")));
      await role("pe-service", trust({ Service: "lambda.amazonaws.com" }), policy(allow("*")));
      await role("pe-narrow", trust({ AWS: userArn("pe-assumer") }), policy(allow("lambda:GetMicrovmImage", imageArn("pe-img"))));
      for (const [what, attempt] of [
        ["a role whose trust policy names another user", () => assume(assumer, "pe-for-other")],
        ["a role requiring an ExternalId, with a wrong one", () => assume(assumer, "pe-external", { ExternalId: "battery-staple" })],
        ["a role requiring an ExternalId, without one", () => assume(assumer, "pe-external")],
        ["a role trusting lambda.amazonaws.com only, by a user allowed sts:AssumeRole on *", () => assume(assumer, "pe-service")],
        ["a role trusting lambda.amazonaws.com only, by root", () => assume(t.credentials, "pe-service")],
      ] as const) record(AREA, `AssumeRole of ${what}`, `refused: ${await refused(attempt(), DENIED, what)}`);
      // Controls: each role's real trustee gets in.
      assert.equal((await getImage(await assume(other, "pe-for-other"))).name, "pe-img");
      assert.equal((await getImage(await assume(assumer, "pe-external", { ExternalId: "correct-horse" }))).name, "pe-img");
      // A session policy can narrow a session, never widen it.
      const wide = await assume(assumer, "pe-narrow", { Policy: policy(allow("*")) });
      assert.equal((await getImage(wide)).name, "pe-img");
      const widened = [
        await refused(getImage(wide, "pe-other"), DENIED, "another image"),
        await refused(lambdaAs(wide).send(new ListMicrovmImagesCommand({})), DENIED, "ListMicrovmImages"),
        await refused(iamAs(wide).send(new ListUsersCommand({})), DENIED, "iam:ListUsers"),
        await refused(stsAs(wide).send(new AssumeRoleCommand({ RoleArn: roleArn("pe-for-other"), RoleSessionName: "chain" })), DENIED, "role chaining"),
      ];
      record(AREA, "a session policy of Allow * on a role allowed GetMicrovmImage on one image: another image, ListMicrovmImages, iam:ListUsers, AssumeRole of another role", `refused: ${[...new Set(widened)].join(", ")}; the role's own right still works`);
      record(AREA, "a session longer than the role allows (DurationSeconds 43200 on a role of 3600)", `refused: ${await refused(assume(assumer, "pe-narrow", { DurationSeconds: 43_200 }), /^(ValidationError|ValidationException)$/, "a 12-hour session")}`);
    });

    test("session tokens: one byte flipped, truncated, another session's, used with another key, a temporary key without its token", async () => {
      const assumer = await user("pe-tokens", policy(allow("sts:AssumeRole")));
      await role("pe-token-role", trust({ AWS: userArn("pe-tokens") }), policy(allow("lambda:GetMicrovmImage", imageArn("pe-img"))));
      const s1 = await assume(assumer, "pe-token-role", { RoleSessionName: "one" });
      const s2 = await assume(assumer, "pe-token-role", { RoleSessionName: "two" });
      // Controls: each session works as it came.
      assert.equal((await getImage(s1)).name, "pe-img");
      assert.equal((await stsAs(s2).send(new GetCallerIdentityCommand({}))).Arn, `arn:aws:sts::${ACCOUNT}:assumed-role/pe-token-role/two`);
      const token = s1.sessionToken!;
      const flip = (i: number) => token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
      const variants: [string, Creds][] = [
        ["one character of the token changed (start)", { ...s1, sessionToken: flip(2) }],
        ["one character of the token changed (middle)", { ...s1, sessionToken: flip(Math.floor(token.length / 2)) }],
        ["one character of the token changed (end)", { ...s1, sessionToken: flip(token.length - 3) }],
        ["the token truncated", { ...s1, sessionToken: token.slice(0, token.length - 16) }],
        ["another session's token with this session's key", { ...s1, sessionToken: s2.sessionToken! }],
        ["this session's token with another session's key", { ...s2, sessionToken: token }],
        ["the temporary key without its token", { accessKeyId: s1.accessKeyId, secretAccessKey: s1.secretAccessKey }],
        ["the token with a user's long-term key", { ...assumer, sessionToken: token }],
      ];
      for (const [what, creds] of variants) {
        const outcomes = new Set([
          await refused(getImage(creds), INVALID, `${what} (MicroVMs API)`),
          await refused(stsAs(creds).send(new GetCallerIdentityCommand({})), INVALID, `${what} (STS)`),
        ]);
        record(AREA, `session token: ${what}`, `refused: ${[...outcomes].join(", ")}`);
      }
      // The untouched session still works after all that.
      assert.equal((await getImage(s1)).name, "pe-img");
    });

    test("session tokens replayed after their expiry, and after their role is deleted", async () => {
      const assumer = await user("pe-replay", policy(allow("sts:AssumeRole")));
      await role("pe-short", trust({ AWS: userArn("pe-replay") }), policy(allow("lambda:GetMicrovmImage", imageArn("pe-img"))));
      const session = await assume(assumer, "pe-short", { DurationSeconds: 900 });
      assert.equal((await getImage(session)).name, "pe-img");
      // Move the server's clock past the session's expiry; clients sign at the moved time, so only the token is late.
      skewMs = 901_000;
      try {
        const edited = withLaterExpiry(t.dataDir, session.sessionToken!);
        const editedOutcome = new Set([
          await refused(getImage({ ...session, sessionToken: edited }), INVALID, "the expired token with its sealed expiry edited (MicroVMs API)"),
          await refused(stsAs({ ...session, sessionToken: edited }).send(new GetCallerIdentityCommand({})), INVALID, "the expired token with its sealed expiry edited (STS)"),
        ]);
        record(AREA, "session token: the expired token's sealed expiry edited a day later (AES-GCM bit flips on the ciphertext; the edit checked with the server's key)", `refused: ${[...editedOutcome].join(", ")}`);
        const outcomes = new Set([
          await refused(getImage(session), /^ExpiredToken(Exception)?$/, "an expired session (MicroVMs API)"),
          await refused(stsAs(session).send(new GetCallerIdentityCommand({})), /^ExpiredToken(Exception)?$/, "an expired session (STS)"),
        ]);
        // Control: root, and a fresh session, work at the moved time.
        assert.equal((await lambdaAs(t.credentials).send(new GetMicrovmImageCommand({ imageIdentifier: "pe-img" }))).name, "pe-img");
        assert.equal((await getImage(await assume(assumer, "pe-short", { DurationSeconds: 900 }))).name, "pe-img");
        record(AREA, "a 900-second session replayed 901 s later (the server's clock moved by the test)", `refused: ${[...outcomes].join(", ")}`);
      } finally {
        skewMs = 0;
      }
      const doomed = await assume(assumer, "pe-short", { RoleSessionName: "doomed" });
      assert.equal((await getImage(doomed)).name, "pe-img");
      await rootIam.send(new DeleteRolePolicyCommand({ RoleName: "pe-short", PolicyName: "given" }));
      await rootIam.send(new DeleteRoleCommand({ RoleName: "pe-short" }));
      const outcomes = new Set([
        await refused(getImage(doomed), /^(InvalidClientTokenId|UnrecognizedClientException|AccessDenied(Exception)?)$/, "a session of a deleted role (MicroVMs API)"),
        await refused(stsAs(doomed).send(new GetCallerIdentityCommand({})), /^(InvalidClientTokenId|UnrecognizedClientException|AccessDenied(Exception)?)$/, "a session of a deleted role (STS)"),
      ]);
      record(AREA, "a session used after its role was deleted", `refused at once: ${[...outcomes].join(", ")}`);
      // The same name again is another role (a new role id): the old session stays refused; a new session works.
      await role("pe-short", trust({ AWS: userArn("pe-replay") }), policy(allow("lambda:GetMicrovmImage", imageArn("pe-img"))));
      assert.equal((await getImage(await assume(assumer, "pe-short"))).name, "pe-img", "control: the re-created role's new sessions work");
      record(AREA, "a session of a deleted role, replayed after a role of the same name is created again", `refused: ${await refused(getImage(doomed), INVALID, "the old session of a re-created role")}`);
    });

    test("access keys: deactivated and deleted keys are refused at once, a request signed before the deletion too", async () => {
      const key = await user("pe-keyed", policy(allow("lambda:GetMicrovmImage")));
      assert.equal((await getImage(key)).name, "pe-img");
      await rootIam.send(new UpdateAccessKeyCommand({ UserName: "pe-keyed", AccessKeyId: key.accessKeyId, Status: "Inactive" }));
      record(AREA, "a deactivated access key, on the next request", `refused: ${await refused(getImage(key), INVALID, "a deactivated key")}`);
      await rootIam.send(new UpdateAccessKeyCommand({ UserName: "pe-keyed", AccessKeyId: key.accessKeyId, Status: "Active" }));
      assert.equal((await getImage(key)).name, "pe-img", "control: reactivated, it works again");
      // A request signed now, sent after the key is deleted (well within the 15 minutes a signature is good for).
      const url = new URL(t.platform.url);
      const signer = new SignatureV4({ credentials: key, region: "us-east-1", service: "lambda", sha256: Hash.bind(null, "sha256") });
      const path = "/2025-09-09/microvm-images/pe-img";
      const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: "http:", hostname: url.hostname, port: Number(url.port), path, headers: { host: url.host } }));
      const send = async () => {
        const res = await fetch(t.platform.url + path, { headers: signed.headers as Record<string, string> });
        await res.arrayBuffer();
        return `${res.status} ${res.headers.get("x-amzn-errortype") ?? ""}`.trim();
      };
      assert.equal(await send(), "200", "control: the pre-signed request is good before the deletion");
      await rootIam.send(new DeleteAccessKeyCommand({ UserName: "pe-keyed", AccessKeyId: key.accessKeyId }));
      record(AREA, "a deleted access key, on the next request", `refused: ${await refused(getImage(key), INVALID, "a deleted key")}`);
      const replay = await send();
      assert.match(replay, /^403 UnrecognizedClientException/, "a request signed with the key before it was deleted");
      record(AREA, "a request signed with a key before the key was deleted, sent after", `refused: ${replay}`);
    });
  });

  describe("credentials inside MicroVMs and builds", { timeout: 900_000 }, () => {
    test("metadata from a build step: a RUN step gets the build role and nothing more, or nothing when the build role cannot be assumed; never an execution role", async () => {
      assert.equal(await appBuild, "CREATED");
      const build = JSON.parse(builtFile("pe-app", "build-imds.json")) as Flow;
      const creds = credsOf(build);
      const session = as(creds);
      const who = await session.sts.send(new GetCallerIdentityCommand({}));
      assert.match(who.Arn!, new RegExp(`^arn:aws:sts::${ACCOUNT}:assumed-role/pe-build/`), "a RUN step gets the build role's session");
      // Control: what the build role allows works; what it does not is refused.
      assert.equal((await session.lambda.send(new GetMicrovmImageCommand({ imageIdentifier: "pe-app" }))).name, "pe-app");
      const refusals = new Set([
        await refused(session.lambda.send(new ListMicrovmImagesCommand({})), DENIED, "the build role: ListMicrovmImages"),
        await refused(session.lambda.send(new RunMicrovmCommand({ imageIdentifier: imageArn("pe-app") })), DENIED, "the build role: RunMicrovm"),
        await refused(session.iam.send(new ListUsersCommand({})), DENIED, "the build role: iam:ListUsers"),
      ]);
      record(AREA, "a RUN step of a build with a build role reads 169.254.169.254", `the build role's session (${who.Arn!.split(":").pop()}), allowed GetMicrovmImage on its image as its policy says; ListMicrovmImages, RunMicrovm, iam:ListUsers refused (${[...refusals].join(", ")})`);

      assert.equal(await noRoleBuild, "CREATED");
      const none: Flow = { token: raw(builtFile("pe-norole", "token.http")), list: raw(builtFile("pe-norole", "list.http")), role: raw(builtFile("pe-norole", "role.http")) };
      assert.equal(none.token.status, 200, `control: the RUN step reached its metadata service: ${JSON.stringify(none)} ${metadataDiagnosis()}`);
      const doc = documentOf(none);
      assert.equal(doc?.Code, "AssumeRoleUnauthorizedAccess", `a build whose role cannot be assumed: ${JSON.stringify(none)}`);
      assert.equal(doc?.AccessKeyId, undefined);
      record(AREA, "a RUN step of a build whose build role does not exist reads 169.254.169.254", `no credentials: security-credentials/ lists ${none.list?.body}, whose document is Code ${doc?.Code}`);
      const [ownGateway, otherGateway] = builtFile("pe-norole", "gateways.txt").trim().split(" ");
      const direct = { own: raw(builtFile("pe-norole", "direct-own.http")), other: raw(builtFile("pe-norole", "direct-other.http")) };
      for (const [k, answer] of Object.entries(direct)) assert.equal(answer.status, undefined, `the RUN step reached the listener at the ${k} address: ${JSON.stringify(answer)}`);
      record(AREA, `a RUN step asks its own metadata listener straight at its address (${ownGateway}:80), not through 169.254.169.254`, `no connection (${direct.own.error})`);
      record(AREA, `a RUN step asks the next sandbox's metadata listener address (${otherGateway}:80)`, `no connection (${direct.other.error}): a RUN step without egress has a route to 169.254.169.254/32 only`);
      const node = JSON.parse(builtFile("pe-app", "build-imds-node.json")) as Flow;
      assert.equal(documentOf(node)?.AccessKeyId, creds.accessKeyId, "Node in the same RUN step gets the same build-role credentials");
      // Neither build's RUN step ever held an execution role's credentials.
      for (const f of [build, node, none]) assert.ok(!/pe-exec-/.test(JSON.stringify(f)));
    });

    test("one MicroVM never gets another's credentials: not at the other's metadata listener, not with spoofed headers, not with the other's token, not from the other's address, not anywhere in 169.254.0.0/16", async () => {
      assert.equal(await appBuild, "CREATED");
      for (const [k, role, egress] of [["a", "pe-exec-a", [managed("INTERNET_EGRESS")]], ["b", "pe-exec-b", []]] as const) {
        const out = await v.client.send(new RunMicrovmCommand({ imageIdentifier: imageArn("pe-app"), executionRoleArn: roleArn(role), ingressNetworkConnectors: [managed("SHELL_INGRESS")], egressNetworkConnectors: [...egress] }));
        vm[k] = out.microvmId!;
      }
      for (const k of ["a", "b"] as const) {
        const ran = await eventually(async () => {
          const m = await v.client.send(new GetMicrovmCommand({ microvmIdentifier: vm[k] }));
          return m.state === "PENDING" ? undefined : `${m.state}${m.stateReason ? `: ${m.stateReason}` : ""}`;
        }, `${vm[k]} to leave PENDING`, 300_000).catch((err: Error) => {
          throw new Error(`${err.message}; the server's last events:\n${serverLog.join("\n")}`);
        });
        assert.match(ran, /^RUNNING/, `MicroVM ${k.toUpperCase()}`);
        ip[k] = sandboxIp(vm[k]);
      }
      // Controls: each MicroVM gets its own role's credentials, from Python and from Node.
      const own = { a: await py<Flow>(vm.a, "own"), b: await py<Flow>(vm.b, "own") };
      const key = { a: credsOf(own.a), b: credsOf(own.b) };
      for (const k of ["a", "b"] as const) {
        const who = await as(key[k]).sts.send(new GetCallerIdentityCommand({}));
        assert.equal(who.Arn, `arn:aws:sts::${ACCOUNT}:assumed-role/pe-exec-${k}/${vm[k]}`);
      }
      assert.equal(documentOf(await node<Flow>(vm.a, "own"))?.AccessKeyId, key.a.accessKeyId, "control: Node in A gets A's credentials");
      assert.equal((await as(key.a).lambda.send(new GetMicrovmImageCommand({ imageIdentifier: "pe-app" }))).name, "pe-app", "control: A's credentials do what A's role allows");
      await refused(as(key.a).lambda.send(new ListMicrovmImagesCommand({})), DENIED, "A's credentials doing what only B's role allows");
      /** Every credentials document A is ever handed must be A's. */
      const onlyA = (f: { role?: Answer }, what: string) => {
        const d = documentOf(f);
        if (d?.AccessKeyId) assert.equal(d.AccessKeyId, key.a.accessKeyId, `${what}: A was handed credentials that are not its own`);
      };

      // B's metadata listener, straight at its address (and A's own, unredirected): no connection.
      const direct = await py<Record<string, Answer>>(vm.a, "direct", { targets: [[gatewayOf(ip.b), 80], [gatewayOf(ip.a), 80], [ip.b, 80]] });
      for (const [target, answer] of Object.entries(direct)) assert.ok(answer.error, `A reached ${target}: ${JSON.stringify(answer)}`);
      record(AREA, "from MicroVM A (root, every capability): B's metadata listener at the host end of B's veth, port 80", `no connection (${direct[`${gatewayOf(ip.b)}:80`]!.error!.split(":")[0]})`);
      record(AREA, "from MicroVM A: its own metadata listener at its host veth address, not through 169.254.169.254", `no connection (${direct[`${gatewayOf(ip.a)}:80`]!.error!.split(":")[0]})`);

      // Headers naming B: A still gets only A's credentials (or a refusal).
      const headers = [
        { "X-Forwarded-For": ip.b },
        { "X-Real-IP": ip.b, Forwarded: `for=${ip.b}` },
        { Host: `${gatewayOf(ip.b)}:80` },
        { "X-Forwarded-Host": gatewayOf(ip.b), "X-aws-ec2-metadata-token": "" },
      ];
      const spoofed = await py<(Flow & { headers: Record<string, string> })[]>(vm.a, "spoof", { headers });
      const spoofOutcomes: string[] = [];
      for (const s of spoofed) {
        onlyA(s, `headers ${JSON.stringify(s.headers)}`);
        spoofOutcomes.push(`${Object.keys(s.headers).join("+")}: ${s.token.status === 200 ? (documentOf(s) ? "A's own credentials" : `token, then ${s.role?.status}`) : `token ${s.token.status ?? s.token.error}`}`);
      }
      assert.equal(spoofed[0]!.token.status, 403, "a token PUT with X-Forwarded-For is refused, as EC2 does");
      record(AREA, "from MicroVM A: the IMDSv2 flow with headers naming B (X-Forwarded-For, X-Real-IP, Forwarded, Host, X-Forwarded-Host)", `only ever A's credentials: ${spoofOutcomes.join("; ")}`);

      // B's token in A.
      const bToken = own.b.token.body!;
      const reuse = { python: await py<Flow>(vm.a, "reuse", { token: bToken }), node: await node<Flow>(vm.a, "reuse", { token: bToken }) };
      for (const [app, r] of Object.entries(reuse)) {
        assert.equal(r.role?.status, 401, `B's token used in A (${app}): ${JSON.stringify(r)}`);
        onlyA(r, `B's token (${app})`);
      }
      record(AREA, "from MicroVM A: B's IMDSv2 token (Python and Node)", `401 for both; the token is bound to B's sandbox`);

      // A packet from B's address: the kernel's rpfilter and the listener's peer check.
      const freebind = await py<{ answer?: string; error?: string }>(vm.a, "freebind", { source: ip.b });
      assert.ok(!freebind.answer?.startsWith("HTTP/1.1 200"), `A, from B's address, got a token: ${JSON.stringify(freebind)}`);
      record(AREA, "from MicroVM A: a connection to 169.254.169.254 from B's address (IP_FREEBIND/IP_TRANSPARENT)", freebind.answer ? `answered ${freebind.answer.split("\r\n")[0]}` : `no connection (${freebind.error?.split(":")[0]})`);

      // Every address of 169.254.0.0/16 on port 80: whatever answers hands A its own credentials, or nothing.
      const scan = await py<{ scanned: number; seconds: number; answered: Record<string, Flow> }>(vm.a, "scan", { concurrency: 2048, timeout: 0.75 });
      assert.equal(scan.scanned, 65536);
      for (const [address, f] of Object.entries(scan.answered)) onlyA(f, `the scan's ${address}`);
      assert.ok(METADATA_ADDRESS in scan.answered, `control: the scan found the metadata service: ${Object.keys(scan.answered).join(", ")}`);
      assert.equal(documentOf(scan.answered[METADATA_ADDRESS]!)?.AccessKeyId, key.a.accessKeyId);
      record(AREA, "from MicroVM A (INTERNET_EGRESS): a TCP scan of 169.254.0.0/16 port 80, then the IMDSv2 flow on whatever answered", `${Object.keys(scan.answered).length} of 65,536 answered (${Object.keys(scan.answered).join(", ")}), serving A's own credentials only`, { "scan s": scan.seconds });
      record(AREA, "control: A and B each read their own role through 169.254.169.254 (Python and Node)", "each got its own execution role's session (assumed-role/<role>/<MicroVM id>), allowed what its role allows only");
    });

    test("a terminated MicroVM's credentials: plain role sessions, valid until they expire, as on AWS", async () => {
      assert.ok(vm.a, "MicroVM A was never started (the first test of this part failed before it)");
      const own = credsOf(await py<Flow>(vm.a, "own"));
      const expiration = documentOf(await py<Flow>(vm.a, "own"))!.Expiration!;
      await v.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.a }));
      await eventually(async () => ((await v.client.send(new GetMicrovmCommand({ microvmIdentifier: vm.a }))).state === "TERMINATED" ? true : undefined), `${vm.a} to terminate`, 60_000);
      const after = await as(own).sts.send(new GetCallerIdentityCommand({})).then((w) => `accepted as ${w.Arn!.split(":").pop()}`, (e: SdkError) => `refused: ${refusal(e)}`);
      const lifetime = Math.round((Date.parse(expiration) - Date.now()) / 60_000);
      // Whichever it is, it may only ever be A's own session.
      assert.match(after, new RegExp(`^(accepted as assumed-role/pe-exec-a/${vm.a}|refused: )`));
      record(AREA, "MicroVM A's credentials used after A is terminated", after.startsWith("accepted")
        ? `${after}: the credentials are an ordinary session of the execution role, good until they expire (about ${lifetime} min left), as EC2 role credentials outlive their instance on AWS; the role's policy bounds them`
        : after);
    });
  });
});
