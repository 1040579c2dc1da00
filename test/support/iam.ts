// IAM and STS for tests: official SDK clients against a test platform, users
// with one inline policy and a key, and raw signed awsQuery requests for what
// the SDKs will not send (unknown actions, altered signatures).

import { CreateAccessKeyCommand, CreateUserCommand, IAMClient, PutUserPolicyCommand } from "@aws-sdk/client-iam";
import { STSClient } from "@aws-sdk/client-sts";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { DEFAULTS } from "../../src/server/index.js";

export interface Keys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export const ACCOUNT = DEFAULTS.accountId;
export const userArn = (name: string) => `arn:aws:iam::${ACCOUNT}:user/${name}`;
export const roleArn = (name: string) => `arn:aws:iam::${ACCOUNT}:role/${name}`;
export const imageArnOf = (name: string) => `arn:aws:lambda:${DEFAULTS.region}:${ACCOUNT}:microvm-image:${name}`;

export function iamClient(url: string, credentials: Keys, extra: Record<string, unknown> = {}): IAMClient {
  return new IAMClient({ endpoint: url, region: DEFAULTS.region, credentials, maxAttempts: 1, ...extra });
}

export function stsClient(url: string, credentials: Keys, extra: Record<string, unknown> = {}): STSClient {
  return new STSClient({ endpoint: url, region: DEFAULTS.region, credentials, maxAttempts: 1, ...extra });
}

/** A policy document with these statements. */
export function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}

export const allow = (action: string | string[], resource: string | string[] = "*", condition?: Record<string, unknown>) => ({ Effect: "Allow", Action: action, Resource: resource, ...(condition ? { Condition: condition } : {}) });
export const deny = (action: string | string[], resource: string | string[] = "*", condition?: Record<string, unknown>) => ({ Effect: "Deny", Action: action, Resource: resource, ...(condition ? { Condition: condition } : {}) });

/** A new user with `document` as its one inline policy (none when undefined), and an access key of it. */
export async function userWithPolicy(iam: IAMClient, name: string, document?: string): Promise<Keys> {
  await iam.send(new CreateUserCommand({ UserName: name }));
  if (document) await iam.send(new PutUserPolicyCommand({ UserName: name, PolicyName: "main", PolicyDocument: document }));
  const { AccessKey } = await iam.send(new CreateAccessKeyCommand({ UserName: name }));
  return { accessKeyId: AccessKey!.AccessKeyId!, secretAccessKey: AccessKey!.SecretAccessKey! };
}

/** A signed awsQuery POST / (form body), returned raw. */
export async function queryRequest(url: string, credentials: Keys, service: "iam" | "sts", form: Record<string, string>, opts: { tamper?: (body: string) => string } = {}): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const body = new URLSearchParams(form).toString();
  const signer = new SignatureV4({ credentials, region: DEFAULTS.region, service, sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({
    method: "POST", protocol: "http:", hostname: u.hostname, port: Number(u.port), path: "/",
    headers: { host: u.host, "content-type": "application/x-www-form-urlencoded; charset=utf-8" }, body,
  }));
  const res = await fetch(`${url}/`, { method: "POST", headers: signed.headers as Record<string, string>, body: opts.tamper ? opts.tamper(body) : body });
  return { status: res.status, body: await res.text() };
}
