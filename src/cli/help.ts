// Help text for every command, from the SDK's own documentation comments
// (dist-types/*.d.ts ship with the package), so it says what AWS says.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { inputSchema, structureMembers, type OperationModel, type SdkOperationName } from "../api/sdk-model.js";
import { CONNECTOR_COMMANDS } from "./connector-commands.js";
import { kebab } from "./flags.js";
import { memberDocs, structuredFlagHelp } from "./shape-help.js";

function read(rel: string): string {
  try {
    const sdkRoot = dirname(createRequire(import.meta.url).resolve("@aws-sdk/client-lambda-microvms/package.json"));
    return readFileSync(join(sdkRoot, rel), "utf8");
  } catch {
    return "";
  }
}

const stripHtml = (s: string) => s.replace(/<\/?[a-z]+[^>]*>/g, "").replace(/\\\{/g, "{").replace(/\\\}/g, "}").replace(/\s+/g, " ").trim();

export function operationSummary(name: string): string {
  const doc = read(`dist-types/commands/${name}Command.d.ts`);
  const m = /\* <p>([\s\S]*?)<\/p>/.exec(doc);
  return m ? stripHtml(m[1]!) : "";
}

const GLOBAL_OPTIONS = [
  ["--endpoint-url <url>", "Control API to call (default: the local server, from the data directory's server.json, else http://127.0.0.1:7600)."],
  ["--region <region>", "Region to sign for (default: AWS_REGION, else the local server's region)."],
  ["--output json|text|table", "Output format (default: json)."],
  ["--query <jmespath>", "JMESPath expression applied to the response."],
  ["--cli-input-json <json|file://path>", "Read the request from JSON; flags given as well take precedence."],
  ["--profile <name>", "Profile of the credentials file to use (default: default)."],
  ["--data-dir <dir>", "lmvm data directory holding credentials and server.json (default: LMVM_DATA_DIR, else /var/lib/lmvm as root)."],
];

export function commandHelp(op: OperationModel): string {
  const docs = new Map([...memberDocs(`${op.name}Request`), ...memberDocs(`${op.name}Input`)]);
  const targets = new Map(structureMembers(inputSchema(op.name as SdkOperationName)).map((m) => [m.name, m.target]));
  const lines = [`NAME`, `    ${kebab(op.name)}`, ``, `DESCRIPTION`, `    ${operationSummary(op.name)}`, ``, `SYNOPSIS`, `    lmvm ${kebab(op.name)}`];
  for (const m of op.input) lines.push(`        ${m.required ? "" : "["}--${kebab(m.name)} <value>${m.required ? "" : "]"}`);
  lines.push(``, `OPTIONS`);
  for (const m of op.input) {
    const structured = ["structure", "union", "list", "map", "string-map", "string-list"].includes(m.kind);
    const kind = { number: "integer", "string-list": "list", "string-map": "map", union: "structure" }[m.kind as string] ?? m.kind;
    lines.push(`    --${kebab(m.name)} (${kind})${m.required ? " [required]" : ""}`);
    const doc = docs.get(m.name)?.doc;
    if (doc) lines.push(`        ${doc}`);
    if (structured) lines.push(...structuredFlagHelp(targets.get(m.name), "        ", docs.get(m.name)?.type));
  }
  lines.push(``, `GLOBAL OPTIONS`);
  for (const [flag, text] of GLOBAL_OPTIONS) lines.push(`    ${flag}`, `        ${text}`);
  return `${lines.join("\n")}\n`;
}

export function topHelp(ops: OperationModel[]): string {
  const lines = [
    "lmvm: self-hosted AWS Lambda MicroVMs. The commands mirror `aws lambda-microvms`.",
    "",
    "USAGE",
    "    lmvm <command> [options]",
    "    lmvm <command> help",
    "",
    "PLATFORM",
    "    server                 Start the platform (control API on http://127.0.0.1:7600). `lmvm server help` for flags.",
    "    agent                  Run sandboxes on this host for a cluster's server. `lmvm cluster help`.",
    "    cluster init|issue     Make the cluster CA, issue node certificates.",
    "    hosts list|drain       The cluster's hosts; stop placing MicroVMs on one.",
    "    logs build <image> <version> [--follow]",
    "                           Print an image build's log; --follow streams it until the build ends.",
    "    logs microvm <id> [--follow]",
    "                           Print a MicroVM app's output; --follow streams it while it runs.",
    "    shell <id>             Open an interactive shell inside a MicroVM (needs the SHELL_INGRESS connector).",
    "    exec <id> -- <command> [args...]",
    "                           Run one command inside a MicroVM; exits with its exit code.",
    "    audit                  Print the audit trail of API calls (who, what, on what, outcome); `lmvm audit help`.",
    "    aws-models install [--dir <dir>]",
    "                           Install the lambda-microvms model for the AWS CLI and boto3 (~/.aws/models).",
    "    wait <waiter> [options]",
    "                           Poll until an image is created, a version built, a MicroVM running, suspended",
    "                           or terminated. `lmvm wait help` lists the waiters.",
    "",
    "IDENTITY",
    "    iam                    Users, access keys, roles and inline policies: the commands of `aws iam`.",
    "                           `lmvm iam help` lists them, e.g. lmvm iam create-user --user-name alice.",
    "    sts                    `aws sts` get-caller-identity and assume-role. `lmvm sts help` lists them.",
    "",
    "COMMANDS",
  ];
  for (const op of ops) lines.push(`    ${kebab(op.name).padEnd(40)} ${operationSummary(op.name).split(". ")[0]}`);
  lines.push("", "NETWORK CONNECTORS (the commands of `aws lambda-core`)");
  for (const [name, c] of Object.entries(CONNECTOR_COMMANDS)) lines.push(`    ${name.padEnd(40)} ${c.summary.split(": ")[0]!.split("; ")[0]}`);
  return `${lines.join("\n")}\n`;
}
