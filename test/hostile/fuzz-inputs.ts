// Inputs for the API fuzzer, built from the SDK's own input shapes (read with
// @smithy/core's NormalizedSchema, the reader the SDK itself uses): which
// members an operation has, where each travels, and how structures, unions,
// lists and maps nest. Valid leaf values come from the documented limits and
// from fixtures that exist on the server (images, versions, builds, MicroVMs,
// nextTokens), so that fuzzed requests get past validation into each
// handler's logic; hostile values (wrong types, huge strings, unicode,
// control characters, boundary numbers) replace any member or nested leaf.

import { NormalizedSchema } from "@smithy/core/schema";
import * as sdk from "@aws-sdk/client-lambda-microvms";
import fc from "fast-check";
import type { OperationModel } from "../../src/api/index.js";
import { RESERVED_ENVIRONMENT_VARIABLES } from "../../src/core/index.js";

/** What exists on the server when a fuzz run starts. */
export interface Fixtures {
  region: string;
  account: string;
  /** Image names; each has version 1.0 built. */
  images: string[];
  buildIds: string[];
  /** MicroVM ids, RUNNING or SUSPENDED when the run starts; the first allows HTTP_INGRESS and SHELL_INGRESS, the others HTTP_INGRESS (the default). */
  microvms: string[];
  architecture: string;
  chipset: string;
  chipsetGeneration: string;
  /**
   * For a list operation whose first page had a next one: that request's
   * members and its nextToken (a token is bound to the request's filters).
   */
  nextPage?: { members: Record<string, unknown>; nextToken: string };
}

export const hostile: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: "grapheme", maxLength: 32 }),
  fc.string({ unit: "binary", maxLength: 32 }),
  fc.constantFrom("", " ", "\u0000", "../../etc/passwd", "arn:aws:lambda:us-east-1:000000000000:microvm-image:x", "microvm-0123456789abcdef0", "%00", "'; DROP TABLE microvms;--", "𝕏".repeat(300), "a".repeat(70_000)),
  fc.integer(),
  fc.constantFrom(0, -1, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 2 ** 31, 65536, 128, 32768, 32769, 0.5),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.oneof(fc.string({ maxLength: 16 }), fc.integer()), { maxLength: 5 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 16 }), fc.integer(), fc.constant(null)), { maxKeys: 4 }),
);

const ROLE = fc.constantFrom("arn:aws:iam::000000000000:role/MicroVMBuildRole", "arn:aws:iam::123456789012:role/path/to/R+=,.@_-");
const hookState = fc.constantFrom("ENABLED", "DISABLED");
const seconds = (max: number) => fc.integer({ min: 1, max });
const word = (min: number, max: number) => fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."), minLength: min, maxLength: max });
/** Unicode text of whole graphemes, its length (in UTF-16 units, as the limits count) within bounds. */
const graphemes = (min: number, max: number) =>
  fc.string({ unit: "grapheme", minLength: min, maxLength: Math.min(max, 40) }).filter((s) => s.length >= min && s.length <= max);
const tagMap = fc.dictionary(
  graphemes(1, 128).filter((k) => !k.toLowerCase().startsWith("aws:")),
  graphemes(0, 256),
  { maxKeys: 5 },
);

/**
 * Valid values of leaf members (and of members whose validity the shape
 * cannot express), by member name, or by `Operation.member` where one
 * operation wants something narrower. The limits are lmvm's documented ones
 * (src/core/inputs.ts, the README), which follow the service's.
 */
function leaves(f: Fixtures): Record<string, fc.Arbitrary<unknown>> {
  const imageArn = (name: string) => `arn:aws:lambda:${f.region}:${f.account}:microvm-image:${name}`;
  const managed = (name: string) => `arn:aws:lambda:${f.region}:aws:microvm-image:${name}`;
  const connector = (name: string) => `arn:aws:lambda:${f.region}:aws:network-connector:aws-network-connector:${name}`;
  const images = fc.constantFrom(...f.images.flatMap((n) => [n, imageArn(n)]), imageArn("never-created"));
  const imageArns = fc.constantFrom(...f.images.map(imageArn), imageArn("never-created"));
  const microvms = fc.constantFrom(...f.microvms, ...f.microvms.map((id) => `arn:aws:lambda:${f.region}:${f.account}:microvm:${id}`), "microvm-0123456789abcdef0");
  return {
    imageIdentifier: images,
    "RunMicrovm.imageIdentifier": imageArns,
    "TagResource.Resource": imageArns,
    "UntagResource.Resource": imageArns,
    "ListTags.Resource": imageArns,
    "ListManagedMicrovmImageVersions.imageIdentifier": fc.constantFrom("busybox", "debian12", managed("busybox"), managed("debian12"), managed("never-made")),
    imageVersion: fc.constantFrom("1.0", "1.0", "2.0", "0.1", "999999999.0"),
    microvmIdentifier: microvms,
    buildId: fc.constantFrom(...f.buildIds, "00000000-0000-4000-8000-000000000000"),
    name: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/),
    baseImageArn: fc.constantFrom(managed("busybox"), managed("debian12")),
    baseImageVersion: fc.constant("1"),
    buildRoleArn: ROLE,
    executionRoleArn: ROLE,
    description: graphemes(0, 256),
    uri: fc.constantFrom("s3://artifacts/app.zip", "file:///srv/app.zip", "https://artifacts.invalid/app.zip"),
    logGroup: word(1, 64),
    logStream: word(1, 64),
    egressNetworkConnectors: fc.subarray([connector("INTERNET_EGRESS")]),
    ingressNetworkConnectors: fc.subarray([connector("HTTP_INGRESS"), connector("SHELL_INGRESS"), connector("ALL_INGRESS")]),
    architecture: fc.constant(f.architecture),
    chipset: fc.constant(f.chipset),
    chipsetGeneration: fc.constant(f.chipsetGeneration),
    // Up to the largest size's baseline (8192 MiB): more is refused as no size fits.
    minimumMemoryInMiB: fc.integer({ min: 128, max: 8192 }),
    resources: fc.array(fc.record({ minimumMemoryInMiB: fc.integer({ min: 128, max: 8192 }) }), { maxLength: 1 }),
    cpuConfigurations: fc.constant([{ architecture: f.architecture }]),
    additionalOsCapabilities: fc.subarray(["ALL"]),
    port: fc.integer({ min: 1, max: 65_535 }),
    range: fc.tuple(fc.integer({ min: 1, max: 65_535 }), fc.integer({ min: 1, max: 65_535 })).map(([a, b]) => ({ startPort: Math.min(a, b), endPort: Math.max(a, b) })),
    run: hookState, resume: hookState, suspend: hookState, terminate: hookState, ready: hookState, validate: hookState,
    runTimeoutInSeconds: seconds(60), resumeTimeoutInSeconds: seconds(60), suspendTimeoutInSeconds: seconds(60), terminateTimeoutInSeconds: seconds(60),
    readyTimeoutInSeconds: seconds(3600), validateTimeoutInSeconds: seconds(3600),
    // Names lmvm reserves (AWS_REGION, AWS_LAMBDA_MICROVM_IMAGE_*) are refused, so a valid map leaves them out.
    environmentVariables: fc.dictionary(fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,15}$/), graphemes(0, 100), { maxKeys: 5 }).filter((env) => Buffer.byteLength(JSON.stringify(env)) <= 4096 && !Object.keys(env).some((k) => (RESERVED_ENVIRONMENT_VARIABLES as readonly string[]).includes(k))),
    tags: tagMap,
    Tags: tagMap,
    TagKeys: fc.array(graphemes(1, 128), { minLength: 1, maxLength: 5 }),
    clientToken: fc.oneof(fc.uuid(), word(1, 64)),
    maxResults: fc.integer({ min: 1, max: 1000 }),
    // A real one only passes with the filters it was issued for: see nextPage in requests().
    nextToken: fc.constant(undefined),
    nameFilter: fc.oneof(fc.constantFrom(...f.images), word(1, 20)),
    status: fc.constantFrom("ACTIVE", "INACTIVE"),
    maxIdleDurationSeconds: fc.integer({ min: 60, max: 28_800 }),
    suspendedDurationSeconds: fc.integer({ min: 0, max: 28_800 }),
    autoResumeEnabled: fc.boolean(),
    runHookPayload: fc.json({ maxDepth: 2 }).filter((p) => Buffer.byteLength(p) <= 16_384),
    maximumDurationInSeconds: seconds(28_800),
    expirationInMinutes: seconds(60),
  };
}

/**
 * A value for a member of shape `schema`, valid where the shape and the leaf
 * table say so; each leaf and nested member is hostile with odds `h` (0..1).
 */
function valueFor(schema: NormalizedSchema, name: string, table: Record<string, fc.Arbitrary<unknown>>, h: number): fc.Arbitrary<unknown> {
  const valid = table[name] ?? shaped(schema, table, h);
  if (h === 0) return valid;
  const weight = Math.round(h * 100);
  return fc.oneof({ weight: 100 - weight, arbitrary: valid }, { weight, arbitrary: hostile });
}

function shaped(schema: NormalizedSchema, table: Record<string, fc.Arbitrary<unknown>>, h: number): fc.Arbitrary<unknown> {
  if (schema.isUnitSchema()) return fc.constant({});
  if (schema.isUnionSchema()) {
    const options = [...schema.structIterator()].map(([n, m]) => valueFor(m, n, table, h).map((v) => ({ [n]: v })));
    return fc.oneof(...options);
  }
  if (schema.isStructSchema()) {
    // Every member, so that required ones are never missing from a valid value.
    return fc.record(Object.fromEntries([...schema.structIterator()].map(([n, m]) => [n, valueFor(m, n, table, h)])));
  }
  if (schema.isListSchema()) return fc.array(valueFor(schema.getValueSchema(), "", table, h), { minLength: 1, maxLength: 3 });
  if (schema.isMapSchema()) return fc.dictionary(word(1, 16), valueFor(schema.getValueSchema(), "", table, h), { maxKeys: 3 });
  if (schema.isBooleanSchema()) return fc.boolean();
  if (schema.isNumericSchema()) return fc.integer({ min: 1, max: 60 });
  return word(1, 32);
}

export interface FuzzRequest {
  /** Every member valid (or left out where optional); otherwise some may be hostile. */
  valid: boolean;
  path: string;
  body: Record<string, unknown> | undefined;
}

/**
 * Requests for `op`: half with every member valid, half mixing valid and
 * hostile members; for a list operation with a second page, some ask for it.
 */
export function requests(op: OperationModel, f: Fixtures): fc.Arbitrary<FuzzRequest> {
  const input = NormalizedSchema.of((sdk as unknown as Record<string, unknown[]>)[`${op.name}$`]![4] as never);
  const shapes = Object.fromEntries(input.structIterator());
  const table = leaves(f);
  const member = (name: string, h: number) => {
    const arb = valueFor(shapes[name]!, table[`${op.name}.${name}`] ? `${op.name}.${name}` : name, table, h);
    const m = op.input.find((i) => i.name === name)!;
    return m.required ? arb : fc.option(arb, { nil: undefined, freq: 3 });
  };
  const build = (valid: boolean, h: number) =>
    fc.record(Object.fromEntries(op.input.map((m) => [m.name, member(m.name, h)]))).map((values) => toRequest(op, valid ? consistentHooks(values) : values, valid));
  const next = f.nextPage;
  if (!next) return fc.oneof(build(true, 0), build(false, 0.3));
  const secondPage = fc.option(fc.integer({ min: 1, max: 1000 }), { nil: undefined }).map((maxResults) => toRequest(op, { ...next.members, nextToken: next.nextToken, maxResults }, true));
  return fc.oneof({ weight: 2, arbitrary: build(true, 0) }, { weight: 1, arbitrary: secondPage }, { weight: 3, arbitrary: build(false, 0.3) });
}

/**
 * Valid members can still break the hooks' cross-member rules (as the service's): a MicroVM hook
 * enabled needs ready enabled, and any hook enabled needs hooks.port. A valid request keeps them.
 */
function consistentHooks(values: Record<string, unknown>): Record<string, unknown> {
  const hooks = values.hooks as { port?: number; microvmHooks?: Record<string, unknown>; microvmImageHooks?: Record<string, unknown> } | undefined;
  if (!hooks || typeof hooks !== "object") return values;
  const enabled = (o: Record<string, unknown> | undefined) => Object.values(o ?? {}).includes("ENABLED");
  const fixed = { ...hooks };
  if (enabled(hooks.microvmHooks)) fixed.microvmImageHooks = { ...hooks.microvmImageHooks, ready: "ENABLED" };
  if ((enabled(fixed.microvmHooks) || enabled(fixed.microvmImageHooks)) && fixed.port === undefined) fixed.port = 8080;
  return { ...values, hooks: fixed };
}

/** The request that carries `values` in `op`'s bindings: path labels, query string, JSON body. */
export function toRequest(op: OperationModel, values: Record<string, unknown>, valid: boolean): FuzzRequest {
  let path = op.path;
  const query = new URLSearchParams();
  const body: Record<string, unknown> = {};
  for (const m of op.input) {
    const v = values[m.name];
    const text = (x: unknown) => (typeof x === "string" ? x : JSON.stringify(x ?? "x"));
    // A label of "." or ".." (or %2E) cannot be sent through fetch: WHATWG URL parsing removes the
    // dot segment after the request was signed, and the server rightly refuses the signature. Such
    // a label gets an "x" after it, still an invalid identifier.
    if (m.binding.in === "label") path = path.replace(`{${m.name}}`, encodeURIComponent(text(v)).slice(0, 2000).replace(/^\.{1,2}$/, (d) => `${d}x`) || "x");
    else if (v === undefined) continue;
    else if (m.binding.in === "query") {
      for (const item of Array.isArray(v) && (m.kind === "list" || m.kind === "string-list") ? v : [v]) query.append(m.binding.name, text(item).slice(0, 2000));
    } else body[m.name] = v;
  }
  const q = query.toString();
  return { valid, path: q ? `${path}?${q}` : path, body: op.method === "GET" || op.method === "DELETE" ? undefined : body };
}
