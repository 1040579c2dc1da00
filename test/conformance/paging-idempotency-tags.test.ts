// Pagination across pages with opaque, tamper-proof tokens; clientToken
// idempotency; and tags.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, GetMicrovmImageCommand, ListMicrovmImagesCommand, ListMicrovmsCommand, ListTagsCommand,
  paginateListMicrovmImages, RunMicrovmCommand, TagResourceCommand, UntagResourceCommand,
} from "@aws-sdk/client-lambda-microvms";
import { eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { rejects } from "../support/assertions.js";
import { ScriptedBuilder, ScriptedRuntime } from "../support/scripted.js";

const arn = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;


describe("pagination, idempotency and tags", () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  const runtime = new ScriptedRuntime();
  builder.always({ snapshot: {} });
  before(async () => {
    t = await startTestPlatform({ builder, runtime });
  });
  after(() => t.stop());

  test("ListMicrovmImages pages through every image, three at a time", async () => {
    const names = Array.from({ length: 8 }, (_, i) => `page-${i}`);
    for (const name of names) await t.client.send(new CreateMicrovmImageCommand(imageRequest(name)));
    const pages: string[][] = [];
    for await (const page of paginateListMicrovmImages({ client: t.client, pageSize: 3 }, { nameFilter: "page-" })) {
      pages.push(page.items!.map((i) => i.name!));
    }
    assert.deepEqual(pages.map((p) => p.length), [3, 3, 2]);
    assert.deepEqual(pages.flat(), names);
  });

  test("a tampered, foreign or garbage nextToken is a ValidationException", async () => {
    const first = await t.client.send(new ListMicrovmImagesCommand({ maxResults: 2, nameFilter: "page-" }));
    const token = first.nextToken!;
    assert.ok(token);
    const [payload, mac] = token.split(".");
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, "base64url").toString()), p: "0" })).toString("base64url");
    for (const bad of [`${forged}.${mac}`, "garbage", `${payload}.AAAA`]) {
      await rejects(t.client.send(new ListMicrovmImagesCommand({ maxResults: 2, nameFilter: "page-", nextToken: bad })), "ValidationException", /'nextToken' is invalid/);
    }
    await rejects(t.client.send(new ListMicrovmImagesCommand({ maxResults: 2, nameFilter: "other", nextToken: token })), "ValidationException", /'nextToken' is invalid/);
    await rejects(t.client.send(new ListMicrovmsCommand({ nextToken: token })), "ValidationException", /'nextToken' is invalid/);
    const second = await t.client.send(new ListMicrovmImagesCommand({ maxResults: 2, nameFilter: "page-", nextToken: token }));
    assert.deepEqual(second.items?.map((i) => i.name), ["page-2", "page-3"]);
  });

  test("the same clientToken and request returns the first result and creates nothing new", async () => {
    const request = imageRequest("idem", { clientToken: "token-1" });
    const a = await t.client.send(new CreateMicrovmImageCommand(request));
    const b = await t.client.send(new CreateMicrovmImageCommand(request));
    assert.equal(a.imageArn, b.imageArn);
    assert.equal(a.imageVersion, b.imageVersion);
    const listed = await t.client.send(new ListMicrovmImagesCommand({ nameFilter: "idem" }));
    assert.equal(listed.items?.length, 1);
  });

  test("the same clientToken with a different request is a ConflictException", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("idem-2", { clientToken: "token-2" })));
    await rejects(t.client.send(new CreateMicrovmImageCommand(imageRequest("idem-2", { clientToken: "token-2", description: "changed" }))), "ConflictException", /already used for a different CreateMicrovmImage request/);
  });

  test("RunMicrovm is idempotent on clientToken", async () => {
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "idem" }))).state === "CREATED" ? true : undefined), "image built");
    const a = await t.client.send(new RunMicrovmCommand({ imageIdentifier: arn("idem"), clientToken: "run-1" }));
    const b = await t.client.send(new RunMicrovmCommand({ imageIdentifier: arn("idem"), clientToken: "run-1" }));
    assert.equal(a.microvmId, b.microvmId);
    assert.equal(runtime.calls.filter((c) => c === `run ${a.microvmId}`).length, 1, "the sandbox was started once");
    await rejects(t.client.send(new RunMicrovmCommand({ imageIdentifier: arn("idem"), clientToken: "run-1", maximumDurationInSeconds: 60 })), "ConflictException");
  });

  test("tags can be set at creation, added, listed and removed", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("tagged", { tags: { team: "core", env: "dev" } })));
    await t.client.send(new TagResourceCommand({ Resource: arn("tagged"), Tags: { env: "prod", owner: "ana" } }));
    assert.deepEqual((await t.client.send(new ListTagsCommand({ Resource: arn("tagged") }))).Tags, { env: "prod", owner: "ana", team: "core" });
    await t.client.send(new UntagResourceCommand({ Resource: arn("tagged"), TagKeys: ["team", "owner"] }));
    assert.deepEqual((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "tagged" }))).tags, { env: "prod" });
  });

  test("tag limits and bad tag targets get the right errors", async () => {
    const many = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, "v"]));
    await rejects(t.client.send(new TagResourceCommand({ Resource: arn("tagged"), Tags: many })), "ServiceQuotaExceededException", /at most 50/);
    await rejects(t.client.send(new TagResourceCommand({ Resource: arn("tagged"), Tags: { "aws:x": "v" } })), "ValidationException", /reserved prefix/);
    await rejects(t.client.send(new TagResourceCommand({ Resource: arn("no-such-image"), Tags: { a: "b" } })), "ResourceNotFoundException");
    await rejects(t.client.send(new TagResourceCommand({ Resource: "arn:aws:lambda:us-east-1:aws:microvm-image:debian12", Tags: { a: "b" } })), "ValidationException", /managed image/);
    await rejects(t.client.send(new ListTagsCommand({ Resource: "not-an-arn" })), "ValidationException", /must be an ARN/);
    await rejects(t.client.send(new UntagResourceCommand({ Resource: arn("tagged"), TagKeys: [] })), "ValidationException");
  });
});
