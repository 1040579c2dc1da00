// The CloudWatch Logs API on the control API's port: POST / with
// `X-Amz-Target: Logs_20140328.<Operation>` and a JSON body (awsJson1_1),
// signed with SigV4 for the service `logs`, as the AWS SDKs and CLI send it to
// logs.<region>.amazonaws.com. The operations themselves are in src/logs;
// this only unwraps the request and wraps the answer, errors included, in
// awsJson1_1's shape: status 400 and {"__type": ..., "message": ...}.

import { randomUUID } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { LogsError, type CloudWatchLogsService } from "../logs/index.js";
import { AccessDenied, authorizeAll, logsAuthorization, resourcesOf, Unauthenticated, type Identities, type Scope } from "../core/index.js";
import { AwsError, toAwsError } from "./errors.js";
import { recordOf } from "./request-record.js";
import { accessKeyIdOf, type SigV4Verifier } from "./sigv4.js";
import type { PostRootApi } from "./post-root.js";

export const LOGS_TARGET_PREFIX = "Logs_20140328.";
const CONTENT_TYPE = "application/x-amz-json-1.1";

export interface LogsApiOptions {
  service: CloudWatchLogsService;
  /** A verifier for the signing name `logs`. */
  verifier: SigV4Verifier;
  /** Authorises each operation as logs:<Operation> on its log group or stream. */
  identities: Identities;
  scope: Scope;
}

function send(reply: FastifyReply, requestId: string, status: number, body: Record<string, unknown>, errorType?: string): FastifyReply {
  if (errorType) Object.assign(recordOf(reply.request), { errorCode: errorType, errorMessage: body.message });
  reply.code(status).header("x-amzn-requestid", requestId).header("content-type", CONTENT_TYPE);
  if (errorType) reply.header("x-amzn-errortype", errorType);
  return reply.send(JSON.stringify(body));
}

/** Whether a request is meant for the CloudWatch Logs API. */
export function isLogsRequest(req: FastifyRequest): boolean {
  const target = req.headers["x-amz-target"];
  return typeof target === "string" && target.startsWith(LOGS_TARGET_PREFIX);
}

/** The CloudWatch Logs API, one of the APIs on POST / (post-root.ts). */
export function logsApi(opts: LogsApiOptions, log: (event: Record<string, unknown>) => void): PostRootApi {
  return {
    name: "CloudWatch Logs",
    claims: (req) => isLogsRequest(req),
    handle: async (req, reply, body) => {
      const requestId = randomUUID();
      const operation = String(req.headers["x-amz-target"]).slice(LOGS_TARGET_PREFIX.length);
      const record = recordOf(req);
      Object.assign(record, { eventSource: "logs.amazonaws.com", eventName: operation, requestId, readOnly: true });
      try {
        const url = req.raw.url ?? "/";
        const q = url.indexOf("?");
        const accessKeyId = accessKeyIdOf(req.headers);
        if (accessKeyId) record.accessKeyId = accessKeyId;
        const { caller } = await opts.verifier.verify({ method: req.method, rawPath: q < 0 ? url : url.slice(0, q), rawQuery: q < 0 ? "" : url.slice(q + 1), headers: req.headers, body, sourceIp: req.socket.remoteAddress });
        record.caller = caller;
        let input: unknown = {};
        if (body.length) {
          try {
            input = JSON.parse(body.toString("utf8"));
          } catch (err) {
            throw new LogsError("SerializationException", `The request body is not valid JSON: ${(err as Error).message}`);
          }
        }
        if (!input || typeof input !== "object" || Array.isArray(input)) throw new LogsError("SerializationException", "The request body must be a JSON object.");
        record.requestParameters = input as Record<string, unknown>;
        const requests = logsAuthorization(opts.scope, operation, input as Record<string, unknown>);
        record.resources = resourcesOf(requests);
        await authorizeAll(opts.identities, caller, requests);
        const output = await opts.service.call(operation, input as Record<string, unknown>, caller.accountId);
        return send(reply, requestId, 200, output);
      } catch (err) {
        if (err instanceof LogsError) return send(reply, requestId, 400, { __type: err.type, message: err.message }, err.type);
        if (err instanceof AccessDenied) return send(reply, requestId, 400, { __type: "AccessDeniedException", message: err.message }, "AccessDeniedException");
        if (err instanceof AwsError || err instanceof Unauthenticated) {
          const aws = toAwsError(err);
          return send(reply, requestId, aws.status, { __type: aws.type, message: aws.message }, aws.type);
        }
        log({ level: "error", msg: "request failed", operation: `logs:${operation}`, requestId, err: err instanceof Error ? err.stack : String(err) });
        return send(reply, requestId, 500, { __type: "ServiceUnavailableException", message: "The lmvm service encountered an internal error; the server log has the details." }, "ServiceUnavailableException");
      }
    },
  };
}
