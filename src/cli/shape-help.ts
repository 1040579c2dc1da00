// What `lmvm <command> help` says about a structured flag, as the AWS CLI's
// help does: each member (nested ones indented) with its type, its
// documentation and, for enums, its possible values; then the flag's
// shorthand syntax and JSON syntax. The shape tree comes from the SDK's schema
// (through sdk-model.ts); the documentation and enum values from the SDK's
// type declarations (dist-types), which carry AWS's own words.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { kindOf, listMember, mapValue, schemaName, structureMembers } from "../api/sdk-model.js";

const stripHtml = (s: string) => s.replace(/<\/?[a-z]+[^>]*>/g, "").replace(/\\\{/g, "{").replace(/\\\}/g, "}").replace(/\s+/g, " ").trim();

let declarations: { models: string; enums: string } | undefined;
function sdkTypes(): { models: string; enums: string } {
  if (!declarations) {
    const root = dirname(createRequire(import.meta.url).resolve("@aws-sdk/client-lambda-microvms/package.json"));
    const read = (rel: string) => {
      try {
        return readFileSync(join(root, rel), "utf8");
      } catch {
        return "";
      }
    };
    declarations = { models: read("dist-types/models/models_0.d.ts"), enums: read("dist-types/models/enums.d.ts") };
  }
  return declarations;
}

export interface MemberDoc {
  doc: string;
  /** The member's TypeScript type, e.g. `HookState | undefined`. */
  type: string;
}

/** Documentation of each member of a structure (`export interface Name`) or union (`namespace Name`), by member name. */
export function memberDocs(shape: string): Map<string, MemberDoc> {
  const { models } = sdkTypes();
  const docs = new Map<string, MemberDoc>();
  const struct = models.indexOf(`export interface ${shape} {`);
  if (struct >= 0) {
    const body = models.slice(struct, models.indexOf("\n}", struct));
    for (const m of body.matchAll(/\/\*\*([\s\S]*?)\*\/\s*\n\s*(\w+)\??: ([^;]+);/g)) {
      docs.set(m[2]!, { doc: docText(m[1]!), type: m[3]! });
    }
    return docs;
  }
  const union = models.indexOf(`export declare namespace ${shape} {`);
  if (union >= 0) {
    const body = models.slice(union, models.indexOf("\n}", union));
    // Each member is an interface naming it (`uri: string;`) and every other member as `?: never`.
    for (const m of body.matchAll(/\/\*\*([\s\S]*?)\*\/\s*\n\s*interface \w+Member \{([^}]*)\}/g)) {
      const own = /^\s*(\w+): ([^;]+);/m.exec(m[2]!);
      if (own && own[1] !== "$unknown") docs.set(own[1]!, { doc: docText(m[1]!), type: own[2]! });
    }
  }
  return docs;
}

function docText(comment: string): string {
  const paragraphs = [...comment.matchAll(/<p>([\s\S]*?)<\/p>/g)].map((p) => stripHtml(p[1]!.replace(/^\s*\*\s?/gm, "")));
  return paragraphs.join(" ");
}

/** Values of a modeled enum named in a member's type (`HookState | undefined`), if it is one. */
export function enumValues(type: string): string[] {
  const name = /^(\w+)/.exec(type)?.[1];
  if (!name) return [];
  const { enums } = sdkTypes();
  const at = enums.indexOf(`export declare const ${name}: {`);
  if (at < 0) return [];
  const body = enums.slice(at, enums.indexOf("};", at));
  return [...body.matchAll(/readonly \w+: "([^"]+)"/g)].map((m) => m[1]!);
}

/** The AWS CLI's name of a member type. */
function typeName(target: unknown): string {
  const kind = kindOf(target);
  return { number: "integer", "string-list": "list", "string-map": "map", union: "structure" }[kind as string] ?? kind;
}

const wrap = (text: string, indent: string, width = 79): string[] => {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      out.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(indent + line);
  return out;
};

/** Member-by-member description of a structured value, indented under its flag. */
function describe(target: unknown, indent: string, out: string[], depth: number): void {
  if (depth > 6) return;
  const kind = kindOf(target);
  if (kind === "list") {
    const element = listMember(target);
    if (["structure", "union"].includes(kindOf(element))) describe(element, indent, out, depth + 1);
    else out.push(`${indent}(${typeName(element)})`, "");
    return;
  }
  if (kind === "map" || kind === "string-map") {
    out.push(`${indent}key -> (string)`, "", `${indent}value -> (${kind === "map" ? typeName(mapValue(target)) : "string"})`, "");
    return;
  }
  if (kind !== "structure" && kind !== "union") return;
  const name = schemaName(target);
  const docs = name ? memberDocs(name) : new Map<string, MemberDoc>();
  if (kind === "union") out.push(...wrap("Note: exactly one of the members below may be given.", indent), "");
  for (const m of structureMembers(target)) {
    const d = docs.get(m.name);
    out.push(`${indent}${m.name} -> (${typeName(m.target)})${m.required ? " [required]" : ""}`);
    if (d?.doc) out.push(...wrap(d.doc, `${indent}    `));
    const values = d ? enumValues(d.type) : [];
    if (values.length) out.push(`${indent}    Possible values:`, ...values.map((v) => `${indent}    * ${v}`));
    out.push("");
    const sub = kindOf(m.target);
    if (sub === "structure" || sub === "union" || sub === "list" || sub === "map") {
      if (sub !== "list" || ["structure", "union"].includes(kindOf(listMember(m.target)))) describe(m.target, `${indent}    `, out, depth + 1);
    }
  }
}

/** A placeholder value for the shorthand syntax: `string`, `integer`, {…} or [...]. */
function shorthandValue(target: unknown, depth: number): string {
  const kind = kindOf(target);
  if (depth > 4) return "...";
  if (kind === "structure" || kind === "union") return `{${shorthandMembers(target, depth + 1)}}`;
  if (kind === "list") return `[${shorthandValue(listMember(target), depth + 1)},...]`;
  if (kind === "string-list") return "string,string";
  if (kind === "map" || kind === "string-map") return "{KeyName1=string,KeyName2=string}";
  return typeName(target);
}

function shorthandMembers(target: unknown, depth: number): string {
  const name = schemaName(target);
  const docs = name ? memberDocs(name) : new Map<string, MemberDoc>();
  return structureMembers(target)
    .map((m) => {
      const values = enumValues(docs.get(m.name)?.type ?? "");
      return `${m.name}=${values.length ? values.join("|") : shorthandValue(m.target, depth)}`;
    })
    .join(",");
}

/** The JSON syntax of a value, with enum values spelled out, as the AWS CLI prints it. */
function jsonSyntax(target: unknown, indent: string, depth: number, enumType = ""): string {
  const kind = kindOf(target);
  const values = kind === "string-list" ? [] : enumValues(enumType);
  if (values.length) return values.map((v) => `"${v}"`).join("|");
  if (depth > 6) return "...";
  switch (kind) {
    case "string":
      return '"string"';
    case "number":
      return "integer";
    case "boolean":
      return "true|false";
    case "timestamp":
      return "timestamp";
    case "string-list": {
      const values = enumValues(enumType.replace(/\[\].*/, ""));
      return `[${values.length ? values.map((v) => `"${v}"`).join("|") : '"string"'}, ...]`;
    }
    case "string-map":
      return `{"string": "string"\n${indent}  ...}`;
    case "map":
      return `{"string": ${jsonSyntax(mapValue(target), `${indent}  `, depth + 1)}\n${indent}  ...}`;
    case "list":
      return `[\n${indent}  ${jsonSyntax(listMember(target), `${indent}  `, depth + 1)}\n${indent}  ...\n${indent}]`;
    case "structure":
    case "union": {
      const name = schemaName(target);
      const docs = name ? memberDocs(name) : new Map<string, MemberDoc>();
      const members = structureMembers(target).map((m) => `${indent}  "${m.name}": ${jsonSyntax(m.target, `${indent}  `, depth + 1, docs.get(m.name)?.type)}`);
      return members.length ? `{\n${members.join(",\n")}\n${indent}}` : "{}";
    }
    default:
      return '"string"';
  }
}

/** The help lines for one structured flag (its TypeScript type names an enum, if any): its members, then its shorthand and JSON syntax. */
export function structuredFlagHelp(target: unknown, indent: string, tsType = ""): string[] {
  const kind = kindOf(target);
  const out: string[] = [""];
  describe(target, indent, out, 0);
  if (kind === "string-list") {
    const values = enumValues(tsType.replace(/\[\].*/, ""));
    out.push(`${indent}(string)`, ...(values.length ? [`${indent}    Possible values:`, ...values.map((v) => `${indent}    * ${v}`)] : []), "");
  }
  const listOfStructures = kind === "list" && ["structure", "union"].includes(kindOf(listMember(target)));
  const shorthand = kind === "structure" || kind === "union" ? shorthandMembers(target, 0)
    : listOfStructures ? `${shorthandMembers(listMember(target), 0)} ...`
    : kind === "map" || kind === "string-map" ? "KeyName1=string,KeyName2=string"
    : kind === "string-list" ? "string string ..."
    : undefined;
  if (shorthand) out.push(`${indent}Shorthand Syntax:`, "", `${indent}    ${shorthand}`, "");
  out.push(`${indent}JSON Syntax:`, "", ...jsonSyntax(target, "", 0, tsType).split("\n").map((l) => `${indent}    ${l}`), "");
  return out;
}
