// What happened in one API request, for the audit trail: filled in by the
// route that answers it (which operation, who called, on what, with which
// parameters) and by sendError (the error code), and read once the reply is
// sent. Every API on the port (Lambda MicroVMs, Lambda Core's connectors,
// CloudWatch Logs, IAM, STS, CloudTrail) fills the same record.

import type { FastifyRequest } from "fastify";
import type { Caller } from "../core/index.js";

export interface RequestRecord {
  /** The service's CloudTrail event source: `lambda.amazonaws.com`, `iam.amazonaws.com`, `sts.amazonaws.com`, `logs.amazonaws.com`, `cloudtrail.amazonaws.com`. */
  eventSource?: string;
  /** The operation, e.g. `RunMicrovm`, `CreateUser`, `AssumeRole`. */
  eventName?: string;
  /** Who called, once the signature checked out. */
  caller?: Caller;
  /** The access key the request was signed with, even when it was refused. */
  accessKeyId?: string;
  /** ARNs of the resources the request acted on. */
  resources: string[];
  /** The request's input, as bound to the operation's members (secrets are removed before it is kept). */
  requestParameters?: Record<string, unknown>;
  /** What the answer carried that identifies what it made (an id, an ARN); never a secret. */
  responseElements?: Record<string, unknown>;
  /** The AWS error type and message when the request failed. */
  errorCode?: string;
  errorMessage?: string;
  /** Whether the operation only reads. */
  readOnly?: boolean;
  requestId?: string;
}

const records = new WeakMap<object, RequestRecord>();

/** The request's record, made on first use. */
export function recordOf(req: FastifyRequest): RequestRecord {
  let record = records.get(req.raw);
  if (!record) {
    record = { resources: [] };
    records.set(req.raw, record);
  }
  return record;
}

/** The request's record if a route made one (requests no API answered, such as /health, have none). */
export function existingRecord(req: FastifyRequest): RequestRecord | undefined {
  return records.get(req.raw);
}
