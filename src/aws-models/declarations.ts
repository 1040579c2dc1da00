// Reads what an AWS SDK for JavaScript v3 client's schemas do not carry but
// its type declarations (dist-types/*.d.ts, generated from the same Smithy
// model) do: the documentation of shapes, members and operations, which
// string members are enums and their values, and which errors an operation
// declares (`@throws`). The declarations are generated code with a fixed
// layout, so a line reader is enough; anything it cannot read is left out of
// the model rather than guessed.

import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";

export interface DeclaredMember {
  doc?: string;
  /** The TypeScript type as written, without `| undefined`, e.g. `MicrovmState`, `Capability[]`. */
  type: string;
}

export interface DeclaredShape {
  doc?: string;
  members: Map<string, DeclaredMember>;
}

export interface DeclaredOperation {
  doc?: string;
  errors: string[];
}

export interface Declarations {
  shapes: Map<string, DeclaredShape>;
  enums: Map<string, string[]>;
  operations: Map<string, DeclaredOperation>;
  clientDoc?: string;
}

/** A JSDoc block's text without its `*` margin, its tags and `{@link}` markup; undefined when it has none. */
function docText(lines: string[]): string | undefined {
  const out: string[] = [];
  for (const raw of lines) {
    const line = raw.replace(/^\s*\/\*\*\s?/, "").replace(/\s*\*\/\s*$/, "").replace(/^\s*\*\s?/, "");
    if (/^@/.test(line.trim())) break;
    out.push(line);
  }
  // JSDoc escapes braces and at-signs of the model's documentation with a backslash.
  const text = out.join("\n").replace(/\{@link ([^}|]+?)(?:\s*\|[^}]*)?\}/g, "$1").replace(/\\([{}@])/g, "$1").trim();
  return text || undefined;
}

/** Parses one generated .d.ts: interfaces, classes (errors) and union namespaces with their JSDoc. */
function readShapes(source: string, shapes: Map<string, DeclaredShape>): void {
  const lines = source.split("\n");
  let doc: string[] | undefined;
  let inDoc = false;
  let pending: string | undefined;
  const stack: { kind: "shape" | "namespace" | "union-member" | "other"; name: string }[] = [];
  for (const line of lines) {
    const t = line.trim();
    if (inDoc) {
      doc!.push(line);
      if (t.endsWith("*/")) {
        inDoc = false;
        pending = docText(doc!);
      }
      continue;
    }
    if (t.startsWith("/**")) {
      doc = [line];
      inDoc = !t.endsWith("*/");
      if (!inDoc) pending = docText(doc);
      continue;
    }
    const top = stack.at(-1);
    const open = /^export (?:declare )?(interface|class|namespace) (\w+)\b.*\{$/.exec(t) ?? (top?.kind === "namespace" ? /^(interface) (\w+)\b.*\{$/.exec(t) : null);
    if (open) {
      const [, kind, name] = open as unknown as [string, string, string];
      if (kind === "namespace") {
        stack.push({ kind: "namespace", name });
        if (!shapes.has(name)) shapes.set(name, { members: new Map() });
      } else if (top?.kind === "namespace") {
        // A union's member: `interface UriMember { uri: string; $unknown?: never; }`.
        stack.push({ kind: name.endsWith("Member") && name !== "$UnknownMember" ? "union-member" : "other", name: top.name });
        if (name.endsWith("Member") && name !== "$UnknownMember") stack.at(-1)!.name = `${top.name}\u0000${pending ?? ""}`;
      } else {
        stack.push({ kind: "shape", name });
        const shape: DeclaredShape = shapes.get(name) ?? { members: new Map() };
        if (pending) shape.doc = pending;
        shapes.set(name, shape);
      }
      pending = undefined;
      continue;
    }
    if (/^export type (\w+) = \1\.\w+Member\b/.test(t)) {
      const name = /^export type (\w+)/.exec(t)![1]!;
      const shape: DeclaredShape = shapes.get(name) ?? { members: new Map() };
      if (pending) shape.doc = pending;
      shapes.set(name, shape);
      pending = undefined;
      continue;
    }
    if (t === "}" || t === "};") {
      stack.pop();
      pending = undefined;
      continue;
    }
    const member = /^(?:readonly )?([A-Za-z_]\w*)\??: (.+);$/.exec(t);
    if (member && top) {
      const [, name, rawType] = member as unknown as [string, string, string];
      const type = rawType.replace(/ \| undefined$/, "");
      if (top.kind === "shape") {
        if (name !== "name" && name !== "$fault" && name !== "$retryable") shapes.get(top.name)!.members.set(name, { ...(pending ? { doc: pending } : {}), type });
      } else if (top.kind === "union-member" && name !== "$unknown" && type !== "never") {
        const [union, memberDoc] = top.name.split("\u0000") as [string, string];
        shapes.get(union)!.members.set(name, { ...(memberDoc ? { doc: memberDoc } : {}), type });
      }
    }
    pending = undefined;
  }
}

/** `export declare const State: { readonly A: "A"; ... }` blocks. */
function readEnums(source: string, enums: Map<string, string[]>): void {
  for (const m of source.matchAll(/export declare const (\w+): \{\n([\s\S]*?)\n\};/g)) {
    const values = [...m[2]!.matchAll(/readonly \w+: "([^"]*)";/g)].map((v) => v[1]!);
    if (values.length) enums.set(m[1]!, values);
  }
}

/** The declarations of the client package at `packageDir` (its dist-types folder). */
export function readDeclarations(packageDir: string, clientClass: string): Declarations {
  const types = join(packageDir, "dist-types");
  const shapes = new Map<string, DeclaredShape>();
  const enums = new Map<string, string[]>();
  const models = join(types, "models");
  for (const file of readdirSync(models).filter((f) => f.endsWith(".d.ts")).sort()) {
    const source = readFileSync(join(models, file), "utf8");
    readShapes(source, shapes);
    readEnums(source, enums);
  }
  const operations = new Map<string, DeclaredOperation>();
  const commands = join(types, "commands");
  for (const file of readdirSync(commands).filter((f) => f.endsWith("Command.d.ts"))) {
    const name = file.slice(0, -"Command.d.ts".length);
    const source = readFileSync(join(commands, file), "utf8");
    const block = /\/\*\*\n((?:(?!\*\/)[\s\S])*?)\*\/\nexport declare class \w+Command\b/.exec(source);
    const doc = block ? docText(block[1]!.split("\n")) : undefined;
    const errors = [...(block?.[1] ?? "").matchAll(/@throws \{@link (\w+)\}/g)].map((m) => m[1]!);
    operations.set(name, { ...(doc ? { doc } : {}), errors: [...new Set(errors)] });
  }
  const clientFile = join(types, `${clientClass}.d.ts`);
  let clientDoc: string | undefined;
  if (existsSync(clientFile)) {
    const block = new RegExp(`/\\*\\*\\n((?:(?!\\*/)[\\s\\S])*?)\\*/\\nexport declare class ${clientClass}\\b`).exec(readFileSync(clientFile, "utf8"));
    clientDoc = block ? docText(block[1]!.split("\n")) : undefined;
  }
  return { shapes, enums, operations, ...(clientDoc ? { clientDoc } : {}) };
}
