// `--output table`, drawn as the AWS CLI draws it (awscli/formatter.py's
// TableFormatter and awscli/table.py's MultiTable): a title row with the
// operation's name; an object becomes a row under its keys as column headers
// (one key: a key | value row); a list of objects becomes rows under the union
// of their keys; a list of lists becomes rows; nested objects and lists become
// sections titled with their key, indented one level; a table wider than the
// terminal (80 columns when not a terminal) turns its single-row sections into
// key | value rows. Two departures, where the AWS CLI prints a broken table:
// a value holding line breaks takes several lines of its cell, and a scalar
// result (`--query state`) gets its own row under the title (the AWS CLI
// prints the title alone). test/unit/cli-table.test.ts compares both with
// what the AWS CLI prints for the same data.

interface Section {
  title: string;
  headers: string[];
  rows: string[][];
  indent: number;
  /** Widest line of each column, headers included. */
  widths: number[];
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const isScalar = (v: unknown): boolean => v === null || typeof v !== "object";
/** Python's str() of a JSON value, as the AWS CLI prints it. */
const cell = (v: unknown): string => (v === null || v === undefined ? "None" : typeof v === "boolean" ? (v ? "True" : "False") : String(v));
/** Python's truthiness: the AWS CLI draws nothing for an empty or false value. */
const truthy = (v: unknown): boolean => !(v === null || v === undefined || v === false || v === 0 || v === "" || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0));

/** Display width: East Asian wide and full-width characters take two columns, as in the AWS CLI. */
function textWidth(text: string): number {
  let n = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    const wide = (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf) || (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1faff) || (c >= 0x20000 && c <= 0x3fffd);
    n += wide ? 2 : 1;
  }
  return n;
}
const lines = (text: string): string[] => text.split(/\r?\n/);
const cellWidth = (text: string): number => Math.max(...lines(text).map(textWidth));
const spaces = (n: number): string => " ".repeat(Math.max(0, n));

/** Python 3's round(): halves go to the even neighbour. */
function pyRound(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

class Table {
  readonly sections: Section[] = [];
  private current: Section | undefined;

  newSection(title: string, indent: number): void {
    this.current = { title, headers: [], rows: [], indent, widths: [] };
    this.sections.push(this.current);
  }

  private grow(values: string[]): void {
    const s = this.current!;
    values.forEach((v, i) => (s.widths[i] = Math.max(s.widths[i] ?? 0, cellWidth(v))));
  }

  header(headers: string[]): void {
    this.current!.headers = headers;
    this.grow(headers);
  }

  row(values: unknown[]): void {
    const s = this.current!;
    const width = s.headers.length || s.rows[0]?.length || values.length;
    // The AWS CLI fails on a row of another length (a list of lists of different lengths); lmvm pads or widens it.
    const row = values.map(cell);
    while (row.length < width) row.push("");
    if (row.length > width) for (const r of s.rows) while (r.length < row.length) r.push("");
    s.rows.push(row);
    this.grow(row);
  }

  /** Column widths (cell plus `padding`) scaled to fill `total`, rounding as the AWS CLI does. */
  static columns(s: Section, padding: number, total?: number): number[] {
    const unscaled = s.widths.map((w) => w + padding);
    if (total === undefined || unscaled.length === 0) return unscaled;
    const factor = total / unscaled.reduce((a, b) => a + b, 0);
    const scaled = unscaled.map((w) => pyRound(factor * w));
    let off = scaled.reduce((a, b) => a + b, 0) - total;
    while (off !== 0) {
      const order = scaled.map((_, i) => i);
      if (off < 0) order.reverse();
      for (const i of order) {
        if (off > 0) {
          scaled[i]!--;
          off--;
        } else {
          scaled[i]!++;
          off++;
        }
        if (off === 0) break;
      }
    }
    return scaled;
  }

  static totalWidth(s: Section): number {
    const columns = Table.columns(s, 0).reduce((a, w) => a + w + 4, 0) + 2 + 2 * s.indent;
    return Math.max(textWidth(s.title) + 2 + 2 * s.indent, columns);
  }

  render(terminalWidth: number): string {
    let width = Math.max(...this.sections.map(Table.totalWidth));
    if (width > terminalWidth) {
      // Too wide: single-row sections become key | value rows.
      for (let i = 0; i < this.sections.length; i++) {
        const s = this.sections[i]!;
        if (s.rows.length !== 1 || !s.headers.length) continue;
        this.current = { title: s.title, headers: [], rows: [], indent: s.indent, widths: [] };
        s.headers.forEach((h, j) => this.row([h, s.rows[0]![j]]));
        this.sections[i] = this.current;
      }
      width = Math.max(...this.sections.map(Table.totalWidth));
    }
    const out = [`${"-".repeat(width)}`];
    for (const s of this.sections) {
      const inner = width - 2 * s.indent;
      const bar = "|".repeat(s.indent);
      const put = (line: string) => out.push(`${bar}${line}${bar}`);
      const center = (text: string, length: number, left: string) => {
        const start = Math.floor(length / 2) - Math.floor(textWidth(text) / 2) - 1;
        return `${left}${spaces(start)}${text}${spaces(length - 1 - (left.length + start + textWidth(text)))}|`;
      };
      const rule = (columns: number[]) => columns.map((w, i) => (i === 0 ? `+${"-".repeat(w - 2)}+` : `${"-".repeat(w - 1)}+`)).join("");
      if (s.title) {
        put(center(s.title, inner, "|"));
        if (!s.headers.length && !s.rows.length) put(`+${"-".repeat(inner - 2)}+`);
      }
      if (s.headers.length) {
        const columns = Table.columns(s, 4, inner);
        put(rule(columns));
        put(columns.map((w, i) => center(s.headers[i] ?? "", w, i === 0 ? "|" : "")).join(""));
      }
      if (s.rows.length) {
        const columns = Table.columns(s, 4, inner);
        if (!columns.length) continue;
        put(rule(columns));
        for (const row of s.rows) {
          const split = row.map(lines);
          const height = Math.max(...split.map((l) => l.length));
          for (let k = 0; k < height; k++) {
            put(columns.map((w, i) => {
              const text = split[i]?.[k] ?? "";
              const left = i === 0 ? "|" : "";
              const pad = w - (textWidth(text) + 2 + left.length + 1) >= 0 ? 2 : 0;
              return `${left}${spaces(pad)}${text}${spaces(w - (left.length + pad + textWidth(text)) - 1)}|`;
            }).join(""));
          }
        }
        put(rule(columns));
      }
    }
    return `${out.join("\n")}\n`;
  }
}

function build(table: Table, title: string | undefined, value: Json, indent: number): boolean {
  if (!truthy(value)) return false;
  if (title !== undefined) table.newSection(title, indent);
  if (Array.isArray(value)) {
    if (value[0] !== null && typeof value[0] === "object" && !Array.isArray(value[0])) fromList(table, value, indent, title ?? "");
    else {
      for (const item of value) {
        if (isScalar(item)) table.row([item]);
        else if (Array.isArray(item) && item.every(isScalar)) table.row(item);
        else build(table, undefined, item, 0);
      }
    }
  } else if (typeof value === "object" && value !== null) {
    fromObject(table, value, indent);
  } else {
    table.row([value]);
  }
  return true;
}

function keys(o: { [key: string]: Json }): { scalars: string[]; nested: string[] } {
  const all = Object.keys(o).sort();
  return { scalars: all.filter((k) => isScalar(o[k])), nested: all.filter((k) => !isScalar(o[k])) };
}

function fromObject(table: Table, o: { [key: string]: Json }, indent: number): void {
  const { scalars, nested } = keys(o);
  if (scalars.length === 1) table.row([scalars[0], o[scalars[0]!]]);
  else if (scalars.length) {
    table.header(scalars);
    table.row(scalars.map((k) => o[k]));
  }
  for (const k of nested) build(table, k, o[k]!, indent + 1);
}

function fromList(table: Table, list: Json[], indent: number, title: string): void {
  const objects = list.filter((v): v is { [key: string]: Json } => v !== null && typeof v === "object" && !Array.isArray(v));
  const scalars = [...new Set(objects.flatMap((o) => keys(o).scalars))].sort();
  const nested = [...new Set(objects.flatMap((o) => keys(o).nested))].sort();
  table.header(scalars);
  objects.forEach((o, i) => {
    if (i > 0 && nested.length) {
      table.newSection(title, indent);
      table.header(scalars);
    }
    table.row(scalars.map((k) => (k in o ? o[k] : "")));
    for (const k of nested) if (k in o) build(table, k, o[k]!, indent + 1);
  });
}

/** The table for `value` (after --query) titled `title`, or "" when the AWS CLI would print nothing. */
export function renderTable(value: unknown, title: string, terminalWidth = 80): string {
  const table = new Table();
  if (!build(table, title, value as Json, 0)) return "";
  return table.render(terminalWidth);
}
