// The IAM policy language on its own: parsing and validation of documents, and
// the evaluation rules that are easy to get wrong (wildcards, NotAction,
// conditions with IfExists and set operators on empty sets, explicit deny,
// IP ranges, dates, policy variables, session-policy intersection).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import {
  arnMatches, evaluate, evaluateWithSession, IamFault, parseCidr, cidrContains, parseIp, parsePolicy, policySize, requestContext,
  type Decision, type EvaluationRequest, type PolicyKind, type PrincipalRef,
} from "../../src/core/index.js";

const ACCT = "123456789012";
const IMAGE = `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:app`;

function doc(statements: object[] | object, version: string | null = "2012-10-17"): string {
  return JSON.stringify({ ...(version ? { Version: version } : {}), Statement: statements });
}

function decide(statements: object[] | object, req: Partial<EvaluationRequest> & { ctx?: Record<string, string | string[] | boolean | undefined> }, kind: PolicyKind = "identity", version?: string): Decision {
  const policy = parsePolicy(doc(statements, version ?? "2012-10-17"), kind);
  return evaluate([policy], {
    action: req.action ?? "lambda:RunMicrovm",
    resource: req.resource ?? IMAGE,
    context: req.context ?? requestContext(req.ctx ?? {}),
    ...(req.principal ? { principal: req.principal } : {}),
  });
}

function malformed(text: string, kind: PolicyKind, message: RegExp): void {
  assert.throws(() => parsePolicy(text, kind), (err: unknown) => {
    assert.ok(err instanceof IamFault, String(err));
    assert.equal(err.code, "MalformedPolicyDocument");
    assert.match(err.message, message);
    return true;
  });
}

const allow = (extra: object = {}) => ({ Effect: "Allow", Action: "lambda:RunMicrovm", Resource: IMAGE, ...extra });

describe("parsing and validation", () => {
  test("a statement may be an object or a list; Version 2012-10-17, 2008-10-17 or none", () => {
    assert.equal(parsePolicy(doc(allow()), "identity").statements.length, 1);
    assert.equal(parsePolicy(doc([allow(), allow({ Effect: "Deny" })]), "identity").statements.length, 2);
    assert.equal(parsePolicy(doc(allow(), "2008-10-17"), "identity").version, "2008-10-17");
    assert.equal(parsePolicy(doc(allow(), null), "identity").version, "2008-10-17", "no Version is the old one");
  });

  test("what IAM refuses is MalformedPolicyDocument naming the fault", () => {
    malformed("{not json", "identity", /^Syntax errors in policy\./);
    malformed(doc(allow(), "2020-01-01"), "identity", /Version must be "2012-10-17"/);
    malformed(doc(allow({ Principal: { AWS: ACCT } })), "identity", /^Policy document should not specify a principal\.$/);
    malformed(doc(allow({ Principal: { AWS: ACCT } })), "session", /should not specify a principal/);
    malformed(doc({ Effect: "Allow", Action: "sts:AssumeRole" }), "trust", /^Missing required field Principal$/);
    malformed(doc({ Effect: "Allow", Action: "sts:AssumeRole", Principal: { AWS: ACCT }, Resource: "*" }), "trust", /^Has prohibited field Resource$/);
    malformed(doc({ Effect: "Allow", Resource: "*" }), "identity", /^Policy statement must contain actions\.$/);
    malformed(doc({ Effect: "Allow", Action: "lambda:*" }), "identity", /^Policy statement must contain resources\.$/);
    malformed(doc({ Effect: "Permit", Action: "lambda:*", Resource: "*" }), "identity", /Invalid effect: Permit/);
    malformed(doc({ Action: "lambda:*", Resource: "*" }), "identity", /Missing required field Effect/);
    malformed(doc(allow({ Action: "RunMicrovm" })), "identity", /must be prefaced by a vendor/);
    malformed(doc(allow({ Resource: "microvm-image:app" })), "identity", /Resource microvm-image:app must be in ARN format or "\*"/);
    malformed(doc(allow({ Condition: { StringEqualz: { "aws:username": "a" } } })), "identity", /Invalid Condition type : StringEqualz/);
    malformed(doc(allow({ Condition: { DateLessThan: { "aws:CurrentTime": "tomorrow" } } })), "identity", /'tomorrow' is not a valid value for DateLessThan/);
    malformed(doc(allow({ Condition: { IpAddress: { "aws:SourceIp": "10.0.0.0/33" } } })), "identity", /IPv4 or IPv6/);
    malformed(doc(allow({ Condition: { Bool: { "aws:SecureTransport": "yes" } } })), "identity", /"true" or "false"/);
    malformed(doc(allow({ Foo: 1 })), "identity", /Unknown field Foo/);
    malformed(doc([allow({ Sid: "A" }), allow({ Sid: "A" })]), "identity", /must be unique/);
    malformed(doc(allow({ Sid: "has space" })), "identity", /alpha-numeric/);
    malformed(doc(allow({ Action: [] })), "identity", /empty list/);
    malformed(doc([]), "identity", /Statement must not be empty/);
    malformed(JSON.stringify({ Version: "2012-10-17" }), "identity", /no Statement/);
    malformed(doc({ Effect: "Allow", Action: "sts:AssumeRole", Principal: { AWS: "bob" } }), "trust", /Invalid principal in policy: "AWS":"bob"/);
  });

  test("size is counted without whitespace outside strings", () => {
    const compact = doc(allow());
    const spaced = JSON.stringify(JSON.parse(compact), null, 8);
    assert.equal(policySize(spaced), compact.length);
    assert.equal(policySize('{"a": "x y"}'), '{"a":"x y"}'.length);
  });
});

describe("actions", () => {
  test("service:action matches case-insensitively, with * and ? wildcards", () => {
    assert.equal(decide(allow({ Action: "LAMBDA:runmicrovm" }), {}), "Allow");
    assert.equal(decide(allow({ Action: "lambda:*" }), { action: "lambda:GetMicrovmImage" }), "Allow");
    assert.equal(decide(allow({ Action: "lambda:Get*" }), { action: "lambda:GetMicrovmImage" }), "Allow");
    assert.equal(decide(allow({ Action: "lambda:Get*" }), { action: "lambda:RunMicrovm" }), "ImplicitDeny");
    assert.equal(decide(allow({ Action: "lambda:?unMicrovm" }), {}), "Allow");
    assert.equal(decide(allow({ Action: "lambda:?Microvm" }), {}), "ImplicitDeny");
    assert.equal(decide(allow({ Action: "*" }), { action: "iam:CreateUser" }), "Allow");
    assert.equal(decide(allow({ Action: "logs:*" }), {}), "ImplicitDeny");
  });

  test("NotAction allows everything but what it lists", () => {
    const st = { Effect: "Allow", NotAction: ["iam:*", "sts:*"], Resource: "*" };
    assert.equal(decide(st, { action: "lambda:RunMicrovm" }), "Allow");
    assert.equal(decide(st, { action: "iam:CreateUser", resource: "*" }), "ImplicitDeny");
    // A Deny with NotAction denies everything else.
    const deny = [{ Effect: "Allow", Action: "*", Resource: "*" }, { Effect: "Deny", NotAction: "lambda:Get*", Resource: "*" }];
    assert.equal(decide(deny, { action: "lambda:GetMicrovm" }), "Allow");
    assert.equal(decide(deny, { action: "lambda:RunMicrovm" }), "ExplicitDeny");
  });
});

describe("resources", () => {
  test("ARN wildcards stay within their colon-separated part, except in the last", () => {
    assert.ok(arnMatches("*", IMAGE));
    assert.ok(arnMatches(`arn:aws:lambda:*:${ACCT}:microvm-image:*`, IMAGE));
    assert.ok(arnMatches("arn:aws:lambda:*:*:*", IMAGE), "the last part takes the rest of the ARN");
    assert.ok(!arnMatches(`arn:aws:lambda:*:${ACCT}:microvm:*`, IMAGE));
    assert.ok(!arnMatches("arn:aws:lambda:us-*-1:*", "arn:aws:lambda:us-east:x-1:y"), "a wildcard does not cross a colon in the region part");
    assert.ok(arnMatches(`arn:aws:lambda:us-east-1:${ACCT}:microvm-image:ap?`, IMAGE));
    assert.ok(!arnMatches(`arn:aws:lambda:us-east-1:${ACCT}:microvm-image:App`, IMAGE), "resource ARNs are case-sensitive");
    assert.ok(arnMatches("arn:aws:iam::*:role/*", `arn:aws:iam::${ACCT}:role/path/R`));
  });

  test("NotResource", () => {
    const st = { Effect: "Deny", Action: "*", NotResource: IMAGE };
    const policy = [{ Effect: "Allow", Action: "*", Resource: "*" }, st];
    assert.equal(decide(policy, {}), "Allow");
    assert.equal(decide(policy, { resource: `${IMAGE}2` }), "ExplicitDeny");
  });

  test("policy variables in Resource, only from version 2012-10-17, with defaults", () => {
    const st = allow({ Action: "iam:*", Resource: `arn:aws:iam::${ACCT}:user/\${aws:username}` });
    const ctx = { "aws:username": "alice" };
    assert.equal(decide(st, { action: "iam:CreateAccessKey", resource: `arn:aws:iam::${ACCT}:user/alice`, ctx }), "Allow");
    assert.equal(decide(st, { action: "iam:CreateAccessKey", resource: `arn:aws:iam::${ACCT}:user/bob`, ctx }), "ImplicitDeny");
    assert.equal(decide(st, { action: "iam:CreateAccessKey", resource: `arn:aws:iam::${ACCT}:user/alice`, ctx: {} }), "ImplicitDeny", "a missing variable matches nothing");
    assert.equal(decide(st, { action: "iam:CreateAccessKey", resource: `arn:aws:iam::${ACCT}:user/\${aws:username}`, ctx }, "identity", "2008-10-17"), "Allow", "2008-10-17 takes ${...} literally");
    const withDefault = allow({ Action: "iam:*", Resource: `arn:aws:iam::${ACCT}:user/\${aws:username, 'nobody'}` });
    assert.equal(decide(withDefault, { action: "iam:GetUser", resource: `arn:aws:iam::${ACCT}:user/nobody`, ctx: {} }), "Allow");
    // ${*} is a literal star, not a wildcard.
    const literal = allow({ Resource: `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:a\${*}` });
    assert.equal(decide(literal, { resource: `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:a*` }), "Allow");
    assert.equal(decide(literal, { resource: `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:ab` }), "ImplicitDeny");
  });
});

describe("conditions", () => {
  test("StringEquals is case-sensitive, keys are not; values are OR'd, keys and operators AND'd", () => {
    const st = allow({ Condition: { StringEquals: { "AWS:ResourceTag/Team": ["blue", "green"], "aws:PrincipalAccount": ACCT } } });
    assert.equal(decide(st, { ctx: { "aws:resourcetag/team": "green", "aws:PrincipalAccount": ACCT } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/Team": "Green", "aws:PrincipalAccount": ACCT } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/Team": "blue" } }), "ImplicitDeny", "every key must hold");
    const ic = allow({ Condition: { StringEqualsIgnoreCase: { "aws:ResourceTag/team": "BLUE" } } });
    assert.equal(decide(ic, { ctx: { "aws:ResourceTag/team": "blue" } }), "Allow");
  });

  test("StringLike wildcards; StringNotLike; a missing key fails positive operators and passes negated ones", () => {
    const like = allow({ Condition: { StringLike: { "aws:userid": "AIDA*" } } });
    assert.equal(decide(like, { ctx: { "aws:userid": "AIDAEXAMPLE" } }), "Allow");
    assert.equal(decide(like, { ctx: { "aws:userid": "AROAEXAMPLE:s" } }), "ImplicitDeny");
    assert.equal(decide(like, { ctx: {} }), "ImplicitDeny");
    const notLike = allow({ Condition: { StringNotLike: { "aws:userid": "AROA*" } } });
    assert.equal(decide(notLike, { ctx: { "aws:userid": "AIDAX" } }), "Allow");
    assert.equal(decide(notLike, { ctx: { "aws:userid": "AROAX:s" } }), "ImplicitDeny");
    assert.equal(decide(notLike, { ctx: {} }), "Allow");
    const notEquals = allow({ Condition: { StringNotEquals: { "aws:ResourceTag/team": ["a", "b"] } } });
    assert.equal(decide(notEquals, { ctx: { "aws:ResourceTag/team": "c" } }), "Allow");
    assert.equal(decide(notEquals, { ctx: { "aws:ResourceTag/team": "b" } }), "ImplicitDeny", "not equal to ANY of the values");
  });

  test("...IfExists: true when the key is missing, evaluated when present", () => {
    const st = allow({ Condition: { StringEqualsIfExists: { "aws:ResourceTag/team": "blue" } } });
    assert.equal(decide(st, { ctx: {} }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/team": "blue" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/team": "red" } }), "ImplicitDeny");
  });

  test("ForAllValues is true on an empty or missing set; ForAnyValue is false there", () => {
    const all = allow({ Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["team", "env"] } } });
    assert.equal(decide(all, { ctx: { "aws:TagKeys": ["team"] } }), "Allow");
    assert.equal(decide(all, { ctx: { "aws:TagKeys": ["team", "owner"] } }), "ImplicitDeny");
    assert.equal(decide(all, { ctx: { "aws:TagKeys": [] } }), "Allow");
    assert.equal(decide(all, { ctx: {} }), "Allow");
    const any = allow({ Condition: { "ForAnyValue:StringEquals": { "aws:TagKeys": ["team"] } } });
    assert.equal(decide(any, { ctx: { "aws:TagKeys": ["env", "team"] } }), "Allow");
    assert.equal(decide(any, { ctx: { "aws:TagKeys": ["env"] } }), "ImplicitDeny");
    assert.equal(decide(any, { ctx: { "aws:TagKeys": [] } }), "ImplicitDeny");
    assert.equal(decide(any, { ctx: {} }), "ImplicitDeny");
    // The usual guard: ForAllValues plus Null false, so an empty request does not slip through.
    const guarded = allow({ Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["team"] }, Null: { "aws:TagKeys": "false" } } });
    assert.equal(decide(guarded, { ctx: {} }), "ImplicitDeny");
    assert.equal(decide(guarded, { ctx: { "aws:TagKeys": ["team"] } }), "Allow");
    const forAllNot = allow({ Condition: { "ForAllValues:StringNotEquals": { "aws:TagKeys": ["secret"] } } });
    assert.equal(decide(forAllNot, { ctx: { "aws:TagKeys": ["a", "b"] } }), "Allow");
    assert.equal(decide(forAllNot, { ctx: { "aws:TagKeys": ["a", "secret"] } }), "ImplicitDeny");
  });

  test("Null", () => {
    const absent = allow({ Condition: { Null: { "aws:ResourceTag/team": "true" } } });
    assert.equal(decide(absent, { ctx: {} }), "Allow");
    assert.equal(decide(absent, { ctx: { "aws:ResourceTag/team": "x" } }), "ImplicitDeny");
    const present = allow({ Condition: { Null: { "aws:ResourceTag/team": false } } });
    assert.equal(decide(present, { ctx: { "aws:ResourceTag/team": "x" } }), "Allow");
  });

  test("Bool, Numeric and the numbers and booleans JSON allows as values", () => {
    const b = allow({ Condition: { Bool: { "aws:SecureTransport": true } } });
    assert.equal(decide(b, { ctx: { "aws:SecureTransport": true } }), "Allow");
    assert.equal(decide(b, { ctx: { "aws:SecureTransport": false } }), "ImplicitDeny");
    const n = allow({ Condition: { NumericLessThanEquals: { "lambda:MemoryMiB": 2048 } } });
    assert.equal(decide(n, { ctx: { "lambda:MemoryMiB": "2048" } }), "Allow");
    assert.equal(decide(n, { ctx: { "lambda:MemoryMiB": "4096" } }), "ImplicitDeny");
    assert.equal(decide(n, { ctx: { "lambda:MemoryMiB": "lots" } }), "ImplicitDeny");
    const ne = allow({ Condition: { NumericNotEquals: { "x:n": ["1", "2"] } } });
    assert.equal(decide(ne, { ctx: { "x:n": "3" } }), "Allow");
    assert.equal(decide(ne, { ctx: { "x:n": "2.0" } }), "ImplicitDeny");
  });

  test("dates: ISO 8601 or epoch seconds on either side", () => {
    const st = allow({ Condition: { DateLessThan: { "aws:CurrentTime": "2026-06-01T00:00:00Z" }, DateGreaterThanEquals: { "aws:CurrentTime": "2026-01-01" } } });
    assert.equal(decide(st, { ctx: { "aws:CurrentTime": "2026-03-01T12:00:00Z" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:CurrentTime": "2026-06-01T00:00:00Z" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:CurrentTime": "2025-12-31T23:59:59Z" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:CurrentTime": "2026-01-01T00:00:00Z" } }), "Allow");
    const epoch = allow({ Condition: { DateGreaterThan: { "aws:EpochTime": "1767225600" } } });
    assert.equal(decide(epoch, { ctx: { "aws:EpochTime": "1767225601" } }), "Allow");
    assert.equal(decide(epoch, { ctx: { "aws:EpochTime": "2026-01-01T00:00:00Z" } }), "ImplicitDeny");
  });

  test("IpAddress and NotIpAddress with IPv4 and IPv6 CIDRs", () => {
    const st = allow({ Condition: { IpAddress: { "aws:SourceIp": ["10.1.0.0/16", "2001:db8::/32", "192.168.1.7"] } } });
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "10.1.200.3" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "10.2.0.1" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "2001:db8:ffff::1" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "2001:db9::1" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "192.168.1.7" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "192.168.1.8" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "::ffff:10.1.0.9" } }), "Allow", "IPv4-mapped IPv6 is the IPv4 address");
    assert.equal(decide(st, { ctx: { "aws:SourceIp": "not an ip" } }), "ImplicitDeny");
    const not = allow({ Condition: { NotIpAddress: { "aws:SourceIp": "127.0.0.0/8" } } });
    assert.equal(decide(not, { ctx: { "aws:SourceIp": "127.0.0.1" } }), "ImplicitDeny");
    assert.equal(decide(not, { ctx: { "aws:SourceIp": "10.0.0.1" } }), "Allow");
    const all = allow({ Condition: { IpAddress: { "aws:SourceIp": "0.0.0.0/0" } } });
    assert.equal(decide(all, { ctx: { "aws:SourceIp": "203.0.113.9" } }), "Allow");
  });

  test("ArnLike and ArnNotLike; aws:PrincipalArn", () => {
    const st = allow({ Condition: { ArnLike: { "aws:PrincipalArn": `arn:aws:iam::${ACCT}:role/ci-*` } } });
    assert.equal(decide(st, { ctx: { "aws:PrincipalArn": `arn:aws:iam::${ACCT}:role/ci-deploy` } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:PrincipalArn": `arn:aws:iam::${ACCT}:user/ci-deploy` } }), "ImplicitDeny");
    const not = allow({ Condition: { ArnNotLike: { "aws:SourceArn": `arn:aws:lambda:*:${ACCT}:microvm:*` } } });
    assert.equal(decide(not, { ctx: { "aws:SourceArn": `arn:aws:lambda:us-east-1:${ACCT}:microvm:microvm-0123` } }), "ImplicitDeny");
    assert.equal(decide(not, { ctx: {} }), "Allow");
  });

  test("policy variables in condition values", () => {
    const st = allow({ Condition: { StringEquals: { "aws:ResourceTag/owner": "${aws:username}" } } });
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/owner": "alice", "aws:username": "alice" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/owner": "alice", "aws:username": "bob" } }), "ImplicitDeny");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/owner": "alice" } }), "ImplicitDeny");
  });
});

describe("evaluation", () => {
  test("nothing is allowed by default; an explicit deny wins over any allow", () => {
    assert.equal(decide(allow(), { action: "lambda:GetMicrovm" }), "ImplicitDeny");
    const st = [allow({ Action: "lambda:*", Resource: "*" }), { Effect: "Deny", Action: "lambda:RunMicrovm", Resource: "*", Condition: { StringEquals: { "aws:ResourceTag/env": "prod" } } }];
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/env": "dev" } }), "Allow");
    assert.equal(decide(st, { ctx: { "aws:ResourceTag/env": "prod" } }), "ExplicitDeny");
    // Across policies too.
    const a = parsePolicy(doc(allow()), "identity");
    const d = parsePolicy(doc({ Effect: "Deny", Action: "*", Resource: "*" }), "identity");
    assert.equal(evaluate([a, d], { action: "lambda:RunMicrovm", resource: IMAGE, context: requestContext({}) }), "ExplicitDeny");
  });

  test("a session policy intersects: both must allow, and either's deny wins", () => {
    const role = [parsePolicy(doc({ Effect: "Allow", Action: "lambda:*", Resource: "*" }), "identity")];
    const session = parsePolicy(doc(allow({ Action: "lambda:Get*" })), "session");
    const req = (action: string) => ({ action, resource: IMAGE, context: requestContext({}) });
    assert.deepEqual(evaluateWithSession(role, session, req("lambda:GetMicrovmImage")), { decision: "Allow", by: "session" });
    assert.deepEqual(evaluateWithSession(role, session, req("lambda:RunMicrovm")), { decision: "ImplicitDeny", by: "session" });
    assert.deepEqual(evaluateWithSession(role, undefined, req("lambda:RunMicrovm")), { decision: "Allow", by: "identity" });
    const broad = parsePolicy(doc({ Effect: "Allow", Action: "*", Resource: "*" }), "session");
    assert.deepEqual(evaluateWithSession(role, broad, req("iam:CreateUser")), { decision: "ImplicitDeny", by: "identity" }, "a session policy never grants more than the role");
    const denying = parsePolicy(doc([{ Effect: "Allow", Action: "*", Resource: "*" }, { Effect: "Deny", Action: "lambda:Run*", Resource: "*" }]), "session");
    assert.deepEqual(evaluateWithSession(role, denying, req("lambda:RunMicrovm")), { decision: "ExplicitDeny", by: "session" });
  });

  test("trust policies: AWS principals by account, root ARN, user or role ARN; service principals; conditions", () => {
    const trust = (principal: unknown, extra: object = {}) => ({ Effect: "Allow", Action: "sts:AssumeRole", Principal: principal, ...extra });
    const user: PrincipalRef = { accountId: ACCT, arns: [`arn:aws:iam::${ACCT}:user/alice`] };
    const other: PrincipalRef = { accountId: "210987654321", arns: [`arn:aws:iam::210987654321:user/alice`] };
    const lambda: PrincipalRef = { arns: [], service: "lambda.amazonaws.com" };
    const t = (principal: unknown, who: PrincipalRef, ctx: Record<string, string> = {}, extra: object = {}) =>
      decide(trust(principal, extra), { action: "sts:AssumeRole", resource: `arn:aws:iam::${ACCT}:role/R`, principal: who, ctx }, "trust");
    assert.equal(t({ AWS: ACCT }, user), "Allow");
    assert.equal(t({ AWS: `arn:aws:iam::${ACCT}:root` }, user), "Allow");
    assert.equal(t({ AWS: ACCT }, other), "ImplicitDeny");
    assert.equal(t({ AWS: `arn:aws:iam::${ACCT}:user/alice` }, user), "Allow");
    assert.equal(t({ AWS: [`arn:aws:iam::${ACCT}:user/bob`] }, user), "ImplicitDeny");
    assert.equal(t("*", other), "Allow");
    assert.equal(t({ Service: "lambda.amazonaws.com" }, lambda), "Allow");
    assert.equal(t({ Service: "lambda.amazonaws.com" }, user), "ImplicitDeny");
    assert.equal(t({ AWS: ACCT }, lambda), "ImplicitDeny");
    const ext = { Condition: { StringEquals: { "sts:ExternalId": "s3cret" } } };
    assert.equal(t({ AWS: ACCT }, user, { "sts:ExternalId": "s3cret" }, ext), "Allow");
    assert.equal(t({ AWS: ACCT }, user, { "sts:ExternalId": "guess" }, ext), "ImplicitDeny");
    assert.equal(t({ AWS: ACCT }, user, {}, ext), "ImplicitDeny");
    const src = { Condition: { ArnLike: { "aws:SourceArn": `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:app*` }, StringEquals: { "aws:SourceAccount": ACCT } } };
    assert.equal(t({ Service: "lambda.amazonaws.com" }, lambda, { "aws:SourceArn": IMAGE, "aws:SourceAccount": ACCT }, src), "Allow");
    assert.equal(t({ Service: "lambda.amazonaws.com" }, lambda, { "aws:SourceArn": IMAGE.replace(":app", ":other"), "aws:SourceAccount": ACCT }, src), "ImplicitDeny");
    // NotPrincipal with Deny: everyone but the named principal is denied.
    const np = [trust({ AWS: ACCT }), { Effect: "Deny", Action: "sts:AssumeRole", NotPrincipal: { AWS: `arn:aws:iam::${ACCT}:user/alice` } }];
    assert.equal(decide(np, { action: "sts:AssumeRole", resource: "*", principal: user }, "trust"), "Allow");
    assert.equal(decide(np, { action: "sts:AssumeRole", resource: "*", principal: { accountId: ACCT, arns: [`arn:aws:iam::${ACCT}:user/bob`] } }, "trust"), "ExplicitDeny");
  });
});

describe("properties", () => {
  const segment = fc.stringMatching(/^[a-z0-9-]{1,12}$/);
  const arn = fc.tuple(segment, segment, fc.stringMatching(/^[0-9]{12}$/), segment, segment).map(([svc, region, acct, type, name]) => `arn:aws:${svc}:${region}:${acct}:${type}:${name}`);

  test("an ARN matches itself, `*`, and itself with any one part replaced by `*`", () => {
    fc.assert(fc.property(arn, fc.integer({ min: 1, max: 5 }), (a, i) => {
      const parts = a.split(":");
      parts[i] = "*";
      return arnMatches(a, a) && arnMatches("*", a) && arnMatches(parts.join(":"), a);
    }));
  });

  test("adding a Deny statement never turns a refusal into an allow, and a matching Deny always wins", () => {
    const actions = fc.constantFrom("lambda:RunMicrovm", "lambda:GetMicrovm", "lambda:*", "lambda:Get*", "iam:*", "*");
    fc.assert(fc.property(fc.array(fc.record({ effect: fc.constantFrom("Allow", "Deny"), action: actions }), { minLength: 1, maxLength: 6 }), actions, (sts, denyAction) => {
      const statements = sts.map((s) => ({ Effect: s.effect, Action: s.action, Resource: "*" }));
      const before = decide(statements, { action: "lambda:RunMicrovm" });
      const after = decide([...statements, { Effect: "Deny", Action: denyAction, Resource: "*" }], { action: "lambda:RunMicrovm" });
      const denyMatches = decide({ Effect: "Allow", Action: denyAction, Resource: "*" }, { action: "lambda:RunMicrovm" }) === "Allow";
      if (denyMatches) return after === "ExplicitDeny";
      return after === before;
    }));
  });

  test("IPv4 CIDR containment agrees with arithmetic on the address", () => {
    fc.assert(fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (a, b, bits) => {
      const cidr = parseCidr(`${a}/${bits}`)!;
      const n = (ip: string) => ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
      const same = Math.floor(n(a) / 2 ** (32 - bits)) === Math.floor(n(b) / 2 ** (32 - bits));
      return cidrContains(cidr, parseIp(b)!) === same;
    }));
  });

  test("IPv6 addresses parse to the same number however they are written", () => {
    fc.assert(fc.property(fc.ipV6(), (a) => {
      const v = parseIp(a);
      if (v === undefined) return false;
      const full = v.toString(16).padStart(32, "0").match(/.{4}/g)!.join(":");
      return parseIp(full) === v && cidrContains(parseCidr(`${a}/128`)!, v);
    }));
  });
});
