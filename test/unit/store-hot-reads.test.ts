// The store's hot reads (an image, a page of images, a resource's tags) keep
// a copy of the rows they read: the copy must never show what the database
// does not hold. Every write, a write inside a transaction, a rolled-back
// transaction, and a read while another transaction is open, on the real
// SQLite store.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { MicrovmImage } from "../../src/core/index.js";
import { SqliteStore } from "../../src/store/index.js";
import { tempDir } from "../support/platform.js";

const ACCT = "123456789012";
let store: SqliteStore;
const arn = (name: string) => `arn:aws:lambda:us-east-1:${ACCT}:microvm-image:${name}`;
const image = (name: string): MicrovmImage => ({
  arn: arn(name), accountId: ACCT, name, state: "CREATING", createdAt: new Date(1_000), updatedAt: new Date(1_000), currentVersion: "1.0", nextMajor: 2,
});

before(async () => {
  store = await SqliteStore.open(join(tempDir(), "lmvm.db"));
});
after(() => store.close());

test("hot reads see every committed write at once, and nothing uncommitted", async () => {
  assert.equal(await store.getImage(arn("a")), undefined);
  await store.insertImage(image("a"));
  assert.equal((await store.getImage(arn("a")))?.state, "CREATING", "a miss is not kept past an insert");
  assert.deepEqual((await store.listImages(ACCT, undefined, { limit: 10 })).items.map((i) => i.name), ["a"]);

  await store.updateImage(arn("a"), { state: "CREATED" });
  assert.equal((await store.getImage(arn("a")))?.state, "CREATED");

  assert.deepEqual(await store.getTags(arn("a")), {});
  await store.putTags(arn("a"), { team: "blue" });
  assert.deepEqual(await store.getTags(arn("a")), { team: "blue" });
  await store.removeTags(arn("a"), ["team"]);
  assert.deepEqual(await store.getTags(arn("a")), {});

  // A write inside a transaction: outside reads made while it is open never see it; after commit they do.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let written!: () => void;
  const wrote = new Promise<void>((r) => (written = r));
  const tx = store.transaction(async (t) => {
    await t.insertImage(image("b"));
    await t.updateImage(arn("a"), { state: "CREATE_FAILED" });
    written();
    await held;
  });
  await wrote;
  const during = store.getImage(arn("a"));
  const duringB = store.getImage(arn("b"));
  release();
  await tx;
  // Reads issued during the transaction wait for it (as they always did through Kysely): they see its commit, never half of it.
  assert.equal((await during)?.state, "CREATE_FAILED");
  assert.equal((await duringB)?.name, "b");
  assert.deepEqual((await store.listImages(ACCT, undefined, { limit: 10 })).items.map((i) => i.name), ["a", "b"]);

  // A rolled-back transaction leaves nothing behind in the copy.
  await assert.rejects(store.transaction(async (t) => {
    await t.updateImage(arn("a"), { state: "UPDATING" });
    assert.equal((await t.getImage(arn("a")))?.state, "UPDATING", "inside the transaction its own write is seen");
    throw new Error("roll back");
  }), /roll back/);
  assert.equal((await store.getImage(arn("a")))?.state, "CREATE_FAILED");

  // Returned objects are fresh: changing one does not change the next read.
  const got = (await store.getImage(arn("a")))!;
  got.state = "CREATED";
  assert.equal((await store.getImage(arn("a")))?.state, "CREATE_FAILED");

  await store.deleteImage(arn("b"));
  assert.equal(await store.getImage(arn("b")), undefined);
  assert.deepEqual((await store.listImages(ACCT, "b", { limit: 10 })).items, []);
});
