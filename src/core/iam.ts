// The identity service: IAM users with access keys, roles with trust
// policies, inline policies, STS sessions, and the authorisation decision on
// every request. The IdentityStore is the truth; this process is its only
// writer, so it keeps a copy of everything in memory (users, keys with their
// opened secrets, roles, parsed policies) and answers resolveKey/authorize
// without touching the database. Secrets of access keys are sealed at rest
// (SecretBox "iam-secrets"); a session token is the session itself, sealed
// (SecretBox "sts-session"), so nothing about sessions is stored.

import { randomBytes } from "node:crypto";
import { AccessDenied, IamFault, Unauthenticated } from "./errors.js";
import {
  evaluate, evaluateWithSession, parsePolicy, policySize, requestContext, type Decision, type EvaluationRequest, type Policy, type PrincipalRef,
} from "./iam-policy.js";
import {
  LAMBDA_SERVICE_PRINCIPAL, type AccessKeyStatus, type AssumedRole, type AssumeRoleInput, type AuthorizationRequest, type Caller, type IamAccessKey,
  type IamAdministration, type IamPage, type IamRole, type IamUser, type Identities, type ResolvedKey, type RoleCredentialSource,
  type TemporaryCredentials,
} from "./identity.js";
import type { Clock, IamAccessKeyRecord, IamPolicyRecord, IamRoleRecord, IamUserRecord, IdentityStore, SecretBox } from "./ports.js";

/** IAM's default quotas (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html). */
export const IAM_LIMITS = {
  accessKeysPerUser: 2,
  userPolicySize: 2048,
  rolePolicySize: 10240,
  trustPolicySize: 2048,
  sessionPolicySize: 2048,
  tagsPerEntity: 50,
};

/** Credentials the metadata service hands out for a role last this long. */
export const SERVICE_SESSION_SECONDS = 3600;
/** AssumeRole by a role session ("role chaining") lasts at most an hour. */
export const ROLE_CHAINING_MAX_SECONDS = 3600;
export const MIN_SESSION_SECONDS = 900;

const NAME = /^[\w+=,.@-]+$/;
const SESSION_NAME = /^[\w+=,.@-]*$/;
const PATH = /^\/([\x21-\x7e]+\/)?$/;
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function randomOf(alphabet: string, n: number): string {
  // Rejection sampling keeps every character equally likely.
  const limit = 256 - (256 % alphabet.length);
  let out = "";
  while (out.length < n) {
    for (const b of randomBytes(n * 2)) {
      if (b < limit && out.length < n) out += alphabet[b % alphabet.length];
    }
  }
  return out;
}

/** AKIA… (user keys) and ASIA… (temporary keys): 4 + 16 characters of [A-Z2-7]. */
export const newAccessKeyId = (prefix: "AKIA" | "ASIA") => `${prefix}${randomOf(BASE32, 16)}`;
/** 40 characters, as AWS's secret access keys. */
export const newSecretAccessKey = () => randomOf(SECRET_CHARS, 40);
/** AIDA… (users) and AROA… (roles): 4 + 17 characters of [A-Z0-9]. */
const newUniqueId = (prefix: "AIDA" | "AROA") => `${prefix}${randomOf(ID_CHARS, 17)}`;

function validation(message: string): IamFault {
  return new IamFault("ValidationError", message);
}

function constraint(value: string | number, member: string, rule: string): IamFault {
  return validation(`1 validation error detected: Value '${value}' at '${member}' failed to satisfy constraint: ${rule}`);
}

function checkName(value: string, member: string, max: number, pattern = NAME, min = 1): void {
  if (typeof value !== "string" || value.length < min) throw constraint(value, member, `Member must have length greater than or equal to ${min}`);
  if (value.length > max) throw constraint(value, member, `Member must have length less than or equal to ${max}`);
  if (!pattern.test(value)) throw constraint(value, member, `Member must satisfy regular expression pattern: [\\w+=,.@-]+`);
}

function checkPath(path: string, member = "path"): void {
  if (path.length > 512) throw constraint(path, member, "Member must have length less than or equal to 512");
  if (!PATH.test(path)) throw constraint(path, member, "Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)");
}

function checkTags(tags: Record<string, string> | undefined): void {
  if (!tags) return;
  const keys = Object.keys(tags);
  if (keys.length > IAM_LIMITS.tagsPerEntity) throw new IamFault("LimitExceeded", `Cannot exceed quota for TagsPerEntity: ${IAM_LIMITS.tagsPerEntity}`);
  for (const k of keys) {
    if (!k.length || k.length > 128 || !/^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$/u.test(k)) throw constraint(k, "tags.member.key", "Member must have length between 1 and 128 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+");
    const v = tags[k]!;
    if (v.length > 256 || !/^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u.test(v)) throw constraint(v, "tags.member.value", "Member must have length less than or equal to 256 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*");
  }
}

interface UserEntry {
  record: IamUserRecord;
  arn: string;
  policies: Map<string, { name: string; document: string; policy: Policy }>;
  keys: Set<string>;
}

interface KeyEntry {
  record: IamAccessKeyRecord;
  secret: string;
}

interface RoleEntry {
  record: IamRoleRecord;
  arn: string;
  trust: Policy;
  policies: Map<string, { name: string; document: string; policy: Policy }>;
}

/** What a session token holds (sealed). */
interface SessionClaims {
  v: 1;
  /** Temporary access key id and secret. */
  k: string;
  s: string;
  /** Role ARN and the role's unique id when the session began (a role deleted and made again is another role). */
  r: string;
  rid: string;
  /** Session name. */
  n: string;
  /** Session policy (JSON), if any. */
  p?: string;
  /** For service sessions: the resource the service acts for (aws:SourceArn). */
  src?: string;
  /** Session tags. */
  t?: Record<string, string>;
  /** Issued and expiry, ms since the epoch. */
  i: number;
  e: number;
  /** Whether it came from role chaining. */
  ch?: 1;
}

interface Session {
  claims: SessionClaims;
  policy?: Policy;
}

export interface IdentityServiceOptions {
  store: IdentityStore;
  clock: Clock;
  accountId: string;
  /** The account's root key (from <data-dir>/credentials): never in the IAM tables, never evaluated. */
  root: { accessKeyId: string; secretAccessKey: string };
  /** Seals access-key secrets at rest. */
  secrets: SecretBox;
  /** Seals session tokens. */
  sessions: SecretBox;
}

const lower = (s: string) => s.toLowerCase();

function policyMap(records: IamPolicyRecord[], kind: "user" | "role", owner: string) {
  const m = new Map<string, { name: string; document: string; policy: Policy }>();
  for (const r of records) {
    if (r.ownerKind === kind && lower(r.ownerName) === lower(owner)) m.set(lower(r.policyName), { name: r.policyName, document: r.document, policy: parsePolicy(r.document, "identity") });
  }
  return m;
}

function page<T>(items: T[], keyOf: (t: T) => string, input: { marker?: string; maxItems?: number }): IamPage<T> {
  const max = input.maxItems ?? 100;
  if (!Number.isInteger(max) || max < 1 || max > 1000) throw constraint(max, "maxItems", max < 1 ? "Member must have value greater than or equal to 1" : "Member must have value less than or equal to 1000");
  let start = 0;
  if (input.marker !== undefined) {
    let after: string;
    try {
      after = Buffer.from(input.marker, "base64url").toString("utf8");
    } catch {
      after = "";
    }
    if (!after) throw validation(`Invalid Marker: '${input.marker}' is not a marker this operation returned.`);
    start = items.findIndex((t) => keyOf(t) > after);
    if (start < 0) start = items.length;
  }
  const slice = items.slice(start, start + max);
  const more = start + max < items.length;
  return { items: slice, ...(more ? { marker: Buffer.from(keyOf(slice.at(-1)!), "utf8").toString("base64url") } : {}) };
}

/** Most role sessions seen recently, for authorize (the session policy is in the token, which authorize does not see). */
const SESSION_CACHE = 20_000;

export class IdentityService implements Identities, RoleCredentialSource, IamAdministration {
  private readonly users = new Map<string, UserEntry>();
  private readonly keys = new Map<string, KeyEntry>();
  private readonly roles = new Map<string, RoleEntry>();
  private readonly sessions = new Map<string, Session>();
  private readonly rootArn: string;
  private writes: Promise<unknown> = Promise.resolve();

  private constructor(private readonly opts: IdentityServiceOptions) {
    this.rootArn = `arn:aws:iam::${opts.accountId}:root`;
  }

  /** Loads users, keys, roles and policies from the store. */
  static async open(opts: IdentityServiceOptions): Promise<IdentityService> {
    const s = new IdentityService(opts);
    const all = await opts.store.loadIdentities();
    for (const u of all.users) s.users.set(lower(u.userName), { record: u, arn: s.userArn(u), policies: policyMap(all.policies, "user", u.userName), keys: new Set() });
    for (const k of all.accessKeys) {
      const user = s.users.get(lower(k.userName));
      if (!user) continue;
      s.keys.set(k.accessKeyId, { record: k, secret: opts.secrets.open(k.sealedSecret) });
      user.keys.add(k.accessKeyId);
    }
    for (const r of all.roles) s.roles.set(lower(r.roleName), { record: r, arn: s.roleArn(r), trust: parsePolicy(r.trustPolicy, "trust"), policies: policyMap(all.policies, "role", r.roleName) });
    return s;
  }

  get accountId(): string {
    return this.opts.accountId;
  }

  private userArn(u: { path: string; userName: string }): string {
    return `arn:aws:iam::${this.opts.accountId}:user${u.path}${u.userName}`;
  }

  private roleArn(r: { path: string; roleName: string }): string {
    return `arn:aws:iam::${this.opts.accountId}:role${r.path}${r.roleName}`;
  }

  /** Runs administrative changes one at a time, so checks and writes cannot interleave. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writes.then(fn, fn);
    this.writes = run.catch(() => undefined);
    return run;
  }

  // ---------- authentication ----------

  rootCaller(sourceIp: string): Caller {
    return { kind: "root", accountId: this.opts.accountId, arn: this.rootArn, principalArn: this.rootArn, userId: this.opts.accountId, accessKeyId: this.opts.root.accessKeyId, sourceIp };
  }

  async resolveKey(accessKeyId: string, sessionToken: string | undefined, sourceIp: string): Promise<ResolvedKey> {
    const invalid = () => new Unauthenticated("invalid", "The security token included in the request is invalid.");
    if (accessKeyId === this.opts.root.accessKeyId) {
      if (sessionToken !== undefined) throw invalid();
      return { secretAccessKey: this.opts.root.secretAccessKey, caller: this.rootCaller(sourceIp) };
    }
    if (accessKeyId.startsWith("ASIA")) {
      if (sessionToken === undefined) throw invalid();
      const session = this.openSession(sessionToken);
      if (!session || session.claims.k !== accessKeyId) throw invalid();
      if (session.claims.e <= this.opts.clock.now().getTime()) throw new Unauthenticated("expired", "The security token included in the request is expired");
      const role = this.roleByArn(session.claims.r);
      if (!role || role.record.roleId !== session.claims.rid) throw invalid();
      this.remember(accessKeyId, session);
      return { secretAccessKey: session.claims.s, caller: this.sessionCaller(role, session.claims, sourceIp) };
    }
    const key = this.keys.get(accessKeyId);
    if (!key || key.record.status !== "Active" || sessionToken !== undefined) throw invalid();
    const user = this.users.get(lower(key.record.userName));
    if (!user) throw invalid();
    return {
      secretAccessKey: key.secret,
      caller: { kind: "user", accountId: this.opts.accountId, arn: user.arn, principalArn: user.arn, userId: user.record.userId, accessKeyId, sourceIp },
    };
  }

  private sessionCaller(role: RoleEntry, c: SessionClaims, sourceIp: string): Caller {
    return {
      kind: "assumed-role",
      accountId: this.opts.accountId,
      arn: `arn:aws:sts::${this.opts.accountId}:assumed-role/${role.record.roleName}/${c.n}`,
      principalArn: role.arn,
      userId: `${role.record.roleId}:${c.n}`,
      accessKeyId: c.k,
      sourceIp,
      expiresAt: new Date(c.e),
      roleArn: role.arn,
      sessionName: c.n,
    };
  }

  private openSession(token: string): Session | undefined {
    let claims: SessionClaims;
    try {
      claims = JSON.parse(this.opts.sessions.open(token)) as SessionClaims;
    } catch {
      return undefined;
    }
    if (claims.v !== 1 || typeof claims.k !== "string" || typeof claims.e !== "number") return undefined;
    const cached = this.sessions.get(claims.k);
    if (cached && cached.claims.s === claims.s && cached.claims.e === claims.e) return cached;
    return { claims, ...(claims.p ? { policy: parsePolicy(claims.p, "session") } : {}) };
  }

  private remember(accessKeyId: string, session: Session): void {
    if (this.sessions.get(accessKeyId) === session) return;
    if (this.sessions.size >= SESSION_CACHE) {
      const now = this.opts.clock.now().getTime();
      for (const [k, s] of this.sessions) if (s.claims.e <= now) this.sessions.delete(k);
      while (this.sessions.size >= SESSION_CACHE) this.sessions.delete(this.sessions.keys().next().value!);
    }
    this.sessions.set(accessKeyId, session);
  }

  private roleByArn(arn: string): RoleEntry | undefined {
    const m = /^arn:aws:iam::(\d{12}):role\/(?:.*\/)?([\w+=,.@-]+)$/.exec(arn);
    if (!m || m[1] !== this.opts.accountId) return undefined;
    const role = this.roles.get(lower(m[2]!));
    return role && lower(role.arn) === lower(arn) ? role : undefined;
  }

  // ---------- authorisation ----------

  /** Condition keys every request of this caller carries. */
  private callerContext(caller: Caller, context: AuthorizationRequest["context"]): Map<string, readonly string[]> {
    const now = this.opts.clock.now();
    const principalTags: Record<string, string> = {};
    let username: string | undefined;
    if (caller.kind === "user") {
      const user = this.users.get(lower(caller.arn.slice(caller.arn.lastIndexOf("/") + 1)));
      if (user) Object.assign(principalTags, user.record.tags);
      username = user?.record.userName;
    } else if (caller.kind === "assumed-role" && caller.roleArn) {
      Object.assign(principalTags, this.roleByArn(caller.roleArn)?.record.tags ?? {});
      Object.assign(principalTags, this.sessions.get(caller.accessKeyId)?.claims.t ?? {});
    }
    const base: Record<string, string | readonly string[] | boolean | undefined> = {
      "aws:CurrentTime": now.toISOString(),
      "aws:EpochTime": String(Math.floor(now.getTime() / 1000)),
      "aws:SourceIp": caller.sourceIp,
      "aws:SecureTransport": false,
      "aws:PrincipalArn": caller.principalArn,
      "aws:PrincipalAccount": caller.accountId,
      "aws:PrincipalType": caller.kind === "user" ? "User" : caller.kind === "assumed-role" ? "AssumedRole" : "Account",
      "aws:userid": caller.userId,
      "aws:username": username,
      ...(Object.keys(principalTags).length ? { "aws:PrincipalTagKeys": Object.keys(principalTags) } : {}),
    };
    for (const [k, v] of Object.entries(principalTags)) base[`aws:PrincipalTag/${k}`] = v;
    const out = requestContext(base);
    for (const [k, v] of Object.entries(context)) {
      if (v === undefined) continue;
      out.set(k.toLowerCase(), Array.isArray(v) ? v : [String(v)]);
    }
    return out;
  }

  /** The policies that speak for a caller, or undefined when the caller no longer exists. */
  private policiesOf(caller: Caller): { identity: Policy[]; session?: Policy } | undefined {
    if (caller.kind === "user") {
      const user = this.users.get(lower(caller.arn.slice(caller.arn.lastIndexOf("/") + 1)));
      if (!user || user.arn !== caller.arn) return undefined;
      return { identity: [...user.policies.values()].map((p) => p.policy) };
    }
    if (caller.kind === "assumed-role") {
      const role = caller.roleArn ? this.roleByArn(caller.roleArn) : undefined;
      const session = this.sessions.get(caller.accessKeyId);
      if (!role || !session) return undefined;
      return { identity: [...role.policies.values()].map((p) => p.policy), ...(session.policy ? { session: session.policy } : {}) };
    }
    return undefined;
  }

  /** The decision, without throwing: for callers that need to know (AssumeRole, tests, the IAM API's simulation). */
  decide(caller: Caller, request: AuthorizationRequest): { decision: Decision; by: "identity" | "session"; resource: string } {
    if (caller.kind === "root") return { decision: "Allow", by: "identity", resource: request.resources[0] ?? "*" };
    const policies = this.policiesOf(caller);
    const resources = request.resources.length ? request.resources : ["*"];
    if (!policies) return { decision: "ImplicitDeny", by: "identity", resource: resources[0]! };
    const context = this.callerContext(caller, request.context);
    for (const resource of resources) {
      let ctx: Map<string, readonly string[]> = context;
      const tags = request.resourceTags?.[resource];
      if (tags && Object.keys(tags).length) {
        ctx = new Map(context);
        for (const [k, v] of Object.entries(tags)) ctx.set(`aws:resourcetag/${k.toLowerCase()}`, [v]);
      }
      const req: EvaluationRequest = { action: request.action, resource, context: ctx };
      const { decision, by } = evaluateWithSession(policies.identity, policies.session, req);
      if (decision !== "Allow") return { decision, by, resource };
    }
    return { decision: "Allow", by: "identity", resource: resources[0]! };
  }

  async authorize(caller: Caller, request: AuthorizationRequest): Promise<void> {
    if (caller.kind === "root") return;
    const { decision, by, resource } = this.decide(caller, request);
    if (decision === "Allow") return;
    throw new AccessDenied(deniedMessage(caller.arn, request.action, resource, decision, by));
  }

  // ---------- sessions ----------

  private issue(role: RoleEntry, name: string, seconds: number, extra: { policy?: string; sourceArn?: string; tags?: Record<string, string>; chained?: boolean }): TemporaryCredentials {
    const now = this.opts.clock.now().getTime();
    const claims: SessionClaims = {
      v: 1, k: newAccessKeyId("ASIA"), s: newSecretAccessKey(), r: role.arn, rid: role.record.roleId, n: name,
      ...(extra.policy ? { p: extra.policy } : {}),
      ...(extra.sourceArn ? { src: extra.sourceArn } : {}),
      ...(extra.tags && Object.keys(extra.tags).length ? { t: extra.tags } : {}),
      i: now, e: now + seconds * 1000,
      ...(extra.chained ? { ch: 1 as const } : {}),
    };
    return { accessKeyId: claims.k, secretAccessKey: claims.s, sessionToken: this.opts.sessions.seal(JSON.stringify(claims)), expiration: new Date(claims.e) };
  }

  async serviceCredentials(roleArn: string, sourceArn: string, sessionName: string): Promise<TemporaryCredentials> {
    const refused = () => new AccessDenied(`${LAMBDA_SERVICE_PRINCIPAL} is not authorized to perform: sts:AssumeRole on resource: ${roleArn}`);
    checkName(sessionName, "roleSessionName", 64, SESSION_NAME, 2);
    const role = this.roleByArn(roleArn);
    if (!role) throw refused();
    const req: EvaluationRequest = {
      action: "sts:AssumeRole",
      resource: role.arn,
      principal: { arns: [], service: LAMBDA_SERVICE_PRINCIPAL },
      context: requestContext({ "aws:SourceArn": sourceArn, "aws:SourceAccount": this.opts.accountId, "aws:CurrentTime": this.opts.clock.now(), "aws:PrincipalServiceName": LAMBDA_SERVICE_PRINCIPAL }),
    };
    if (evaluate([role.trust], req) !== "Allow") throw refused();
    return this.issue(role, sessionName, SERVICE_SESSION_SECONDS, { sourceArn });
  }

  async assumeRole(caller: Caller, input: AssumeRoleInput): Promise<AssumedRole> {
    checkName(input.roleArn, "roleArn", 2048, /^[\x09\x0a\x0d\x20-\x7e\u0085\u00a0-\ud7ff\ue000-\ufffd]+$/, 20);
    checkName(input.roleSessionName, "roleSessionName", 64, SESSION_NAME, 2);
    if (input.externalId !== undefined) checkName(input.externalId, "externalId", 1224, /^[\w+=,.@:/-]*$/, 2);
    const chained = caller.kind === "assumed-role";
    if (input.durationSeconds !== undefined) {
      const d = input.durationSeconds;
      if (!Number.isInteger(d) || d < MIN_SESSION_SECONDS) throw constraint(d, "durationSeconds", `Member must have value greater than or equal to ${MIN_SESSION_SECONDS}`);
      if (d > 43200) throw constraint(d, "durationSeconds", "Member must have value less than or equal to 43200");
    }
    if (input.policy !== undefined) {
      if (input.policy.length > 2048 * 4) throw constraint("(the policy)", "policy", "Member must have length less than or equal to 2048");
      parsePolicy(input.policy, "session");
      const size = policySize(input.policy);
      if (size > IAM_LIMITS.sessionPolicySize) {
        throw new IamFault("PackedPolicyTooLarge", `Packed policy consumes ${Math.ceil((size * 100) / IAM_LIMITS.sessionPolicySize)}% of allotted space, please use smaller policy for this request.`);
      }
    }
    checkTags(input.tags);

    const denied = () => new AccessDenied(`User: ${caller.arn} is not authorized to perform: sts:AssumeRole on resource: ${input.roleArn}`);
    const role = this.roleByArn(input.roleArn);
    if (!role) throw denied();

    const tags = input.tags ?? {};
    const context: Record<string, string | string[] | undefined> = {
      ...(input.externalId !== undefined ? { "sts:ExternalId": input.externalId } : {}),
      "sts:RoleSessionName": input.roleSessionName,
      ...(Object.keys(tags).length ? { "aws:TagKeys": Object.keys(tags) } : {}),
    };
    for (const [k, v] of Object.entries(tags)) context[`aws:RequestTag/${k}`] = v;
    const actions = ["sts:AssumeRole", ...(Object.keys(tags).length ? ["sts:TagSession"] : [])];

    for (const action of actions) {
      // The caller's own policies (root: always allowed).
      let identity: Decision = "Allow";
      if (caller.kind !== "root") identity = this.decide(caller, { action, resources: [role.arn], context }).decision;
      if (identity === "ExplicitDeny") throw denied();
      // The role's trust policy.
      const who: PrincipalRef = {
        accountId: caller.accountId,
        arns: caller.kind === "assumed-role" ? [caller.arn, caller.principalArn] : caller.kind === "user" ? [caller.arn] : [this.rootArn],
      };
      const ctx = this.callerContext(caller, context);
      const trust = role.trust.statements;
      const trustReq = { action, resource: role.arn, principal: who, context: ctx };
      if (evaluate([role.trust], trustReq) !== "Allow") throw denied();
      // A trust policy naming the account leaves the decision to the caller's identity policies;
      // one naming this very user, role or session is enough by itself within the account
      // (reference_policies_evaluation-logic.html, resource-based policies).
      const byName = evaluate([{ ...role.trust, statements: trust.map((st) => (st.principal ? { ...st, principal: { ...st.principal, anyone: false, accounts: new Set<string>() } } : st)) }], trustReq) === "Allow";
      if (!byName && identity !== "Allow") throw denied();
    }

    const max = chained ? Math.min(ROLE_CHAINING_MAX_SECONDS, role.record.maxSessionDuration) : role.record.maxSessionDuration;
    const seconds = input.durationSeconds ?? Math.min(3600, max);
    if (seconds > max) {
      throw validation(chained
        ? `The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.`
        : `The requested DurationSeconds exceeds the MaxSessionDuration set for this role.`);
    }
    // Session tags of a chained session carry over unless set again.
    const inherited = chained ? this.sessions.get(caller.accessKeyId)?.claims.t : undefined;
    const credentials = this.issue(role, input.roleSessionName, seconds, {
      ...(input.policy ? { policy: input.policy } : {}),
      tags: { ...(inherited ?? {}), ...tags },
      chained,
    });
    return {
      credentials,
      assumedRoleUser: {
        arn: `arn:aws:sts::${this.opts.accountId}:assumed-role/${role.record.roleName}/${input.roleSessionName}`,
        assumedRoleId: `${role.record.roleId}:${input.roleSessionName}`,
      },
    };
  }

  // ---------- users ----------

  private user(userName: string): UserEntry {
    checkName(userName, "userName", 64);
    const u = this.users.get(lower(userName));
    if (!u) throw new IamFault("NoSuchEntity", `The user with name ${userName} cannot be found.`);
    return u;
  }

  private userView(u: UserEntry): IamUser {
    return { userName: u.record.userName, userId: u.record.userId, arn: u.arn, path: u.record.path, createDate: u.record.createdAt, tags: { ...u.record.tags } };
  }

  createUser(input: { userName: string; path?: string; tags?: Record<string, string> }): Promise<IamUser> {
    return this.exclusive(async () => {
      checkName(input.userName, "userName", 64);
      const path = input.path ?? "/";
      checkPath(path);
      checkTags(input.tags);
      if (this.users.has(lower(input.userName))) throw new IamFault("EntityAlreadyExists", `User with name ${input.userName} already exists.`);
      const record: IamUserRecord = { userName: input.userName, userId: newUniqueId("AIDA"), path, createdAt: this.opts.clock.now(), tags: { ...(input.tags ?? {}) } };
      await this.opts.store.insertIamUser(record);
      const entry: UserEntry = { record, arn: this.userArn(record), policies: new Map(), keys: new Set() };
      this.users.set(lower(record.userName), entry);
      return this.userView(entry);
    });
  }

  async getUser(userName: string): Promise<IamUser> {
    return this.userView(this.user(userName));
  }

  async listUsers(input: { pathPrefix?: string; marker?: string; maxItems?: number }): Promise<IamPage<IamUser>> {
    const prefix = input.pathPrefix ?? "/";
    const all = [...this.users.values()].filter((u) => u.record.path.startsWith(prefix)).sort((a, b) => (lower(a.record.userName) < lower(b.record.userName) ? -1 : 1));
    const p = page(all, (u) => lower(u.record.userName), input);
    return { items: p.items.map((u) => this.userView(u)), ...(p.marker ? { marker: p.marker } : {}) };
  }

  deleteUser(userName: string): Promise<void> {
    return this.exclusive(async () => {
      const u = this.user(userName);
      if (u.keys.size) throw new IamFault("DeleteConflict", "Cannot delete entity, must delete access keys first.");
      if (u.policies.size) throw new IamFault("DeleteConflict", "Cannot delete entity, must delete policies first.");
      await this.opts.store.deleteIamUser(u.record.userName);
      this.users.delete(lower(u.record.userName));
    });
  }

  // ---------- access keys ----------

  createAccessKey(userName: string): Promise<IamAccessKey> {
    return this.exclusive(async () => {
      const u = this.user(userName);
      if (u.keys.size >= IAM_LIMITS.accessKeysPerUser) throw new IamFault("LimitExceeded", `Cannot exceed quota for AccessKeysPerUser: ${IAM_LIMITS.accessKeysPerUser}`);
      const secret = newSecretAccessKey();
      const record: IamAccessKeyRecord = { accessKeyId: newAccessKeyId("AKIA"), userName: u.record.userName, status: "Active", sealedSecret: this.opts.secrets.seal(secret), createdAt: this.opts.clock.now() };
      await this.opts.store.insertAccessKey(record);
      this.keys.set(record.accessKeyId, { record, secret });
      u.keys.add(record.accessKeyId);
      return { userName: record.userName, accessKeyId: record.accessKeyId, status: record.status, createDate: record.createdAt, secretAccessKey: secret };
    });
  }

  private keyOf(u: UserEntry, accessKeyId: string): KeyEntry {
    const k = u.keys.has(accessKeyId) ? this.keys.get(accessKeyId) : undefined;
    if (!k) throw new IamFault("NoSuchEntity", `The Access Key with id ${accessKeyId} cannot be found.`);
    return k;
  }

  updateAccessKey(userName: string, accessKeyId: string, status: AccessKeyStatus): Promise<void> {
    return this.exclusive(async () => {
      if (status !== "Active" && status !== "Inactive") throw constraint(String(status), "status", "Member must satisfy enum value set: [Active, Inactive]");
      const k = this.keyOf(this.user(userName), accessKeyId);
      await this.opts.store.updateAccessKeyStatus(accessKeyId, status);
      k.record = { ...k.record, status };
    });
  }

  deleteAccessKey(userName: string, accessKeyId: string): Promise<void> {
    return this.exclusive(async () => {
      const u = this.user(userName);
      this.keyOf(u, accessKeyId);
      await this.opts.store.deleteAccessKey(accessKeyId);
      this.keys.delete(accessKeyId);
      u.keys.delete(accessKeyId);
    });
  }

  async listAccessKeys(userName: string): Promise<IamAccessKey[]> {
    const u = this.user(userName);
    return [...u.keys].map((id) => this.keys.get(id)!.record).sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .map((r) => ({ userName: r.userName, accessKeyId: r.accessKeyId, status: r.status, createDate: r.createdAt }));
  }

  async userOfAccessKey(accessKeyId: string): Promise<string | undefined> {
    return this.keys.get(accessKeyId)?.record.userName;
  }

  // ---------- inline policies ----------

  private checkPolicyName(policyName: string): void {
    checkName(policyName, "policyName", 128);
  }

  private putPolicy(kind: "user" | "role", owner: { record: { path: string }; policies: UserEntry["policies"] }, ownerName: string, policyName: string, document: string, limit: number): Promise<void> {
    this.checkPolicyName(policyName);
    if (typeof document !== "string" || !document.length) throw constraint("", "policyDocument", "Member must have length greater than or equal to 1");
    const policy = parsePolicy(document, "identity");
    let total = policySize(document);
    for (const [name, p] of owner.policies) if (name !== lower(policyName)) total += policySize(p.document);
    if (total > limit) throw new IamFault("LimitExceeded", `Maximum policy size of ${limit} bytes exceeded for ${kind} ${ownerName}`);
    return (async () => {
      const existing = owner.policies.get(lower(policyName));
      const name = existing?.name ?? policyName;
      await this.opts.store.putIamPolicy({ ownerKind: kind, ownerName, policyName: name, document });
      owner.policies.set(lower(policyName), { name, document, policy });
    })();
  }

  putUserPolicy(userName: string, policyName: string, document: string): Promise<void> {
    return this.exclusive(async () => {
      const u = this.user(userName);
      await this.putPolicy("user", u, u.record.userName, policyName, document, IAM_LIMITS.userPolicySize);
    });
  }

  async getUserPolicy(userName: string, policyName: string): Promise<string> {
    const u = this.user(userName);
    this.checkPolicyName(policyName);
    const p = u.policies.get(lower(policyName));
    if (!p) throw new IamFault("NoSuchEntity", `The user policy with name ${policyName} cannot be found.`);
    return p.document;
  }

  deleteUserPolicy(userName: string, policyName: string): Promise<void> {
    return this.exclusive(async () => {
      const u = this.user(userName);
      this.checkPolicyName(policyName);
      const p = u.policies.get(lower(policyName));
      if (!p) throw new IamFault("NoSuchEntity", `The user policy with name ${policyName} cannot be found.`);
      await this.opts.store.deleteIamPolicy("user", u.record.userName, p.name);
      u.policies.delete(lower(policyName));
    });
  }

  async listUserPolicies(userName: string): Promise<string[]> {
    return [...this.user(userName).policies.values()].map((p) => p.name).sort();
  }

  // ---------- roles ----------

  private role(roleName: string): RoleEntry {
    checkName(roleName, "roleName", 64);
    const r = this.roles.get(lower(roleName));
    if (!r) throw new IamFault("NoSuchEntity", `The role with name ${roleName} cannot be found.`);
    return r;
  }

  private roleView(r: RoleEntry): IamRole {
    return {
      roleName: r.record.roleName, roleId: r.record.roleId, arn: r.arn, path: r.record.path, createDate: r.record.createdAt,
      assumeRolePolicyDocument: r.record.trustPolicy, ...(r.record.description !== undefined ? { description: r.record.description } : {}),
      maxSessionDuration: r.record.maxSessionDuration, tags: { ...r.record.tags },
    };
  }

  private parseTrust(document: string): Policy {
    if (typeof document !== "string" || !document.length) throw constraint("", "assumeRolePolicyDocument", "Member must have length greater than or equal to 1");
    const trust = parsePolicy(document, "trust");
    if (policySize(document) > IAM_LIMITS.trustPolicySize) throw new IamFault("LimitExceeded", `Cannot exceed quota for ACLSizePerRole: ${IAM_LIMITS.trustPolicySize}`);
    return trust;
  }

  createRole(input: { roleName: string; assumeRolePolicyDocument: string; path?: string; description?: string; maxSessionDuration?: number; tags?: Record<string, string> }): Promise<IamRole> {
    return this.exclusive(async () => {
      checkName(input.roleName, "roleName", 64);
      const path = input.path ?? "/";
      checkPath(path);
      if (input.description !== undefined && input.description.length > 1000) throw constraint(input.description, "description", "Member must have length less than or equal to 1000");
      const max = input.maxSessionDuration ?? 3600;
      if (!Number.isInteger(max) || max < 3600) throw constraint(max, "maxSessionDuration", "Member must have value greater than or equal to 3600");
      if (max > 43200) throw constraint(max, "maxSessionDuration", "Member must have value less than or equal to 43200");
      checkTags(input.tags);
      const trust = this.parseTrust(input.assumeRolePolicyDocument);
      if (this.roles.has(lower(input.roleName))) throw new IamFault("EntityAlreadyExists", `Role with name ${input.roleName} already exists.`);
      const record: IamRoleRecord = {
        roleName: input.roleName, roleId: newUniqueId("AROA"), path, createdAt: this.opts.clock.now(), trustPolicy: input.assumeRolePolicyDocument,
        ...(input.description !== undefined ? { description: input.description } : {}), maxSessionDuration: max, tags: { ...(input.tags ?? {}) },
      };
      await this.opts.store.insertIamRole(record);
      const entry: RoleEntry = { record, arn: this.roleArn(record), trust, policies: new Map() };
      this.roles.set(lower(record.roleName), entry);
      return this.roleView(entry);
    });
  }

  async getRole(roleName: string): Promise<IamRole> {
    return this.roleView(this.role(roleName));
  }

  async listRoles(input: { pathPrefix?: string; marker?: string; maxItems?: number }): Promise<IamPage<IamRole>> {
    const prefix = input.pathPrefix ?? "/";
    const all = [...this.roles.values()].filter((r) => r.record.path.startsWith(prefix)).sort((a, b) => (lower(a.record.roleName) < lower(b.record.roleName) ? -1 : 1));
    const p = page(all, (r) => lower(r.record.roleName), input);
    return { items: p.items.map((r) => this.roleView(r)), ...(p.marker ? { marker: p.marker } : {}) };
  }

  deleteRole(roleName: string): Promise<void> {
    return this.exclusive(async () => {
      const r = this.role(roleName);
      if (r.policies.size) throw new IamFault("DeleteConflict", "Cannot delete entity, must delete policies first.");
      await this.opts.store.deleteIamRole(r.record.roleName);
      this.roles.delete(lower(r.record.roleName));
    });
  }

  updateAssumeRolePolicy(roleName: string, document: string): Promise<void> {
    return this.exclusive(async () => {
      const r = this.role(roleName);
      const trust = this.parseTrust(document);
      await this.opts.store.updateIamRoleTrust(r.record.roleName, document);
      r.record = { ...r.record, trustPolicy: document };
      r.trust = trust;
    });
  }

  putRolePolicy(roleName: string, policyName: string, document: string): Promise<void> {
    return this.exclusive(async () => {
      const r = this.role(roleName);
      await this.putPolicy("role", r, r.record.roleName, policyName, document, IAM_LIMITS.rolePolicySize);
    });
  }

  async getRolePolicy(roleName: string, policyName: string): Promise<string> {
    const r = this.role(roleName);
    this.checkPolicyName(policyName);
    const p = r.policies.get(lower(policyName));
    if (!p) throw new IamFault("NoSuchEntity", `The role policy with name ${policyName} cannot be found.`);
    return p.document;
  }

  deleteRolePolicy(roleName: string, policyName: string): Promise<void> {
    return this.exclusive(async () => {
      const r = this.role(roleName);
      this.checkPolicyName(policyName);
      const p = r.policies.get(lower(policyName));
      if (!p) throw new IamFault("NoSuchEntity", `The role policy with name ${policyName} cannot be found.`);
      await this.opts.store.deleteIamPolicy("role", r.record.roleName, p.name);
      r.policies.delete(lower(policyName));
    });
  }

  async listRolePolicies(roleName: string): Promise<string[]> {
    return [...this.role(roleName).policies.values()].map((p) => p.name).sort();
  }
}

/** AWS's AccessDenied message for an identity-based (or session) policy refusal. */
export function deniedMessage(callerArn: string, action: string, resource: string, decision: Decision, by: "identity" | "session"): string {
  const kind = by === "session" ? "a session policy" : "an identity-based policy";
  return decision === "ExplicitDeny"
    ? `User: ${callerArn} is not authorized to perform: ${action} on resource: ${resource} with an explicit deny in ${kind}`
    : `User: ${callerArn} is not authorized to perform: ${action} on resource: ${resource} because no ${by === "session" ? "session" : "identity-based"} policy allows the ${action} action`;
}
