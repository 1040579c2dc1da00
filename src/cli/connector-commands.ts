// `lmvm create-network-connector` and its siblings: the AWS CLI's
// `aws lambda-core …` commands, with the same flags. No official JavaScript
// SDK for Lambda Core exists on npm, so this is a thin restJson1 client: it
// signs each request with SigV4 for `lambda` (the SDK's own signer) and sends
// it with fetch. A leaf: it loads no server code.

import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { CONNECTORS_PATH } from "../api/wire.js";
import { resolveConnection, type ConnectionOptions } from "./connection.js";
import { commandOptions, splitArgs, UsageError } from "./flags.js";
import { applyQuery, render } from "./output.js";

interface Flag {
  name: string;
  member: string;
  required?: boolean;
  kind: "string" | "json" | "map";
  help: string;
}

interface ConnectorCommand {
  operation: string;
  summary: string;
  method: "GET" | "POST" | "PUT" | "DELETE";
  flags: Flag[];
  /** The list member a paginated command merges across pages. */
  pages?: string;
  path(input: Record<string, unknown>): string;
}

const IDENTIFIER: Flag = { name: "identifier", member: "Identifier", required: true, kind: "string", help: "A flexible identifier that accepts a network connector ID, name, or ARN (version-qualified where the operation allows)." };
const STATE: Flag = { name: "state", member: "State", kind: "string", help: "Only connectors (or versions) in this state: PENDING | ACTIVE | INACTIVE | FAILED | DELETING | DELETE_FAILED." };
const CONFIGURATION_HELP =
  'The network configuration, as JSON (or file://path). lmvm grants what a plain host can express: {"HostEgressConfiguration": {"Destinations": [{"Cidr": "10.77.0.0/24", "Protocol": "tcp", "PortRange": {"From": 5432, "To": 5432}}], "NetworkProtocol": "IPv4", "AssociatedComputeResourceTypes": ["MicroVm"]}}; a destination may give HostName instead of Cidr. A VpcEgressConfiguration is accepted but fails to provision: lmvm has no VPCs.';
const id = (input: Record<string, unknown>) => `${CONNECTORS_PATH}/${encodeURIComponent(String(input.Identifier))}`;

export const CONNECTOR_COMMANDS: Record<string, ConnectorCommand> = {
  "create-network-connector": {
    operation: "CreateNetworkConnector",
    summary: "Creates a network connector that grants MicroVMs part of a private network; it is PENDING until provisioned, then ACTIVE or FAILED.",
    method: "POST",
    path: () => CONNECTORS_PATH,
    flags: [
      { name: "name", member: "Name", required: true, kind: "string", help: "A unique name for the network connector within your account and Region (letters, digits, '-' and '_', at most 64)." },
      { name: "configuration", member: "Configuration", required: true, kind: "json", help: CONFIGURATION_HELP },
      { name: "operator-role", member: "OperatorRole", kind: "string", help: "The ARN of the IAM role that manages the connector's resources (recorded; lmvm needs none)." },
      { name: "client-token", member: "ClientToken", kind: "string", help: "A unique, case-sensitive identifier that makes the request idempotent." },
      { name: "tags", member: "Tags", kind: "map", help: "Tags as key=value,key2=value2 or JSON." },
    ],
  },
  "get-network-connector": {
    operation: "GetNetworkConnector",
    summary: "Retrieves the configuration, state and metadata of a network connector (a version-qualified ARN gets that version).",
    method: "GET",
    path: id,
    flags: [IDENTIFIER],
  },
  "list-network-connectors": {
    operation: "ListNetworkConnectors",
    summary: "Returns a paginated list of the network connectors in your account for the current Region.",
    method: "GET",
    path: () => CONNECTORS_PATH,
    pages: "NetworkConnectors",
    flags: [STATE],
  },
  "list-network-connector-versions": {
    operation: "ListNetworkConnectorVersions",
    summary: "Returns a paginated list of the versions of a network connector.",
    method: "GET",
    path: (input) => `${id(input)}/versions`,
    pages: "NetworkConnectorVersions",
    flags: [{ ...IDENTIFIER, help: "The connector ID, name, or unqualified ARN." }, STATE],
  },
  "update-network-connector": {
    operation: "UpdateNetworkConnector",
    summary: "Updates a network connector's configuration or operator role: a new immutable version; the connector stays ACTIVE while LastUpdateStatus goes InProgress, then Successful or Failed.",
    method: "PUT",
    path: id,
    flags: [
      IDENTIFIER,
      { name: "configuration", member: "Configuration", kind: "json", help: `The full new configuration (it replaces the current one). ${CONFIGURATION_HELP}` },
      { name: "operator-role", member: "OperatorRole", kind: "string", help: "The updated ARN of the operator role." },
      { name: "client-token", member: "ClientToken", kind: "string", help: "A unique, case-sensitive identifier that makes the request idempotent." },
    ],
  },
  "delete-network-connector": {
    operation: "DeleteNetworkConnector",
    summary: "Deletes a network connector (DELETING, then gone), or one old version by its version-qualified ARN; refused while MicroVMs or builds use it.",
    method: "DELETE",
    path: id,
    flags: [IDENTIFIER],
  },
};

const GLOBAL = ["endpoint-url", "region", "output", "query", "profile", "data-dir", "cli-input-json", "max-items", "page-size", "starting-token"];
const BOOLEANS = new Set(["no-paginate", "debug", "help", "no-cli-pager", "no-verify-ssl"]);

export function connectorCommandHelp(name: string): string {
  const c = CONNECTOR_COMMANDS[name]!;
  const lines = ["NAME", `    ${name}`, "", "DESCRIPTION", `    ${c.summary}`, "", "SYNOPSIS", `    lmvm ${name}`];
  for (const f of c.flags) lines.push(`        ${f.required ? "" : "["}--${f.name} <value>${f.required ? "" : "]"}`);
  if (c.pages) lines.push("        [--max-items <value>] [--starting-token <value>] [--page-size <value>] [--no-paginate]");
  lines.push("", "OPTIONS");
  for (const f of c.flags) lines.push(`    --${f.name} (${f.kind === "json" ? "structure" : f.kind})${f.required ? " [required]" : ""}`, `        ${f.help}`);
  lines.push("", "GLOBAL OPTIONS", "    --endpoint-url, --region, --output json|text|table, --query <jmespath>, --profile, --data-dir, --cli-input-json: as for every lmvm command.", "");
  return lines.join("\n");
}

function parseJson(flag: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`Error parsing parameter '--${flag}': Invalid JSON: ${(err as Error).message}\nJSON received: ${text}`);
  }
}

async function readValue(value: string): Promise<string> {
  if (!value.startsWith("file://")) return value;
  const { readFileSync } = await import("node:fs");
  try {
    return readFileSync(value.slice("file://".length), "utf8").replace(/\n$/, "");
  } catch (err) {
    throw new UsageError(`Error parsing parameter: Unable to load paramfile ${value}: ${(err as Error).message}`);
  }
}

async function flagValue(f: Flag, values: string[]): Promise<unknown> {
  if (!values.length) throw new UsageError(`argument --${f.name}: expected one argument`);
  const text = await readValue(values.join(f.kind === "map" ? "," : " "));
  if (f.kind === "string") {
    if (values.length > 1) throw new UsageError(`argument --${f.name}: expected one argument, got ${values.length}`);
    return text;
  }
  if (f.kind === "json" || /^\s*\{/.test(text)) return parseJson(f.name, text);
  // key=value,key2=value2
  const out: Record<string, string> = {};
  for (const pair of text.split(",")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`Error parsing parameter '--${f.name}': Expected: '=', received: '${pair}' (write key=value,key2=value2 or JSON)`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** A service error, as the AWS CLI reports one. */
export class ServiceError extends Error {
  constructor(readonly type: string, readonly operation: string, message: string) {
    super(message);
  }
}

async function send(conn: { endpoint: string; region: string; credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } }, c: ConnectorCommand, input: Record<string, unknown>, query: Record<string, string>): Promise<Record<string, unknown>> {
  const url = new URL(conn.endpoint);
  const body = c.method === "POST" || c.method === "PUT" ? JSON.stringify(Object.fromEntries(Object.entries(input).filter(([k]) => k !== "Identifier"))) : undefined;
  const path = c.path(input);
  const signer = new SignatureV4({ credentials: conn.credentials, region: conn.region, service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({
    method: c.method,
    protocol: url.protocol,
    hostname: url.hostname,
    ...(url.port ? { port: Number(url.port) } : {}),
    path,
    query,
    headers: { host: url.host, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body } : {}),
  }));
  const qs = new URLSearchParams(query).toString();
  const res = await fetch(`${url.origin}${path}${qs ? `?${qs}` : ""}`, { method: c.method, headers: signed.headers as Record<string, string>, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { message: text };
  }
  if (!res.ok) {
    const type = res.headers.get("x-amzn-errortype")?.split(":")[0] ?? `HTTP ${res.status}`;
    throw new ServiceError(type, c.operation, String(parsed.message ?? parsed.Message ?? text));
  }
  return parsed;
}

/** Runs one connector command; returns the exit code. */
export async function connectorCommand(name: string, argv: string[]): Promise<number> {
  const c = CONNECTOR_COMMANDS[name]!;
  const args = splitArgs(argv, BOOLEANS, new Set(GLOBAL));
  if (args.flags.has("help") || args.positionals[0] === "help") {
    process.stdout.write(connectorCommandHelp(name));
    return 0;
  }
  const { single, output } = commandOptions(args, [...GLOBAL, ...BOOLEANS, ...c.flags.map((f) => f.name)], `lmvm ${name} help`);

  const input: Record<string, unknown> = {};
  const cliInput = single("cli-input-json");
  if (cliInput) {
    const parsed = parseJson("cli-input-json", await readValue(cliInput));
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new UsageError("--cli-input-json must be a JSON object.");
    Object.assign(input, parsed);
  }
  for (const f of c.flags) {
    const values = args.flags.get(f.name);
    if (values) input[f.member] = await flagValue(f, values);
  }
  const missing = c.flags.filter((f) => f.required && input[f.member] === undefined).map((f) => `--${f.name}`);
  if (missing.length) throw new UsageError(`the following arguments are required: ${missing.join(", ")}`);

  const resolved = resolveConnection({ endpointUrl: single("endpoint-url"), region: single("region"), profile: single("profile"), dataDir: single("data-dir") } as ConnectionOptions);
  const credentials = resolved.credentials ?? (await defaultCredentials(resolved.region));
  const conn = { endpoint: resolved.endpoint, region: resolved.region, credentials };

  let response: Record<string, unknown>;
  const filters: Record<string, string> = typeof input.State === "string" ? { State: input.State } : {};
  if (c.pages) {
    const maxItems = single("max-items") ? Number(single("max-items")) : Infinity;
    const pageSize = single("page-size");
    let marker = single("starting-token");
    if (args.flags.has("no-paginate")) {
      response = await send(conn, c, input, { ...filters, ...(pageSize ? { MaxItems: pageSize } : {}), ...(marker ? { Marker: marker } : {}) });
    } else {
      const items: unknown[] = [];
      for (;;) {
        // A page never goes past --max-items, so the marker it returns is exactly where the next call starts.
        const size = Math.min(pageSize ? Number(pageSize) : Infinity, maxItems - items.length);
        const page = await send(conn, c, input, { ...filters, ...(Number.isFinite(size) ? { MaxItems: String(size) } : {}), ...(marker ? { Marker: marker } : {}) });
        items.push(...((page[c.pages] as unknown[]) ?? []));
        marker = page.NextMarker as string | undefined;
        if (!marker) {
          response = { [c.pages]: items };
          break;
        }
        if (items.length >= maxItems) {
          response = { [c.pages]: items, NextToken: marker };
          break;
        }
      }
    }
  } else {
    response = await send(conn, c, input, {});
  }
  const result = await applyQuery(response, single("query"));
  process.stdout.write(render(result, output, c.operation));
  return 0;
}

/** The AWS SDK's default credential chain, for a CLI with no lmvm credentials file at hand. */
async function defaultCredentials(region: string): Promise<{ accessKeyId: string; secretAccessKey: string; sessionToken?: string }> {
  const { LambdaMicrovmsClient } = await import("@aws-sdk/client-lambda-microvms");
  const client = new LambdaMicrovmsClient({ region });
  try {
    return await client.config.credentials();
  } finally {
    client.destroy();
  }
}
