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
}

export function record(area: string, attempt: string, outcome: string, figures?: Attempt["figures"]): void {
  const file = process.env.LMVM_HOSTILE_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ area, attempt, outcome, ...(figures ? { figures } : {}) })}\n`);
}
