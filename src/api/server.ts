// The control API over HTTP: one Fastify route per SDK operation, with the
// method, path and success status read from the SDK's schemas. Every request
// is SigV4-checked on its raw bytes, bound to the operation's input members
// (path label, query string or JSON body), validated, and handed to the core.

import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Registry } from "prom-client";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import {
  authorizeAll, microvmsApiAuthorization, parseInput, resourcesOf, DEFAULT_PAGE_SIZE,
  type AuthorizationRequest, type Caller, type ControlPlane, type Identities, type OperationName,
} from "../core/index.js";
import { AwsError, sendError, toAwsError } from "./errors.js";
import { handlers, LIST_OPERATIONS, type ListResult } from "./operations.js";
import { PageTokens } from "./pagination.js";
import { OPERATIONS, type OperationModel } from "./sdk-model.js";
import type { SigV4Verifier } from "./sigv4.js";
import { authenticateRequest } from "./authenticate.js";
import { LMVM_PREFIX, LOG_FOLLOW_PARAM, LOG_OFFSET_PARAM } from "./wire.js";
import { logsApi, type LogsApiOptions } from "./logs-route.js";
import type { PostRootApi } from "./post-root.js";
import { recordOf } from "./request-record.js";
import { registerConnectorRoutes } from "./connectors-route.js";
import { registerAuditRecorder, type AuditRecorderOptions } from "./audit-recorder.js";

export interface ApiOptions {
  controlPlane: ControlPlane;
  verifier: SigV4Verifier;
  pageTokens: PageTokens;
  log: (event: Record<string, unknown>) => void;
  /** Largest request body accepted, in bytes. */
  bodyLimit?: number;
  /** A build's log from byte `from`; with `follow`, it ends once `finished()` is true. */
  buildLog?: (buildId: string, follow: boolean, finished: () => Promise<boolean>, signal: AbortSignal, from: number) => Readable;
  /** Prometheus metrics, served unsigned at GET /metrics. */
  metrics?: Registry;
  /** A MicroVM's app output from byte `from`; with `follow`, it ends once `finished()` is true. */
  microvmLog?: (microvmId: string, follow: boolean, finished: () => Promise<boolean>, signal: AbortSignal, from: number) => Readable;
  /** The CloudWatch Logs API for those logs, at POST / (logs-route.ts). */
  logs?: LogsApiOptions;
  /** Further APIs on POST / (IAM, STS, CloudTrail), tried in order after CloudWatch Logs. */
  postRoot?: PostRootApi[];
  /** The audit trail every API call is recorded in before its answer is sent (audit-recorder.ts). */
  audit?: Omit<AuditRecorderOptions, "log">;
  /** Authorises every operation against the caller's policies (the account's root always may). */
  identities: Identities;
}


function splitUrl(url: string): { rawPath: string; rawQuery: string } {
  const q = url.indexOf("?");
  return q < 0 ? { rawPath: url, rawQuery: "" } : { rawPath: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

function queryValue(kind: string, values: string[]): unknown {
  if (kind === "list" || kind === "string-list") return values;
  const v = values[0]!;
  if (kind === "number") return /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  return v;
}

/** Gathers the operation's input members from wherever the SDK put them. */
function bindInput(op: OperationModel, params: Record<string, string>, rawQuery: string, body: Buffer): Record<string, unknown> {
  let json: Record<string, unknown> = {};
  if (body.length) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch (err) {
      throw new AwsError("ValidationException", 400, `The request body is not valid JSON: ${(err as Error).message}`);
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new AwsError("ValidationException", 400, "The request body must be a JSON object.");
    }
    json = parsed as Record<string, unknown>;
  }
  const query = new URLSearchParams(rawQuery);
  const input: Record<string, unknown> = {};
  for (const m of op.input) {
    const b = m.binding;
    if (b.in === "label") input[m.name] = params[m.name];
    else if (b.in === "query") {
      const values = query.getAll(b.name);
      if (values.length) input[m.name] = queryValue(m.kind, values);
    } else if (json[m.name] !== undefined && json[m.name] !== null) input[m.name] = json[m.name];
  }
  return input;
}


/** `?follow=true&offset=N` of the log routes. */
function logQuery(rawQuery: string): { follow: boolean; from: number } {
  const query = new URLSearchParams(rawQuery);
  const follow = ["true", "1"].includes(query.get(LOG_FOLLOW_PARAM) ?? "");
  const offset = query.get(LOG_OFFSET_PARAM) ?? "0";
  if (!/^\d{1,15}$/.test(offset)) throw new AwsError("ValidationException", 400, `'${LOG_OFFSET_PARAM}' must be a byte offset (a whole number of at least 0); got '${offset}'.`);
  return { follow, from: Number(offset) };
}

/**
 * Sends a log. A followed log can stay silent for as long as its build waits
 * in the queue or runs a quiet step, so its headers go out at once (a client
 * waiting for headers would give up first), and TCP keep-alive probes the
 * idle connection; a client that loses it anyway reconnects with ?offset=.
 */
function sendLog(req: FastifyRequest, reply: FastifyReply, requestId: string, follow: boolean, open: (signal: AbortSignal) => Readable): FastifyReply | undefined {
  const closed = new AbortController();
  req.raw.once("close", () => closed.abort());
  const headers = { "x-amzn-requestid": requestId, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" };
  if (!follow) return reply.headers(headers).send(open(closed.signal));
  reply.hijack();
  req.raw.socket.setKeepAlive(true, 15_000);
  reply.raw.writeHead(200, headers);
  reply.raw.flushHeaders();
  pipeline(open(closed.signal), reply.raw).catch(() => reply.raw.destroy());
  return undefined;
}

export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    routerOptions: { maxParamLength: 4096 },
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // A path the router cannot even decode (a broken %-escape) still gets an AWS error.
    frameworkErrors: (err, _req, reply) =>
      sendError(reply, randomUUID(), new AwsError("ValidationException", 400, err.code === "FST_ERR_BAD_URL" ? "The request path is not valid: fix its percent-encoding (%XX, UTF-8)." : err.message)),
  });
  // Signatures cover the exact bytes sent, so every body arrives raw.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
  if (opts.audit) registerAuditRecorder(app, { ...opts.audit, log: opts.log });

  /** Checks the signature; the request's record learns the access key at once and the caller once it checks out. */
  const authenticate = async (req: FastifyRequest): Promise<{ body: Buffer; rawQuery: string; caller: Caller }> => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const { rawQuery, caller } = await authenticateRequest(opts.verifier, req, body);
    return { body, rawQuery, caller };
  };

  /** Asks the caller's policies about each request; the audit record names the resources asked about. */
  const authorize = async (req: FastifyRequest, caller: Caller, requests: AuthorizationRequest[]) => {
    recordOf(req).resources = resourcesOf(requests);
    await authorizeAll(opts.identities, caller, requests);
  };
  const tagsOf = (arn: string) => opts.controlPlane.opts.store.getTags(arn);
  const scope = opts.controlPlane.opts.scope;

  const handle = (name: OperationName, op: OperationModel) => async (req: FastifyRequest, reply: FastifyReply) => {
    const requestId = randomUUID();
    const record = recordOf(req);
    Object.assign(record, { eventSource: "lambda.amazonaws.com", eventName: name, requestId, readOnly: op.method === "GET" });
    try {
      const { body, rawQuery, caller } = await authenticate(req);
      opts.controlPlane.admit(name);
      const raw = bindInput(op, req.params as Record<string, string>, rawQuery, body);
      record.requestParameters = raw;
      const input = parseInput(name, raw);
      await authorize(req, caller, await microvmsApiAuthorization(scope, name, input as Record<string, unknown>, tagsOf));
      let page = { limit: DEFAULT_PAGE_SIZE } as { limit: number; after?: string };
      const context = LIST_OPERATIONS.has(name) ? PageTokens.context(name, raw) : "";
      if (LIST_OPERATIONS.has(name)) {
        const { maxResults, nextToken } = input as { maxResults?: number; nextToken?: string };
        page = { limit: maxResults ?? DEFAULT_PAGE_SIZE, ...(nextToken ? { after: opts.pageTokens.decode(context, nextToken) } : {}) };
      }
      const handler = handlers[name] as (cp: ControlPlane, input: unknown, page: { limit: number; after?: string }) => Promise<object | undefined>;
      let output = await handler(opts.controlPlane, input, page);
      if (LIST_OPERATIONS.has(name) && output) {
        const { items, next } = output as ListResult;
        output = { items, ...(next ? { nextToken: opts.pageTokens.encode(context, next) } : {}) };
      }
      // What a write made or changed (ids, states), for the audit trail, which hides any secret in it; reads keep none, as in CloudTrail.
      if (op.method !== "GET" && output) record.responseElements = output as Record<string, unknown>;
      reply.code(op.status).header("x-amzn-requestid", requestId);
      if (output === undefined) return reply.send();
      return reply.header("content-type", "application/json").send(JSON.stringify(output));
    } catch (err) {
      const aws = toAwsError(err);
      if (aws.status >= 500) opts.log({ level: "error", msg: "request failed", operation: name, requestId, err: err instanceof Error ? err.stack : String(err) });
      return sendError(reply, requestId, aws);
    }
  };

  for (const [name, op] of Object.entries(OPERATIONS) as [OperationName, OperationModel][]) {
    app.route({ method: op.method as "GET", url: op.path.replace(/\{(\w+)\}/g, ":$1"), handler: handle(name, op) });
  }

  registerConnectorRoutes(app, { controlPlane: opts.controlPlane, pageTokens: opts.pageTokens, scope, authenticate, authorize, log: opts.log });

  app.get("/health", async () => ({ status: "ok" }));
  const metrics = opts.metrics;
  if (metrics) app.get("/metrics", async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));

  const microvmLog = opts.microvmLog;
  if (microvmLog) {
    app.get(`${LMVM_PREFIX}/microvms/:microvmIdentifier/logs`, async (req, reply) => {
      const requestId = randomUUID();
      Object.assign(recordOf(req), { eventSource: "lambda.amazonaws.com", eventName: "GetMicrovmLogs", requestId, readOnly: true, requestParameters: { ...(req.params as object) } });
      try {
        const { rawQuery, caller } = await authenticate(req);
        const input = parseInput("GetMicrovm", req.params);
        // lmvm's own route: reading a MicroVM's output asks what GetMicrovm asks.
        await authorize(req, caller, await microvmsApiAuthorization(scope, "GetMicrovm", input, tagsOf));
        const vm = await opts.controlPlane.getMicrovm(input);
        const { follow, from } = logQuery(rawQuery);
        const finished = async () => (await opts.controlPlane.getMicrovm(input).catch(() => undefined))?.state !== "RUNNING";
        return sendLog(req, reply, requestId, follow, (signal) => microvmLog(vm.id, follow, finished, signal, from));
      } catch (err) {
        const aws = toAwsError(err);
        if (aws.status >= 500) opts.log({ level: "error", msg: "request failed", operation: "lmvm:logs", requestId, err: err instanceof Error ? err.stack : String(err) });
        return sendError(reply, requestId, aws);
      }
    });
  }

  const buildLog = opts.buildLog;
  if (buildLog) {
    app.get(`${LMVM_PREFIX}/microvm-images/:imageIdentifier/versions/:imageVersion/builds/:buildId/logs`, async (req, reply) => {
      const requestId = randomUUID();
      Object.assign(recordOf(req), { eventSource: "lambda.amazonaws.com", eventName: "GetMicrovmImageBuildLogs", requestId, readOnly: true, requestParameters: { ...(req.params as object) } });
      try {
        const { rawQuery, caller } = await authenticate(req);
        const input = parseInput("GetMicrovmImageBuild", req.params);
        // lmvm's own route: reading a build's log asks what GetMicrovmImageBuild asks.
        await authorize(req, caller, await microvmsApiAuthorization(scope, "GetMicrovmImageBuild", input, tagsOf));
        await opts.controlPlane.getMicrovmImageBuild(input);
        const { follow, from } = logQuery(rawQuery);
        const finished = async () => {
          const build = await opts.controlPlane.getMicrovmImageBuild(input).catch(() => undefined);
          return !build || build.state === "SUCCESSFUL" || build.state === "FAILED";
        };
        return sendLog(req, reply, requestId, follow, (signal) => buildLog(input.buildId, follow, finished, signal, from));
      } catch (err) {
        const aws = toAwsError(err);
        if (aws.status >= 500) opts.log({ level: "error", msg: "request failed", operation: "lmvm:logs", requestId, err: err instanceof Error ? err.stack : String(err) });
        return sendError(reply, requestId, aws);
      }
    });
  }

  const rootApis = [...(opts.logs ? [logsApi(opts.logs, opts.log)] : []), ...(opts.postRoot ?? [])];
  app.post("/", async (req, reply) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const api = rootApis.find((a) => a.claims(req, body));
    if (api) return api.handle(req, reply, body);
    const target = req.headers["x-amz-target"];
    const names = rootApis.map((a) => a.name).join(", ") || "no API";
    return sendError(reply, randomUUID(), new AwsError("UnknownOperationException", 404, `POST / answers ${names}: no operation matches${typeof target === "string" ? ` X-Amz-Target '${target}'` : " this request"}. Set X-Amz-Target (JSON APIs) or send Action and Version in a form body (query APIs).`));
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(reply, randomUUID(), new AwsError("UnknownOperationException", 404, `No operation matches ${req.method} ${splitUrl(req.raw.url ?? "/").rawPath}.`)),
  );
  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, _req, reply) => {
    const status = err.statusCode ?? 500;
    if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      return sendError(reply, randomUUID(), new AwsError("RequestTooLargeException", 413, "The request body is too large."));
    }
    if (status < 500) return sendError(reply, randomUUID(), new AwsError("ValidationException", 400, err.message));
    opts.log({ level: "error", msg: "unhandled error", err: err.message });
    return sendError(reply, randomUUID(), toAwsError(err));
  });
  return app;
}
