// `lmvm shell <microvm-id>`: an interactive shell inside a MicroVM, from this
// terminal. `lmvm exec <microvm-id> -- <command> [args…]`: runs one command,
// prints its output and exits with its exit code. Both take a shell token
// (CreateMicrovmShellAuthToken) and open wss://<endpoint>/shell speaking
// lmvm's exec protocol (src/shell/protocol.ts), not the service's: only it
// carries the exit status, stderr apart and end of input. The endpoint's
// certificate is checked against lmvm's CA, found in the data directory.
// Names under .localhost resolve to loopback, as browsers do, even where the
// system resolver does not.

import { readFileSync } from "node:fs";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { CreateMicrovmShellAuthTokenCommand, GetMicrovmCommand, type LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import WebSocket from "ws";
import { AUTH_HEADER } from "../proxy/routing.js";
import { defaultDataDir, readServerInfo } from "../server/data-paths.js";
import { BASE_SUBPROTOCOL, CLOSE_MICROVM_STOPPING, EXEC_SUBPROTOCOL, SHELL_PATH, STDERR, STDIN, STDOUT } from "../shell/protocol.js";
import { UsageError } from "./flags.js";

export const SHELL_HELP = `NAME
    shell, exec

DESCRIPTION
    shell: opens an interactive login shell as root (a terminal) inside a
           MicroVM, and exits with the shell's exit status.
    exec:  runs one command inside a MicroVM, as the app's user, prints its
           output, and exits with its exit code. Standard input is passed on
           when it is not a terminal.
    The MicroVM must have been run with the SHELL_INGRESS ingress network connector.

SYNOPSIS
    lmvm shell <microvm-id> [--ca-file <pem>]
    lmvm exec <microvm-id> [--ca-file <pem>] -- <command> [<arg>...]
`;

/** Resolves *.localhost to loopback (RFC 6761), as browsers do; everything else as usual. */
export function localhostLookup(hostname: string, options: object, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
  if (hostname === "localhost" || hostname.endsWith(".localhost")) {
    const all = (options as { all?: boolean }).all;
    return all ? callback(null, [{ address: "127.0.0.1", family: 4 }]) : callback(null, "127.0.0.1", 4);
  }
  dnsLookup(hostname, options, callback as never);
}

async function openShell(client: LambdaMicrovmsClient, id: string, query: URLSearchParams, ca: string | undefined): Promise<WebSocket> {
  const vm = await client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  if (!vm.endpoint) throw new UsageError(`MicroVM ${id} has no endpoint.`);
  const { authToken } = await client.send(new CreateMicrovmShellAuthTokenCommand({ microvmIdentifier: id, expirationInMinutes: 5 }));
  const token = authToken?.["X-aws-proxy-auth"];
  if (!token) throw new Error("the server returned no shell token");
  const url = new URL(vm.endpoint.replace(/^http/, "ws"));
  url.pathname = SHELL_PATH;
  url.search = query.toString();
  const ws = new WebSocket(url, [BASE_SUBPROTOCOL, EXEC_SUBPROTOCOL], { headers: { [AUTH_HEADER]: token }, lookup: localhostLookup as never, ...(ca ? { ca: readFileSync(ca) } : {}) });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c));
      res.on("end", () => reject(new Error(`The shell endpoint answered ${res.statusCode}: ${body.trim()}`)));
    });
    ws.once("error", reject);
  });
  return ws;
}

/** Relays the socket to this process's stdio; resolves with the remote exit code. */
function relay(ws: WebSocket, interactive: boolean): Promise<number> {
  return new Promise((resolve) => {
    let code: number | undefined;
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        if (data[0] === STDOUT) process.stdout.write(data.subarray(1));
        else if (data[0] === STDERR) process.stderr.write(data.subarray(1));
        return;
      }
      const msg = JSON.parse(data.toString("utf8")) as { type: string; code?: number; message?: string };
      if (msg.type === "exit") code = msg.code;
      else if (msg.type === "error") process.stderr.write(`lmvm: ${msg.message}\n`);
    });
    ws.on("close", (closeCode: number, reason: Buffer) => {
      if (interactive && process.stdin.isTTY) process.stdin.setRawMode(false);
      process.stdin.destroy(); // nothing more to send; lets the process exit
      if (closeCode === CLOSE_MICROVM_STOPPING) process.stderr.write(`\r\nlmvm: the shell ended: ${reason.toString()}\n`);
      resolve(code ?? 255);
    });
    const send = (chunk: Buffer) => ws.readyState === ws.OPEN && ws.send(Buffer.concat([Buffer.from([STDIN]), chunk]));
    if (interactive || !process.stdin.isTTY) {
      process.stdin.on("data", send);
      process.stdin.on("end", () => ws.readyState === ws.OPEN && ws.send(JSON.stringify({ type: "eof" })));
    } else ws.send(JSON.stringify({ type: "eof" }));
  });
}

export async function shellCommand(client: LambdaMicrovmsClient, command: "shell" | "exec", positionals: string[], argv: string[], flags: Map<string, string[]>): Promise<number> {
  const [id, ...extra] = positionals;
  if (!id || extra.length || (command === "exec" && !argv.length)) throw new UsageError(SHELL_HELP);
  const caFile = flags.get("ca-file")?.at(-1) ?? readServerInfo(flags.get("data-dir")?.at(-1) ?? defaultDataDir())?.caFile;
  const query = new URLSearchParams();
  if (command === "exec") {
    for (const a of argv) query.append("command", a);
    query.set("tty", "0");
    return relay(await openShell(client, id, query, caFile), false);
  }
  const tty = process.stdout.isTTY;
  query.set("cols", String(tty ? process.stdout.columns : 80));
  query.set("rows", String(tty ? process.stdout.rows : 24));
  if (!process.stdin.isTTY) query.set("tty", "0");
  const ws = await openShell(client, id, query, caFile);
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdout.on("resize", () => ws.readyState === ws.OPEN && ws.send(JSON.stringify({ type: "resize", cols: process.stdout.columns, rows: process.stdout.rows })));
  return relay(ws, true);
}
