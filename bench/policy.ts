// The cost of policy evaluation: signed GetMicrovmImage requests per second through a real
// `lmvm server` with the root key (never evaluated against policies) against the same with an
// IAM user's key whose inline policy has 20 statements (varied actions, wildcard resources,
// conditions, one deny that does not match), the last one being the statement that allows.
// Each configuration runs several times, alternating, so that a machine busy for a moment
// weighs on both; prints the median and the spread (min–max) of each and the ratio user/root.

import { rmSync } from "node:fs";
import { CreateAccessKeyCommand, CreateUserCommand, IAMClient, PutUserPolicyCommand } from "@aws-sdk/client-iam";
import { CreateMicrovmImageCommand } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import autocannon from "autocannon";
import { imageRequest, readCredentials, sdkClient, tempDir } from "../test/support/platform.js";
import { spawnServer } from "../test/support/processes.js";

const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const IMAGE = "bench-7";
const PATH = `/2025-09-09/microvm-images/${IMAGE}`;

/** Wildcards for region and account, as policies are often written (and IAM's 2,048-character limit on a user's inline policies favours). */
const L = (what: string) => `arn:aws:lambda:*:*:${what}`;

/**
 * Twenty statements as a team's policy might hold them: the first nineteen do not allow
 * GetMicrovmImage on bench-7 (other actions, other resources, conditions that do not hold,
 * and a deny on other images), so the evaluator goes through all of them; the twentieth allows it.
 * Compact, because IAM (and lmvm) allow a user 2,048 characters of inline policy in all.
 */
export function twentyStatementPolicy(): string {
  const statements = [
    { Effect: "Allow", Action: "logs:Get*", Resource: "*" },
    { Effect: "Allow", Action: "lambda:RunMicrovm", Resource: "*", Condition: { StringEquals: { "aws:ResourceTag/team": "a" } } },
    { Effect: "Allow", Action: "lambda:SuspendMicrovm", Resource: "*" },
    { Effect: "Allow", Action: "iam:PassRole", Resource: "arn:aws:iam::*:role/vm-*", Condition: { StringEquals: { "iam:PassedToService": "lambda.amazonaws.com" } } },
    { Effect: "Allow", Action: "lambda:CreateMicrovmImage", Resource: "*", Condition: { StringLike: { "aws:RequestTag/team": "a*" } } },
    { Effect: "Deny", Action: "lambda:Delete*", Resource: L("microvm-image:prod-*") },
    { Effect: "Allow", Action: "cloudtrail:LookupEvents", Resource: "*" },
    { Effect: "Allow", Action: "lambda:List*", Resource: "*", Condition: { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } } },
    { Effect: "Allow", Action: "lambda:CreateMicrovmAuthToken", Resource: "*", Condition: { Bool: { "aws:SecureTransport": "true" } } },
    { Effect: "Allow", Action: "lambda:TagResource", Resource: "*" },
    { Effect: "Allow", Action: "sts:AssumeRole", Resource: "arn:aws:iam::*:role/ci-*" },
    { Effect: "Allow", NotAction: ["iam:*", "lambda:*"], Resource: "arn:aws:logs:*:*:log-group:/b/*" },
    { Effect: "Allow", Action: "lambda:GetMicrovm", Resource: "*", Condition: { DateLessThan: { "aws:CurrentTime": "2020-01-01T00:00:00Z" } } },
    { Effect: "Allow", Action: "lambda:UpdateMicrovmImage", Resource: "*" },
    { Effect: "Allow", Action: "lambda:*NetworkConnector", Resource: "*" },
    { Effect: "Allow", Action: "lambda:PassNetworkConnector", Resource: "*" },
    { Effect: "Allow", Action: "iam:GetUser", Resource: "*" },
    { Effect: "Allow", Action: "lambda:Get*", Resource: "*", Condition: { ArnLike: { "aws:PrincipalArn": "arn:aws:iam::*:user/b-*" } } },
    { Effect: "Allow", Action: "lambda:GetMicrovmImage", Resource: L("microvm-image:c-*") },
    { Effect: "Allow", Action: "lambda:GetMicrovmImage", Resource: L("microvm-image:bench-*"), Condition: { IpAddress: { "aws:SourceIp": "127.0.0.0/8" } } },
  ];
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}

async function signedHeaders(url: string, creds: { accessKeyId: string; secretAccessKey: string }) {
  const u = new URL(url);
  const signer = new SignatureV4({ credentials: creds, region: "us-east-1", service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: "http:", hostname: u.hostname, port: Number(u.port), path: PATH, headers: { host: u.host } }));
  return signed.headers as Record<string, string>;
}

/** One timed run; every answer must be a 200 (a refused or failed request would be cheaper than a served one). */
async function run(url: string, headers: Record<string, string>, seconds: number): Promise<number> {
  const r = await autocannon({ url: url + PATH, headers, connections: CONNECTIONS, duration: seconds });
  const codes = Object.entries(r.statusCodeStats ?? {}).filter(([code]) => code !== "200").map(([code, s]) => `${code}: ${s.count}`);
  if (r.errors || r.timeouts || r.non2xx || codes.length) throw new Error(`${PATH}: answers other than 200 (${codes.join(", ") || "none"}), ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
  return r.requests.average;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function policyBench(): Promise<string[]> {
  const dataDir = tempDir("lmvm-bench-policy-");
  const server = await spawnServer(dataDir);
  try {
    const root = readCredentials(dataDir);
    const client = sdkClient(server.url, root);
    await client.send(new CreateMicrovmImageCommand(imageRequest(IMAGE, { tags: { i: "7" } })));
    client.destroy();
    const iam = new IAMClient({ endpoint: server.url, region: "us-east-1", credentials: root, maxAttempts: 1 });
    await iam.send(new CreateUserCommand({ UserName: "bench-user" }));
    const policy = twentyStatementPolicy();
    await iam.send(new PutUserPolicyCommand({ UserName: "bench-user", PolicyName: "team", PolicyDocument: policy }));
    const key = (await iam.send(new CreateAccessKeyCommand({ UserName: "bench-user" }))).AccessKey!;
    iam.destroy();
    const user = { accessKeyId: key.AccessKeyId!, secretAccessKey: key.SecretAccessKey! };

    const configs = { root: await signedHeaders(server.url, root), user: await signedHeaders(server.url, user) };
    // The user's key must really be evaluated and allowed (and a key without the last statement refused: see the conformance tests).
    for (const [name, headers] of Object.entries(configs)) {
      const res = await fetch(server.url + PATH, { headers });
      if (res.status !== 200) throw new Error(`GetMicrovmImage as ${name}: ${res.status} ${await res.text()}`);
    }
    const rps: Record<keyof typeof configs, number[]> = { root: [], user: [] };
    for (const name of ["root", "user"] as const) await run(server.url, configs[name], 1); // warm-up
    for (let i = 0; i < ROUNDS; i++) {
      for (const name of (i % 2 ? ["user", "root"] : ["root", "user"]) as (keyof typeof configs)[]) rps[name].push(await run(server.url, configs[name], SECONDS));
    }
    const row = (name: keyof typeof configs, what: string) =>
      `${name.padEnd(6)}${median(rps[name]).toFixed(0).padStart(9)}${`${Math.min(...rps[name]).toFixed(0)}–${Math.max(...rps[name]).toFixed(0)}`.padStart(14)}  ${what}`;
    return [
      `Policy evaluation: signed GetMicrovmImage requests/s through lmvm server, ${CONNECTIONS} connections, ${ROUNDS} × ${SECONDS}s per configuration, alternating.`,
      `  root = the server's root key (never evaluated against policies); user = an IAM user's key with one ${policy.length}-character inline policy`,
      "  of 20 statements (conditions, wildcard ARNs, NotAction, a deny that does not match), the last one allowing. Every answer was 200.",
      `${"key".padEnd(6)}${"median".padStart(9)}${"min–max".padStart(14)}`,
      row("root", ""),
      row("user", "20 statements"),
      `user/root: ${(median(rps.user) / median(rps.root)).toFixed(2)} (medians); ${median(rps.user.map((u, i) => u / rps.root[i]!)).toFixed(2)} (median of each round's pair, which a machine busy for a while affects less)`,
    ];
  } finally {
    await server.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
