// `lmvm logs build <image> <version> [--follow]` prints a build's log and
// `lmvm logs microvm <id> [--follow]` a MicroVM's app output; with --follow
// they keep printing until the build ends or the MicroVM stops running,
// however long that takes. They read lmvm's SigV4-signed log endpoints,
// outside the AWS API.
//
// A followed log can be silent for a long time (a build waiting in the queue,
// a quiet build step), so it is read with node:http, which has no body or
// header timeout (fetch gives up after 5 minutes), and a connection that
// breaks anyway is reopened where it stopped (?offset=). A followed build's
// outcome is the exit code: 0 when SUCCESSFUL; 255, with its stateReason on
// stderr, when FAILED.

import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { GetMicrovmImageBuildCommand, ListMicrovmImageBuildsCommand, type LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";
import { Hash } from "@smithy/hash-node";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { LMVM_PREFIX, LOG_FOLLOW_PARAM, LOG_OFFSET_PARAM } from "../api/wire.js";
import { UsageError } from "./flags.js";

export const LOGS_HELP = `NAME
    logs

DESCRIPTION
    Prints the log of an image build, or the output (stdout and stderr) of a
    MicroVM's app. With --follow, keeps printing as it is written, until the
    build finishes or the MicroVM stops running, however long that takes; a
    build waiting in the queue is reported on stderr. A followed build that
    FAILED exits with 255 and prints its stateReason on stderr.

    The same output is in CloudWatch Logs log groups on the API's port (by
    default /aws/lambda-microvms/<image-name>, streams microvms/<microvm-id>
    and builds/<version>/<architecture>/<build-id>): aws logs ... --endpoint-url.
    A MicroVM or image with logging {"disabled": {}} keeps no output.

SYNOPSIS
    lmvm logs build <image-name-or-arn> <image-version> [--build-id <id>] [--follow]
    lmvm logs microvm <microvm-id> [--follow]
`;

/** How long a followed log may stay unreachable (server restarting, network down) before the CLI gives up. */
const RECONNECT_WINDOW_MS = 120_000;
const RECONNECT_DELAY_MS = 1_000;
/** How often a followed build's state is checked while its log is silent. */
const STATE_POLL_MS = 10_000;

class LogHttpError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

interface Reader {
  client: LambdaMicrovmsClient;
  path: string;
  follow: boolean;
}

/** How long the server may take to start answering a log request. */
const HEADERS_TIMEOUT_MS = 60_000;

/** One signed GET of the log from `offset`; resolves with the response once its headers arrive. */
async function open({ client, path, follow }: Reader, offset: number): Promise<IncomingMessage> {
  const endpoint = await client.config.endpoint!();
  const host = `${endpoint.hostname}${endpoint.port ? `:${endpoint.port}` : ""}`;
  const query: Record<string, string> = { ...(follow ? { [LOG_FOLLOW_PARAM]: "true" } : {}), ...(offset ? { [LOG_OFFSET_PARAM]: String(offset) } : {}) };
  const signer = new SignatureV4({ credentials: client.config.credentials, region: await client.config.region(), service: "lambda", sha256: Hash.bind(null, "sha256") });
  const signed = await signer.sign(new HttpRequest({ method: "GET", protocol: endpoint.protocol, hostname: endpoint.hostname, port: endpoint.port, path, query, headers: { host } }));
  const search = new URLSearchParams(query).toString();
  const request = endpoint.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      { method: "GET", hostname: endpoint.hostname, port: endpoint.port, path: `${path}${search ? `?${search}` : ""}`, headers: signed.headers },
      (res) => {
        if (res.statusCode === 200) return resolve(res);
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => {
          let message = body;
          try {
            message = (JSON.parse(body) as { message?: string }).message ?? body;
          } catch {
            // not JSON: show it as it came
          }
          reject(new LogHttpError(String(res.headers["x-amzn-errortype"] ?? `HTTP ${res.statusCode}`), message));
        });
      },
    );
    req.on("socket", (socket) => socket.setKeepAlive(true, 15_000));
    req.on("error", reject);
    // Until the headers arrive: a server that takes the connection and never answers must not hang the command.
    // (A followed log's server sends its headers at once, then may be silent for as long as the build is.)
    req.setTimeout(HEADERS_TIMEOUT_MS, () => req.destroy(new Error(`the server sent no answer within ${HEADERS_TIMEOUT_MS / 1000} s`)));
    req.once("response", () => req.setTimeout(0));
    req.end();
  });
}

/**
 * Copies the log to stdout until the server ends it, reopening it where it
 * stopped when the connection breaks. `stalled` is asked now and then while
 * nothing arrives; when it says the log's owner has ended, the connection is
 * reopened so the server can send the rest and end it.
 */
async function copyLog(reader: Reader, stalled: () => Promise<boolean>): Promise<void> {
  let offset = 0;
  let lastContact = Date.now();
  for (;;) {
    try {
      const res = await open(reader, offset);
      lastContact = Date.now();
      await new Promise<void>((resolve, reject) => {
        let quietSince = Date.now();
        const check = setInterval(() => {
          if (Date.now() - quietSince < STATE_POLL_MS) return;
          quietSince = Date.now();
          stalled().then((yes) => yes && res.destroy(new Error("the log's owner ended but the log did not")), () => {});
        }, STATE_POLL_MS);
        res.on("data", (chunk: Buffer) => {
          offset += chunk.length;
          quietSince = Date.now();
          lastContact = Date.now();
          process.stdout.write(chunk);
        });
        res.on("end", () => {
          clearInterval(check);
          resolve();
        });
        res.on("error", (err) => {
          clearInterval(check);
          reject(err);
        });
        res.on("aborted", () => {
          clearInterval(check);
          reject(new Error("the connection was closed before the log ended"));
        });
      });
      if (res.complete) return;
    } catch (err) {
      if (err instanceof LogHttpError) throw err;
      if (!reader.follow || Date.now() - lastContact > RECONNECT_WINDOW_MS) throw err;
      await new Promise((r) => setTimeout(r, RECONNECT_DELAY_MS));
    }
  }
}

export async function logsCommand(client: LambdaMicrovmsClient, positionals: string[], flags: Map<string, string[]>): Promise<number> {
  const [kind, first, second] = positionals;
  const follow = flags.has("follow");
  try {
    if (kind === "build" && first && second) return await buildLog(client, first, second, flags.get("build-id")?.at(-1), follow);
    if (kind === "microvm" && first && !second) {
      await copyLog({ client, path: `${LMVM_PREFIX}/microvms/${encodeURIComponent(first)}/logs`, follow }, async () => false);
      return 0;
    }
  } catch (err) {
    if (!(err instanceof LogHttpError)) throw err;
    process.stderr.write(`\nAn error occurred (${err.type}) when reading the ${kind} log: ${err.message}\n`);
    return 254;
  }
  throw new UsageError(LOGS_HELP);
}

async function buildLog(client: LambdaMicrovmsClient, image: string, version: string, buildIdFlag: string | undefined, follow: boolean): Promise<number> {
  let buildId = buildIdFlag;
  if (!buildId) {
    const builds = await client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: image, imageVersion: version }));
    buildId = builds.items?.[0]?.buildId;
    if (!buildId) throw new UsageError(`Version ${version} of ${image} has no builds.`);
  }
  const id = { imageIdentifier: image, imageVersion: version, buildId };
  const path = `${LMVM_PREFIX}/microvm-images/${encodeURIComponent(image)}/versions/${encodeURIComponent(version)}/builds/${encodeURIComponent(buildId)}/logs`;
  if (!follow) {
    await copyLog({ client, path, follow }, async () => false);
    return 0;
  }
  const state = async () => client.send(new GetMicrovmImageBuildCommand(id));
  let said = "";
  /** Says on stderr when the build waits in the queue, once per wait. */
  const tell = (build: { buildState?: string; stateReason?: string }) => {
    if (build.buildState === "PENDING" && said !== "PENDING") {
      process.stderr.write(`Build ${buildId} of ${image} ${version} is PENDING: waiting for a build slot${build.stateReason ? ` (${build.stateReason})` : ""}.\n`);
    }
    said = build.buildState ?? "";
  };
  tell(await state());
  await copyLog({ client, path, follow }, async () => {
    const build = await state();
    tell(build);
    return build.buildState === "SUCCESSFUL" || build.buildState === "FAILED";
  });
  const end = await state();
  if (end.buildState === "FAILED") {
    process.stderr.write(`\nBuild ${buildId} of ${image} ${version} FAILED: ${end.stateReason ?? "no reason given"}\n`);
    return 255;
  }
  return 0;
}
