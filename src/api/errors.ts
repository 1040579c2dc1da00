// The one place that turns failures into AWS restJson1 errors: the error
// type goes in x-amzn-errortype, the body is {"message": ...} plus the
// error's modeled fields, and the status is the one the SDK's schema gives.

import type { FastifyReply } from "fastify";
import {
  AccessDenied, DomainError, IdempotencyMismatch, InvalidInput, NoCapacity, NotFound, QuotaExceeded,
  ResourceInUse, StateConflict, Throttled, Unauthenticated,
} from "../core/index.js";
import { errorStatus } from "./sdk-model.js";
import { recordOf } from "./request-record.js";

/** An error already in wire terms: type, status and body fields. */
export class AwsError extends Error {
  constructor(
    readonly type: string,
    readonly status: number,
    message: string,
    readonly fields: Record<string, unknown> = {},
    /** Members the SDK's schema binds to response headers (ThrottlingException's Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): Record<string, unknown> {
    return { message: this.message, ...this.fields };
  }
}

function modeled(type: string, message: string, fields: Record<string, unknown> = {}, headers: Record<string, string> = {}): AwsError {
  return new AwsError(type, errorStatus(type), message, fields, headers);
}

export function toAwsError(err: unknown): AwsError {
  if (err instanceof AwsError) return err;
  if (err instanceof DomainError) {
    if (err instanceof InvalidInput) return modeled("ValidationException", err.message);
    if (err instanceof NotFound) return modeled("ResourceNotFoundException", err.message, { resourceType: err.resourceType, resourceId: err.resourceId });
    if (err instanceof StateConflict) return modeled("ConflictException", err.message, { resourceType: err.resourceType, resourceId: err.resourceId });
    if (err instanceof IdempotencyMismatch) return modeled("ConflictException", err.message);
    if (err instanceof ResourceInUse) return modeled("ResourceConflictException", err.message, { Type: "User" });
    if (err instanceof AccessDenied) return modeled("AccessDeniedException", err.message);
    // Not in the service's model: AWS's front end answers these for every JSON API, with 403.
    if (err instanceof Unauthenticated) return new AwsError(err.reason === "expired" ? "ExpiredTokenException" : "UnrecognizedClientException", 403, err.message);
    if (err instanceof NoCapacity) return modeled("InsufficientCapacityException", err.message);
    if (err instanceof QuotaExceeded) return modeled("ServiceQuotaExceededException", err.message, { resourceType: err.resourceType, ...err.quota });
    // 429; retryAfterSeconds travels in Retry-After, which the SDKs' standard retry honours.
    if (err instanceof Throttled) return modeled("ThrottlingException", err.message, { ...err.quota }, { "retry-after": String(err.retryAfterSeconds) });
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "ENOSPC" || code === "SQLITE_FULL") {
    return modeled("ServiceException", "The lmvm server's data directory is full, so this request failed. Free space there (image builds, suspended MicroVMs' checkpoints and logs use it) and retry.", { Type: "Service" });
  }
  // PostgreSQL (src/store/postgres.ts): a transaction that still collided after the store's retries, and a full disk.
  if (code === "40001" || code === "40P01") {
    return modeled("ConflictException", "Other requests changed the same resources at the same moment, so this request was not applied. Retry it.");
  }
  // U+0000 in a value of an API whose inputs lmvm does not check for it (PostgreSQL's text refuses it).
  if (code === "22021" || code === "22P05") {
    return modeled("ValidationException", "A value in the request contains the NUL character (U+0000), which lmvm cannot store. Remove it and retry.");
  }
  if (code === "53100") {
    return modeled("ServiceException", "The lmvm server's PostgreSQL database is out of disk space, so this request failed. Free space on the database server and retry.", { Type: "Service" });
  }
  // The database's error names its address or socket path: that is for the server log (every route logs a 5xx's
  // error), not for clients.
  if (databaseUnreachable(err)) {
    return modeled("ServiceException", "The lmvm server cannot reach its database right now, so this request failed. Retry once it is back; MicroVMs whose change was under way are settled then. The server log has the details.", { Type: "Service" });
  }
  return modeled("ServiceException", "The lmvm service encountered an internal error; the server log has the details.", { Type: "Service" });
}

/**
 * Whether an error says the PostgreSQL database cannot be reached: its connection exceptions
 * (SQLSTATE class 08) and its shutdown and start-up (57P01 to 57P03), node-postgres's own
 * messages for a connection lost or not made in time, and a connection refused at its socket
 * (the Unix socket's name, or the default port).
 */
function databaseUnreachable(err: unknown): boolean {
  const e = (err ?? {}) as { code?: unknown; message?: unknown; syscall?: unknown; address?: unknown; port?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  if (code.startsWith("08") || ["57P01", "57P02", "57P03"].includes(code)) return true;
  if (/^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/.test(String(e.message ?? ""))) return true;
  return e.syscall === "connect" && ((typeof e.address === "string" && e.address.includes(".s.PGSQL.")) || e.port === 5432);
}

/** Sends an AWS error: its status, type header and JSON body. */
export function sendError(reply: FastifyReply, requestId: string, err: AwsError): FastifyReply {
  const record = recordOf(reply.request);
  record.errorCode = err.type;
  record.errorMessage = err.message;
  return reply
    .code(err.status)
    .header("x-amzn-requestid", requestId)
    .header("x-amzn-errortype", err.type)
    .header("content-type", "application/json")
    .headers(err.headers)
    .send(JSON.stringify(err.body()));
}
