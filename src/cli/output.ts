// Renders a response as the AWS CLI does: --query (JMESPath) first, then
// --output json (4-space indent, ISO 8601 times), text (tab-separated rows,
// nested lists prefixed by their upper-cased key) or table.

import { UsageError } from "./flags.js";

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

function pad(s: string, width: number): string {
  return s + " ".repeat(Math.max(0, width - [...s].length));
}

function tableLines(title: string, value: unknown, lines: string[]): void {
  const box = (rows: string[][], header?: string[]) => {
    const all = header ? [header, ...rows] : rows;
    const widths = all[0]!.map((_, i) => Math.max(...all.map((r) => [...(r[i] ?? "")].length)));
    const total = widths.reduce((a, b) => a + b + 3, -1);
    const width = Math.max(total, [...title].length + 2);
    if (total < width) widths[widths.length - 1]! += width - total;
    const rule = `+${"-".repeat(width + 2)}+`;
    lines.push(rule, `| ${pad(" ".repeat(Math.floor((width - [...title].length) / 2)) + title, width)} |`, rule);
    const line = (r: string[]) => `| ${r.map((c, i) => pad(c, widths[i]!)).join(" | ")} |`;
    if (header) lines.push(line(header), `+${widths.map((w) => "-".repeat(w + 2)).join("+")}+`);
    for (const r of rows) lines.push(line(r));
    lines.push(`+${widths.map((w) => "-".repeat(w + 2)).join("+")}+`);
  };
  if (isScalar(value)) return box([[str(value)]]);
  if (Array.isArray(value)) {
    if (value.every(isScalar)) return box(value.map((v) => [str(v)]));
    const objects = value.filter((v) => v && typeof v === "object" && !Array.isArray(v)) as Record<string, unknown>[];
    const keys = [...new Set(objects.flatMap((o) => Object.keys(o).filter((k) => isScalar(o[k]))))].sort();
    if (keys.length) box(objects.map((o) => keys.map((k) => (o[k] === undefined ? "" : str(o[k])))), keys);
    objects.forEach((o) => Object.entries(o).filter(([, v]) => !isScalar(v)).forEach(([k, v]) => tableLines(k, v, lines)));
    return;
  }
  const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b));
  const scalars = entries.filter(([, v]) => isScalar(v));
  if (scalars.length) box(scalars.map(([k, v]) => [k, str(v)]));
  for (const [k, v] of entries) if (!isScalar(v)) tableLines(k, v, lines);
}

export function render(value: unknown, format: OutputFormat, title: string): string {
  if (value === undefined) return "";
  if (format === "json") return `${JSON.stringify(value, null, 4)}\n`;
  const lines: string[] = [];
  if (format === "text") textRows(value, undefined, lines);
  else tableLines(title, value, lines);
  return lines.length ? `${lines.join("\n")}\n` : "";
}
