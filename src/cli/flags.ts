// Command-line flags for each operation, derived from the SDK's input schema
// exactly as the AWS CLI derives them from the service model: member
// `imageIdentifier` is `--image-identifier`, JSON values are accepted for
// every structured member, plus the AWS CLI's shorthand (key=value,...) for
// flat structures and maps, several values for string lists, and file://.

import { readFileSync } from "node:fs";
import { inputSchema, kindOf, listMember, mapValue, structureMembers, type MemberModel, type OperationModel, type SdkOperationName } from "../api/sdk-model.js";

export class UsageError extends Error {}

/** The AWS CLI's xform_name: imageIdentifier → image-identifier, TagKeys → tag-keys. */
export function kebab(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1-$2")
    .toLowerCase();
}

export function kebabOperation(name: string): string {
  return kebab(name);
}

/** `--flag value`, `--flag=value`, or several values for a list. */
export interface RawArgs {
  flags: Map<string, string[]>;
  positionals: string[];
}

export function splitArgs(argv: string[], booleans: ReadonlySet<string>, singles: ReadonlySet<string> = new Set()): RawArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  let current: string | undefined;
  for (const arg of argv) {
    if (arg.startsWith("--") && arg.length > 2) {
      const eq = arg.indexOf("=");
      const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
      if (!flags.has(name)) flags.set(name, []);
      if (eq > 0) {
        flags.get(name)!.push(arg.slice(eq + 1));
        current = undefined;
      } else {
        current = booleans.has(name) ? undefined : name;
      }
    } else if (current) {
      flags.get(current)!.push(arg);
      if (singles.has(current)) current = undefined;
    } else {
      positionals.push(arg);
    }
  }
  return { flags, positionals };
}

function readValue(value: string): string {
  if (value.startsWith("file://")) {
    const path = value.slice("file://".length);
    try {
      return readFileSync(path, "utf8").replace(/\n$/, "");
    } catch (err) {
      throw new UsageError(`Error parsing parameter: unable to load paramfile ${value}: ${(err as Error).message}`);
    }
  }
  return value;
}

function parseJson(flag: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`Error parsing parameter '--${flag}': Invalid JSON: ${(err as Error).message}\nJSON received: ${text}`);
  }
}

function scalar(kind: string, flag: string, text: string): unknown {
  if (kind === "number") {
    if (!/^-?\d+(\.\d+)?$/.test(text)) throw new UsageError(`Error parsing parameter '--${flag}': expected a number, got '${text}'.`);
    return Number(text);
  }
  if (kind === "boolean") {
    if (text !== "true" && text !== "false") throw new UsageError(`Error parsing parameter '--${flag}': expected true or false, got '${text}'.`);
    return text === "true";
  }
  return text;
}

/**
 * The AWS CLI's shorthand syntax: `key=value,key2={nested=value},key3=[a,b]`,
 * typed by the target schema (a structure or union checks its keys; no target
 * means a map of strings). A value runs to the next `,key=`, so a string may
 * hold commas (`a=x,y` is "x,y"; for a list member it is [x, y]).
 */
class Shorthand {
  private i = 0;
  constructor(
    private readonly flag: string,
    private readonly text: string,
  ) {}

  private fail(why: string): never {
    throw new UsageError(`Error parsing parameter '--${this.flag}': ${why}, at character ${this.i + 1} of '${this.text}'.`);
  }

  parse(target: unknown): Record<string, unknown> {
    const out = this.members(target, "");
    if (this.i < this.text.length) this.fail(`unexpected '${this.text[this.i]}'`);
    return out;
  }

  private members(target: unknown, close: string): Record<string, unknown> {
    const kind = target === undefined ? "string-map" : kindOf(target);
    const members = kind === "structure" || kind === "union" ? new Map(structureMembers(target).map((m) => [m.name, m.target])) : undefined;
    const out: Record<string, unknown> = {};
    while (this.i < this.text.length && this.text[this.i] !== close) {
      const eq = this.text.indexOf("=", this.i);
      if (eq < 0) this.fail("expected key=value");
      const key = this.text.slice(this.i, eq).trim();
      if (!key || /[,{}[\]]/.test(key)) this.fail(`expected key=value, got '${key}'`);
      if (members && !members.has(key)) {
        throw new UsageError(`Error parsing parameter '--${this.flag}': unknown key '${key}'; valid keys are ${[...members.keys()].join(", ")}.`);
      }
      this.i = eq + 1;
      const valueTarget = members ? members.get(key) : kind === "map" ? mapValue(target) : undefined;
      out[key] = this.value(valueTarget, close);
      if (this.text[this.i] === ",") this.i++;
    }
    return out;
  }

  private value(target: unknown, close: string): unknown {
    const kind = target === undefined ? "string" : kindOf(target);
    const ch = this.text[this.i];
    if (ch === "{") {
      this.i++;
      const v = this.members(kind === "string-map" ? undefined : target, "}");
      if (this.text[this.i] !== "}") this.fail("expected '}'");
      this.i++;
      return v;
    }
    if (ch === "[") {
      this.i++;
      const element = kind === "list" ? listMember(target) : undefined;
      const items: unknown[] = [];
      while (this.i < this.text.length && this.text[this.i] !== "]") {
        items.push(this.value(element, "]"));
        if (this.text[this.i] === ",") this.i++;
      }
      if (this.text[this.i] !== "]") this.fail("expected ']'");
      this.i++;
      return items;
    }
    // A bare value: up to the next ",key=" (or the closing bracket).
    const parts = [this.scalarText(close)];
    while (this.text[this.i] === "," && !this.startsMember(this.i + 1, close)) {
      this.i++;
      parts.push(this.scalarText(close));
    }
    if (kind === "list" || kind === "string-list") {
      const element = kind === "list" ? kindOf(listMember(target)) : "string";
      return parts.map((p) => scalar(element, this.flag, p));
    }
    return scalar(kind, this.flag, parts.join(","));
  }

  private scalarText(close: string): string {
    const start = this.i;
    while (this.i < this.text.length && this.text[this.i] !== "," && this.text[this.i] !== close) this.i++;
    return this.text.slice(start, this.i);
  }

  /** Whether a `key=` starts at `at`. */
  private startsMember(at: number, close: string): boolean {
    for (let j = at; j < this.text.length; j++) {
      const c = this.text[j]!;
      if (c === "=") return j > at;
      if (c === "," || c === close || c === "{" || c === "[" || c === "}" || c === "]") return false;
    }
    return false;
  }
}

function shorthand(flag: string, text: string, target?: unknown): Record<string, unknown> {
  return new Shorthand(flag, text).parse(target);
}

function memberTarget(op: SdkOperationName, name: string): unknown {
  return structureMembers(inputSchema(op)).find((m) => m.name === name)?.target;
}

/** Turns the values given to one flag into the member's value. */
export function parseMemberValue(op: SdkOperationName, m: MemberModel, values: string[]): unknown {
  const flag = kebab(m.name);
  if (values.length === 0) throw new UsageError(`argument --${flag}: expected one argument`);
  const texts = values.map(readValue);
  const first = texts[0]!;
  const looksJson = /^\s*[[{"]/.test(first);
  switch (m.kind) {
    case "string":
    case "number":
    case "boolean":
      if (texts.length > 1) throw new UsageError(`argument --${flag}: expected one argument, got ${texts.length}`);
      return scalar(m.kind, flag, first);
    case "string-list":
      return looksJson && texts.length === 1 ? parseJson(flag, first) : texts;
    case "string-map":
    case "map":
      return looksJson ? parseJson(flag, first) : shorthand(flag, texts.join(","));
    case "structure":
    case "union":
      return looksJson ? parseJson(flag, first) : shorthand(flag, texts.join(","), memberTarget(op, m.name));
    case "list": {
      if (looksJson && texts.length === 1) return parseJson(flag, first);
      const element = listMember(memberTarget(op, m.name));
      const elementKind = kindOf(element);
      return elementKind === "structure" || elementKind === "union" ? texts.map((t) => shorthand(flag, t, element)) : texts;
    }
    default:
      return parseJson(flag, first);
  }
}

/** Builds the operation input from --cli-input-json and the member flags; flags win. */
export function buildInput(op: OperationModel, args: RawArgs): Record<string, unknown> {
  const name = op.name as SdkOperationName;
  const input: Record<string, unknown> = {};
  const cliInput = args.flags.get("cli-input-json");
  if (cliInput) {
    const parsed = parseJson("cli-input-json", readValue(cliInput[0] ?? ""));
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new UsageError("--cli-input-json must be a JSON object.");
    Object.assign(input, parsed);
  }
  for (const m of op.input) {
    const values = args.flags.get(kebab(m.name));
    if (values) input[m.name] = parseMemberValue(name, m, values);
  }
  const missing = op.input.filter((m) => m.required && input[m.name] === undefined).map((m) => `--${kebab(m.name)}`);
  if (missing.length) throw new UsageError(`the following arguments are required: ${missing.join(", ")}`);
  return input;
}

/**
 * The options every hand-written command (connector, IAM, STS) takes: refuses flags the command
 * does not know and stray arguments, naming `helpRef` for help, and reads --output.
 */
export function commandOptions(args: RawArgs, known: Iterable<string>, helpRef: string): { single: (flag: string) => string | undefined; output: "json" | "text" | "table" } {
  const knownSet = new Set(known);
  const unknown = [...args.flags.keys()].filter((f) => !knownSet.has(f));
  if (unknown.length || args.positionals.length) throw new UsageError(`Unknown options: ${[...unknown.map((f) => `--${f}`), ...args.positionals].join(", ")}\nSee '${helpRef}'.`);
  const single = (flag: string) => args.flags.get(flag)?.at(-1);
  const output = single("output") ?? process.env.AWS_DEFAULT_OUTPUT ?? "json";
  if (output !== "json" && output !== "text" && output !== "table") throw new UsageError(`argument --output: Invalid choice '${output}', valid choices are: json | text | table`);
  return { single, output };
}
