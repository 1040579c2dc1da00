// `lmvm audit` through the real CLI binary against a real `lmvm server`: the
// table and JSON output, each filter, time ranges, paging with
// --max-items/--starting-token, usage errors, and a caller who may not read
// the trail.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { allow, iamClient, policy, userWithPolicy } from "../support/iam.js";
import { readCredentials, tempDir } from "../support/platform.js";
import { lmvm, spawnServer, type ServerProcess } from "../support/processes.js";

interface JsonEvent {
  EventId: string;
  EventName: string;
  EventTime: string;
  Username?: string;
  AccessKeyId?: string;
  Resources: { ResourceType: string; ResourceName: string }[];
  CloudTrailEvent: { eventName: string; errorCode?: string; requestParameters: Record<string, unknown> | null; userIdentity: { type: string } };
}

describe("lmvm audit", () => {
  let dataDir: string;
  let server: ServerProcess;
  let env: Record<string, string>;
  const json = async (args: string[]) => {
    const r = await lmvm(["audit", ...args, "--output", "json"], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { Events: JsonEvent[]; NextToken?: string };
  };

  before(async () => {
    dataDir = tempDir();
    server = await spawnServer(dataDir);
    env = { LMVM_DATA_DIR: dataDir };
    const made = await lmvm([
      "create-microvm-image", "--name", "cli-audited", "--base-image-arn", "arn:aws:lambda:us-east-1:aws:microvm-image:busybox",
      "--build-role-arn", "arn:aws:iam::000000000000:role/R", "--code-artifact", "uri=s3://b/app.zip", "--environment-variables", "TOKEN=cli-env-secret-93e1",
    ], env);
    assert.equal(made.code, 0, made.stderr);
    assert.equal((await lmvm(["get-microvm-image", "--image-identifier", "cli-missing"], env)).code, 254);
  });
  after(async () => {
    await server.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("prints the trail as a table, newest first, with who, what, on what and the outcome", async () => {
    const r = await lmvm(["audit"], env);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^TIME\s+EVENT\s+SOURCE\s+USER\s+ACCESS KEY\s+FROM\s+RESOURCES\s+RESULT$/);
    const missing = lines.findIndex((l) => / GetMicrovmImage /.test(l) && /cli-missing/.test(l));
    const created = lines.findIndex((l) => / CreateMicrovmImage /.test(l));
    assert.ok(missing > 0 && created > missing, `the failed get (newer) is above the create:\n${r.stdout}`);
    assert.match(lines[missing]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+GetMicrovmImage\s+lambda\s+root\s+LKIA\w+\s+127\.0\.0\.1\s+cli-missing\s+ResourceNotFoundException$/);
    assert.match(lines[created]!, /CreateMicrovmImage\s+lambda\s+root\s+.*cli-audited,R\s+OK$/);
    assert.ok(!r.stdout.includes("cli-env-secret-93e1"));
  });

  test("--output json gives LookupEvents' events with each CloudTrailEvent as an object, secrets hidden", async () => {
    const { Events } = await json(["--event-name", "CreateMicrovmImage"]);
    assert.equal(Events.length, 1);
    const e = Events[0]!;
    assert.equal(e.Username, "root");
    assert.equal(e.AccessKeyId, readCredentials(dataDir).accessKeyId);
    assert.match(e.EventTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
    assert.equal(e.CloudTrailEvent.eventName, "CreateMicrovmImage");
    assert.equal(e.CloudTrailEvent.requestParameters?.name, "cli-audited");
    assert.deepEqual(e.CloudTrailEvent.requestParameters?.environmentVariables, { TOKEN: "HIDDEN_DUE_TO_SECURITY_REASONS" });
  });

  test("each filter narrows the trail", async () => {
    const byResource = await json(["--resource-name", "cli-missing"]);
    assert.deepEqual(byResource.Events.map((e) => [e.EventName, e.CloudTrailEvent.errorCode]), [["GetMicrovmImage", "ResourceNotFoundException"]]);
    const byType = await json(["--resource-type", "AWS::IAM::Role"]);
    assert.ok(byType.Events.length >= 1 && byType.Events.every((e) => e.Resources.some((r) => r.ResourceType === "AWS::IAM::Role")));
    const writes = await json(["--read-only", "false"]);
    assert.ok(writes.Events.some((e) => e.EventName === "CreateMicrovmImage") && !writes.Events.some((e) => e.EventName === "GetMicrovmImage"));
    assert.ok((await json(["--user", "root"])).Events.length >= 2);
    assert.deepEqual((await json(["--user", "nobody"])).Events, []);
    const key = readCredentials(dataDir).accessKeyId;
    assert.ok((await json(["--access-key-id", key])).Events.every((e) => e.AccessKeyId === key));
    assert.ok((await json(["--event-source", "lambda.amazonaws.com"])).Events.length >= 2);
    const one = (await json(["--event-name", "CreateMicrovmImage"])).Events[0]!;
    assert.deepEqual((await json(["--event-id", one.EventId])).Events.map((e) => e.EventId), [one.EventId]);
    assert.ok((await json(["--start-time", "1h"])).Events.length >= 2, "an age counts back from now");
    assert.deepEqual((await json(["--end-time", "2h"])).Events, []);
    assert.deepEqual((await json(["--start-time", "2000-01-01T00:00:00Z", "--end-time", "946771200"])).Events, [], "ISO 8601 and epoch seconds");
    const none = await lmvm(["audit", "--end-time", "2h"], env);
    assert.equal(none.stdout, "No events.\n");
  });

  test("--max-items pages, and --starting-token continues where the last page stopped", async () => {
    for (let i = 0; i < 4; i++) await lmvm(["get-microvm-image", "--image-identifier", `page-${i}`], env);
    const all = (await json(["--event-name", "GetMicrovmImage"])).Events.map((e) => e.EventId);
    assert.ok(all.length >= 5);
    const first = await json(["--event-name", "GetMicrovmImage", "--max-items", "2"]);
    assert.equal(first.Events.length, 2);
    assert.ok(first.NextToken);
    const second = await json(["--event-name", "GetMicrovmImage", "--max-items", "2", "--starting-token", first.NextToken]);
    assert.deepEqual([...first.Events, ...second.Events].map((e) => e.EventId), all.slice(0, 4));
    const table = await lmvm(["audit", "--event-name", "GetMicrovmImage", "--max-items", "1"], env);
    assert.equal(table.code, 0);
    assert.equal(table.stdout.trimEnd().split("\n").length, 2);
    assert.match(table.stderr, /More events: continue with --starting-token \S+/);
    const wrong = await lmvm(["audit", "--event-name", "CreateMicrovmImage", "--starting-token", first.NextToken], env);
    assert.equal(wrong.code, 254);
    assert.match(wrong.stderr, /An error occurred \(InvalidNextTokenException\) when calling the LookupEvents operation/);
  });

  test("usage errors say what to fix", async () => {
    const cases: [string[], RegExp][] = [
      [["--user", "a", "--event-name", "b"], /Give at most one filter/],
      [["--read-only", "maybe"], /--read-only must be true or false/],
      [["--start-time", "last tuesday"], /--start-time: 'last tuesday' is not a time/],
      [["--max-items", "0"], /--max-items must be a whole number of at least 1/],
      [["--output", "text"], /valid choices are: table \| json/],
      [["--colour", "red"], /Unknown options: --colour/],
      [["--event-name"], /--event-name: expected a value/],
    ];
    for (const [args, message] of cases) {
      const r = await lmvm(["audit", ...args], env);
      assert.equal(r.code, 252, args.join(" "));
      assert.match(r.stderr, message);
    }
    const help = await lmvm(["audit", "help"], env);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /lmvm audit \[one filter\]/);
    assert.match(help.stdout, /--access-key-id <id>/);
  });

  test("a caller without cloudtrail:LookupEvents is refused, and the refusal is in the trail", async () => {
    const iam = iamClient(server.url, readCredentials(dataDir));
    const gina = await userWithPolicy(iam, "gina", policy(allow("lambda:ListMicrovmImages")));
    iam.destroy();
    const r = await lmvm(["audit"], { ...env, AWS_ACCESS_KEY_ID: gina.accessKeyId, AWS_SECRET_ACCESS_KEY: gina.secretAccessKey });
    assert.equal(r.code, 254);
    assert.match(r.stderr, /An error occurred \(AccessDeniedException\) when calling the LookupEvents operation: User: arn:aws:iam::000000000000:user\/gina is not authorized to perform: cloudtrail:LookupEvents/);
    const { Events } = await json(["--user", "gina"]);
    assert.deepEqual(Events.map((e) => [e.EventName, e.CloudTrailEvent.errorCode]), [["LookupEvents", "AccessDeniedException"]]);
  });
});
