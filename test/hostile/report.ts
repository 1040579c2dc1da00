// What the hostile suite tried and what held, recorded as it runs (one JSON
// line per attempt) when LMVM_HOSTILE_REPORT names a file; the reliability
// report (scripts/reliability-report.sh, rendering with scripts/render-reliability.ts)
// turns them into docs/reliability.md.

import { appendFileSync } from "node:fs";

export interface Attempt {
  area: string;
  attempt: string;
  outcome: string;
  figures?: Record<string, number | string>;
  /** Set by recordFuzz: one operation's fuzz figures. */
  fuzz?: FuzzFigures;
}

export function record(area: string, attempt: string, outcome: string, figures?: Attempt["figures"]): void {
  const file = process.env.LMVM_HOSTILE_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ area, attempt, outcome, ...(figures ? { figures } : {}) })}\n`);
}

/** What the API fuzzer sent one operation, and how many of its requests got past validation. */
export interface FuzzFigures {
  operation: string;
  requests: number;
  /** Answered with anything but a 400 ValidationException. */
  pastValidation: number;
  /** Requests generated with every member valid. */
  builtValid: number;
  /** Answers by status and error type. */
  answers: Record<string, number>;
}

export function recordFuzz(figures: FuzzFigures): void {
  const file = process.env.LMVM_HOSTILE_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ area: "api-fuzz-operations", attempt: figures.operation, outcome: `${figures.pastValidation} of ${figures.requests} past validation`, fuzz: figures })}\n`);
}
