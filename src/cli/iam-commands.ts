// `lmvm iam <command>` and `lmvm sts <command>`: the AWS CLI's `aws iam …` and
// `aws sts …` commands lmvm's IAM and STS APIs answer, with the same flags,
// run through the official SDK clients (@aws-sdk/client-iam, client-sts)
// against the local (or given) lmvm server. Policy documents are given inline
// or as file://path, and printed decoded (IAM sends them URL-encoded), as the
// AWS CLI prints them. A leaf: it loads no server code.

import { resolveConnection, type ConnectionOptions } from "./connection.js";
import { commandOptions, splitArgs, UsageError } from "./flags.js";
import { applyQuery, plain, render } from "./output.js";

type Kind = "string" | "integer" | "document" | "tags" | "status";

interface Flag {
  name: string;
  member: string;
  kind: Kind;
  required?: boolean;
  help: string;
}

interface Command {
  operation: string;
  summary: string;
  flags: Flag[];
  /** The list member a paginated command merges across pages (IsTruncated/Marker). */
  pages?: string;
}

const USER: Flag = { name: "user-name", member: "UserName", kind: "string", required: true, help: "The name of the IAM user (letters, digits and +=,.@_-, at most 64)." };
const OWN_USER: Flag = { ...USER, required: false, help: "The name of the IAM user; left out, the user whose access key signs the request." };
const ROLE: Flag = { name: "role-name", member: "RoleName", kind: "string", required: true, help: "The name of the IAM role (letters, digits and +=,.@_-, at most 64)." };
const POLICY_NAME: Flag = { name: "policy-name", member: "PolicyName", kind: "string", required: true, help: "The name of the inline policy." };
const DOCUMENT_HELP = 'The policy document, as JSON inline or file://path: {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:GetMicrovm", "Resource": "*"}]}.';
const POLICY_DOCUMENT: Flag = { name: "policy-document", member: "PolicyDocument", kind: "document", required: true, help: DOCUMENT_HELP };
const TAGS: Flag = { name: "tags", member: "Tags", kind: "tags", help: "Tags as Key=k,Value=v (one per argument) or JSON [{\"Key\": \"k\", \"Value\": \"v\"}]." };
const PATH_PREFIX: Flag = { name: "path-prefix", member: "PathPrefix", kind: "string", help: "Only those whose path starts with this prefix (default /, all)." };
const ACCESS_KEY_ID: Flag = { name: "access-key-id", member: "AccessKeyId", kind: "string", required: true, help: "The access key id (AKIA…)." };

export const IAM_COMMANDS: Record<string, Command> = {
  "create-user": { operation: "CreateUser", summary: "Creates an IAM user; it can do nothing until a policy allows it.", flags: [USER, { name: "path", member: "Path", kind: "string", help: "The path of the user (default /), e.g. /team/." }, TAGS] },
  "get-user": { operation: "GetUser", summary: "Retrieves an IAM user; without --user-name, the caller's own user.", flags: [OWN_USER] },
  "list-users": { operation: "ListUsers", summary: "Lists the account's IAM users.", flags: [PATH_PREFIX], pages: "Users" },
  "delete-user": { operation: "DeleteUser", summary: "Deletes an IAM user that has no access keys and no policies left.", flags: [USER] },
  "create-access-key": { operation: "CreateAccessKey", summary: "Creates an access key (AKIA…) and its secret for a user; the secret is shown only now.", flags: [OWN_USER] },
  "update-access-key": { operation: "UpdateAccessKey", summary: "Deactivates (Inactive) or reactivates (Active) an access key.", flags: [OWN_USER, ACCESS_KEY_ID, { name: "status", member: "Status", kind: "status", required: true, help: "Active | Inactive." }] },
  "delete-access-key": { operation: "DeleteAccessKey", summary: "Deletes an access key.", flags: [OWN_USER, ACCESS_KEY_ID] },
  "list-access-keys": { operation: "ListAccessKeys", summary: "Lists a user's access keys (never their secrets).", flags: [OWN_USER], pages: "AccessKeyMetadata" },
  "put-user-policy": { operation: "PutUserPolicy", summary: "Adds or replaces an inline policy of a user.", flags: [USER, POLICY_NAME, POLICY_DOCUMENT] },
  "get-user-policy": { operation: "GetUserPolicy", summary: "Retrieves an inline policy of a user.", flags: [USER, POLICY_NAME] },
  "delete-user-policy": { operation: "DeleteUserPolicy", summary: "Deletes an inline policy of a user.", flags: [USER, POLICY_NAME] },
  "list-user-policies": { operation: "ListUserPolicies", summary: "Lists the names of a user's inline policies.", flags: [USER], pages: "PolicyNames" },
  "create-role": {
    operation: "CreateRole",
    summary: "Creates an IAM role with a trust policy saying who may assume it.",
    flags: [
      ROLE,
      { name: "assume-role-policy-document", member: "AssumeRolePolicyDocument", kind: "document", required: true, help: 'The trust policy, as JSON inline or file://path: {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]}.' },
      { name: "path", member: "Path", kind: "string", help: "The path of the role (default /)." },
      { name: "description", member: "Description", kind: "string", help: "A description of the role." },
      { name: "max-session-duration", member: "MaxSessionDuration", kind: "integer", help: "The longest session AssumeRole grants, 3600 to 43200 seconds (default 3600)." },
      TAGS,
    ],
  },
  "get-role": { operation: "GetRole", summary: "Retrieves an IAM role, its trust policy included.", flags: [ROLE] },
  "list-roles": { operation: "ListRoles", summary: "Lists the account's IAM roles.", flags: [PATH_PREFIX], pages: "Roles" },
  "delete-role": { operation: "DeleteRole", summary: "Deletes an IAM role that has no policies left.", flags: [ROLE] },
  "update-assume-role-policy": { operation: "UpdateAssumeRolePolicy", summary: "Replaces a role's trust policy.", flags: [ROLE, POLICY_DOCUMENT] },
  "put-role-policy": { operation: "PutRolePolicy", summary: "Adds or replaces an inline policy of a role.", flags: [ROLE, POLICY_NAME, POLICY_DOCUMENT] },
  "get-role-policy": { operation: "GetRolePolicy", summary: "Retrieves an inline policy of a role.", flags: [ROLE, POLICY_NAME] },
  "delete-role-policy": { operation: "DeleteRolePolicy", summary: "Deletes an inline policy of a role.", flags: [ROLE, POLICY_NAME] },
  "list-role-policies": { operation: "ListRolePolicies", summary: "Lists the names of a role's inline policies.", flags: [ROLE], pages: "PolicyNames" },
};

export const STS_COMMANDS: Record<string, Command> = {
  "get-caller-identity": { operation: "GetCallerIdentity", summary: "Shows who the credentials belong to: account, user id and ARN (needs no permission).", flags: [] },
  "assume-role": {
    operation: "AssumeRole",
    summary: "Returns temporary credentials (ASIA… key, secret, session token) for a role whose trust policy lets the caller assume it.",
    flags: [
      { name: "role-arn", member: "RoleArn", kind: "string", required: true, help: "The ARN of the role, arn:aws:iam::<account>:role/<name>." },
      { name: "role-session-name", member: "RoleSessionName", kind: "string", required: true, help: "A name for the session (2 to 64 of letters, digits and =,.@-), shown in its ARN." },
      { name: "duration-seconds", member: "DurationSeconds", kind: "integer", help: "How long the credentials last: 900 seconds up to the role's MaxSessionDuration (default 3600)." },
      { name: "policy", member: "Policy", kind: "document", help: "A session policy, JSON inline or file://path: the session may do only what both it and the role's policies allow." },
      { name: "external-id", member: "ExternalId", kind: "string", help: "The external id the role's trust policy asks for (sts:ExternalId)." },
      TAGS,
    ],
  },
};

const GLOBAL = ["endpoint-url", "region", "output", "query", "profile", "data-dir", "cli-input-json", "max-items", "starting-token"];
const BOOLEANS = new Set(["no-paginate", "debug", "help", "no-cli-pager", "no-verify-ssl"]);

function commandsOf(service: "iam" | "sts"): Record<string, Command> {
  return service === "iam" ? IAM_COMMANDS : STS_COMMANDS;
}

export function serviceHelp(service: "iam" | "sts"): string {
  const title = service === "iam" ? "lmvm iam: the `aws iam` commands lmvm's IAM API answers (users, access keys, roles, inline policies)." : "lmvm sts: the `aws sts` commands lmvm's STS API answers.";
  const lines = [title, "", "USAGE", `    lmvm ${service} <command> [options]`, `    lmvm ${service} <command> help`, "", "COMMANDS"];
  for (const [name, c] of Object.entries(commandsOf(service))) lines.push(`    ${name.padEnd(28)} ${c.summary}`);
  return `${lines.join("\n")}\n`;
}

export function commandHelp(service: "iam" | "sts", name: string): string {
  const c = commandsOf(service)[name]!;
  const lines = ["NAME", `    ${service} ${name}`, "", "DESCRIPTION", `    ${c.summary}`, "", "SYNOPSIS", `    lmvm ${service} ${name}`];
  for (const f of c.flags) lines.push(`        ${f.required ? "" : "["}--${f.name} <value>${f.required ? "" : "]"}`);
  if (c.pages) lines.push("        [--max-items <value>] [--starting-token <value>] [--no-paginate]");
  lines.push("", "OPTIONS");
  for (const f of c.flags) lines.push(`    --${f.name} (${f.kind === "document" ? "string" : f.kind === "tags" ? "list" : f.kind === "status" ? "string" : f.kind})${f.required ? " [required]" : ""}`, `        ${f.help}`);
  lines.push("", "GLOBAL OPTIONS", "    --endpoint-url, --region, --output json|text|table, --query <jmespath>, --profile, --data-dir, --cli-input-json: as for every lmvm command.", "");
  return lines.join("\n");
}

async function readValue(flag: string, value: string): Promise<string> {
  if (!value.startsWith("file://")) return value;
  const { readFileSync } = await import("node:fs");
  try {
    return readFileSync(value.slice("file://".length), "utf8");
  } catch (err) {
    throw new UsageError(`Error parsing parameter '--${flag}': Unable to load paramfile ${value}: ${(err as Error).message}`);
  }
}

function parseTags(values: string[]): { Key: string; Value: string }[] {
  const joined = values.join(" ").trim();
  if (joined.startsWith("[")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(joined);
    } catch (err) {
      throw new UsageError(`Error parsing parameter '--tags': Invalid JSON: ${(err as Error).message}\nJSON received: ${joined}`);
    }
    if (!Array.isArray(parsed) || !parsed.every((t) => t && typeof t.Key === "string" && typeof (t.Value ?? "") === "string")) {
      throw new UsageError('--tags must be a JSON list of {"Key": "...", "Value": "..."}.');
    }
    return parsed.map((t: { Key: string; Value?: string }) => ({ Key: t.Key, Value: t.Value ?? "" }));
  }
  return values.map((v) => {
    const m = /^Key=([^,]*),Value=(.*)$/.exec(v);
    if (!m) throw new UsageError(`Error parsing parameter '--tags': Expected: 'Key=k,Value=v', received: '${v}'`);
    return { Key: m[1]!, Value: m[2]! };
  });
}

async function flagValue(f: Flag, values: string[]): Promise<unknown> {
  if (!values.length) throw new UsageError(`argument --${f.name}: expected one argument`);
  if (f.kind === "tags") return parseTags(values);
  if (values.length > 1) throw new UsageError(`argument --${f.name}: expected one argument, got ${values.length}`);
  const text = await readValue(f.name, values[0]!);
  if (f.kind === "integer") {
    if (!/^\d+$/.test(text)) throw new UsageError(`Error parsing parameter '--${f.name}': expected a whole number, got '${text}'.`);
    return Number(text);
  }
  if (f.kind === "status" && text !== "Active" && text !== "Inactive") throw new UsageError(`argument --${f.name}: Invalid choice '${text}', valid choices are: Active | Inactive`);
  if (f.kind === "document") {
    try {
      JSON.parse(text);
    } catch (err) {
      throw new UsageError(`Error parsing parameter '--${f.name}': the policy document is not valid JSON: ${(err as Error).message}`);
    }
  }
  return text;
}

/** IAM sends policy documents URL-encoded; the AWS CLI prints them as JSON, and so does lmvm. */
function decodeDocuments(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeDocuments);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => {
      if ((k === "PolicyDocument" || k === "AssumeRolePolicyDocument") && typeof v === "string") {
        try {
          return [k, JSON.parse(decodeURIComponent(v))];
        } catch {
          return [k, v];
        }
      }
      return [k, decodeDocuments(v)];
    }));
  }
  return value;
}

/** A service error, as the AWS CLI reports one (main.ts prints `type` and `operation`). */
class ServiceError extends Error {
  override readonly name = "ServiceError";
  constructor(readonly type: string, readonly operation: string, message: string) {
    super(message);
  }
}

type Client = { send(command: unknown): Promise<Record<string, unknown>>; destroy(): void };

async function clientFor(service: "iam" | "sts", conn: { endpoint: string; region: string; credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } }): Promise<{ client: Client; commands: Record<string, new (input: unknown) => unknown> }> {
  const config = { endpoint: conn.endpoint, region: conn.region, ...(conn.credentials ? { credentials: conn.credentials } : {}) };
  if (service === "iam") {
    const sdk = await import("@aws-sdk/client-iam");
    return { client: new sdk.IAMClient(config) as unknown as Client, commands: sdk as unknown as Record<string, new (input: unknown) => unknown> };
  }
  const sdk = await import("@aws-sdk/client-sts");
  return { client: new sdk.STSClient(config) as unknown as Client, commands: sdk as unknown as Record<string, new (input: unknown) => unknown> };
}

/** Runs `lmvm iam …` or `lmvm sts …`; returns the exit code. */
export async function serviceCommand(service: "iam" | "sts", argv: string[]): Promise<number> {
  const args = splitArgs(argv, BOOLEANS, new Set(GLOBAL));
  const name = args.positionals.shift();
  if (!name || name === "help") {
    process.stdout.write(serviceHelp(service));
    return 0;
  }
  const c = commandsOf(service)[name];
  if (!c) throw new UsageError(`Invalid choice: '${name}'. Run 'lmvm ${service} help' for the commands.`);
  if (args.flags.has("help") || args.positionals[0] === "help") {
    process.stdout.write(commandHelp(service, name));
    return 0;
  }
  const { single, output } = commandOptions(args, [...GLOBAL, ...BOOLEANS, ...c.flags.map((f) => f.name)], `lmvm ${service} ${name} help`);

  const input: Record<string, unknown> = {};
  const cliInput = single("cli-input-json");
  if (cliInput) {
    const text = await readValue("cli-input-json", cliInput);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`Error parsing parameter '--cli-input-json': Invalid JSON: ${(err as Error).message}`);
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new UsageError("--cli-input-json must be a JSON object.");
    Object.assign(input, parsed);
  }
  for (const f of c.flags) {
    const values = args.flags.get(f.name);
    if (values) input[f.member] = await flagValue(f, values);
  }
  const missing = c.flags.filter((f) => f.required && input[f.member] === undefined).map((f) => `--${f.name}`);
  if (missing.length) throw new UsageError(`the following arguments are required: ${missing.join(", ")}`);

  const conn = resolveConnection({ endpointUrl: single("endpoint-url"), region: single("region"), profile: single("profile"), dataDir: single("data-dir") } as ConnectionOptions);
  const { client, commands } = await clientFor(service, conn);
  const Command = commands[`${c.operation}Command`]!;
  const call = async (extra: Record<string, unknown>) => {
    try {
      return await client.send(new Command({ ...input, ...extra }));
    } catch (err) {
      const e = err as { name?: string; message?: string; $metadata?: unknown };
      if (e.$metadata) throw new ServiceError(e.name ?? "Unknown", c.operation, e.message ?? "");
      throw err;
    }
  };
  try {
    let response: Record<string, unknown>;
    if (c.pages && !args.flags.has("no-paginate")) {
      const maxItems = single("max-items") ? Number(single("max-items")) : Infinity;
      let marker = single("starting-token");
      const items: unknown[] = [];
      for (;;) {
        const size = Math.min(1000, maxItems - items.length);
        const page = await call({ ...(Number.isFinite(size) ? { MaxItems: size } : {}), ...(marker ? { Marker: marker } : {}) });
        items.push(...((page[c.pages] as unknown[]) ?? []));
        marker = page.IsTruncated ? (page.Marker as string) : undefined;
        if (!marker) {
          response = { [c.pages]: items };
          break;
        }
        if (items.length >= maxItems) {
          response = { [c.pages]: items, NextToken: marker };
          break;
        }
      }
    } else {
      response = await call({});
    }
    const result = await applyQuery(decodeDocuments(plain(response)), single("query"));
    const empty = result && typeof result === "object" && !Array.isArray(result) && Object.keys(result).length === 0;
    if (!empty) process.stdout.write(render(result, output, c.operation));
    return 0;
  } finally {
    client.destroy();
  }
}
