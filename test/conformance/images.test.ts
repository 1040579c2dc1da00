// MicroVM images, versions and builds through the official SDK client.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  CreateMicrovmImageCommand, DeleteMicrovmImageCommand, DeleteMicrovmImageVersionCommand, GetMicrovmImageBuildCommand,
  GetMicrovmImageCommand, GetMicrovmImageVersionCommand, ListManagedMicrovmImagesCommand, ListManagedMicrovmImageVersionsCommand,
  ListMicrovmImageBuildsCommand, ListMicrovmImagesCommand, ListMicrovmImageVersionsCommand, UpdateMicrovmImageCommand,
  UpdateMicrovmImageVersionCommand,
} from "@aws-sdk/client-lambda-microvms";
import { BASE_IMAGE_ARN, eventually, imageRequest, startTestPlatform, type TestPlatform } from "../support/platform.js";
import { rejects } from "../support/assertions.js";
import { ScriptedBuilder } from "../support/scripted.js";

const ARN = (name: string) => `arn:aws:lambda:us-east-1:000000000000:microvm-image:${name}`;


describe("images without a builder", () => {
  let t: TestPlatform;
  before(async () => {
    // Without a builder every build stays queued, and each counts against the
    // concurrent-builds quota (5) until it ends; quotas.test.ts tests that quota.
    t = await startTestPlatform({ quotas: { "concurrent-builds": 100 } });
  });
  after(() => t.stop());

  test("managed images are listed with their ARNs and versions", async () => {
    const images = await t.client.send(new ListManagedMicrovmImagesCommand({}));
    assert.deepEqual(images.items?.map((i) => i.imageArn).sort(), [
      "arn:aws:lambda:us-east-1:aws:microvm-image:busybox",
      "arn:aws:lambda:us-east-1:aws:microvm-image:debian12",
    ]);
    assert.ok(images.items?.every((i) => i.createdAt instanceof Date));
    const versions = await t.client.send(new ListManagedMicrovmImageVersionsCommand({ imageIdentifier: BASE_IMAGE_ARN }));
    assert.deepEqual(versions.items?.map((v) => [v.imageVersion, v.status]), [["1", "AVAILABLE"]]);
    const byName = await t.client.send(new ListManagedMicrovmImageVersionsCommand({ imageIdentifier: "debian12" }));
    assert.equal(byName.items?.[0]?.imageArn, "arn:aws:lambda:us-east-1:aws:microvm-image:debian12");
    await rejects(t.client.send(new ListManagedMicrovmImageVersionsCommand({ imageIdentifier: "al2023-1" })), "ResourceNotFoundException", /Available:/);
  });

  test("CreateMicrovmImage answers 201 with the image in CREATING and version 1.0", async () => {
    const created = await t.client.send(new CreateMicrovmImageCommand({
      ...imageRequest("create-shape"),
      description: "an app",
      environmentVariables: { GREETING: "hi" },
      hooks: { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 } },
      resources: [{ minimumMemoryInMiB: 512 }],
      tags: { team: "core" },
    }));
    assert.equal(created.$metadata.httpStatusCode, 201);
    assert.equal(created.imageArn, ARN("create-shape"));
    assert.equal(created.name, "create-shape");
    assert.equal(created.state, "CREATING");
    assert.equal(created.imageVersion, "1.0");
    assert.equal(created.baseImageArn, BASE_IMAGE_ARN);
    assert.equal(created.baseImageVersion, "1", "an omitted base version pins the latest available");
    assert.deepEqual(created.codeArtifact, { uri: "s3://artifacts/app.zip" });
    assert.deepEqual(created.environmentVariables, { GREETING: "hi" });
    assert.deepEqual(created.hooks, { port: 9000, microvmImageHooks: { ready: "ENABLED", readyTimeoutInSeconds: 60 } });
    assert.deepEqual(created.tags, { team: "core" });
    assert.ok(created.createdAt instanceof Date);

    for (const id of ["create-shape", ARN("create-shape")]) {
      const got = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: id }));
      assert.equal(got.imageArn, ARN("create-shape"));
      assert.equal(got.state, "CREATING");
      assert.deepEqual(got.tags, { team: "core" });
    }
  });

  test("one build per host architecture is queued, and says why it waits", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("queued")));
    const builds = await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "queued", imageVersion: "1.0" }));
    assert.equal(builds.items?.length, 1);
    const b = builds.items![0]!;
    assert.equal(b.buildState, "PENDING");
    assert.equal(b.architecture, process.arch === "arm64" ? "ARM_64" : "X86_64");
    assert.match(b.stateReason ?? "", /no image builder/);
    const got = await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "queued", imageVersion: "1.0", buildId: b.buildId }));
    assert.equal(got.buildId, b.buildId);
    const filtered = await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "queued", imageVersion: "1.0", architecture: "ARM_64" as never, chipset: "NOPE" as never }));
    assert.equal(filtered.items?.length, 0);
    await rejects(t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "queued", imageVersion: "1.0", buildId: "no-such-build" })), "ResourceNotFoundException");
  });

  test("names are unique per account", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("unique")));
    await rejects(t.client.send(new CreateMicrovmImageCommand(imageRequest("unique"))), "ResourceConflictException", /already exists/);
  });

  test("an unknown base image or base version is a ValidationException listing what exists", async () => {
    await rejects(
      t.client.send(new CreateMicrovmImageCommand(imageRequest("bad-base", { baseImageArn: "arn:aws:lambda:us-east-1:aws:microvm-image:al2023-1" }))),
      "ValidationException",
      /not a managed image\. Available: .*debian12/,
    );
    await rejects(t.client.send(new CreateMicrovmImageCommand(imageRequest("bad-base", { baseImageVersion: "99" }))), "ValidationException", /Available: 1/);
  });

  test("UpdateMicrovmImage while CREATING is a conflict naming the state", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("busy")));
    await rejects(t.client.send(new UpdateMicrovmImageCommand({ ...imageRequest("x"), imageIdentifier: "busy" })), "ConflictException", /it is CREATING/);
  });

  test("operations on images that do not exist are ResourceNotFoundException", async () => {
    const missing = "no-such-image";
    await rejects(t.client.send(new GetMicrovmImageCommand({ imageIdentifier: missing })), "ResourceNotFoundException");
    await rejects(t.client.send(new UpdateMicrovmImageCommand({ ...imageRequest("x"), imageIdentifier: missing })), "ResourceNotFoundException");
    await rejects(t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: missing })), "ResourceNotFoundException");
    await rejects(t.client.send(new ListMicrovmImageVersionsCommand({ imageIdentifier: missing })), "ResourceNotFoundException");
    await rejects(t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: missing, imageVersion: "1.0" })), "ResourceNotFoundException");
    await rejects(t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: missing, imageVersion: "1.0" })), "ResourceNotFoundException");
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("has-one-version")));
    await rejects(t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: "has-one-version", imageVersion: "7.0" })), "ResourceNotFoundException");
    await rejects(t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "arn:aws:lambda:eu-west-1:000000000000:microvm-image:has-one-version" })), "ResourceNotFoundException");
  });

  test("DeleteMicrovmImage answers DELETING, then the image is gone and its name free", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("doomed")));
    const deleted = await t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: "doomed" }));
    assert.equal(deleted.state, "DELETING");
    assert.equal(deleted.imageIdentifier, ARN("doomed"));
    await eventually(async () => (await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "doomed" })).then(() => undefined, (e: Error) => e.name === "ResourceNotFoundException" || undefined)), "deletion");
    const again = await t.client.send(new CreateMicrovmImageCommand(imageRequest("doomed")));
    assert.equal(again.imageVersion, "1.0");
  });

  test("ListMicrovmImages filters by name substring", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("filter-alpha")));
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("filter-beta")));
    const r = await t.client.send(new ListMicrovmImagesCommand({ nameFilter: "filter-" }));
    assert.deepEqual(r.items?.map((i) => i.name).sort(), ["filter-alpha", "filter-beta"]);
    assert.ok(r.items?.every((i) => i.state === "CREATING" && i.createdAt instanceof Date));
  });
});

describe("images with a builder", () => {
  let t: TestPlatform;
  const builder = new ScriptedBuilder();
  before(async () => {
    t = await startTestPlatform({ builder });
  });
  after(() => t.stop());

  const version = (image: string, v: string) => t.client.send(new GetMicrovmImageVersionCommand({ imageIdentifier: image, imageVersion: v }));

  test("a successful build makes the version SUCCESSFUL, the image CREATED and the version latest active", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("ok")));
    await builder.succeed({ memorySnapshotSizeInBytes: 100, diskSnapshotSizeInBytes: 200, codeInstallSizeInBytes: 300 });
    const image = await eventually(async () => {
      const i = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "ok" }));
      return i.state === "CREATED" ? i : undefined;
    }, "CREATED");
    assert.equal(image.latestActiveImageVersion, "1.0");
    assert.equal(image.latestFailedImageVersion, undefined);
    const v = await version("ok", "1.0");
    assert.equal(v.state, "SUCCESSFUL");
    assert.equal(v.status, "ACTIVE");
    const builds = await t.client.send(new ListMicrovmImageBuildsCommand({ imageIdentifier: "ok", imageVersion: "1.0" }));
    const b = await t.client.send(new GetMicrovmImageBuildCommand({ imageIdentifier: "ok", imageVersion: "1.0", buildId: builds.items![0]!.buildId }));
    assert.equal(b.buildState, "SUCCESSFUL");
    assert.deepEqual(b.snapshotBuild, { memorySnapshotSizeInBytes: 100, diskSnapshotSizeInBytes: 200, codeInstallSizeInBytes: 300 });
  });

  test("a failed build fails the version with the build's reason and sets latestFailedImageVersion", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("broken")));
    await builder.fail("RUN npm ci: exit status 1");
    const image = await eventually(async () => {
      const i = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "broken" }));
      return i.state === "CREATE_FAILED" ? i : undefined;
    }, "CREATE_FAILED");
    assert.equal(image.latestFailedImageVersion, "1.0");
    assert.equal(image.latestActiveImageVersion, undefined);
    const v = await version("broken", "1.0");
    assert.equal(v.state, "FAILED");
    assert.match(v.stateReason ?? "", /RUN npm ci: exit status 1/);
  });

  test("each update adds the next major version and moves the image UPDATING → UPDATED", async () => {
    await t.client.send(new CreateMicrovmImageCommand(imageRequest("evolving")));
    await builder.succeed();
    await eventually(async () => ((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "evolving" }))).state === "CREATED" ? true : undefined), "CREATED");
    const updated = await t.client.send(new UpdateMicrovmImageCommand({ ...imageRequest("x"), imageIdentifier: "evolving", description: "v2" }));
    assert.equal(updated.imageVersion, "2.0");
    assert.equal(updated.state, "UPDATING");
    assert.equal(updated.description, "v2");
    await builder.succeed();
    const image = await eventually(async () => {
      const i = await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "evolving" }));
      return i.state === "UPDATED" ? i : undefined;
    }, "UPDATED");
    assert.equal(image.latestActiveImageVersion, "2.0");

    const inactive = await t.client.send(new UpdateMicrovmImageVersionCommand({ imageIdentifier: "evolving", imageVersion: "2.0", status: "INACTIVE" }));
    assert.equal(inactive.status, "INACTIVE");
    assert.equal((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "evolving" }))).latestActiveImageVersion, "1.0");

    const versions = await t.client.send(new ListMicrovmImageVersionsCommand({ imageIdentifier: "evolving" }));
    assert.deepEqual(versions.items?.map((v) => [v.imageVersion, v.state, v.status]), [["1.0", "SUCCESSFUL", "ACTIVE"], ["2.0", "SUCCESSFUL", "INACTIVE"]]);

    const gone = await t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "evolving", imageVersion: "1.0" }));
    assert.equal(gone.state, "DELETING");
    await eventually(async () => (await version("evolving", "1.0").then(() => undefined, (e: Error) => e.name === "ResourceNotFoundException" || undefined)), "version deletion");
    assert.ok(builder.discarded.includes(`${ARN("evolving")}:1.0`), "the builder was asked to free the version's files");
    assert.equal((await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: "evolving" }))).latestActiveImageVersion, undefined);
    await rejects(t.client.send(new DeleteMicrovmImageVersionCommand({ imageIdentifier: "evolving", imageVersion: "1.0" })), "ResourceNotFoundException");
  });
});
