// Request rates per account and operation, as AWS Lambda MicroVMs throttles
// them: a token bucket per (account, operation) whose burst equals its rate
// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html#microvms-quotas).
// A request past the rate is refused with Throttled (ThrottlingException, 429
// on the wire), which the AWS SDKs' standard retry waits out. The operator sets
// rates with `lmvm server --rate-limits Op=rate,...`.

import { Throttled } from "./errors.js";
import type { OperationName } from "./inputs.js";
import { QUOTA_SERVICE_CODE } from "./quotas.js";

/** The Lambda Core network-connector operations (src/core/connectors.ts), throttled the same way. */
export type ConnectorOperationName =
  | "CreateNetworkConnector" | "GetNetworkConnector" | "ListNetworkConnectors" | "ListNetworkConnectorVersions"
  | "UpdateNetworkConnector" | "DeleteNetworkConnector";
export type RateLimits = Record<OperationName | ConnectorOperationName, number>;

/**
 * Requests per second. The documented rates: RunMicrovm 5, ResumeMicrovm 5,
 * SuspendMicrovm 2, TerminateMicrovm 10, GetMicrovm 100, CreateMicrovmAuthToken 50,
 * CreateMicrovmShellAuthToken 5. The rest are lmvm's choice, after AWS Lambda's
 * own control-plane quotas: reads (Get*, List*) 100 per second like GetMicrovm
 * (and Lambda's GetFunction), other writes 15 per second (Lambda's "control
 * plane API requests" quota).
 */
export const DEFAULT_RATE_LIMITS: RateLimits = {
  RunMicrovm: 5,
  ResumeMicrovm: 5,
  SuspendMicrovm: 2,
  TerminateMicrovm: 10,
  GetMicrovm: 100,
  CreateMicrovmAuthToken: 50,
  CreateMicrovmShellAuthToken: 5,
  // lmvm's choices:
  ListMicrovms: 100,
  CreateMicrovmImage: 15,
  UpdateMicrovmImage: 15,
  DeleteMicrovmImage: 15,
  GetMicrovmImage: 100,
  ListMicrovmImages: 100,
  ListMicrovmImageVersions: 100,
  GetMicrovmImageVersion: 100,
  UpdateMicrovmImageVersion: 15,
  DeleteMicrovmImageVersion: 15,
  ListMicrovmImageBuilds: 100,
  GetMicrovmImageBuild: 100,
  ListManagedMicrovmImages: 100,
  ListManagedMicrovmImageVersions: 100,
  TagResource: 15,
  UntagResource: 15,
  ListTags: 100,
  // Lambda Core's network connectors, by the same rule:
  CreateNetworkConnector: 15,
  UpdateNetworkConnector: 15,
  DeleteNetworkConnector: 15,
  GetNetworkConnector: 100,
  ListNetworkConnectors: 100,
  ListNetworkConnectorVersions: 100,
};

/** The operations whose rate AWS documents; the others are lmvm's choice. */
export const DOCUMENTED_RATES: readonly OperationName[] = [
  "RunMicrovm", "ResumeMicrovm", "SuspendMicrovm", "TerminateMicrovm", "GetMicrovm", "CreateMicrovmAuthToken", "CreateMicrovmShellAuthToken",
];

const OPERATIONS = Object.keys(DEFAULT_RATE_LIMITS) as (OperationName | ConnectorOperationName)[];
/** Rates are per second, from one request a minute up. */
const MIN_RATE = 1 / 60;

function checkRate(key: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < MIN_RATE) {
    throw new Error(`rate limit '${key}' must be a number of requests per second, at least ${MIN_RATE.toFixed(4)} (one a minute); got '${value}'.`);
  }
  return value;
}

/**
 * Rate limits with the operator's values applied; `*` sets every operation,
 * and named operations override it. Throws naming the key at fault.
 */
export function resolveRateLimits(overrides: Partial<Record<string, number>> = {}): RateLimits {
  const limits = { ...DEFAULT_RATE_LIMITS };
  const all = overrides["*"];
  if (all !== undefined) for (const op of OPERATIONS) limits[op] = checkRate("*", all);
  for (const [key, value] of Object.entries(overrides)) {
    if (key === "*") continue;
    if (!(OPERATIONS as string[]).includes(key)) {
      throw new Error(`unknown operation '${key}'; rate limits are set per operation, named as in the API (RunMicrovm, GetMicrovm, ...), or '*' for all. The operations are ${OPERATIONS.join(", ")}.`);
    }
    limits[key as OperationName] = checkRate(key, value);
  }
  return limits;
}

/** Parses `Op=rate,Op=rate` (the --rate-limits flag); throws naming the bad pair or operation. */
export function parseRateLimits(text: string): Partial<Record<OperationName | "*", number>> {
  const out: Record<string, number> = {};
  for (const pair of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=\s]+)\s*=\s*(\S+)$/.exec(pair);
    if (!m) throw new Error(`'${pair}' is not Operation=rate; e.g. RunMicrovm=20,GetMicrovm=500.`);
    const [, key, raw] = m as unknown as [string, string, string];
    if (!/^\d+(\.\d+)?$/.test(raw)) throw new Error(`rate limit '${key}' must be a number of requests per second; got '${raw}'.`);
    out[key] = Number(raw);
  }
  resolveRateLimits(out);
  return out;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets, one per account and operation; each starts full and holds at most its rate (at least one request). */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly limits: RateLimits,
    /** Milliseconds: the platform's clock (a clock set back refills nothing). */
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** Takes one request of `operation` for `accountId`, or throws Throttled saying when to retry. */
  admit(accountId: string, operation: OperationName | ConnectorOperationName): void {
    const rate = this.limits[operation];
    const burst = Math.max(1, rate);
    const key = `${accountId}\u0000${operation}`;
    const now = this.now();
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * rate);
    bucket.at = Math.max(bucket.at, now);
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
    throw new Throttled(
      `Rate exceeded: ${operation} is limited to ${describeRate(rate)} per account (bursts of ${Math.floor(burst)}). ` +
        `Retry after ${retryAfterSeconds} s (the AWS SDKs' standard retry does); the operator can raise it with \`lmvm server --rate-limits ${operation}=<per second>\`.`,
      retryAfterSeconds,
      { quotaCode: operation, serviceCode: QUOTA_SERVICE_CODE },
    );
  }
}

function describeRate(rate: number): string {
  return rate >= 1 ? `${rate} request${rate === 1 ? "" : "s"} per second` : `one request every ${(1 / rate).toFixed(1)} s`;
}
