// The console's uploaded zips: kept while an image version names them or while
// they are young enough for the CreateMicrovmImage that follows the upload.

import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { sweepUploads, UPLOAD_GRACE_MS } from "../../src/console/routes.js";

test("an upload older than the grace period that no version names is removed; a named one or a young one is kept", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lmvm-uploads-"));
  try {
    const now = Date.now();
    const old = new Date(now - UPLOAD_GRACE_MS - 60_000);
    for (const name of ["old-unnamed.zip", "old-named.zip", "young.zip"]) writeFileSync(join(dir, name), "PK\x03\x04");
    utimesSync(join(dir, "old-unnamed.zip"), old, old);
    utimesSync(join(dir, "old-named.zip"), old, old);
    const removed = await sweepUploads(dir, new Set([`file://${join(dir, "old-named.zip")}`]), now);
    assert.deepEqual(removed, ["old-unnamed.zip"]);
    assert.deepEqual(readdirSync(dir).sort(), ["old-named.zip", "young.zip"]);
    assert.deepEqual(await sweepUploads(join(dir, "missing"), new Set(), now), [], "no uploads directory yet is nothing to sweep");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
