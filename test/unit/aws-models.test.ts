// The botocore model generated from @aws-sdk/client-lambda-microvms says what
// the SDK's schemas say: every command an operation with the schema's HTTP
// binding, every member where the schema puts it, every error with its
// status; and its endpoint rule set, evaluated by botocore, picks the same
// endpoint as the SDK's own resolver for every region and FIPS/dual-stack
// setting (and the custom endpoint when one is given).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as sdk from "@aws-sdk/client-lambda-microvms";
import { generateBotocoreModel } from "../../src/aws-models/generate.js";

type Shape = { type: string; members?: Record<string, { shape: string; location?: string; locationName?: string; documentation?: string }>; required?: string[]; enum?: string[]; error?: { httpStatusCode?: number; senderFault?: boolean }; exception?: boolean; union?: boolean };
type Operation = { http: { method: string; requestUri: string; responseCode: number }; input?: { shape: string }; output?: { shape: string }; errors: { shape: string }[] };

const model = await generateBotocoreModel("@aws-sdk/client-lambda-microvms", "lambda-microvms");
const service = model.files["service-2.json"] as { metadata: Record<string, unknown>; operations: Record<string, Operation>; shapes: Record<string, Shape> };

test("metadata: restJson1 as rest-json, SigV4 with the signing name lambda, the SDK's API version", () => {
  assert.equal(model.apiVersion, "2025-09-09");
  assert.deepEqual(
    { protocol: service.metadata.protocol, signingName: service.metadata.signingName, signatureVersion: service.metadata.signatureVersion, endpointPrefix: service.metadata.endpointPrefix, uid: service.metadata.uid },
    { protocol: "rest-json", signingName: "lambda", signatureVersion: "v4", endpointPrefix: "lambda", uid: "lambda-microvms-2025-09-09" },
  );
});

test("every SDK command is an operation with the schema's method, URI and status", () => {
  const commands = Object.keys(sdk).filter((k) => /^[A-Z]\w*Command$/.test(k)).map((k) => k.slice(0, -"Command".length)).sort();
  assert.deepEqual(Object.keys(service.operations).sort(), commands);
  for (const name of commands) {
    const schema = (sdk as unknown as Record<string, [number, string, string, { http: [string, string, number] }]>)[`${name}$`]!;
    const [method, uri, status] = schema[3].http;
    assert.deepEqual(service.operations[name]!.http, { method, requestUri: uri, responseCode: status }, name);
  }
  assert.deepEqual(service.operations.CreateMicrovmImage!.http, { method: "POST", requestUri: "/2025-09-09/microvm-images", responseCode: 201 });
  assert.equal(service.operations.TagResource!.output, undefined, "a Unit output is no output");
});

test("members are bound where the schema binds them: labels, query strings, headers, the body", () => {
  const members = (shape: string) => service.shapes[shape]!.members!;
  assert.deepEqual(members("GetMicrovmRequest").microvmIdentifier, { shape: "String", location: "uri", locationName: "microvmIdentifier", documentation: members("GetMicrovmRequest").microvmIdentifier!.documentation });
  assert.equal(members("ListMicrovmsRequest").maxResults!.location, "querystring");
  assert.equal(members("ListMicrovmsRequest").maxResults!.locationName, "maxResults");
  assert.deepEqual([members("UntagResourceRequest").TagKeys!.location, members("UntagResourceRequest").TagKeys!.locationName], ["querystring", "tagKeys"]);
  assert.deepEqual([members("ThrottlingException").retryAfterSeconds!.location, members("ThrottlingException").retryAfterSeconds!.locationName], ["header", "Retry-After"]);
  assert.equal(members("RunMicrovmRequest").imageIdentifier!.location, undefined, "a body member has no location");
  assert.deepEqual(service.shapes.RunMicrovmRequest!.required, ["imageIdentifier"]);
  assert.equal((members("RunMicrovmRequest").clientToken as { idempotencyToken?: boolean }).idempotencyToken, true);
  assert.equal(service.shapes[members("GetMicrovmResponse").startedAt!.shape]!.type, "timestamp");
  assert.equal(service.shapes.PortSpecification!.union, true);
  assert.equal(service.shapes.AuthTokenValue!.type, "string");
  assert.equal((service.shapes.AuthTokenValue as { sensitive?: boolean }).sensitive, true);
});

test("enums and documentation come from the SDK's declarations", () => {
  const state = service.shapes.GetMicrovmResponse!.members!.state!;
  assert.equal(state.shape, "MicrovmState");
  assert.deepEqual(service.shapes.MicrovmState!.enum, Object.values(sdk.MicrovmState));
  assert.match((service.operations.RunMicrovm as unknown as { documentation: string }).documentation, /^<p>Runs a new MicroVM/);
});

test("errors carry their HTTP status and fault, and each operation lists the errors the SDK says it throws", () => {
  const errors = Object.entries(service.shapes).filter(([, s]) => s.exception);
  const sdkErrors = Object.entries(sdk).filter(([k, v]) => k.endsWith("$") && Array.isArray(v) && v[0] === -3 && !String(v[1]).startsWith("smithy.ts.sdk.synthetic.")).map(([k, v]) => [k.slice(0, -1), (v as unknown as [number, string, string, { httpError: number; error: string }])[3]] as const);
  assert.deepEqual(errors.map(([n]) => n).sort(), sdkErrors.map(([n]) => n).sort());
  for (const [name, traits] of sdkErrors) assert.deepEqual(service.shapes[name]!.error, { httpStatusCode: traits.httpError, ...(traits.error === "client" ? { senderFault: true } : {}) }, name);
  assert.equal(service.shapes.ResourceNotFoundException!.error!.httpStatusCode, 404);
  assert.ok(service.operations.GetMicrovm!.errors.some((e) => e.shape === "ResourceNotFoundException"));
});

test("the paginators are the SDK's: nextToken in and out, maxResults as the page size", () => {
  const pagination = (model.files["paginators-1.json"] as { pagination: Record<string, unknown> }).pagination;
  const sdkPaginators = Object.keys(sdk).filter((k) => k.startsWith("paginate")).map((k) => k.slice("paginate".length)).sort();
  assert.deepEqual(Object.keys(pagination).sort(), sdkPaginators);
  assert.deepEqual(pagination.ListMicrovms, { input_token: "nextToken", output_token: "nextToken", limit_key: "maxResults", result_key: "items" });
});

test("botocore resolves the generated rule set to the SDK's endpoints", { skip: !existsSync("/usr/bin/python3") && "no /usr/bin/python3" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-models-"));
  try {
    const versionDir = join(dir, "lambda-microvms", model.apiVersion);
    mkdirSync(versionDir, { recursive: true });
    for (const [file, content] of Object.entries(model.files)) writeFileSync(join(versionDir, file), JSON.stringify(content));
    const cases: { Region: string; UseFIPS: boolean; UseDualStack: boolean; Endpoint?: string }[] = [];
    // (Not the ISO partitions: what they support comes from partition data, which botocore 1.29 ships older than the SDK's.)
    for (const Region of ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"]) {
      for (const UseFIPS of [false, true]) for (const UseDualStack of [false, true]) cases.push({ Region, UseFIPS, UseDualStack });
    }
    cases.push({ Region: "us-east-1", UseFIPS: false, UseDualStack: false, Endpoint: "http://127.0.0.1:7600" });
    cases.push({ Region: "us-east-1", UseFIPS: true, UseDualStack: false, Endpoint: "http://127.0.0.1:7600" });
    const client = new sdk.LambdaMicrovmsClient({ region: "us-east-1" });
    const expected = cases.map((c) => {
      try {
        return client.config.endpointProvider(c as never).url.href.replace(/\/$/, "");
      } catch (err) {
        return `error: ${(err as Error).message}`;
      }
    });
    client.destroy();
    const script = `
import json, sys
from botocore.loaders import Loader
from botocore.endpoint_provider import EndpointProvider
loader = Loader(extra_search_paths=[sys.argv[1]])
provider = EndpointProvider(loader.load_service_model("lambda-microvms", "endpoint-rule-set-1"), loader.load_data("partitions"))
out = []
for params in json.loads(sys.argv[2]):
    try:
        out.append(provider.resolve_endpoint(**params).url.rstrip("/"))
    except Exception as e:
        out.append("error: " + str(e))
print(json.dumps(out))`;
    const got = JSON.parse(execFileSync("/usr/bin/python3", ["-c", script, dir, JSON.stringify(cases)], { encoding: "utf8", timeout: 60_000 })) as string[];
    assert.deepEqual(got, expected);
    assert.equal(got.at(-2), "http://127.0.0.1:7600");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
