// AWS's query protocol (awsQuery), as IAM and STS speak it: the request is a
// form body (`Action=CreateUser&Version=2010-05-08&UserName=bob`), lists are
// `Name.member.N`, structures in lists `Tags.member.N.Key`/`.Value`; the
// answer is XML, `<CreateUserResponse xmlns="…"><CreateUserResult>…
// </CreateUserResult><ResponseMetadata><RequestId>…</RequestId>
// </ResponseMetadata></CreateUserResponse>`, lists as `<member>` elements, and
// an error is `<ErrorResponse><Error><Type>Sender</Type><Code>…</Code>
// <Message>…</Message></Error><RequestId>…</RequestId></ErrorResponse>`
// (https://smithy.io/2.0/aws/protocols/aws-query-protocol.html).

import { randomUUID } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { AccessDenied, IamFault, InvalidInput, Throttled, Unauthenticated, type Caller } from "../core/index.js";
import { AwsError } from "./errors.js";
import type { PostRootApi } from "./post-root.js";
import { accessKeyIdOf } from "./sigv4.js";
import { recordOf } from "./request-record.js";

/** A parsed awsQuery request: its operation, API version and the other parameters, flat. */
export class QueryRequest {
  constructor(
    readonly action: string,
    readonly version: string,
    readonly params: ReadonlyMap<string, string>,
  ) {}

  /** The parameters as the audit record keeps them: flat, Action and Version left out. */
  toRecord(): Record<string, unknown> {
    return Object.fromEntries([...this.params].map(([k, v]) => [k.charAt(0).toLowerCase() + k.slice(1), v]));
  }

  string(name: string): string | undefined {
    return this.params.get(name);
  }

  /** `Name.member.1`, `Name.member.2`…, in order. */
  list(name: string): string[] | undefined {
    const out: string[] = [];
    for (let i = 1; this.params.has(`${name}.member.${i}`); i++) out.push(this.params.get(`${name}.member.${i}`)!);
    return out.length || this.params.has(name) ? out : undefined;
  }

  /** `Tags.member.N.Key` / `Tags.member.N.Value` as a map. */
  tags(name = "Tags"): Record<string, string> | undefined {
    const out: Record<string, string> = {};
    let any = false;
    for (let i = 1; this.params.has(`${name}.member.${i}.Key`); i++) {
      out[this.params.get(`${name}.member.${i}.Key`)!] = this.params.get(`${name}.member.${i}.Value`) ?? "";
      any = true;
    }
    return any ? out : undefined;
  }
}

/** Parses a form body; undefined when it is no awsQuery request (no Action). */
export function parseQuery(body: Buffer): QueryRequest | undefined {
  const form = new URLSearchParams(body.toString("utf8"));
  const action = form.get("Action");
  if (!action) return undefined;
  const params = new Map<string, string>();
  for (const [k, v] of form) if (k !== "Action" && k !== "Version") params.set(k, v);
  return new QueryRequest(action, form.get("Version") ?? "", params);
}

/** Whether a request is a form-encoded awsQuery request of API `version`. */
export function claimsQuery(req: FastifyRequest, body: Buffer, version: string): boolean {
  const type = req.headers["content-type"];
  if (typeof type !== "string" || !type.toLowerCase().startsWith("application/x-www-form-urlencoded")) return false;
  return new URLSearchParams(body.toString("utf8")).get("Version") === version;
}

function escape(text: string): string {
  // Element text only (no attribute takes a value from a request): &, < and > are all that need escaping.
  return text.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]!);
}

/** A value as awsQuery XML: structures as elements, lists as `<member>`s, timestamps in ISO 8601. */
export function toXml(value: unknown): string {
  if (value === undefined || value === null) return "";
  if (value instanceof Date) return value.toISOString().replace(/\.\d{3}Z$/, "Z");
  if (Array.isArray(value)) return value.map((v) => `<member>${toXml(v)}</member>`).join("");
  if (typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `<${k}>${toXml(v)}</${k}>`)
      .join("");
  }
  return escape(String(value));
}

/** An awsQuery error in wire terms. */
export class QueryError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly type: "Sender" | "Receiver" = status >= 500 ? "Receiver" : "Sender",
  ) {
    super(message);
  }
}

const XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n';

/** Sends `<Action>Response` with its `<Action>Result` (none for operations that return nothing). */
export function sendQueryResult(reply: FastifyReply, requestId: string, namespace: string, action: string, result: Record<string, unknown> | undefined): FastifyReply {
  const inner = result === undefined ? "" : `<${action}Result>${toXml(result)}</${action}Result>`;
  const body = `${XML_HEAD}<${action}Response xmlns="${namespace}">${inner}<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`;
  return reply.code(200).header("x-amzn-requestid", requestId).header("content-type", "text/xml").send(body);
}

/** Sends an `<ErrorResponse>`, and notes the error in the request's audit record. */
export function sendQueryError(reply: FastifyReply, requestId: string, namespace: string, err: QueryError): FastifyReply {
  Object.assign(recordOf(reply.request), { errorCode: err.code, errorMessage: err.message });
  const body = `${XML_HEAD}<ErrorResponse xmlns="${namespace}"><Error><Type>${err.type}</Type><Code>${escape(err.code)}</Code><Message>${escape(err.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`;
  return reply.code(err.status).header("x-amzn-requestid", requestId).header("content-type", "text/xml").send(body);
}

const IAM_FAULT_STATUS: Record<string, number> = {
  NoSuchEntity: 404,
  EntityAlreadyExists: 409,
  DeleteConflict: 409,
  LimitExceeded: 409,
  ConcurrentModification: 409,
  MalformedPolicyDocument: 400,
  PackedPolicyTooLarge: 400,
  ValidationError: 400,
  InvalidInput: 400,
  UnmodifiableEntity: 400,
  RegionDisabledException: 403,
};

/** The query status IAM and STS send with an error code (the SDKs' models; 400 for the rest). */
export function iamFaultStatus(code: string): number {
  return IAM_FAULT_STATUS[code] ?? 400;
}

/** What a SigV4 refusal is called in IAM's and STS's vocabulary. */
export const QUERY_AUTH_ERRORS: Record<string, { code: string; status: number }> = {
  MissingAuthenticationTokenException: { code: "MissingAuthenticationToken", status: 403 },
  IncompleteSignatureException: { code: "IncompleteSignature", status: 400 },
  UnrecognizedClientException: { code: "InvalidClientTokenId", status: 403 },
  InvalidSignatureException: { code: "SignatureDoesNotMatch", status: 403 },
};

/** One operation of a query API: its answer (undefined for none), given the parsed request and the caller. */
export type QueryOperation = (q: QueryRequest, caller: Caller, req: FastifyRequest) => Promise<Record<string, unknown> | undefined>;

export interface QueryApiSpec {
  /** "IAM", "STS". */
  name: string;
  version: string;
  namespace: string;
  /** CloudTrail's event source: iam.amazonaws.com, sts.amazonaws.com. */
  eventSource: string;
  /** The code of an internal error: IAM's ServiceFailure, STS's InternalFailure. */
  internalCode: string;
  operations: Record<string, QueryOperation>;
  /** The parameters each operation takes (top-level names: `Tags` covers `Tags.member.N.Key`); any other is refused. */
  members: Record<string, string[]>;
  /** Operations that only read, for the audit record. */
  readOnly: (action: string) => boolean;
  /** Checks the request's SigV4 signature (for the API's signing name) and says who sent it. */
  authenticate: (req: FastifyRequest, body: Buffer) => Promise<Caller>;
  log: (event: Record<string, unknown>) => void;
}

/** Turns any failure into the query API's error. */
export function toQueryError(err: unknown, internalCode: string): QueryError {
  if (err instanceof QueryError) return err;
  if (err instanceof AwsError) {
    const mapped = QUERY_AUTH_ERRORS[err.type];
    return mapped ? new QueryError(mapped.code, mapped.status, err.message) : new QueryError(err.type.replace(/Exception$/, ""), err.status, err.message);
  }
  if (err instanceof Unauthenticated) {
    return err.reason === "expired"
      ? new QueryError("ExpiredToken", 403, err.message)
      : new QueryError("InvalidClientTokenId", 403, err.message);
  }
  if (err instanceof AccessDenied) return new QueryError("AccessDenied", 403, err.message);
  if (err instanceof IamFault) return new QueryError(err.code, iamFaultStatus(err.code), err.message);
  if (err instanceof InvalidInput) return new QueryError("ValidationError", 400, err.message);
  if (err instanceof Throttled) return new QueryError("Throttling", 400, err.message);
  return new QueryError(internalCode, 500, "The lmvm service encountered an internal error; the server log has the details.");
}

/** A query API on POST / (post-root.ts). */
export function queryApi(spec: QueryApiSpec): PostRootApi {
  return {
    name: spec.name,
    claims: (req, body) => claimsQuery(req, body, spec.version),
    handle: async (req, reply, body) => {
      const requestId = randomUUID();
      const record = recordOf(req);
      const q = parseQuery(body);
      Object.assign(record, { eventSource: spec.eventSource, eventName: q?.action, requestId, readOnly: q ? spec.readOnly(q.action) : true });
      const accessKeyId = accessKeyIdOf(req.headers);
      if (accessKeyId) record.accessKeyId = accessKeyId;
      try {
        const caller = await spec.authenticate(req, body);
        record.caller = caller;
        if (!q) throw new QueryError("MissingAction", 400, "The request must contain the parameter Action.");
        record.requestParameters = q.toRecord();
        const operation = Object.hasOwn(spec.operations, q.action) ? spec.operations[q.action] : undefined;
        if (!operation) {
          throw new QueryError("InvalidAction", 400, `Could not find operation ${q.action} for version ${spec.version}. lmvm's ${spec.name} answers ${Object.keys(spec.operations).join(", ")}.`);
        }
        const members = spec.members[q.action] ?? [];
        const extra = [...new Set([...q.params.keys()].map((k) => k.split(".")[0]!))].filter((k) => !members.includes(k));
        if (extra.length) {
          throw new QueryError("ValidationError", 400, `${q.action} in lmvm takes no parameter ${extra.join(", ")}; it takes ${members.join(", ") || "none"}.`);
        }
        const result = await operation(q, caller, req);
        return sendQueryResult(reply, requestId, spec.namespace, q.action, result);
      } catch (err) {
        const e = toQueryError(err, spec.internalCode);
        if (e.status >= 500) spec.log({ level: "error", msg: "request failed", operation: `${spec.name}:${q?.action}`, requestId, err: err instanceof Error ? err.stack : String(err) });
        return sendQueryError(reply, requestId, spec.namespace, e);
      }
    },
  };
}

/** A required parameter, or ValidationError as IAM words it. */
export function required(q: QueryRequest, name: string): string {
  const v = q.string(name);
  if (v === undefined) {
    const member = name.charAt(0).toLowerCase() + name.slice(1);
    throw new QueryError("ValidationError", 400, `1 validation error detected: Value null at '${member}' failed to satisfy constraint: Member must not be null`);
  }
  return v;
}

/** An optional whole-number parameter within [min, max]. */
export function integer(q: QueryRequest, name: string, min: number, max: number): number | undefined {
  const v = q.string(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^-?\d+$/.test(v) || n < min || n > max) {
    const member = name.charAt(0).toLowerCase() + name.slice(1);
    const rule = n < min ? `have value greater than or equal to ${min}` : `have value less than or equal to ${max}`;
    throw new QueryError("ValidationError", 400, `1 validation error detected: Value '${v}' at '${member}' failed to satisfy constraint: Member must ${/^-?\d+$/.test(v) ? rule : "be a whole number"}`);
  }
  return n;
}
