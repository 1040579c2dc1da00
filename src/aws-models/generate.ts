// Generates a botocore service model (service-2.json, paginators-1.json,
// endpoint-rule-set-1.json) from an official AWS SDK for JavaScript v3
// client: its operation and shape schemas (the `…$` static schemas the client
// serializes with), its runtime config (protocol, API version, service id),
// its auth scheme provider (SigV4 signing name), its endpoint BDD (turned
// into an equivalent rule set), its paginators, and the documentation and
// enums of its type declarations (./declarations.ts). Nothing in the output
// is written by hand: a schema feature this generator does not know stops it
// with an error instead of being dropped.

import { createRequire } from "node:module";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { readDeclarations, type Declarations } from "./declarations.js";

const require = createRequire(import.meta.url);

export interface BotocoreModel {
  service: string;
  apiVersion: string;
  files: Record<string, unknown>;
  operations: string[];
}

type Traits = Record<string, unknown>;
type Ref = unknown;

const TRAIT_BITS = ["httpLabel", "idempotent", "idempotencyToken", "sensitive", "httpPayload", "httpResponseCode", "httpQueryParams"];

/** The traits a schema's indicator stands for (a bit mask or an object, as in @smithy/core/schema). */
function traitsOf(indicator: unknown): Traits {
  if (indicator && typeof indicator === "object") return indicator as Traits;
  const n = Number(indicator ?? 0) | 0;
  const out: Traits = {};
  TRAIT_BITS.forEach((name, i) => {
    if ((n >> i) & 1) out[name] = 1;
  });
  return out;
}

/** The traits this generator turns into model fields; any other stops the generation. */
const KNOWN_TRAITS = new Set(["httpLabel", "idempotent", "idempotencyToken", "sensitive", "httpPayload", "httpResponseCode", "httpQueryParams", "httpQuery", "httpHeader", "httpPrefixHeaders", "http", "httpError", "error", "xmlName", "jsonName", "timestampFormat", "mediaType"]);

function checkTraits(where: string, traits: Traits): void {
  for (const key of Object.keys(traits)) if (!KNOWN_TRAITS.has(key)) throw new Error(`${where}: the schema has the trait '${key}', which the botocore model generator does not translate`);
}

const PROTOCOLS: Record<string, { protocol: string; jsonVersion?: string }> = {
  AwsRestJsonProtocol: { protocol: "rest-json" },
  AwsJson1_0Protocol: { protocol: "json", jsonVersion: "1.0" },
  AwsJson1_1Protocol: { protocol: "json", jsonVersion: "1.1" },
  AwsQueryProtocol: { protocol: "query" },
  AwsEc2QueryProtocol: { protocol: "ec2" },
  AwsRestXmlProtocol: { protocol: "rest-xml" },
};

/** The SDK's endpoint built-ins (client config names) and the rule-set built-ins they are. */
const BUILT_INS: Record<string, string> = {
  region: "AWS::Region",
  useFipsEndpoint: "AWS::UseFIPS",
  useDualstackEndpoint: "AWS::UseDualStack",
  endpoint: "SDK::Endpoint",
};

function packageDirOf(pkg: string): string {
  // The package's main file is dist-cjs/index.js.
  return dirname(dirname(require.resolve(pkg)));
}

const isSchemaArray = (v: unknown): v is unknown[] => Array.isArray(v) && v.length >= 4 && typeof v[1] === "string";

class ShapeBuilder {
  readonly shapes: Record<string, Record<string, unknown>> = {};
  private readonly decl: Declarations;
  constructor(decl: Declarations) {
    this.decl = decl;
  }

  private put(name: string, shape: Record<string, unknown>): string {
    const existing = this.shapes[name];
    if (existing && JSON.stringify(existing) !== JSON.stringify(shape)) throw new Error(`two different shapes are named ${name}`);
    this.shapes[name] = shape;
    return name;
  }

  /** The shape for a numeric (unnamed) schema, with the enum its member's declared type names if any. */
  private simple(n: number, where: string, declaredType?: string): string {
    if (n & 64) {
      const item = declaredType?.endsWith("[]") ? declaredType.slice(0, -2) : undefined;
      const member = this.simple(n & ~64, where, item);
      return this.put(`${member}List`, { type: "list", member: { shape: member } });
    }
    if (n & 128) {
      const value = this.simple(n & ~128, where);
      return this.put(`${value}Map`, { type: "map", key: { shape: "String" }, value: { shape: value } });
    }
    switch (n) {
      case 0: {
        const values = declaredType ? this.decl.enums.get(declaredType) : undefined;
        if (values) return this.put(declaredType!, { type: "string", enum: values });
        return this.put("String", { type: "string" });
      }
      case 1:
        // The schemas give every number the same code (integer, long, float and double alike);
        // the declarations say `number`. lmvm's numbers are counts, ports and seconds.
        return this.put("Long", { type: "long" });
      case 2:
        return this.put("Boolean", { type: "boolean" });
      case 4:
        return this.put("Timestamp", { type: "timestamp" });
      case 5:
        return this.put("Iso8601Timestamp", { type: "timestamp", timestampFormat: "iso8601" });
      case 6:
        return this.put("HttpDateTimestamp", { type: "timestamp", timestampFormat: "rfc822" });
      case 7:
        return this.put("EpochSecondsTimestamp", { type: "timestamp", timestampFormat: "unixTimestamp" });
      case 15:
        return this.put("Document", { type: "structure", members: {}, document: true });
      case 17:
        return this.put("BigInteger", { type: "long" });
      case 19:
        return this.put("BigDecimal", { type: "double" });
      case 21:
        return this.put("Blob", { type: "blob" });
      case 42:
        return this.put("StreamingBlob", { type: "blob", streaming: true });
    }
    throw new Error(`${where}: unknown simple schema code ${n}`);
  }

  /** The shape name for a schema reference, adding it (and what it refers to) to the model. */
  shapeOf(ref: Ref, where: string, declaredType?: string): string {
    if (typeof ref === "function") return this.shapeOf(ref(), where, declaredType);
    if (typeof ref === "number") return this.simple(ref, where, declaredType);
    // Smithy's Unit (a union member with no value), as botocore's models write it.
    if (ref === "unit") return this.put("Unit", { type: "structure", members: {} });
    if (!isSchemaArray(ref)) throw new Error(`${where}: unreadable schema ${JSON.stringify(ref)}`);
    const [kind, , name] = ref as [number, string, string];
    if (this.shapes[name]) return name;
    const traits = traitsOf(ref[3]);
    checkTraits(name, traits);
    const doc = this.decl.shapes.get(name)?.doc;
    const common = { ...(traits.sensitive ? { sensitive: true } : {}), ...(doc ? { documentation: doc } : {}) };
    switch (kind) {
      case 0: {
        const target = this.shapeOf(ref[4], name);
        this.shapes[name] = { ...this.shapes[target], ...common };
        if (typeof traits.timestampFormat === "string") throw new Error(`${name}: timestampFormat on a named shape`);
        return name;
      }
      case 1: {
        this.shapes[name] = { type: "list", member: {}, ...common };
        const [item, itemTraits] = this.unwrap(ref[4]);
        (this.shapes[name]!.member as Record<string, unknown>).shape = this.shapeOf(item, `${name}.member`, declaredType?.endsWith("[]") ? declaredType.slice(0, -2) : undefined);
        if (typeof itemTraits.xmlName === "string") (this.shapes[name]!.member as Record<string, unknown>).locationName = itemTraits.xmlName;
        return name;
      }
      case 2: {
        this.shapes[name] = { type: "map", ...common };
        this.shapes[name]!.key = { shape: this.shapeOf(this.unwrap(ref[4])[0], `${name}.key`) };
        this.shapes[name]!.value = { shape: this.shapeOf(this.unwrap(ref[5])[0], `${name}.value`) };
        return name;
      }
      case 3:
      case -3:
      case 4:
        return this.structure(ref, kind, name, traits, common);
    }
    throw new Error(`${name}: unknown schema kind ${kind}`);
  }

  /** A member reference is `ref` or `[ref, traits]`. */
  private unwrap(member: Ref): [Ref, Traits] {
    if (Array.isArray(member) && member.length === 2) return [member[0], traitsOf(member[1])];
    return [member, {}];
  }

  private structure(ref: unknown[], kind: number, name: string, traits: Traits, common: Record<string, unknown>): string {
    const shape: Record<string, unknown> = { type: "structure", ...common };
    this.shapes[name] = shape; // before the members: a structure may refer to itself
    const memberNames = ref[4] as string[];
    const memberRefs = ref[5] as Ref[];
    const requiredCount = typeof ref[6] === "number" ? ref[6] : 0;
    const declared = this.decl.shapes.get(name);
    const members: Record<string, Record<string, unknown>> = {};
    memberNames.forEach((memberName, i) => {
      const [target, mt] = this.unwrap(memberRefs[i]);
      const where = `${name}.${memberName}`;
      checkTraits(where, mt);
      const decl = declared?.members.get(memberName);
      const member: Record<string, unknown> = { shape: this.memberShape(target, where, decl?.type, mt) };
      if (mt.httpLabel) Object.assign(member, { location: "uri", locationName: memberName });
      if (typeof mt.httpQuery === "string") Object.assign(member, { location: "querystring", locationName: mt.httpQuery });
      if (mt.httpQueryParams) member.location = "querystring";
      if (typeof mt.httpHeader === "string") Object.assign(member, { location: "header", locationName: mt.httpHeader });
      if (typeof mt.httpPrefixHeaders === "string") Object.assign(member, { location: "headers", locationName: mt.httpPrefixHeaders });
      if (mt.httpResponseCode) member.location = "statusCode";
      if (typeof mt.jsonName === "string") member.locationName = mt.jsonName;
      if (typeof mt.xmlName === "string") member.locationName = mt.xmlName;
      if (mt.idempotencyToken) member.idempotencyToken = true;
      if (mt.httpPayload) shape.payload = memberName;
      if (mt.sensitive && !this.shapes[member.shape as string]!.sensitive) throw new Error(`${where}: a sensitive member of a shape that is not sensitive`);
      if (decl?.doc) member.documentation = decl.doc;
      members[memberName] = member;
    });
    if (requiredCount) shape.required = memberNames.slice(0, requiredCount);
    shape.members = members;
    if (kind === 4) shape.union = true;
    if (kind === -3) {
      const status = traits.httpError;
      shape.error = { ...(typeof status === "number" ? { httpStatusCode: status } : {}), ...(traits.error === "client" ? { senderFault: true } : {}) };
      shape.exception = true;
      if (traits.error === "server") shape.fault = true;
    }
    return name;
  }

  /** A member's target; a timestamp member with its own format gets the shape of that format. */
  private memberShape(target: Ref, where: string, declaredType: string | undefined, mt: Traits): string {
    const name = this.shapeOf(target, where, declaredType);
    const format = mt.timestampFormat;
    if (typeof format === "string") {
      const formats: Record<string, number> = { "date-time": 5, "http-date": 6, "epoch-seconds": 7 };
      if (!formats[format]) throw new Error(`${where}: unknown timestampFormat ${format}`);
      return this.simple(formats[format]!, where);
    }
    return name;
  }
}

/** The endpoint BDD of the client (dist-es/endpoint/bdd.js), read without running the SDK's resolver. */
async function readBdd(packageDir: string): Promise<{ nodes: Int32Array; root: number; conditions: unknown[][]; results: unknown[][] }> {
  const source = readFileSync(join(packageDir, "dist-es", "endpoint", "bdd.js"), "utf8");
  const importLine = /^import \{ BinaryDecisionDiagram \} from "@smithy\/core\/endpoints";$/m;
  if (!importLine.test(source)) throw new Error("the client's endpoint/bdd.js does not have the layout the generator reads");
  const module = source.replace(importLine, "const BinaryDecisionDiagram = { from: (nodes, root, conditions, results) => ({ nodes, root, conditions, results }) };");
  const { bdd } = (await import(`data:text/javascript;base64,${Buffer.from(module).toString("base64")}`)) as { bdd: Awaited<ReturnType<typeof readBdd>> };
  return bdd;
}

const RESULT = 100_000_000;

/** An endpoint rule set equivalent to the BDD: each node becomes a tree rule on its condition, followed by the other branch. */
function ruleSetFrom(bdd: Awaited<ReturnType<typeof readBdd>>, parameters: Record<string, unknown>): Record<string, unknown> {
  const condition = (i: number) => {
    const [fn, argv, assign] = bdd.conditions[i] as [string, unknown[], string | undefined];
    return { fn, argv, ...(assign ? { assign } : {}) };
  };
  const result = (k: number): Record<string, unknown> => {
    const r = bdd.results[k]!;
    if (r[0] === -1) return { type: "error", conditions: [], error: r.length > 1 ? r[1] : "No matching endpoint." };
    const [url, properties, headers] = r as [unknown, Record<string, unknown> | undefined, Record<string, unknown> | undefined];
    return { type: "endpoint", conditions: [], endpoint: { url, properties: properties ?? {}, headers: headers ?? {} } };
  };
  // Every list ends in a rule with no conditions, so a tree whose conditions hold always decides (as the BDD does).
  const rules = (ref: number, depth: number): Record<string, unknown>[] => {
    if (depth > 200) throw new Error("the endpoint BDD is deeper than expected");
    if (ref === 1 || ref === -1) return [{ type: "error", conditions: [], error: "No matching endpoint." }];
    if (ref >= RESULT) return [result(ref - RESULT)];
    const i = 3 * (Math.abs(ref) - 1);
    const [cond, high, low] = [bdd.nodes[i]!, bdd.nodes[i + 1]!, bdd.nodes[i + 2]!];
    const [whenTrue, whenFalse] = ref >= 0 ? [high, low] : [low, high];
    return [{ type: "tree", conditions: [condition(cond)], rules: rules(whenTrue, depth + 1) }, ...rules(whenFalse, depth + 1)];
  };
  return { version: "1.0", parameters, rules: rules(bdd.root, 0) };
}

/** The rule-set parameters: the SDK's endpoint parameters (dist-es/endpoint/EndpointParameters.js) with their built-ins and defaults. */
function endpointParameters(packageDir: string): Record<string, unknown> {
  const declared = readFileSync(join(packageDir, "dist-types", "endpoint", "EndpointParameters.d.ts"), "utf8");
  const block = /export interface EndpointParameters extends [^{]*\{\n([\s\S]*?)\n\}/.exec(declared);
  if (!block) throw new Error("EndpointParameters.d.ts has no EndpointParameters interface");
  const source = readFileSync(join(packageDir, "dist-es", "endpoint", "EndpointParameters.js"), "utf8");
  // `UseFIPS: { type: "builtInParams", name: "useFipsEndpoint" }` in commonParams.
  const builtIns = new Map([...source.matchAll(/(\w+): \{ type: "builtInParams", name: "(\w+)" \}/g)].map((m) => [m[1]!, m[2]!]));
  // `useDualstackEndpoint: options.useDualstackEndpoint ?? false` in resolveClientEndpointParameters.
  const defaults = new Map([...source.matchAll(/(\w+): options\.\1 \?\? (true|false|"[^"]*")/g)].map((m) => [m[1]!, JSON.parse(m[2]!) as unknown]));
  const out: Record<string, unknown> = {};
  for (const m of block[1]!.matchAll(/^\s+(\w+)\?: (string|boolean|string\[\]) \| undefined;$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    const param: Record<string, unknown> = { type: type === "string" ? "String" : type === "boolean" ? "Boolean" : "StringArray", required: false };
    const configName = builtIns.get(name);
    if (configName) {
      const builtIn = BUILT_INS[configName];
      if (!builtIn) throw new Error(`endpoint parameter ${name}: unknown built-in ${configName}`);
      param.builtIn = builtIn;
      if (defaults.has(configName)) Object.assign(param, { required: true, default: defaults.get(configName) });
    }
    out[name] = param;
  }
  if (!Object.values(out).some((p) => (p as { builtIn?: string }).builtIn === "SDK::Endpoint")) throw new Error("the endpoint parameters have no SDK::Endpoint built-in: --endpoint-url would not work");
  return out;
}

/** `createPaginator(Client, XCommand, "inputToken", "outputToken", "pageSize")` in dist-es/pagination. */
function readPaginators(packageDir: string, shapes: Record<string, Record<string, unknown>>, operations: Record<string, Record<string, unknown>>): Record<string, unknown> {
  const dir = join(packageDir, "dist-es", "pagination");
  const out: Record<string, unknown> = {};
  if (!existsSync(dir)) return out;
  for (const file of readdirSync(dir).filter((f) => f.endsWith("Paginator.js"))) {
    const m = /createPaginator\(\w+, (\w+)Command, "([^"]+)", "([^"]+)"(?:, "([^"]+)")?\)/.exec(readFileSync(join(dir, file), "utf8"));
    if (!m) throw new Error(`${file}: not a paginator the generator can read`);
    const [, op, inputToken, outputToken, limitKey] = m as unknown as [string, string, string, string, string | undefined];
    const output = operations[op]?.output as { shape: string } | undefined;
    // The JS SDK keeps no result key; the output's one list member is what pages add up.
    const lists = output ? Object.entries(shapes[output.shape]!.members as Record<string, { shape: string }>).filter(([, mem]) => shapes[mem.shape]!.type === "list").map(([k]) => k) : [];
    out[op] = { input_token: inputToken, output_token: outputToken, ...(limitKey ? { limit_key: limitKey } : {}), ...(lists.length === 1 ? { result_key: lists[0] } : {}) };
  }
  return { pagination: Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b))) };
}

/**
 * The botocore model of the SDK client package `pkg` (e.g. "@aws-sdk/client-lambda-microvms"),
 * named `service` (the CLI's command, e.g. "lambda-microvms").
 */
export async function generateBotocoreModel(pkg: string, service: string): Promise<BotocoreModel> {
  const packageDir = packageDirOf(pkg);
  const sdk = require(pkg) as Record<string, unknown>;
  const clientName = Object.keys(sdk).find((k) => k.endsWith("Client") && typeof sdk[k] === "function" && k !== "__Client" && (sdk[k] as { name?: string }).name === k && k !== "Client");
  if (!clientName) throw new Error(`${pkg} exports no client class`);
  const Client = sdk[clientName] as new (c: Record<string, unknown>) => { config: Record<string, unknown>; destroy(): void };
  const client = new Client({ region: "us-east-1", credentials: { accessKeyId: "unused", secretAccessKey: "unused" } });
  const config = client.config;
  client.destroy();
  const apiVersion = config.apiVersion as string;
  const protocolName = (config.protocol as { constructor: { name: string } }).constructor.name;
  const protocol = PROTOCOLS[protocolName];
  if (!protocol) throw new Error(`${pkg}: unknown protocol ${protocolName}`);
  const settings = (config.protocolSettings ?? {}) as { serviceTarget?: string };
  const decl = readDeclarations(packageDir, clientName);

  const builder = new ShapeBuilder(decl);
  const operationSchemas = Object.entries(sdk).filter(([k, v]) => k.endsWith("$") && isSchemaArray(v) && v[0] === 9).map(([, v]) => v as unknown[]);
  if (!operationSchemas.length) throw new Error(`${pkg} exports no operation schemas`);
  const authProvider = config.httpAuthSchemeProvider as (p: Record<string, unknown>) => { schemeId: string; signingProperties?: { name?: string } }[];
  let signingName: string | undefined;
  const operations: Record<string, Record<string, unknown>> = {};
  for (const op of operationSchemas.sort((a, b) => String(a[2]).localeCompare(String(b[2])))) {
    const name = op[2] as string;
    if (typeof sdk[`${name}Command`] !== "function") throw new Error(`${pkg}: the schema ${name} has no command`);
    const traits = traitsOf(op[3]);
    checkTraits(name, traits);
    const auth = authProvider({ operation: name, region: "us-east-1" });
    const sigv4 = auth.find((a) => a.schemeId === "aws.auth#sigv4");
    if (!sigv4?.signingProperties?.name) throw new Error(`${name}: no SigV4 auth scheme with a signing name`);
    if (signingName && signingName !== sigv4.signingProperties.name) throw new Error(`${name}: a second signing name ${sigv4.signingProperties.name}`);
    signingName = sigv4.signingProperties.name;
    const operation: Record<string, unknown> = { name };
    const http = traits.http as [string, string, number] | undefined;
    if (http) operation.http = { method: http[0], requestUri: http[1], responseCode: http[2] };
    else operation.http = { method: "POST", requestUri: "/" };
    const input = (op[4] as () => unknown)();
    const output = (op[5] as () => unknown)();
    if (input !== "unit") operation.input = { shape: builder.shapeOf(input, `${name} input`) };
    if (output !== "unit") operation.output = { shape: builder.shapeOf(output, `${name} output`) };
    const declared = decl.operations.get(name);
    const errors = (declared?.errors ?? []).filter((e) => {
      const schema = sdk[`${e}$`];
      return isSchemaArray(schema) && schema[0] === -3 && !String(schema[1]).startsWith("smithy.ts.sdk.synthetic.");
    });
    operation.errors = errors.map((e) => ({ shape: builder.shapeOf(sdk[`${e}$`], e) }));
    if (traits.idempotent) operation.idempotent = true;
    if (declared?.doc) operation.documentation = declared.doc;
    operations[name] = operation;
  }
  // Every error of the service, declared by an operation or not, so clients can name them all.
  for (const [key, value] of Object.entries(sdk)) {
    // (The SDK's synthetic base exception is the client's own class, not a service error.)
    if (key.endsWith("$") && isSchemaArray(value) && value[0] === -3 && !String(value[1]).startsWith("smithy.ts.sdk.synthetic.")) builder.shapeOf(value, key.slice(0, -1));
  }

  const bdd = await readBdd(packageDir);
  // The prefix of the plain regional endpoint (not FIPS, not dual-stack): https://<prefix>.{Region}.{PartitionResult#dnsSuffix}.
  const endpointPrefix = bdd.results.map((r) => (typeof r[0] === "string" ? /^https:\/\/([a-z0-9-]+)\.\{Region\}\.\{PartitionResult#dnsSuffix\}$/.exec(r[0])?.[1] : undefined)).find((p) => p && !p.endsWith("-fips"));
  const metadata: Record<string, unknown> = {
    apiVersion,
    endpointPrefix: endpointPrefix ?? signingName,
    protocol: protocol.protocol,
    protocols: [protocol.protocol],
    ...(protocol.jsonVersion ? { jsonVersion: protocol.jsonVersion, targetPrefix: settings.serviceTarget } : {}),
    serviceFullName: config.serviceId,
    serviceId: config.serviceId,
    signatureVersion: "v4",
    signingName,
    uid: `${service}-${apiVersion}`,
  };
  const shapes = Object.fromEntries(Object.entries(builder.shapes).sort(([a], [b]) => a.localeCompare(b)));
  const serviceModel = {
    version: "2.0",
    metadata,
    operations,
    shapes,
    ...(decl.clientDoc ? { documentation: decl.clientDoc } : {}),
  };
  const files: Record<string, unknown> = {
    "service-2.json": serviceModel,
    "endpoint-rule-set-1.json": ruleSetFrom(bdd, endpointParameters(packageDir)),
  };
  const paginators = readPaginators(packageDir, shapes, operations);
  if (Object.keys((paginators as { pagination?: object }).pagination ?? {}).length) files["paginators-1.json"] = paginators;
  const waiters = join(packageDir, "dist-es", "waiters");
  if (existsSync(waiters) && readdirSync(waiters).some((f) => f.startsWith("waitFor"))) {
    throw new Error(`${pkg} has waiters, which the generator does not translate yet`);
  }
  return { service, apiVersion, files, operations: Object.keys(operations) };
}
