// Renders a response as the AWS CLI does: --query (JMESPath) first, then
// --output json (4-space indent, ISO 8601 times), text (tab-separated rows,
// nested lists prefixed by their upper-cased key) or table (table.ts).

import { UsageError } from "./flags.js";
import { renderTable } from "./table.js";

export type OutputFormat = "json" | "text" | "table";

/** Dates become ISO strings and SDK metadata goes, so --query sees what `json` shows. */
export function plain(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString().replace("Z", "+00:00");
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k, v]) => k !== "$metadata" && v !== undefined)
        .map(([k, v]) => [k, plain(v)]),
    );
  }
  return value;
}

/** JMESPath is loaded only for a --query: most calls need none, and every module costs start-up time. */
export async function applyQuery(value: unknown, query: string | undefined): Promise<unknown> {
  if (!query) return value;
  const { default: jmespath } = await import("jmespath");
  try {
    return jmespath.search(value as object, query);
  } catch (err) {
    throw new UsageError(`Bad value for --query ${query}: ${(err as Error).message}`);
  }
}

const isScalar = (v: unknown) => v === null || typeof v !== "object";
const str = (v: unknown) => (v === null || v === undefined ? "None" : typeof v === "boolean" ? (v ? "True" : "False") : String(v));

function textRows(value: unknown, key: string | undefined, out: string[]): void {
  if (isScalar(value)) {
    out.push(key ? `${key}\t${str(value)}` : str(value));
  } else if (Array.isArray(value)) {
    if (value.every(isScalar)) out.push([...(key ? [key] : []), ...value.map(str)].join("\t"));
    else for (const v of value) textRows(v, key, out);
  } else {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b));
    const scalars = entries.filter(([, v]) => isScalar(v)).map(([, v]) => str(v));
    if (scalars.length) out.push([...(key ? [key] : []), ...scalars].join("\t"));
    for (const [k, v] of entries) if (!isScalar(v)) textRows(v, k.toUpperCase(), out);
  }
}

export function render(value: unknown, format: OutputFormat, title: string): string {
  if (value === undefined) return "";
  if (format === "json") return `${JSON.stringify(value, null, 4)}\n`;
  if (format === "table") return renderTable(value, title, process.stdout.isTTY ? process.stdout.columns : 80);
  const lines: string[] = [];
  textRows(value, undefined, lines);
  return lines.length ? `${lines.join("\n")}\n` : "";
}
