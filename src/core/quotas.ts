// Account quotas, as AWS Lambda MicroVMs sets them
// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html#microvms-quotas),
// and adjustable by the operator as AWS's are through Service Quotas.
// One key per quota: the operator sets it with `lmvm server --quotas key=value`,
// and the ServiceQuotaExceededException names it as its quotaCode.

import { QuotaExceeded, type ResourceType } from "./errors.js";
import { limitsOf } from "./limits.js";
import type { ImageVersion } from "./model.js";

export interface Quotas {
  /** MiB of baseline memory across the account's MicroVMs that hold memory (see MEMORY_HOLDING_STATES). */
  "microvm-memory-mib": number;
  /** Images per account. */
  images: number;
  /** Versions per image. */
  "versions-per-image": number;
  /** Builds queued or running at once, per account. */
  "concurrent-builds": number;
}

export type QuotaName = keyof Quotas;

/** AWS's defaults: 400 GB of memory (409,600 MiB), 100 images, 50 versions per image, 5 concurrent builds. */
export const DEFAULT_QUOTAS: Quotas = {
  "microvm-memory-mib": 409_600,
  images: 100,
  "versions-per-image": 50,
  "concurrent-builds": 5,
};

export const QUOTA_NAMES = Object.keys(DEFAULT_QUOTAS) as QuotaName[];

/**
 * The states in which a MicroVM's memory counts against the memory quota: the
 * service counts RUNNING and SUSPENDED; lmvm also counts PENDING and SUSPENDING,
 * which are on their way to one of those, so a burst of runs cannot slip past
 * the quota before its MicroVMs are RUNNING. TERMINATING MicroVMs are freeing
 * theirs and do not count.
 */
export const MEMORY_HOLDING_STATES = ["PENDING", "RUNNING", "SUSPENDING", "SUSPENDED"] as const;

/** The Service Quotas service code lmvm reports: the MicroVMs quotas are listed among AWS Lambda's. */
export const QUOTA_SERVICE_CODE = "lambda";

const HOW_TO_RAISE = (name: QuotaName) => `The operator can raise it with \`lmvm server --quotas ${name}=<value>\`.`;

/** Quotas with the operator's values applied; throws naming the key at fault. */
export function resolveQuotas(overrides: Partial<Record<string, number>> = {}): Quotas {
  const quotas = { ...DEFAULT_QUOTAS };
  for (const [key, value] of Object.entries(overrides)) {
    if (!(QUOTA_NAMES as string[]).includes(key)) throw new Error(`unknown quota '${key}'; the quotas are ${QUOTA_NAMES.join(", ")}.`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw new Error(`quota '${key}' must be a whole number of at least 0; got '${value}'.`);
    quotas[key as QuotaName] = value;
  }
  return quotas;
}

/** Parses `key=value,key=value` (the --quotas flag); throws naming the bad pair or key. */
export function parseQuotas(text: string): Partial<Quotas> {
  const out: Record<string, number> = {};
  for (const pair of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^([^=\s]+)\s*=\s*(\S+)$/.exec(pair);
    if (!m) throw new Error(`'${pair}' is not key=value; e.g. microvm-memory-mib=819200,images=200.`);
    const [, key, raw] = m as unknown as [string, string, string];
    if (!/^\d+$/.test(raw)) throw new Error(`quota '${key}' must be a whole number of at least 0; got '${raw}'.`);
    out[key] = Number(raw);
  }
  resolveQuotas(out);
  return out as Partial<Quotas>;
}

function n(value: number): string {
  return value.toLocaleString("en-US");
}

/**
 * The memory a MicroVM of this version counts against microvm-memory-mib: the
 * baseline memory of its size, set by the image's resources.
 */
export function microvmMemoryMiB(version: Pick<ImageVersion, "config">): number {
  return limitsOf(version.config).memoryMiB;
}

/** The error for a request that would pass a quota: which quota, its value, what is in use and how to raise it. */
export function quotaExceeded(name: QuotaName, limit: number, detail: string, resourceType: ResourceType, opts: { unit?: string; resourceId?: string } = {}): QuotaExceeded {
  return new QuotaExceeded(resourceType, `${detail} The quota '${name}' is ${n(limit)}${opts.unit ? ` ${opts.unit}` : ""}. ${HOW_TO_RAISE(name)}`, {
    quotaCode: name,
    serviceCode: QUOTA_SERVICE_CODE,
    ...(opts.resourceId ? { resourceId: opts.resourceId } : {}),
  });
}

export const format = { n };
