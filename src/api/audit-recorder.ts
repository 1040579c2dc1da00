// Records every API call in the audit trail before its answer leaves: an
// onSend hook turns the request's record (request-record.ts, filled by the
// route that answered and by sendError) into a CloudTrail event and waits
// until the trail has committed it, so a client that got an answer can
// count on its event surviving even a `kill -9` of the server. Requests no
// API claimed (no operation: /health, /metrics, unknown paths) are not
// API calls and are not recorded.

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { auditEvent, type AuditTrail, type Clock } from "../core/index.js";
import { existingRecord } from "./request-record.js";

export interface AuditRecorderOptions {
  trail: AuditTrail;
  clock: Clock;
  region: string;
  accountId: string;
  log: (event: Record<string, unknown>) => void;
}

const CREDENTIAL = /Credential=([A-Za-z0-9]{1,128})\//;

/** The access key a request names in its Authorization header (never the signature). */
function namedAccessKey(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  return typeof auth === "string" ? CREDENTIAL.exec(auth)?.[1] : undefined;
}

function sourceIp(req: FastifyRequest): string {
  const ip = req.socket.remoteAddress ?? "";
  return ip.startsWith("::ffff:") ? ip.slice(7) : ip;
}

/** The error of an answer whose route did not note it in the record: from x-amzn-errortype, or an XML error's <Code>. */
function errorOf(reply: FastifyReply, payload: unknown): { code: string; message: string } | undefined {
  if (reply.statusCode < 400) return undefined;
  const text = typeof payload === "string" ? payload : Buffer.isBuffer(payload) ? payload.toString("utf8") : "";
  const header = reply.getHeader("x-amzn-errortype");
  let code = typeof header === "string" ? header.split(":")[0]! : "";
  let message = "";
  if (text.startsWith("{")) {
    try {
      const body = JSON.parse(text) as { __type?: string; message?: string; Message?: string };
      code ||= (body.__type ?? "").split("#").at(-1) ?? "";
      message = body.message ?? body.Message ?? "";
    } catch {
      // not JSON after all
    }
  } else if (text.startsWith("<")) {
    code ||= /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? "";
    message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? "";
  }
  return { code: code || `HTTP${reply.statusCode}`, message };
}

export function registerAuditRecorder(app: FastifyInstance, opts: AuditRecorderOptions): void {
  app.addHook("onSend", async (req, reply, payload) => {
    const record = existingRecord(req);
    if (!record?.eventSource || !record.eventName) return payload;
    const error = record.errorCode ? { code: record.errorCode, message: record.errorMessage ?? "" } : errorOf(reply, payload);
    const accessKeyId = record.caller?.accessKeyId ?? record.accessKeyId ?? namedAccessKey(req);
    const userAgent = req.headers["user-agent"];
    const event = auditEvent({
      time: opts.clock.now(),
      region: opts.region,
      accountId: opts.accountId,
      eventSource: record.eventSource,
      eventName: record.eventName,
      ...(record.caller ? { caller: record.caller } : {}),
      ...(accessKeyId ? { accessKeyId } : {}),
      sourceIp: sourceIp(req),
      ...(typeof userAgent === "string" ? { userAgent } : {}),
      ...(record.requestId ? { requestId: record.requestId } : {}),
      readOnly: record.readOnly ?? false,
      resources: record.resources,
      ...(record.requestParameters ? { requestParameters: record.requestParameters } : {}),
      ...(record.responseElements ? { responseElements: record.responseElements } : {}),
      ...(error ? { errorCode: error.code, errorMessage: error.message } : {}),
    });
    try {
      await opts.trail.record(event);
    } catch (err) {
      // The call has happened: its answer still goes out, and the loss is in the server log (no secret in it).
      opts.log({ level: "error", msg: "audit event not recorded", eventName: event.eventName, eventID: event.eventID, requestID: event.requestID, err: (err as Error).message });
    }
    return payload;
  });
}
