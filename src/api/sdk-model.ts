// Reads the official SDK's static Smithy schemas (@aws-sdk/client-lambda-microvms,
// dist-es/schemas/schemas_0.js): each operation's HTTP method, path and
// status code, where each input member travels (path label, query string or
// JSON body), and each error's HTTP status. Deriving these from the SDK, not
// retyping them, keeps lmvm wire-compatible by construction.

import * as schemas from "@aws-sdk/client-lambda-microvms";

export type Binding = { in: "label" } | { in: "query"; name: string } | { in: "body" };

export type MemberKind = "string" | "number" | "boolean" | "timestamp" | "string-list" | "string-map" | "structure" | "list" | "map" | "union" | "unit";

export interface MemberModel {
  name: string;
  kind: MemberKind;
  binding: Binding;
  required: boolean;
  idempotencyToken: boolean;
}

export interface OperationModel {
  name: string;
  method: string;
  /** The SDK's URI template, e.g. /2025-09-09/microvms/{microvmIdentifier}. */
  path: string;
  status: number;
  input: MemberModel[];
}

type Static = unknown;
const HTTP_LABEL = 1;
const IDEMPOTENCY_TOKEN = 4;

function deref(s: Static): Static {
  return typeof s === "function" ? (s as () => Static)() : s;
}

/** Splits a member entry into its target schema and its traits. */
function member(entry: Static): { target: Static; traits: number | Record<string, unknown> } {
  if (Array.isArray(entry) && entry.length === 2 && (typeof entry[1] === "number" || (typeof entry[1] === "object" && entry[1] !== null && !Array.isArray(entry[1])))) {
    // A [schema, traits] pair, unless it is itself a static schema array (those start with a type tag).
    if (!(typeof entry[0] === "number" && [0, 1, 2, 3, 4, 9, -3].includes(entry[0] as number) && typeof entry[1] === "string")) {
      return { target: entry[0], traits: entry[1] as number | Record<string, unknown> };
    }
  }
  return { target: entry, traits: 0 };
}

export function kindOf(target: Static): MemberKind {
  const t = deref(target);
  if (t === "unit") return "unit";
  if (typeof t === "number") {
    if (t === 64 || t === (64 | 0)) return "string-list";
    if (t === 128 || t === (128 | 0)) return "string-map";
    if (t === 1) return "number";
    if (t === 2) return "boolean";
    if (t === 4) return "timestamp";
    return "string";
  }
  if (Array.isArray(t)) {
    switch (t[0]) {
      case 0: return "string"; // a simple schema with traits, e.g. a sensitive string
      case 1: return "list";
      case 2: return "map";
      case 3: return "structure";
      case 4: return "union";
    }
  }
  return "string";
}

/** Member names and targets of a static structure or union schema. */
export function structureMembers(schema: Static): { name: string; target: Static; traits: number | Record<string, unknown>; required: boolean }[] {
  const s = deref(schema) as unknown[];
  const names = s[4] as string[];
  const targets = s[5] as Static[];
  const requiredCount = typeof s[6] === "number" ? (s[6] as number) : 0;
  return names.map((name, i) => ({ name, ...member(targets[i]), required: i < requiredCount }));
}

/** The shape name a static structure, union, list or map schema carries (e.g. "Hooks"), for finding its documentation. */
export function schemaName(schema: Static): string | undefined {
  const s = deref(schema);
  return Array.isArray(s) && typeof s[2] === "string" ? s[2] : undefined;
}

/** The value schema of a static map schema. */
export function mapValue(schema: Static): Static {
  const s = deref(schema) as unknown[];
  return member(s[5]).target;
}

/** The element schema of a static list schema. */
export function listMember(schema: Static): Static {
  const s = deref(schema) as unknown[];
  return member(s[4]).target;
}

function operation(name: string): OperationModel {
  const op = (schemas as unknown as Record<string, unknown[]>)[`${name}$`];
  if (!op) throw new Error(`@aws-sdk/client-lambda-microvms has no operation ${name}`);
  const [method, path, status] = (op[3] as { http: [string, string, number] }).http;
  const input = structureMembers(op[4]).map(({ name: memberName, target, traits, required }): MemberModel => {
    const bits = typeof traits === "number" ? traits : 0;
    const query = typeof traits === "object" ? (traits.httpQuery as string | undefined) : undefined;
    return {
      name: memberName,
      kind: kindOf(target),
      binding: bits & HTTP_LABEL ? { in: "label" } : query ? { in: "query", name: query } : { in: "body" },
      required,
      idempotencyToken: (bits & IDEMPOTENCY_TOKEN) !== 0,
    };
  });
  return { name, method, path, status, input };
}

export const OPERATION_NAMES = [
  "CreateMicrovmImage", "UpdateMicrovmImage", "GetMicrovmImage", "ListMicrovmImages", "DeleteMicrovmImage",
  "ListMicrovmImageVersions", "GetMicrovmImageVersion", "UpdateMicrovmImageVersion", "DeleteMicrovmImageVersion",
  "ListMicrovmImageBuilds", "GetMicrovmImageBuild", "ListManagedMicrovmImages", "ListManagedMicrovmImageVersions",
  "RunMicrovm", "GetMicrovm", "ListMicrovms", "SuspendMicrovm", "ResumeMicrovm", "TerminateMicrovm",
  "CreateMicrovmAuthToken", "CreateMicrovmShellAuthToken", "TagResource", "UntagResource", "ListTags",
] as const;

export type SdkOperationName = (typeof OPERATION_NAMES)[number];

export const OPERATIONS: Record<SdkOperationName, OperationModel> = Object.fromEntries(
  OPERATION_NAMES.map((n) => [n, operation(n)]),
) as Record<SdkOperationName, OperationModel>;

/** The input structure schema of an operation, for callers that walk nested shapes (the CLI). */
export function inputSchema(name: SdkOperationName): Static {
  return (schemas as unknown as Record<string, unknown[]>)[`${name}$`]![4];
}

/** HTTP status of each modeled error, from its schema's httpError trait. */
export function errorStatus(errorName: string): number {
  const schema = (schemas as unknown as Record<string, unknown[]>)[`${errorName}$`];
  const traits = schema?.[3] as { httpError?: number } | undefined;
  if (!traits?.httpError) throw new Error(`@aws-sdk/client-lambda-microvms models no error ${errorName}`);
  return traits.httpError;
}
