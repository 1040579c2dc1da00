// `lmvm`: the AWS CLI's `lambda-microvms` commands, run through the official
// SDK client against the local (or given) lmvm server, plus `lmvm server`.
// Exit codes follow the AWS CLI: 252 bad usage, 254 service error, 255 other.

import * as sdk from "@aws-sdk/client-lambda-microvms";
// Leaf modules only (the SDK model, wire constants, data-directory paths): a
// client call must not load the server, its database driver or native addons.
// The commands that need more are imported when they run.
import { OPERATIONS, type OperationModel } from "../api/sdk-model.js";
import { connect } from "./connection.js";
import { buildInput, kebab, splitArgs, UsageError } from "./flags.js";
import { applyQuery, plain, render, type OutputFormat } from "./output.js";

const GLOBAL_FLAGS = ["endpoint-url", "region", "output", "query", "profile", "data-dir", "cli-input-json", "max-items", "page-size", "starting-token", "build-id"];
const BOOLEAN_FLAGS = new Set(["no-paginate", "debug", "help", "no-cli-pager", "no-verify-ssl"]);
const PAGINATED = new Set(["ListMicrovmImages", "ListMicrovmImageVersions", "ListMicrovmImageBuilds", "ListManagedMicrovmImages", "ListManagedMicrovmImageVersions", "ListMicrovms"]);

const byCommand = new Map<string, OperationModel>(Object.values(OPERATIONS).map((op) => [kebab(op.name), op]));

type Sendable = { send(command: unknown): Promise<Record<string, unknown>> };

function single(flags: Map<string, string[]>, name: string): string | undefined {
  const v = flags.get(name);
  return v && v.length ? v[v.length - 1] : undefined;
}

/** An SDK client for the server and credentials the global flags (or the data directory) name. */
function connectWith(flags: Map<string, string[]>) {
  return connect({
    endpointUrl: single(flags, "endpoint-url"),
    region: single(flags, "region"),
    profile: single(flags, "profile"),
    dataDir: single(flags, "data-dir"),
  } as Parameters<typeof connect>[0]);
}

async function call(client: Sendable, op: OperationModel, input: Record<string, unknown>): Promise<Record<string, unknown>> {
  const Command = (sdk as unknown as Record<string, new (input: unknown) => unknown>)[`${op.name}Command`]!;
  return client.send(new Command(input));
}

/** Follows nextToken like the AWS CLI, merging `items`, within --max-items. */
async function paginate(client: Sendable, op: OperationModel, input: Record<string, unknown>, flags: Map<string, string[]>) {
  const maxItems = single(flags, "max-items") ? Number(single(flags, "max-items")) : Infinity;
  const pageSize = single(flags, "page-size");
  let nextToken = single(flags, "starting-token") ?? (input.nextToken as string | undefined);
  const items: unknown[] = [];
  for (;;) {
    const page = await call(client, op, { ...input, ...(pageSize ? { maxResults: Number(pageSize) } : {}), ...(nextToken ? { nextToken } : {}) });
    items.push(...((page.items as unknown[]) ?? []));
    nextToken = page.nextToken as string | undefined;
    if (!nextToken) return { items };
    if (items.length >= maxItems) return { items: items.slice(0, maxItems), NextToken: nextToken };
  }
}

async function runOperation(op: OperationModel, argv: string[]): Promise<number> {
  const args = splitArgs(argv, BOOLEAN_FLAGS, new Set(GLOBAL_FLAGS));
  if (args.flags.has("help") || args.positionals[0] === "help") {
    process.stdout.write((await import("./help.js")).commandHelp(op));
    return 0;
  }
  const known = new Set([...GLOBAL_FLAGS, ...BOOLEAN_FLAGS, ...op.input.map((m) => kebab(m.name))]);
  const unknown = [...args.flags.keys()].filter((f) => !known.has(f));
  if (unknown.length || args.positionals.length) {
    throw new UsageError(`Unknown options: ${[...unknown.map((f) => `--${f}`), ...args.positionals].join(", ")}\nSee 'lmvm ${kebab(op.name)} help'.`);
  }
  const output = (single(args.flags, "output") ?? process.env.AWS_DEFAULT_OUTPUT ?? "json") as OutputFormat;
  if (!["json", "text", "table"].includes(output)) throw new UsageError(`argument --output: Invalid choice '${output}', valid choices are: json | text | table`);
  const input = buildInput(op, args);
  const client = connectWith(args.flags);
  try {
    const autoPage = PAGINATED.has(op.name) && !args.flags.has("no-paginate") && input.maxResults === undefined;
    const response = autoPage ? await paginate(client, op, input, args.flags) : await call(client, op, input);
    const result = await applyQuery(plain(response), single(args.flags, "query"));
    const empty = result && typeof result === "object" && !Array.isArray(result) && Object.keys(result).length === 0;
    if (!empty) process.stdout.write(render(result, output, op.name));
    return 0;
  } finally {
    client.destroy();
  }
}

/** Global options may come before the command, as with the AWS CLI: `lmvm --region x list-microvms`. */
function splitCommand(argv: string[]): { command: string | undefined; rest: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) return { command: arg, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
    if (!arg.includes("=") && GLOBAL_FLAGS.includes(arg.slice(2))) i++;
  }
  return { command: undefined, rest: argv };
}

export async function main(argv: string[]): Promise<number> {
  const { command, rest } = splitCommand(argv);
  try {
    if (command === "version" || (!command && rest.includes("--version"))) {
      process.stdout.write("lmvm 0.1.0\n");
      return 0;
    }
    if (!command || command === "help" || command === "--help" || command === "-h") {
      process.stdout.write((await import("./help.js")).topHelp(Object.values(OPERATIONS)));
      return 0;
    }
    if (command === "logs") {
      const { logsCommand, LOGS_HELP } = await import("./logs-command.js");
      const args = splitArgs(rest, new Set([...BOOLEAN_FLAGS, "follow"]), new Set(GLOBAL_FLAGS));
      if (args.flags.has("help") || !args.positionals.length) {
        process.stdout.write(LOGS_HELP);
        return 0;
      }
      const client = connectWith(args.flags);
      try {
        return await logsCommand(client, args.positionals, args.flags);
      } finally {
        client.destroy();
      }
    }
    if (command === "shell" || command === "exec") {
      const { shellCommand, SHELL_HELP } = await import("./shell-command.js");
      const dash = rest.indexOf("--");
      const args = splitArgs(dash < 0 ? rest : rest.slice(0, dash), BOOLEAN_FLAGS, new Set([...GLOBAL_FLAGS, "ca-file"]));
      if (args.flags.has("help") || !args.positionals.length) {
        process.stdout.write(SHELL_HELP);
        return 0;
      }
      const client = connectWith(args.flags);
      try {
        return await shellCommand(client, command, args.positionals, dash < 0 ? [] : rest.slice(dash + 1), args.flags);
      } finally {
        client.destroy();
      }
    }
    if (command === "wait") {
      const { WAITERS, runWaiter, waitHelp, waiterHelp } = await import("./wait-command.js");
      const args = splitArgs(rest, BOOLEAN_FLAGS, new Set([...GLOBAL_FLAGS, "delay", "max-attempts"]));
      const [name, ...extra] = args.positionals;
      if (!name || name === "help") {
        process.stdout.write(waitHelp());
        return 0;
      }
      const waiter = WAITERS[name];
      if (!waiter) throw new UsageError(`Invalid choice: '${name}'. Run 'lmvm wait help' for the waiters.`);
      if (args.flags.has("help") || extra[0] === "help") {
        process.stdout.write(waiterHelp(name, waiter));
        return 0;
      }
      const known = new Set([...GLOBAL_FLAGS, ...BOOLEAN_FLAGS, "delay", "max-attempts", ...waiter.operation.input.map((m) => kebab(m.name))]);
      const unknown = [...args.flags.keys()].filter((f) => !known.has(f));
      if (unknown.length || extra.length) throw new UsageError(`Unknown options: ${[...unknown.map((f) => `--${f}`), ...extra].join(", ")}\nSee 'lmvm wait ${name} help'.`);
      const client = connectWith(args.flags);
      try {
        return await runWaiter(client as unknown as Sendable, waiter, args);
      } finally {
        client.destroy();
      }
    }
    if (command === "audit") {
      const { auditCommand, AUDIT_FLAGS, AUDIT_HELP } = await import("./audit-command.js");
      const args = splitArgs(rest, BOOLEAN_FLAGS, new Set([...GLOBAL_FLAGS, ...AUDIT_FLAGS]));
      if (args.flags.has("help") || args.positionals[0] === "help") {
        process.stdout.write(AUDIT_HELP);
        return 0;
      }
      const known = new Set([...GLOBAL_FLAGS, ...BOOLEAN_FLAGS, ...AUDIT_FLAGS]);
      const unknown = [...args.flags.keys()].filter((f) => !known.has(f) || ["query", "cli-input-json", "page-size", "build-id"].includes(f));
      if (unknown.length) throw new UsageError(`Unknown options: ${unknown.map((f) => `--${f}`).join(", ")}\nSee 'lmvm audit help'.`);
      return await auditCommand(args.flags, args.positionals, {
        endpointUrl: single(args.flags, "endpoint-url"),
        region: single(args.flags, "region"),
        profile: single(args.flags, "profile"),
        dataDir: single(args.flags, "data-dir"),
      } as Parameters<typeof auditCommand>[2]);
    }
    if (command === "server") {
      const { serverCommand, SERVER_HELP } = await import("./server-command.js");
      if (rest[0] === "help") {
        process.stdout.write(SERVER_HELP);
        return 0;
      }
      await serverCommand(rest);
      return 0;
    }
    if (command === "cluster" || command === "hosts" || command === "agent") {
      const { agentCommand, clusterCommand, hostsCommand } = await import("./cluster-commands.js");
      return await (command === "cluster" ? clusterCommand : command === "hosts" ? hostsCommand : agentCommand)(rest);
    }
    if (command === "aws-models") {
      const { awsModelsCommand } = await import("./aws-models-command.js");
      return awsModelsCommand(rest);
    }
    if (command === "iam" || command === "sts") {
      const { serviceCommand } = await import("./iam-commands.js");
      return await serviceCommand(command, rest);
    }
    if (command.endsWith("network-connector") || command.endsWith("network-connectors") || command.endsWith("network-connector-versions")) {
      const { CONNECTOR_COMMANDS, connectorCommand } = await import("./connector-commands.js");
      if (CONNECTOR_COMMANDS[command]) return await connectorCommand(command, rest);
    }
    const op = byCommand.get(command);
    if (!op) throw new UsageError(`Invalid choice: '${command}'. Run 'lmvm help' for the commands.`);
    return await runOperation(op, rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`\n${err.message}\n\n`);
      return 252;
    }
    const e = err as { name?: string; message?: string; $fault?: string; code?: string; type?: string; operation?: string; cause?: { code?: string; message?: string } };
    if (e.name === "ServiceError" || (e.type && e.operation)) {
      process.stderr.write(`\nAn error occurred (${e.type}) when calling the ${e.operation} operation: ${e.message}\n`);
      return 254;
    }
    if (e.cause?.code === "ECONNREFUSED") {
      process.stderr.write(`\nCould not connect to the endpoint URL: is 'lmvm server' running? (${e.cause.message})\n`);
      return 255;
    }
    if (e.$fault) {
      const op = byCommand.get(command ?? "");
      process.stderr.write(`\nAn error occurred (${e.name}) when calling the ${op?.name ?? command} operation: ${e.message}\n`);
      return 254;
    }
    if (e.code === "ECONNREFUSED") {
      process.stderr.write(`\nCould not connect to the endpoint URL: is 'lmvm server' running? (${e.message})\n`);
      return 255;
    }
    process.stderr.write(`\n${e.message ?? String(err)}\n`);
    return 255;
  }
}

process.exitCode = await main(process.argv.slice(2));
