// IAM's policy language: parsing, validation and evaluation of JSON policy
// documents, as pure logic (no I/O). Identity policies (a user's or a role's
// inline policies), session policies (AssumeRole's Policy) and trust policies
// (a role's AssumeRolePolicyDocument) share one grammar; what differs is
// whether Principal/NotPrincipal must or must not be there, and whether
// Resource may be. Evaluation follows
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html:
// an explicit Deny wins, then an Allow, else the request is implicitly denied.
// Matching follows the element references (Action, Resource, Principal,
// Condition, condition operators, policy variables) of
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements.html.

import { IamFault } from "./errors.js";

export type PolicyKind = "identity" | "session" | "trust";

/** What a request offers to be matched against: its action, resource, principal and condition keys. */
export interface EvaluationRequest {
  /** `service:Action`. */
  action: string;
  /** One resource ARN, or `*`. */
  resource: string;
  /** The calling principal, for trust policies' Principal. */
  principal?: PrincipalRef;
  /** Condition keys, already normalised (`requestContext`). */
  context: RequestContext;
}

/** Who is asking, as the Principal element can name them. */
export interface PrincipalRef {
  /** The principal's account (a 12-digit id), for account and root-ARN principals. */
  accountId?: string;
  /** ARNs that name this principal exactly: a user's ARN; a role session's session ARN and its role's ARN. */
  arns: string[];
  /** A service principal, e.g. lambda.amazonaws.com. */
  service?: string;
}

/** Condition keys by lower-cased name; each key holds one or more values. */
export type RequestContext = ReadonlyMap<string, readonly string[]>;

/** Builds a request context from named values: booleans become "true"/"false", Dates ISO 8601, arrays stay sets. */
export function requestContext(values: Record<string, string | readonly string[] | boolean | number | Date | undefined>): Map<string, readonly string[]> {
  const out = new Map<string, readonly string[]>();
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined) continue;
    out.set(k.toLowerCase(), contextValues(v));
  }
  return out;
}

export function contextValues(v: string | readonly string[] | boolean | number | Date): readonly string[] {
  if (Array.isArray(v)) return v as readonly string[];
  if (v instanceof Date) return [v.toISOString()];
  return [String(v)];
}

export type Decision = "Allow" | "ExplicitDeny" | "ImplicitDeny";

// ---------- patterns: `*` and `?` wildcards, policy variables ----------

/** A piece of a pattern: literal text, a wildcard, or a policy variable `${key}` / `${key, 'default'}`. */
type Piece = { t: "lit"; v: string } | { t: "star" } | { t: "one" } | { t: "var"; key: string; def?: string };

function lex(text: string, variables: boolean, wildcards: boolean): Piece[] {
  const pieces: Piece[] = [];
  let lit = "";
  const flush = () => {
    if (lit) pieces.push({ t: "lit", v: lit });
    lit = "";
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (variables && c === "$" && text[i + 1] === "{") {
      const end = text.indexOf("}", i + 2);
      if (end > 0) {
        const inner = text.slice(i + 2, end).trim();
        i = end;
        // ${*}, ${?} and ${$} stand for the characters themselves.
        if (inner === "*" || inner === "?" || inner === "$") {
          lit += inner;
          continue;
        }
        flush();
        const m = /^([^,]+?)\s*,\s*'([^']*)'$/.exec(inner);
        pieces.push(m ? { t: "var", key: m[1]!.trim().toLowerCase(), def: m[2]! } : { t: "var", key: inner.toLowerCase() });
        continue;
      }
    }
    if (wildcards && (c === "*" || c === "?")) {
      flush();
      pieces.push({ t: c === "*" ? "star" : "one" });
      continue;
    }
    lit += c;
  }
  flush();
  return pieces;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/**
 * A compiled pattern: a literal (fast path), a regular expression, or one that depends on policy
 * variables and is resolved per request. `null` from `regex()` means a variable had no value (the
 * element then matches nothing, as IAM does).
 */
class Pattern {
  private readonly fixed: RegExp | string | null;
  private readonly hasVars: boolean;

  constructor(
    readonly source: string,
    private readonly pieces: Piece[],
    private readonly ignoreCase: boolean,
    /** Characters `*` and `?` may not match (":" in an ARN segment). */
    private readonly within = "",
  ) {
    this.hasVars = pieces.some((p) => p.t === "var");
    this.fixed = this.hasVars ? null : this.compile(pieces);
  }

  private compile(pieces: Piece[]): RegExp | string {
    if (pieces.every((p) => p.t === "lit")) {
      const s = pieces.map((p) => (p as { v: string }).v).join("");
      return this.ignoreCase ? s.toLowerCase() : s;
    }
    const any = this.within ? `[^${escapeRe(this.within)}]` : "[\\s\\S]";
    const re = pieces.map((p) => (p.t === "lit" ? escapeRe(p.v) : p.t === "star" ? `${any}*` : p.t === "one" ? any : "")).join("");
    return new RegExp(`^${re}$`, this.ignoreCase ? "i" : "");
  }

  matches(value: string, context: RequestContext): boolean {
    let m = this.fixed;
    if (m === null) {
      const resolved: Piece[] = [];
      for (const p of this.pieces) {
        if (p.t !== "var") {
          resolved.push(p);
          continue;
        }
        const v = context.get(p.key);
        // A variable stands for one value; a missing (or multi-valued) key makes the element match nothing, unless it has a default.
        if (v && v.length === 1) resolved.push({ t: "lit", v: v[0]! });
        else if (p.def !== undefined) resolved.push({ t: "lit", v: p.def });
        else return false;
      }
      m = this.compile(resolved);
    }
    if (typeof m === "string") return this.ignoreCase ? value.toLowerCase() === m : value === m;
    return m.test(value);
  }
}

function pattern(text: string, opts: { variables: boolean; ignoreCase: boolean; wildcards?: boolean; within?: string }): Pattern {
  return new Pattern(text, lex(text, opts.variables, opts.wildcards ?? true), opts.ignoreCase, opts.within);
}

/**
 * An ARN pattern: `*`, or an ARN whose six colon-separated parts (arn, partition, service,
 * region, account, resource) are matched one by one; wildcards stay within their part, except in
 * the last part given, which takes the rest of the ARN (resource ids may hold colons).
 */
class ArnPattern {
  private readonly all: boolean;
  private readonly parts: Pattern[];

  constructor(readonly source: string, variables: boolean, ignoreCase = false) {
    this.all = source === "*";
    const split = splitArn(source, 6);
    this.parts = split.map((p, i) => pattern(p, { variables, ignoreCase, within: i < split.length - 1 ? ":" : "" }));
  }

  matches(value: string, context: RequestContext): boolean {
    if (this.all) return true;
    const parts = splitArn(value, this.parts.length);
    if (parts.length !== this.parts.length) return false;
    for (let i = 0; i < parts.length; i++) if (!this.parts[i]!.matches(parts[i]!, context)) return false;
    return true;
  }
}

/** At most `n` parts: the first n-1 colon-separated, the last the rest. */
function splitArn(s: string, n: number): string[] {
  const out: string[] = [];
  let from = 0;
  while (out.length < n - 1) {
    const c = s.indexOf(":", from);
    if (c < 0) break;
    out.push(s.slice(from, c));
    from = c + 1;
  }
  out.push(s.slice(from));
  return out;
}

/** Whether `arn` matches the ARN pattern `pattern` (wildcards, no variables), as Resource and ArnLike do. */
export function arnMatches(patternText: string, arn: string): boolean {
  return new ArnPattern(patternText, false).matches(arn, EMPTY);
}

const EMPTY: RequestContext = new Map();

// ---------- conditions ----------

type BaseOperator =
  | "StringEquals" | "StringNotEquals" | "StringEqualsIgnoreCase" | "StringNotEqualsIgnoreCase" | "StringLike" | "StringNotLike"
  | "NumericEquals" | "NumericNotEquals" | "NumericLessThan" | "NumericLessThanEquals" | "NumericGreaterThan" | "NumericGreaterThanEquals"
  | "DateEquals" | "DateNotEquals" | "DateLessThan" | "DateLessThanEquals" | "DateGreaterThan" | "DateGreaterThanEquals"
  | "Bool" | "BinaryEquals" | "IpAddress" | "NotIpAddress" | "ArnEquals" | "ArnLike" | "ArnNotEquals" | "ArnNotLike" | "Null";

const OPERATORS: ReadonlySet<string> = new Set<BaseOperator>([
  "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike", "StringNotLike",
  "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals",
  "DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals",
  "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike", "Null",
]);

/** Operators that match when the value is NOT among the policy's: true when the key is missing. */
const NEGATED: ReadonlySet<string> = new Set(["StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals", "DateNotEquals", "NotIpAddress", "ArnNotEquals", "ArnNotLike"]);

/** Matches one context value against one policy value (positive form of the operator). */
type ValueTest = (contextValue: string, context: RequestContext) => boolean;

interface ConditionClause {
  operator: string;
  base: BaseOperator;
  set?: "ForAllValues" | "ForAnyValue";
  ifExists: boolean;
  key: string;
  /** Null: whether the key must be absent. */
  nullExpected?: boolean;
  tests: ValueTest[];
}

function malformed(message: string): IamFault {
  return new IamFault("MalformedPolicyDocument", message);
}

function parseNumber(s: string): number | undefined {
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s.trim()) ? Number(s) : undefined;
}

/** A date as IAM takes it: ISO 8601 (date or date-time) or seconds since the epoch. */
export function parseDate(s: string): number | undefined {
  const t = s.trim();
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t) * 1000;
  if (!/^\d{4}-\d{2}-\d{2}/.test(t)) return undefined;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? undefined : ms;
}

// IP addresses and CIDR blocks, IPv4 and IPv6, as 128-bit numbers (IPv4 mapped into ::ffff:0:0/96).

function parseIpv4(s: string): bigint | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  let v = 0n;
  for (let i = 1; i <= 4; i++) {
    const n = Number(m[i]);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseIpv6(s: string): bigint | undefined {
  let text = s;
  // A trailing dotted quad (::ffff:10.0.0.1) is the last two 16-bit groups.
  if (text.includes(".")) {
    const lastColon = text.lastIndexOf(":");
    const v4 = parseIpv4(text.slice(lastColon + 1));
    if (v4 === undefined || lastColon < 0) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groupsOf(halves[0]!);
  const rest = halves.length === 2 ? groupsOf(halves[1]!) : [];
  for (const g of [...head, ...rest]) if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
  const count = head.length + rest.length;
  if (halves.length === 1 ? count !== 8 : count > 7) return undefined;
  const words = [...head, ...Array<string>(halves.length === 2 ? 8 - count : 0).fill("0"), ...rest].map((g) => BigInt(`0x${g}`));
  return words.reduce((acc, w) => (acc << 16n) | w, 0n);
}

const V4_MAPPED = 0xffffn << 32n;

/** An address as a 128-bit number; IPv4 (and IPv4-mapped IPv6) in ::ffff:0:0/96. */
export function parseIp(s: string): bigint | undefined {
  const v4 = parseIpv4(s.trim());
  if (v4 !== undefined) return V4_MAPPED | v4;
  return parseIpv6(s.trim());
}

interface Cidr {
  base: bigint;
  mask: bigint;
}

export function parseCidr(s: string): Cidr | undefined {
  const [addr, bits, extra] = s.trim().split("/");
  if (extra !== undefined || !addr) return undefined;
  const isV4 = parseIpv4(addr) !== undefined;
  const ip = parseIp(addr);
  if (ip === undefined) return undefined;
  const max = isV4 ? 32 : 128;
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return undefined;
  const len = bits === undefined ? max : Number(bits);
  if (len > max) return undefined;
  const prefix = BigInt(len + (isV4 ? 96 : 0));
  const mask = prefix === 0n ? 0n : ((1n << 128n) - 1n) ^ ((1n << (128n - prefix)) - 1n);
  return { base: ip & mask, mask };
}

export function cidrContains(cidr: Cidr, ip: bigint): boolean {
  return (ip & cidr.mask) === cidr.base;
}

function valueTest(base: BaseOperator, policyValue: string, variables: boolean): ValueTest | undefined {
  switch (base) {
    case "StringEquals":
    case "StringNotEquals": {
      const p = pattern(policyValue, { variables, ignoreCase: false, wildcards: false });
      return (v, ctx) => p.matches(v, ctx);
    }
    case "StringEqualsIgnoreCase":
    case "StringNotEqualsIgnoreCase": {
      const p = pattern(policyValue, { variables, ignoreCase: true, wildcards: false });
      return (v, ctx) => p.matches(v, ctx);
    }
    case "StringLike":
    case "StringNotLike": {
      const p = pattern(policyValue, { variables, ignoreCase: false });
      return (v, ctx) => p.matches(v, ctx);
    }
    case "ArnEquals":
    case "ArnNotEquals":
    case "ArnLike":
    case "ArnNotLike": {
      const p = new ArnPattern(policyValue, variables);
      return (v, ctx) => p.matches(v, ctx);
    }
    case "NumericEquals":
    case "NumericNotEquals":
    case "NumericLessThan":
    case "NumericLessThanEquals":
    case "NumericGreaterThan":
    case "NumericGreaterThanEquals": {
      const n = parseNumber(policyValue);
      if (n === undefined) return undefined;
      const cmp = base.replace("Numeric", "").replace("Not", "");
      return (v) => {
        const x = parseNumber(v);
        return x !== undefined && compare(cmp, x, n);
      };
    }
    case "DateEquals":
    case "DateNotEquals":
    case "DateLessThan":
    case "DateLessThanEquals":
    case "DateGreaterThan":
    case "DateGreaterThanEquals": {
      const d = parseDate(policyValue);
      if (d === undefined) return undefined;
      const cmp = base.replace("Date", "").replace("Not", "");
      return (v) => {
        const x = parseDate(v);
        return x !== undefined && compare(cmp, x, d);
      };
    }
    case "Bool": {
      const b = policyValue.toLowerCase();
      if (b !== "true" && b !== "false") return undefined;
      return (v) => v.toLowerCase() === b;
    }
    case "BinaryEquals":
      return (v) => v === policyValue;
    case "IpAddress":
    case "NotIpAddress": {
      const cidr = parseCidr(policyValue);
      if (!cidr) return undefined;
      return (v) => {
        const ip = parseIp(v);
        return ip !== undefined && cidrContains(cidr, ip);
      };
    }
    case "Null":
      return undefined;
  }
}

function compare(cmp: string, x: number, y: number): boolean {
  switch (cmp) {
    case "Equals":
      return x === y;
    case "LessThan":
      return x < y;
    case "LessThanEquals":
      return x <= y;
    case "GreaterThan":
      return x > y;
    default:
      return x >= y;
  }
}

/** Evaluates one condition clause (an operator and one key with its values) against the request. */
function clauseHolds(c: ConditionClause, context: RequestContext): boolean {
  const found = context.get(c.key);
  const values = found && found.length ? found : undefined;
  if (c.base === "Null") return c.nullExpected === (values === undefined);
  const negated = NEGATED.has(c.base);
  const hit = (v: string) => c.tests.some((t) => t(v, context));
  if (c.set === "ForAllValues") {
    // Every value in the request must match one of the policy's; true for an empty or missing set.
    if (!values) return true;
    return values.every((v) => (negated ? !hit(v) : hit(v)));
  }
  if (c.set === "ForAnyValue") {
    // At least one value in the request must match; false for an empty or missing set.
    if (!values) return c.ifExists;
    return values.some((v) => (negated ? !hit(v) : hit(v)));
  }
  if (!values) return c.ifExists || negated;
  return negated ? !values.some(hit) : values.some(hit);
}

// ---------- statements and policies ----------

type ActionMatcher = Pattern;

interface PrincipalSpec {
  /** `"*"` or `{"AWS": "*"}`: anyone. */
  anyone: boolean;
  /** Account ids named by id or by root ARN. */
  accounts: Set<string>;
  /** User, role and session ARNs named exactly. */
  arns: Set<string>;
  services: Set<string>;
}

export interface Statement {
  sid?: string;
  effect: "Allow" | "Deny";
  actions?: ActionMatcher[];
  notActions?: ActionMatcher[];
  resources?: ArnPattern[];
  notResources?: ArnPattern[];
  principal?: PrincipalSpec;
  notPrincipal?: PrincipalSpec;
  conditions: ConditionClause[];
}

export interface Policy {
  version: string;
  kind: PolicyKind;
  statements: Statement[];
  /** The document as given. */
  text: string;
}

const STATEMENT_FIELDS = new Set(["Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal", "Condition"]);
const TOP_FIELDS = new Set(["Version", "Id", "Statement"]);

function strings(value: unknown, what: string): string[] {
  const list = Array.isArray(value) ? value : [value];
  if (!list.length) throw malformed(`Syntax errors in policy. ${what} must not be an empty list.`);
  for (const v of list) if (typeof v !== "string") throw malformed(`Syntax errors in policy. ${what} must be a string or a list of strings.`);
  return list as string[];
}

function parseActions(value: unknown, field: string): ActionMatcher[] {
  return strings(value, field).map((a) => {
    if (a !== "*" && !/^[A-Za-z0-9*?-]+:[A-Za-z0-9*?_-]*$/.test(a)) {
      throw malformed(`Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. '${a}' in ${field} is not of the form service:Action (such as lambda:RunMicrovm or lambda:*).`);
    }
    return pattern(a, { variables: false, ignoreCase: true });
  });
}

function parseResources(value: unknown, field: string, variables: boolean): ArnPattern[] {
  return strings(value, field).map((r) => {
    if (r !== "*" && !/^arn:[^:]*:[^:]*:[^:]*:[^:]*:.+/.test(r) && !/^arn:.*\*$/.test(r)) {
      throw malformed(`Resource ${r} must be in ARN format or "*".`);
    }
    return new ArnPattern(r, variables);
  });
}

const ACCOUNT = /^\d{12}$/;
const IAM_PRINCIPAL_ARN = /^arn:aws:(iam|sts)::(\d{12}):(root|user\/.+|role\/.+|assumed-role\/.+\/.+)$/;

function parsePrincipal(value: unknown, field: string): PrincipalSpec {
  const spec: PrincipalSpec = { anyone: false, accounts: new Set(), arns: new Set(), services: new Set() };
  if (value === "*") {
    spec.anyone = true;
    return spec;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw malformed(`Invalid principal in policy: ${field} must be "*" or an object such as {"AWS": "arn:aws:iam::123456789012:root"} or {"Service": "lambda.amazonaws.com"}.`);
  }
  for (const [type, v] of Object.entries(value as Record<string, unknown>)) {
    const list = strings(v, `${field}.${type}`);
    if (type === "AWS") {
      for (const p of list) {
        if (p === "*") spec.anyone = true;
        else if (ACCOUNT.test(p)) spec.accounts.add(p);
        else {
          const m = IAM_PRINCIPAL_ARN.exec(p);
          if (!m) throw malformed(`Invalid principal in policy: "AWS":"${p}". Name an account id (123456789012), its root (arn:aws:iam::123456789012:root), a user or role ARN, or "*".`);
          if (m[3] === "root") spec.accounts.add(m[2]!);
          else spec.arns.add(p);
        }
      }
    } else if (type === "Service") {
      for (const s of list) {
        if (!/^[a-z0-9.-]+\.amazonaws\.com(\.cn)?$/.test(s) && s !== "*") throw malformed(`Invalid principal in policy: "Service":"${s}". Service principals look like lambda.amazonaws.com.`);
        spec.services.add(s);
      }
    } else if (type === "Federated" || type === "CanonicalUser") {
      // Valid IAM grammar, but lmvm has no federated identities or canonical users: such a principal never matches.
      for (const s of list) spec.arns.add(`${type}:${s}`);
    } else {
      throw malformed(`Invalid principal in policy: unknown principal type "${type}"; use AWS or Service.`);
    }
  }
  return spec;
}

function principalMatches(spec: PrincipalSpec, who: PrincipalRef | undefined): boolean {
  if (!who) return false;
  if (spec.anyone) return true;
  if (who.service) return spec.services.has(who.service) || spec.services.has("*");
  if (who.accountId && spec.accounts.has(who.accountId)) return true;
  return who.arns.some((a) => spec.arns.has(a));
}

function parseCondition(value: unknown, variables: boolean): ConditionClause[] {
  if (!value || typeof value !== "object" || Array.isArray(value)) throw malformed("Syntax errors in policy. Condition must be an object of operators, such as {\"StringEquals\": {\"aws:ResourceTag/team\": \"blue\"}}.");
  const clauses: ConditionClause[] = [];
  for (const [operator, block] of Object.entries(value as Record<string, unknown>)) {
    let name = operator;
    let set: ConditionClause["set"];
    const sm = /^(ForAllValues|ForAnyValue):(.+)$/.exec(name);
    if (sm) {
      set = sm[1] as ConditionClause["set"];
      name = sm[2]!;
    }
    let ifExists = false;
    if (name.endsWith("IfExists")) {
      ifExists = true;
      name = name.slice(0, -"IfExists".length);
    }
    if (!OPERATORS.has(name) || (name === "Null" && (ifExists || set))) throw malformed(`Invalid Condition type : ${operator}.`);
    const base = name as BaseOperator;
    if (!block || typeof block !== "object" || Array.isArray(block)) throw malformed(`Syntax errors in policy. Condition ${operator} must map condition keys to values.`);
    for (const [key, raw] of Object.entries(block as Record<string, unknown>)) {
      if (!/^[A-Za-z0-9-]+:[^\s]+$/.test(key)) throw malformed(`Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. Condition key '${key}' must look like aws:SourceIp.`);
      const list = (Array.isArray(raw) ? raw : [raw]) as unknown[];
      if (!list.length) throw malformed(`Syntax errors in policy. Condition ${operator} on ${key} has no values.`);
      const values = list.map((v) => {
        if (typeof v === "string") return v;
        if (typeof v === "number" || typeof v === "boolean") return String(v);
        throw malformed(`Syntax errors in policy. Condition ${operator} on ${key}: values must be strings, numbers or booleans.`);
      });
      const clause: ConditionClause = { operator, base, ...(set ? { set } : {}), ifExists, key: key.toLowerCase(), tests: [] };
      if (base === "Null") {
        if (values.length !== 1 || !/^(true|false)$/i.test(values[0]!)) throw malformed(`Syntax errors in policy. Null on ${key} takes "true" (the key must be absent) or "false" (present).`);
        clause.nullExpected = values[0]!.toLowerCase() === "true";
      } else {
        for (const v of values) {
          const t = valueTest(base, v, variables);
          if (!t) throw malformed(`Syntax errors in policy. '${v}' is not a valid value for ${operator} on ${key}${base.startsWith("Date") ? " (use ISO 8601, e.g. 2026-01-01T00:00:00Z, or epoch seconds)" : base.includes("Ip") ? " (use an IPv4 or IPv6 address or CIDR block)" : base.startsWith("Numeric") ? " (use a number)" : base === "Bool" ? ' (use "true" or "false")' : ""}.`);
          clause.tests.push(t);
        }
      }
      clauses.push(clause);
    }
  }
  return clauses;
}

function parseStatement(s: unknown, kind: PolicyKind, variables: boolean): Statement {
  if (!s || typeof s !== "object" || Array.isArray(s)) throw malformed("Syntax errors in policy. Each Statement must be an object.");
  const o = s as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!STATEMENT_FIELDS.has(k)) throw malformed(`Syntax errors in policy. Unknown field ${k} in a statement; statements take ${[...STATEMENT_FIELDS].join(", ")}.`);
  if (o.Sid !== undefined && (typeof o.Sid !== "string" || (kind !== "trust" && !/^[A-Za-z0-9]*$/.test(o.Sid)))) {
    throw malformed(`Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular expression [0-9A-Za-z]*`);
  }
  if (o.Effect !== "Allow" && o.Effect !== "Deny") {
    throw malformed(o.Effect === undefined ? "Missing required field Effect" : `Invalid effect: ${String(o.Effect)}. Effect must be Allow or Deny.`);
  }
  if (o.Action !== undefined && o.NotAction !== undefined) throw malformed("Syntax errors in policy. A statement may have Action or NotAction, not both.");
  if (o.Action === undefined && o.NotAction === undefined) throw malformed("Policy statement must contain actions.");
  if (o.Resource !== undefined && o.NotResource !== undefined) throw malformed("Syntax errors in policy. A statement may have Resource or NotResource, not both.");
  if (o.Principal !== undefined && o.NotPrincipal !== undefined) throw malformed("Syntax errors in policy. A statement may have Principal or NotPrincipal, not both.");
  const hasPrincipal = o.Principal !== undefined || o.NotPrincipal !== undefined;
  if (kind === "trust") {
    if (!hasPrincipal) throw malformed("Missing required field Principal");
    if (o.Resource !== undefined || o.NotResource !== undefined) throw malformed(`Has prohibited field ${o.Resource !== undefined ? "Resource" : "NotResource"}`);
  } else {
    if (hasPrincipal) throw malformed("Policy document should not specify a principal.");
    if (o.Resource === undefined && o.NotResource === undefined) throw malformed("Policy statement must contain resources.");
  }
  const st: Statement = { effect: o.Effect, conditions: [] };
  if (typeof o.Sid === "string") st.sid = o.Sid;
  if (o.Action !== undefined) st.actions = parseActions(o.Action, "Action");
  if (o.NotAction !== undefined) st.notActions = parseActions(o.NotAction, "NotAction");
  if (o.Resource !== undefined) st.resources = parseResources(o.Resource, "Resource", variables);
  if (o.NotResource !== undefined) st.notResources = parseResources(o.NotResource, "NotResource", variables);
  if (o.Principal !== undefined) st.principal = parsePrincipal(o.Principal, "Principal");
  if (o.NotPrincipal !== undefined) st.notPrincipal = parsePrincipal(o.NotPrincipal, "NotPrincipal");
  if (o.Condition !== undefined) st.conditions = parseCondition(o.Condition, variables);
  return st;
}

/** The document's size as IAM counts it: characters, whitespace outside strings not counted. */
export function policySize(text: string): number {
  let n = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      n++;
      if (c === "\\") {
        i++;
        n++;
      } else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      n++;
    } else if (!/\s/.test(c)) n++;
  }
  return n;
}

/**
 * Parses and validates a policy document. Throws IamFault("MalformedPolicyDocument") naming what
 * is wrong: not JSON ("Syntax errors in policy."), an unknown Version, a Principal in an identity
 * or session policy, none in a trust policy, a Resource in a trust policy, no Action or Resource,
 * an action with no service prefix, an unknown condition operator or a bad condition value.
 */
export function parsePolicy(text: string, kind: PolicyKind): Policy {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw malformed("Syntax errors in policy. The document is not valid JSON.");
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw malformed("Syntax errors in policy. The document must be a JSON object with Version and Statement.");
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!TOP_FIELDS.has(k)) throw malformed(`Syntax errors in policy. Unknown field ${k}; a policy takes Version, Id and Statement.`);
  const version = o.Version ?? "2008-10-17";
  if (version !== "2012-10-17" && version !== "2008-10-17") throw malformed(`The policy failed legacy parsing: Version must be "2012-10-17" (or the older "2008-10-17"), not ${JSON.stringify(version)}.`);
  if (o.Statement === undefined) throw malformed("Syntax errors in policy. The document has no Statement.");
  const raw = Array.isArray(o.Statement) ? o.Statement : [o.Statement];
  if (!raw.length) throw malformed("Syntax errors in policy. Statement must not be empty.");
  // Policy variables exist from version 2012-10-17; in older documents ${...} is literal text.
  const variables = version === "2012-10-17";
  const statements = raw.map((s) => parseStatement(s, kind, variables));
  const sids = statements.map((s) => s.sid).filter((s): s is string => !!s);
  if (new Set(sids).size !== sids.length) throw malformed("Statement IDs (SID) in a single policy must be unique.");
  return { version, kind, statements, text };
}

function statementApplies(st: Statement, req: EvaluationRequest): boolean {
  if (st.actions ? !st.actions.some((a) => a.matches(req.action, req.context)) : st.notActions!.some((a) => a.matches(req.action, req.context))) return false;
  if (st.resources && !st.resources.some((r) => r.matches(req.resource, req.context))) return false;
  if (st.notResources && st.notResources.some((r) => r.matches(req.resource, req.context))) return false;
  if (st.principal && !principalMatches(st.principal, req.principal)) return false;
  if (st.notPrincipal && principalMatches(st.notPrincipal, req.principal)) return false;
  for (const c of st.conditions) if (!clauseHolds(c, req.context)) return false;
  return true;
}

/** One policy set's verdict on a request: an explicit Deny in any statement wins, then any Allow, else an implicit deny. */
export function evaluate(policies: readonly Policy[], req: EvaluationRequest): Decision {
  let allowed = false;
  for (const p of policies) {
    for (const st of p.statements) {
      if (st.effect === "Allow" && allowed) continue;
      if (!statementApplies(st, req)) continue;
      if (st.effect === "Deny") return "ExplicitDeny";
      allowed = true;
    }
  }
  return allowed ? "Allow" : "ImplicitDeny";
}

/** The statement that decided, for explanations and tests. */
export function matchingStatements(policies: readonly Policy[], req: EvaluationRequest): Statement[] {
  return policies.flatMap((p) => p.statements.filter((st) => statementApplies(st, req)));
}

/** The verdict with a session policy: allowed only when both the identity's policies and the session policy allow. */
export function evaluateWithSession(identity: readonly Policy[], session: Policy | undefined, req: EvaluationRequest): { decision: Decision; by: "identity" | "session" } {
  const id = evaluate(identity, req);
  if (!session) return { decision: id, by: "identity" };
  const s = evaluate([session], req);
  if (id === "ExplicitDeny") return { decision: id, by: "identity" };
  if (s === "ExplicitDeny") return { decision: s, by: "session" };
  if (id !== "Allow") return { decision: id, by: "identity" };
  return { decision: s, by: "session" };
}
