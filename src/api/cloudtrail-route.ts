// CloudTrail's LookupEvents on the control API's port, so
// @aws-sdk/client-cloudtrail (and `aws cloudtrail lookup-events`) read lmvm's
// audit trail: POST / with `X-Amz-Target:
// com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`, an
// awsJson1_1 body, SigV4-signed for the service `cloudtrail`. Inputs, output
// and errors follow the API reference:
// https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_LookupEvents.html

import { randomUUID } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import {
  InvalidInput, LOOKUP_KEYS, resourceNames, eventUsername, type AuditEvent, type AuditQuery, type AuditTrail,
  type AuthorizationRequest, type Caller, type LookupKey,
} from "../core/index.js";
import { toAwsError } from "./errors.js";
import { PageTokens } from "./pagination.js";
import type { PostRootApi } from "./post-root.js";
import { recordOf } from "./request-record.js";

export const CLOUDTRAIL_TARGET_PREFIX = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";
/** The target as the JavaScript SDK v3 sends it (the service's shape name without its namespace). */
const SHORT_TARGET_PREFIX = "CloudTrail_20131101.";

/** The operation an X-Amz-Target names for CloudTrail, if it names one. */
function targetOperation(target: unknown): string | undefined {
  if (typeof target !== "string") return undefined;
  if (target.startsWith(CLOUDTRAIL_TARGET_PREFIX)) return target.slice(CLOUDTRAIL_TARGET_PREFIX.length);
  if (target.startsWith(SHORT_TARGET_PREFIX)) return target.slice(SHORT_TARGET_PREFIX.length);
  return undefined;
}
const CONTENT_TYPE = "application/x-amz-json-1.1";
const DEFAULT_MAX_RESULTS = 50;
const INPUT_MEMBERS = ["LookupAttributes", "StartTime", "EndTime", "EventCategory", "MaxResults", "NextToken"];

export interface CloudTrailApiOptions {
  trail: AuditTrail;
  pageTokens: PageTokens;
  /** Checks the request's SigV4 signature (signing name `cloudtrail`) and says who sent it. */
  authenticate: (req: FastifyRequest, body: Buffer) => Promise<Caller | undefined>;
  /** Decides whether the caller may do what it asks (root always may); absent, any authenticated caller may. */
  authorize?: (caller: Caller, request: AuthorizationRequest) => Promise<void>;
  log: (event: Record<string, unknown>) => void;
}

class CloudTrailError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

function send(reply: FastifyReply, requestId: string, status: number, body: Record<string, unknown>, errorType?: string): FastifyReply {
  reply.code(status).header("x-amzn-requestid", requestId).header("content-type", CONTENT_TYPE);
  if (errorType) reply.header("x-amzn-errortype", errorType);
  return reply.send(JSON.stringify(body));
}

function timestamp(input: Record<string, unknown>, member: "StartTime" | "EndTime"): Date | undefined {
  const v = input[member];
  if (v === undefined || v === null) return undefined;
  const d = typeof v === "number" ? new Date(v * 1000) : typeof v === "string" ? new Date(/^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : v) : undefined;
  if (!d || Number.isNaN(d.getTime())) throw new CloudTrailError("InvalidTimeRangeException", `${member} must be a timestamp (seconds since the epoch, or ISO 8601); got ${JSON.stringify(v)}.`);
  return d;
}

interface Parsed {
  query: AuditQuery;
  maxResults: number;
  nextToken?: string;
  insight: boolean;
  /** What the paging token is bound to: every input but the paging members. */
  context: string;
}

function parse(input: Record<string, unknown>): Parsed {
  const unknown = Object.keys(input).filter((k) => !INPUT_MEMBERS.includes(k));
  if (unknown.length) throw new CloudTrailError("SerializationException", `LookupEvents has no member ${unknown.map((k) => `'${k}'`).join(", ")}; its members are ${INPUT_MEMBERS.join(", ")}.`);
  const query: AuditQuery = {};
  const attributes = input.LookupAttributes ?? [];
  if (!Array.isArray(attributes)) throw new CloudTrailError("InvalidLookupAttributesException", "LookupAttributes must be a list of {AttributeKey, AttributeValue}.");
  if (attributes.length > 1) throw new CloudTrailError("InvalidLookupAttributesException", `LookupAttributes can hold only one attribute; got ${attributes.length}. Make one request per attribute.`);
  if (attributes.length === 1) {
    const a = attributes[0] as { AttributeKey?: unknown; AttributeValue?: unknown } | null;
    const key = a?.AttributeKey;
    if (typeof key !== "string" || !(LOOKUP_KEYS as readonly string[]).includes(key)) {
      throw new CloudTrailError("InvalidLookupAttributesException", `AttributeKey must be one of ${LOOKUP_KEYS.join(", ")}; got ${JSON.stringify(key)}.`);
    }
    const value = a?.AttributeValue;
    if (typeof value !== "string" || value.length < 1 || value.length > 2000) {
      throw new CloudTrailError("InvalidLookupAttributesException", `AttributeValue must be a string of 1 to 2000 characters; got ${JSON.stringify(value)}.`);
    }
    if (key === "ReadOnly" && value !== "true" && value !== "false") {
      throw new CloudTrailError("InvalidLookupAttributesException", `The ReadOnly attribute's value must be 'true' or 'false'; got '${value}'.`);
    }
    query.attribute = { key: key as LookupKey, value };
  }
  const start = timestamp(input, "StartTime");
  const end = timestamp(input, "EndTime");
  if (start && end && start.getTime() > end.getTime()) {
    throw new CloudTrailError("InvalidTimeRangeException", `StartTime (${start.toISOString()}) is after EndTime (${end.toISOString()}): the start of the range must come first.`);
  }
  if (start) query.startTime = start;
  if (end) query.endTime = end;
  const max = input.MaxResults ?? DEFAULT_MAX_RESULTS;
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1 || max > 50) {
    throw new CloudTrailError("InvalidMaxResultsException", `MaxResults must be a whole number from 1 to 50; got ${JSON.stringify(max)}.`);
  }
  const category = input.EventCategory;
  if (category !== undefined && category !== "insight") {
    throw new CloudTrailError("InvalidEventCategoryException", `EventCategory can only be 'insight'; got ${JSON.stringify(category)}. Leave it out to look up management events.`);
  }
  const token = input.NextToken;
  if (token !== undefined && (typeof token !== "string" || !token)) throw new CloudTrailError("InvalidNextTokenException", "NextToken must be the NextToken string of the previous page.");
  const context = PageTokens.context("LookupEvents", { a: query.attribute ?? null, s: start?.getTime() ?? null, e: end?.getTime() ?? null, c: category ?? null });
  return { query, maxResults: max, ...(token ? { nextToken: token as string } : {}), insight: category === "insight", context };
}

/** One event as LookupEvents returns it. */
function eventView(e: AuditEvent): Record<string, unknown> {
  const username = eventUsername(e);
  return {
    EventId: e.eventID,
    EventName: e.eventName,
    ReadOnly: String(e.readOnly),
    ...(e.userIdentity.accessKeyId ? { AccessKeyId: e.userIdentity.accessKeyId } : {}),
    EventTime: Date.parse(e.eventTime) / 1000,
    EventSource: e.eventSource,
    ...(username ? { Username: username } : {}),
    Resources: (e.resources ?? []).map((r) => ({ ResourceType: r.type, ResourceName: resourceNames(r).at(-1) })),
    CloudTrailEvent: JSON.stringify(e),
  };
}

/** CloudTrail's request parameters as its events show them: members in camelCase. */
function camel(input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) {
    const key = k.charAt(0).toLowerCase() + k.slice(1);
    out[key] = Array.isArray(v) ? v.map((x) => (x && typeof x === "object" ? camel(x as Record<string, unknown>) : x)) : v && typeof v === "object" ? camel(v as Record<string, unknown>) : v;
  }
  return out;
}

/** The CloudTrail API (LookupEvents), one of the APIs on POST / (post-root.ts). */
export function cloudTrailApi(opts: CloudTrailApiOptions): PostRootApi {
  return {
    name: "CloudTrail",
    claims: (req) => targetOperation(req.headers["x-amz-target"]) !== undefined,
    handle: async (req, reply, body) => {
      const requestId = randomUUID();
      const operation = targetOperation(req.headers["x-amz-target"])!;
      const record = recordOf(req);
      Object.assign(record, { eventSource: "cloudtrail.amazonaws.com", eventName: operation, requestId, readOnly: true });
      const fail = (type: string, status: number, message: string) => {
        record.errorCode = type;
        record.errorMessage = message;
        return send(reply, requestId, status, { __type: type, Message: message }, type);
      };
      try {
        const caller = await opts.authenticate(req, body);
        if (caller) record.caller = caller;
        if (operation !== "LookupEvents") {
          return fail("UnknownOperationException", 400, `lmvm's CloudTrail API has only LookupEvents; '${operation}' is not supported.`);
        }
        let input: unknown = {};
        if (body.length) {
          try {
            input = JSON.parse(body.toString("utf8"));
          } catch (err) {
            throw new CloudTrailError("SerializationException", `The request body is not valid JSON: ${(err as Error).message}`);
          }
        }
        if (!input || typeof input !== "object" || Array.isArray(input)) throw new CloudTrailError("SerializationException", "The request body must be a JSON object.");
        record.requestParameters = camel(input as Record<string, unknown>);
        if (caller && opts.authorize) await opts.authorize(caller, { action: "cloudtrail:LookupEvents", resources: ["*"], context: {} });
        const parsed = parse(input as Record<string, unknown>);
        let after: string | undefined;
        if (parsed.nextToken) {
          try {
            after = opts.pageTokens.decode(parsed.context, parsed.nextToken);
          } catch (err) {
            if (!(err instanceof InvalidInput)) throw err;
            throw new CloudTrailError("InvalidNextTokenException", "NextToken is invalid: pass back exactly the NextToken of the previous page of this same request (same LookupAttributes, StartTime, EndTime and EventCategory).");
          }
        }
        // lmvm records management events only: there are never Insights events to return.
        const page = parsed.insight ? { items: [] } : await opts.trail.lookup(parsed.query, { limit: parsed.maxResults, ...(after ? { after } : {}) });
        return send(reply, requestId, 200, {
          Events: page.items.map(eventView),
          ...(page.next ? { NextToken: opts.pageTokens.encode(parsed.context, page.next) } : {}),
        });
      } catch (err) {
        if (err instanceof CloudTrailError) return fail(err.type, 400, err.message);
        const aws = toAwsError(err);
        if (aws.status >= 500) opts.log({ level: "error", msg: "request failed", operation: `cloudtrail:${operation}`, requestId, err: err instanceof Error ? err.stack : String(err) });
        return fail(aws.type, aws.status, aws.message);
      }
    },
  };
}
