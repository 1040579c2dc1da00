// The audit trail: one CloudTrail-style event per API call, whoever made it
// and however it ended. The record's fields are CloudTrail's
// (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html);
// secrets are replaced before an event is made, so none is ever kept. Events
// are appended, never changed; `AuditTrail` writes those of concurrent
// requests together (group commit), so each request waits for one commit of
// its own event without a commit per request. No HTTP or SQL here.

import { randomUUID } from "node:crypto";
import type { Caller } from "./identity.js";
import type { Page, PageRequest } from "./model.js";

/** What CloudTrail writes in place of a sensitive member (request parameters and response elements). */
export const HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS";

/** The record version of CloudTrail's event format that lmvm's events follow. */
export const EVENT_VERSION = "1.09";

export type AuditIdentityType = "Root" | "IAMUser" | "AssumedRole" | "Unknown";

export interface AuditUserIdentity {
  type: AuditIdentityType;
  principalId?: string;
  arn?: string;
  accountId?: string;
  accessKeyId?: string;
  userName?: string;
  sessionContext?: {
    sessionIssuer: { type: "Role"; principalId: string; arn: string; accountId: string; userName: string };
    attributes: { creationDate?: string; mfaAuthenticated: "false" };
  };
}

export interface AuditResource {
  ARN: string;
  accountId?: string;
  type: string;
}

/** One API call, as CloudTrail records it. */
export interface AuditEvent {
  eventVersion: string;
  userIdentity: AuditUserIdentity;
  /** ISO 8601, whole seconds (CloudTrail's precision): `2026-11-29T18:30:05Z`. */
  eventTime: string;
  eventSource: string;
  eventName: string;
  awsRegion: string;
  sourceIPAddress: string;
  userAgent: string;
  errorCode?: string;
  errorMessage?: string;
  requestParameters: Record<string, unknown> | null;
  responseElements: Record<string, unknown> | null;
  requestID: string;
  eventID: string;
  readOnly: boolean;
  resources?: AuditResource[];
  eventType: "AwsApiCall";
  managementEvent: true;
  recipientAccountId: string;
  eventCategory: "Management";
}

/** LookupEvents' lookup attributes (CloudTrail's LookupAttributeKey). */
export const LOOKUP_KEYS = ["EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource", "AccessKeyId"] as const;
export type LookupKey = (typeof LOOKUP_KEYS)[number];

export interface AuditQuery {
  attribute?: { key: LookupKey; value: string };
  /** Inclusive bounds on eventTime. */
  startTime?: Date;
  endTime?: Date;
}

/** Where events are kept: appended, looked up, never changed or removed. */
export interface AuditLog {
  /** Appends the events in one durable transaction (on disk when it resolves). */
  appendAuditEvents(events: AuditEvent[]): Promise<void>;
  /** Newest first; `page.after` is the position `next` gave. */
  lookupAuditEvents(query: AuditQuery, page: PageRequest): Promise<Page<AuditEvent>>;
}

// ---- redaction ----

/** Members whose value is a secret wherever they appear (compared case-insensitively). */
const SECRET_MEMBERS = new Set([
  "secretaccesskey", "sessiontoken", "password", "newpassword", "oldpassword", "authtoken", "privatekey", "runhookpayload",
  "x-amz-security-token", "authorization", "signature", "x-amz-signature",
]);
/** Members holding name → value maps whose names may be kept but whose values are secrets. */
const SECRET_VALUE_MAPS = new Set(["environmentvariables", "variables"]);
/** Operations whose whole answer is a credential: nothing of it is kept. */
const SECRET_RESPONSES = new Set(["CreateMicrovmAuthToken", "CreateMicrovmShellAuthToken"]);

function scrub(value: unknown, depth = 0): unknown {
  if (depth > 32) return HIDDEN;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  if (!value || typeof value !== "object" || value instanceof Date) return value instanceof Date ? value.toISOString() : value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const k = key.toLowerCase();
    if (v === undefined) continue;
    if (SECRET_MEMBERS.has(k)) out[key] = HIDDEN;
    else if (SECRET_VALUE_MAPS.has(k) && v && typeof v === "object" && !Array.isArray(v)) {
      out[key] = Object.fromEntries(Object.keys(v).map((name) => [name, HIDDEN]));
    } else if (SECRET_VALUE_MAPS.has(k)) out[key] = HIDDEN;
    else out[key] = scrub(v, depth + 1);
  }
  return out;
}

/** Request parameters as kept: every sensitive member replaced by HIDDEN_DUE_TO_SECURITY_REASONS. */
export function redactParameters(parameters: Record<string, unknown> | undefined): Record<string, unknown> | null {
  return parameters && Object.keys(parameters).length ? (scrub(parameters) as Record<string, unknown>) : null;
}

/** Response elements as kept: none for operations that mint credentials, secrets hidden otherwise. */
export function redactResponse(eventName: string, elements: Record<string, unknown> | undefined): Record<string, unknown> | null {
  if (!elements || !Object.keys(elements).length) return null;
  if (SECRET_RESPONSES.has(eventName)) return Object.fromEntries(Object.keys(elements).map((k) => [k, HIDDEN]));
  return scrub(elements) as Record<string, unknown>;
}

// ---- building events ----

/** CloudTrail's resource type for an ARN lmvm names (`AWS::Lambda::MicrovmImage`…). */
export function resourceType(arn: string): string {
  const m = /^arn:[a-z-]+:([a-z0-9-]+):[^:]*:[^:]*:([^:/]+)/.exec(arn);
  if (!m) return "AWS::Unknown::Resource";
  const [, service, kind] = m as unknown as [string, string, string];
  const known: Record<string, string> = {
    "lambda/microvm-image": "AWS::Lambda::MicrovmImage",
    "lambda/microvm": "AWS::Lambda::Microvm",
    "lambda/network-connector": "AWS::Lambda::NetworkConnector",
    "iam/user": "AWS::IAM::User",
    "iam/role": "AWS::IAM::Role",
    "iam/policy": "AWS::IAM::Policy",
    "iam/root": "AWS::IAM::Root",
    "sts/assumed-role": "AWS::STS::AssumedRole",
    "logs/log-group": "AWS::Logs::LogGroup",
  };
  const pascal = (s: string) => s.split(/[-_]/).map((w) => (w === "iam" || w === "sts" ? w.toUpperCase() : w.charAt(0).toUpperCase() + w.slice(1))).join("");
  return known[`${service}/${kind}`] ?? `AWS::${pascal(service)}::${pascal(kind)}`;
}

function resourceAccount(arn: string): string | undefined {
  const account = arn.split(":")[4];
  return account && /^[0-9]{12}$/.test(account) ? account : undefined;
}

function userIdentity(caller: Caller | undefined, accessKeyId: string | undefined): AuditUserIdentity {
  const key = accessKeyId ?? caller?.accessKeyId;
  if (!caller) return { type: "Unknown", ...(key ? { accessKeyId: key } : {}) };
  const base = { principalId: caller.userId, arn: caller.arn, accountId: caller.accountId, ...(key ? { accessKeyId: key } : {}) };
  if (caller.kind === "root") return { type: "Root", ...base };
  if (caller.kind === "user") return { type: "IAMUser", ...base, userName: caller.arn.slice(caller.arn.lastIndexOf("/") + 1) };
  const roleArn = caller.roleArn ?? caller.principalArn;
  const issued = (caller as Caller & { issuedAt?: Date }).issuedAt;
  return {
    type: "AssumedRole",
    ...base,
    sessionContext: {
      sessionIssuer: {
        type: "Role",
        principalId: caller.userId.split(":")[0]!,
        arn: roleArn,
        accountId: caller.accountId,
        userName: roleArn.slice(roleArn.lastIndexOf("/") + 1),
      },
      attributes: { ...(issued ? { creationDate: wholeSeconds(issued) } : {}), mfaAuthenticated: "false" },
    },
  };
}

const wholeSeconds = (d: Date) => `${d.toISOString().slice(0, 19)}Z`;

/** What the API knows of one call when its answer is ready. */
export interface CallFacts {
  time: Date;
  region: string;
  accountId: string;
  eventSource: string;
  eventName: string;
  caller?: Caller;
  /** The key the request was signed with, even when it was refused. */
  accessKeyId?: string;
  sourceIp: string;
  userAgent?: string;
  requestId?: string;
  readOnly?: boolean;
  resources: string[];
  requestParameters?: Record<string, unknown>;
  responseElements?: Record<string, unknown>;
  errorCode?: string;
  errorMessage?: string;
}

/** The CloudTrail event for a call: secrets hidden, resources typed, ids assigned. */
export function auditEvent(f: CallFacts): AuditEvent {
  const arns = [...new Set(f.resources.filter((r) => r.startsWith("arn:")))];
  return {
    eventVersion: EVENT_VERSION,
    userIdentity: userIdentity(f.caller, f.accessKeyId),
    eventTime: wholeSeconds(f.time),
    eventSource: f.eventSource,
    eventName: f.eventName,
    awsRegion: f.region,
    sourceIPAddress: f.sourceIp,
    userAgent: f.userAgent ?? "",
    ...(f.errorCode ? { errorCode: f.errorCode, errorMessage: f.errorMessage ?? "" } : {}),
    requestParameters: redactParameters(f.requestParameters),
    responseElements: f.errorCode ? null : redactResponse(f.eventName, f.responseElements),
    requestID: f.requestId ?? randomUUID(),
    eventID: randomUUID(),
    readOnly: f.readOnly ?? false,
    ...(arns.length ? { resources: arns.map((arn) => ({ ARN: arn, ...(resourceAccount(arn) ? { accountId: resourceAccount(arn) } : {}), type: resourceType(arn) })) } : {}),
    eventType: "AwsApiCall",
    managementEvent: true,
    recipientAccountId: f.accountId,
    eventCategory: "Management",
  };
}

/** LookupEvents' Username: the IAM user's name, the role session's name, `root` for the account's root. */
export function eventUsername(e: AuditEvent): string | undefined {
  const id = e.userIdentity;
  if (id.type === "Root") return "root";
  if (id.type === "IAMUser") return id.userName;
  if (id.type === "AssumedRole") return id.arn ? id.arn.slice(id.arn.lastIndexOf("/") + 1) : undefined;
  return undefined;
}

/** The names LookupEvents' ResourceName matches for a resource: its ARN and its last name part. */
export function resourceNames(r: AuditResource): string[] {
  const group = /:log-group:(.+?)(:\*)?$/.exec(r.ARN)?.[1];
  const name = group ?? r.ARN.split(/[:/]/).at(-1);
  return name && name !== r.ARN ? [r.ARN, name] : [r.ARN];
}

// ---- group commit ----

interface Waiter {
  event: AuditEvent;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface AuditTrailOptions {
  /** How long the first event of a batch waits for others before the batch is written (default 0: the next turn of the event loop). */
  windowMs?: number;
  /** Largest batch written in one transaction. */
  maxBatch?: number;
}

/**
 * Appends events in batches: every event recorded while a batch is open or
 * being written goes in the next one, written in one transaction; each
 * `record` resolves once its batch is durable (or rejects if it failed).
 */
export class AuditTrail {
  private pending: Waiter[] = [];
  private scheduled = false;
  private writing: Promise<void> | undefined;
  private readonly windowMs: number;
  private readonly maxBatch: number;

  constructor(
    private readonly log: AuditLog,
    opts: AuditTrailOptions = {},
  ) {
    this.windowMs = opts.windowMs ?? 0;
    this.maxBatch = opts.maxBatch ?? 500;
  }

  /** Resolves once `event` is committed. */
  record(event: AuditEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ event, resolve, reject });
      this.schedule();
    });
  }

  lookup(query: AuditQuery, page: PageRequest): Promise<Page<AuditEvent>> {
    return this.log.lookupAuditEvents(query, page);
  }

  /** Waits until every event recorded so far is written (or failed). */
  async drain(): Promise<void> {
    while (this.pending.length || this.writing || this.scheduled) {
      if (this.writing) await this.writing;
      else await new Promise((r) => setTimeout(r, Math.max(1, this.windowMs)));
    }
  }

  private schedule(): void {
    if (this.scheduled || this.writing) return;
    this.scheduled = true;
    const go = () => {
      this.scheduled = false;
      this.writing = this.flush().finally(() => {
        this.writing = undefined;
        if (this.pending.length) this.schedule();
      });
    };
    if (this.windowMs > 0) setTimeout(go, this.windowMs);
    else setImmediate(go);
  }

  private async flush(): Promise<void> {
    while (this.pending.length) {
      const batch = this.pending.splice(0, this.maxBatch);
      try {
        await this.log.appendAuditEvents(batch.map((w) => w.event));
        for (const w of batch) w.resolve();
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
  }
}
